package authzen

import (
	"encoding/json"
	"strings"

	mandatev1 "github.com/mandate-dev/mandate/proto/mandate/v1"
)

// ref is a search result; the field order (type, then id) is the one AuthZEN
// clients compare.
type ref struct {
	Type string `json:"type"`
	ID   string `json:"id"`
}

// actionName is an action search result.
type actionName struct {
	Name string `json:"name"`
}

// maxPage is SearchService's largest page.
const maxPage = 1000

type pageOut struct {
	NextToken string `json:"next_token"`
}

type searchResponse[T any] struct {
	Results []T     `json:"results"`
	Page    pageOut `json:"page"`
}

func emptySearch[T any]() searchResponse[T] { return searchResponse[T]{Results: []T{}} }

// page reads the optional page {token, limit}.
func page(body object) (token string, limit uint32, err error) {
	p, ok, err := body.object("page", "page")
	if err != nil || !ok {
		return "", 0, err
	}
	if token, _, err = p.str("page.token", "token"); err != nil {
		return "", 0, err
	}
	if raw, ok := p["limit"]; ok && !isNull(raw) {
		var n int64
		if err := json.Unmarshal(raw, &n); err != nil || n < 0 || n > 1<<31 {
			return "", 0, bad("page.limit", "must be a non-negative integer")
		}
		// A PDP may return fewer results than asked for; SearchService's
		// largest page is 1000.
		limit = uint32(min(n, maxPage))
	}
	return token, limit, nil
}

// need is a required field and whether the request has it.
type need struct {
	ok    bool
	field string
}

// require names the first of the fields that is missing.
func require(checks ...need) error {
	for _, c := range checks {
		if !c.ok {
			return bad(c.field, "is required")
		}
	}
	return nil
}

// searchSubject serves POST /access/v1/search/subject: who of subject.type
// can do action on resource.
func (h *Handler) searchSubject(c *call, body object) (any, error) {
	t, err := parseTuple(body, "")
	if err != nil {
		return nil, err
	}
	if err := require(need{t.Subject.Present, "subject"}, need{t.Subject.HasType, "subject.type"},
		need{t.Action.Present, "action"}, need{t.Action.HasName, "action.name"},
		need{t.Resource.Present, "resource"}, need{t.Resource.HasType, "resource.type"}, need{t.Resource.HasID, "resource.id"}); err != nil {
		return nil, err
	}
	token, limit, err := page(body)
	if err != nil {
		return nil, err
	}
	cctx, err := caveatContext(t.Context, t.Subject, t.Resource, t.Action)
	if err != nil {
		return nil, err
	}
	resType, ok := ResourceType(t.Resource.Type)
	if !ok {
		return emptySearch[ref](), nil
	}
	resp, err := h.search.LookupSubjects(c.ctx, &mandatev1.LookupSubjectsRequest{
		Resource: resType + ":" + EncodeID(t.Resource.ID), Permission: Permission(t.Action.Name), SubjectType: t.Subject.Type,
		Context: cctx, PageSize: limit, PageToken: token,
	})
	if err != nil {
		if namesNothing(err) {
			return emptySearch[ref](), nil
		}
		return nil, searchError(err)
	}
	out := emptySearch[ref]()
	for _, s := range resp.GetSubjects() {
		if id, ok := decodeRef(s); ok {
			out.Results = append(out.Results, ref{Type: t.Subject.Type, ID: id})
		}
	}
	out.Page.NextToken = resp.GetNextPageToken()
	return out, nil
}

// searchResource serves POST /access/v1/search/resource: on what of
// resource.type can subject do action.
func (h *Handler) searchResource(c *call, body object) (any, error) {
	t, err := parseTuple(body, "")
	if err != nil {
		return nil, err
	}
	if err := require(need{t.Subject.Present, "subject"}, need{t.Subject.HasType, "subject.type"}, need{t.Subject.HasID, "subject.id"},
		need{t.Action.Present, "action"}, need{t.Action.HasName, "action.name"},
		need{t.Resource.Present, "resource"}, need{t.Resource.HasType, "resource.type"}); err != nil {
		return nil, err
	}
	token, limit, err := page(body)
	if err != nil {
		return nil, err
	}
	cctx, err := caveatContext(t.Context, t.Subject, t.Resource, t.Action)
	if err != nil {
		return nil, err
	}
	resType, ok := ResourceType(t.Resource.Type)
	if !ok {
		return emptySearch[ref](), nil
	}
	resp, err := h.search.LookupResources(c.ctx, &mandatev1.LookupResourcesRequest{
		Subject: t.Subject.Type + ":" + EncodeID(t.Subject.ID), Permission: Permission(t.Action.Name), ResourceType: resType,
		Context: cctx, PageSize: limit, PageToken: token,
	})
	if err != nil {
		if namesNothing(err) {
			return emptySearch[ref](), nil
		}
		return nil, searchError(err)
	}
	out := emptySearch[ref]()
	for _, r := range resp.GetResources() {
		if id, ok := decodeRef(r); ok {
			out.Results = append(out.Results, ref{Type: t.Resource.Type, ID: id})
		}
	}
	out.Page.NextToken = resp.GetNextPageToken()
	return out, nil
}

// searchAction serves POST /access/v1/search/action: what can subject do on
// resource. Only permissions are actions; relations, the grant relations
// included, never are.
func (h *Handler) searchAction(c *call, body object) (any, error) {
	t, err := parseTuple(body, "")
	if err != nil {
		return nil, err
	}
	if err := require(need{t.Subject.Present, "subject"}, need{t.Subject.HasType, "subject.type"}, need{t.Subject.HasID, "subject.id"},
		need{t.Resource.Present, "resource"}, need{t.Resource.HasType, "resource.type"}, need{t.Resource.HasID, "resource.id"}); err != nil {
		return nil, err
	}
	token, limit, err := page(body)
	if err != nil {
		return nil, err
	}
	cctx, err := caveatContext(t.Context, t.Subject, t.Resource, t.Action)
	if err != nil {
		return nil, err
	}
	resType, ok := ResourceType(t.Resource.Type)
	if !ok {
		return emptySearch[actionName](), nil
	}
	resp, err := h.search.LookupActions(c.ctx, &mandatev1.LookupActionsRequest{
		Subject: t.Subject.Type + ":" + EncodeID(t.Subject.ID), Resource: resType + ":" + EncodeID(t.Resource.ID),
		Context: cctx, PageSize: limit, PageToken: token,
	})
	if err != nil {
		if namesNothing(err) {
			return emptySearch[actionName](), nil
		}
		return nil, searchError(err)
	}
	out := emptySearch[actionName]()
	for _, p := range resp.GetPermissions() {
		out.Results = append(out.Results, actionName{Name: p})
	}
	out.Page.NextToken = resp.GetNextPageToken()
	return out, nil
}

// searchError names a refused page token by its AuthZEN field.
func searchError(err error) error {
	if fieldOf(err) == "page_token" {
		return bad("page.token", "is not a token this server issued")
	}
	return err
}

// decodeRef returns the AuthZEN id of a "<type>:<id>" result. An id that
// EncodeID could not have produced has no AuthZEN id and is left out.
func decodeRef(s string) (string, bool) {
	_, id, ok := strings.Cut(s, ":")
	if !ok {
		return "", false
	}
	return DecodeID(id)
}
