// Package client is a small Go client for resource services that ask mandate
// whether an agent may act. It fails closed: an error is never an allow.
//
// It keeps no decision cache of its own, on purpose. mandate's decision cache
// is the one that every revocation, suspension, task completion, freeze and
// grant removal invalidates before the write returns (and on every replica,
// through SpiceDB's Watch). A second cache here would keep answering "allow"
// after a revocation until its entries aged out, which is exactly the gap an
// agent must not get. A cached Check in mandate costs well under a
// millisecond, so there is little to save.
package client

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"time"

	"github.com/authzed/grpcutil"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/structpb"

	mandatev1 "github.com/mandate-dev/mandate/proto/mandate/v1"
)

// Config says how to reach mandate. Zero values take the defaults noted.
type Config struct {
	// Addr is mandate's gRPC address, host:port. Required.
	Addr string
	// Key is the API key sent as "authorization: Bearer <key>" on every call.
	// Check and CheckBulk need a checker, gateway or admin key; Explain and
	// HasAccess a reviewer, gateway or admin key. Required, unless TLS
	// carries a client certificate that mandate's keys file maps to a role
	// (spiffe_id or dns_name).
	Key string
	// TLS, when set, dials with TLS. Otherwise Plaintext must be true.
	TLS *tls.Config
	// Plaintext dials without TLS (mandate on localhost, or behind a mesh
	// that encrypts). It must be said explicitly.
	Plaintext bool
	// Timeout bounds one call, retries included, when the caller's context
	// has no earlier deadline. Default 1s.
	Timeout time.Duration
	// Attempts bounds the tries of one call; only Unavailable is retried.
	// Default 3.
	Attempts int
	// Backoff is the base delay before a retry; each retry waits a random
	// time up to Backoff * 2^retry (full jitter). Default 25ms.
	Backoff time.Duration
	// DialOptions are added to the defaults (tests, interceptors).
	DialOptions []grpc.DialOption
}

// hasClientCert reports whether t presents a client certificate.
func hasClientCert(t *tls.Config) bool {
	return t != nil && (len(t.Certificates) > 0 || t.GetClientCertificate != nil)
}

// Validate reports whether the config is usable.
func (c *Config) Validate() error {
	switch {
	case c.Addr == "":
		return errors.New("client: Addr is required")
	case c.Key == "" && !hasClientCert(c.TLS):
		return errors.New("client: Key is required, or a client certificate in TLS")
	case c.TLS == nil && !c.Plaintext:
		return errors.New("client: set TLS, or Plaintext to dial without it")
	case c.TLS != nil && c.Plaintext:
		return errors.New("client: TLS and Plaintext are exclusive")
	case c.Timeout < 0, c.Attempts < 0, c.Backoff < 0:
		return errors.New("client: Timeout, Attempts and Backoff must not be negative")
	}
	return nil
}

func (c *Config) withDefaults() Config {
	out := *c
	if out.Timeout == 0 {
		out.Timeout = time.Second
	}
	if out.Attempts == 0 {
		out.Attempts = 3
	}
	if out.Backoff == 0 {
		out.Backoff = 25 * time.Millisecond
	}
	return out
}

// Client asks mandate. It is safe for concurrent use.
type Client struct {
	cfg    Config // defaults filled
	conn   *grpc.ClientConn
	check  mandatev1.CheckServiceClient
	review mandatev1.ReviewServiceClient
}

// New dials mandate. The connection is made lazily, so New does not fail
// when mandate is down; the first call does.
func New(cfg Config) (*Client, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	opts := []grpc.DialOption{}
	if cfg.TLS != nil {
		opts = append(opts, grpc.WithTransportCredentials(credentials.NewTLS(cfg.TLS)))
		if cfg.Key != "" {
			// Without a key, the client certificate is the credential.
			opts = append(opts, grpcutil.WithBearerToken(cfg.Key))
		}
	} else {
		opts = append(opts, grpc.WithTransportCredentials(insecure.NewCredentials()), grpcutil.WithInsecureBearerToken(cfg.Key))
	}
	conn, err := grpc.NewClient(cfg.Addr, append(opts, cfg.DialOptions...)...)
	if err != nil {
		return nil, fmt.Errorf("client: dial %s: %w", cfg.Addr, err)
	}
	return &Client{cfg: cfg, conn: conn, check: mandatev1.NewCheckServiceClient(conn), review: mandatev1.NewReviewServiceClient(conn)}, nil
}

