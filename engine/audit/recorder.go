package audit

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Modes of the recorder.
const (
	// ModeBatched acknowledges a check before its record is durable; records
	// are written in batches. Changes always wait.
	ModeBatched = "batched"
	// ModeStrict makes every check wait until its record is durable.
	ModeStrict = "strict"
)

// Config configures a Recorder.
type Config struct {
	// Store keeps the records. Required.
	Store Store
	// Mode is ModeBatched (default) or ModeStrict.
	Mode string
	// SpoolPath is the local file records go to while the store is
	// unreachable; they are replayed in order when it is back. Empty disables
	// spooling (for the memory store, which cannot fail).
	SpoolPath string
	// Sinks receive every durable record as well, for example a JSON-lines
	// file or the OCSF stream. A sink error is logged, not retried.
	Sinks []Sink
	// BatchSize and FlushInterval shape the batches. Defaults 500 and 50ms.
	BatchSize     int
	FlushInterval time.Duration
	// QueueSize bounds records waiting for the flusher. Default 65536.
	QueueSize int
	Log       *slog.Logger
	Metrics   *Metrics
}

// Sink receives records after they are stored.
type Sink interface {
	Emit(rs []Record) error
}

type item struct {
	r       Record
	done    chan error // nil: nobody waits
	barrier bool       // no record: done once everything queued before it is durable
}

// Recorder batches records to a Store, spooling them to a local file while
// the store is unreachable. Nothing acknowledged is lost: a change (and, in
// strict mode, a check) returns only once its record is in the store or in
// the fsynced spool.
type Recorder struct {
	cfg   Config
	log   *slog.Logger
	m     *Metrics
	queue chan item

	spoolMu sync.Mutex // guards the spool file
	spooled int        // guarded by spoolMu: records in the spool not yet replayed

	closeOnce sync.Once
	stopped   chan struct{}
}

// NewRecorder builds a recorder; call Run to start flushing.
func NewRecorder(cfg Config) (*Recorder, error) {
	if cfg.Store == nil {
		return nil, errors.New("audit: a store is required")
	}
	switch cfg.Mode {
	case "":
		cfg.Mode = ModeBatched
	case ModeBatched, ModeStrict:
	default:
		return nil, fmt.Errorf("audit mode %q is not %s or %s", cfg.Mode, ModeBatched, ModeStrict)
	}
	if cfg.BatchSize <= 0 {
		cfg.BatchSize = 500
	}
	if cfg.FlushInterval <= 0 {
		cfg.FlushInterval = 50 * time.Millisecond
	}
	if cfg.QueueSize <= 0 {
		cfg.QueueSize = 65536
	}
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	r := &Recorder{cfg: cfg, log: cfg.Log, m: cfg.Metrics, queue: make(chan item, cfg.QueueSize), stopped: make(chan struct{})}
	if cfg.SpoolPath != "" {
		n, err := countLines(cfg.SpoolPath)
		if err != nil {
			return nil, err
		}
		r.spooled = n
		if n > 0 {
			r.log.Warn("audit: records spooled by an earlier run will be replayed", "records", n, "spool", cfg.SpoolPath)
		}
	}
	return r, nil
}

// Strict reports whether checks wait for their records.
func (r *Recorder) Strict() bool { return r.cfg.Mode == ModeStrict }

