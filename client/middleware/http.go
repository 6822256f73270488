package middleware

import (
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"

	"github.com/mandate-dev/mandate/client"
)

// Resolver maps a request to what it asks to do. An error refuses the
// request with 403 and reason code INVALID_REQUEST; it is never an allow.
type Resolver func(*http.Request) (Target, error)

// PathTemplate is a Resolver for routes of an http.ServeMux pattern: it
// fills tmpl ("repo:{owner}/{name}") from r.PathValue. A value that is
// missing, empty or contains a separator of the template refuses the
// request (see client.Template). It panics on a malformed template, which
// is a programming error.
func PathTemplate(permission, tmpl string) Resolver {
	t := client.MustParseTemplate(tmpl)
	return func(r *http.Request) (Target, error) {
		res, err := t.Expand(func(name string) (string, error) {
			v := r.PathValue(name)
			if v == "" {
				return "", errors.New("missing from the path")
			}
			return v, nil
		})
		if err != nil {
			return Target{}, err
		}
		return Target{Permission: permission, Resource: res}, nil
	}
}

// Identity establishes which agent sends the request. It returns an error
// wrapping ErrNoAgent when none can be established, or ErrInvalidToken for
// a token refused outright.
type Identity func(*http.Request) (Agent, error)

// BearerToken is the default identity: the agent's own mandate token from
// "Authorization: Bearer <token>", which mandate verifies on every check.
func BearerToken() Identity {
	return func(r *http.Request) (Agent, error) {
		t, err := bearerToken(r.Header.Values("Authorization"))
		return Agent{Token: t}, err
	}
}

// TrustedHeader reads the agent id from a header that a trusted proxy sets
// after authenticating the agent, for deployments whose agents carry no
// mandate token. Use it only where every request passes through that proxy
// and the proxy strips the header from what clients send; otherwise any
// client can name any agent. It must be chosen explicitly.
func TrustedHeader(name string) Identity {
	return func(r *http.Request) (Agent, error) {
		vs := r.Header.Values(name)
		if len(vs) != 1 {
			return Agent{}, fmt.Errorf("%w: want exactly one %s header", ErrNoAgent, name)
		}
		sub, err := AgentSubject(vs[0])
		return Agent{Subject: sub}, err
	}
}

// HTTPOptions configures the HTTP middleware.
type HTTPOptions struct {
	// Checker asks mandate (a *client.Client). Required.
	Checker Checker
	// Resolve maps each request to (permission, resource). Required.
	Resolve Resolver
	// Identify says which agent acts. Default BearerToken().
	Identify Identity
	// Audience, when set, is this service's resource identifier (the
	// `resource` its agents' tokens are exchanged for): a token whose aud
	// does not name it is refused with 401 before mandate is asked, so a
	// token issued for another service does not open this one.
	Audience string
	// Realm is the WWW-Authenticate realm. Default "mandate".
	Realm string
	// Log receives refusals and errors. Default slog.Default().
	Log *slog.Logger
}

