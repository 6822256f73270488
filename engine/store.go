package engine

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	v1 "github.com/authzed/authzed-go/proto/authzed/api/v1"

	"github.com/mandate-dev/mandate/engine/bounds"
	"github.com/mandate-dev/mandate/schema"
)

// This file is the storage floor under the task, agent and grant commands
// (tasks.go, agents.go, grants.go), the access requests (access.go) and the
// decision path: the one definition of how tasks, agents, grants and access
// requests are stored as relationships
// (the bench harness bulk-loads datasets with the same functions), how their
// records are read back, and how an agent's chain is resolved.

// TaskRelationships stores an open task.
func TaskRelationships(t Task) []*v1.Relationship {
	ref := Ref{Type: schema.TypeTask, ID: t.ID}
	return []*v1.Relationship{
		rel(ref, "record", t.Principal, "", schema.CaveatRecord, recordContext(t.CreatedAt, t.ExpiresAt, t.Description, encodeBounds(t.Bounds))),
		rel(ref, "principal", t.Principal, "", "", nil),
		rel(ref, "open", wildcardAgent, "", schema.CaveatWithinLifetime, lifetimeContext(t.ExpiresAt)),
	}
}

// Lineage is what an agent's record remembers of everything above it, so
// that one read resolves its whole chain. It never changes once written.
type Lineage struct {
	Principal   Ref
	TaskExpires time.Time
	// Ancestors run from the parent up to the top-level agent.
	Ancestors []Ancestor
	// Bounds are the agent's behavioural bounds, fixed when it was created.
	Bounds bounds.Limits
	// Workload is the SPIFFE ID of the workload that created the agent, or
	// "": the agent's own, not inherited.
	Workload string
}

// Ancestor is one agent above another, with its expiry.
type Ancestor struct {
	ID      string
	Expires time.Time
}

// encode writes "v1;<principal>;<task expiry>[;b=<bounds>][;w=<SPIFFE ID>];<id>@<expiry>;…".
// Ids and references cannot contain ';', '=' or '@', and neither can a
// SPIFFE ID that go-spiffe accepts (validWorkload).
func (l Lineage) encode() string {
	var b strings.Builder
	b.WriteString("v1;" + l.Principal.String() + ";" + ts(l.TaskExpires))
	if !l.Bounds.IsZero() {
		b.WriteString(";" + encodeBounds(l.Bounds))
	}
	if l.Workload != "" {
		b.WriteString(";w=" + l.Workload)
	}
	for _, a := range l.Ancestors {
		b.WriteString(";" + a.ID + "@" + ts(a.Expires))
	}
	return b.String()
}

func decodeLineage(s string) (Lineage, bool) {
	parts := strings.Split(s, ";")
	if len(parts) < 3 || parts[0] != "v1" {
		return Lineage{}, false
	}
	var l Lineage
	var err error
	var ok bool
	if l.Principal, err = ParseRef("principal", parts[1]); err != nil {
		return Lineage{}, false
	}
	if l.TaskExpires, err = time.Parse(time.RFC3339Nano, parts[2]); err != nil {
		return Lineage{}, false
	}
	rest := parts[3:]
	if len(rest) > 0 && strings.HasPrefix(rest[0], "b=") {
		if l.Bounds, ok = decodeBounds(rest[0]); !ok {
			return Lineage{}, false
		}
		rest = rest[1:]
	}
	if len(rest) > 0 && strings.HasPrefix(rest[0], "w=") {
		if l.Workload = rest[0][2:]; validWorkload(l.Workload) != nil {
			return Lineage{}, false
		}
		rest = rest[1:]
	}
	for _, p := range rest {
		id, exp, ok := strings.Cut(p, "@")
		if !ok || !validID(id) {
			return Lineage{}, false
		}
		t, err := time.Parse(time.RFC3339Nano, exp)
		if err != nil {
			return Lineage{}, false
		}
		l.Ancestors = append(l.Ancestors, Ancestor{ID: id, Expires: t})
	}
	return l, true
}

