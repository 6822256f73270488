package engine

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"sort"
	"strings"
	"time"

	v1 "github.com/authzed/authzed-go/proto/authzed/api/v1"

	"github.com/mandate-dev/mandate/schema"
)

// ---- listing agents ------------------------------------------------------

// AgentFilter selects agents. Empty fields match everything.
type AgentFilter struct {
	Principal string // "user:<id>"
	Task      string // "task:<id>"
	Status    string
}

var agentStatuses = map[string]bool{StatusActive: true, StatusSuspended: true, StatusRevoked: true, StatusExpired: true}

// AgentIDs lists the ids of the agents a filter's principal or task selects,
// sorted; statuses are applied by the caller page by page.
func (e *Engine) AgentIDs(ctx context.Context, f AgentFilter) ([]string, error) {
	if f.Status != "" && !agentStatuses[f.Status] {
		return nil, invalid("status", "%q is not active, suspended, revoked or expired", f.Status)
	}
	ctx, cancel := context.WithTimeout(ctx, 4*e.cfg.CallTimeout)
	defer cancel()
	var tasks []string
	switch {
	case f.Task != "":
		ref, err := ParseRef("task", f.Task)
		if err != nil {
			return nil, err
		}
		if ref.Type != schema.TypeTask {
			return nil, invalid("task", "must be a task reference (task:<id>)")
		}
		tasks = []string{ref.ID}
	case f.Principal != "":
		ref, err := ParseRef("principal", f.Principal)
		if err != nil {
			return nil, err
		}
		if ref.Type != schema.TypeUser {
			return nil, invalid("principal", "must be a user reference (user:<id>)")
		}
		rels, err := e.sdb.readRels(ctx, &v1.RelationshipFilter{ResourceType: schema.TypeTask, OptionalRelation: "principal",
			OptionalSubjectFilter: &v1.SubjectFilter{SubjectType: schema.TypeUser, OptionalSubjectId: ref.ID}})
		if err != nil {
			return nil, err
		}
		for _, r := range rels {
			tasks = append(tasks, r.GetResource().GetObjectId())
		}
		if len(tasks) == 0 {
			return nil, nil
		}
	}
	var ids []string
	if tasks == nil {
		rels, err := e.sdb.readRels(ctx, &v1.RelationshipFilter{ResourceType: schema.TypeAgent, OptionalRelation: "task"})
		if err != nil {
			return nil, err
		}
		for _, r := range rels {
			ids = append(ids, r.GetResource().GetObjectId())
		}
	}
	for _, t := range tasks {
		rels, err := e.sdb.readRels(ctx, &v1.RelationshipFilter{ResourceType: schema.TypeAgent, OptionalRelation: "task",
			OptionalSubjectFilter: &v1.SubjectFilter{SubjectType: schema.TypeTask, OptionalSubjectId: t}})
		if err != nil {
			return nil, err
		}
		for _, r := range rels {
			ids = append(ids, r.GetResource().GetObjectId())
		}
	}
	sort.Strings(ids)
	return ids, nil
}

// bulkAgentReads is the listing length above which ListAgents reads every
// agent record in one read instead of one read per agent.
const bulkAgentReads = 32

// AgentsByID reads the given agents, in one read of every agent record when
// there are many. An id that names no agent is an error, as in GetAgent.
func (e *Engine) AgentsByID(ctx context.Context, ids []string) ([]*Agent, error) {
	out := make([]*Agent, 0, len(ids))
	if len(ids) <= bulkAgentReads {
		for _, id := range ids {
			a, _, err := e.GetAgent(ctx, id)
			if err != nil {
				return nil, err
			}
			out = append(out, a)
		}
		return out, nil
	}
	rctx, cancel := context.WithTimeout(ctx, 4*e.cfg.CallTimeout)
	defer cancel()
	bulk, err := e.readAgents(rctx)
	if err != nil {
		return nil, err
	}
	for _, id := range ids {
		rec, ok := bulk[id]
		if !ok {
			return nil, notFound("id", "agent %s does not exist", id)
		}
		a, _, err := e.agentOf(rec)
		if err != nil {
			return nil, err
		}
		out = append(out, a)
	}
	return out, nil
}

