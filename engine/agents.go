package engine

import (
	"context"
	"sort"
	"time"
	"unicode/utf8"

	v1 "github.com/authzed/authzed-go/proto/authzed/api/v1"

	"github.com/mandate-dev/mandate/engine/bounds"
	"github.com/mandate-dev/mandate/schema"
)

// Agents: one agent instance on a task, maybe under a parent, and its lifecycle.

// Agent is one agent instance.
type Agent struct {
	ID        string
	Name      string
	Task      Ref
	Parent    Ref // zero for a top-level agent
	Principal Ref
	Chain     []Ref // this agent, its ancestors, then the principal
	CreatedAt time.Time
	ExpiresAt time.Time
	Status    string
	// Bounds are the agent's behavioural bounds: its own, else its parent's,
	// else its task's. Unset ones fall back to the server's defaults.
	Bounds bounds.Limits
	// Workload is the SPIFFE ID of the workload that created the agent (its
	// caller's X.509-SVID), or "" when the caller presented none.
	Workload string
}

// ---- agents --------------------------------------------------------------

// CreateAgentInput is what CreateAgent needs.
type CreateAgentInput struct {
	Task   string
	Parent string
	Name   string
	TTL    string
	// Bounds override, bound by bound, those inherited from the parent or,
	// for a top-level agent, the task.
	Bounds bounds.Limits
	// Workload is the caller's SPIFFE ID, from the X.509-SVID it presented
	// over mutual TLS, or "". The agent records it; with
	// Config.BindAgentsToWorkload a sub-agent is created only by a caller
	// connected as its parent's workload.
	Workload string
}

