// Package middleware puts a mandate Check in front of net/http handlers and
// gRPC services. Every request is checked; nothing is cached here (see the
// client package for why); and when mandate cannot answer, the request is
// refused with 503 / Unavailable, never passed through.
//
// Who acts is the agent's own mandate token, read from
// "Authorization: Bearer <token>" (HTTP) or the "authorization" metadata
// (gRPC) and sent to mandate as subject_token: mandate verifies it, takes
// the agent from it and requires its delegation chain to be the graph's, on
// every request. For deployments whose agents carry no mandate token yet,
// TrustedHeader and TrustedMetadata read an agent id set by a trusted proxy
// instead; they are off unless chosen.
package middleware

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strings"

	"github.com/mandate-dev/mandate/client"
)

// Checker is the part of *client.Client the middleware uses.
type Checker interface {
	Check(ctx context.Context, r client.Request) (client.Decision, error)
}

// Target is what a request asks to do.
type Target struct {
	Permission string
	// Resource is "<type>:<id>".
	Resource string
	// Context is passed to mandate's caveats and grant conditions.
	Context map[string]any
}

// Agent is who sends a request, as an identity function establishes it:
// the agent's own token, or (trusted-proxy mode only) its subject.
type Agent struct {
	// Token is the agent's mandate token, sent to mandate as subject_token.
	Token string
	// Subject is "agent:<id>", set by TrustedHeader and TrustedMetadata.
	Subject string
}

// request puts who acts into r.
func (a Agent) request(r client.Request) client.Request {
	r.Subject, r.SubjectToken = a.Subject, a.Token
	return r
}

// ErrNoAgent is what an identity function returns (wrapped) when no agent
// can be established; the request gets 401 / Unauthenticated.
var ErrNoAgent = errors.New("no agent")

// ErrInvalidToken is what an identity function returns (wrapped) for a token
// that is refused outright; the request gets 401 with error="invalid_token"
// (Unauthenticated with reason INVALID_TOKEN over gRPC). A token mandate
// refuses gets the same answer.
var ErrInvalidToken = errors.New("invalid token")

// errMalformed is an Authorization header that is not one bearer token.
var errMalformed = fmt.Errorf("%w: send exactly one `Authorization: Bearer <token>`", ErrNoAgent)

// MaxTokenLen bounds the bearer token accepted.
const MaxTokenLen = 16 << 10

// bearerToken reads the agent's token from the values of the Authorization
// header (or the gRPC "authorization" metadata). It is the one place the
// middleware reads a bearer token, for HTTP and gRPC alike.
func bearerToken(values []string) (string, error) {
	if len(values) == 0 {
		return "", ErrNoAgent
	}
	if len(values) > 1 {
		return "", errMalformed
	}
	scheme, token, ok := strings.Cut(strings.TrimSpace(values[0]), " ")
	token = strings.TrimSpace(token)
	if !ok || !strings.EqualFold(scheme, "bearer") || token == "" {
		return "", errMalformed
	}
	if len(token) > MaxTokenLen || strings.Count(token, ".") != 2 {
		return "", fmt.Errorf("%w: not a mandate agent token (a JWT)", ErrInvalidToken)
	}
	return token, nil
}

// audienceOK refuses a token whose aud does not name audience. The payload
// is read without checking the signature, which is sound because mandate
// verifies the very same bytes before anything is allowed: a token that
// passes here and fails there is a 401 all the same.
func audienceOK(token, audience string) error {
	if audience == "" || token == "" {
		return nil
	}
	parts := strings.Split(token, ".")
	payload, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		return fmt.Errorf("%w: a malformed payload", ErrInvalidToken)
	}
	var claims struct {
		Aud json.RawMessage `json:"aud"`
	}
	if err := json.Unmarshal(payload, &claims); err != nil {
		return fmt.Errorf("%w: malformed claims", ErrInvalidToken)
	}
	var auds []string
	var one string
	if json.Unmarshal(claims.Aud, &one) == nil {
		auds = []string{one}
	} else if json.Unmarshal(claims.Aud, &auds) != nil {
		return fmt.Errorf("%w: a malformed aud", ErrInvalidToken)
	}
	if !slices.Contains(auds, audience) {
		return fmt.Errorf("%w: the token was issued for another resource (aud %q), not %q", ErrInvalidToken, auds, audience)
	}
	return nil
}

var agentIDRe = regexp.MustCompile(`^[a-zA-Z0-9_\-]{1,128}$`)

// AgentSubject turns an agent id, bare ("agt_…") or "agent:agt_…", into the
// subject mandate checks. It refuses anything else, including "user:…": the
// middleware protects agents' access and a header must never name a human.
func AgentSubject(v string) (string, error) {
	v = strings.TrimSpace(strings.TrimPrefix(v, "agent:"))
	if v == "" {
		return "", ErrNoAgent
	}
	if !agentIDRe.MatchString(v) {
		return "", fmt.Errorf("%w: %q is not an agent id", ErrNoAgent, v)
	}
	return "agent:" + v, nil
}

// MaxReasonLen bounds the agent's stated reason that is sent to mandate.
const MaxReasonLen = 1024

var traceparentRe = regexp.MustCompile(`^[0-9a-f]{2}-([0-9a-f]{32})-[0-9a-f]{16}-[0-9a-f]{2}$`)

// Correlation picks the correlation id: X-Correlation-Id if set, else the
// trace id of a W3C traceparent, else "". get reads one header or metadata
// value by lower-case name.
func Correlation(get func(name string) string) string {
	if v := strings.TrimSpace(get("x-correlation-id")); v != "" {
		return truncate(v, 256)
	}
	if m := traceparentRe.FindStringSubmatch(strings.TrimSpace(get("traceparent"))); m != nil && m[1] != strings.Repeat("0", 32) {
		return m[1]
	}
	return ""
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n]
}

// actor names who acted in logs: the agent of the decision when mandate
// answered, else the trusted subject; never the token itself.
func actor(a Agent, d client.Decision) string {
	if len(d.Chain) > 0 {
		return d.Chain[0]
	}
	if a.Subject != "" {
		return a.Subject
	}
	return "(agent token)"
}

type decisionKey struct{}

// DecisionFrom returns the allow that let the request through, for handlers
// that want its principal, task, chain (Chain[0] is the acting agent) or
// decision id.
func DecisionFrom(ctx context.Context) (client.Decision, bool) {
	d, ok := ctx.Value(decisionKey{}).(client.Decision)
	return d, ok
}

func withDecision(ctx context.Context, d client.Decision) context.Context {
	return context.WithValue(ctx, decisionKey{}, d)
}