// AgentRelationships stores an enabled agent: a top-level one when a.Parent
// is zero. Its record carries its lineage.
func AgentRelationships(a Agent, l Lineage) []*v1.Relationship {
	ref := Ref{Type: schema.TypeAgent, ID: a.ID}
	rels := []*v1.Relationship{
		rel(ref, "record", a.Task, "", schema.CaveatRecord, recordContext(a.CreatedAt, a.ExpiresAt, a.Name, l.encode())),
		rel(ref, "task", a.Task, "", "", nil),
		rel(ref, "enabled", wildcardAgent, "", schema.CaveatWithinLifetime, lifetimeContext(a.ExpiresAt)),
		rel(a.Task, "member", ref, "", "", nil),
	}
	if a.Parent.IsZero() {
		return append(rels, rel(ref, "root", wildcardAgent, "", "", nil))
	}
	return append(rels, rel(ref, "parent", a.Parent, "", "", nil))
}

// GrantRelationships stores a grant: the relationship on the resource that
// grants it, and the grant's record.
func GrantRelationships(g Grant) []*v1.Relationship { return grantRelationships(g, nil) }

// grantRelationships stores a grant; a conditioned grant uses its
// condition's caveat, with condParams (the condition's stored parameters)
// beside the lifetime.
func grantRelationships(g Grant, condParams map[string]any) []*v1.Relationship {
	sub, subRel := g.Holder, ""
	if g.Holder.Type == schema.TypeTask {
		subRel = "member"
	}
	caveat := schema.CaveatGrantLifetime
	ctx := map[string]any{"expires_at": ts(g.ExpiresAt), "grant_id": g.ID}
	if g.Condition != nil {
		caveat = g.Condition.caveat()
		for k, v := range condParams {
			ctx[k] = v
		}
	}
	return []*v1.Relationship{
		rel(g.Resource, g.Permission+schema.GrantSuffix, sub, subRel, caveat, ctx),
		rel(Ref{Type: schema.TypeGrant, ID: g.ID}, "record", g.Holder, "", schema.CaveatRecord,
			recordContext(g.CreatedAt, g.ExpiresAt, "", g.Resource.String()+"#"+g.Permission)),
	}
}

// NewID returns a fresh id with a prefix (PrefixTask, PrefixAgent, PrefixGrant).
func NewID(prefix string) string { return newID(prefix) }

func creates(rels []*v1.Relationship) []*v1.RelationshipUpdate {
	out := make([]*v1.RelationshipUpdate, len(rels))
	for i, r := range rels {
		out[i] = create(r)
	}
	return out
}

// encodeBounds writes "b=<checks/min>.<denials>.<denial window s>.<resources/h>",
// or "" for no bounds.
func encodeBounds(l bounds.Limits) string {
	if l.IsZero() {
		return ""
	}
	return fmt.Sprintf("b=%d.%d.%d.%d", l.ChecksPerMinute, l.MaxDenials, int64(l.DenialWindow/time.Second), l.ResourcesPerHour)
}

func decodeBounds(s string) (bounds.Limits, bool) {
	if s == "" {
		return bounds.Limits{}, true
	}
	rest, ok := strings.CutPrefix(s, "b=")
	parts := strings.Split(rest, ".")
	if !ok || len(parts) != 4 {
		return bounds.Limits{}, false
	}
	n := make([]int, 4)
	for i, p := range parts {
		v, err := strconv.Atoi(p)
		if err != nil || v < 0 {
			return bounds.Limits{}, false
		}
		n[i] = v
	}
	return bounds.Limits{ChecksPerMinute: n[0], MaxDenials: n[1], DenialWindow: time.Duration(n[2]) * time.Second, ResourcesPerHour: n[3]}, true
}

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

