package engine

import (
	"context"
	"errors"
	"io"
	"sort"

	v1 "github.com/authzed/authzed-go/proto/authzed/api/v1"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/mandate-dev/mandate/schema"
)

// Search answers the three search questions of a PDP (who, what, which
// actions). Results are transitive and read at full consistency. Anything that
// names a type or permission the schema does not have gives no results rather
// than an error: a search for something that does not exist finds nothing.
//
// Agents get no shortcut. SpiceDB proposes candidates from the grant relations
// (an agent can only reach what a grant names), and every candidate is then
// decided by d, the same Decider Check uses, so a result is exactly what
// Check would allow now: chain alive, task open, a live grant, and the
// principal still holding the permission.

// SearchPage bounds and resumes a search: results are sorted, and a page
// holds at most Size of those after After.
type SearchPage struct {
	After string
	Size  int
}

// SubjectSearch asks which subjects of SubjectType hold Permission on Resource.
type SubjectSearch struct {
	Resource    string
	Permission  string
	SubjectType string
	Context     *structpb.Struct
}

// ResourceSearch asks on which resources of ResourceType Subject holds Permission.
type ResourceSearch struct {
	Subject      string
	Permission   string
	ResourceType string
	Context      *structpb.Struct
}

// ActionSearch asks which permissions Subject holds on Resource.
type ActionSearch struct {
	Subject  string
	Resource string
	Context  *structpb.Struct
}

// SearchSubjects returns the ids of the matching subjects, sorted, and
// whether more follow the page.
func (e *Engine) SearchSubjects(ctx context.Context, d Decider, s SubjectSearch, page SearchPage) ([]string, bool, error) {
	res, err := ParseRef("resource", s.Resource)
	if err != nil {
		return nil, false, err
	}
	if err := ValidateName("subject_type", s.SubjectType); err != nil {
		return nil, false, err
	}
	if err := ValidateName("permission", s.Permission); err != nil {
		return nil, false, err
	}
	if err := e.validateContext(s.Context); err != nil {
		return nil, false, err
	}
	if !e.searchable(ctx, res.Type, s.Permission) || !e.subjectType(ctx, s.SubjectType) {
		return nil, false, nil
	}
	ctx, cancel := context.WithTimeout(ctx, 10*e.cfg.CallTimeout)
	defer cancel()
	if s.SubjectType != schema.TypeAgent {
		ids, err := e.lookupSubjects(ctx, res, s.Permission, s.SubjectType, s.Context)
		if err != nil {
			return nil, false, err
		}
		return pageOf(ids, page)
	}
	// An agent reaches a resource only through a grant, its own or its task's.
	if !e.Schema().HasRelation(res.Type, s.Permission+schema.GrantSuffix) {
		return nil, false, nil
	}
	// The search's context goes along, so grants whose condition it meets are candidates.
	ids, err := e.lookupSubjects(ctx, res, s.Permission+schema.GrantSuffix, schema.TypeAgent, s.Context)
	if err != nil {
		return nil, false, err
	}
	return decidePage(ctx, ids, page, func(id string) Query {
		return Query{Subject: Ref{Type: schema.TypeAgent, ID: id}, Permission: s.Permission, Resource: res, Context: s.Context}
	}, d)
}

// SearchResources returns the ids of the matching resources, sorted, and
// whether more follow the page.
func (e *Engine) SearchResources(ctx context.Context, d Decider, s ResourceSearch, page SearchPage) ([]string, bool, error) {
	sub, err := ParseRef("subject", s.Subject)
	if err != nil {
		return nil, false, err
	}
	if err := ValidateName("resource_type", s.ResourceType); err != nil {
		return nil, false, err
	}
	if err := ValidateName("permission", s.Permission); err != nil {
		return nil, false, err
	}
	if err := e.validateContext(s.Context); err != nil {
		return nil, false, err
	}
	if !e.searchable(ctx, s.ResourceType, s.Permission) || !e.subjectType(ctx, sub.Type) {
		return nil, false, nil
	}
	ctx, cancel := context.WithTimeout(ctx, 10*e.cfg.CallTimeout)
	defer cancel()
	if sub.Type != schema.TypeAgent {
		ids, err := e.lookupResources(ctx, s.ResourceType, s.Permission, sub, s.Context)
		if err != nil {
			return nil, false, err
		}
		return pageOf(ids, page)
	}
	if !e.Schema().HasRelation(s.ResourceType, s.Permission+schema.GrantSuffix) {
		return nil, false, nil
	}
	// LookupResources follows task#member, so task-held grants are candidates too.
	ids, err := e.lookupResources(ctx, s.ResourceType, s.Permission+schema.GrantSuffix, sub, s.Context)
	if err != nil {
		return nil, false, err
	}
	return decidePage(ctx, ids, page, func(id string) Query {
		return Query{Subject: sub, Permission: s.Permission, Resource: Ref{Type: s.ResourceType, ID: id}, Context: s.Context}
	}, d)
}

