package service

import (
	"context"
	"strings"

	"github.com/mandate-dev/mandate/engine"
	mandatev1 "github.com/mandate-dev/mandate/proto/mandate/v1"
	"github.com/mandate-dev/mandate/schema"
)

// A person is a human signed in to the console through the OIDC issuer: an
// in-process caller of role RoleHuman named "user:<id>". It is never a key:
// no keys file can name the role (it is not in Roles), and only code in this
// process can make such a caller (AsCaller). Beside the methods the role
// table opens to RoleHuman (access requests, whose handlers confine a human
// to their own), a person calls the methods of personMethods. A person acts on
// their own delegation only: they see their own tasks, agents, grants and
// audit records, and they may take access away from their own agents
// (suspend, revoke, complete a task, remove a grant, suspend all of their
// agents) but never give it back or widen it: resuming is an operator's, and
// new access comes only through an access request they approve.

type inprocCallerCtx struct{}
type statedReasonCtx struct{}

// AsCaller returns ctx carrying key as the authenticated caller of the
// in-process services (InProcess): the console signs a person in once and
// then calls with the key's name and role, never holding the key's secret.
// The role table and, for a person, the ownership rules apply exactly as to
// a caller with a key. Context values never cross the network, so no remote
// caller can present one.
func AsCaller(ctx context.Context, key Key) context.Context {
	return context.WithValue(ctx, inprocCallerCtx{}, key)
}

// Person is the in-process caller of a human signed in as user (a bare
// user id, as in user:<id>).
func Person(userID string) Key {
	return Key{Name: "user:" + userID, Role: RoleHuman}
}

// WithStatedReason returns ctx carrying the reason a person gave for a
// change; the change's audit record keeps it (its reason, and details.why).
func WithStatedReason(ctx context.Context, reason string) context.Context {
	return context.WithValue(ctx, statedReasonCtx{}, reason)
}

func statedReason(ctx context.Context) string {
	r, _ := ctx.Value(statedReasonCtx{}).(string)
	return r
}

func inprocCaller(ctx context.Context) (Key, bool) {
	k, ok := ctx.Value(inprocCallerCtx{}).(Key)
	return k, ok
}

// personOwns decides whether a person may make one call: each method a person
// may call names how the request is tied to the person's own delegation.
// A method missing here is refused to persons.
type personOwns func(ctx context.Context, e *engine.Engine, user engine.Ref, req any) error

var personMethods = map[string]personOwns{
	"/mandate.v1.AgentService/GetAgent":               agentOwned(func(r any) string { return r.(*mandatev1.GetAgentRequest).GetId() }),
	"/mandate.v1.AgentService/SuspendAgent":           agentOwned(func(r any) string { return r.(*mandatev1.SuspendAgentRequest).GetId() }),
	"/mandate.v1.AgentService/RevokeAgent":            agentOwned(func(r any) string { return r.(*mandatev1.RevokeAgentRequest).GetId() }),
	"/mandate.v1.ReviewService/ListAgentAccess":       agentOwned(func(r any) string { return r.(*mandatev1.ListAgentAccessRequest).GetId() }),
	"/mandate.v1.TaskService/GetTask":                 taskOwned(func(r any) string { return r.(*mandatev1.GetTaskRequest).GetId() }),
	"/mandate.v1.TaskService/CompleteTask":            taskOwned(func(r any) string { return r.(*mandatev1.CompleteTaskRequest).GetId() }),
	"/mandate.v1.ReviewService/ListPrincipalAgents":   selfID(func(r any) string { return r.(*mandatev1.ListPrincipalAgentsRequest).GetId() }),
	"/mandate.v1.AgentService/SuspendPrincipalAgents": selfID(func(r any) string { return r.(*mandatev1.SuspendPrincipalAgentsRequest).GetId() }),
	"/mandate.v1.ReviewService/ListAgents":            listAgentsOwned,
	"/mandate.v1.ReviewService/ListUnusedGrants":      unusedGrantsOwned,
	"/mandate.v1.ReviewService/GetReviewReport":       selfPrincipal(func(r any) string { return r.(*mandatev1.GetReviewReportRequest).GetPrincipal() }),
	"/mandate.v1.ReviewService/GetReviewReportCSV":    selfPrincipal(func(r any) string { return r.(*mandatev1.GetReviewReportCSVRequest).GetPrincipal() }),
	"/mandate.v1.AuditService/ListAudit":              selfPrincipal(func(r any) string { return r.(*mandatev1.ListAuditRequest).GetPrincipal() }),
	"/mandate.v1.ReviewService/Explain":               explainOwned,
	"/mandate.v1.GrantService/DeleteGrant":            grantOwned,
}

func notThePersons(what string) error {
	return forbidden("%s does not act for the signed-in person", what)
}

// agentOwned: the agent's principal is the person.
func agentOwned(id func(any) string) personOwns {
	return func(ctx context.Context, e *engine.Engine, user engine.Ref, req any) error {
		return ownsAgent(ctx, e, user, id(req))
	}
}

