package engine

import (
	"strings"

	v1 "github.com/authzed/authzed-go/proto/authzed/api/v1"

	"github.com/mandate-dev/mandate/schema"
)

// Dependency keys name what a cached decision relied on. A change to a
// relationship bumps the keys InvalidationKeys returns for it; a cached
// decision is stale once any of its keys was bumped after it was computed.
const (
	// KeyAll is bumped by any change whose effect mandate does not track
	// precisely: human-side resource relationships and schema changes.
	KeyAll = "*"
)

// AgentKey is the dependency key of one agent's state.
func AgentKey(id string) string { return "a:" + id }

// TaskKey is the dependency key of one task's state.
func TaskKey(id string) string { return "t:" + id }

// GrantKey is the dependency key of the grants of one permission on one resource.
func GrantKey(res Ref, permission string) string { return "g:" + res.String() + "#" + permission }

// InvalidationKeys maps a changed relationship to the dependency keys it
// affects. It is used for this replica's own writes and for every change the
// SpiceDB Watch reports, so both paths invalidate the same way.
func InvalidationKeys(r *v1.Relationship) []string {
	res := r.GetResource()
	switch res.GetObjectType() {
	case schema.TypeAgent:
		return []string{AgentKey(res.GetObjectId())}
	case schema.TypeTask:
		return []string{TaskKey(res.GetObjectId())}
	case schema.TypeGrant, schema.TypeAccessRequest:
		// Grant records and access requests are bookkeeping; the grant
		// itself lives on the resource.
		return nil
	}
	if perm, ok := strings.CutSuffix(r.GetRelation(), schema.GrantSuffix); ok {
		return []string{GrantKey(Ref{Type: res.GetObjectType(), ID: res.GetObjectId()}, perm)}
	}
	return []string{KeyAll}
}

// DecisionKeys lists the dependency keys a decision relied on: chainKeys
// depend only on the subject (the catch-all, its agents and task), grantKey
// on the permission and resource ("" for a user check).
func DecisionKeys(q Query, d Decision) (chainKeys []string, grantKey string) {
	chainKeys = []string{KeyAll}
	if q.Subject.Type != schema.TypeAgent {
		return chainKeys, ""
	}
	chainKeys = append(chainKeys, AgentKey(q.Subject.ID))
	for _, c := range d.Chain {
		if c.Type == schema.TypeAgent && c.ID != q.Subject.ID {
			chainKeys = append(chainKeys, AgentKey(c.ID))
		}
	}
	if !d.Task.IsZero() {
		chainKeys = append(chainKeys, TaskKey(d.Task.ID))
	}
	return chainKeys, GrantKey(q.Resource, q.Permission)
}

// Invalidator is told about every write this replica makes, after it commits
// and before the API call returns.
type Invalidator interface {
	Invalidate(token string, keys []string)
}

// SetInvalidator registers the cache to tell about writes. Call it before serving.
func (e *Engine) SetInvalidator(inv Invalidator) { e.invalidator = inv }

func (e *Engine) invalidate(token string, updates []*v1.RelationshipUpdate) {
	e.noteWrite(token)
	if e.invalidator == nil {
		return
	}
	seen := map[string]bool{}
	var keys []string
	for _, u := range updates {
		for _, k := range InvalidationKeys(u.GetRelationship()) {
			if !seen[k] {
				seen[k] = true
				keys = append(keys, k)
			}
		}
	}
	e.invalidator.Invalidate(token, keys)
}
