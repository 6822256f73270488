package engine

import (
	"context"
	"slices"
	"sort"
	"time"
	"unicode/utf8"

	v1 "github.com/authzed/authzed-go/proto/authzed/api/v1"

	"github.com/mandate-dev/mandate/engine/bounds"
	"github.com/mandate-dev/mandate/schema"
)

// Statuses of tasks, agents and grants.
const (
	StatusActive    = "active"
	StatusCompleted = "completed"
	StatusExpired   = "expired"
	StatusSuspended = "suspended"
	StatusRevoked   = "revoked"
	StatusReplaced  = "replaced"
)

// ID prefixes.
const (
	PrefixTask  = "tsk"
	PrefixAgent = "agt"
	PrefixGrant = "grt"
)

const (
	maxDescription = 1024
	maxName        = 256
)

// Task is a unit of work one human asked for.
type Task struct {
	ID          string
	Principal   Ref
	Description string
	CreatedAt   time.Time
	ExpiresAt   time.Time
	Status      string
	// Bounds are the default behavioural bounds of the task's agents.
	Bounds bounds.Limits
}

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
}

// Grant is one permission on one resource for a holder, until ExpiresAt.
type Grant struct {
	ID         string
	Holder     Ref
	Permission string
	Resource   Ref
	CreatedAt  time.Time
	ExpiresAt  time.Time
	Status     string
	// Condition, when set, restricts the grant to matching contexts.
	Condition *Condition
	token     string // the revision it was read at, when read
}

// ---- records -------------------------------------------------------------

// taskRecord is a task as stored in SpiceDB.
type taskRecord struct {
	Task
	open, completed bool
	token           string // the revision it was read at
}

func (e *Engine) readTask(ctx context.Context, id string) (*taskRecord, error) {
	rels, token, err := e.sdb.readRelsAt(ctx, &v1.RelationshipFilter{ResourceType: schema.TypeTask, OptionalResourceId: id})
	if err != nil {
		return nil, err
	}
	t := &taskRecord{Task: Task{ID: id}, token: token}
	found := false
	for _, r := range rels {
		switch r.GetRelation() {
		case "record":
			found = true
			t.Principal = Ref{Type: r.GetSubject().GetObject().GetObjectType(), ID: r.GetSubject().GetObject().GetObjectId()}
			t.CreatedAt, _ = caveatTime(r, "created_at")
			t.ExpiresAt, _ = caveatTime(r, "expires_at")
			t.Description = caveatString(r, "note")
			t.Bounds, _ = decodeBounds(caveatString(r, "target"))
		case "open":
			t.open = true
		case "completed":
			t.completed = true
		}
	}
	if !found || t.ExpiresAt.IsZero() {
		return nil, notFound("id", "task %s does not exist", id)
	}
	switch {
	case t.completed || !t.open:
		t.Status = StatusCompleted
	case !e.now().Before(t.ExpiresAt):
		t.Status = StatusExpired
	default:
		t.Status = StatusActive
	}
	return t, nil
}

// agentRecord is an agent as stored in SpiceDB, without its chain.
type agentRecord struct {
	ID         string
	Name       string
	Task       string
	Parent     string
	CreatedAt  time.Time
	ExpiresAt  time.Time
	enabled    bool
	suspended  bool
	revoked    bool
	token      string  // the revision it was read at
	lineage    Lineage // everything above it
	hasLineage bool
}

func (a *agentRecord) status(now time.Time) string {
	switch {
	case a.revoked || !a.enabled:
		return StatusRevoked
	case a.suspended:
		return StatusSuspended
	case !now.Before(a.ExpiresAt):
		return StatusExpired
	}
	return StatusActive
}

func (e *Engine) readAgent(ctx context.Context, id string) (*agentRecord, error) {
	rels, token, err := e.sdb.readRelsAt(ctx, &v1.RelationshipFilter{ResourceType: schema.TypeAgent, OptionalResourceId: id})
	if err != nil {
		return nil, err
	}
	a := &agentRecord{ID: id, token: token}
	found := false
	for _, r := range rels {
		switch r.GetRelation() {
		case "record":
			found = true
			a.Task = r.GetSubject().GetObject().GetObjectId()
			a.CreatedAt, _ = caveatTime(r, "created_at")
			a.ExpiresAt, _ = caveatTime(r, "expires_at")
			a.Name = caveatString(r, "note")
			a.lineage, a.hasLineage = decodeLineage(caveatString(r, "target"))
		case "parent":
			a.Parent = r.GetSubject().GetObject().GetObjectId()
		case "enabled":
			a.enabled = true
		case "suspended":
			a.suspended = true
		case "revoked":
			a.revoked = true
		}
	}
	if !found || a.ExpiresAt.IsZero() || a.Task == "" {
		return nil, notFound("id", "agent %s does not exist", id)
	}
	if !a.hasLineage {
		return nil, &Error{Kind: KindInternal, Msg: "internal error", Err: errorf("agent %s: its record has no lineage", id)}
	}
	return a, nil
}

