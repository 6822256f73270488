package engine

import (
	"context"
	"fmt"
	"sync"
	"time"

	v1 "github.com/authzed/authzed-go/proto/authzed/api/v1"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/mandate-dev/mandate/schema"
)

// This file is the one evaluator of an agent's legs. Check, CheckBulk,
// Explain, the access listing and search all judge with evaluate(); they
// differ only in how they gather the facts it judges, and every gatherer
// reads its facts at one SpiceDB revision.

// grantState is what one holder (an agent of the chain, or the task) has
// for the queried permission on the queried resource. A holder has at most
// one grant of a permission on a resource: re-granting replaces.
type grantState int

const (
	// grantNone: no live grant.
	grantNone grantState = iota
	// grantHeld: a live grant, whose condition (if any) holds.
	grantHeld
	// grantMissing: a live conditioned grant that needs context the check did not send.
	grantMissing
	// grantFailed: a live conditioned grant whose condition is false.
	grantFailed
)

// holderFact is one holder's grant, as SpiceDB answered for it.
type holderFact struct {
	state grantState
	// id and expires describe the live grant, once read. Zero until then.
	id      string
	expires time.Time
	// condition names the grant's condition.
	condition string
	// missing is the context a conditioned grant needs (grantMissing).
	missing []string
}

// live reports whether the holder has a live grant at all, held or not.
func (h holderFact) live() bool { return h.state != grantNone }

// facts are SpiceDB's answers about one agent and one permission on one
// resource, all taken at one revision (token).
type facts struct {
	token  string
	frozen bool
	// alive: every agent of the chain enabled and not suspended, the task
	// open and its principal's agents not suspended (chain_alive).
	alive bool
	// standing names why the chain is not alive (identity or task leg).
	standing Reason
	// principal is the human's permissionship on the resource now.
	principal        v1.CheckPermissionResponse_Permissionship
	principalMissing []string
	// holders are the agents of the chain, leaf first, then the task.
	holders []holderFact
	// boundary is when an hours condition that was read changes its answer.
	boundary time.Time
}

// LegResult is the verdict of one leg.
type LegResult struct {
	Name   string
	Passed bool
	// Reason is what the leg answers when it fails.
	Reason Reason
}

// Evaluation is the verdict of every leg and the decision they make.
type Evaluation struct {
	Decision Decision
	// Legs are freeze, identity, task, grant and attenuation, in that order.
	// A leg not judged (nothing was gathered past a lapsed lifetime) fails
	// with an empty reason.
	Legs []LegResult
}

// Leg returns the verdict of the named leg.
func (x *Evaluation) Leg(name string) LegResult {
	for _, l := range x.Legs {
		if l.Name == name {
			return l
		}
	}
	return LegResult{Name: name}
}

// evalMode says what a caller of evaluate needs.
type evalMode struct {
	// conditionsHold counts a live conditioned grant as held whatever the
	// context: for the delegation check (a child's checks evaluate the
	// parent's condition again) and for the access listing (which lists
	// conditions instead of evaluating them).
	conditionsHold bool
	// explain gathers every fact, even where the decision is already known.
	explain bool
}

// clockLapsed is the reason the clock alone denies the chain for, or "".
// Expiry is decided from mandate's clock first, and never waits for SpiceDB
// to notice a new revision.
func (c *chain) clockLapsed(now time.Time) Reason {
	for _, l := range c.agents {
		if !now.Before(l.expires) {
			return ReasonAgentExpired
		}
	}
	if !now.Before(c.taskExpires) {
		return ReasonTaskExpired
	}
	return ""
}

