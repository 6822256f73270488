// Package service holds mandate's gRPC handlers: they validate requests,
// map them to engine calls and map results and errors back (toStatus, the
// one error mapper). It also holds keys and roles and the interceptor chain
// every call runs through, over gRPC and in process (InProcess). It decides
// nothing itself; the server package wires it.
package service

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	lru "github.com/hashicorp/golang-lru/v2"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/mandate-dev/mandate/credential"
	"github.com/mandate-dev/mandate/engine"
	"github.com/mandate-dev/mandate/engine/alert"
	"github.com/mandate-dev/mandate/engine/audit"
	"github.com/mandate-dev/mandate/engine/decider"
	mandatev1 "github.com/mandate-dev/mandate/proto/mandate/v1"
)

// maxBulkChecks bounds one CheckBulk call.
const maxBulkChecks = 1000

// Handlers implements every mandate gRPC service on one engine.
type Handlers struct {
	mandatev1.UnimplementedTaskServiceServer
	mandatev1.UnimplementedAgentServiceServer
	mandatev1.UnimplementedGrantServiceServer
	mandatev1.UnimplementedCheckServiceServer
	mandatev1.UnimplementedSchemaServiceServer
	mandatev1.UnimplementedRelationshipServiceServer
	mandatev1.UnimplementedAuditServiceServer
	mandatev1.UnimplementedReviewServiceServer

	// Engine runs everything but checks. Never nil.
	Engine *engine.Engine
	// Decider answers checks: the whole chain of engine/decider's
	// decorators (metrics, audit, bounds) around the cache and the engine.
	// Never nil.
	Decider engine.Decider
	// Lookup decides the candidates of a search: the cache around the
	// engine, without audit, bounds or check metrics. Never nil.
	Lookup engine.Decider
	// Log is the logger. Never nil.
	Log *slog.Logger
	// Audit records changes; nil when audit is off.
	Audit *audit.Recorder
	// AuditStore answers audit queries; nil when audit is off.
	AuditStore audit.Store
	// Bounds resets an agent's bound counts when it is resumed; nil when no
	// bounds are enforced.
	Bounds *decider.Bounds
	// Tokens verifies agents' tokens sent as subject_token; nil refuses them.
	Tokens TokenVerifier
	// RequireHumanToken refuses tasks with a bare principal and grants to
	// agents: they come only from a verified human token, by token exchange.
	RequireHumanToken bool
	// OIDCConfigured is true when humans sign in through an OIDC issuer:
	// then an operator key no longer answers access requests.
	OIDCConfigured bool
	// Alerter tells humans about access requests filed for their agents;
	// nil only logs nothing.
	Alerter *alert.Alerter

	listingsOnce sync.Once
	listings     *lru.Cache[string, *listing] // access listings being paged through
}

// humanTokenRequired is the refusal of --require-human-token.
func humanTokenRequired(field, why string) error {
	return &engine.Error{Kind: engine.KindFailedPrecondition, Field: field,
		Msg: why + " (--require-human-token): exchange the human's OIDC token at POST /oauth2/token"}
}

func (h *Handlers) err(ctx context.Context, err error) error { return toStatus(ctx, h.Log, err) }

func tsp(t time.Time) *timestamppb.Timestamp {
	if t.IsZero() {
		return nil
	}
	return timestamppb.New(t)
}

func taskPB(t *engine.Task) *mandatev1.Task {
	return &mandatev1.Task{
		Id: t.ID, Principal: t.Principal.String(), Description: t.Description,
		CreatedAt: tsp(t.CreatedAt), ExpiresAt: tsp(t.ExpiresAt), Status: t.Status, Bounds: boundsPB(t.Bounds),
	}
}