// ---- tasks ---------------------------------------------------------------

// CreateTaskInput is what CreateTask needs.
type CreateTaskInput struct {
	Principal   string
	Description string
	TTL         string
	// Bounds are the default bounds of the task's agents.
	Bounds bounds.Limits
}

func validateBounds(l bounds.Limits) error {
	if field, err := l.Validate("bounds."); err != nil {
		return invalid(field, "%v", err)
	}
	return nil
}

// CreateTask opens a task for a human principal.
func (e *Engine) CreateTask(ctx context.Context, in CreateTaskInput) (*Task, string, error) {
	principal, err := ParseRef("principal", in.Principal)
	if err != nil {
		return nil, "", err
	}
	if principal.Type != schema.TypeUser {
		return nil, "", invalid("principal", "must be a user reference (user:<id>), got type %q", principal.Type)
	}
	if !utf8.ValidString(in.Description) || len(in.Description) > maxDescription {
		return nil, "", invalid("description", "must be valid UTF-8 of at most %d bytes", maxDescription)
	}
	ttl, err := ParseTTL("ttl", in.TTL, e.cfg.MaxTaskTTL)
	if err != nil {
		return nil, "", err
	}
	if err := validateBounds(in.Bounds); err != nil {
		return nil, "", err
	}
	now := e.now()
	t := &Task{ID: newID(PrefixTask), Principal: principal, Description: in.Description, CreatedAt: now, ExpiresAt: now.Add(ttl), Status: StatusActive, Bounds: in.Bounds}
	ctx, cancel := e.withTimeout(ctx)
	defer cancel()
	token, err := e.write(ctx, creates(TaskRelationships(*t)), nil, nil)
	if err != nil {
		return nil, "", err
	}
	return t, token, nil
}

// GetTask reads a task, and the revision it was read at.
func (e *Engine) GetTask(ctx context.Context, id string) (*Task, string, error) {
	if err := ValidateID("id", PrefixTask, id); err != nil {
		return nil, "", err
	}
	ctx, cancel := e.withTimeout(ctx)
	defer cancel()
	t, err := e.readTask(ctx, id)
	if err != nil {
		return nil, "", err
	}
	return &t.Task, t.token, nil
}

// CompleteTask ends a task. Every agent and grant under it loses access in the
// same write; the returned token makes later reads see it.
func (e *Engine) CompleteTask(ctx context.Context, id string) (*Task, string, error) {
	if err := ValidateID("id", PrefixTask, id); err != nil {
		return nil, "", err
	}
	ctx, cancel := e.withTimeout(ctx)
	defer cancel()
	t, err := e.readTask(ctx, id)
	if err != nil {
		return nil, "", err
	}
	ref := Ref{Type: schema.TypeTask, ID: id}
	token, err := e.write(ctx, []*v1.RelationshipUpdate{
		del(rel(ref, "open", wildcardAgent, "", "", nil)),
		touch(rel(ref, "completed", wildcardAgent, "", "", nil)),
	}, nil, nil)
	if err != nil {
		return nil, "", err
	}
	t.Status = StatusCompleted
	return &t.Task, token, nil
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
		CreatedAt: now, ExpiresAt: expires, Status: StatusActive, Bounds: in.Bounds.Or(inherited),
	}
	ref := Ref{Type: schema.TypeAgent, ID: a.ID}
	a.Chain = append(append([]Ref{ref}, ancestors...), task.Principal)

	lineage := Lineage{Principal: task.Principal, TaskExpires: task.ExpiresAt, Bounds: a.Bounds}
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
	c := &chain{agents: []link{{id: a.ID, expires: expires}}, task: task.ID, taskExpires: task.ExpiresAt, principal: task.Principal, bounds: a.Bounds}
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