// ListAgents returns up to pageSize agents after the id `after` that match f.
func (e *Engine) ListAgents(ctx context.Context, f AgentFilter, after string, pageSize int) ([]*Agent, string, error) {
	ids, err := e.AgentIDs(ctx, f)
	if err != nil {
		return nil, "", err
	}
	start := sort.SearchStrings(ids, after)
	if start < len(ids) && ids[start] == after {
		start++
	}
	var out []*Agent
	// A long listing reads every agent record at once: one scan, one revision.
	var bulk map[string]*agentRecord
	if len(ids)-start > bulkAgentReads {
		rctx, cancel := context.WithTimeout(ctx, 4*e.cfg.CallTimeout)
		bulk, err = e.readAgents(rctx)
		cancel()
		if err != nil {
			return nil, "", err
		}
	}
	for _, id := range ids[start:] {
		var a *Agent
		if bulk != nil {
			rec, ok := bulk[id]
			if !ok {
				continue // removed since its id was listed
			}
			a, _, err = e.agentOf(rec)
		} else {
			a, _, err = e.GetAgent(ctx, id)
		}
		if err != nil {
			return nil, "", err
		}
		if f.Status != "" && a.Status != f.Status {
			continue
		}
		out = append(out, a)
		if len(out) == pageSize {
			return out, id, nil
		}
	}
	return out, "", nil
}

// AgentNode is an agent and the agents below it.
type AgentNode struct {
	Agent    *Agent
	Children []*AgentNode
}

// PrincipalAgents returns a human's tasks and, per task, the tree of agents.
func (e *Engine) PrincipalAgents(ctx context.Context, userID string) ([]*Task, []*AgentNode, error) {
	if userID == "" || len(userID) > maxIDLen || !idRE.MatchString(userID) {
		return nil, nil, invalid("id", "%q is not a user id", userID)
	}
	ctx, cancel := context.WithTimeout(ctx, 4*e.cfg.CallTimeout)
	defer cancel()
	rels, err := e.sdb.readRels(ctx, &v1.RelationshipFilter{ResourceType: schema.TypeTask, OptionalRelation: "principal",
		OptionalSubjectFilter: &v1.SubjectFilter{SubjectType: schema.TypeUser, OptionalSubjectId: userID}})
	if err != nil {
		return nil, nil, err
	}
	var tasks []*Task
	nodes := map[string]*AgentNode{}
	var order []string
	for _, r := range rels {
		t, err := e.readTask(ctx, r.GetResource().GetObjectId())
		if err != nil {
			return nil, nil, err
		}
		tasks = append(tasks, &t.Task)
		ids, err := e.AgentIDs(ctx, AgentFilter{Task: "task:" + t.ID})
		if err != nil {
			return nil, nil, err
		}
		for _, id := range ids {
			a, _, err := e.getAgent(ctx, id)
			if err != nil {
				return nil, nil, err
			}
			nodes[id] = &AgentNode{Agent: a}
			order = append(order, id)
		}
	}
	sort.Slice(tasks, func(i, j int) bool { return tasks[i].CreatedAt.Before(tasks[j].CreatedAt) })
	var roots []*AgentNode
	for _, id := range order {
		n := nodes[id]
		if p := nodes[n.Agent.Parent.ID]; !n.Agent.Parent.IsZero() && p != nil {
			p.Children = append(p.Children, n)
		} else {
			roots = append(roots, n)
		}
	}
	return tasks, roots, nil
}

// ---- what an agent can reach ---------------------------------------------

// Access is one resource and permission an agent can reach now.
type Access struct {
	Resource   Ref
	Permission string
	Grants     []string
	Holders    []Ref
	ValidUntil time.Time
	// Conditions must also hold in the check's context: the conditions of
	// the grants in the chain, in words. Empty when none is conditioned.
	Conditions []string
}