func agentPB(a *engine.Agent) *mandatev1.Agent {
	return &mandatev1.Agent{
		Id: a.ID, Name: a.Name, Task: a.Task.String(), Parent: a.Parent.OrEmpty(), Principal: a.Principal.String(),
		Chain: engine.RefStrings(a.Chain), CreatedAt: tsp(a.CreatedAt), ExpiresAt: tsp(a.ExpiresAt), Status: a.Status,
		Bounds: boundsPB(a.Bounds), WorkloadId: a.Workload,
	}
}

func grantPB(g *engine.Grant) *mandatev1.Grant {
	return &mandatev1.Grant{
		Id: g.ID, Holder: g.Holder.String(), Permission: g.Permission, Resource: g.Resource.String(),
		CreatedAt: tsp(g.CreatedAt), ExpiresAt: tsp(g.ExpiresAt), Status: g.Status, Condition: conditionPB(g.Condition),
	}
}

// ---- tasks ----

func (h *Handlers) CreateTask(ctx context.Context, r *mandatev1.CreateTaskRequest) (*mandatev1.CreateTaskResponse, error) {
	if h.RequireHumanToken {
		return nil, h.err(ctx, humanTokenRequired("principal", "a task is opened only for a verified human"))
	}
	b, err := boundsFromPB("bounds.", r.GetBounds())
	if err != nil {
		return nil, h.err(ctx, err)
	}
	t, tok, err := h.Engine.CreateTask(ctx, engine.CreateTaskInput{Principal: r.GetPrincipal(), Description: r.GetDescription(), TTL: r.GetTtl(), Bounds: b})
	if err != nil {
		return nil, h.err(ctx, err)
	}
	if err := h.recordChange(ctx, "task.create", "task:"+t.ID, map[string]any{
		"principal": t.Principal.String(), "task": "task:" + t.ID, "expires_at": t.ExpiresAt.Format(time.RFC3339Nano), "description": t.Description,
		"bounds": boundsDetails(t.Bounds),
	}); err != nil {
		return nil, err
	}
	return &mandatev1.CreateTaskResponse{Task: taskPB(t), ConsistencyToken: tok}, nil
}

func (h *Handlers) GetTask(ctx context.Context, r *mandatev1.GetTaskRequest) (*mandatev1.GetTaskResponse, error) {
	t, tok, err := h.Engine.GetTask(ctx, r.GetId())
	if err != nil {
		return nil, h.err(ctx, err)
	}
	return &mandatev1.GetTaskResponse{Task: taskPB(t), ConsistencyToken: tok}, nil
}

func (h *Handlers) CompleteTask(ctx context.Context, r *mandatev1.CompleteTaskRequest) (*mandatev1.CompleteTaskResponse, error) {
	t, tok, err := h.Engine.CompleteTask(ctx, r.GetId())
	if err != nil {
		return nil, h.err(ctx, err)
	}
	if err := h.recordChange(ctx, "task.complete", "task:"+t.ID, map[string]any{
		"principal": t.Principal.String(), "task": "task:" + t.ID, "after": t.Status,
	}); err != nil {
		return nil, err
	}
	return &mandatev1.CompleteTaskResponse{Task: taskPB(t), ConsistencyToken: tok}, nil
}

// ---- agents ----

func (h *Handlers) CreateAgent(ctx context.Context, r *mandatev1.CreateAgentRequest) (*mandatev1.CreateAgentResponse, error) {
	b, err := boundsFromPB("bounds.", r.GetBounds())
	if err != nil {
		return nil, h.err(ctx, err)
	}
	a, tok, err := h.Engine.CreateAgent(ctx, engine.CreateAgentInput{Task: r.GetTask(), Parent: r.GetParent(), Name: r.GetName(), TTL: r.GetTtl(), Bounds: b,
		Workload: CallerWorkload(ctx)})
	if err != nil {
		return nil, h.err(ctx, err)
	}
	if err := h.recordChange(ctx, "agent.create", "agent:"+a.ID, map[string]any{
		"principal": a.Principal.String(), "task": a.Task.String(), "parent": a.Parent.OrEmpty(), "chain": engine.RefStrings(a.Chain),
		"name": a.Name, "expires_at": a.ExpiresAt.Format(time.RFC3339Nano), "bounds": boundsDetails(a.Bounds),
	}); err != nil {
		return nil, err
	}
	return &mandatev1.CreateAgentResponse{Agent: agentPB(a), ConsistencyToken: tok}, nil
}

