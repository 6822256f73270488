package service

import (
	"context"
	"fmt"

	"github.com/mandate-dev/mandate/engine"
	mandatev1 "github.com/mandate-dev/mandate/proto/mandate/v1"
)

// maxSearchPage is the default and largest page of a search. It is large so
// that a caller that never pages, as AuthZEN's interop harness does not, gets
// every result of a typical search in one answer.
const maxSearchPage = 1000

// SearchHandlers implements SearchService. Candidates are decided by Decider,
// the same decorator chain (cache, then engine) that answers Check.
type SearchHandlers struct {
	mandatev1.UnimplementedSearchServiceServer
	*Handlers
}

func searchPage(size uint32, token string) (engine.SearchPage, error) {
	switch {
	case size == 0:
		size = maxSearchPage
	case size > maxSearchPage:
		return engine.SearchPage{}, &engine.Error{Kind: engine.KindInvalidArgument, Field: "page_size", Msg: fmt.Sprintf("must be at most %d", maxSearchPage)}
	}
	p := engine.SearchPage{Size: int(size)}
	if token != "" {
		after, err := decodeCursor(token)
		if err != nil {
			return p, err
		}
		p.After = after
	}
	return p, nil
}

func nextToken(ids []string, more bool) string {
	if !more || len(ids) == 0 {
		return ""
	}
	return encodeCursor(ids[len(ids)-1])
}

func (h *SearchHandlers) LookupSubjects(ctx context.Context, r *mandatev1.LookupSubjectsRequest) (*mandatev1.LookupSubjectsResponse, error) {
	page, err := searchPage(r.GetPageSize(), r.GetPageToken())
	if err != nil {
		return nil, h.err(ctx, err)
	}
	ids, more, err := h.Engine.SearchSubjects(ctx, h.Lookup, engine.SubjectSearch{
		Resource: r.GetResource(), Permission: r.GetPermission(), SubjectType: r.GetSubjectType(), Context: r.GetContext(),
	}, page)
	if err != nil {
		return nil, h.err(ctx, err)
	}
	out := &mandatev1.LookupSubjectsResponse{NextPageToken: nextToken(ids, more)}
	for _, id := range ids {
		out.Subjects = append(out.Subjects, engine.Ref{Type: r.GetSubjectType(), ID: id}.String())
	}
	return out, nil
}

func (h *SearchHandlers) LookupResources(ctx context.Context, r *mandatev1.LookupResourcesRequest) (*mandatev1.LookupResourcesResponse, error) {
	page, err := searchPage(r.GetPageSize(), r.GetPageToken())
	if err != nil {
		return nil, h.err(ctx, err)
	}
	ids, more, err := h.Engine.SearchResources(ctx, h.Lookup, engine.ResourceSearch{
		Subject: r.GetSubject(), Permission: r.GetPermission(), ResourceType: r.GetResourceType(), Context: r.GetContext(),
	}, page)
	if err != nil {
		return nil, h.err(ctx, err)
	}
	out := &mandatev1.LookupResourcesResponse{NextPageToken: nextToken(ids, more)}
	for _, id := range ids {
		out.Resources = append(out.Resources, engine.Ref{Type: r.GetResourceType(), ID: id}.String())
	}
	return out, nil
}

func (h *SearchHandlers) LookupActions(ctx context.Context, r *mandatev1.LookupActionsRequest) (*mandatev1.LookupActionsResponse, error) {
	page, err := searchPage(r.GetPageSize(), r.GetPageToken())
	if err != nil {
		return nil, h.err(ctx, err)
	}
	perms, more, err := h.Engine.SearchActions(ctx, h.Lookup, engine.ActionSearch{
		Subject: r.GetSubject(), Resource: r.GetResource(), Context: r.GetContext(),
	}, page)
	if err != nil {
		return nil, h.err(ctx, err)
	}
	return &mandatev1.LookupActionsResponse{Permissions: perms, NextPageToken: nextToken(perms, more)}, nil
}
