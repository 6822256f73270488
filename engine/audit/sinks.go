package audit

import (
	"bufio"
	"encoding/json"
	"io"
	"os"
	"sync"
)

// LineSink writes each record as one JSON line, mandate's own shape or OCSF.
type LineSink struct {
	mu   sync.Mutex
	w    io.Writer
	c    io.Closer // nil for stdout
	ocsf bool
}

// OpenLineSink writes to path ("-" for stdout), appending.
func OpenLineSink(path string, ocsf bool) (*LineSink, error) {
	if path == "-" {
		return &LineSink{w: os.Stdout, ocsf: ocsf}, nil
	}
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return nil, err
	}
	return &LineSink{w: f, c: f, ocsf: ocsf}, nil
}

// Emit implements Sink.
func (s *LineSink) Emit(rs []Record) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	w := bufio.NewWriter(s.w)
	enc := json.NewEncoder(w)
	for i := range rs {
		var v any = &rs[i]
		if s.ocsf {
			v = OCSF(&rs[i])
		}
		if err := enc.Encode(v); err != nil {
			return err
		}
	}
	return w.Flush()
}

// Close closes the file.
func (s *LineSink) Close() error {
	if s.c == nil {
		return nil
	}
	return s.c.Close()
}
