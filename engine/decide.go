package engine

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"time"

	v1 "github.com/authzed/authzed-go/proto/authzed/api/v1"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/mandate-dev/mandate/engine/bounds"
	"github.com/mandate-dev/mandate/schema"
)

const (
	reservedContextNow = "now"
	maxContextFields   = 64
)

// reservedContext are the parameters of mandate's core caveats. A caller
// cannot supply them: "now" is mandate's clock, the others come from the
// stored relationships.
var reservedContext = []string{reservedContextNow, "expires_at", "grant_id", "created_at", "note", "target",
	"allowed_cidrs", "time_zone", "start_minute", "end_minute", "max_risk", "required_environment"}

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
	c := &chain{task: a.Task, taskExpires: a.lineage.TaskExpires, principal: a.lineage.Principal, bounds: a.lineage.Bounds}
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

// ---- checks --------------------------------------------------------------

// ValidateQuery parses and checks a query's fields against the schema.
func (e *Engine) ValidateQuery(ctx context.Context, subject, permission, resource string, qctx *structpb.Struct) (Query, error) {
	sub, err := ParseRef("subject", subject)
	if err != nil {
		return Query{}, err
	}
	res, err := ParseRef("resource", resource)
	if err != nil {
		return Query{}, err
	}
	if sub.Type == schema.TypeTask || sub.Type == schema.TypeGrant {
		return Query{}, invalid("subject", "type %q cannot be a subject; check an agent or a user", sub.Type)
	}
	if err := e.requireType(ctx, "subject", sub); err != nil {
		return Query{}, err
	}
	if err := e.requireType(ctx, "resource", res); err != nil {
		return Query{}, err
	}
	if schema.IsCore(res.Type) {
		return Query{}, invalid("resource", "type %q is one of mandate's own types; check a resource", res.Type)
	}
	if err := e.requirePermission(ctx, "permission", res.Type, permission); err != nil {
		return Query{}, err
	}
	if err := e.validateContext(qctx); err != nil {
		return Query{}, err
	}
	return Query{Subject: sub, Permission: permission, Resource: res, Context: qctx}, nil
}

// validateContext refuses the context keys mandate's own caveats use, too
// many keys, and values of the wrong type for any caveat of the schema that
// reads them, the grant conditions included.
func (e *Engine) validateContext(qctx *structpb.Struct) error {
	if len(qctx.GetFields()) == 0 {
		return nil
	}
	for _, k := range reservedContext {
		if _, ok := qctx.GetFields()[k]; ok {
			return invalid("context."+k, "is reserved: mandate's own caveats use it")
		}
	}
	if len(qctx.GetFields()) > maxContextFields {
		return invalid("context", "has more than %d fields", maxContextFields)
	}
	// The grant conditions' keys (source_ip, risk_score, environment) are
	// parameters of core caveats, so this checks them too.
	if key, err := e.Schema().ValidateCheckContext(qctx.GetFields()); err != nil {
		return invalid("context."+key, "%v", err)
	}
	return nil
}

// Decide answers a validated query against SpiceDB, at full consistency.
func (e *Engine) Decide(ctx context.Context, q Query) (Decision, error) {
	ctx, cancel := e.withTimeout(ctx)
	defer cancel()
	if q.Subject.Type != schema.TypeAgent {
		return e.decideUser(ctx, q)
	}
	return e.decideAgent(ctx, q)
}

func (e *Engine) caveatContext(q Query, now time.Time) *structpb.Struct {
	fields := make(map[string]*structpb.Value, len(q.Context.GetFields())+1)
	for k, v := range q.Context.GetFields() {
		fields[k] = v
	}
	fields[reservedContextNow] = structpb.NewStringValue(ts(now))
	return &structpb.Struct{Fields: fields}
}

func (e *Engine) decideUser(ctx context.Context, q Query) (Decision, error) {
	resp, err := e.sdb.Permissions.CheckPermission(ctx, &v1.CheckPermissionRequest{
		Consistency: fullyConsistent,
		Resource:    objRef(q.Resource),
		Permission:  q.Permission,
		Subject:     subRef(q.Subject, ""),
		Context:     e.caveatContext(q, e.now()),
	})
	if err != nil {
		return Decision{}, backendErr("CheckPermission", err)
	}
	d := Decision{Principal: q.Subject, Token: resp.GetCheckedAt().GetToken(), Chain: []Ref{q.Subject}}
	switch resp.GetPermissionship() {
	case v1.CheckPermissionResponse_PERMISSIONSHIP_HAS_PERMISSION:
		d.Allowed, d.Reason = true, ReasonAllowed
	case v1.CheckPermissionResponse_PERMISSIONSHIP_CONDITIONAL_PERMISSION:
		d.Reason, d.MissingContext = ReasonMissingContext, resp.GetPartialCaveatInfo().GetMissingRequiredContext()
	default:
		d.Reason = ReasonNoPermission
	}
	return d, nil
}

