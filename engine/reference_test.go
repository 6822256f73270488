package engine

// The decision path as it was before the shared evaluator and the one-call
// bulk check (commit 27ecf30): a reference the differential test compares
// the current path with, over randomly generated agent states. Test-only.

import (
	"context"
	"sync"
	"time"

	v1 "github.com/authzed/authzed-go/proto/authzed/api/v1"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/mandate-dev/mandate/schema"
)

// ReferenceDecide decides an agent check the way the engine did before the
// shared evaluator.
func ReferenceDecide(e *Engine, ctx context.Context, q Query) (Decision, error) {
	ctx, cancel := e.withTimeout(ctx)
	defer cancel()
	return e.referenceDecideAgent(ctx, q)
}

// refHolderGrants is what one holder (an agent of the chain, or the task) has
// for the queried permission.
type refHolderGrants struct {
	ids     []string
	expires time.Time // the latest expiry among the grants that hold
	// conditioned is the holder's unexpired conditioned grant, if any; it
	// holds only if SpiceDB says its condition does.
	conditioned *v1.Relationship
	// When the conditioned grant does not hold: the condition that failed,
	// or the context it needs.
	failed  string
	missing []string
}

// refDecideOpts adjusts decideAgent for callers other than Check.
type refDecideOpts struct {
	// conditionsHold treats conditioned grants as held, for the delegation
	// check: conditions are evaluated again on every check of the delegate.
	conditionsHold bool
}