// AgentAccess lists every resource and permission the agent can reach now,
// across every grantable permission of every resource type (or the ones the
// filters name). It starts from SpiceDB's LookupResources on the grant
// relations, then applies the four legs of Check to the candidates in bulk,
// so it never lists what Check would deny. The listing is read at one
// revision, returned as the token.
func (e *Engine) AgentAccess(ctx context.Context, agentID, resourceType, permission string) ([]Access, []Ref, string, error) {
	if err := ValidateID("id", PrefixAgent, agentID); err != nil {
		return nil, nil, "", err
	}
	ctx, cancel := context.WithTimeout(ctx, 10*e.cfg.CallTimeout)
	defer cancel()
	info := e.Schema()
	if resourceType != "" && !info.HasType(resourceType) {
		return nil, nil, "", invalid("resource_type", "unknown type %q", resourceType)
	}
	if permission != "" {
		if err := ValidateName("permission", permission); err != nil {
			return nil, nil, "", err
		}
	}
	c, err := e.chainOf(ctx, agentID)
	if err != nil {
		return nil, nil, "", fieldNotFound(err, "id")
	}
	now := e.now()
	// The freeze and legs 1 and 2 hold for every resource or for none; the
	// whole listing is read at the revision they were judged at.
	base, at, canAct, err := e.standing(ctx, c, now)
	if err != nil {
		return nil, nil, "", err
	}
	token := base.token
	if !canAct {
		return nil, c.refs(), token, nil
	}
	var out []Access
	for _, t := range info.ResourceTypes() {
		if resourceType != "" && t != resourceType {
			continue
		}
		for _, p := range info.Permissions(t) {
			if (permission != "" && p != permission) || !info.Grantable(t, p) {
				continue
			}
			entries, err := e.accessFor(ctx, at, base, c, t, p, now)
			if err != nil {
				return nil, nil, "", err
			}
			out = append(out, entries...)
		}
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Resource != out[j].Resource {
			return out[i].Resource.String() < out[j].Resource.String()
		}
		return out[i].Permission < out[j].Permission
	})
	return out, c.refs(), token, nil
}

// accessFor lists one permission of one type for the agent of chain c.
func (e *Engine) accessFor(ctx context.Context, at *v1.Consistency, base facts, c *chain, typ, perm string, now time.Time) ([]Access, error) {
	grantRel := perm + schema.GrantSuffix
	taskRef := Ref{Type: schema.TypeTask, ID: c.task}
	// Live grants per holder: the task's, then each agent's of the chain.
	type live struct {
		ids        []string
		expires    time.Time
		conditions []string
	}
	read := func(sub Ref, subRel string) (map[string]*live, error) {
		rels, err := e.readRelsAtConsistency(ctx, at, &v1.RelationshipFilter{ResourceType: typ, OptionalRelation: grantRel, OptionalSubjectFilter: subjectFilter(sub, subRel)})
		if err != nil {
			return nil, err
		}
		m := map[string]*live{}
		for _, r := range rels {
			if cav := r.GetOptionalCaveat().GetCaveatName(); cav != schema.CaveatGrantLifetime && !schema.IsCondition(cav) {
				continue
			}
			exp, ok := caveatTime(r, "expires_at")
			if !ok || !now.Before(exp) {
				continue
			}
			id := r.GetResource().GetObjectId()
			l := m[id]
			if l == nil {
				l = &live{}
				m[id] = l
			}
			if cond := conditionOf(r); cond != nil {
				l.conditions = append(l.conditions, cond.describe())
			}
			l.ids = append(l.ids, caveatString(r, "grant_id"))
			if exp.After(l.expires) {
				l.expires = exp
			}
		}
		return m, nil
	}
	taskGrants, err := read(taskRef, "member")
	if err != nil {
		return nil, err
	}
	perAgent := make([]map[string]*live, len(c.agents))
	for i, l := range c.agents {
		if perAgent[i], err = read(Ref{Type: schema.TypeAgent, ID: l.id}, ""); err != nil {
			return nil, err
		}
	}
	// Candidates: what LookupResources says the leaf's grant relation reaches.
	leaf := Ref{Type: schema.TypeAgent, ID: c.agents[0].id}
	candidates, err := e.lookup(ctx, at, typ, grantRel, leaf)
	if err != nil {
		return nil, err
	}
	// The principal must hold the permission on each, now: in bulk.
	allowed, err := e.principalHolds(ctx, at, c.principal, typ, perm, candidates)
	if err != nil {
		return nil, err
	}
	fact := func(l *live) holderFact {
		if l == nil {
			return holderFact{}
		}
		h := holderFact{state: grantHeld, expires: l.expires}
		if len(l.conditions) > 0 {
			// Listed with its condition, which a check evaluates in its context.
			h.state = grantMissing
		}
		return h
	}
	var out []Access
	for _, res := range candidates {
		f := base
		f.principal = v1.CheckPermissionResponse_PERMISSIONSHIP_NO_PERMISSION
		if allowed[res] {
			f.principal = v1.CheckPermissionResponse_PERMISSIONSHIP_HAS_PERMISSION
		}
		f.holders = make([]holderFact, len(c.agents)+1)
		for i := range c.agents {
			f.holders[i] = fact(perAgent[i][res])
		}
		f.holders[len(c.agents)] = fact(taskGrants[res])
		ev := evaluate(c, now, &f, evalMode{conditionsHold: true})
		if !ev.Decision.Allowed {
			continue
		}
		a := Access{Resource: Ref{Type: typ, ID: res}, Permission: perm, ValidUntil: ev.Decision.ValidUntil}
		for i := range c.agents {
			for _, l := range []*live{perAgent[i][res], taskGrants[res]} {
				if l == nil {
					continue
				}
				for _, cond := range l.conditions {
					if !slices.Contains(a.Conditions, cond) {
						a.Conditions = append(a.Conditions, cond)
					}
				}
			}
		}
		if g := perAgent[0][res]; g != nil {
			a.Grants = append(a.Grants, g.ids...)
			a.Holders = append(a.Holders, leaf)
		}
		if g := taskGrants[res]; g != nil {
			a.Grants = append(a.Grants, g.ids...)
			a.Holders = append(a.Holders, taskRef)
		}
		out = append(out, a)
	}
	return out, nil
}

