package engine

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"slices"
	"time"

	v1 "github.com/authzed/authzed-go/proto/authzed/api/v1"

	"github.com/mandate-dev/mandate/schema"
)

// Grants: one permission on one resource for an agent or a task, for a while.

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
	ctx, cancel := e.withTimeout(ctx)
	defer cancel()
	p, err := e.planGrant(ctx, in, "holder")
	if err != nil {
		return nil, "", err
	}
	token, err := e.writeGrant(ctx, p, nil, nil, nil)
	if err != nil {
		return nil, "", err
	}
	return p.grant, token, nil
}

// grantPlan is a grant that passed every check and is ready to be written.
type grantPlan struct {
	grant       *Grant
	holderField string // names the holder in errors
	principal   Ref
	stored      []*v1.Relationship
	condParams  map[string]any
	// slot selects the grant relationships of the same holder, permission and resource.
	slot *v1.RelationshipFilter
	// pre are the holder's preconditions: still able to hold grants.
	pre []*v1.Precondition
}

// planGrant makes every check of a grant, the escalation checks included,
// and computes what to write, without writing. CreateGrant and the approval
// of an access request (and the filing of one, to refuse it early) share
// it, so a grant is refused for the same reasons whichever way it comes.
// holderField names the holder in errors.
func (e *Engine) planGrant(ctx context.Context, in CreateGrantInput, holderField string) (*grantPlan, error) {
	holder, err := ParseRef(holderField, in.Holder)
	if err != nil {
		return nil, err
	}
	if holder.Type != schema.TypeAgent && holder.Type != schema.TypeTask {
		return nil, invalid(holderField, "must be an agent or a task, got type %q", holder.Type)
	}
	resource, err := ParseRef("resource", in.Resource)
	if err != nil {
		return nil, err
	}
	if schema.IsCore(resource.Type) {
		return nil, invalid("resource", "type %q is one of mandate's own types and cannot be granted", resource.Type)
	}
	ttl, err := ParseTTL("ttl", in.TTL, e.cfg.MaxGrantTTL)
	if err != nil {
		return nil, err
	}
	if err := e.requireType(ctx, "resource", resource); err != nil {
		return nil, err
	}
	if err := e.requirePermission(ctx, "permission", resource.Type, in.Permission); err != nil {
		return nil, err
	}
	if !e.Schema().Grantable(resource.Type, in.Permission) {
		return nil, invalid("permission", "%s on type %q cannot be granted to agents", in.Permission, resource.Type)
	}
	var condParams map[string]any
	if in.Condition != nil {
		if condParams, err = in.Condition.validate("condition"); err != nil {
			return nil, err
		}
		if !slices.Contains(e.Schema().GrantConditions(resource.Type, in.Permission, holder.Type), in.Condition.caveat()) {
			holderRef := "agent"
			if holder.Type == schema.TypeTask {
				holderRef = "task#member"
			}
			return nil, invalid("condition", "%s grants on type %q do not accept the %s condition for %s holders: the schema's %s%s relation must list `%s with %s`",
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
			return nil, fieldNotFound(err, holderField)
		}
		c, err := e.chainOf(ctx, holder.ID)
		if err != nil {
			return nil, err
		}
		// The holder itself must be able to act: alive, on an open task.
		if st := rec.status(now); st != StatusActive {
			return nil, precondition(holderField, "agent %s is %s", holder.ID, st)
		}
		if !now.Before(c.taskExpires) {
			return nil, precondition(holderField, "the task of agent %s has expired", holder.ID)
		}
		principal = c.principal
		if rec.Parent != "" {
			// Delegation only narrows: the parent must hold it now, by its own grant.
			// A condition on the parent's grant still counts: it is evaluated
			// again on every check of the child, whose chain includes the parent.
			x, _, err := e.evaluateQuery(ctx, Query{Subject: Ref{Type: schema.TypeAgent, ID: rec.Parent}, Permission: in.Permission, Resource: resource}, evalMode{conditionsHold: true})
			if err != nil {
				return nil, err
			}
			if d := x.Decision; !d.Allowed {
				return nil, escalation("parent agent:%s does not hold %s on %s (%s)", rec.Parent, in.Permission, resource, d.Reason)
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
			return nil, fieldNotFound(err, holderField)
		}
		if t.Status != StatusActive {
			return nil, precondition(holderField, "task %s is %s", t.ID, t.Status)
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
		return nil, err
	}
	if !ok {
		return nil, escalation("principal %s does not hold %s on %s", principal, in.Permission, resource)
	}

	g := &Grant{ID: newID(PrefixGrant), Holder: holder, Permission: in.Permission, Resource: resource, CreatedAt: now, ExpiresAt: expires, Status: StatusActive, Condition: in.Condition}
	return &grantPlan{
		grant: g, holderField: holderField, principal: principal, stored: grantRelationships(*g, condParams), condParams: condParams, pre: pre,
		slot: &v1.RelationshipFilter{
			ResourceType: resource.Type, OptionalResourceId: resource.ID, OptionalRelation: in.Permission + schema.GrantSuffix,
			OptionalSubjectFilter: subjectFilter(grantSubject, grantSubjectRel),
		},
	}, nil
}

// writeGrant writes a planned grant, with extra updates and preconditions
// in the same write (an access request's answer). When the write is
// refused, stillValid (when set) is asked first whether the extra
// preconditions still hold; its error ends the attempt.
func (e *Engine) writeGrant(ctx context.Context, p *grantPlan, extra []*v1.RelationshipUpdate, extraPre []*v1.Precondition, stillValid func(context.Context) error) (string, error) {
	g, holder := p.grant, p.grant.Holder
	holderGone := precondition(p.holderField, "%s was revoked, suspended or completed while the grant was being created", holder)
	// The grant relationship replaces an earlier one of the same holder, and
	// the replaced grant loses its record in the same write. The write holds
	// only if the slot is still as read: empty, or holding the grants whose
	// records it deletes. A concurrent replacement makes it fail, and it is
	// tried again against the new occupant, so racing creations leave one
	// grant and no orphan record.
	//
	// Creations of one slot on this engine take turns: racing on Postgres,
	// they would otherwise refuse each other through serialization failures
	// and SpiceDB's retries until their deadline passed. Other replicas'
	// creations still race, and the preconditions settle them.
	unlock, err := e.slots.lock(ctx, slotKey(p.slot))
	if err != nil {
		return "", err
	}
	defer unlock()
	for attempt := 0; ; attempt++ {
		existing, err := e.sdb.readRels(ctx, p.slot)
		if err != nil {
			return "", err
		}
		updates := append([]*v1.RelationshipUpdate{touch(p.stored[0]), create(p.stored[1])}, extra...)
		slot := append(slices.Clone(p.pre), extraPre...)
		if len(existing) == 0 {
			slot = append(slot, &v1.Precondition{Operation: v1.Precondition_OPERATION_MUST_NOT_MATCH, Filter: p.slot})
		}
		for _, old := range existing {
			if oldID := caveatString(old, "grant_id"); oldID != "" && oldID != g.ID {
				oldRecord := Ref{Type: schema.TypeGrant, ID: oldID}
				updates = append(updates, del(rel(oldRecord, "record", holder, "", "", nil)))
				slot = append(slot, mustMatch(oldRecord, "record"))
			}
		}
		token, err := e.write(ctx, updates, slot, errSlotChanged)
		if err == nil {
			return token, nil
		}
		if !errors.Is(err, errSlotChanged) && !writeConflict(err) {
			return "", err
		}
		// The answer's own preconditions (an access request still pending)
		// are asked first: when they no longer hold, no retry can land.
		if stillValid != nil {
			if err := stillValid(ctx); err != nil {
				return "", err
			}
		}
		// Either the slot changed under us (or a racing write collided with
		// ours) or the holder stopped being able to hold grants. Which one
		// is read, not guessed from whether the slot looks changed: a
		// refusal does not say which precondition failed, and a slot that
		// reads the same proves nothing about the holder (the write it lost
		// to may itself have been replaced in between, or have lost).
		if ok, err := e.canHold(ctx, holder); err != nil || !ok {
			if err != nil {
				return "", err
			}
			return "", holderGone
		}
		if attempt >= maxGrantAttempts {
			return "", &Error{Kind: KindUnavailable, Msg: "too many concurrent replacements of this grant; try again",
				Err: fmt.Errorf("%w: grant slot %s contended %d times", ErrUnavailable, slotKey(p.slot), attempt+1)}
		}
	}
}

// canHold reads whether holder can still hold grants: an agent enabled and
// not suspended, or an open task; the preconditions a grant's write is
// guarded by.
func (e *Engine) canHold(ctx context.Context, holder Ref) (bool, error) {
	if holder.Type == schema.TypeTask {
		t, err := e.readTask(ctx, holder.ID)
		if err != nil {
			if AsError(err).Kind == KindNotFound {
				return false, nil
			}
			return false, err
		}
		return t.Status == StatusActive, nil
	}
	rec, err := e.readAgent(ctx, holder.ID)
	if err != nil {
		if AsError(err).Kind == KindNotFound {
			return false, nil
		}
		return false, err
	}
	return !rec.revoked && rec.enabled && !rec.suspended, nil
}

// slotKey names a grant slot: resource, relation and holder.
func slotKey(f *v1.RelationshipFilter) string {
	s := f.GetOptionalSubjectFilter()
	return f.GetResourceType() + ":" + f.GetOptionalResourceId() + "#" + f.GetOptionalRelation() + "@" +
		s.GetSubjectType() + ":" + s.GetOptionalSubjectId() + "#" + s.GetOptionalRelation().GetRelation()
}

// slotLocks are striped locks, one turn at a time per stripe, that wait no
// longer than the caller's context.
type slotLocks [64]chan struct{}

func (l *slotLocks) init() {
	for i := range l {
		l[i] = make(chan struct{}, 1)
	}
}

func (l *slotLocks) lock(ctx context.Context, key string) (func(), error) {
	h := fnv.New32a()
	_, _ = h.Write([]byte(key))
	c := l[h.Sum32()%uint32(len(l))]
	select {
	case c <- struct{}{}:
		return func() { <-c }, nil
	case <-ctx.Done():
		return nil, &Error{Kind: KindUnavailable, Msg: "authorization backend did not answer in time", Err: fmt.Errorf("%w: waiting for a grant slot: %w", ErrUnavailable, ctx.Err())}
	}
}

// maxGrantAttempts bounds how often CreateGrant retries against concurrent
// replacements of the same grant; each retry follows another's success.
const maxGrantAttempts = 64

// errSlotChanged is a grant write refused by its preconditions.
var errSlotChanged = errors.New("grant slot changed")

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
	record := Ref{Type: schema.TypeGrant, ID: id}
	updates := []*v1.RelationshipUpdate{del(rel(record, "record", g.Holder, "", "", nil))}
	if current != nil {
		current.OptionalCaveat = nil
		updates = append(updates, del(current))
	}
	// A replacement deletes this grant's record in the same write that
	// takes over the grant relationship. Requiring the record at write time
	// therefore keeps a replacement that landed after the read from being
	// deleted in this grant's name.
	return e.write(ctx, updates, []*v1.Precondition{mustMatch(record, "record")},
		notFound("id", "grant %s was replaced or deleted meanwhile", id))
}