// Close closes the connection.
func (c *Client) Close() error { return c.conn.Close() }

// Conn is the underlying connection, for health checks.
func (c *Client) Conn() *grpc.ClientConn { return c.conn }

// ReasonCode is mandate's reason for a decision (see the README's table).
type ReasonCode string

// The reason codes a caller most often branches on; mandate may send others.
const (
	Allowed                  ReasonCode = "ALLOWED"
	NoGrant                  ReasonCode = "NO_GRANT"
	UnknownSubject           ReasonCode = "UNKNOWN_SUBJECT"
	AgentRevoked             ReasonCode = "AGENT_REVOKED"
	AgentSuspended           ReasonCode = "AGENT_SUSPENDED"
	AgentExpired             ReasonCode = "AGENT_EXPIRED"
	TaskCompleted            ReasonCode = "TASK_COMPLETED"
	PrincipalLacksPermission ReasonCode = "PRINCIPAL_LACKS_PERMISSION"
	AgentsFrozen             ReasonCode = "AGENTS_FROZEN"
	NoPermission             ReasonCode = "NO_PERMISSION"
	ChainMismatch            ReasonCode = "CHAIN_MISMATCH"
	// InvalidToken is the deny of one CheckBulk item whose SubjectToken
	// mandate refused (forged, expired, malformed, or of another issuer).
	InvalidToken ReasonCode = "INVALID_TOKEN"
)

// Request is one question: may Subject (or whoever holds SubjectToken) do
// Permission on Resource?
type Request struct {
	// Subject is "agent:<id>" or "user:<id>". Leave it empty when
	// SubjectToken is set.
	Subject string
	// SubjectToken is the agent's own mandate token: mandate verifies it and
	// checks its agent, requiring the token's delegation chain to be the
	// graph's. Set it instead of Subject (CheckToken does).
	SubjectToken string
	Permission   string
	// Resource is "<type>:<id>".
	Resource string
	// Context is passed to caveats and grant conditions.
	Context map[string]any
	// CorrelationID links related actions across systems; it is audited.
	CorrelationID string
	// Reason is the agent's stated reasoning; it is audited.
	Reason string
	// ConsistencyToken makes the check at least as fresh as an earlier answer.
	ConsistencyToken string
}

// Decision is mandate's answer. The zero Decision denies.
type Decision struct {
	Allowed    bool
	ReasonCode ReasonCode
	// DecisionID finds the audit record.
	DecisionID string
	Principal  string
	Task       string
	Chain      []string
	// ValidUntil is the earliest expiry the allow relied on; zero if none.
	ValidUntil time.Time
	// MissingContext names the context fields a condition needed.
	MissingContext []string
	// Condition names the grant condition that failed or lacked context.
	Condition string
	// Bound names the behavioural bound this check crossed.
	Bound            string
	ConsistencyToken string
}

func (r Request) proto() (*mandatev1.CheckRequest, error) {
	req := &mandatev1.CheckRequest{Subject: r.Subject, SubjectToken: r.SubjectToken, Permission: r.Permission, Resource: r.Resource,
		CorrelationId: r.CorrelationID, Reason: r.Reason, ConsistencyToken: r.ConsistencyToken}
	if r.Context != nil {
		s, err := structpb.NewStruct(r.Context)
		if err != nil {
			return nil, fmt.Errorf("client: context: %w", err)
		}
		req.Context = s
	}
	return req, nil
}

func decision(r *mandatev1.CheckResponse) Decision {
	d := Decision{Allowed: r.GetAllowed(), ReasonCode: ReasonCode(r.GetReasonCode()), DecisionID: r.GetDecisionId(),
		Principal: r.GetPrincipal(), Task: r.GetTask(), Chain: r.GetChain(), MissingContext: r.GetMissingContext(),
		Condition: r.GetCondition(), Bound: r.GetBound(), ConsistencyToken: r.GetConsistencyToken()}
	if r.GetValidUntil() != nil {
		d.ValidUntil = r.GetValidUntil().AsTime()
	}
	// Belt and braces: only an explicit ALLOWED with allowed=true allows.
	if d.ReasonCode != Allowed {
		d.Allowed = false
	}
	return d
}

