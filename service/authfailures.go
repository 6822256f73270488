package service

import (
	"context"
	"errors"
	"log/slog"
	"strings"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
)

// AuthFailures counts and logs refused callers, so that probing with bad
// keys, or a service whose role is too small, leaves a trace.
type AuthFailures struct {
	// Total counts refusals by reason: unauthenticated (no, malformed or
	// unknown key) or forbidden (a known key whose role is too small).
	Total *prometheus.CounterVec
	// Log receives one line per forbidden call, naming the key. Unknown
	// keys are only counted: their "name" is whatever the caller sent.
	Log *slog.Logger
}

// NewAuthFailures registers mandate_auth_failures_total on reg.
func NewAuthFailures(reg prometheus.Registerer, log *slog.Logger) *AuthFailures {
	f := &AuthFailures{
		Total: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "mandate_auth_failures_total",
			Help: "Calls refused before reaching a handler, by reason: unauthenticated (no, malformed or unknown key) or forbidden (the key's role may not call the method).",
		}, []string{"reason"}),
		Log: log,
	}
	reg.MustRegister(f.Total)
	return f
}

// ObserveAuthFailures makes k count and log every refused call with f.
// Call it once, before serving.
func (k *Keys) ObserveAuthFailures(f *AuthFailures) { k.failures = f }

// authorizeObserved is authorize, with refusals counted and logged.
func (k *Keys) authorizeObserved(ctx context.Context, method string) (context.Context, error) {
	out, err := k.authorize(ctx, method)
	if err == nil || k.failures == nil {
		return out, err
	}
	var ae *authError
	if !errors.As(err, &ae) {
		return out, err
	}
	if ae.code == codes.Unauthenticated {
		k.failures.Total.WithLabelValues("unauthenticated").Inc()
		return out, err
	}
	k.failures.Total.WithLabelValues("forbidden").Inc()
	if k.failures.Log != nil {
		name, role := "", Role("")
		md, _ := metadata.FromIncomingContext(ctx)
		if v := md.Get("authorization"); len(v) == 1 {
			if _, secret, ok := strings.Cut(v[0], " "); ok {
				if key, ok := k.Lookup(strings.TrimSpace(secret)); ok {
					name, role = key.Name, key.Role
				}
			}
		} else if leaf := verifiedLeaf(ctx); leaf != nil {
			if key, ok := k.certKey(leaf); ok {
				name, role = key.Name, key.Role
			}
		}
		k.failures.Log.WarnContext(ctx, "call refused: the key's role may not call this method",
			"key", name, "role", role, "method", method, "request_id", requestID(ctx))
	}
	return out, err
}