func (h *Handlers) GetAgent(ctx context.Context, r *mandatev1.GetAgentRequest) (*mandatev1.GetAgentResponse, error) {
	a, tok, err := h.Engine.GetAgent(ctx, r.GetId())
	if err != nil {
		return nil, h.err(ctx, err)
	}
	return &mandatev1.GetAgentResponse{Agent: agentPB(a), ConsistencyToken: tok}, nil
}

func (h *Handlers) RevokeAgent(ctx context.Context, r *mandatev1.RevokeAgentRequest) (*mandatev1.RevokeAgentResponse, error) {
	revoked, tok, err := h.Engine.RevokeAgent(ctx, r.GetId())
	if err != nil {
		return nil, h.err(ctx, err)
	}
	if err := h.recordChange(ctx, "agent.revoke", "agent:"+r.GetId(), map[string]any{"revoked": engine.RefStrings(revoked)}); err != nil {
		return nil, err
	}
	return &mandatev1.RevokeAgentResponse{Revoked: engine.RefStrings(revoked), ConsistencyToken: tok}, nil
}

func (h *Handlers) SuspendAgent(ctx context.Context, r *mandatev1.SuspendAgentRequest) (*mandatev1.SuspendAgentResponse, error) {
	a, tok, err := h.Engine.SuspendAgent(ctx, r.GetId())
	if err != nil {
		return nil, h.err(ctx, err)
	}
	if err := h.recordChange(ctx, "agent.suspend", "agent:"+a.ID, map[string]any{"principal": a.Principal.String(), "task": a.Task.String(), "after": a.Status}); err != nil {
		return nil, err
	}
	return &mandatev1.SuspendAgentResponse{Agent: agentPB(a), ConsistencyToken: tok}, nil
}

func (h *Handlers) ResumeAgent(ctx context.Context, r *mandatev1.ResumeAgentRequest) (*mandatev1.ResumeAgentResponse, error) {
	a, tok, err := h.Engine.ResumeAgent(ctx, r.GetId())
	if err != nil {
		return nil, h.err(ctx, err)
	}
	if h.Bounds != nil {
		// A resumed agent starts with fresh counts, or its next check would
		// find it still over the bound that suspended it.
		if err := h.Bounds.Reset(ctx, a.ID); err != nil {
			return nil, h.err(ctx, err)
		}
	}
	if err := h.recordChange(ctx, "agent.resume", "agent:"+a.ID, map[string]any{"principal": a.Principal.String(), "task": a.Task.String(), "after": a.Status}); err != nil {
		return nil, err
	}
	return &mandatev1.ResumeAgentResponse{Agent: agentPB(a), ConsistencyToken: tok}, nil
}

// ---- grants ----

