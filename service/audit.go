package service

import (
	"context"
	"errors"
	"fmt"
	"time"

	"google.golang.org/protobuf/types/known/structpb"

	"github.com/mandate-dev/mandate/engine"
	"github.com/mandate-dev/mandate/engine/audit"
	"github.com/mandate-dev/mandate/engine/tracing"
	mandatev1 "github.com/mandate-dev/mandate/proto/mandate/v1"
)

// recordChange writes a change's audit record and waits until it is durable:
// a change is acknowledged only once its record is.
func (h *Handlers) recordChange(ctx context.Context, action, target string, details map[string]any) error {
	if h.Audit == nil {
		return nil
	}
	caller := ""
	if k, ok := CallerFrom(ctx); ok {
		caller = k.Name
	}
	r := audit.NewChange(requestID(ctx), caller, action, target, details)
	r.SourceAddr, r.TraceID, r.Workload = callerAddr(ctx), tracing.TraceID(ctx), CallerWorkload(ctx)
	if err := h.Audit.Record(ctx, r, true); err != nil {
		return h.err(ctx, &engine.Error{Kind: engine.KindUnavailable,
			Msg: action + " was applied, but its audit record could not be made durable", Err: errors.Join(engine.ErrUnavailable, err)})
	}
	return nil
}

const (
	defaultAuditPage = 50
	maxAuditPage     = 1000
)

var auditDecisions = map[string]bool{audit.DecisionAllow: true, audit.DecisionDeny: true, audit.DecisionError: true}

func (h *Handlers) ListAudit(ctx context.Context, r *mandatev1.ListAuditRequest) (*mandatev1.ListAuditResponse, error) {
	if h.AuditStore == nil {
		return nil, h.err(ctx, &engine.Error{Kind: engine.KindFailedPrecondition, Msg: "audit is off on this server (--audit-mode off)"})
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
		WorkloadId: r.Workload,
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
		return h.err(ctx, &engine.Error{Kind: engine.KindUnavailable,
			Msg: "audit records could not be made durable", Err: errors.Join(engine.ErrUnavailable, err)})
	}
	return nil
}
