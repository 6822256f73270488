package engine

import (
	"context"
	"time"
	"unicode/utf8"

	v1 "github.com/authzed/authzed-go/proto/authzed/api/v1"

	"github.com/mandate-dev/mandate/schema"
)

// Token exchange: a task, its first agent and their grants, or a sub-agent
// and its grants, each made in one SpiceDB write, so a refused or failed
// exchange leaves nothing half-made.

// ScopedGrant is one permission on one resource asked for in an exchange.
type ScopedGrant struct {
	Permission string
	Resource   Ref
}

// StartTaskInput is what StartTask needs. Principal comes from a verified
// human token, never from the caller.
type StartTaskInput struct {
	Principal   Ref
	Description string
	TaskTTL     string // default: the maximum task TTL
	AgentName   string // default "agent"
	GrantTTL    string // default: the maximum grant TTL
	Scope       []ScopedGrant
	// Workload is the caller's SPIFFE ID, or "": the agent records it.
	Workload string
}

// StartTask opens a task for a verified human, with one agent holding one
// grant per scope item, in one write. Each item is refused with ESCALATION
// (field "scope") unless the human holds it now.
func (e *Engine) StartTask(ctx context.Context, in StartTaskInput) (*Task, *Agent, []*Grant, string, error) {
	if in.Principal.Type != schema.TypeUser {
		return nil, nil, nil, "", invalid("subject_token", "must name a user")
	}
	if !utf8.ValidString(in.Description) || len(in.Description) > maxDescription {
		return nil, nil, nil, "", invalid("task_description", "must be valid UTF-8 of at most %d bytes", maxDescription)
	}
	taskTTL, err := ttlOrMax("task_ttl", in.TaskTTL, e.cfg.MaxTaskTTL)
	if err != nil {
		return nil, nil, nil, "", err
	}
	grantTTL, err := ttlOrMax("grant_ttl", in.GrantTTL, e.cfg.MaxGrantTTL)
	if err != nil {
		return nil, nil, nil, "", err
	}
	name, err := agentName(in.AgentName)
	if err != nil {
		return nil, nil, nil, "", err
	}
	if err := checkWorkloadInput("workload_id", in.Workload); err != nil {
		return nil, nil, nil, "", err
	}
	ctx, cancel := e.withTimeout(ctx)
	defer cancel()
	for _, s := range in.Scope {
		if err := e.validateGrantTarget(ctx, "scope", s.Permission, s.Resource); err != nil {
			return nil, nil, nil, "", err
		}
		ok, err := e.checkUser(ctx, in.Principal, s.Permission, s.Resource, nil)
		if err != nil {
			return nil, nil, nil, "", err
		}
		if !ok {
			return nil, nil, nil, "", escalation("%s does not hold %s on %s", in.Principal, s.Permission, s.Resource)
		}
	}

	now := e.now()
	t := &Task{ID: newID(PrefixTask), Principal: in.Principal, Description: in.Description, CreatedAt: now, ExpiresAt: now.Add(taskTTL), Status: StatusActive}
	taskRef := Ref{Type: schema.TypeTask, ID: t.ID}
	agentExp := t.ExpiresAt
	if e.cfg.MaxAgentTTL > 0 && now.Add(e.cfg.MaxAgentTTL).Before(agentExp) {
		agentExp = now.Add(e.cfg.MaxAgentTTL)
	}
	a := &Agent{ID: newID(PrefixAgent), Name: name, Task: taskRef, Principal: in.Principal, CreatedAt: now, ExpiresAt: agentExp, Status: StatusActive, Workload: in.Workload}
	agentRef := Ref{Type: schema.TypeAgent, ID: a.ID}
	a.Chain = []Ref{agentRef, in.Principal}
	rels := append(TaskRelationships(*t), AgentRelationships(*a, Lineage{Principal: in.Principal, TaskExpires: t.ExpiresAt, Workload: a.Workload})...)
	grants := e.scopedGrants(agentRef, in.Scope, now, grantTTL, agentExp)
	for _, g := range grants {
		rels = append(rels, grantRelationships(*g, nil)...)
	}
	token, err := e.write(ctx, creates(rels), nil, nil)
	if err != nil {
		return nil, nil, nil, "", err
	}
	c := &chain{agents: []link{{id: a.ID, expires: agentExp}}, task: t.ID, taskExpires: t.ExpiresAt, principal: in.Principal, workload: a.Workload}
	c.chainRefs = c.buildRefs()
	e.chains.Add(a.ID, c)
	return t, a, grants, token, nil
}