func (e *Engine) lookup(ctx context.Context, at *v1.Consistency, typ, relation string, sub Ref) ([]string, error) {
	stream, err := e.sdb.Permissions.LookupResources(ctx, &v1.LookupResourcesRequest{
		Consistency: at, ResourceObjectType: typ, Permission: relation, Subject: subRef(sub, ""), Context: e.caveatContext(Query{}, e.now()),
	})
	if err != nil {
		return nil, backendErr("LookupResources", err)
	}
	var out []string
	for {
		resp, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, backendErr("LookupResources", err)
		}
		// A conditional result is a conditioned grant whose condition needs the
		// caller's context; it is listed with its condition.
		switch resp.GetPermissionship() {
		case v1.LookupPermissionship_LOOKUP_PERMISSIONSHIP_HAS_PERMISSION, v1.LookupPermissionship_LOOKUP_PERMISSIONSHIP_CONDITIONAL_PERMISSION:
			out = append(out, resp.GetResourceObjectId())
		}
	}
	sort.Strings(out)
	return out, nil
}

const bulkChunk = 500

func (e *Engine) principalHolds(ctx context.Context, at *v1.Consistency, principal Ref, typ, perm string, ids []string) (map[string]bool, error) {
	out := map[string]bool{}
	qctx := e.caveatContext(Query{}, e.now())
	for start := 0; start < len(ids); start += bulkChunk {
		chunk := ids[start:min(start+bulkChunk, len(ids))]
		items := make([]*v1.CheckBulkPermissionsRequestItem, len(chunk))
		for i, id := range chunk {
			items[i] = &v1.CheckBulkPermissionsRequestItem{Resource: &v1.ObjectReference{ObjectType: typ, ObjectId: id}, Permission: perm, Subject: subRef(principal, ""), Context: qctx}
		}
		resp, err := e.sdb.Permissions.CheckBulkPermissions(ctx, &v1.CheckBulkPermissionsRequest{Consistency: at, Items: items})
		if err != nil {
			return nil, backendErr("CheckBulkPermissions", err)
		}
		for i, p := range resp.GetPairs() {
			if p.GetError() != nil {
				return nil, &Error{Kind: KindUnavailable, Msg: "authorization backend unavailable", Err: fmt.Errorf("%w: %s", ErrUnavailable, p.GetError().GetMessage())}
			}
			if p.GetItem().GetPermissionship() == v1.CheckPermissionResponse_PERMISSIONSHIP_HAS_PERMISSION {
				out[chunk[i]] = true
			}
		}
	}
	return out, nil
}

