package engine

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	v1 "github.com/authzed/authzed-go/proto/authzed/api/v1"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/structpb"
)

// Client is the engine's only path to SpiceDB: authzed-go's v1 clients, over
// the in-process connection to the embedded SpiceDB or over the network to a
// remote one.
type Client struct {
	Permissions v1.PermissionsServiceClient
	Schema      v1.SchemaServiceClient
	Watch       v1.WatchServiceClient
}

// NewClient wraps a connection to SpiceDB.
func NewClient(conn grpc.ClientConnInterface) *Client {
	return &Client{
		Permissions: v1.NewPermissionsServiceClient(conn),
		Schema:      v1.NewSchemaServiceClient(conn),
		Watch:       v1.NewWatchServiceClient(conn),
	}
}

var fullyConsistent = &v1.Consistency{Requirement: &v1.Consistency_FullyConsistent{FullyConsistent: true}}

// backendErr turns a SpiceDB failure into an engine error. Anything that means
// "SpiceDB could not answer" becomes KindUnavailable, so the caller gets a 503
// and never an allow.
func backendErr(op string, err error) error {
	if err == nil {
		return nil
	}
	var e *Error
	if errors.As(err, &e) {
		return err
	}
	if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled) {
		return &Error{Kind: KindUnavailable, Msg: "authorization backend did not answer in time", Err: fmt.Errorf("%s: %w: %w", op, ErrUnavailable, err)}
	}
	switch status.Code(err) {
	case codes.Unavailable, codes.DeadlineExceeded, codes.Canceled, codes.ResourceExhausted, codes.Aborted, codes.Unauthenticated:
		return &Error{Kind: KindUnavailable, Msg: "authorization backend unavailable", Err: fmt.Errorf("%s: %w: %w", op, ErrUnavailable, err)}
	case codes.InvalidArgument:
		// What mandate checks up front, SpiceDB checks again; what slips
		// through is still the request's fault, and says why.
		return &Error{Kind: KindInvalidArgument, Msg: "refused by SpiceDB: " + status.Convert(err).Message(), Err: err}
	case codes.Internal, codes.Unknown:
		if datastoreUnreachable(status.Convert(err).Message()) {
			return &Error{Kind: KindUnavailable, Msg: "authorization backend unavailable", Err: fmt.Errorf("%s: %w: %w", op, ErrUnavailable, err)}
		}
	}
	return &Error{Kind: KindInternal, Msg: "internal error", Err: fmt.Errorf("%s: %w", op, err)}
}

// datastoreUnreachableMarks are how SpiceDB reports, as Internal or Unknown,
// that its Postgres or CockroachDB is unreachable, shutting down or starting
// up (pgx's connection errors, SQLSTATE 57P01 and 57P03).
var datastoreUnreachableMarks = []string{
	"failed to connect to", "connection refused", "connection reset by peer", "conn closed", "unexpected EOF",
	"broken pipe", "no route to host", "i/o timeout", "(SQLSTATE 57P01)", "(SQLSTATE 57P02)", "(SQLSTATE 57P03)",
	"terminating connection due to administrator command", "the database system is shutting down",
	"the database system is starting up",
}

// datastoreUnreachable says a SpiceDB error message means its datastore
// could not be reached: a dependency down (503, retry), not a fault of
// mandate's or of the request (500).
func datastoreUnreachable(msg string) bool {
	for _, m := range datastoreUnreachableMarks {
		if strings.Contains(msg, m) {
			return true
		}
	}
	return false
}

// preconditionFailed reports whether a write was refused by its
// preconditions, and by nothing else: SpiceDB answers FailedPrecondition for
// other refusals too (an unknown caveat or relation), which are no conflict.
func preconditionFailed(err error) bool {
	st := status.Convert(err)
	if st.Code() != codes.FailedPrecondition {
		return false
	}
	for _, d := range st.Details() {
		if info, ok := d.(*errdetails.ErrorInfo); ok {
			return info.GetReason() == v1.ErrorReason_ERROR_REASON_WRITE_OR_DELETE_PRECONDITION_FAILURE.String()
		}
	}
	return false
}

// ctxErr makes err an Unavailable error when ctx ended: SpiceDB reports a
// deadline that passed inside it in several ways (DeadlineExceeded, or
// Internal from its consistency middleware), and every one of them means
// "did not answer in time", never an internal error.
func ctxErr(ctx context.Context, err error) error {
	if err == nil || ctx.Err() == nil {
		return err
	}
	if e := AsError(err); e.Kind == KindInternal {
		return &Error{Kind: KindUnavailable, Msg: "authorization backend did not answer in time", Err: fmt.Errorf("%w: %w", ErrUnavailable, err)}
	}
	return err
}

// writeConflict reports whether SpiceDB refused a write because it collided
// with a concurrent write of the same relationships: a Postgres
// serialization failure that outlived SpiceDB's own retries (Aborted), or
// two TOUCHes of one relationship inserting its new version at once, which
// Postgres reports as a unique violation and SpiceDB as AlreadyExists.
func writeConflict(err error) bool {
	var gs interface{ GRPCStatus() *status.Status }
	if !errors.As(err, &gs) {
		return false
	}
	c := gs.GRPCStatus().Code()
	return c == codes.Aborted || c == codes.AlreadyExists
}