func (h *Handlers) CreateGrant(ctx context.Context, r *mandatev1.CreateGrantRequest) (*mandatev1.CreateGrantResponse, error) {
	cond, err := conditionFromPB(r.GetCondition())
	if err != nil {
		return nil, h.err(ctx, err)
	}
	if h.RequireHumanToken && strings.HasPrefix(r.GetHolder(), "agent:") {
		return nil, h.err(ctx, humanTokenRequired("holder", "an agent's grants come only from the scope of a verified human token"))
	}
	g, tok, err := h.Engine.CreateGrant(ctx, engine.CreateGrantInput{Holder: r.GetHolder(), Permission: r.GetPermission(), Resource: r.GetResource(), TTL: r.GetTtl(), Condition: cond})
	if err != nil {
		if e, ok := err.(*engine.Error); ok && e.Reason == engine.ReasonEscalation {
			if rerr := h.recordChange(ctx, "grant.refused", r.GetHolder(), map[string]any{
				"holder": r.GetHolder(), "permission": r.GetPermission(), "resource": r.GetResource(), "ttl": r.GetTtl(), "why": e.Msg,
			}); rerr != nil {
				return nil, rerr
			}
		}
		return nil, h.err(ctx, err)
	}
	if err := h.recordChange(ctx, "grant.create", "grant:"+g.ID, map[string]any{
		"holder": g.Holder.String(), "permission": g.Permission, "resource": g.Resource.String(), "expires_at": g.ExpiresAt.Format(time.RFC3339Nano),
		"condition": conditionDetails(g.Condition),
	}); err != nil {
		return nil, err
	}
	return &mandatev1.CreateGrantResponse{Grant: grantPB(g), ConsistencyToken: tok}, nil
}

func (h *Handlers) GetGrant(ctx context.Context, r *mandatev1.GetGrantRequest) (*mandatev1.GetGrantResponse, error) {
	g, tok, err := h.Engine.GetGrant(ctx, r.GetId())
	if err != nil {
		return nil, h.err(ctx, err)
	}
	return &mandatev1.GetGrantResponse{Grant: grantPB(g), ConsistencyToken: tok}, nil
}

func (h *Handlers) DeleteGrant(ctx context.Context, r *mandatev1.DeleteGrantRequest) (*mandatev1.DeleteGrantResponse, error) {
	tok, err := h.Engine.DeleteGrant(ctx, r.GetId())
	if err != nil {
		return nil, h.err(ctx, err)
	}
	if err := h.recordChange(ctx, "grant.delete", "grant:"+r.GetId(), map[string]any{"before": "grant:" + r.GetId(), "after": ""}); err != nil {
		return nil, err
	}
	return &mandatev1.DeleteGrantResponse{Id: r.GetId(), ConsistencyToken: tok}, nil
}

// ---- checks ----

const (
	maxCorrelationID = 256
	maxReason        = 4096
)

// TokenVerifier verifies agents' mandate tokens and signs decision receipts.
type TokenVerifier interface {
	Verify(raw string) (*credential.Claims, error)
	SignReceipt(r credential.Receipt) (string, error)
}

// invalidToken is a subject_token that does not verify: a 400 for a single
// check, an INVALID_TOKEN deny for one item of a bulk check.
type invalidToken struct{ err *engine.Error }

func (e invalidToken) Error() string { return e.err.Error() }
func (e invalidToken) Unwrap() error { return e.err }

// tokenSubject verifies a subject_token and returns the agent it names, the
// chain and task it claims, and its jti. The token itself goes nowhere else.
func (h *Handlers) tokenSubject(prefix string, r *mandatev1.CheckRequest) (string, []engine.Ref, engine.Ref, string, error) {
	field := prefix + "subject_token"
	if r.GetSubject() != "" {
		return "", nil, engine.Ref{}, "", &engine.Error{Kind: engine.KindInvalidArgument, Field: field, Msg: "send subject or subject_token, not both"}
	}
	if h.Tokens == nil {
		return "", nil, engine.Ref{}, "", &engine.Error{Kind: engine.KindInvalidArgument, Field: field, Msg: "this server verifies no tokens"}
	}
	bad := func(why string) error {
		return invalidToken{err: &engine.Error{Kind: engine.KindInvalidArgument, Field: field, Msg: why}}
	}
	c, err := h.Tokens.Verify(r.GetSubjectToken())
	if err != nil {
		return "", nil, engine.Ref{}, "", bad(err.Error())
	}
	var chain []engine.Ref
	for _, a := range append(c.Act.Agents(), c.Subject) {
		ref, err := engine.ParseRef(field, a)
		if err != nil {
			return "", nil, engine.Ref{}, "", bad("names a malformed chain")
		}
		chain = append(chain, ref)
	}
	task, err := engine.ParseRef(field, c.Task)
	if err != nil || chain[0].Type != "agent" {
		return "", nil, engine.Ref{}, "", bad("names a malformed task or agent")
	}
	return c.Agent(), chain, task, c.ID, nil
}