// DelegateInput is what Delegate needs.
type DelegateInput struct {
	Parent    string // the parent agent's id, from its verified token
	AgentName string // default "agent"
	GrantTTL  string // default: the maximum grant TTL
	Scope     []ScopedGrant
	// Workload is the caller's SPIFFE ID, or "": the sub-agent records it.
	// With Config.BindAgentsToWorkload it must be the parent's, when the
	// parent records one.
	Workload string
}

// Delegate creates a sub-agent under a parent with one grant per scope item,
// in one write. Each item is refused with ESCALATION (field "scope") unless
// the parent holds it now; the write fails if the parent is revoked or
// suspended, or its task completed, meanwhile.
func (e *Engine) Delegate(ctx context.Context, in DelegateInput) (*Agent, []*Grant, string, error) {
	grantTTL, err := ttlOrMax("grant_ttl", in.GrantTTL, e.cfg.MaxGrantTTL)
	if err != nil {
		return nil, nil, "", err
	}
	name, err := agentName(in.AgentName)
	if err != nil {
		return nil, nil, "", err
	}
	if err := checkWorkloadInput("workload_id", in.Workload); err != nil {
		return nil, nil, "", err
	}
	ctx, cancel := e.withTimeout(ctx)
	defer cancel()
	parent, err := e.readAgent(ctx, in.Parent)
	if err != nil {
		return nil, nil, "", fieldNotFound(err, "subject_token")
	}
	if err := e.bound("subject_token", parent.ID, parent.lineage.Workload, in.Workload); err != nil {
		return nil, nil, "", err
	}
	now := e.now()
	if st := parent.status(now); st != StatusActive {
		return nil, nil, "", precondition("subject_token", "agent %s is %s", parent.ID, st)
	}
	pc, err := e.chainOf(ctx, parent.ID)
	if err != nil {
		return nil, nil, "", err
	}
	if !now.Before(pc.taskExpires) {
		return nil, nil, "", precondition("subject_token", "the task of agent %s has expired", parent.ID)
	}
	if len(pc.agents)+1 > e.cfg.MaxChainDepth {
		return nil, nil, "", precondition("subject_token", "delegation chain would exceed the maximum depth of %d agents", e.cfg.MaxChainDepth)
	}
	parentRef := Ref{Type: schema.TypeAgent, ID: parent.ID}
	for _, s := range in.Scope {
		if err := e.validateGrantTarget(ctx, "scope", s.Permission, s.Resource); err != nil {
			return nil, nil, "", err
		}
		// The parent must hold it now, every leg: delegation only narrows.
		x, _, err := e.evaluateQuery(ctx, Query{Subject: parentRef, Permission: s.Permission, Resource: s.Resource}, evalMode{conditionsHold: true})
		if err != nil {
			return nil, nil, "", err
		}
		if d := x.Decision; !d.Allowed {
			return nil, nil, "", escalation("parent %s does not hold %s on %s (%s)", parentRef, s.Permission, s.Resource, d.Reason)
		}
	}
	taskRef := Ref{Type: schema.TypeTask, ID: pc.task}
	a := &Agent{ID: newID(PrefixAgent), Name: name, Task: taskRef, Parent: parentRef, Principal: pc.principal,
		CreatedAt: now, ExpiresAt: parent.ExpiresAt, Status: StatusActive, Bounds: parent.lineage.Bounds, Workload: in.Workload}
	agentRef := Ref{Type: schema.TypeAgent, ID: a.ID}
	lineage := Lineage{Principal: pc.principal, TaskExpires: pc.taskExpires, Bounds: a.Bounds, Workload: a.Workload}
	a.Chain = []Ref{agentRef}
	for _, l := range pc.agents {
		a.Chain = append(a.Chain, Ref{Type: schema.TypeAgent, ID: l.id})
		lineage.Ancestors = append(lineage.Ancestors, Ancestor{ID: l.id, Expires: l.expires})
	}
	a.Chain = append(a.Chain, pc.principal)
	rels := AgentRelationships(*a, lineage)
	grants := e.scopedGrants(agentRef, in.Scope, now, grantTTL, a.ExpiresAt)
	for _, g := range grants {
		rels = append(rels, grantRelationships(*g, nil)...)
	}
	pre := []*v1.Precondition{mustMatch(taskRef, "open"), mustMatch(parentRef, "enabled"), mustNotMatch(parentRef, "suspended")}
	token, err := e.write(ctx, creates(rels), pre, precondition("subject_token", "the task was completed, or the parent revoked or suspended, during the exchange"))
	if err != nil {
		return nil, nil, "", err
	}
	return a, grants, token, nil
}