// CreateAgent provisions a new agent instance. Its lifetime never outlives its
// parent's or its task's: a longer TTL is cut to fit.
func (e *Engine) CreateAgent(ctx context.Context, in CreateAgentInput) (*Agent, string, error) {
	taskRef, err := ParseRef("task", in.Task)
	if err != nil {
		return nil, "", err
	}
	if taskRef.Type != schema.TypeTask {
		return nil, "", invalid("task", "must be a task reference (task:<id>), got type %q", taskRef.Type)
	}
	var parentRef Ref
	if in.Parent != "" {
		if parentRef, err = ParseRef("parent", in.Parent); err != nil {
			return nil, "", err
		}
		if parentRef.Type != schema.TypeAgent {
			return nil, "", invalid("parent", "must be an agent reference (agent:<id>), got type %q", parentRef.Type)
		}
	}
	if in.Name == "" {
		return nil, "", invalid("name", "is required")
	}
	if !utf8.ValidString(in.Name) || len(in.Name) > maxName {
		return nil, "", invalid("name", "must be valid UTF-8 of at most %d bytes", maxName)
	}
	ttl, err := ParseTTL("ttl", in.TTL, e.cfg.MaxAgentTTL)
	if err != nil {
		return nil, "", err
	}
	if err := validateBounds(in.Bounds); err != nil {
		return nil, "", err
	}
	if err := checkWorkloadInput("workload_id", in.Workload); err != nil {
		return nil, "", err
	}

	ctx, cancel := e.withTimeout(ctx)
	defer cancel()
	task, err := e.readTask(ctx, taskRef.ID)
	if err != nil {
		return nil, "", fieldNotFound(err, "task")
	}
	if task.Status != StatusActive {
		return nil, "", precondition("task", "task %s is %s", task.ID, task.Status)
	}
	now := e.now()
	expires := now.Add(ttl)
	if expires.After(task.ExpiresAt) {
		expires = task.ExpiresAt
	}
	ancestors := []Ref{}
	var ancestorExpiries []time.Time
	inherited := task.Bounds
	if !parentRef.IsZero() {
		parent, err := e.readAgent(ctx, parentRef.ID)
		if err != nil {
			return nil, "", fieldNotFound(err, "parent")
		}
		if err := e.bound("parent", parent.ID, parent.lineage.Workload, in.Workload); err != nil {
			return nil, "", err
		}
		if parent.Task != task.ID {
			return nil, "", invalid("parent", "agent %s works on task %s, not %s", parent.ID, parent.Task, task.ID)
		}
		if st := parent.status(now); st != StatusActive {
			return nil, "", precondition("parent", "agent %s is %s", parent.ID, st)
		}
		c, err := e.chainOf(ctx, parent.ID)
		if err != nil {
			return nil, "", err
		}
		if len(c.agents)+1 > e.cfg.MaxChainDepth {
			return nil, "", precondition("parent", "delegation chain would exceed the maximum depth of %d agents", e.cfg.MaxChainDepth)
		}
		for _, l := range c.agents {
			ancestors = append(ancestors, Ref{Type: schema.TypeAgent, ID: l.id})
			ancestorExpiries = append(ancestorExpiries, l.expires)
		}
		if expires.After(parent.ExpiresAt) {
			expires = parent.ExpiresAt
		}
		inherited = parent.lineage.Bounds
	}

	a := &Agent{
		ID: newID(PrefixAgent), Name: in.Name, Task: taskRef, Parent: parentRef, Principal: task.Principal,
		CreatedAt: now, ExpiresAt: expires, Status: StatusActive, Bounds: in.Bounds.Or(inherited).Within(inherited),
		Workload: in.Workload,
	}
	ref := Ref{Type: schema.TypeAgent, ID: a.ID}
	a.Chain = append(append([]Ref{ref}, ancestors...), task.Principal)

	lineage := Lineage{Principal: task.Principal, TaskExpires: task.ExpiresAt, Bounds: a.Bounds, Workload: a.Workload}
	for i, anc := range ancestors {
		lineage.Ancestors = append(lineage.Ancestors, Ancestor{ID: anc.ID, Expires: ancestorExpiries[i]})
	}
	updates := creates(AgentRelationships(*a, lineage))
	pre := []*v1.Precondition{mustMatch(taskRef, "open")}
	if !parentRef.IsZero() {
		pre = append(pre, mustMatch(parentRef, "enabled"), mustNotMatch(parentRef, "suspended"))
	}
	token, err := e.write(ctx, updates, pre, precondition("task", "the task was completed, or the parent revoked or suspended, while the agent was being created"))
	if err != nil {
		return nil, "", err
	}
	// The chain is known and will never change: the agent's first check need not read it.
	c := &chain{agents: []link{{id: a.ID, expires: expires}}, task: task.ID, taskExpires: task.ExpiresAt, principal: task.Principal, bounds: a.Bounds, workload: a.Workload}
	if !parentRef.IsZero() {
		pc, err := e.chainOf(ctx, parentRef.ID)
		if err == nil {
			c.agents = append(c.agents, pc.agents...)
			c.chainRefs = c.buildRefs()
			e.chains.Add(a.ID, c)
		}
	} else {
		c.chainRefs = c.buildRefs()
		e.chains.Add(a.ID, c)
	}
	return a, token, nil
}

// GetAgent reads an agent with its chain, and the revision it was read at.
func (e *Engine) GetAgent(ctx context.Context, id string) (*Agent, string, error) {
	if err := ValidateID("id", PrefixAgent, id); err != nil {
		return nil, "", err
	}
	ctx, cancel := e.withTimeout(ctx)
	defer cancel()
	return e.getAgent(ctx, id)
}

func (e *Engine) getAgent(ctx context.Context, id string) (*Agent, string, error) {
	rec, err := e.readAgent(ctx, id)
	if err != nil {
		return nil, "", err
	}
	c, err := e.chainOf(ctx, id)
	if err != nil {
		return nil, "", err
	}
	a := &Agent{
		ID: id, Name: rec.Name, Task: Ref{Type: schema.TypeTask, ID: rec.Task}, Principal: c.principal,
		Chain: c.refs(), CreatedAt: rec.CreatedAt, ExpiresAt: rec.ExpiresAt, Status: rec.status(e.now()),
		Bounds: rec.lineage.Bounds, Workload: rec.lineage.Workload,
	}
	if rec.Parent != "" {
		a.Parent = Ref{Type: schema.TypeAgent, ID: rec.Parent}
	}
	return a, rec.token, nil
}