func (h *Handlers) query(ctx context.Context, prefix string, r *mandatev1.CheckRequest) (engine.Query, error) {
	subject := r.GetSubject()
	var tokenChain []engine.Ref
	var tokenTask engine.Ref
	var jti string
	if r.GetSubjectToken() != "" {
		var err error
		if subject, tokenChain, tokenTask, jti, err = h.tokenSubject(prefix, r); err != nil {
			return engine.Query{}, err
		}
	}
	q, err := h.Engine.ValidateQuery(ctx, subject, r.GetPermission(), r.GetResource(), r.GetContext())
	if err != nil {
		if e, ok := err.(*engine.Error); ok && prefix != "" {
			e2 := *e
			e2.Field = prefix + e.Field
			return q, &e2
		}
		return q, err
	}
	if len(r.GetCorrelationId()) > maxCorrelationID {
		return q, &engine.Error{Kind: engine.KindInvalidArgument, Field: prefix + "correlation_id", Msg: fmt.Sprintf("must be at most %d bytes", maxCorrelationID)}
	}
	if len(r.GetReason()) > maxReason {
		return q, &engine.Error{Kind: engine.KindInvalidArgument, Field: prefix + "reason", Msg: fmt.Sprintf("must be at most %d bytes", maxReason)}
	}
	if err := engine.ValidateConsistencyToken(prefix+"consistency_token", r.GetConsistencyToken()); err != nil {
		return q, err
	}
	q.ConsistencyToken = r.GetConsistencyToken()
	q.TokenChain, q.TokenTask, q.TokenID = tokenChain, tokenTask, jti
	q.DecisionID = audit.NewID("dec")
	q.StatedReason, q.CorrelationID = r.GetReason(), r.GetCorrelationId()
	q.RequestID, q.SourceAddr, q.CallerWorkload = requestID(ctx), callerAddr(ctx), CallerWorkload(ctx)
	if k, ok := CallerFrom(ctx); ok {
		q.Caller, q.CountsForBounds = k.Name, k.CountsForBounds
	}
	// A check by the agent's own token proves that the agent acted: it
	// counts against its bounds whoever relays it.
	if jti != "" {
		q.CountsForBounds = true
	}
	return q, nil
}

func decisionPB(d engine.Decision, id string) *mandatev1.CheckResponse {
	resp := &mandatev1.CheckResponse{
		Allowed: d.Allowed, DecisionId: id, ReasonCode: string(d.Reason), Principal: d.Principal.OrEmpty(),
		Task: d.Task.OrEmpty(), Chain: engine.RefStrings(d.Chain), ConsistencyToken: d.Token,
	}
	if d.Allowed {
		resp.ValidUntil = tsp(d.ValidUntil)
	}
	resp.MissingContext, resp.Condition, resp.Bound = d.MissingContext, d.Condition, d.Bound
	return resp
}

func (h *Handlers) Check(ctx context.Context, r *mandatev1.CheckRequest) (*mandatev1.CheckResponse, error) {
	q, err := h.query(ctx, "", r)
	if err != nil {
		return nil, h.err(ctx, err)
	}
	resp, err := h.checkOne(ctx, q)
	if err != nil || !r.GetReceipt() {
		return resp, err
	}
	return h.withReceipt(ctx, q, resp)
}