// Check asks one question. On any error the Decision denies.
func (c *Client) Check(ctx context.Context, r Request) (Decision, error) {
	req, err := r.proto()
	if err != nil {
		return Decision{}, err
	}
	resp, err := call(ctx, c, func(ctx context.Context) (*mandatev1.CheckResponse, error) { return c.check.Check(ctx, req) })
	if err != nil {
		return Decision{}, tokenError(err)
	}
	return decision(resp), nil
}

// CheckToken checks on behalf of whoever holds token, the agent's own
// mandate token (an at+jwt from token exchange): it is sent as
// subject_token, and mandate verifies it, takes the agent from it and
// requires its delegation chain to be the graph's. r.Subject and
// r.SubjectToken are ignored. A token mandate refuses is an error for which
// IsInvalidToken is true (and the Decision denies).
func (c *Client) CheckToken(ctx context.Context, token string, r Request) (Decision, error) {
	if token == "" {
		return Decision{}, &TokenError{Message: "the token is empty"}
	}
	r.Subject, r.SubjectToken = "", token
	return c.Check(ctx, r)
}

// ErrInvalidToken is what every TokenError matches with errors.Is.
var ErrInvalidToken = errors.New("client: mandate refused the agent's token")

// TokenError is mandate refusing an agent's token: forged, expired, not yet
// valid, of another issuer, malformed, or sent to a server that verifies no
// tokens. It is the caller's authentication failing (a 401), not an outage
// and not a deny of what the agent asked.
type TokenError struct {
	// Field is the request field mandate named ("subject_token", or
	// "checks[3].subject_token" in a bulk call).
	Field string
	// Message is mandate's reason.
	Message string
	err     error
}

func (e *TokenError) Error() string {
	if e.Field == "" {
		return "client: invalid agent token: " + e.Message
	}
	return "client: invalid agent token: " + e.Field + ": " + e.Message
}

// Is makes errors.Is(err, ErrInvalidToken) true.
func (e *TokenError) Is(target error) bool { return target == ErrInvalidToken }

// Unwrap is mandate's status.
func (e *TokenError) Unwrap() error { return e.err }

// IsInvalidToken reports whether err is mandate refusing the agent's token.
func IsInvalidToken(err error) bool { return errors.Is(err, ErrInvalidToken) }

// tokenError turns an InvalidArgument naming a subject_token field into a
// *TokenError; any other error is returned as is.
func tokenError(err error) error {
	st, ok := status.FromError(err)
	if !ok || st.Code() != codes.InvalidArgument {
		return err
	}
	for _, d := range st.Details() {
		if info, ok := d.(*errdetails.ErrorInfo); ok {
			if f := info.GetMetadata()["field"]; f == "subject_token" || strings.HasSuffix(f, ".subject_token") {
				msg := strings.TrimPrefix(st.Message(), f+": ")
				return &TokenError{Field: f, Message: msg, err: err}
			}
		}
	}
	return err
}

// CheckBulk asks several questions in one call; answers are in request
// order. On any error every Decision denies (the slice is nil). Each item
// names its own Subject or SubjectToken; an item whose token mandate refuses
// is denied alone, with reason code InvalidToken, and the others are
// answered.
func (c *Client) CheckBulk(ctx context.Context, rs []Request) ([]Decision, error) {
	req := &mandatev1.CheckBulkRequest{}
	for i, r := range rs {
		p, err := r.proto()
		if err != nil {
			return nil, fmt.Errorf("checks[%d]: %w", i, err)
		}
		req.Checks = append(req.Checks, p)
	}
	resp, err := call(ctx, c, func(ctx context.Context) (*mandatev1.CheckBulkResponse, error) { return c.check.CheckBulk(ctx, req) })
	if err != nil {
		return nil, tokenError(err)
	}
	if len(resp.GetResults()) != len(rs) {
		return nil, fmt.Errorf("client: mandate answered %d of %d checks", len(resp.GetResults()), len(rs))
	}
	out := make([]Decision, len(rs))
	for i, r := range resp.GetResults() {
		out[i] = decision(r)
	}
	return out, nil
}

