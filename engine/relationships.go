package engine

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"

	v1 "github.com/authzed/authzed-go/proto/authzed/api/v1"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/mandate-dev/mandate/schema"
)

// RelationshipUpdate is one admin write.
type RelationshipUpdate struct {
	Operation    string // TOUCH or DELETE
	Relationship string
}

const maxUpdates = 1000

// WriteRelationships applies admin updates to resource relationships,
// atomically. Relationships of mandate's own types, and grant relations, are
// refused: they are managed through tasks, agents and grants.
func (e *Engine) WriteRelationships(ctx context.Context, in []RelationshipUpdate) (string, error) {
	if len(in) == 0 {
		return "", invalid("updates", "is required and must not be empty")
	}
	if len(in) > maxUpdates {
		return "", invalid("updates", "has %d updates; at most %d are allowed in one write", len(in), maxUpdates)
	}
	ctx, cancel := e.withTimeout(ctx)
	defer cancel()
	updates := make([]*v1.RelationshipUpdate, 0, len(in))
	for i, u := range in {
		field := fmt.Sprintf("updates[%d]", i)
		var op v1.RelationshipUpdate_Operation
		switch strings.ToUpper(u.Operation) {
		case "TOUCH":
			op = v1.RelationshipUpdate_OPERATION_TOUCH
		case "DELETE":
			op = v1.RelationshipUpdate_OPERATION_DELETE
		case "":
			return "", invalid(field+".operation", "is required: TOUCH or DELETE")
		default:
			return "", invalid(field+".operation", "%q is not TOUCH or DELETE", u.Operation)
		}
		r, err := ParseRelationship(field+".relationship", u.Relationship)
		if err != nil {
			return "", err
		}
		if schema.IsCore(r.Resource.Type) {
			return "", invalid(field+".relationship", "relationships of type %q are managed by mandate through its tasks, agents and grants API", r.Resource.Type)
		}
		if strings.HasSuffix(r.Relation, schema.GrantSuffix) {
			return "", invalid(field+".relationship", "relation %q holds agent grants; use POST /v1/grants", r.Relation)
		}
		if err := e.requireType(ctx, field+".relationship", r.Resource); err != nil {
			return "", err
		}
		if !e.Schema().HasRelation(r.Resource.Type, r.Relation) {
			return "", invalid(field+".relationship", "type %q has no relation %q", r.Resource.Type, r.Relation)
		}
		if !e.Schema().HasType(r.Subject.Type) {
			return "", invalid(field+".relationship", "unknown subject type %q", r.Subject.Type)
		}
		if r.Caveat != "" && op == v1.RelationshipUpdate_OPERATION_TOUCH {
			if schema.IsCoreCaveat(r.Caveat) {
				return "", invalid(field+".relationship", "caveat %s is mandate's own; it cannot be written through this API", r.Caveat)
			}
			if err := e.Schema().ValidateCaveatContext(r.Caveat, r.CaveatContext.AsMap()); err != nil {
				return "", invalid(field+".relationship", "%v", err)
			}
		}
		v1rel := rel(r.Resource, r.Relation, r.Subject, r.SubjectRelation, "", nil)
		if r.Caveat != "" {
			v1rel.OptionalCaveat = &v1.ContextualizedCaveat{CaveatName: r.Caveat, Context: r.CaveatContext}
		}
		if op == v1.RelationshipUpdate_OPERATION_DELETE {
			// A delete names the relationship; its caveat is not part of its identity.
			v1rel.OptionalCaveat = nil
		}
		updates = append(updates, &v1.RelationshipUpdate{Operation: op, Relationship: v1rel})
	}
	resp, err := e.sdb.Permissions.WriteRelationships(ctx, &v1.WriteRelationshipsRequest{Updates: updates})
	if err != nil {
		switch status.Code(err) {
		case codes.InvalidArgument, codes.FailedPrecondition, codes.AlreadyExists:
			// SpiceDB's own validation, for example a subject type the relation does not allow.
			return "", invalid("updates", "%s", status.Convert(err).Message())
		}
		return "", backendErr("WriteRelationships", err)
	}
	e.invalidate(resp.GetWrittenAt().GetToken(), updates)
	return resp.GetWrittenAt().GetToken(), nil
}

