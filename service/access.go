package service

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/mandate-dev/mandate/engine"
	"github.com/mandate-dev/mandate/engine/alert"
	"github.com/mandate-dev/mandate/engine/audit"
	"github.com/mandate-dev/mandate/engine/tracing"
	mandatev1 "github.com/mandate-dev/mandate/proto/mandate/v1"
)

// AccessHandlers implements AccessRequestService: agents' requests for one
// more grant, and their humans' answers.
//
// Who answers: the human the agent acts for, with their own OIDC token
// (RoleHuman), or an admin key; an operator key only while no OIDC issuer
// is configured (OIDCConfigured), and the audit record says it was one. The
// key that filed a request never answers it.
type AccessHandlers struct {
	mandatev1.UnimplementedAccessRequestServiceServer
	*Handlers
}

// Ways an answer was authorized, recorded as decided_as.
const (
	answeredAsHuman    = "human"
	answeredAsAdmin    = "admin"
	answeredAsOperator = "operator"
)

const defaultRequestPage = 50

func accessRequestPB(r *engine.AccessRequest) *mandatev1.AccessRequest {
	return &mandatev1.AccessRequest{
		Id: r.ID, Agent: r.Agent.String(), Human: r.Human.OrEmpty(), Task: r.Task.OrEmpty(), Permission: r.Permission,
		Resource: r.Resource.String(), Ttl: r.TTL, Reason: r.Reason, State: r.State, FiledBy: r.FiledBy,
		FiledAt: tsp(r.FiledAt), ExpiresAt: tsp(r.ExpiresAt), DecidedBy: r.DecidedBy, DecidedAt: tsp(r.DecidedAt),
		DecisionReason: r.DecisionReason, Grant: r.Grant, DecidedAs: r.DecidedAs, Chain: engine.RefStrings(r.Chain),
	}
}

func (h *AccessHandlers) CreateAccessRequest(ctx context.Context, r *mandatev1.CreateAccessRequestRequest) (*mandatev1.CreateAccessRequestResponse, error) {
	caller, _ := CallerFrom(ctx)
	if len(r.GetReason()) > maxReason {
		return nil, h.err(ctx, &engine.Error{Kind: engine.KindInvalidArgument, Field: "reason", Msg: "is too long"})
	}
	req, tok, err := h.Engine.FileAccessRequest(ctx, engine.FileAccessRequestInput{
		Agent: r.GetAgent(), Permission: r.GetPermission(), Resource: r.GetResource(), TTL: r.GetTtl(), Reason: r.GetReason(), FiledBy: caller.Name,
	})
	if err != nil {
		if e, ok := err.(*engine.Error); ok && e.Reason == engine.ReasonEscalation {
			// A refused request is audited like a refused grant.
			if rerr := h.recordChange(ctx, "access_request.refused", r.GetAgent(), map[string]any{
				"holder": r.GetAgent(), "permission": r.GetPermission(), "resource": r.GetResource(), "ttl": r.GetTtl(),
				"reason": r.GetReason(), "why": e.Msg,
			}); rerr != nil {
				return nil, rerr
			}
		}
		return nil, h.err(ctx, err)
	}
	if req.Refiled {
		// Already waiting for its human, who was told and is not told twice.
		return &mandatev1.CreateAccessRequestResponse{AccessRequest: accessRequestPB(req), ConsistencyToken: tok}, nil
	}
	if err := h.recordRequest(ctx, "access_request.file", req, req.Reason, map[string]any{
		"ttl": req.TTL, "filed_by": req.FiledBy, "expires_at": req.ExpiresAt.Format(time.RFC3339Nano),
	}); err != nil {
		return nil, err
	}
	if h.Alerter != nil {
		h.Alerter.Send(alert.Event{
			Type: alert.TypeAccessRequestFiled, ID: audit.NewID("evt"), Time: time.Now().UTC(),
			Agent: req.Agent.String(), Principal: req.Human.String(), Task: req.Task.String(),
			Permission: req.Permission, Resource: req.Resource.String(),
			AccessRequest: &alert.AccessRequest{
				ID: req.ID, Human: req.Human.String(), Chain: engine.RefStrings(req.Chain), Permission: req.Permission,
				Resource: req.Resource.String(), TTL: req.TTL, Reason: req.Reason, FiledBy: req.FiledBy,
				FiledAt: req.FiledAt.UTC(), ExpiresAt: req.ExpiresAt.UTC(),
			},
		})
	}
	return &mandatev1.CreateAccessRequestResponse{AccessRequest: accessRequestPB(req), ConsistencyToken: tok}, nil
}