// SearchActions returns the permissions Subject holds on Resource, sorted, and
// whether more follow the page. Only permissions are considered: relations,
// grant relations included, are never actions.
func (e *Engine) SearchActions(ctx context.Context, d Decider, s ActionSearch, page SearchPage) ([]string, bool, error) {
	sub, err := ParseRef("subject", s.Subject)
	if err != nil {
		return nil, false, err
	}
	res, err := ParseRef("resource", s.Resource)
	if err != nil {
		return nil, false, err
	}
	if err := e.validateContext(s.Context); err != nil {
		return nil, false, err
	}
	if !e.resourceType(ctx, res.Type) || !e.subjectType(ctx, sub.Type) {
		return nil, false, nil
	}
	perms := e.Schema().Permissions(res.Type)
	return decidePage(ctx, perms, page, func(p string) Query {
		return Query{Subject: sub, Permission: p, Resource: res, Context: s.Context}
	}, d)
}

// resourceType reports whether t is a resource type of the schema (not one of
// mandate's own), refreshing the schema once in case another writer added it.
func (e *Engine) resourceType(ctx context.Context, t string) bool {
	return !schema.IsCore(t) && e.requireType(ctx, "", Ref{Type: t}) == nil
}

// subjectType reports whether t can be the subject of a check.
func (e *Engine) subjectType(ctx context.Context, t string) bool {
	return t != schema.TypeTask && t != schema.TypeGrant && e.requireType(ctx, "", Ref{Type: t}) == nil
}

// searchable reports whether t is a resource type with permission p.
func (e *Engine) searchable(ctx context.Context, t, p string) bool {
	return e.resourceType(ctx, t) && e.requirePermission(ctx, "", t, p) == nil
}

func (e *Engine) lookupSubjects(ctx context.Context, res Ref, perm, subjectType string, qctx *structpb.Struct) ([]string, error) {
	stream, err := e.sdb.Permissions.LookupSubjects(ctx, &v1.LookupSubjectsRequest{
		Consistency: fullyConsistent, Resource: objRef(res), Permission: perm,
		SubjectObjectType: subjectType, Context: e.caveatContext(Query{Context: qctx}, e.now()),
	})
	if err != nil {
		return nil, backendErr("LookupSubjects", err)
	}
	seen := map[string]bool{}
	for {
		resp, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, backendErr("LookupSubjects", err)
		}
		s := resp.GetSubject()
		// A wildcard ("every user") cannot be listed one by one; a conditional
		// answer lacks context and is not a permission.
		if s.GetSubjectObjectId() == "*" || s.GetPermissionship() != v1.LookupPermissionship_LOOKUP_PERMISSIONSHIP_HAS_PERMISSION {
			continue
		}
		seen[s.GetSubjectObjectId()] = true
	}
	return sortedKeys(seen), nil
}

func (e *Engine) lookupResources(ctx context.Context, typ, perm string, sub Ref, qctx *structpb.Struct) ([]string, error) {
	stream, err := e.sdb.Permissions.LookupResources(ctx, &v1.LookupResourcesRequest{
		Consistency: fullyConsistent, ResourceObjectType: typ, Permission: perm, Subject: subRef(sub, ""),
		Context: e.caveatContext(Query{Context: qctx}, e.now()),
	})
	if err != nil {
		return nil, backendErr("LookupResources", err)
	}
	seen := map[string]bool{}
	for {
		resp, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, backendErr("LookupResources", err)
		}
		if resp.GetPermissionship() == v1.LookupPermissionship_LOOKUP_PERMISSIONSHIP_HAS_PERMISSION {
			seen[resp.GetResourceObjectId()] = true
		}
	}
	return sortedKeys(seen), nil
}

func sortedKeys(m map[string]bool) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// pageOf cuts one page out of sorted ids.
func pageOf(ids []string, page SearchPage) ([]string, bool, error) {
	i := sort.SearchStrings(ids, page.After)
	if page.After != "" && i < len(ids) && ids[i] == page.After {
		i++
	}
	ids = ids[i:]
	if len(ids) > page.Size {
		return ids[:page.Size], true, nil
	}
	return ids, false, nil
}

// decidePage keeps, in order, the candidates d allows, until the page is full
// and one more allowed candidate shows that another page follows. Any error
// fails the whole search: a partial answer is never returned.
func decidePage(ctx context.Context, candidates []string, page SearchPage, query func(string) Query, d Decider) ([]string, bool, error) {
	rest, _, _ := pageOf(candidates, SearchPage{After: page.After, Size: len(candidates)})
	var out []string
	for _, c := range rest {
		dec, err := d.Decide(ctx, query(c))
		if err != nil {
			return nil, false, err
		}
		if !dec.Allowed {
			continue
		}
		if len(out) == page.Size {
			return out, true, nil
		}
		out = append(out, c)
	}
	return out, false, nil
}