func fieldNotFound(err error, field string) error {
	if e, ok := err.(*Error); ok && e.Kind == KindNotFound {
		return &Error{Kind: KindNotFound, Field: field, Msg: e.Msg}
	}
	return err
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
		Bounds: rec.lineage.Bounds,
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

// ---- grants --------------------------------------------------------------

// CreateGrantInput is what CreateGrant needs.
type CreateGrantInput struct {
	Holder     string
	Permission string
	Resource   string
	TTL        string
	// Condition is optional; the schema's <permission>_grant relation must
	// list it for the holder's type.
	Condition *Condition
}

// CreateGrant gives a holder one permission on one resource. It is refused
// with ESCALATION unless the principal holds the permission now and, for a
// sub-agent, its parent holds it too. A new grant of the same permission on
// the same resource to the same holder replaces the earlier one.
func (e *Engine) CreateGrant(ctx context.Context, in CreateGrantInput) (*Grant, string, error) {
	holder, err := ParseRef("holder", in.Holder)
	if err != nil {
		return nil, "", err
	}
	if holder.Type != schema.TypeAgent && holder.Type != schema.TypeTask {
		return nil, "", invalid("holder", "must be an agent or a task, got type %q", holder.Type)
	}
	resource, err := ParseRef("resource", in.Resource)
	if err != nil {
		return nil, "", err
	}
	if schema.IsCore(resource.Type) {
		return nil, "", invalid("resource", "type %q is one of mandate's own types and cannot be granted", resource.Type)
	}
	ttl, err := ParseTTL("ttl", in.TTL, e.cfg.MaxGrantTTL)
	if err != nil {
		return nil, "", err
	}
	ctx, cancel := e.withTimeout(ctx)
	defer cancel()
	if err := e.requireType(ctx, "resource", resource); err != nil {
		return nil, "", err
	}
	if err := e.requirePermission(ctx, "permission", resource.Type, in.Permission); err != nil {
		return nil, "", err
	}
	if !e.Schema().Grantable(resource.Type, in.Permission) {
		return nil, "", invalid("permission", "%s on type %q cannot be granted to agents", in.Permission, resource.Type)
	}
	var condParams map[string]any
	if in.Condition != nil {
		if condParams, err = in.Condition.validate("condition"); err != nil {
			return nil, "", err
		}
		if !slices.Contains(e.Schema().GrantConditions(resource.Type, in.Permission, holder.Type), in.Condition.caveat()) {
			holderRef := "agent"
			if holder.Type == schema.TypeTask {
				holderRef = "task#member"
			}
			return nil, "", invalid("condition", "%s grants on type %q do not accept the %s condition for %s holders: the schema's %s%s relation must list `%s with %s`",
				in.Permission, resource.Type, in.Condition.Name, holder.Type, in.Permission, schema.GrantSuffix, holderRef, in.Condition.caveat())
		}
	}

	now := e.now()
	expires := now.Add(ttl)
	var principal Ref
	var grantSubject Ref
	var grantSubjectRel string
	var pre []*v1.Precondition

	switch holder.Type {
	case schema.TypeAgent:
		rec, err := e.readAgent(ctx, holder.ID)
		if err != nil {
			return nil, "", fieldNotFound(err, "holder")
		}
		c, err := e.chainOf(ctx, holder.ID)
		if err != nil {
			return nil, "", err
		}
		// The holder itself must be able to act: alive, on an open task.
		if st := rec.status(now); st != StatusActive {
			return nil, "", precondition("holder", "agent %s is %s", holder.ID, st)
		}
		if !now.Before(c.taskExpires) {
			return nil, "", precondition("holder", "the task of agent %s has expired", holder.ID)
		}
		principal = c.principal
		if rec.Parent != "" {
			// Delegation only narrows: the parent must hold it now, by its own grant.
			// A condition on the parent's grant still counts: it is evaluated
			// again on every check of the child, whose chain includes the parent.
			x, _, err := e.evaluateQuery(ctx, Query{Subject: Ref{Type: schema.TypeAgent, ID: rec.Parent}, Permission: in.Permission, Resource: resource}, evalMode{conditionsHold: true})
			if err != nil {
				return nil, "", err
			}
			if d := x.Decision; !d.Allowed {
				return nil, "", escalation("parent agent:%s does not hold %s on %s (%s)", rec.Parent, in.Permission, resource, d.Reason)
			}
		}
		if expires.After(rec.ExpiresAt) {
			expires = rec.ExpiresAt
		}
		grantSubject = holder
		pre = append(pre, mustMatch(holder, "enabled"), mustNotMatch(holder, "suspended"))
	case schema.TypeTask:
		t, err := e.readTask(ctx, holder.ID)
		if err != nil {
			return nil, "", fieldNotFound(err, "holder")
		}
		if t.Status != StatusActive {
			return nil, "", precondition("holder", "task %s is %s", t.ID, t.Status)
		}
		principal = t.Principal
		if expires.After(t.ExpiresAt) {
			expires = t.ExpiresAt
		}
		grantSubject, grantSubjectRel = holder, "member"
		pre = append(pre, mustMatch(holder, "open"))
	}

	// The principal must hold the permission now, through ordinary relationships.
	ok, err := e.checkUser(ctx, principal, in.Permission, resource, nil)
	if err != nil {
		return nil, "", err
	}
	if !ok {
		return nil, "", escalation("principal %s does not hold %s on %s", principal, in.Permission, resource)
	}

	// A replaced grant loses its record in the same write.
	grantRel := in.Permission + schema.GrantSuffix
	existing, err := e.sdb.readRels(ctx, &v1.RelationshipFilter{
		ResourceType: resource.Type, OptionalResourceId: resource.ID, OptionalRelation: grantRel,
		OptionalSubjectFilter: subjectFilter(grantSubject, grantSubjectRel),
	})
	if err != nil {
		return nil, "", err
	}

	g := &Grant{ID: newID(PrefixGrant), Holder: holder, Permission: in.Permission, Resource: resource, CreatedAt: now, ExpiresAt: expires, Status: StatusActive, Condition: in.Condition}
	stored := grantRelationships(*g, condParams)
	// The grant relationship replaces an earlier one of the same holder; the record is new.
	updates := []*v1.RelationshipUpdate{touch(stored[0]), create(stored[1])}
	for _, old := range existing {
		if oldID := caveatString(old, "grant_id"); oldID != "" && oldID != g.ID {
			updates = append(updates, del(rel(Ref{Type: schema.TypeGrant, ID: oldID}, "record", holder, "", "", nil)))
		}
	}
	token, err := e.write(ctx, updates, pre, precondition("holder", "%s was revoked, suspended or completed while the grant was being created", holder))
	if err != nil {
		return nil, "", err
	}
	return g, token, nil
}

func subjectFilter(sub Ref, subRel string) *v1.SubjectFilter {
	f := &v1.SubjectFilter{SubjectType: sub.Type, OptionalSubjectId: sub.ID}
	if subRel != "" {
		f.OptionalRelation = &v1.SubjectFilter_RelationFilter{Relation: subRel}
	}
	return f
}

// readGrant reads a grant record and the grant relationship it describes.
func (e *Engine) readGrant(ctx context.Context, id string) (*Grant, *v1.Relationship, error) {
	rels, token, err := e.sdb.readRelsAt(ctx, &v1.RelationshipFilter{ResourceType: schema.TypeGrant, OptionalResourceId: id, OptionalRelation: "record"})
	if err != nil {
		return nil, nil, err
	}
	if len(rels) == 0 {
		return nil, nil, notFound("id", "grant %s does not exist", id)
	}
	r := rels[0]
	g := &Grant{ID: id, Holder: Ref{Type: r.GetSubject().GetObject().GetObjectType(), ID: r.GetSubject().GetObject().GetObjectId()}, token: token}
	g.CreatedAt, _ = caveatTime(r, "created_at")
	g.ExpiresAt, _ = caveatTime(r, "expires_at")
	target := caveatString(r, "target")
	resStr, perm, ok := cutLast(target, "#")
	if !ok {
		return nil, nil, &Error{Kind: KindInternal, Msg: "internal error", Err: errorf("grant %s has a malformed target %q", id, target)}
	}
	res, err := ParseRef("target", resStr)
	if err != nil {
		return nil, nil, &Error{Kind: KindInternal, Msg: "internal error", Err: err}
	}
	g.Resource, g.Permission = res, perm

	subRel := ""
	if g.Holder.Type == schema.TypeTask {
		subRel = "member"
	}
	live, err := e.sdb.readRels(ctx, &v1.RelationshipFilter{
		ResourceType: res.Type, OptionalResourceId: res.ID, OptionalRelation: perm + schema.GrantSuffix,
		OptionalSubjectFilter: subjectFilter(g.Holder, subRel),
	})
	if err != nil {
		return nil, nil, err
	}
	var current *v1.Relationship
	for _, l := range live {
		if caveatString(l, "grant_id") == id {
			current = l
		}
	}
	if current != nil {
		g.Condition = conditionOf(current)
	}
	switch {
	case current == nil:
		g.Status = StatusReplaced
	case !e.now().Before(g.ExpiresAt):
		g.Status = StatusExpired
	default:
		g.Status = StatusActive
	}
	return g, current, nil
}

// GetGrant reads a grant, and the revision it was read at.
func (e *Engine) GetGrant(ctx context.Context, id string) (*Grant, string, error) {
	if err := ValidateID("id", PrefixGrant, id); err != nil {
		return nil, "", err
	}
	ctx, cancel := e.withTimeout(ctx)
	defer cancel()
	g, _, err := e.readGrant(ctx, id)
	if err != nil {
		return nil, "", err
	}
	return g, g.token, nil
}

// DeleteGrant removes a grant.
func (e *Engine) DeleteGrant(ctx context.Context, id string) (string, error) {
	if err := ValidateID("id", PrefixGrant, id); err != nil {
		return "", err
	}
	ctx, cancel := e.withTimeout(ctx)
	defer cancel()
	g, current, err := e.readGrant(ctx, id)
	if err != nil {
		return "", err
	}
	updates := []*v1.RelationshipUpdate{del(rel(Ref{Type: schema.TypeGrant, ID: id}, "record", g.Holder, "", "", nil))}
	if current != nil {
		current.OptionalCaveat = nil
		updates = append(updates, del(current))
	}
	return e.write(ctx, updates, nil, nil)
}