// invalidTokenItem denies one bulk item whose subject_token does not verify,
// and records the deny like every other decision: without a subject, which
// an unverified token cannot name, and without the token.
func (h *Handlers) invalidTokenItem(ctx context.Context, r *mandatev1.CheckRequest) (*mandatev1.CheckResponse, error) {
	resp := &mandatev1.CheckResponse{DecisionId: audit.NewID("dec"), ReasonCode: string(engine.ReasonInvalidToken)}
	if h.Audit == nil {
		return resp, nil
	}
	rec := audit.Record{ID: resp.DecisionId, Time: audit.Now(), Kind: audit.KindCheck, Decision: audit.DecisionDeny,
		ReasonCode: resp.ReasonCode, FailedLeg: engine.ReasonInvalidToken.Leg(), Permission: r.GetPermission(), Resource: r.GetResource(),
		Reason: r.GetReason(), CorrelationID: r.GetCorrelationId(), RequestID: requestID(ctx), SourceAddr: callerAddr(ctx),
		Workload: CallerWorkload(ctx)}
	if len(rec.Reason) > maxReason || len(rec.CorrelationID) > maxCorrelationID {
		rec.Reason, rec.CorrelationID = "", ""
	}
	if k, ok := CallerFrom(ctx); ok {
		rec.Caller = k.Name
	}
	if err := h.Audit.Record(ctx, rec, h.Audit.Strict()); err != nil {
		return nil, h.err(ctx, &engine.Error{Kind: engine.KindUnavailable, Msg: "the decision could not be recorded durably (audit mode strict)", Err: errors.Join(engine.ErrUnavailable, err)})
	}
	return resp, nil
}

// withReceipt signs the decision into resp.Receipt. A receipt that cannot be
// signed fails the check: the caller asked for proof.
func (h *Handlers) withReceipt(ctx context.Context, q engine.Query, resp *mandatev1.CheckResponse) (*mandatev1.CheckResponse, error) {
	if h.Tokens == nil {
		return nil, h.err(ctx, &engine.Error{Kind: engine.KindFailedPrecondition, Field: "receipt", Msg: "this server signs no receipts"})
	}
	var agents []string
	for _, c := range resp.GetChain() {
		if strings.HasPrefix(c, "agent:") {
			agents = append(agents, c)
		}
	}
	raw, err := h.Tokens.SignReceipt(credential.Receipt{DecisionID: resp.GetDecisionId(), Allowed: resp.GetAllowed(), ReasonCode: resp.GetReasonCode(),
		Subject: q.Subject.String(), Act: credential.ActChain(agents), Principal: resp.GetPrincipal(), Task: resp.GetTask(),
		Permission: q.Permission, Resource: q.Resource.String(), ConsistencyToken: resp.GetConsistencyToken(), TokenID: q.TokenID})
	if err != nil {
		return nil, h.err(ctx, err)
	}
	resp.Receipt = raw
	return resp, nil
}

// checkOne asks the decider chain; metrics, audit and bounds happen there.
func (h *Handlers) checkOne(ctx context.Context, q engine.Query) (*mandatev1.CheckResponse, error) {
	d, err := h.Decider.Decide(ctx, q)
	if err != nil {
		return nil, h.err(ctx, err)
	}
	return decisionPB(d, q.DecisionID), nil
}