// Explanation says, leg by leg, why a check would allow or deny and what
// would change the answer. It is for people and error messages, never a
// decision: Explain is not audited as a check and not counted against bounds.
type Explanation struct {
	Allowed     bool
	ReasonCode  ReasonCode
	Legs        []Leg
	WouldChange []string
	Chain       []string
}

// Leg is one leg of the check.
type Leg struct {
	Name   string
	Passed bool
	Detail string
	Path   []string
}

// Explain asks why (needs a reviewer or admin key).
func (c *Client) Explain(ctx context.Context, r Request) (Explanation, error) {
	req := &mandatev1.ExplainRequest{Subject: r.Subject, Permission: r.Permission, Resource: r.Resource}
	if r.Context != nil {
		s, err := structpb.NewStruct(r.Context)
		if err != nil {
			return Explanation{}, fmt.Errorf("client: context: %w", err)
		}
		req.Context = s
	}
	resp, err := call(ctx, c, func(ctx context.Context) (*mandatev1.ExplainResponse, error) { return c.review.Explain(ctx, req) })
	if err != nil {
		return Explanation{}, err
	}
	e := Explanation{Allowed: resp.GetAllowed() && resp.GetReasonCode() == string(Allowed), ReasonCode: ReasonCode(resp.GetReasonCode()),
		WouldChange: resp.GetWouldChange(), Chain: resp.GetChain()}
	for _, l := range resp.GetLegs() {
		e.Legs = append(e.Legs, Leg{Name: l.GetName(), Passed: l.GetPassed(), Detail: l.GetDetail(), Path: l.GetPath()})
	}
	return e, nil
}

// HasAccess reports whether agentID (bare or "agent:<id>") can reach at least
// one resource of resourceType with permission now: a live grant that a
// Check would allow. It needs a reviewer or admin key and is not audited as
// a check (so it counts against no behavioural bound).
func (c *Client) HasAccess(ctx context.Context, agentID, resourceType, permission string) (bool, error) {
	if len(agentID) > 6 && agentID[:6] == "agent:" {
		agentID = agentID[6:]
	}
	req := &mandatev1.ListAgentAccessRequest{Id: agentID, ResourceType: resourceType, Permission: permission, PageSize: 1}
	resp, err := call(ctx, c, func(ctx context.Context) (*mandatev1.ListAgentAccessResponse, error) {
		return c.review.ListAgentAccess(ctx, req)
	})
	if err != nil {
		if status.Code(err) == codes.NotFound {
			return false, nil
		}
		return false, err
	}
	return len(resp.GetAccess()) > 0, nil
}

// IsUnavailable reports whether err means mandate could not be reached or
// could not decide in time (as opposed to refusing the request).
func IsUnavailable(err error) bool {
	switch status.Code(err) {
	case codes.Unavailable, codes.DeadlineExceeded, codes.Canceled, codes.ResourceExhausted, codes.Aborted:
		return true
	}
	return errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled)
}

// IsInvalid reports whether mandate refused the request itself as malformed
// (an unknown resource type, a bad reference or context): a deny, not an
// outage. A refused agent token is not one: see IsInvalidToken.
func IsInvalid(err error) bool {
	return status.Code(err) == codes.InvalidArgument && !IsInvalidToken(err)
}

// call runs f under the client's deadline, retrying Unavailable with full
// jitter, at most cfg.Attempts times.
func call[T any](ctx context.Context, c *Client, f func(context.Context) (T, error)) (T, error) {
	ctx, cancel := context.WithTimeout(ctx, c.cfg.Timeout)
	defer cancel()
	var zero T
	var err error
	for attempt := 0; attempt < c.cfg.Attempts; attempt++ {
		if attempt > 0 {
			ceiling := c.cfg.Backoff << min(attempt-1, 10)
			t := time.NewTimer(rand.N(ceiling) + 1)
			select {
			case <-ctx.Done():
				t.Stop()
				return zero, fmt.Errorf("client: %w (last error: %v)", ctx.Err(), err)
			case <-t.C:
			}
		}
		var out T
		out, err = f(ctx)
		if err == nil {
			return out, nil
		}
		if status.Code(err) != codes.Unavailable {
			return zero, err
		}
	}
	return zero, err
}