func (h *AccessHandlers) GetAccessRequest(ctx context.Context, r *mandatev1.GetAccessRequestRequest) (*mandatev1.GetAccessRequestResponse, error) {
	var wait time.Duration
	if w := r.GetWait(); w != "" {
		d, err := time.ParseDuration(w)
		if err != nil {
			return nil, h.err(ctx, &engine.Error{Kind: engine.KindInvalidArgument, Field: "wait", Msg: fmt.Sprintf("%q is not a duration such as \"30s\"", clip(w, 64))})
		}
		wait = d
	}
	// A human may read only their own requests: check before waiting.
	if err := h.readable(ctx, r.GetId()); err != nil {
		return nil, h.err(ctx, err)
	}
	req, tok, expiredNow, err := h.Engine.WaitAccessRequest(ctx, r.GetId(), wait)
	if err != nil {
		return nil, h.err(ctx, err)
	}
	if expiredNow {
		if err := h.recordExpired(ctx, req); err != nil {
			return nil, err
		}
	}
	return &mandatev1.GetAccessRequestResponse{AccessRequest: accessRequestPB(req), ConsistencyToken: tok}, nil
}

// readable refuses a human who reads a request of another human's agent.
func (h *AccessHandlers) readable(ctx context.Context, id string) error {
	caller, _ := CallerFrom(ctx)
	if caller.Role != RoleHuman {
		return nil
	}
	req, _, expiredNow, err := h.Engine.GetAccessRequest(ctx, id)
	if err != nil {
		return err
	}
	if req.Human.String() != caller.Name {
		return notYours(caller.Name, req)
	}
	if expiredNow {
		return h.recordExpired(ctx, req)
	}
	return nil
}

func notYours(user string, req *engine.AccessRequest) error {
	return &engine.Error{Kind: engine.KindPermissionDenied, Field: "id",
		Msg: fmt.Sprintf("%s may see and answer only the requests of their own agents; %s is for %s", user, req.ID, req.Human)}
}

func (h *AccessHandlers) ListAccessRequests(ctx context.Context, r *mandatev1.ListAccessRequestsRequest) (*mandatev1.ListAccessRequestsResponse, error) {
	n := defaultRequestPage
	switch size := r.GetPageSize(); {
	case size > maxAuditPage:
		return nil, h.err(ctx, &engine.Error{Kind: engine.KindInvalidArgument, Field: "page_size", Msg: fmt.Sprintf("must be at most %d", maxAuditPage)})
	case size > 0:
		n = int(size)
	}
	after := ""
	if t := r.GetPageToken(); t != "" {
		var err error
		if after, err = decodeCursor(t); err != nil {
			return nil, h.err(ctx, err)
		}
	}
	f := engine.AccessRequestFilter{Human: r.GetHuman(), Agent: r.GetAgent(), State: r.GetState()}
	if caller, _ := CallerFrom(ctx); caller.Role == RoleHuman {
		if f.Human != "" && f.Human != caller.Name {
			return nil, h.err(ctx, &engine.Error{Kind: engine.KindPermissionDenied, Field: "human",
				Msg: fmt.Sprintf("%s may list only their own requests", caller.Name)})
		}
		f.Human = caller.Name
	}
	reqs, next, expired, err := h.Engine.ListAccessRequests(ctx, f, after, n)
	if err != nil {
		return nil, h.err(ctx, err)
	}
	for _, req := range expired {
		if err := h.recordExpired(ctx, req); err != nil {
			return nil, err
		}
	}
	out := &mandatev1.ListAccessRequestsResponse{}
	if next != "" {
		out.NextPageToken = encodeCursor(next)
	}
	for _, req := range reqs {
		out.AccessRequests = append(out.AccessRequests, accessRequestPB(req))
	}
	return out, nil
}

// answer is the caller's answer, with the rules of who may give it.
func (h *AccessHandlers) answer(ctx context.Context, reason string) (engine.Answer, error) {
	caller, _ := CallerFrom(ctx)
	a := engine.Answer{By: caller.Name, Reason: reason}
	switch caller.Role {
	case RoleHuman:
		a.As = answeredAsHuman
		a.Allow = func(req *engine.AccessRequest) error {
			if req.Human.String() != caller.Name {
				return notYours(caller.Name, req)
			}
			return nil
		}
		return a, nil
	case RoleAdmin:
		a.As = answeredAsAdmin
	case RoleOperator:
		if h.OIDCConfigured {
			return a, &engine.Error{Kind: engine.KindPermissionDenied,
				Msg: fmt.Sprintf("key %q is an operator key: once humans sign in through OIDC, only the human (Authorization: Bearer <their OIDC token>) or an admin key answers access requests", caller.Name)}
		}
		a.As = answeredAsOperator
	default:
		return a, &engine.Error{Kind: engine.KindPermissionDenied, Msg: fmt.Sprintf("key %q cannot answer access requests", caller.Name)}
	}
	a.Allow = func(req *engine.AccessRequest) error {
		if req.FiledBy == caller.Name {
			return &engine.Error{Kind: engine.KindPermissionDenied, Field: "id",
				Msg: fmt.Sprintf("key %q filed access request %s and cannot answer it: the answer must come from someone other than the agent runtime that asked", caller.Name, req.ID)}
		}
		return nil
	}
	return a, nil
}