// decideAgent runs the four legs for an agent:
//  1. identity: the agent and every ancestor exist and none is expired, revoked or suspended;
//  2. task: the task exists and is neither completed nor expired, and its
//     principal's agents are not suspended;
//  3. grant: a live grant of exactly this permission on this resource is held
//     by the agent or its task, and its condition, if any, holds in this context;
//  4. attenuation: the principal holds the permission now, and every ancestor holds a grant for it too.
//
// Before all of them, the global freeze denies every agent.
//
// Expiry is decided here, from the clock, and again inside SpiceDB through the
// lifetime caveats with `now`; it never waits for a new SpiceDB revision.
// Everything else is read at full consistency, in parallel.
func (e *Engine) referenceDecideAgent(ctx context.Context, q Query, opts ...refDecideOpts) (Decision, error) {
	var opt refDecideOpts
	if len(opts) > 0 {
		opt = opts[0]
	}
	c, err := e.chainOf(ctx, q.Subject.ID)
	if err != nil {
		if ee, ok := err.(*Error); ok && ee.Kind == KindNotFound {
			return Decision{Reason: ReasonUnknownSubject, Chain: []Ref{q.Subject}}, nil
		}
		return Decision{}, err
	}
	now := e.now()
	d := Decision{Principal: c.principal, Task: Ref{Type: schema.TypeTask, ID: c.task}, Chain: c.refs()}
	for _, l := range c.agents {
		if !now.Before(l.expires) {
			d.Reason = ReasonAgentExpired
			return d, nil
		}
	}
	if !now.Before(c.taskExpires) {
		d.Reason = ReasonTaskExpired
		return d, nil
	}

	cctx := e.caveatContext(q, now)
	agentRef := Ref{Type: schema.TypeAgent, ID: q.Subject.ID}
	grantRel := q.Permission + schema.GrantSuffix

	var (
		wg        sync.WaitGroup
		bulk      *v1.CheckBulkPermissionsResponse
		bulkErr   error
		grants    = make([]refHolderGrants, len(c.agents)+1) // per agent, then the task
		grantErrs = make([]error, len(c.agents)+1)
		// boundary is when an hours condition that was read changes its answer.
		boundary time.Time
		bmu      sync.Mutex
	)
	wg.Add(1)
	go func() {
		defer wg.Done()
		bulk, bulkErr = e.sdb.Permissions.CheckBulkPermissions(ctx, &v1.CheckBulkPermissionsRequest{
			Consistency: fullyConsistent,
			Items: []*v1.CheckBulkPermissionsRequestItem{
				{Resource: objRef(agentRef), Permission: "chain_alive", Subject: subRef(agentRef, ""), Context: cctx},
				{Resource: objRef(q.Resource), Permission: q.Permission, Subject: subRef(c.principal, ""), Context: cctx},
				{Resource: objRef(MandateObject), Permission: "agents_frozen", Subject: subRef(agentRef, "")},
			},
		})
	}()
	readGrants := func(i int, sub Ref, subRel string) {
		defer wg.Done()
		rels, err := e.sdb.readRels(ctx, &v1.RelationshipFilter{
			ResourceType: q.Resource.Type, OptionalResourceId: q.Resource.ID, OptionalRelation: grantRel,
			OptionalSubjectFilter: subjectFilter(sub, subRel),
		})
		if err != nil {
			grantErrs[i] = err
			return
		}
		for _, r := range rels {
			// Only a well-formed, unexpired grant counts. Anything else denies.
			cav := r.GetOptionalCaveat().GetCaveatName()
			if cav != schema.CaveatGrantLifetime && !schema.IsCondition(cav) {
				continue
			}
			exp, ok := caveatTime(r, "expires_at")
			if !ok || !now.Before(exp) {
				continue
			}
			if b := hoursBoundary(r, now); !b.IsZero() {
				bmu.Lock()
				if boundary.IsZero() || b.Before(boundary) {
					boundary = b
				}
				bmu.Unlock()
			}
			if cav != schema.CaveatGrantLifetime && !opt.conditionsHold {
				grants[i].conditioned = r
				continue
			}
			grants[i].ids = append(grants[i].ids, caveatString(r, "grant_id"))
			if exp.After(grants[i].expires) {
				grants[i].expires = exp
			}
		}
	}
	for i, l := range c.agents {
		wg.Add(1)
		go readGrants(i, Ref{Type: schema.TypeAgent, ID: l.id}, "")
	}
	wg.Add(1)
	go readGrants(len(c.agents), d.Task, "member")
	wg.Wait()

	if bulkErr != nil {
		return Decision{}, backendErr("CheckBulkPermissions", bulkErr)
	}
	for _, err := range grantErrs {
		if err != nil {
			return Decision{}, err
		}
	}
	pairs, err := bulkPairs(bulk, 3)
	if err != nil {
		return Decision{}, err
	}
	d.Token = bulk.GetCheckedAt().GetToken()
	alive, principal, frozen := pairs[0], pairs[1], pairs[2]
	// A decision that read an hours condition is recomputed when it flips.
	d.ValidUntil = boundary

	if frozen.GetPermissionship() != v1.CheckPermissionResponse_PERMISSIONSHIP_NO_PERMISSION {
		d.Reason = ReasonAgentsFrozen
		return d, nil
	}
	// Legs 1 and 2.
	if alive.GetPermissionship() != v1.CheckPermissionResponse_PERMISSIONSHIP_HAS_PERMISSION {
		d.Reason, err = e.refDiagnoseChain(ctx, c)
		return d, err
	}
	// Conditions, evaluated by SpiceDB with the caller's context.
	if err := e.refEvaluateConditions(ctx, q, grantRel, c, grants, cctx); err != nil {
		return Decision{}, err
	}
	// Leg 3.
	taskGrants := grants[len(c.agents)]
	held := func(i int) (refHolderGrants, bool) {
		g := grants[i]
		if len(taskGrants.ids) > 0 {
			g.ids = append(append([]string(nil), g.ids...), taskGrants.ids...)
			if taskGrants.expires.After(g.expires) {
				g.expires = taskGrants.expires
			}
		}
		return g, len(g.ids) > 0
	}
	// notHeld names why holder i holds no grant: a condition, or none at all.
	notHeld := func(i int, none Reason) {
		for _, g := range []refHolderGrants{grants[i], taskGrants} {
			if len(g.missing) > 0 {
				d.Reason, d.MissingContext, d.Condition = ReasonMissingContext, g.missing, g.failed
				return
			}
		}
		for _, g := range []refHolderGrants{grants[i], taskGrants} {
			if g.failed != "" {
				d.Reason, d.Condition = ReasonConditionFailed, g.failed
				return
			}
		}
		d.Reason = none
	}
	leaf, ok := held(0)
	if !ok {
		notHeld(0, ReasonNoGrant)
		return d, nil
	}
	// Leg 4.
	switch principal.GetPermissionship() {
	case v1.CheckPermissionResponse_PERMISSIONSHIP_HAS_PERMISSION:
	case v1.CheckPermissionResponse_PERMISSIONSHIP_CONDITIONAL_PERMISSION:
		d.Reason, d.MissingContext = ReasonMissingContext, principal.GetPartialCaveatInfo().GetMissingRequiredContext()
		return d, nil
	default:
		d.Reason = ReasonPrincipalLacksPermission
		return d, nil
	}
	validUntil := c.earliest()
	if leaf.expires.Before(validUntil) {
		validUntil = leaf.expires
	}
	used := leaf.ids
	for i := 1; i < len(c.agents); i++ {
		g, ok := held(i)
		if !ok {
			notHeld(i, ReasonDelegatorLacksPermission)
			return d, nil
		}
		if g.expires.Before(validUntil) {
			validUntil = g.expires
		}
		used = append(used, g.ids...)
	}
	if !boundary.IsZero() && boundary.Before(validUntil) {
		validUntil = boundary
	}
	d.Allowed, d.Reason, d.ValidUntil, d.Grants = true, ReasonAllowed, validUntil, dedupe(used)
	return d, nil
}

