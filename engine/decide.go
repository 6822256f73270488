package engine

import (
	"context"
	"fmt"
	"strings"
	"time"

	v1 "github.com/authzed/authzed-go/proto/authzed/api/v1"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/mandate-dev/mandate/schema"
)

const (
	reservedContextNow = "now"
	maxContextFields   = 64
	// maxContextBytes bounds a check's context, encoded; a context is a
	// handful of short values, and it is hashed into every cache key.
	maxContextBytes = 8 << 10
)

// reservedContext are the parameters of mandate's core caveats. A caller
// cannot supply them: "now" is mandate's clock, the others come from the
// stored relationships.
var reservedContext = []string{reservedContextNow, "expires_at", "grant_id", "created_at", "note", "target",
	"allowed_cidrs", "time_zone", "start_minute", "end_minute", "max_risk", "required_environment"}

// ---- checks --------------------------------------------------------------

// ValidateQuery parses and checks a query's fields against the schema.
func (e *Engine) ValidateQuery(ctx context.Context, subject, permission, resource string, qctx *structpb.Struct) (Query, error) {
	sub, err := ParseRef("subject", subject)
	if err != nil {
		return Query{}, err
	}
	res, err := ParseRef("resource", resource)
	if err != nil {
		return Query{}, err
	}
	if sub.Type == schema.TypeTask || sub.Type == schema.TypeGrant {
		return Query{}, invalid("subject", "type %q cannot be a subject; check an agent or a user", sub.Type)
	}
	if err := e.requireType(ctx, "subject", sub); err != nil {
		return Query{}, err
	}
	if err := e.requireType(ctx, "resource", res); err != nil {
		return Query{}, err
	}
	if schema.IsCore(res.Type) {
		return Query{}, invalid("resource", "type %q is one of mandate's own types; check a resource", res.Type)
	}
	if err := e.requirePermission(ctx, "permission", res.Type, permission); err != nil {
		return Query{}, err
	}
	if err := e.validateContext(qctx); err != nil {
		return Query{}, err
	}
	return Query{Subject: sub, Permission: permission, Resource: res, Context: qctx}, nil
}

// validateContext refuses the context keys mandate's own caveats use, too
// many keys, and values of the wrong type for any caveat of the schema that
// reads them, the grant conditions included.
func (e *Engine) validateContext(qctx *structpb.Struct) error {
	if len(qctx.GetFields()) == 0 {
		return nil
	}
	for _, k := range reservedContext {
		if _, ok := qctx.GetFields()[k]; ok {
			return invalid("context."+k, "is reserved: mandate's own caveats use it")
		}
	}
	if len(qctx.GetFields()) > maxContextFields {
		return invalid("context", "has more than %d fields", maxContextFields)
	}
	if proto.Size(qctx) > maxContextBytes {
		return invalid("context", "is larger than %d bytes", maxContextBytes)
	}
	// The grant conditions' keys (source_ip, risk_score, environment) are
	// parameters of core caveats, so this checks them too.
	if key, err := e.Schema().ValidateCheckContext(qctx.GetFields()); err != nil {
		return invalid("context."+key, "%v", err)
	}
	return nil
}

// Decide answers a validated query against SpiceDB, at full consistency.
func (e *Engine) Decide(ctx context.Context, q Query) (Decision, error) {
	ctx, cancel := e.withTimeout(ctx)
	defer cancel()
	if q.Subject.Type != schema.TypeAgent {
		return e.decideUser(ctx, q)
	}
	return e.decideAgent(ctx, q)
}

func (e *Engine) caveatContext(q Query, now time.Time) *structpb.Struct {
	fields := make(map[string]*structpb.Value, len(q.Context.GetFields())+1)
	for k, v := range q.Context.GetFields() {
		fields[k] = v
	}
	fields[reservedContextNow] = structpb.NewStringValue(ts(now))
	return &structpb.Struct{Fields: fields}
}

func (e *Engine) decideUser(ctx context.Context, q Query) (Decision, error) {
	resp, err := e.checkAfterWrites(ctx, &v1.CheckPermissionRequest{
		Resource:   objRef(q.Resource),
		Permission: q.Permission,
		Subject:    subRef(q.Subject, ""),
		Context:    e.caveatContext(q, e.now()),
	})
	if err != nil {
		return Decision{}, err
	}
	d := Decision{Principal: q.Subject, Token: resp.GetCheckedAt().GetToken(), Chain: []Ref{q.Subject}}
	switch resp.GetPermissionship() {
	case v1.CheckPermissionResponse_PERMISSIONSHIP_HAS_PERMISSION:
		d.Allowed, d.Reason = true, ReasonAllowed
	case v1.CheckPermissionResponse_PERMISSIONSHIP_CONDITIONAL_PERMISSION:
		d.Reason, d.MissingContext = ReasonMissingContext, resp.GetPartialCaveatInfo().GetMissingRequiredContext()
	default:
		d.Reason = ReasonNoPermission
	}
	return d, nil
}

// checkUser reports whether a user holds a permission now.
func (e *Engine) checkUser(ctx context.Context, user Ref, perm string, res Ref, qctx *structpb.Struct) (bool, error) {
	d, err := e.decideUser(ctx, Query{Subject: user, Permission: perm, Resource: res, Context: qctx})
	return d.Allowed, err
}

// MandateObject is the one object of type mandate, which holds the global switches.
var MandateObject = Ref{Type: schema.TypeMandate, ID: "global"}

// decideAgent decides an agent check with the one evaluator of the legs.
func (e *Engine) decideAgent(ctx context.Context, q Query) (Decision, error) {
	x, _, err := e.evaluateQuery(ctx, q, evalMode{})
	if err != nil {
		return Decision{}, err
	}
	return x.Decision, nil
}

// bulkPairs returns the items of a CheckBulkPermissions answer, failing
// closed when SpiceDB could not answer one of them.
func bulkPairs(bulk *v1.CheckBulkPermissionsResponse, want int) ([]*v1.CheckBulkPermissionsResponseItem, error) {
	pairs := bulk.GetPairs()
	if len(pairs) != want {
		return nil, &Error{Kind: KindInternal, Msg: "internal error", Err: errorf("CheckBulkPermissions returned %d pairs for %d items", len(pairs), want)}
	}
	out := make([]*v1.CheckBulkPermissionsResponseItem, len(pairs))
	for i, p := range pairs {
		if p.GetError() != nil {
			// SpiceDB could not answer this item (a datastore failure, for
			// example): the backend is unavailable, and nothing is allowed.
			return nil, &Error{Kind: KindUnavailable, Msg: "authorization backend unavailable",
				Err: fmt.Errorf("CheckBulkPermissions item: %w: %s", ErrUnavailable, p.GetError().GetMessage())}
		}
		out[i] = p.GetItem()
	}
	return out, nil
}

func dedupe(ids []string) []string {
	seen := make(map[string]bool, len(ids))
	out := ids[:0:0]
	for _, id := range ids {
		if id != "" && !seen[id] {
			seen[id] = true
			out = append(out, id)
		}
	}
	return out
}

func errorf(format string, args ...any) error { return fmt.Errorf(format, args...) }

func cutLast(s, sep string) (string, string, bool) {
	i := strings.LastIndex(s, sep)
	if i < 0 {
		return "", "", false
	}
	return s[:i], s[i+len(sep):], true
}
