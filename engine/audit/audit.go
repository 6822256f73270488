// Package audit records every decision and every change with its agent,
// human, task, grants, stated reason and correlation id, durably, and answers
// queries over them.
package audit

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// Kinds of records.
const (
	KindCheck  = "check"
	KindChange = "change"
)

// Decisions of a check record.
const (
	DecisionAllow = "allow"
	DecisionDeny  = "deny"
	DecisionError = "error"
)

// Now is a record's time: Postgres keeps microseconds, and page tokens must
// compare equal to what is stored.
func Now() time.Time { return time.Now().UTC().Truncate(time.Microsecond) }

// NewID is a fresh record id: prefix ("dec" for a decision, "chg" for a
// change), an underscore and 128 random bits in hex.
func NewID(prefix string) string {
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	return prefix + "_" + hex.EncodeToString(b)
}

// NewChange is the record of one change: action on target by caller, with
// its details. The principal and the task, when details name them, are
// lifted into the record so the trail can be queried by them.
func NewChange(requestID, caller, action, target string, details map[string]any) Record {
	r := Record{ID: NewID("chg"), Time: Now(), Kind: KindChange, RequestID: requestID, Caller: caller,
		Action: action, Target: target, Details: details}
	if p, ok := details["principal"].(string); ok {
		r.Principal = p
	}
	if t, ok := details["task"].(string); ok {
		r.Task = t
	}
	return r
}

// Record is one decision or one change. Its ID is unique, so writing it twice
// (a replay after an outage) stores it once.
type Record struct {
	ID   string    `json:"id"`
	Time time.Time `json:"time"`
	Kind string    `json:"kind"`

	Decision         string   `json:"decision,omitempty"`
	ReasonCode       string   `json:"reason_code,omitempty"`
	FailedLeg        string   `json:"failed_leg,omitempty"`
	Subject          string   `json:"subject,omitempty"`
	Chain            []string `json:"chain,omitempty"`
	Principal        string   `json:"principal,omitempty"`
	Task             string   `json:"task,omitempty"`
	Permission       string   `json:"permission,omitempty"`
	Resource         string   `json:"resource,omitempty"`
	Grants           []string `json:"grants,omitempty"`
	Reason           string   `json:"reason,omitempty"`
	CorrelationID    string   `json:"correlation_id,omitempty"`
	RequestID        string   `json:"request_id,omitempty"`
	Caller           string   `json:"caller,omitempty"`
	ConsistencyToken string   `json:"consistency_token,omitempty"`
	LatencyMicros    int64    `json:"latency_us,omitempty"`
	Cached           bool     `json:"cached,omitempty"`
	// SourceAddr is the caller's network address: the gRPC peer, or for REST
	// and AuthZEN the client the gateway saw ("ip:port" or "ip").
	SourceAddr string `json:"source_addr,omitempty"`
	// TraceID is the W3C trace id of the request (32 hex digits), when the
	// caller sent a traceparent or mandate traces.
	TraceID string `json:"trace_id,omitempty"`
	// Workload is the SPIFFE ID of the X.509-SVID the caller presented over
	// mutual TLS, whether it authenticated with it or with a key: for
	// agent.create and token.issue, the workload the new agent records.
	Workload string `json:"workload_id,omitempty"`

	Action  string         `json:"action,omitempty"`
	Target  string         `json:"target,omitempty"`
	Details map[string]any `json:"details,omitempty"`
}

// Agent is the agent a record is about: the checked agent, or the agent a change acted on.
func (r *Record) Agent() string {
	if strings.HasPrefix(r.Subject, "agent:") {
		return r.Subject
	}
	if strings.HasPrefix(r.Target, "agent:") {
		return r.Target
	}
	if h, ok := r.Details["holder"].(string); ok && strings.HasPrefix(h, "agent:") {
		return h
	}
	return ""
}

// Filter selects records. Empty fields match everything.
type Filter struct {
	Agent         string
	Principal     string
	Task          string
	CorrelationID string
	Decision      string
	Resource      string
	Since         time.Time
	Until         time.Time
	PageSize      int
	// After continues a listing: records strictly older than this cursor.
	After *Cursor
}

// Matches reports whether r passes the filter (the cursor aside).
func (f *Filter) Matches(r *Record) bool {
	switch {
	case f.Agent != "" && r.Agent() != f.Agent:
	case f.Principal != "" && r.Principal != f.Principal:
	case f.Task != "" && r.Task != f.Task:
	case f.CorrelationID != "" && r.CorrelationID != f.CorrelationID:
	case f.Decision != "" && r.Decision != f.Decision:
	case f.Resource != "" && r.Resource != f.Resource:
	case !f.Since.IsZero() && r.Time.Before(f.Since):
	case !f.Until.IsZero() && !r.Time.Before(f.Until):
	default:
		return true
	}
	return false
}

// Cursor is a position in the newest-first order: (time, id) descending.
type Cursor struct {
	Time time.Time
	ID   string
}

// Before reports whether r comes after the cursor in newest-first order.
func (c *Cursor) Before(r *Record) bool {
	if !r.Time.Equal(c.Time) {
		return r.Time.Before(c.Time)
	}
	return r.ID < c.ID
}

type tokenV1 struct {
	V  int    `json:"v"`
	T  int64  `json:"t"`
	ID string `json:"i"`
}

// EncodeToken makes an opaque page token from the last record of a page.
func EncodeToken(r *Record) string {
	b, _ := json.Marshal(tokenV1{V: 1, T: r.Time.UnixNano(), ID: r.ID})
	return base64.RawURLEncoding.EncodeToString(b)
}

// ErrBadToken is a page token this server did not make.
var ErrBadToken = errors.New("malformed page token")

// DecodeToken reads a page token.
func DecodeToken(s string) (*Cursor, error) {
	if len(s) > 512 {
		return nil, ErrBadToken
	}
	b, err := base64.RawURLEncoding.DecodeString(s)
	if err != nil {
		return nil, ErrBadToken
	}
	var t tokenV1
	dec := json.NewDecoder(strings.NewReader(string(b)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&t); err != nil || t.V != 1 || t.ID == "" || len(t.ID) > 128 || t.T <= 0 {
		return nil, ErrBadToken
	}
	return &Cursor{Time: time.Unix(0, t.T).UTC(), ID: t.ID}, nil
}

// ParseTime reads an RFC 3339 time, or a duration back from now such as
// "30d", "12h" or "90m".
func ParseTime(s string, now time.Time) (time.Time, error) {
	if s == "" {
		return time.Time{}, nil
	}
	if t, err := time.Parse(time.RFC3339Nano, s); err == nil {
		return t.UTC(), nil
	}
	if days, ok := strings.CutSuffix(s, "d"); ok {
		n, err := strconv.Atoi(days)
		if err != nil || n < 0 || n > 36500 {
			return time.Time{}, fmt.Errorf("%q is not a time (RFC 3339) or a duration such as 30d or 12h", s)
		}
		return now.Add(-time.Duration(n) * 24 * time.Hour).UTC(), nil
	}
	d, err := time.ParseDuration(s)
	if err != nil || d < 0 {
		return time.Time{}, fmt.Errorf("%q is not a time (RFC 3339) or a duration such as 30d or 12h", s)
	}
	return now.Add(-d).UTC(), nil
}

// Store keeps records and answers queries, newest first.
type Store interface {
	// Write stores records; a record whose id is already stored is skipped.
	Write(ctx context.Context, rs []Record) error
	// Query returns up to f.PageSize records matching f, newest first.
	Query(ctx context.Context, f Filter) ([]Record, error)
}
