package decider

import (
	"context"
	"errors"
	"time"

	"github.com/mandate-dev/mandate/engine"
	"github.com/mandate-dev/mandate/engine/audit"
	"github.com/mandate-dev/mandate/engine/tracing"
)

// Audit records every decision in the audit trail, a decision that failed
// included (decision "error"), and only then lets the answer go out. In
// strict mode it waits until the record is durable and fails the check if it
// cannot be: an unrecorded allow is not acknowledged.
type Audit struct {
	next     engine.Decider
	recorder *audit.Recorder
}

// NewAudit wraps next; recorder must not be nil.
func NewAudit(next engine.Decider, recorder *audit.Recorder) *Audit {
	return &Audit{next: next, recorder: recorder}
}

// Decide asks the next decider and records what it answered.
func (a *Audit) Decide(ctx context.Context, q engine.Query) (engine.Decision, error) {
	start := time.Now()
	d, derr := a.next.Decide(ctx, q)
	ctx, span := tracing.Start(ctx, tracing.SpanAudit)
	defer span.End()
	r := CheckRecord(q, d, derr, time.Since(start))
	r.TraceID = tracing.TraceID(ctx)
	if err := a.recorder.Record(ctx, r, a.recorder.Strict()); err != nil {
		return engine.Decision{}, &engine.Error{Kind: engine.KindUnavailable,
			Msg: "the decision could not be recorded durably (audit mode strict)", Err: errors.Join(engine.ErrUnavailable, err)}
	}
	return d, derr
}

// CheckRecord is the audit record of one decision; derr, when set, makes it
// a record of decision "error".
func CheckRecord(q engine.Query, d engine.Decision, derr error, took time.Duration) audit.Record {
	r := audit.Record{
		ID: q.DecisionID, Time: audit.Now(), Kind: audit.KindCheck, RequestID: q.RequestID, Caller: q.Caller,
		Subject: q.Subject.String(), Permission: q.Permission, Resource: q.Resource.String(),
		Reason: q.StatedReason, CorrelationID: q.CorrelationID, LatencyMicros: took.Microseconds(), SourceAddr: q.SourceAddr,
		Workload: q.CallerWorkload,
	}
	if derr != nil {
		r.Decision = audit.DecisionError
		return r
	}
	r.Decision = audit.DecisionDeny
	if d.Allowed {
		r.Decision = audit.DecisionAllow
	}
	r.ReasonCode, r.FailedLeg = string(d.Reason), d.Reason.Leg()
	r.Chain, r.Grants = engine.RefStrings(d.Chain), d.Grants
	r.Principal, r.Task = d.Principal.OrEmpty(), d.Task.OrEmpty()
	r.ConsistencyToken, r.Cached = d.Token, d.Cached
	// What the conditions and bounds saw, for the reviewer.
	details := map[string]any{}
	if d.Condition != "" {
		details["condition"] = d.Condition
	}
	if len(d.MissingContext) > 0 {
		details["missing_context"] = toAny(d.MissingContext)
	}
	if d.Bound != "" {
		details["bound"] = d.Bound
	}
	if len(q.Context.GetFields()) > 0 {
		details["context"] = q.Context.AsMap()
	}
	if q.TokenID != "" {
		details["jti"] = q.TokenID
	}
	if len(details) > 0 {
		r.Details = details
	}
	return r
}

func toAny(ss []string) []any {
	out := make([]any, len(ss))
	for i, s := range ss {
		out[i] = s
	}
	return out
}