func (e *Engine) readRelsAtConsistency(ctx context.Context, at *v1.Consistency, filter *v1.RelationshipFilter) ([]*v1.Relationship, error) {
	stream, err := e.sdb.Permissions.ReadRelationships(ctx, &v1.ReadRelationshipsRequest{Consistency: at, RelationshipFilter: filter})
	if err != nil {
		return nil, backendErr("ReadRelationships", err)
	}
	var out []*v1.Relationship
	for {
		resp, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return out, nil
		}
		if err != nil {
			return nil, backendErr("ReadRelationships", err)
		}
		out = append(out, resp.GetRelationship())
	}
}

// ---- explain -------------------------------------------------------------

// Leg is one leg of an explanation.
type Leg struct {
	Name      string
	Passed    bool
	Detail    string
	Path      []string
	ExpiresAt time.Time
}

// Explanation says why a check answers what it answers.
type Explanation struct {
	Decision    Decision
	Legs        []Leg
	WouldChange []string
}

// Explain runs a check and says, leg by leg, what passed and failed, the
// relationship path SpiceDB followed for the human's permission, the expiries
// involved, and what would flip the answer. Whether each leg passed, and the
// decision, come from the same evaluator as Check, at one revision; the
// paths and expiries around them are read for the reader.
func (e *Engine) Explain(ctx context.Context, q Query) (*Explanation, error) {
	ctx, cancel := e.withTimeout(ctx)
	defer cancel()
	if q.Subject.Type != schema.TypeAgent {
		d, err := e.decideUser(ctx, q)
		if err != nil {
			return nil, err
		}
		x := &Explanation{Decision: d}
		path, err := e.trace(ctx, q.Subject, q.Permission, q.Resource, q)
		if err != nil {
			return nil, err
		}
		x.Legs = []Leg{{Name: LegPermission, Passed: d.Allowed, Detail: fmt.Sprintf("%s %s %s on %s", q.Subject, map[bool]string{true: "has", false: "lacks"}[d.Allowed], q.Permission, q.Resource), Path: path}}
		if d.Allowed {
			x.WouldChange = []string{fmt.Sprintf("removing the relationships on the path above, which give %s %s on %s", q.Subject, q.Permission, q.Resource)}
		} else {
			x.WouldChange = []string{fmt.Sprintf("a relationship that gives %s %s on %s", q.Subject, q.Permission, q.Resource)}
		}
		return x, nil
	}
	ev, c, err := e.evaluateQuery(ctx, q, evalMode{explain: true})
	if err != nil {
		return nil, err
	}
	d := ev.Decision
	x := &Explanation{Decision: d}
	if d.Reason == ReasonUnknownSubject {
		x.Legs = []Leg{{Name: LegIdentity, Detail: fmt.Sprintf("%s does not exist", q.Subject)}}
		x.WouldChange = []string{"nothing: agent ids are issued by mandate; provision an agent with POST /v1/agents"}
		return x, nil
	}
	now := e.now()
	var legs []Leg
	if !ev.Leg(LegFreeze).Passed {
		legs = append(legs, Leg{Name: LegFreeze, Detail: "every agent check is denied: the agents are frozen (POST /v1/agents:freeze-all)"})
		x.WouldChange = append(x.WouldChange, "an admin lifting the freeze (POST /v1/agents:unfreeze-all)")
	}
	// Leg 1: every agent of the chain.
	identity := Leg{Name: LegIdentity, Passed: ev.Leg(LegIdentity).Passed, ExpiresAt: c.earliestAgent()}
	for _, l := range c.agents {
		a, err := e.readAgent(ctx, l.id)
		if err != nil {
			return nil, err
		}
		st := a.status(now)
		identity.Path = append(identity.Path, fmt.Sprintf("agent:%s is %s until %s", l.id, st, a.ExpiresAt.Format(time.RFC3339)))
		if st != StatusActive && identity.Detail == "" {
			identity.Detail = fmt.Sprintf("agent:%s is %s", l.id, st)
			switch st {
			case StatusSuspended:
				x.WouldChange = append(x.WouldChange, fmt.Sprintf("resume agent:%s (POST /v1/agents/%s:resume)", l.id, l.id))
			case StatusRevoked:
				x.WouldChange = append(x.WouldChange, fmt.Sprintf("nothing: agent:%s is revoked for good; provision a new agent", l.id))
			case StatusExpired:
				x.WouldChange = append(x.WouldChange, fmt.Sprintf("nothing: agent:%s has expired; provision a new agent", l.id))
			}
		}
	}
	switch {
	case identity.Passed:
		identity.Detail = fmt.Sprintf("the %d agent(s) of the chain are active", len(c.agents))
	case identity.Detail == "":
		identity.Detail = fmt.Sprintf("the chain is not active (%s)", ev.Leg(LegIdentity).Reason)
	}
	// Leg 2: the task.
	t, err := e.readTask(ctx, c.task)
	if err != nil {
		return nil, err
	}
	taskLeg := ev.Leg(LegTask)
	task := Leg{Name: LegTask, Passed: taskLeg.Passed, ExpiresAt: t.ExpiresAt,
		Detail: fmt.Sprintf("task:%s of %s is %s", t.ID, t.Principal, t.Status), Path: []string{fmt.Sprintf("task:%s#open until %s", t.ID, t.ExpiresAt.Format(time.RFC3339))}}
	switch {
	case taskLeg.Reason == ReasonPrincipalSuspended:
		task.Detail = fmt.Sprintf("every agent of %s is suspended", c.principal)
		x.WouldChange = append(x.WouldChange, fmt.Sprintf("resuming the agents of %s (POST /v1/principals/%s:resume-agents)", c.principal, c.principal.ID))
	case !task.Passed:
		x.WouldChange = append(x.WouldChange, fmt.Sprintf("nothing: task:%s is %s; start a new task", t.ID, t.Status))
	}
	// Leg 3: the leaf's grant.
	grantRel := q.Permission + schema.GrantSuffix
	grantLeg := ev.Leg(LegGrant)
	grant := Leg{Name: LegGrant, Passed: grantLeg.Passed}
	leafRef := Ref{Type: schema.TypeAgent, ID: c.agents[0].id}
	for _, h := range []struct {
		sub    Ref
		subRel string
	}{{leafRef, ""}, {Ref{Type: schema.TypeTask, ID: c.task}, "member"}} {
		rels, err := e.sdb.readRels(ctx, &v1.RelationshipFilter{ResourceType: q.Resource.Type, OptionalResourceId: q.Resource.ID, OptionalRelation: grantRel, OptionalSubjectFilter: subjectFilter(h.sub, h.subRel)})
		if err != nil {
			return nil, err
		}
		for _, r := range rels {
			exp, _ := caveatTime(r, "expires_at")
			state := "live"
			if !now.Before(exp) {
				state = "expired"
			} else if grant.Passed && (grant.ExpiresAt.IsZero() || exp.After(grant.ExpiresAt)) {
				grant.ExpiresAt = exp
			}
			if cond := conditionOf(r); cond != nil {
				state += ", if " + cond.describe()
			}
			grant.Path = append(grant.Path, fmt.Sprintf("%s#%s@%s: grant %s, %s until %s", q.Resource, grantRel, relSubject(r), caveatString(r, "grant_id"), state, exp.Format(time.RFC3339)))
		}
	}
	switch grantLeg.Reason {
	case "":
		grant.Detail = fmt.Sprintf("%s or its task holds a live grant of %s on %s", leafRef, q.Permission, q.Resource)
	case ReasonMissingContext:
		grant.Detail = fmt.Sprintf("the %s condition needs context the check did not send: %s", d.Condition, strings.Join(d.MissingContext, ", "))
		x.WouldChange = append(x.WouldChange, fmt.Sprintf("sending %s in the check's context", strings.Join(d.MissingContext, ", ")))
	case ReasonConditionFailed:
		grant.Detail = fmt.Sprintf("the %s condition of the grant does not hold in this context", d.Condition)
		x.WouldChange = append(x.WouldChange, fmt.Sprintf("a context that satisfies the %s condition, or a grant without it", d.Condition))
	default:
		grant.Detail = fmt.Sprintf("neither %s nor its task holds a live grant of %s on %s", leafRef, q.Permission, q.Resource)
		x.WouldChange = append(x.WouldChange, fmt.Sprintf("a grant of %s on %s to %s (POST /v1/grants)", q.Permission, q.Resource, leafRef))
	}
	// Leg 4: the human, with SpiceDB's path, and every ancestor's grant.
	path, err := e.trace(ctx, c.principal, q.Permission, q.Resource, q)
	if err != nil {
		return nil, err
	}
	attLeg := ev.Leg(LegAttenuation)
	attenuation := Leg{Name: LegAttenuation, Passed: attLeg.Passed, Path: path}
	principalHas := len(path) > 0 && !strings.HasPrefix(path[0], "no ")
	if principalHas {
		attenuation.Detail = fmt.Sprintf("%s holds %s on %s", c.principal, q.Permission, q.Resource)
	} else {
		attenuation.Detail = fmt.Sprintf("%s does not hold %s on %s", c.principal, q.Permission, q.Resource)
		x.WouldChange = append(x.WouldChange, fmt.Sprintf("a relationship that gives %s %s on %s", c.principal, q.Permission, q.Resource))
	}
	if attLeg.Reason == ReasonDelegatorLacksPermission || (attLeg.Reason != "" && principalHas) {
		attenuation.Detail += "; an ancestor agent holds no live grant for it"
		x.WouldChange = append(x.WouldChange, fmt.Sprintf("a grant of %s on %s to every ancestor agent of %s", q.Permission, q.Resource, leafRef))
	}
	x.Legs = append(legs, identity, task, grant, attenuation)
	if d.Allowed {
		x.WouldChange = []string{fmt.Sprintf("at %s the answer becomes deny (the earliest expiry it relies on)", d.ValidUntil.Format(time.RFC3339)),
			fmt.Sprintf("completing task:%s, revoking or suspending any agent of the chain, removing the grant, or %s losing %s on %s", c.task, c.principal, q.Permission, q.Resource)}
	}
	return x, nil
}

