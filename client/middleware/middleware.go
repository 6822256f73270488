// Package middleware puts a mandate Check in front of net/http handlers and
// gRPC services. Every request is checked; nothing is cached here (see the
// client package for why); and when mandate cannot answer, the request is
// refused with 503 / Unavailable, never passed through.
package middleware

import (
	"context"
	"errors"
	"fmt"
	"regexp"
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

// ErrNoAgent is what an identity function returns when no agent can be
// established; the request gets 401 / Unauthenticated.
var ErrNoAgent = errors.New("no agent")

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

type decisionKey struct{}

// DecisionFrom returns the allow that let the request through, for handlers
// that want its principal, task or decision id.
func DecisionFrom(ctx context.Context) (client.Decision, bool) {
	d, ok := ctx.Value(decisionKey{}).(client.Decision)
	return d, ok
}

func withDecision(ctx context.Context, d client.Decision) context.Context {
	return context.WithValue(ctx, decisionKey{}, d)
}