// evaluate judges the legs of an agent check from facts gathered at one
// revision. f is nil when nothing was gathered because the clock already
// denies.
//
//  0. freeze: the agents are not frozen;
//  1. identity: every agent of the chain exists, is unexpired, enabled and not suspended;
//  2. task: the task is open and unexpired, and its human's agents are not suspended;
//  3. grant: the agent or its task holds a live grant whose condition holds;
//  4. attenuation: the human holds the permission now, and every ancestor
//     agent (or the task) holds a live grant for it too.
//
// The decision names the first leg that failed, in the order: lapsed
// lifetimes, freeze, identity and task, the leaf's grant, the human, the
// ancestors' grants.
func evaluate(c *chain, now time.Time, f *facts, mode evalMode) Evaluation {
	d := Decision{Principal: c.principal, Task: Ref{Type: schema.TypeTask, ID: c.task}, Chain: c.refs()}
	legs := []LegResult{{Name: LegFreeze}, {Name: LegIdentity}, {Name: LegTask}, {Name: LegGrant}, {Name: LegAttenuation}}
	const (
		freeze = iota
		identity
		task
		grant
		attenuation
	)
	var reason Reason // the first failure, in decision order
	fail := func(leg int, r Reason) {
		if legs[leg].Reason == "" {
			legs[leg].Reason = r
		}
		if reason == "" {
			reason = r
		}
	}
	if lapsed := c.clockLapsed(now); lapsed != "" {
		if lapsed == ReasonAgentExpired {
			fail(identity, lapsed)
		} else {
			fail(task, lapsed)
		}
	}
	if f == nil {
		d.Reason = reason
		return Evaluation{Decision: d, Legs: legs}
	}
	d.Token = f.token
	if f.frozen {
		fail(freeze, ReasonAgentsFrozen)
	}
	if !f.alive {
		standing := f.standing
		if standing == "" {
			standing = ReasonChainInactive
		}
		if standing.Leg() == LegTask {
			fail(task, standing)
		} else {
			fail(identity, standing)
		}
	}

	// Grants, level by level: an agent's own grant or its task's.
	taskFact := f.holders[len(f.holders)-1]
	type level struct {
		held    bool
		ids     []string
		expires time.Time // the latest expiry among the grants that hold
	}
	counts := func(h holderFact) bool {
		return h.state == grantHeld || (mode.conditionsHold && h.live())
	}
	levelOf := func(i int) level {
		var l level
		for _, h := range []holderFact{f.holders[i], taskFact} {
			if !counts(h) {
				continue
			}
			l.held = true
			if h.id != "" {
				l.ids = append(l.ids, h.id)
			}
			if h.expires.After(l.expires) {
				l.expires = h.expires
			}
		}
		return l
	}
	// notHeld is why level i holds no grant: a condition, or none at all.
	notHeld := func(i int, none Reason) (Reason, string, []string) {
		for _, h := range []holderFact{f.holders[i], taskFact} {
			if h.state == grantMissing {
				return ReasonMissingContext, h.condition, h.missing
			}
		}
		for _, h := range []holderFact{f.holders[i], taskFact} {
			if h.state == grantFailed {
				return ReasonConditionFailed, h.condition, nil
			}
		}
		return none, "", nil
	}
	levels := make([]level, len(c.agents))
	for i := range c.agents {
		levels[i] = levelOf(i)
	}
	var condition string
	var missing []string
	if !levels[0].held {
		r, cond, miss := notHeld(0, ReasonNoGrant)
		legs[grant].Reason = r
		if reason == "" {
			reason, condition, missing = r, cond, miss
		}
	}
	switch f.principal {
	case v1.CheckPermissionResponse_PERMISSIONSHIP_HAS_PERMISSION:
	case v1.CheckPermissionResponse_PERMISSIONSHIP_CONDITIONAL_PERMISSION:
		miss := f.principalMissing
		if len(miss) == 0 {
			miss = []string{"unknown"}
		}
		legs[attenuation].Reason = ReasonMissingContext
		if reason == "" {
			reason, missing = ReasonMissingContext, miss
		}
	default:
		fail(attenuation, ReasonPrincipalLacksPermission)
	}
	for i := 1; i < len(levels); i++ {
		if levels[i].held {
			continue
		}
		r, cond, miss := notHeld(i, ReasonDelegatorLacksPermission)
		if legs[attenuation].Reason == "" {
			legs[attenuation].Reason = r
		}
		if reason == "" {
			reason, condition, missing = r, cond, miss
		}
		break
	}
	for i := range legs {
		legs[i].Passed = legs[i].Reason == ""
	}
	d.ValidUntil = f.boundary
	if reason != "" {
		d.Reason, d.Condition, d.MissingContext = reason, condition, missing
		return Evaluation{Decision: d, Legs: legs}
	}
	validUntil := c.earliest()
	var used []string
	for _, l := range levels {
		if l.expires.Before(validUntil) {
			validUntil = l.expires
		}
		used = append(used, l.ids...)
	}
	if !f.boundary.IsZero() && f.boundary.Before(validUntil) {
		validUntil = f.boundary
	}
	d.Allowed, d.Reason, d.ValidUntil, d.Grants = true, ReasonAllowed, validUntil, dedupe(used)
	return Evaluation{Decision: d, Legs: legs}
}

// ---- gathering the facts of one check --------------------------------------