func (c *chain) earliestAgent() time.Time {
	var t time.Time
	for _, l := range c.agents {
		if t.IsZero() || l.expires.Before(t) {
			t = l.expires
		}
	}
	return t
}

func relSubject(r *v1.Relationship) string {
	s := r.GetSubject().GetObject().GetObjectType() + ":" + r.GetSubject().GetObject().GetObjectId()
	if rel := r.GetSubject().GetOptionalRelation(); rel != "" {
		s += "#" + rel
	}
	return s
}

// trace asks SpiceDB for the path by which a user holds (or lacks) a permission.
func (e *Engine) trace(ctx context.Context, user Ref, perm string, res Ref, q Query) ([]string, error) {
	resp, err := e.checkAfterWrites(ctx, &v1.CheckPermissionRequest{
		Resource: objRef(res), Permission: perm, Subject: subRef(user, ""),
		Context: e.caveatContext(q, e.now()), WithTracing: true,
	})
	if err != nil {
		return nil, err
	}
	if resp.GetPermissionship() != v1.CheckPermissionResponse_PERMISSIONSHIP_HAS_PERMISSION {
		return []string{fmt.Sprintf("no relationship gives %s %s on %s", user, perm, res)}, nil
	}
	var path []string
	walkTrace(resp.GetDebugTrace().GetCheck(), &path)
	if len(path) == 0 {
		path = []string{fmt.Sprintf("%s#%s@%s", res, perm, user)}
	}
	return path, nil
}

