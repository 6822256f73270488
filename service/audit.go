package service

import (
	"context"
	"errors"
	"fmt"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/mandate-dev/mandate/engine"
	"github.com/mandate-dev/mandate/engine/audit"
	"github.com/mandate-dev/mandate/engine/tracing"
	mandatev1 "github.com/mandate-dev/mandate/proto/mandate/v1"
)

// auditNow is the record time: Postgres keeps microseconds, and page tokens
// must compare equal to what is stored.
func auditNow() time.Time { return time.Now().UTC().Truncate(time.Microsecond) }

func (h *Handlers) base(ctx context.Context, id, kind string) audit.Record {
	r := audit.Record{ID: id, Time: auditNow(), Kind: kind, RequestID: requestID(ctx), SourceAddr: callerAddr(ctx), TraceID: tracing.TraceID(ctx)}
	if k, ok := CallerFrom(ctx); ok {
		r.Caller = k.Name
	}
	return r
}

// recordCheck writes the audit record of one decision. In strict mode it
// waits until the record is durable and fails the check if it cannot be.
func (h *Handlers) recordCheck(ctx context.Context, id string, req *mandatev1.CheckRequest, d engine.Decision, chain []string, derr error, took time.Duration) error {
	if h.Audit == nil {
		return nil
	}
	ctx, span := tracing.Start(ctx, tracing.SpanAudit)
	defer span.End()
	r := h.base(ctx, id, audit.KindCheck)
	r.Subject, r.Permission, r.Resource = req.GetSubject(), req.GetPermission(), req.GetResource()
	r.Reason, r.CorrelationID = req.GetReason(), req.GetCorrelationId()
	r.LatencyMicros = took.Microseconds()
	if derr != nil {
		r.Decision = audit.DecisionError
	} else {
		r.Decision = audit.DecisionDeny
		if d.Allowed {
			r.Decision = audit.DecisionAllow
		}
		r.ReasonCode, r.FailedLeg = d.Reason, audit.FailedLeg(d.Reason)
		r.Chain, r.Grants = chain, d.Grants
		r.Principal, r.Task = refString(d.Principal), refString(d.Task)
		r.ConsistencyToken, r.Cached = d.Token, d.Cached
		// What the conditions and bounds saw, for the reviewer.
		if d.Condition != "" || len(d.MissingContext) > 0 || d.Bound != "" || len(req.GetContext().GetFields()) > 0 {
			r.Details = map[string]any{}
			if d.Condition != "" {
				r.Details["condition"] = d.Condition
			}
			if len(d.MissingContext) > 0 {
				r.Details["missing_context"] = toAny(d.MissingContext)
			}
			if d.Bound != "" {
				r.Details["bound"] = d.Bound
			}
			if len(req.GetContext().GetFields()) > 0 {
				r.Details["context"] = req.GetContext().AsMap()
			}
		}
	}
	if err := h.Audit.Record(ctx, r, h.Audit.Strict()); err != nil {
		return status.Errorf(codes.Unavailable, "the decision could not be recorded durably (audit mode strict): %v", err)
	}
	return nil
}

// recordChange writes a change's audit record and waits until it is durable:
// a change is acknowledged only once its record is.
func (h *Handlers) recordChange(ctx context.Context, action, target string, details map[string]any) error {
	if h.Audit == nil {
		return nil
	}
	r := h.base(ctx, newChangeID(), audit.KindChange)
	r.Action, r.Target, r.Details = action, target, details
	if p, ok := details["principal"].(string); ok {
		r.Principal = p
	}
	if t, ok := details["task"].(string); ok {
		r.Task = t
	}
	if err := h.Audit.Record(ctx, r, true); err != nil {
		return status.Errorf(codes.Unavailable, "%s was applied, but its audit record could not be made durable: %v", action, err)
	}
	return nil
}

func newChangeID() string { return "chg_" + decisionID()[4:] }

const (
	defaultAuditPage = 50
	maxAuditPage     = 1000
)

var auditDecisions = map[string]bool{audit.DecisionAllow: true, audit.DecisionDeny: true, audit.DecisionError: true}