// checkBulkAfterWrites is a fully consistent bulk check that is never
// answered from before a write this engine knows of (see afterWrites).
func (e *Engine) checkBulkAfterWrites(ctx context.Context, items []*v1.CheckBulkPermissionsRequestItem) (*v1.CheckBulkPermissionsResponse, error) {
	return afterWrites(e, "CheckBulkPermissions", func() (*v1.CheckBulkPermissionsResponse, error) {
		return e.sdb.Permissions.CheckBulkPermissions(ctx, &v1.CheckBulkPermissionsRequest{Consistency: fullyConsistent, Items: items})
	})
}

// checkAfterWrites is the same for one check.
func (e *Engine) checkAfterWrites(ctx context.Context, req *v1.CheckPermissionRequest) (*v1.CheckPermissionResponse, error) {
	req.Consistency = fullyConsistent
	return afterWrites(e, "CheckPermission", func() (*v1.CheckPermissionResponse, error) {
		return e.sdb.Permissions.CheckPermission(ctx, req)
	})
}

// afterWrites makes a fully consistent call and makes sure its answer is at
// or after every write this engine knew of before calling (see revision.go):
// an answer read before one is asked again, once; a call for the head
// revision that starts after the first answer came back starts after the
// write committed. Should the second answer be older still, the result is an
// error, never an answer from before the write.
func afterWrites[R interface{ GetCheckedAt() *v1.ZedToken }](e *Engine, method string, call func() (R, error)) (R, error) {
	w := e.lastWrite.Load()
	for attempt := 0; ; attempt++ {
		resp, err := call()
		if err != nil {
			return resp, backendErr(method, err)
		}
		if !readBefore(resp.GetCheckedAt().GetToken(), w) {
			return resp, nil
		}
		e.staleReads.Add(1)
		if attempt == 1 {
			var zero R
			return zero, &Error{Kind: KindUnavailable, Msg: "authorization backend unavailable",
				Err: fmt.Errorf("%w: SpiceDB answered %s at full consistency twice at a revision before write %s", ErrUnavailable, method, w.token)}
		}
	}
}

// holderSubject is the subject of holder i of chain c: agent i, or the task's members.
func (c *chain) holderSubject(i int) (Ref, string) {
	if i < len(c.agents) {
		return Ref{Type: schema.TypeAgent, ID: c.agents[i].id}, ""
	}
	return Ref{Type: schema.TypeTask, ID: c.task}, "member"
}

