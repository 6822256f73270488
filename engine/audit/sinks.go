package audit

import (
	"bufio"
	"encoding/json"
	"io"
	"os"
	"strings"
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

// OCSF activity ids of API Activity (class 6003).
const (
	ocsfCreate = 1
	ocsfRead   = 2
	ocsfUpdate = 3
	ocsfDelete = 4
	ocsfOther  = 99
)

// OCSF maps a record to an OCSF 1.1 API Activity event (class_uid 6003),
// for SIEMs. The mapping is in the README.
func OCSF(r *Record) map[string]any {
	activity := ocsfOther
	operation := r.Action
	status, statusID := "Success", 1
	if r.Kind == KindCheck {
		activity, operation = ocsfRead, "check:"+r.Permission
		if r.Decision != DecisionAllow {
			status, statusID = "Failure", 2
		}
	} else {
		switch {
		case strings.HasSuffix(r.Action, ".create"):
			activity = ocsfCreate
		case strings.HasSuffix(r.Action, ".revoke"), strings.HasSuffix(r.Action, ".delete"):
			activity = ocsfDelete
		case strings.HasSuffix(r.Action, ".complete"), strings.HasSuffix(r.Action, ".suspend"), strings.HasSuffix(r.Action, ".resume"),
			strings.HasSuffix(r.Action, ".write"):
			activity = ocsfUpdate
		}
		if strings.HasSuffix(r.Action, ".refused") {
			status, statusID = "Failure", 2
		}
	}
	actor := map[string]any{}
	if subject := firstNonEmpty(r.Subject, r.Agent()); subject != "" {
		actor["user"] = map[string]any{"uid": subject, "type": userType(subject)}
	}
	if r.Principal != "" {
		actor["invoked_by"] = r.Principal
	}
	if r.Kind == KindCheck {
		auth := map[string]any{"decision": r.Decision, "policy": map[string]any{"name": r.ReasonCode, "uid": strings.Join(r.Grants, ",")}}
		actor["authorizations"] = []any{auth}
	}
	if r.Caller != "" {
		actor["app_name"] = r.Caller
	}
	ev := map[string]any{
		"class_uid":    6003,
		"class_name":   "API Activity",
		"category_uid": 6,
		"activity_id":  activity,
		"type_uid":     6003*100 + activity,
		"severity_id":  1,
		"status":       status,
		"status_id":    statusID,
		"time":         r.Time.UnixMilli(),
		"actor":        actor,
		"api": map[string]any{
			"operation": operation,
			"service":   map[string]any{"name": "mandate"},
			"request":   map[string]any{"uid": r.RequestID},
		},
		"metadata": map[string]any{
			"version":         "1.1.0",
			"uid":             r.ID,
			"correlation_uid": r.CorrelationID,
			"product":         map[string]any{"name": "mandate", "vendor_name": "mandate"},
		},
		"unmapped": map[string]any{
			"task": r.Task, "chain": r.Chain, "reason_code": r.ReasonCode, "failed_leg": r.FailedLeg,
			"cached": r.Cached, "latency_us": r.LatencyMicros, "consistency_token": r.ConsistencyToken, "details": r.Details,
		},
	}
	if res := firstNonEmpty(r.Resource, r.Target); res != "" {
		typ, _, _ := strings.Cut(res, ":")
		ev["resources"] = []any{map[string]any{"uid": res, "type": typ}}
	}
	if r.Reason != "" {
		ev["message"] = r.Reason
	}
	return ev
}

func userType(ref string) string {
	if strings.HasPrefix(ref, "agent:") {
		return "Other"
	}
	return "User"
}

func firstNonEmpty(xs ...string) string {
	for _, x := range xs {
		if x != "" {
			return x
		}
	}
	return ""
}