// answerErr audits a request found expired by an answer that came too late.
func (h *AccessHandlers) answerErr(ctx context.Context, id string, err error) error {
	var ee *engine.Error
	if errors.As(err, &ee) && ee.Reason == engine.ReasonConflict {
		if req, _, expiredNow, gerr := h.Engine.GetAccessRequest(ctx, id); gerr == nil && expiredNow {
			if rerr := h.recordExpired(ctx, req); rerr != nil {
				return rerr
			}
		}
	}
	return h.err(ctx, err)
}

func (h *AccessHandlers) ApproveAccessRequest(ctx context.Context, r *mandatev1.ApproveAccessRequestRequest) (*mandatev1.ApproveAccessRequestResponse, error) {
	a, err := h.answer(ctx, r.GetReason())
	if err != nil {
		return nil, h.err(ctx, err)
	}
	req, g, tok, err := h.Engine.ApproveAccessRequest(ctx, r.GetId(), a)
	if err != nil {
		return nil, h.answerErr(ctx, r.GetId(), err)
	}
	if err := h.recordRequest(ctx, "access_request.approve", req, a.Reason, map[string]any{
		"decided_as": a.As, "grant": "grant:" + g.ID, "ttl": req.TTL,
	}); err != nil {
		return nil, err
	}
	// The grant is audited as every grant is, naming the request it answers.
	if err := h.recordChange(ctx, "grant.create", "grant:"+g.ID, map[string]any{
		"holder": g.Holder.String(), "permission": g.Permission, "resource": g.Resource.String(), "expires_at": g.ExpiresAt.Format(time.RFC3339Nano),
		"access_request": "access_request:" + req.ID,
	}); err != nil {
		return nil, err
	}
	return &mandatev1.ApproveAccessRequestResponse{AccessRequest: accessRequestPB(req), Grant: grantPB(g), ConsistencyToken: tok}, nil
}

func (h *AccessHandlers) DeclineAccessRequest(ctx context.Context, r *mandatev1.DeclineAccessRequestRequest) (*mandatev1.DeclineAccessRequestResponse, error) {
	a, err := h.answer(ctx, r.GetReason())
	if err != nil {
		return nil, h.err(ctx, err)
	}
	req, tok, err := h.Engine.DeclineAccessRequest(ctx, r.GetId(), a)
	if err != nil {
		return nil, h.answerErr(ctx, r.GetId(), err)
	}
	if err := h.recordRequest(ctx, "access_request.decline", req, a.Reason, map[string]any{"decided_as": a.As}); err != nil {
		return nil, err
	}
	return &mandatev1.DeclineAccessRequestResponse{AccessRequest: accessRequestPB(req), ConsistencyToken: tok}, nil
}

// recordExpired audits a request the caller's read found expired. mandate
// itself marked it; the reader's key is kept as the trigger.
func (h *AccessHandlers) recordExpired(ctx context.Context, req *engine.AccessRequest) error {
	return h.recordRequest(ctx, "access_request.expire", req, "", map[string]any{"expired_at": req.ExpiresAt.Format(time.RFC3339Nano)})
}

// recordRequest audits one step of an access request: the record names the
// human, the task and chain, the agent (as holder) and the reason given.
func (h *AccessHandlers) recordRequest(ctx context.Context, action string, req *engine.AccessRequest, reason string, details map[string]any) error {
	if h.Audit == nil {
		return nil
	}
	caller := ""
	if k, ok := CallerFrom(ctx); ok {
		caller = k.Name
	}
	d := map[string]any{
		"holder": req.Agent.String(), "human": req.Human.OrEmpty(), "permission": req.Permission, "resource": req.Resource.String(),
		"state": req.State,
	}
	for k, v := range details {
		d[k] = v
	}
	rec := audit.NewChange(requestID(ctx), caller, action, "access_request:"+req.ID, d)
	rec.Principal, rec.Task, rec.Chain, rec.Reason = req.Human.OrEmpty(), req.Task.OrEmpty(), engine.RefStrings(req.Chain), reason
	rec.SourceAddr, rec.TraceID = callerAddr(ctx), tracing.TraceID(ctx)
	if err := h.Audit.Record(ctx, rec, true); err != nil {
		return h.err(ctx, &engine.Error{Kind: engine.KindUnavailable,
			Msg: action + " was applied, but its audit record could not be made durable", Err: errors.Join(engine.ErrUnavailable, err)})
	}
	return nil
}