func objRef(r Ref) *v1.ObjectReference {
	return &v1.ObjectReference{ObjectType: r.Type, ObjectId: r.ID}
}

func subRef(r Ref, rel string) *v1.SubjectReference {
	return &v1.SubjectReference{Object: objRef(r), OptionalRelation: rel}
}

func rel(res Ref, relation string, sub Ref, subRel string, caveat string, ctx map[string]any) *v1.Relationship {
	r := &v1.Relationship{Resource: objRef(res), Relation: relation, Subject: subRef(sub, subRel)}
	if caveat != "" {
		s, err := structpb.NewStruct(ctx)
		if err != nil {
			panic(fmt.Sprintf("caveat context is not a struct: %v", err))
		}
		r.OptionalCaveat = &v1.ContextualizedCaveat{CaveatName: caveat, Context: s}
	}
	return r
}

func touch(r *v1.Relationship) *v1.RelationshipUpdate {
	return &v1.RelationshipUpdate{Operation: v1.RelationshipUpdate_OPERATION_TOUCH, Relationship: r}
}

func create(r *v1.Relationship) *v1.RelationshipUpdate {
	return &v1.RelationshipUpdate{Operation: v1.RelationshipUpdate_OPERATION_CREATE, Relationship: r}
}

func del(r *v1.Relationship) *v1.RelationshipUpdate {
	return &v1.RelationshipUpdate{Operation: v1.RelationshipUpdate_OPERATION_DELETE, Relationship: r}
}

var wildcardAgent = Ref{Type: "agent", ID: "*"}

// mustMatch is a precondition that a relationship matching the filter exists.
func mustMatch(res Ref, relation string) *v1.Precondition {
	return &v1.Precondition{
		Operation: v1.Precondition_OPERATION_MUST_MATCH,
		Filter:    &v1.RelationshipFilter{ResourceType: res.Type, OptionalResourceId: res.ID, OptionalRelation: relation},
	}
}

func mustNotMatch(res Ref, relation string) *v1.Precondition {
	return &v1.Precondition{
		Operation: v1.Precondition_OPERATION_MUST_NOT_MATCH,
		Filter:    &v1.RelationshipFilter{ResourceType: res.Type, OptionalResourceId: res.ID, OptionalRelation: relation},
	}
}

// readRels reads every relationship matching filter, at full consistency.
func (c *Client) readRels(ctx context.Context, filter *v1.RelationshipFilter) ([]*v1.Relationship, error) {
	rels, _, err := c.readRelsAt(ctx, filter)
	return rels, err
}

// readRelsAt is readRels, also returning the revision it read at (empty when
// nothing matched).
func (c *Client) readRelsAt(ctx context.Context, filter *v1.RelationshipFilter) ([]*v1.Relationship, string, error) {
	stream, err := c.Permissions.ReadRelationships(ctx, &v1.ReadRelationshipsRequest{
		Consistency:        fullyConsistent,
		RelationshipFilter: filter,
	})
	if err != nil {
		return nil, "", ctxErr(ctx, backendErr("ReadRelationships", err))
	}
	var out []*v1.Relationship
	var token string
	for {
		resp, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return out, token, nil
		}
		if err != nil {
			return nil, "", ctxErr(ctx, backendErr("ReadRelationships", err))
		}
		out = append(out, resp.GetRelationship())
		token = resp.GetReadAt().GetToken()
	}
}

// write applies updates atomically, guarded by preconditions, and tells the
// invalidator before returning. A failed precondition becomes onConflict.
func (e *Engine) write(ctx context.Context, updates []*v1.RelationshipUpdate, pre []*v1.Precondition, onConflict error) (string, error) {
	tok, err := e.sdb.write(ctx, updates, pre, onConflict)
	if err == nil {
		e.invalidate(tok, updates)
	}
	return tok, err
}

func (c *Client) write(ctx context.Context, updates []*v1.RelationshipUpdate, pre []*v1.Precondition, onConflict error) (string, error) {
	resp, err := c.Permissions.WriteRelationships(ctx, &v1.WriteRelationshipsRequest{Updates: updates, OptionalPreconditions: pre})
	if err != nil {
		if preconditionFailed(err) && onConflict != nil {
			return "", onConflict
		}
		return "", ctxErr(ctx, backendErr("WriteRelationships", err))
	}
	return resp.GetWrittenAt().GetToken(), nil
}

func ts(t time.Time) string { return t.UTC().Format(time.RFC3339Nano) }

// caveatTime reads a timestamp field of a relationship's caveat context.
func caveatTime(r *v1.Relationship, field string) (time.Time, bool) {
	s := r.GetOptionalCaveat().GetContext().GetFields()[field].GetStringValue()
	if s == "" {
		return time.Time{}, false
	}
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		return time.Time{}, false
	}
	return t, true
}

func caveatString(r *v1.Relationship, field string) string {
	return r.GetOptionalCaveat().GetContext().GetFields()[field].GetStringValue()
}

func recordContext(created, expires time.Time, note, target string) map[string]any {
	return map[string]any{"created_at": ts(created), "expires_at": ts(expires), "note": note, "target": target}
}

func lifetimeContext(expires time.Time) map[string]any {
	return map[string]any{"expires_at": ts(expires)}
}