func fieldNotFound(err error, field string) error {
	if e, ok := err.(*Error); ok && e.Kind == KindNotFound {
		return &Error{Kind: KindNotFound, Field: field, Msg: e.Msg}
	}
	return err
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

// ---- chains --------------------------------------------------------------

// link is one agent of a chain with its lifetime.
type link struct {
	id      string
	expires time.Time
}

// chain is the immutable structure behind an agent: the agent and its
// ancestors (leaf first), its task and the human principal.
type chain struct {
	agents      []link
	task        string
	taskExpires time.Time
	principal   Ref
	bounds      bounds.Limits // the agent's own bounds
	workload    string        // the agent's own workload identity, or ""
	chainRefs   []Ref         // refs(), computed once; shared read-only by every decision
}

// refs is the chain as references, agent first, human last. Callers must not modify it.
func (c *chain) refs() []Ref {
	if c.chainRefs != nil {
		return c.chainRefs
	}
	return c.buildRefs()
}

func (c *chain) buildRefs() []Ref {
	out := make([]Ref, 0, len(c.agents)+1)
	for _, l := range c.agents {
		out = append(out, Ref{Type: schema.TypeAgent, ID: l.id})
	}
	return append(out, c.principal)
}

// named reports whether refs (agents, then the human) and task are this chain.
func (c *chain) named(refs []Ref, task Ref) bool {
	return task == (Ref{Type: schema.TypeTask, ID: c.task}) && slices.Equal(refs, c.refs())
}

// earliest is the earliest expiry in the chain, task included.
func (c *chain) earliest() time.Time {
	t := c.taskExpires
	for _, l := range c.agents {
		if l.expires.Before(t) {
			t = l.expires
		}
	}
	return t
}

// chainOf resolves an agent's chain, from the cache when it can: a chain's
// structure is written once and never changes.
func (e *Engine) chainOf(ctx context.Context, id string) (*chain, error) {
	if c, ok := e.chains.Get(id); ok {
		return c, nil
	}
	// The agent's record carries its lineage: one read resolves the chain.
	a, err := e.readAgent(ctx, id)
	if err != nil {
		return nil, err
	}
	c := &chain{task: a.Task, taskExpires: a.lineage.TaskExpires, principal: a.lineage.Principal, bounds: a.lineage.Bounds, workload: a.lineage.Workload}
	c.agents = append(c.agents, link{id: a.ID, expires: a.ExpiresAt})
	for _, anc := range a.lineage.Ancestors {
		c.agents = append(c.agents, link{id: anc.ID, expires: anc.Expires})
	}
	if len(c.agents) > e.cfg.MaxChainDepth+1 {
		return nil, &Error{Kind: KindInternal, Msg: "internal error", Err: errorf("agent %s: chain deeper than %d", id, e.cfg.MaxChainDepth)}
	}
	c.chainRefs = c.buildRefs()
	e.chains.Add(id, c)
	return c, nil
}

// AgentBounds returns the behavioural bounds stored with an agent.
func (e *Engine) AgentBounds(ctx context.Context, id string) (bounds.Limits, error) {
	c, err := e.chainOf(ctx, id)
	if err != nil {
		return bounds.Limits{}, err
	}
	return c.bounds, nil
}

// ---- access requests -----------------------------------------------------

// accessRequestRelationships stores a pending request: what was asked, by
// which key, until when (filed), who answers (human, an index for
// listings), and pending, which its answer removes.
func accessRequestRelationships(r *AccessRequest) []*v1.Relationship {
	ref := Ref{Type: schema.TypeAccessRequest, ID: r.ID}
	return []*v1.Relationship{
		rel(ref, "filed", r.Agent, "", schema.CaveatRequest, map[string]any{
			"filed_at": ts(r.FiledAt), "expires_at": ts(r.ExpiresAt), "target": r.Resource.String() + "#" + r.Permission,
			"ttl": r.TTL, "filed_by": r.FiledBy, "reason": r.Reason,
		}),
		rel(ref, "human", r.Human, "", "", nil),
		rel(ref, "pending", wildcardAgent, "", "", nil),
	}
}

// answerUpdates answer a request: pending goes, answered comes, in one
// write that the caller preconditions on pending.
func answerUpdates(ref Ref, state string, at time.Time, a Answer, grantID string) []*v1.RelationshipUpdate {
	return []*v1.RelationshipUpdate{
		del(rel(ref, "pending", wildcardAgent, "", "", nil)),
		create(rel(ref, "answered", wildcardAgent, "", schema.CaveatAnswer, map[string]any{
			"decided_at": ts(at), "state": state, "decided_by": a.By, "decided_as": a.As, "reason": a.Reason, "grant_id": grantID,
		})),
	}
}

// readAccessRequest reads one request, at one revision, and derives its
// state from the engine's clock.
func (e *Engine) readAccessRequest(ctx context.Context, id string) (*AccessRequest, string, error) {
	rels, token, err := e.sdb.readRelsAt(ctx, &v1.RelationshipFilter{ResourceType: schema.TypeAccessRequest, OptionalResourceId: id})
	if err != nil {
		return nil, "", err
	}
	byRel := map[string]*v1.Relationship{}
	for _, r := range rels {
		byRel[r.GetRelation()] = r
	}
	r, err := e.decodeAccessRequest(ctx, id, byRel["filed"], byRel["human"], byRel["pending"] != nil, byRel["answered"])
	if err != nil {
		return nil, "", err
	}
	return r, token, nil
}

// decodeAccessRequest builds a request from its relationships.
func (e *Engine) decodeAccessRequest(ctx context.Context, id string, filed, human *v1.Relationship, pending bool, answered *v1.Relationship) (*AccessRequest, error) {
	if filed == nil {
		return nil, notFound("id", "access request %s does not exist", id)
	}
	bad := func(why string) error {
		return &Error{Kind: KindInternal, Msg: "internal error", Err: errorf("access request %s: %s", id, why)}
	}
	r := &AccessRequest{ID: id, Agent: Ref{Type: schema.TypeAgent, ID: filed.GetSubject().GetObject().GetObjectId()}, pending: pending}
	var ok bool
	if r.FiledAt, ok = caveatTime(filed, "filed_at"); !ok {
		return nil, bad("no filed_at")
	}
	if r.ExpiresAt, ok = caveatTime(filed, "expires_at"); !ok {
		return nil, bad("no expires_at")
	}
	resStr, perm, ok := cutLast(caveatString(filed, "target"), "#")
	if !ok {
		return nil, bad("malformed target")
	}
	res, err := ParseRef("target", resStr)
	if err != nil {
		return nil, bad("malformed target resource")
	}
	r.Resource, r.Permission = res, perm
	r.TTL, r.FiledBy, r.Reason = caveatString(filed, "ttl"), caveatString(filed, "filed_by"), caveatString(filed, "reason")
	if human != nil {
		r.Human = Ref{Type: human.GetSubject().GetObject().GetObjectType(), ID: human.GetSubject().GetObject().GetObjectId()}
	}
	// The chain never changes once written; its cache makes this cheap.
	if c, err := e.chainOf(ctx, r.Agent.ID); err == nil {
		r.Chain, r.Task = c.refs(), Ref{Type: schema.TypeTask, ID: c.task}
		if r.Human.IsZero() {
			r.Human = c.principal
		}
	} else if AsError(err).Kind != KindNotFound {
		return nil, err
	}
	switch {
	case answered != nil:
		r.State = caveatString(answered, "state")
		if !requestStates[r.State] || r.State == RequestPending {
			return nil, bad("malformed answer")
		}
		r.DecidedAt, _ = caveatTime(answered, "decided_at")
		r.DecidedBy, r.DecidedAs = caveatString(answered, "decided_by"), caveatString(answered, "decided_as")
		r.DecisionReason, r.Grant = caveatString(answered, "reason"), caveatString(answered, "grant_id")
	case pending && !e.now().Before(r.ExpiresAt):
		r.State = RequestExpired
	case pending:
		r.State = RequestPending
	default:
		// Neither pending nor answered: the answer is written in the same
		// write that removes pending, so this is a read across revisions.
		return nil, bad("neither pending nor answered")
	}
	return r, nil
}