func (h *Handlers) CheckBulk(ctx context.Context, r *mandatev1.CheckBulkRequest) (*mandatev1.CheckBulkResponse, error) {
	if len(r.GetChecks()) == 0 {
		return nil, h.err(ctx, &engine.Error{Kind: engine.KindInvalidArgument, Field: "checks", Msg: "is required and must not be empty"})
	}
	if len(r.GetChecks()) > maxBulkChecks {
		return nil, h.err(ctx, &engine.Error{Kind: engine.KindInvalidArgument, Field: "checks", Msg: fmt.Sprintf("at most %d checks per call", maxBulkChecks)})
	}
	qs := make([]engine.Query, len(r.GetChecks()))
	out := &mandatev1.CheckBulkResponse{Results: make([]*mandatev1.CheckResponse, len(qs))}
	for i, c := range r.GetChecks() {
		q, err := h.query(ctx, fmt.Sprintf("checks[%d].", i), c)
		var bad invalidToken
		if errors.As(err, &bad) {
			// Only this item is denied; the others are answered.
			resp, err := h.invalidTokenItem(ctx, c)
			if err != nil {
				return nil, err
			}
			out.Results[i] = resp
			continue
		}
		if err != nil {
			return nil, h.err(ctx, err)
		}
		qs[i] = q
	}
	for i, q := range qs {
		if out.Results[i] != nil {
			continue
		}
		resp, err := h.checkOne(ctx, q)
		if err == nil && r.GetChecks()[i].GetReceipt() {
			resp, err = h.withReceipt(ctx, q, resp)
		}
		if err != nil {
			// One failed item fails the call: a partial answer could be read as an allow.
			return nil, err
		}
		out.Results[i] = resp
		if resp.GetConsistencyToken() != "" {
			out.ConsistencyToken = resp.GetConsistencyToken()
		}
	}
	return out, nil
}

// ---- schema and relationships ----

func (h *Handlers) WriteSchema(ctx context.Context, r *mandatev1.WriteSchemaRequest) (*mandatev1.WriteSchemaResponse, error) {
	tok, err := h.Engine.WriteSchema(ctx, r.GetSchema())
	if err != nil {
		return nil, h.err(ctx, err)
	}
	sum := sha256.Sum256([]byte(r.GetSchema()))
	if err := h.recordChange(ctx, "schema.write", "schema", map[string]any{"sha256": hex.EncodeToString(sum[:]), "bytes": len(r.GetSchema()), "consistency_token": tok}); err != nil {
		return nil, err
	}
	return &mandatev1.WriteSchemaResponse{ConsistencyToken: tok}, nil
}

func (h *Handlers) ReadSchema(ctx context.Context, _ *mandatev1.ReadSchemaRequest) (*mandatev1.ReadSchemaResponse, error) {
	s, tok, err := h.Engine.ReadSchema(ctx)
	if err != nil {
		return nil, h.err(ctx, err)
	}
	return &mandatev1.ReadSchemaResponse{Schema: s, ConsistencyToken: tok}, nil
}

func (h *Handlers) WriteRelationships(ctx context.Context, r *mandatev1.WriteRelationshipsRequest) (*mandatev1.WriteRelationshipsResponse, error) {
	ups := make([]engine.RelationshipUpdate, len(r.GetUpdates()))
	for i, u := range r.GetUpdates() {
		ups[i] = engine.RelationshipUpdate{Operation: u.GetOperation(), Relationship: u.GetRelationship()}
	}
	tok, err := h.Engine.WriteRelationships(ctx, ups)
	if err != nil {
		return nil, h.err(ctx, err)
	}
	updates := make([]any, len(ups))
	for i, u := range ups {
		updates[i] = strings.ToUpper(u.Operation) + " " + u.Relationship
	}
	if err := h.recordChange(ctx, "relationships.write", "relationships", map[string]any{"updates": updates, "consistency_token": tok}); err != nil {
		return nil, err
	}
	return &mandatev1.WriteRelationshipsResponse{ConsistencyToken: tok}, nil
}

func (h *Handlers) ReadRelationships(ctx context.Context, r *mandatev1.ReadRelationshipsRequest) (*mandatev1.ReadRelationshipsResponse, error) {
	rels, next, tok, err := h.Engine.ReadRelationships(ctx, engine.RelationshipFilter{
		ResourceType: r.GetResourceType(), ResourceID: r.GetResourceId(), Relation: r.GetRelation(),
		SubjectType: r.GetSubjectType(), SubjectID: r.GetSubjectId(), PageSize: r.GetPageSize(), PageToken: r.GetPageToken(),
	})
	if err != nil {
		return nil, h.err(ctx, err)
	}
	return &mandatev1.ReadRelationshipsResponse{Relationships: rels, NextPageToken: next, ConsistencyToken: tok}, nil
}