// walkTrace follows the branch of a check trace that granted the permission.
func walkTrace(t *v1.CheckDebugTrace, path *[]string) {
	if t == nil || t.GetResult() != v1.CheckDebugTrace_PERMISSIONSHIP_HAS_PERMISSION {
		return
	}
	kind := "relation"
	if t.GetPermissionType() == v1.CheckDebugTrace_PERMISSION_TYPE_PERMISSION {
		kind = "permission"
	}
	*path = append(*path, fmt.Sprintf("%s:%s#%s (%s)", t.GetResource().GetObjectType(), t.GetResource().GetObjectId(), t.GetPermission(), kind))
	for _, sub := range t.GetSubProblems().GetTraces() {
		if sub.GetResult() == v1.CheckDebugTrace_PERMISSIONSHIP_HAS_PERMISSION {
			walkTrace(sub, path)
			return
		}
	}
}

// GrantsHeldBy lists the grants recorded for the given agents and tasks, with
// their current status.
func (e *Engine) GrantsHeldBy(ctx context.Context, holders []Ref) ([]*Grant, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*e.cfg.CallTimeout)
	defer cancel()
	records, err := e.grantRecordsOf(ctx, holders)
	if err != nil {
		return nil, err
	}
	var out []*Grant
	for _, r := range records {
		g, _, err := e.readGrant(ctx, r.GetResource().GetObjectId())
		if err != nil {
			var ee *Error
			if errors.As(err, &ee) && ee.Kind == KindNotFound {
				continue // removed meanwhile
			}
			return nil, err
		}
		out = append(out, g)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out, nil
}