// HTTP returns middleware that checks every request with mandate before the
// handler runs:
//   - 401 with WWW-Authenticate when no agent can be established, with
//     error="invalid_token" when its token is refused (by mandate, or for
//     naming another audience);
//   - 403 with {"error", "reason_code", "decision_id"} as JSON on a deny;
//   - 503 when mandate cannot be reached or fails; never a pass-through.
//
// The correlation id comes from X-Correlation-Id or traceparent, and the
// agent's stated reason from X-Agent-Reason; both are audited by mandate.
func HTTP(o HTTPOptions) (func(http.Handler) http.Handler, error) {
	if o.Checker == nil || o.Resolve == nil {
		return nil, errors.New("middleware: Checker and Resolve are required")
	}
	if o.Identify == nil {
		o.Identify = BearerToken()
	}
	if o.Realm == "" {
		o.Realm = "mandate"
	}
	if o.Log == nil {
		o.Log = slog.Default()
	}
	realm := fmt.Sprintf("Bearer realm=%q", o.Realm)
	unauthenticated := func(w http.ResponseWriter, err error) {
		challenge, body := realm, map[string]string{"error": "unauthenticated", "message": "no agent could be established for this request"}
		switch {
		case errors.Is(err, ErrInvalidToken) || client.IsInvalidToken(err):
			challenge += fmt.Sprintf(`, error="invalid_token", error_description=%q`, oauthDescription(err))
			body = map[string]string{"error": "invalid_token", "message": err.Error()}
		case errors.Is(err, errMalformed):
			challenge += `, error="invalid_request"`
			body["message"] = err.Error()
		}
		w.Header().Set("WWW-Authenticate", challenge)
		writeJSON(w, http.StatusUnauthorized, body)
	}
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if err := httpBinding(r); err != nil { // RFC 8705: binding.go
				writeUnboundToken(w, o.Realm, err)
				return
			}
			who, err := o.Identify(r)
			if err == nil {
				err = audienceOK(who.Token, o.Audience)
			}
			if err != nil {
				unauthenticated(w, err)
				return
			}
			target, err := o.Resolve(r)
			if err != nil {
				o.Log.Info("mandate: request refused", "agent", actor(who, client.Decision{}), "path", r.URL.Path, "err", err)
				writeJSON(w, http.StatusForbidden, map[string]string{"error": "forbidden", "reason_code": "INVALID_REQUEST", "message": err.Error()})
				return
			}
			get := func(name string) string { return r.Header.Get(name) }
			d, err := o.Checker.Check(r.Context(), who.request(client.Request{
				Permission: target.Permission, Resource: target.Resource, Context: target.Context,
				CorrelationID: Correlation(get), Reason: truncate(strings.TrimSpace(r.Header.Get("X-Agent-Reason")), MaxReasonLen),
			}))
			switch {
			case client.IsInvalidToken(err):
				o.Log.Info("mandate: agent token refused", "path", r.URL.Path, "err", err)
				unauthenticated(w, err)
				return
			case client.IsInvalid(err):
				o.Log.Info("mandate: request refused as invalid", "agent", actor(who, d), "permission", target.Permission, "resource", target.Resource, "err", err)
				writeJSON(w, http.StatusForbidden, map[string]string{"error": "forbidden", "reason_code": "INVALID_REQUEST", "message": "mandate refused the request as invalid"})
				return
			case err != nil:
				o.Log.Error("mandate: check failed; refusing", "agent", actor(who, d), "permission", target.Permission, "resource", target.Resource, "err", err)
				writeJSON(w, http.StatusServiceUnavailable, map[string]string{"error": "unavailable", "message": "authorization is unavailable; the request was not performed"})
				return
			}
			if !d.Allowed {
				if d.ReasonCode == client.InvalidToken {
					unauthenticated(w, fmt.Errorf("%w: mandate refused the token", ErrInvalidToken))
					return
				}
				body := map[string]any{"error": "forbidden", "reason_code": d.ReasonCode, "decision_id": d.DecisionID,
					"permission": target.Permission, "resource": target.Resource}
				if len(d.MissingContext) > 0 {
					body["missing_context"] = d.MissingContext
				}
				if d.Condition != "" {
					body["condition"] = d.Condition
				}
				writeJSON(w, http.StatusForbidden, body)
				return
			}
			next.ServeHTTP(w, r.WithContext(withDecision(r.Context(), d)))
		})
	}, nil
}

// oauthDescription is an error_description: RFC 6750 allows only printable
// ASCII other than '"' and '\'.
func oauthDescription(err error) string {
	b := []byte(truncate(err.Error(), 200))
	for i, c := range b {
		if c < 0x20 || c > 0x7e || c == '"' || c == '\\' {
			b[i] = '\''
		}
	}
	return string(b)
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}