// Record queues a record. With wait, it returns once the record is durable.
func (r *Recorder) Record(ctx context.Context, rec Record, wait bool) error {
	it := item{r: rec}
	if wait {
		it.done = make(chan error, 1)
	}
	select {
	case r.queue <- it:
	case <-r.stopped:
		return errors.New("audit: recorder stopped")
	case <-ctx.Done():
		return ctx.Err()
	}
	if !wait {
		return nil
	}
	select {
	case err := <-it.done:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Sync returns once every record queued before it is durable, so a query
// that follows sees them.
func (r *Recorder) Sync(ctx context.Context) error {
	it := item{barrier: true, done: make(chan error, 1)}
	select {
	case r.queue <- it:
	case <-r.stopped:
		return errors.New("audit: recorder stopped")
	case <-ctx.Done():
		return ctx.Err()
	}
	select {
	case err := <-it.done:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Run flushes until Close. Batches go to the store unless the spool holds
// records, which are replayed first so the store receives everything in order.
func (r *Recorder) Run(ctx context.Context) {
	replay := time.NewTicker(time.Second)
	defer replay.Stop()
	batch := make([]item, 0, r.cfg.BatchSize)
	timer := time.NewTimer(r.cfg.FlushInterval)
	defer timer.Stop()
	flush := func() {
		if len(batch) > 0 {
			r.flush(batch)
			batch = batch[:0]
		}
	}
	for {
		select {
		case it, ok := <-r.queue:
			if !ok {
				flush()
				r.replay()
				return
			}
			batch = append(batch, it)
			waiting := it.done != nil
			// Take whatever else is already queued: one write for all of it.
		drain:
			for len(batch) < r.cfg.BatchSize {
				select {
				case more, ok := <-r.queue:
					if !ok {
						break drain
					}
					batch = append(batch, more)
					waiting = waiting || more.done != nil
				default:
					break drain
				}
			}
			// Someone waits (a change, a strict check): commit now, as a group.
			if waiting || len(batch) >= r.cfg.BatchSize {
				flush()
			}
		case <-timer.C:
			flush()
			timer.Reset(r.cfg.FlushInterval)
		case <-replay.C:
			r.replay()
		}
	}
}

// Close flushes every queued record and stops. Safe to call more than once.
func (r *Recorder) Close() {
	r.closeOnce.Do(func() {
		close(r.stopped)
		close(r.queue)
	})
}

func (r *Recorder) flush(batch []item) {
	recs := make([]Record, 0, len(batch))
	for _, it := range batch {
		if !it.barrier {
			recs = append(recs, it.r)
		}
	}
	err := r.write(recs)
	for _, it := range batch {
		if it.done != nil {
			it.done <- err
		}
	}
}

// write stores records, or spools them. It fails only if neither worked.
func (r *Recorder) write(recs []Record) error {
	if len(recs) == 0 {
		return nil
	}
	r.spoolMu.Lock()
	pending := r.spooled
	r.spoolMu.Unlock()
	if pending == 0 {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		err := r.cfg.Store.Write(ctx, recs)
		cancel()
		if err == nil {
			r.m.written(len(recs))
			r.emit(recs)
			return nil
		}
		if r.cfg.SpoolPath == "" {
			r.m.dropped(len(recs))
			r.log.Error("AUDIT RECORDS DROPPED: the store failed and no spool is configured", "records", len(recs), "error", err)
			return err
		}
		r.log.Warn("audit: store unreachable; spooling records locally", "error", err, "spool", r.cfg.SpoolPath)
	}
	if err := r.appendSpool(recs); err != nil {
		r.m.dropped(len(recs))
		r.log.Error("AUDIT RECORDS DROPPED: the store is unreachable and the spool cannot be written (disk full?)", "records", len(recs), "error", err, "spool", r.cfg.SpoolPath)
		return err
	}
	r.m.spool(len(recs))
	return nil
}

func (r *Recorder) appendSpool(recs []Record) error {
	r.spoolMu.Lock()
	defer r.spoolMu.Unlock()
	f, err := os.OpenFile(r.cfg.SpoolPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return err
	}
	w := bufio.NewWriter(f)
	enc := json.NewEncoder(w)
	for i := range recs {
		if err := enc.Encode(&recs[i]); err != nil {
			f.Close()
			return err
		}
	}
	if err := w.Flush(); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	r.spooled += len(recs)
	return nil
}

// replay moves the spool into the store, in order, batch by batch. A record
// already stored (written just before a crash) is skipped by its id.
func (r *Recorder) replay() {
	r.spoolMu.Lock()
	defer r.spoolMu.Unlock()
	if r.spooled == 0 || r.cfg.SpoolPath == "" {
		return
	}
	f, err := os.Open(r.cfg.SpoolPath)
	if err != nil {
		r.log.Error("audit: cannot read the spool", "error", err)
		return
	}
	defer f.Close()
	dec := json.NewDecoder(bufio.NewReader(f))
	var batch []Record
	total := 0
	for {
		var rec Record
		err := dec.Decode(&rec)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			// A torn last line from a crash mid-append: what precedes it is whole.
			r.log.Warn("audit: skipping an unreadable spool record", "error", err)
			break
		}
		batch = append(batch, rec)
		if len(batch) == r.cfg.BatchSize {
			if !r.replayBatch(batch) {
				return
			}
			total += len(batch)
			batch = nil // stores may keep the slice they were given
		}
	}
	if len(batch) > 0 {
		if !r.replayBatch(batch) {
			return
		}
		total += len(batch)
	}
	if err := os.Truncate(r.cfg.SpoolPath, 0); err != nil {
		r.log.Error("audit: cannot truncate the replayed spool; its records may be replayed again (skipped by id)", "error", err)
		return
	}
	r.spooled = 0
	r.log.Info("audit: spool replayed into the store", "records", total)
}

func (r *Recorder) replayBatch(batch []Record) bool {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := r.cfg.Store.Write(ctx, batch); err != nil {
		return false
	}
	r.m.replay(len(batch))
	r.emit(batch)
	return true
}

func (r *Recorder) emit(recs []Record) {
	for _, s := range r.cfg.Sinks {
		if err := s.Emit(recs); err != nil {
			r.log.Warn("audit: sink failed", "error", err)
		}
	}
}

func countLines(path string) (int, error) {
	f, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) {
		return 0, nil
	}
	if err != nil {
		return 0, err
	}
	defer f.Close()
	n := 0
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<24)
	for sc.Scan() {
		if len(sc.Bytes()) > 0 {
			n++
		}
	}
	return n, sc.Err()
}

// Metrics are the recorder's Prometheus metrics. A nil *Metrics records nothing.
type Metrics struct {
	writtenC, spooledC, replayedC, droppedC prometheus.Counter
}

// NewMetrics registers the audit metrics on reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		writtenC:  prometheus.NewCounter(prometheus.CounterOpts{Namespace: "mandate", Name: "audit_written_total", Help: "Audit records written to the store."}),
		spooledC:  prometheus.NewCounter(prometheus.CounterOpts{Namespace: "mandate", Name: "audit_spooled_total", Help: "Audit records written to the local spool while the store was unreachable."}),
		replayedC: prometheus.NewCounter(prometheus.CounterOpts{Namespace: "mandate", Name: "audit_replayed_total", Help: "Spooled audit records replayed into the store."}),
		droppedC:  prometheus.NewCounter(prometheus.CounterOpts{Namespace: "mandate", Name: "audit_dropped_total", Help: "Audit records lost because neither the store nor the spool could take them. Stays 0 unless the spool disk is full."}),
	}
	reg.MustRegister(m.writtenC, m.spooledC, m.replayedC, m.droppedC)
	return m
}

func (m *Metrics) written(n int) {
	if m != nil {
		m.writtenC.Add(float64(n))
	}
}
func (m *Metrics) spool(n int) {
	if m != nil {
		m.spooledC.Add(float64(n))
	}
}
func (m *Metrics) replay(n int) {
	if m != nil {
		m.replayedC.Add(float64(n))
	}
}
func (m *Metrics) dropped(n int) {
	if m != nil {
		m.droppedC.Add(float64(n))
	}
}