// RelationshipFilter selects relationships to read.
type RelationshipFilter struct {
	ResourceType string
	ResourceID   string
	Relation     string
	SubjectType  string
	SubjectID    string
	PageSize     uint32
	PageToken    string
}

const (
	defaultPageSize = 100
	maxPageSize     = 1000
)

// ReadRelationships reads relationships matching a filter, one page at a time.
func (e *Engine) ReadRelationships(ctx context.Context, f RelationshipFilter) ([]string, string, string, error) {
	if f.ResourceType == "" {
		return nil, "", "", invalid("resource_type", "is required")
	}
	if !typeRE.MatchString(f.ResourceType) {
		return nil, "", "", invalid("resource_type", "%q is not a valid type", f.ResourceType)
	}
	if f.ResourceID != "" && !idRE.MatchString(f.ResourceID) {
		return nil, "", "", invalid("resource_id", "%q is not a valid id", f.ResourceID)
	}
	if f.Relation != "" {
		if err := ValidateName("relation", f.Relation); err != nil {
			return nil, "", "", err
		}
	}
	if f.SubjectID != "" && f.SubjectType == "" {
		return nil, "", "", invalid("subject_type", "is required with subject_id")
	}
	if f.SubjectType != "" && !typeRE.MatchString(f.SubjectType) {
		return nil, "", "", invalid("subject_type", "%q is not a valid type", f.SubjectType)
	}
	if f.SubjectID != "" && f.SubjectID != "*" && !idRE.MatchString(f.SubjectID) {
		return nil, "", "", invalid("subject_id", "%q is not a valid id", f.SubjectID)
	}
	if f.PageSize > maxPageSize {
		return nil, "", "", invalid("page_size", "must be at most %d", maxPageSize)
	}
	if f.PageSize == 0 {
		f.PageSize = defaultPageSize
	}
	ctx, cancel := e.withTimeout(ctx)
	defer cancel()
	if !e.Schema().HasType(f.ResourceType) {
		e.refreshSchema(ctx)
		if !e.Schema().HasType(f.ResourceType) {
			return nil, "", "", invalid("resource_type", "unknown type %q", f.ResourceType)
		}
	}
	req := &v1.ReadRelationshipsRequest{
		Consistency: fullyConsistent,
		RelationshipFilter: &v1.RelationshipFilter{
			ResourceType: f.ResourceType, OptionalResourceId: f.ResourceID, OptionalRelation: f.Relation,
		},
		OptionalLimit: f.PageSize,
	}
	if f.SubjectType != "" {
		req.RelationshipFilter.OptionalSubjectFilter = &v1.SubjectFilter{SubjectType: f.SubjectType, OptionalSubjectId: f.SubjectID}
	}
	if f.PageToken != "" {
		req.OptionalCursor = &v1.Cursor{Token: f.PageToken}
	}
	stream, err := e.sdb.Permissions.ReadRelationships(ctx, req)
	if err != nil {
		return nil, "", "", readErr(err)
	}
	var out []string
	var last *v1.Cursor
	var token string
	for {
		resp, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, "", "", readErr(err)
		}
		out = append(out, relString(resp.GetRelationship()))
		last, token = resp.GetAfterResultCursor(), resp.GetReadAt().GetToken()
	}
	next := ""
	if uint32(len(out)) == f.PageSize && last != nil {
		next = last.GetToken()
	}
	return out, next, token, nil
}

func readErr(err error) error {
	if status.Code(err) == codes.InvalidArgument {
		return invalid("page_token", "%s", status.Convert(err).Message())
	}
	return backendErr("ReadRelationships", err)
}

func relString(r *v1.Relationship) string {
	s := r.GetResource().GetObjectType() + ":" + r.GetResource().GetObjectId() + "#" + r.GetRelation() + "@" +
		r.GetSubject().GetObject().GetObjectType() + ":" + r.GetSubject().GetObject().GetObjectId()
	if sr := r.GetSubject().GetOptionalRelation(); sr != "" {
		s += "#" + sr
	}
	if c := r.GetOptionalCaveat(); c != nil {
		s += caveatSuffix(c.GetCaveatName(), c.GetContext())
	}
	return s
}
