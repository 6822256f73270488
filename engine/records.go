package engine

import (
	v1 "github.com/authzed/authzed-go/proto/authzed/api/v1"

	"github.com/mandate-dev/mandate/schema"
)

// These functions are the one definition of how tasks, agents and grants are
// stored as relationships. The lifecycle API writes them; the bench harness
// bulk-loads datasets with them.

// TaskRelationships stores an open task.
func TaskRelationships(t Task) []*v1.Relationship {
	ref := Ref{Type: schema.TypeTask, ID: t.ID}
	return []*v1.Relationship{
		rel(ref, "record", t.Principal, "", schema.CaveatRecord, recordContext(t.CreatedAt, t.ExpiresAt, t.Description, "")),
		rel(ref, "principal", t.Principal, "", "", nil),
		rel(ref, "open", wildcardAgent, "", schema.CaveatWithinLifetime, lifetimeContext(t.ExpiresAt)),
	}
}

// AgentRelationships stores an enabled agent: a top-level one when a.Parent is zero.
func AgentRelationships(a Agent) []*v1.Relationship {
	ref := Ref{Type: schema.TypeAgent, ID: a.ID}
	rels := []*v1.Relationship{
		rel(ref, "record", a.Task, "", schema.CaveatRecord, recordContext(a.CreatedAt, a.ExpiresAt, a.Name, "")),
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
func GrantRelationships(g Grant) []*v1.Relationship {
	sub, subRel := g.Holder, ""
	if g.Holder.Type == schema.TypeTask {
		subRel = "member"
	}
	return []*v1.Relationship{
		rel(g.Resource, g.Permission+schema.GrantSuffix, sub, subRel, schema.CaveatGrantLifetime,
			map[string]any{"expires_at": ts(g.ExpiresAt), "grant_id": g.ID}),
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