func (e *Engine) scopedGrants(holder Ref, scope []ScopedGrant, now time.Time, ttl time.Duration, notAfter time.Time) []*Grant {
	exp := now.Add(ttl)
	if notAfter.Before(exp) {
		exp = notAfter
	}
	out := make([]*Grant, len(scope))
	for i, s := range scope {
		out[i] = &Grant{ID: newID(PrefixGrant), Holder: holder, Permission: s.Permission, Resource: s.Resource, CreatedAt: now, ExpiresAt: exp, Status: StatusActive}
	}
	return out
}

// validateGrantTarget reports, as an error on field, why perm on res cannot
// be granted to an agent.
func (e *Engine) validateGrantTarget(ctx context.Context, field, perm string, res Ref) error {
	if schema.IsCore(res.Type) {
		return invalid(field, "type %q is one of mandate's own types and cannot be granted", res.Type)
	}
	if err := e.requireType(ctx, field, res); err != nil {
		return err
	}
	if err := e.requirePermission(ctx, field, res.Type, perm); err != nil {
		return err
	}
	if !e.Schema().Grantable(res.Type, perm) {
		return invalid(field, "%s on type %q cannot be granted to agents", perm, res.Type)
	}
	return nil
}

func ttlOrMax(field, s string, max time.Duration) (time.Duration, error) {
	if s == "" {
		return max, nil
	}
	return ParseTTL(field, s, max)
}

func agentName(s string) (string, error) {
	if s == "" {
		return "agent", nil
	}
	if !utf8.ValidString(s) || len(s) > maxName {
		return "", invalid("agent_name", "must be valid UTF-8 of at most %d bytes", maxName)
	}
	return s, nil
}

// AgentChain returns an agent's chain, the agent first, then its ancestors,
// as the graph holds it. The structure never changes once written.
func (e *Engine) AgentChain(ctx context.Context, id string) ([]Ref, Ref, Ref, error) {
	if err := ValidateID("id", PrefixAgent, id); err != nil {
		return nil, Ref{}, Ref{}, err
	}
	c, err := e.chainOf(ctx, id)
	if err != nil {
		return nil, Ref{}, Ref{}, err
	}
	agents := make([]Ref, len(c.agents))
	for i, l := range c.agents {
		agents[i] = Ref{Type: schema.TypeAgent, ID: l.id}
	}
	return agents, c.principal, Ref{Type: schema.TypeTask, ID: c.task}, nil
}

// AgentExpiry is the earliest expiry of the agent, its ancestors and its task.
func (e *Engine) AgentExpiry(ctx context.Context, id string) (time.Time, error) {
	c, err := e.chainOf(ctx, id)
	if err != nil {
		return time.Time{}, err
	}
	return c.earliest(), nil
}