func (h *Handlers) ListAudit(ctx context.Context, r *mandatev1.ListAuditRequest) (*mandatev1.ListAuditResponse, error) {
	if h.AuditStore == nil {
		return nil, status.Error(codes.FailedPrecondition, "audit is off on this server (--audit-mode off)")
	}
	f := audit.Filter{CorrelationID: r.GetCorrelationId(), PageSize: int(r.GetPageSize())}
	refs := []struct {
		field, value, typ string
		dst               *string
	}{
		{"agent", r.GetAgent(), "agent", &f.Agent},
		{"principal", r.GetPrincipal(), "user", &f.Principal},
		{"task", r.GetTask(), "task", &f.Task},
		{"resource", r.GetResource(), "", &f.Resource},
	}
	for _, x := range refs {
		if x.value == "" {
			continue
		}
		ref, err := engine.ParseRef(x.field, x.value)
		if err != nil {
			return nil, h.err(ctx, err)
		}
		if x.typ != "" && ref.Type != x.typ {
			return nil, h.err(ctx, &engine.Error{Kind: engine.KindInvalidArgument, Field: x.field, Msg: fmt.Sprintf("must be a %s reference (%s:<id>)", x.typ, x.typ)})
		}
		*x.dst = ref.String()
	}
	if len(f.CorrelationID) > maxCorrelationID {
		return nil, h.err(ctx, &engine.Error{Kind: engine.KindInvalidArgument, Field: "correlation_id", Msg: "is too long"})
	}
	if d := r.GetDecision(); d != "" {
		if !auditDecisions[d] {
			return nil, h.err(ctx, &engine.Error{Kind: engine.KindInvalidArgument, Field: "decision", Msg: fmt.Sprintf("%q is not allow, deny or error", d)})
		}
		f.Decision = d
	}
	now := time.Now()
	var err error
	if f.Since, err = audit.ParseTime(r.GetSince(), now); err != nil {
		return nil, h.err(ctx, &engine.Error{Kind: engine.KindInvalidArgument, Field: "since", Msg: err.Error()})
	}
	if f.Until, err = audit.ParseTime(r.GetUntil(), now); err != nil {
		return nil, h.err(ctx, &engine.Error{Kind: engine.KindInvalidArgument, Field: "until", Msg: err.Error()})
	}
	if !f.Since.IsZero() && !f.Until.IsZero() && !f.Since.Before(f.Until) {
		return nil, h.err(ctx, &engine.Error{Kind: engine.KindInvalidArgument, Field: "since", Msg: "must be before until"})
	}
	switch {
	case f.PageSize == 0:
		f.PageSize = defaultAuditPage
	case f.PageSize > maxAuditPage:
		return nil, h.err(ctx, &engine.Error{Kind: engine.KindInvalidArgument, Field: "page_size", Msg: fmt.Sprintf("must be at most %d", maxAuditPage)})
	}
	if tok := r.GetPageToken(); tok != "" {
		c, err := audit.DecodeToken(tok)
		if err != nil {
			return nil, h.err(ctx, &engine.Error{Kind: engine.KindInvalidArgument, Field: "page_token", Msg: "is not a token this server issued"})
		}
		f.After = c
	}
	if err := h.syncAudit(ctx); err != nil {
		return nil, err
	}
	recs, err := h.AuditStore.Query(ctx, f)
	if err != nil {
		return nil, h.err(ctx, &engine.Error{Kind: engine.KindUnavailable, Msg: "audit store unavailable", Err: errors.Join(engine.ErrUnavailable, err)})
	}
	out := &mandatev1.ListAuditResponse{Records: make([]*mandatev1.AuditRecord, len(recs))}
	for i := range recs {
		out.Records[i] = auditPB(&recs[i])
	}
	if len(recs) == f.PageSize {
		out.NextPageToken = audit.EncodeToken(&recs[len(recs)-1])
	}
	return out, nil
}

func auditPB(r *audit.Record) *mandatev1.AuditRecord {
	pb := &mandatev1.AuditRecord{
		Id: r.ID, Time: tsp(r.Time), Kind: r.Kind, Decision: r.Decision, ReasonCode: r.ReasonCode, FailedLeg: r.FailedLeg,
		Subject: r.Subject, Chain: r.Chain, Principal: r.Principal, Task: r.Task, Permission: r.Permission, Resource: r.Resource,
		Grants: r.Grants, Reason: r.Reason, CorrelationId: r.CorrelationID, RequestId: r.RequestID, Caller: r.Caller,
		ConsistencyToken: r.ConsistencyToken, LatencyUs: r.LatencyMicros, Cached: r.Cached, Action: r.Action, Target: r.Target,
	}
	if len(r.Details) > 0 {
		if s, err := structpb.NewStruct(normalizeDetails(r.Details)); err == nil {
			pb.Details = s
		}
	}
	return pb
}

// normalizeDetails makes details structpb-safe (string slices become []any).
func normalizeDetails(m map[string]any) map[string]any {
	out := make(map[string]any, len(m))
	for k, v := range m {
		switch x := v.(type) {
		case []string:
			l := make([]any, len(x))
			for i := range x {
				l[i] = x[i]
			}
			out[k] = l
		default:
			out[k] = v
		}
	}
	return out
}

// syncAudit makes every record acknowledged so far visible to the query that follows.
func (h *Handlers) syncAudit(ctx context.Context) error {
	if h.Audit == nil {
		return nil
	}
	if err := h.Audit.Sync(ctx); err != nil {
		return status.Errorf(codes.Unavailable, "audit records could not be made durable: %v", err)
	}
	return nil
}