// RevokeAgent revokes an agent and every agent below it, in one write.
// Revocation is final. It returns the revoked agents.
func (e *Engine) RevokeAgent(ctx context.Context, id string) ([]Ref, string, error) {
	if err := ValidateID("id", PrefixAgent, id); err != nil {
		return nil, "", err
	}
	ctx, cancel := e.withTimeout(ctx)
	defer cancel()
	if _, err := e.readAgent(ctx, id); err != nil {
		return nil, "", err
	}
	ids, err := e.descendants(ctx, id)
	if err != nil {
		return nil, "", err
	}
	var updates []*v1.RelationshipUpdate
	revoked := make([]Ref, 0, len(ids))
	for _, aid := range ids {
		ref := Ref{Type: schema.TypeAgent, ID: aid}
		revoked = append(revoked, ref)
		updates = append(updates,
			del(rel(ref, "enabled", wildcardAgent, "", "", nil)),
			touch(rel(ref, "revoked", wildcardAgent, "", "", nil)),
		)
	}
	token, err := e.write(ctx, updates, nil, nil)
	if err != nil {
		return nil, "", err
	}
	return revoked, token, nil
}

// descendants returns id and every agent below it, breadth first.
func (e *Engine) descendants(ctx context.Context, id string) ([]string, error) {
	out := []string{id}
	seen := map[string]bool{id: true}
	for i := 0; i < len(out); i++ {
		rels, err := e.sdb.readRels(ctx, &v1.RelationshipFilter{
			ResourceType:          schema.TypeAgent,
			OptionalRelation:      "parent",
			OptionalSubjectFilter: &v1.SubjectFilter{SubjectType: schema.TypeAgent, OptionalSubjectId: out[i]},
		})
		if err != nil {
			return nil, err
		}
		ids := make([]string, 0, len(rels))
		for _, r := range rels {
			ids = append(ids, r.GetResource().GetObjectId())
		}
		sort.Strings(ids)
		for _, c := range ids {
			if !seen[c] {
				seen[c] = true
				out = append(out, c)
			}
		}
	}
	return out, nil
}

// SuspendAgent suspends an agent. Its descendants are denied too, because
// every check walks the whole chain.
func (e *Engine) SuspendAgent(ctx context.Context, id string) (*Agent, string, error) {
	return e.setSuspended(ctx, id, true)
}

// ResumeAgent lifts a suspension.
func (e *Engine) ResumeAgent(ctx context.Context, id string) (*Agent, string, error) {
	return e.setSuspended(ctx, id, false)
}

func (e *Engine) setSuspended(ctx context.Context, id string, suspend bool) (*Agent, string, error) {
	if err := ValidateID("id", PrefixAgent, id); err != nil {
		return nil, "", err
	}
	ctx, cancel := e.withTimeout(ctx)
	defer cancel()
	rec, err := e.readAgent(ctx, id)
	if err != nil {
		return nil, "", err
	}
	if rec.revoked || !rec.enabled {
		return nil, "", precondition("id", "agent %s is revoked; revocation is final", id)
	}
	ref := Ref{Type: schema.TypeAgent, ID: id}
	r := rel(ref, "suspended", wildcardAgent, "", "", nil)
	up := touch(r)
	if !suspend {
		up = del(r)
	}
	token, err := e.write(ctx, []*v1.RelationshipUpdate{up}, []*v1.Precondition{mustMatch(ref, "enabled")},
		precondition("id", "agent %s was revoked concurrently", id))
	if err != nil {
		return nil, "", err
	}
	a, _, err := e.getAgent(ctx, id)
	if err != nil {
		return nil, "", err
	}
	return a, token, nil
}
