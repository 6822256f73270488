package middleware_test

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/mandate-dev/mandate/client"
	"github.com/mandate-dev/mandate/client/middleware"
	"github.com/mandate-dev/mandate/credential"
	"github.com/mandate-dev/mandate/internal/testenv"
	"github.com/mandate-dev/mandate/server"
	"github.com/mandate-dev/mandate/service"
)

func TestCorrelation(t *testing.T) {
	for _, tc := range []struct{ corr, tp, want string }{
		{"deploy-42", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", "deploy-42"},
		{"", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", "4bf92f3577b34da6a3ce929d0e0e4736"},
		{"", "00-00000000000000000000000000000000-00f067aa0ba902b7-01", ""},
		{"", "garbage", ""},
	} {
		h := map[string]string{"x-correlation-id": tc.corr, "traceparent": tc.tp}
		if got := middleware.Correlation(func(n string) string { return h[n] }); got != tc.want {
			t.Errorf("%v: %q, want %q", h, got, tc.want)
		}
	}
}

// tokenWorld is a mandate that trusts an in-test OIDC issuer and signs with
// a key the test holds, alice's relationships, and her agent's token.
type tokenWorld struct {
	m      *testenv.Server
	idp    *testenv.IdP
	signer *testenv.Signer
	client *client.Client
	token  string // alice's agent: read repo:acme/api, for resource "https://repos.example.test"
	agent  string
	task   string
}

const repoAudience = "https://repos.example.test"

func newTokenWorld(t *testing.T) *tokenWorld {
	t.Helper()
	w := &tokenWorld{idp: testenv.StartIdP(t)}
	cfg, signer := testenv.WithSigningKey(t, testenv.WithIdP(server.Config{}, w.idp))
	w.m, w.signer = testenv.Start(t, cfg), signer
	w.m.OK("POST", "/v1/relationships:write", service.RoleAdmin, map[string]any{"updates": []map[string]string{
		{"operation": "TOUCH", "relationship": "repo:acme/api#reader@user:alice"},
		{"operation": "TOUCH", "relationship": "repo:acme/api#writer@user:alice"},
		{"operation": "TOUCH", "relationship": "repo:acme/web#reader@user:alice"},
	}})
	w.token, w.agent, w.task = w.m.AgentToken(w.idp, "alice", "read:repo:acme/api read:repo:acme/web", url.Values{"resource": {repoAudience}})
	c, err := client.New(client.Config{Addr: w.m.Srv.GRPCAddr(), Key: testenv.Keys[service.RoleChecker], Plaintext: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	w.client = c
	return w
}

// expired is a token mandate signed, for alice's agent, that expired a minute ago.
func (w *tokenWorld) expired(t *testing.T) string {
	return w.signer.Token(t, w.m.Base, time.Now().Add(-16*time.Minute), credential.IssueInput{Subject: "user:alice", Agents: []string{w.agent},
		Task: w.task, Audience: repoAudience, TTL: 15 * time.Minute})
}

func forge(token string) string {
	parts := strings.Split(token, ".")
	return parts[0] + "." + parts[1] + "." + strings.Repeat("A", len(parts[2]))
}

type answer struct {
	code      int
	challenge string
	body      map[string]any
	called    bool
}

func serveOnce(h http.Handler, called *bool, method, path string, hdr map[string]string) answer {
	*called = false
	req := httptest.NewRequest(method, path, nil)
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	var body map[string]any
	_ = json.Unmarshal(rec.Body.Bytes(), &body)
	return answer{rec.Code, rec.Header().Get("WWW-Authenticate"), body, *called}
}

// TestHTTPAgentTokens: the default identity is the agent's own token,
// checked by mandate on every request: allow, deny, a sub-agent, no token,
// a malformed header, a forged, expired or foreign-audience token, and a
// completed task.
func TestHTTPAgentTokens(t *testing.T) {
	w := newTokenWorld(t)
	mw, err := middleware.HTTP(middleware.HTTPOptions{Checker: w.client, Resolve: middleware.PathTemplate("read", "repo:{owner}/{name}"), Audience: repoAudience})
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	called := false
	var seen client.Decision
	mux.Handle("GET /repos/{owner}/{name}", mw(http.HandlerFunc(func(_ http.ResponseWriter, r *http.Request) {
		called = true
		seen, _ = middleware.DecisionFrom(r.Context())
	})))
	as := func(token string) map[string]string { return map[string]string{"Authorization": "Bearer " + token} }

	if a := serveOnce(mux, &called, "GET", "/repos/acme/api", as(w.token)); a.code != 200 || !a.called || seen.Chain[0] != w.agent || seen.Principal != "user:alice" {
		t.Fatalf("allowed: %+v %+v", a, seen)
	}
	a := serveOnce(mux, &called, "GET", "/repos/acme/infra", as(w.token))
	if a.code != 403 || a.called || a.body["reason_code"] != "NO_GRANT" || a.body["decision_id"] == "" {
		t.Fatalf("denied: %+v", a)
	}
	// A sub-agent holding only acme/web: its own token, its own grants.
	sub, _ := w.m.SubAgentToken(w.token, "read:repo:acme/web", url.Values{"resource": {repoAudience}})
	if a := serveOnce(mux, &called, "GET", "/repos/acme/web", as(sub)); a.code != 200 || !a.called || len(seen.Chain) != 3 || seen.Chain[1] != w.agent {
		t.Fatalf("sub-agent allowed: %+v %+v", a, seen)
	}
	if a := serveOnce(mux, &called, "GET", "/repos/acme/api", as(sub)); a.code != 403 || a.body["reason_code"] != "NO_GRANT" {
		t.Fatalf("sub-agent outside its scope: %+v", a)
	}

	other, _, _ := w.m.AgentToken(w.idp, "alice", "read:repo:acme/api", url.Values{"resource": {"https://other.example.test"}})
	noAud, _, _ := w.m.AgentToken(w.idp, "alice", "read:repo:acme/api", nil)
	for name, tc := range map[string]struct {
		hdr       map[string]string
		challenge string
	}{
		"no token":          {nil, `Bearer realm="mandate"`},
		"a trusted header":  {map[string]string{"X-Mandate-Agent": w.agent}, `Bearer realm="mandate"`},
		"basic":             {map[string]string{"Authorization": "Basic YWxpY2U6eA=="}, `error="invalid_request"`},
		"empty bearer":      {map[string]string{"Authorization": "Bearer "}, `error="invalid_request"`},
		"not a JWT":         {as("agt_123"), `error="invalid_token"`},
		"forged":            {as(forge(w.token)), `error="invalid_token"`},
		"expired":           {as(w.expired(t)), `error="invalid_token"`},
		"another audience":  {as(other), `error="invalid_token"`},
		"mandate's own aud": {as(noAud), `error="invalid_token"`},
	} {
		a := serveOnce(mux, &called, "GET", "/repos/acme/api", tc.hdr)
		if a.code != 401 || a.called || !strings.HasPrefix(a.challenge, `Bearer realm="mandate"`) || !strings.Contains(a.challenge, tc.challenge) {
			t.Errorf("%s: %+v", name, a)
		}
	}
	// The audience is this middleware's to check: without the option, mandate
	// alone decides, and a token for another resource is checked like any.
	open, _ := middleware.HTTP(middleware.HTTPOptions{Checker: w.client, Resolve: middleware.PathTemplate("read", "repo:{owner}/{name}")})
	mux2 := http.NewServeMux()
	mux2.Handle("GET /repos/{owner}/{name}", open(http.HandlerFunc(func(http.ResponseWriter, *http.Request) { called = true })))
	if a := serveOnce(mux2, &called, "GET", "/repos/acme/api", as(other)); a.code != 200 {
		t.Fatalf("no audience configured: %+v", a)
	}
	if a := serveOnce(mux2, &called, "GET", "/repos/acme/api", as(forge(other))); a.code != 401 || !strings.Contains(a.challenge, `error="invalid_token"`) {
		t.Fatalf("mandate refuses a forged token: %+v", a)
	}

	// Completing the task stops the very next request of every token of it.
	w.m.OK("POST", "/v1/tasks/"+strings.TrimPrefix(w.task, "task:")+":complete", service.RoleOperator, map[string]any{})
	for _, tok := range []string{w.token, sub} {
		if a := serveOnce(mux, &called, "GET", "/repos/acme/web", as(tok)); a.code != 403 || a.called || a.body["reason_code"] != "TASK_COMPLETED" {
			t.Fatalf("after the task completed: %+v", a)
		}
	}
}

// TestHTTPTrustedHeaderAndOutage: the trusted-proxy mode is there when
// chosen (for deployments without agent tokens), a human is never an agent,
// and with mandate unreachable every request is 503, never the handler.
func TestHTTPTrustedHeaderAndOutage(t *testing.T) {
	w := newTokenWorld(t)
	mw, err := middleware.HTTP(middleware.HTTPOptions{Checker: w.client, Resolve: middleware.PathTemplate("read", "repo:{owner}/{name}"), Identify: middleware.TrustedHeader("X-Mandate-Agent")})
	if err != nil {
		t.Fatal(err)
	}
	tokens, _ := middleware.HTTP(middleware.HTTPOptions{Checker: w.client, Resolve: middleware.PathTemplate("read", "repo:{owner}/{name}")})
	mux := http.NewServeMux()
	called := false
	h := http.HandlerFunc(func(http.ResponseWriter, *http.Request) { called = true })
	mux.Handle("GET /proxied/{owner}/{name}", mw(h))
	mux.Handle("GET /repos/{owner}/{name}", tokens(h))
	if a := serveOnce(mux, &called, "GET", "/proxied/acme/api", map[string]string{"X-Mandate-Agent": strings.TrimPrefix(w.agent, "agent:")}); a.code != 200 || !a.called {
		t.Fatalf("trusted header: %+v", a)
	}
	if a := serveOnce(mux, &called, "GET", "/proxied/acme/api", map[string]string{"X-Mandate-Agent": "user:alice"}); a.code != 401 || a.called {
		t.Fatalf("a header naming a human: %+v", a)
	}
	if a := serveOnce(mux, &called, "GET", "/proxied/acme/api", map[string]string{"Authorization": "Bearer " + w.token}); a.code != 401 || a.called {
		t.Fatalf("trusted-header mode reads no token: %+v", a)
	}
	w.m.Stop()
	for _, tc := range []struct{ path, hdr, v string }{{"/proxied/acme/api", "X-Mandate-Agent", w.agent}, {"/repos/acme/api", "Authorization", "Bearer " + w.token}} {
		if a := serveOnce(mux, &called, "GET", tc.path, map[string]string{tc.hdr: tc.v}); a.code != 503 || a.called || a.body["error"] != "unavailable" {
			t.Fatalf("%s with mandate stopped: %+v", tc.path, a)
		}
	}
}

// TestHTTPInvalidIsADeny: a check mandate refuses as invalid (a permission
// the schema lacks) is a 403, not an outage and never a pass-through.
func TestHTTPInvalidIsADeny(t *testing.T) {
	w := newTokenWorld(t)
	mw, err := middleware.HTTP(middleware.HTTPOptions{Checker: w.client, Resolve: middleware.PathTemplate("fly", "repo:{owner}/{name}")})
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	called := false
	mux.Handle("GET /repos/{owner}/{name}", mw(http.HandlerFunc(func(http.ResponseWriter, *http.Request) { called = true })))
	a := serveOnce(mux, &called, "GET", "/repos/acme/api", map[string]string{"Authorization": "Bearer " + w.token})
	if a.code != 403 || a.body["reason_code"] != "INVALID_REQUEST" || a.called {
		t.Fatalf("%+v", a)
	}
}