// gather asks SpiceDB about one agent check. The common case is one call, a
// CheckBulkPermissions at full consistency that carries every leg: the
// chain, the human's permission, the freeze, and the grant relation for each
// holder (evaluated by SpiceDB with `now` and the caller's context, so an
// expired grant or a false condition does not hold). A second call, at the
// first one's exact revision, follows only when it is needed:
//   - an allow reads the grants it relied on, for their ids (audit, the
//     unused-grants report) and expiries (how long the answer may be cached);
//   - a grant that does not hold on a relation that accepts conditions is
//     read, to name the condition;
//
// The chain is judged from direct relationships (standingItems), so a deny
// on it names its reason from the same call.
// A sub-agent's allow reads one grant per holder that relied on, in parallel.
func (e *Engine) gather(ctx context.Context, q Query, c *chain, now time.Time, mode evalMode) (*facts, error) {
	cctx := e.caveatContext(q, now)
	grantRel := q.Permission + schema.GrantSuffix
	nh := len(c.agents) + 1
	standing := standingItems(c, cctx)
	ns := len(standing)
	items := make([]*v1.CheckBulkPermissionsRequestItem, 0, ns+1+nh)
	items = append(items, standing...)
	items = append(items, &v1.CheckBulkPermissionsRequestItem{Resource: objRef(q.Resource), Permission: q.Permission, Subject: subRef(c.principal, ""), Context: cctx})
	for i := 0; i < nh; i++ {
		sub, subRel := c.holderSubject(i)
		items = append(items, &v1.CheckBulkPermissionsRequestItem{Resource: objRef(q.Resource), Permission: grantRel, Subject: subRef(sub, subRel), Context: cctx})
	}
	bulk, err := e.checkBulkAfterWrites(ctx, items)
	if err != nil {
		return nil, err
	}
	pairs, err := bulkPairs(bulk, len(items))
	if err != nil {
		return nil, err
	}
	f := &facts{
		token:            bulk.GetCheckedAt().GetToken(),
		principal:        pairs[ns].GetPermissionship(),
		principalMissing: pairs[ns].GetPartialCaveatInfo().GetMissingRequiredContext(),
		holders:          make([]holderFact, nh),
	}
	f.frozen, f.standing = judgeStanding(c, pairs[:ns])
	f.alive = f.standing == ""
	if f.token == "" {
		return nil, &Error{Kind: KindInternal, Msg: "internal error", Err: errorf("CheckBulkPermissions returned no revision")}
	}
	for i := 0; i < nh; i++ {
		p := pairs[ns+1+i]
		switch p.GetPermissionship() {
		case v1.CheckPermissionResponse_PERMISSIONSHIP_HAS_PERMISSION:
			f.holders[i].state = grantHeld
		case v1.CheckPermissionResponse_PERMISSIONSHIP_CONDITIONAL_PERMISSION:
			f.holders[i].state = grantMissing
			f.holders[i].missing = p.GetPartialCaveatInfo().GetMissingRequiredContext()
			if len(f.holders[i].missing) == 0 {
				// Conditional without naming what is missing: still a deny.
				f.holders[i].missing = []string{"unknown"}
			}
		}
	}
	at := &v1.Consistency{Requirement: &v1.Consistency_AtExactSnapshot{AtExactSnapshot: bulk.GetCheckedAt()}}

	// Which holders to read, and whether to diagnose the chain.
	read := make([]bool, nh)
	info := e.Schema()
	conditionable := func(i int) bool {
		typ := schema.TypeAgent
		if i == nh-1 {
			typ = schema.TypeTask
		}
		return len(info.GrantConditions(q.Resource.Type, q.Permission, typ)) > 0
	}
	task := nh - 1
	switch {
	case mode.explain:
		for i := range read {
			read[i] = true
		}
	case mode.conditionsHold:
		// A live conditioned grant counts whatever SpiceDB said of its
		// condition: only a read finds one SpiceDB called false.
		for i, h := range f.holders {
			read[i] = h.state != grantNone || conditionable(i)
		}
	default:
		held := func(i int) bool { return f.holders[i].state == grantHeld || f.holders[task].state == grantHeld }
		allowable := f.alive && !f.frozen && f.principal == v1.CheckPermissionResponse_PERMISSIONSHIP_HAS_PERMISSION
		for i := 0; i < task; i++ {
			allowable = allowable && held(i)
		}
		if allowable {
			// Read what the allow relies on.
			for i, h := range f.holders {
				read[i] = h.state == grantHeld
			}
			break
		}
		if !f.alive || f.frozen {
			break // the grants do not decide this deny
		}
		// Name the condition of the first level without a grant, if any.
		for i := 0; i < task; i++ {
			if held(i) {
				continue
			}
			for _, j := range []int{i, task} {
				read[j] = f.holders[j].state == grantMissing || conditionable(j)
			}
			break
		}
	}
	var (
		wg      sync.WaitGroup
		mu      sync.Mutex
		firstEr error
	)
	setErr := func(err error) {
		mu.Lock()
		if firstEr == nil {
			firstEr = err
		}
		mu.Unlock()
	}
	for i := range read {
		if !read[i] {
			continue
		}
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			sub, subRel := c.holderSubject(i)
			rels, err := e.readRelsAtConsistency(ctx, at, &v1.RelationshipFilter{
				ResourceType: q.Resource.Type, OptionalResourceId: q.Resource.ID, OptionalRelation: grantRel,
				OptionalSubjectFilter: subjectFilter(sub, subRel),
			})
			if err != nil {
				setErr(err)
				return
			}
			b := e.applyGrantRead(&f.holders[i], rels, now)
			if !b.IsZero() {
				mu.Lock()
				if f.boundary.IsZero() || b.Before(f.boundary) {
					f.boundary = b
				}
				mu.Unlock()
			}
		}(i)
	}
	wg.Wait()
	if firstEr != nil {
		return nil, firstEr
	}
	return f, nil
}

// applyGrantRead completes a holder's fact from its grant relationship, read
// at the same revision as the bulk check, and returns the hours boundary the
// grant brings. Only a well-formed, unexpired grant counts.
func (e *Engine) applyGrantRead(h *holderFact, rels []*v1.Relationship, now time.Time) time.Time {
	var boundary time.Time
	found := false
	for _, r := range rels {
		cav := r.GetOptionalCaveat().GetCaveatName()
		if cav != schema.CaveatGrantLifetime && !schema.IsCondition(cav) {
			continue
		}
		exp, ok := caveatTime(r, "expires_at")
		if !ok || !now.Before(exp) {
			continue
		}
		found = true
		h.id, h.expires = caveatString(r, "grant_id"), exp
		if cond := conditionOf(r); cond != nil {
			h.condition = cond.Name
			if h.state == grantNone {
				// SpiceDB evaluated the condition, with this context, as false.
				h.state = grantFailed
			}
		}
		boundary = hoursBoundary(r, now)
	}
	if !found && h.state != grantNone {
		// SpiceDB said a grant holds, yet at the same revision none is live
		// by mandate's clock: the clock decides, and nothing is held.
		*h = holderFact{}
	}
	return boundary
}