// checkUser reports whether a user holds a permission now.
func (e *Engine) checkUser(ctx context.Context, user Ref, perm string, res Ref, qctx *structpb.Struct) (bool, error) {
	d, err := e.decideUser(ctx, Query{Subject: user, Permission: perm, Resource: res, Context: qctx})
	return d.Allowed, err
}

// holderGrants is what one holder (an agent of the chain, or the task) has
// for the queried permission.
type holderGrants struct {
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

// decideOpts adjusts decideAgent for callers other than Check.
type decideOpts struct {
	// conditionsHold treats conditioned grants as held, for the delegation
	// check: conditions are evaluated again on every check of the delegate.
	conditionsHold bool
}

// MandateObject is the one object of type mandate, which holds the global switches.
var MandateObject = Ref{Type: schema.TypeMandate, ID: "global"}

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
func (e *Engine) decideAgent(ctx context.Context, q Query, opts ...decideOpts) (Decision, error) {
	var opt decideOpts
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
		grants    = make([]holderGrants, len(c.agents)+1) // per agent, then the task
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
		d.Reason, err = e.diagnoseChain(ctx, c)
		return d, err
	}
	// Conditions, evaluated by SpiceDB with the caller's context.
	if err := e.evaluateConditions(ctx, q, grantRel, c, grants, cctx); err != nil {
		return Decision{}, err
	}
	// Leg 3.
	taskGrants := grants[len(c.agents)]
	held := func(i int) (holderGrants, bool) {
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
		for _, g := range []holderGrants{grants[i], taskGrants} {
			if len(g.missing) > 0 {
				d.Reason, d.MissingContext, d.Condition = ReasonMissingContext, g.missing, g.failed
				return
			}
		}
		for _, g := range []holderGrants{grants[i], taskGrants} {
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

// bulkPairs returns the items of a CheckBulkPermissions answer, failing
// closed when SpiceDB could not answer one of them.
func bulkPairs(bulk *v1.CheckBulkPermissionsResponse, want int) ([]*v1.CheckBulkPermissionsResponseItem, error) {
	pairs := bulk.GetPairs()
	if len(pairs) != want {
		return nil, &Error{Kind: KindInternal, Msg: "internal error", Err: errorf("CheckBulkPermissions returned %d pairs for %d items", len(pairs), want)}
	}
	out := make([]*v1.CheckBulkPermissionsResponseItem, len(pairs))
	for i, p := range pairs {
		if p.GetError() != nil {
			// SpiceDB could not answer this item (a datastore failure, for
			// example): the backend is unavailable, and nothing is allowed.
			return nil, &Error{Kind: KindUnavailable, Msg: "authorization backend unavailable",
				Err: fmt.Errorf("CheckBulkPermissions item: %w: %s", ErrUnavailable, p.GetError().GetMessage())}
		}
		out[i] = p.GetItem()
	}
	return out, nil
}

// evaluateConditions asks SpiceDB, in one call, whether each holder's
// conditioned grant holds in this context. A grant that holds joins the
// holder's grants; one that does not records the failed condition or the
// missing context.
func (e *Engine) evaluateConditions(ctx context.Context, q Query, grantRel string, c *chain, grants []holderGrants, cctx *structpb.Struct) error {
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
func (e *Engine) diagnoseChain(ctx context.Context, c *chain) (Reason, error) {
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

func dedupe(ids []string) []string {
	seen := make(map[string]bool, len(ids))
	out := ids[:0:0]
	for _, id := range ids {
		if id != "" && !seen[id] {
			seen[id] = true
			out = append(out, id)
		}
	}
	return out
}

func errorf(format string, args ...any) error { return fmt.Errorf(format, args...) }

func cutLast(s, sep string) (string, string, bool) {
	i := strings.LastIndex(s, sep)
	if i < 0 {
		return "", "", false
	}
	return s[:i], s[i+len(sep):], true
}
