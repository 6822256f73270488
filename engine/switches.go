package engine

import (
	"context"

	v1 "github.com/authzed/authzed-go/proto/authzed/api/v1"

	"github.com/mandate-dev/mandate/schema"
)

// Kill switches. Each is one relationship write, so every replica and every
// system that asks mandate sees it at once: the write's revision is what the
// next fully consistent check reads, and the cache drops every answer that
// could depend on it (the relationships are not agent- or grant-specific,
// so they bump the catch-all key, locally and through the Watch).

// SuspendPrincipalAgents suspends every agent acting for a human, now and
// until resumed, including agents created meanwhile: the principal's tasks
// stop being active. It reports whether the switch was already on.
func (e *Engine) SuspendPrincipalAgents(ctx context.Context, principalID string) (Ref, bool, string, error) {
	return e.setPrincipalSuspended(ctx, principalID, true)
}

// ResumePrincipalAgents undoes SuspendPrincipalAgents. Agents suspended one by
// one stay suspended.
func (e *Engine) ResumePrincipalAgents(ctx context.Context, principalID string) (Ref, bool, string, error) {
	return e.setPrincipalSuspended(ctx, principalID, false)
}

func (e *Engine) setPrincipalSuspended(ctx context.Context, principalID string, on bool) (Ref, bool, string, error) {
	if principalID == "" {
		return Ref{}, false, "", invalid("id", "is required: the id of the user whose agents to switch")
	}
	p, err := ParseRef("id", schema.TypeUser+":"+principalID)
	if err != nil || p.ID != principalID {
		return Ref{}, false, "", invalid("id", "%q is not a user id", principalID)
	}
	ctx, cancel := e.withTimeout(ctx)
	defer cancel()
	was, err := e.sdb.readRels(ctx, &v1.RelationshipFilter{ResourceType: p.Type, OptionalResourceId: p.ID, OptionalRelation: "agents_suspended"})
	if err != nil {
		return Ref{}, false, "", err
	}
	r := rel(p, "agents_suspended", wildcardAgent, "", "", nil)
	up := touch(r)
	if !on {
		up = del(r)
	}
	tok, err := e.write(ctx, []*v1.RelationshipUpdate{up}, nil, nil)
	if err != nil {
		return Ref{}, false, "", err
	}
	return p, len(was) > 0, tok, nil
}

// PrincipalAgentsSuspended reports whether a human's agents are suspended.
func (e *Engine) PrincipalAgentsSuspended(ctx context.Context, principal Ref) (bool, error) {
	ctx, cancel := e.withTimeout(ctx)
	defer cancel()
	rels, err := e.sdb.readRels(ctx, &v1.RelationshipFilter{ResourceType: principal.Type, OptionalResourceId: principal.ID, OptionalRelation: "agents_suspended"})
	return len(rels) > 0, err
}

// FreezeAgents denies every agent check until UnfreezeAgents. Checks of
// humans are unaffected. It reports whether the freeze was already on.
func (e *Engine) FreezeAgents(ctx context.Context) (bool, string, error) {
	return e.setFrozen(ctx, true)
}

// UnfreezeAgents lifts the freeze.
func (e *Engine) UnfreezeAgents(ctx context.Context) (bool, string, error) {
	return e.setFrozen(ctx, false)
}

func (e *Engine) setFrozen(ctx context.Context, on bool) (bool, string, error) {
	ctx, cancel := e.withTimeout(ctx)
	defer cancel()
	was, err := e.AgentsFrozen(ctx)
	if err != nil {
		return false, "", err
	}
	r := rel(MandateObject, "agents_frozen", wildcardAgent, "", "", nil)
	up := touch(r)
	if !on {
		up = del(r)
	}
	tok, err := e.write(ctx, []*v1.RelationshipUpdate{up}, nil, nil)
	return was, tok, err
}

// AgentsFrozen reports whether the freeze is on.
func (e *Engine) AgentsFrozen(ctx context.Context) (bool, error) {
	rels, err := e.sdb.readRels(ctx, &v1.RelationshipFilter{ResourceType: MandateObject.Type, OptionalResourceId: MandateObject.ID, OptionalRelation: "agents_frozen"})
	return len(rels) > 0, err
}

// Descendants lists the agents below an agent, breadth first.
func (e *Engine) Descendants(ctx context.Context, id string) ([]Ref, error) {
	ctx, cancel := e.withTimeout(ctx)
	defer cancel()
	ids, err := e.descendants(ctx, id)
	if err != nil {
		return nil, err
	}
	out := make([]Ref, 0, len(ids)-1)
	for _, d := range ids[1:] {
		out = append(out, Ref{Type: schema.TypeAgent, ID: d})
	}
	return out, nil
}
