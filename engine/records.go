package engine

import (
	"fmt"
	"strconv"
	"strings"
	"time"

	v1 "github.com/authzed/authzed-go/proto/authzed/api/v1"

	"github.com/mandate-dev/mandate/engine/bounds"
	"github.com/mandate-dev/mandate/schema"
)

// These functions are the one definition of how tasks, agents and grants are
// stored as relationships. The lifecycle API writes them; the bench harness
// bulk-loads datasets with them.

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
}

// Ancestor is one agent above another, with its expiry.
type Ancestor struct {
	ID      string
	Expires time.Time
}

// encode writes "v1;<principal>;<task expiry>[;b=<bounds>];<id>@<expiry>;…".
// Ids and references cannot contain ';', '=' or '@'.
func (l Lineage) encode() string {
	var b strings.Builder
	b.WriteString("v1;" + l.Principal.String() + ";" + ts(l.TaskExpires))
	if !l.Bounds.IsZero() {
		b.WriteString(";" + encodeBounds(l.Bounds))
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
	for i, p := range parts[3:] {
		if i == 0 && strings.HasPrefix(p, "b=") {
			if l.Bounds, ok = decodeBounds(p); !ok {
				return Lineage{}, false
			}
			continue
		}
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