// standingItems are the bulk-check items of the legs that do not depend on
// a resource: the freeze, then for every agent of the chain (leaf first)
// whether it is enabled (unrevoked and, by its lifetime caveat, unexpired)
// and whether it is suspended, whether the task is open, and whether the
// human's agents are suspended. Each is one direct relationship: the chain's
// structure (parents, task, human) comes from the agent's lineage, written
// once when it was created, so SpiceDB need not walk chain_alive's arrows.
// chain_alive in the schema is the same rule, for zed and for reviewers.
func standingItems(c *chain, cctx *structpb.Struct) []*v1.CheckBulkPermissionsRequestItem {
	leaf := subRef(Ref{Type: schema.TypeAgent, ID: c.agents[0].id}, "")
	items := make([]*v1.CheckBulkPermissionsRequestItem, 0, 2*len(c.agents)+3)
	add := func(res Ref, rel string, ctx *structpb.Struct) {
		items = append(items, &v1.CheckBulkPermissionsRequestItem{Resource: objRef(res), Permission: rel, Subject: leaf, Context: ctx})
	}
	add(MandateObject, "agents_frozen", nil)
	for _, l := range c.agents {
		a := Ref{Type: schema.TypeAgent, ID: l.id}
		add(a, "enabled", cctx)
		add(a, "suspended", nil)
	}
	add(Ref{Type: schema.TypeTask, ID: c.task}, "open", cctx)
	add(c.principal, "agents_suspended", nil)
	return items
}

// judgeStanding reads the answers to standingItems: whether the agents are
// frozen, and the first reason the chain cannot act ("" when it can). Only
// a plain yes is a yes where a yes lets the agent act, and only a plain no
// is a no where a yes stops it: anything else fails closed.
func judgeStanding(c *chain, pairs []*v1.CheckBulkPermissionsResponseItem) (frozen bool, why Reason) {
	yes := func(i int) bool {
		return pairs[i].GetPermissionship() == v1.CheckPermissionResponse_PERMISSIONSHIP_HAS_PERMISSION
	}
	no := func(i int) bool {
		return pairs[i].GetPermissionship() == v1.CheckPermissionResponse_PERMISSIONSHIP_NO_PERMISSION
	}
	frozen = !no(0)
	for i := range c.agents {
		switch {
		case !yes(1 + 2*i):
			return frozen, ReasonAgentRevoked
		case !no(2 + 2*i):
			return frozen, ReasonAgentSuspended
		}
	}
	n := 1 + 2*len(c.agents)
	switch {
	case !yes(n):
		return frozen, ReasonTaskCompleted
	case !no(n + 1):
		return frozen, ReasonPrincipalSuspended
	}
	return frozen, ""
}

// evaluateQuery gathers and judges one agent check. Every consumer of the
// four legs (Decide, Explain, delegation) goes through here.
func (e *Engine) evaluateQuery(ctx context.Context, q Query, mode evalMode) (*Evaluation, *chain, error) {
	c, err := e.chainOf(ctx, q.Subject.ID)
	if err != nil {
		if ee, ok := err.(*Error); ok && ee.Kind == KindNotFound {
			x := &Evaluation{Decision: Decision{Reason: ReasonUnknownSubject, Chain: []Ref{q.Subject}},
				Legs: []LegResult{{Name: LegFreeze}, {Name: LegIdentity, Reason: ReasonUnknownSubject}, {Name: LegTask}, {Name: LegGrant}, {Name: LegAttenuation}}}
			return x, nil, nil
		}
		return nil, nil, err
	}
	if q.TokenChain != nil && !c.named(q.TokenChain, q.TokenTask) {
		x := &Evaluation{Decision: Decision{Reason: ReasonChainMismatch, Principal: c.principal, Task: Ref{Type: schema.TypeTask, ID: c.task}, Chain: c.refs()},
			Legs: []LegResult{{Name: LegFreeze}, {Name: LegIdentity, Reason: ReasonChainMismatch}, {Name: LegTask}, {Name: LegGrant}, {Name: LegAttenuation}}}
		return x, c, nil
	}
	now := e.now()
	var f *facts
	if c.clockLapsed(now) == "" || mode.explain {
		if f, err = e.gather(ctx, q, c, now, mode); err != nil {
			return nil, nil, err
		}
	}
	x := evaluate(c, now, f, mode)
	return &x, c, nil
}