// grantRecordsOf reads the grant records of the holders: one read per
// holder, or, for many holders, one read of every grant record, kept for
// the holders asked about.
func (e *Engine) grantRecordsOf(ctx context.Context, holders []Ref) ([]*v1.Relationship, error) {
	if len(holders) <= bulkAgentReads {
		var out []*v1.Relationship
		for _, h := range holders {
			rels, err := e.sdb.readRels(ctx, &v1.RelationshipFilter{ResourceType: schema.TypeGrant, OptionalRelation: "record",
				OptionalSubjectFilter: &v1.SubjectFilter{SubjectType: h.Type, OptionalSubjectId: h.ID}})
			if err != nil {
				return nil, err
			}
			out = append(out, rels...)
		}
		return out, nil
	}
	all, err := e.sdb.readRels(ctx, &v1.RelationshipFilter{ResourceType: schema.TypeGrant, OptionalRelation: "record"})
	if err != nil {
		return nil, err
	}
	want := make(map[Ref]bool, len(holders))
	for _, h := range holders {
		want[h] = true
	}
	var out []*v1.Relationship
	for _, r := range all {
		if want[Ref{Type: r.GetSubject().GetObject().GetObjectType(), ID: r.GetSubject().GetObject().GetObjectId()}] {
			out = append(out, r)
		}
	}
	return out, nil
}

// standing judges the legs that do not depend on a resource (the freeze,
// identity and task) with the one evaluator, from one bulk check. It returns
// the facts read, the revision they were read at, and whether the agent can
// act at all.
func (e *Engine) standing(ctx context.Context, c *chain, now time.Time) (facts, *v1.Consistency, bool, error) {
	items := standingItems(c, e.caveatContext(Query{}, now))
	bulk, err := e.checkBulkAfterWrites(ctx, items)
	if err != nil {
		return facts{}, nil, false, err
	}
	pairs, err := bulkPairs(bulk, len(items))
	if err != nil {
		return facts{}, nil, false, err
	}
	base := facts{token: bulk.GetCheckedAt().GetToken()}
	base.frozen, base.standing = judgeStanding(c, pairs)
	base.alive = base.standing == ""
	// A probe with every grant held and the human's permission: it allows
	// exactly when the resource-independent legs pass.
	probe := base
	probe.principal = v1.CheckPermissionResponse_PERMISSIONSHIP_HAS_PERMISSION
	probe.holders = make([]holderFact, len(c.agents)+1)
	for i := range probe.holders {
		probe.holders[i].state = grantHeld
	}
	ev := evaluate(c, now, &probe, evalMode{})
	at := &v1.Consistency{Requirement: &v1.Consistency_AtExactSnapshot{AtExactSnapshot: bulk.GetCheckedAt()}}
	return base, at, ev.Decision.Allowed, nil
}

// AgentActive reports whether the agent can act now: the agents are not
// frozen, and it and every agent above it are alive on an open task. It is
// the evaluator's verdict on the legs that do not depend on a resource.
func (e *Engine) AgentActive(ctx context.Context, agentID string) (bool, error) {
	c, err := e.chainOf(ctx, agentID)
	if err != nil {
		return false, err
	}
	_, _, ok, err := e.standing(ctx, c, e.now())
	return ok, err
}