// evaluateConditions asks SpiceDB, in one call, whether each holder's
// conditioned grant holds in this context. A grant that holds joins the
// holder's grants; one that does not records the failed condition or the
// missing context.
func (e *Engine) refEvaluateConditions(ctx context.Context, q Query, grantRel string, c *chain, grants []refHolderGrants, cctx *structpb.Struct) error {
	var items []*v1.CheckBulkPermissionsRequestItem
	var idx []int
	for i := range grants {
		if grants[i].conditioned == nil {
			continue
		}
		sub := subRef(Ref{Type: schema.TypeTask, ID: c.task}, "member")
		if i < len(c.agents) {
			sub = subRef(Ref{Type: schema.TypeAgent, ID: c.agents[i].id}, "")
		}
		items = append(items, &v1.CheckBulkPermissionsRequestItem{Resource: objRef(q.Resource), Permission: grantRel, Subject: sub, Context: cctx})
		idx = append(idx, i)
	}
	if len(items) == 0 {
		return nil
	}
	bulk, err := e.sdb.Permissions.CheckBulkPermissions(ctx, &v1.CheckBulkPermissionsRequest{Consistency: fullyConsistent, Items: items})
	if err != nil {
		return backendErr("CheckBulkPermissions", err)
	}
	pairs, err := bulkPairs(bulk, len(items))
	if err != nil {
		return err
	}
	for k, p := range pairs {
		g := &grants[idx[k]]
		cond := conditionName(g.conditioned.GetOptionalCaveat().GetCaveatName())
		switch p.GetPermissionship() {
		case v1.CheckPermissionResponse_PERMISSIONSHIP_HAS_PERMISSION:
			exp, _ := caveatTime(g.conditioned, "expires_at")
			g.ids = append(g.ids, caveatString(g.conditioned, "grant_id"))
			if exp.After(g.expires) {
				g.expires = exp
			}
		case v1.CheckPermissionResponse_PERMISSIONSHIP_CONDITIONAL_PERMISSION:
			g.failed, g.missing = cond, p.GetPartialCaveatInfo().GetMissingRequiredContext()
			if len(g.missing) == 0 {
				// Conditional without naming what is missing: still a deny.
				g.missing = []string{"unknown"}
			}
		default:
			g.failed = cond
		}
	}
	return nil
}

// diagnoseChain finds which agent or task made chain_alive fail, leaf first.
func (e *Engine) refDiagnoseChain(ctx context.Context, c *chain) (Reason, error) {
	now := e.now()
	for _, l := range c.agents {
		a, err := e.readAgent(ctx, l.id)
		if err != nil {
			return "", err
		}
		switch a.status(now) {
		case StatusRevoked:
			return ReasonAgentRevoked, nil
		case StatusSuspended:
			return ReasonAgentSuspended, nil
		case StatusExpired:
			return ReasonAgentExpired, nil
		}
	}
	t, err := e.readTask(ctx, c.task)
	if err != nil {
		return "", err
	}
	switch t.Status {
	case StatusCompleted:
		return ReasonTaskCompleted, nil
	case StatusExpired:
		return ReasonTaskExpired, nil
	}
	suspended, err := e.sdb.readRels(ctx, &v1.RelationshipFilter{ResourceType: c.principal.Type, OptionalResourceId: c.principal.ID, OptionalRelation: "agents_suspended"})
	if err != nil {
		return "", err
	}
	if len(suspended) > 0 {
		return ReasonPrincipalSuspended, nil
	}
	// SpiceDB said no, yet every record looks alive: a write raced the check.
	// The deny stands.
	return ReasonChainInactive, nil
}