func ownsAgent(ctx context.Context, e *engine.Engine, user engine.Ref, id string) error {
	a, _, err := e.GetAgent(ctx, id)
	if err != nil {
		return err
	}
	if a.Principal != user {
		return notThePersons("agent:" + id)
	}
	return nil
}

// taskOwned: the task's principal is the person.
func taskOwned(id func(any) string) personOwns {
	return func(ctx context.Context, e *engine.Engine, user engine.Ref, req any) error {
		return ownsTask(ctx, e, user, id(req))
	}
}

func ownsTask(ctx context.Context, e *engine.Engine, user engine.Ref, id string) error {
	t, _, err := e.GetTask(ctx, id)
	if err != nil {
		return err
	}
	if t.Principal != user {
		return notThePersons("task:" + id)
	}
	return nil
}

// selfID: the request names the person by bare id.
func selfID(id func(any) string) personOwns {
	return func(_ context.Context, _ *engine.Engine, user engine.Ref, req any) error {
		if id(req) != user.ID {
			return notThePersons("user:" + id(req))
		}
		return nil
	}
}

// selfPrincipal: the request is filtered to the person, as user:<id>. An
// unfiltered request would reach everyone's, so it is refused too.
func selfPrincipal(p func(any) string) personOwns {
	return func(_ context.Context, _ *engine.Engine, user engine.Ref, req any) error {
		got := p(req)
		if got != user.String() && got != user.ID {
			return forbidden("a person reads only their own records: set principal to %s", user)
		}
		return nil
	}
}

// listAgentsOwned: filtered to the person, and a task filter (which the
// listing applies instead of the principal) must name one of theirs.
func listAgentsOwned(ctx context.Context, e *engine.Engine, user engine.Ref, req any) error {
	r := req.(*mandatev1.ListAgentsRequest)
	if err := selfPrincipal(func(any) string { return r.GetPrincipal() })(ctx, e, user, req); err != nil {
		return err
	}
	if r.GetTask() == "" {
		return nil
	}
	id, ok := strings.CutPrefix(r.GetTask(), schema.TypeTask+":")
	if !ok {
		return notThePersons(r.GetTask())
	}
	return ownsTask(ctx, e, user, id)
}

// unusedGrantsOwned: filtered to the person, and an agent filter (which the
// report applies instead of the principal) must name one of theirs.
func unusedGrantsOwned(ctx context.Context, e *engine.Engine, user engine.Ref, req any) error {
	r := req.(*mandatev1.ListUnusedGrantsRequest)
	if err := selfPrincipal(func(any) string { return r.GetPrincipal() })(ctx, e, user, req); err != nil {
		return err
	}
	if r.GetAgent() == "" {
		return nil
	}
	id, ok := strings.CutPrefix(r.GetAgent(), schema.TypeAgent+":")
	if !ok {
		return notThePersons(r.GetAgent())
	}
	return ownsAgent(ctx, e, user, id)
}

func explainOwned(ctx context.Context, e *engine.Engine, user engine.Ref, req any) error {
	sub := req.(*mandatev1.ExplainRequest).GetSubject()
	if sub == user.String() {
		return nil
	}
	id, ok := strings.CutPrefix(sub, schema.TypeAgent+":")
	if !ok {
		return notThePersons(sub)
	}
	return ownsAgent(ctx, e, user, id)
}

func grantOwned(ctx context.Context, e *engine.Engine, user engine.Ref, req any) error {
	g, _, err := e.GetGrant(ctx, req.(*mandatev1.DeleteGrantRequest).GetId())
	if err != nil {
		return err
	}
	switch g.Holder.Type {
	case schema.TypeAgent:
		return ownsAgent(ctx, e, user, g.Holder.ID)
	case schema.TypeTask:
		return ownsTask(ctx, e, user, g.Holder.ID)
	}
	return notThePersons("grant:" + g.ID)
}

// SetPersonEngine lets persons call: their ownership rules read the graph
// through e. Without it every person's call is refused. Set before serving.
func (k *Keys) SetPersonEngine(e *engine.Engine) { k.persons = e }

// authorizePerson applies the person rules of method to req.
func (k *Keys) authorizePerson(ctx context.Context, key Key, method string, req any) error {
	owns, ok := personMethods[method]
	if !ok || k.persons == nil {
		return forbidden("a signed-in person may not call %s", method)
	}
	user, err := engine.ParseRef("caller", key.Name)
	if err != nil || user.Type != schema.TypeUser {
		return forbidden("the person's identity is malformed")
	}
	if err := owns(ctx, k.persons, user, req); err != nil {
		if _, isAuth := err.(*authError); isAuth {
			return err
		}
		// Not found, or the graph unreachable: refused, never allowed.
		return forbidden("%s: cannot tie the request to the signed-in person: %v", method, err)
	}
	return nil
}
