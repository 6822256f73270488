package oauth_test

import (
	"context"
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"net/url"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/lestrrat-go/jwx/v3/jwk"
	"github.com/lestrrat-go/jwx/v3/jws"
	"github.com/lestrrat-go/jwx/v3/jwt"

	"github.com/mandate-dev/mandate/credential"
	"github.com/mandate-dev/mandate/engine/embedded"
	"github.com/mandate-dev/mandate/internal/testenv"
	"github.com/mandate-dev/mandate/server"
	"github.com/mandate-dev/mandate/service"
)

const operatorBasic = "test-operator"

func basic(name, key string) string {
	return "Basic " + base64.StdEncoding.EncodeToString([]byte(url.QueryEscape(name)+":"+url.QueryEscape(key)))
}

func bearer(r service.Role) string { return "Bearer " + testenv.Keys[r] }

type env struct {
	t   *testing.T
	idp *testenv.IdP
	s   *testenv.Server
}

func start(t *testing.T, cfg server.Config) *env {
	idp := testenv.StartIdP(t)
	s := testenv.Start(t, testenv.WithIdP(cfg, idp))
	s.OK("POST", "/v1/relationships:write", service.RoleAdmin, map[string]any{"updates": []map[string]string{
		{"operation": "TOUCH", "relationship": "repo:acme/api#writer@user:alice"},
		{"operation": "TOUCH", "relationship": "repo:acme/web#reader@user:alice"},
	}})
	return &env{t: t, idp: idp, s: s}
}

// exchange asks the token endpoint as the operator (HTTP Basic).
func (e *env) exchange(form url.Values) (int, map[string]any) {
	e.t.Helper()
	return e.s.Form("/oauth2/token", basic(operatorBasic, testenv.Keys[service.RoleOperator]), form)
}

func (e *env) mustExchange(form url.Values) map[string]any {
	e.t.Helper()
	code, out := e.exchange(form)
	if code != http.StatusOK {
		e.t.Fatalf("exchange: %d %v", code, out)
	}
	return out
}

func (e *env) introspect(token string) map[string]any {
	e.t.Helper()
	code, out := e.s.Form("/oauth2/introspect", bearer(service.RoleChecker), url.Values{"token": {token}})
	if code != http.StatusOK {
		e.t.Fatalf("introspect: %d %v", code, out)
	}
	return out
}

func (e *env) agentCount() int {
	e.t.Helper()
	out := e.s.OK("GET", "/v1/agents?page_size=1000", service.RoleReviewer, nil)
	agents, _ := out["agents"].([]any)
	return len(agents)
}

func claimsOf(t *testing.T, raw string) map[string]any {
	t.Helper()
	parts := strings.Split(raw, ".")
	if len(parts) != 3 {
		t.Fatalf("not a compact JWS: %d parts", len(parts))
	}
	b, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		t.Fatal(err)
	}
	var c map[string]any
	if err := json.Unmarshal(b, &c); err != nil {
		t.Fatal(err)
	}
	return c
}

func TestExchangeDelegateRenewAndEnd(t *testing.T) {
	e := start(t, server.Config{})
	out := e.mustExchange(testenv.ExchangeForm(e.idp.Login("alice"), "id_token", "write:repo:acme/api read:repo:acme/web"))
	if out["issued_token_type"] != "urn:ietf:params:oauth:token-type:jwt" || out["token_type"] != "Bearer" || out["scope"] != "write:repo:acme/api read:repo:acme/web" {
		t.Fatalf("answer: %v", out)
	}
	if exp := out["expires_in"].(float64); exp < 890 || exp > 900 {
		t.Errorf("expires_in %v, want the 15m default", exp)
	}
	tok := out["access_token"].(string)
	agent := out["agent"].(string)
	c := claimsOf(t, tok)
	if c["sub"] != "user:alice" || c["iss"] != e.s.Base || c["task"] != out["task"] || c["client_id"] != "test-operator" {
		t.Errorf("claims: %v", c)
	}
	if act := c["act"].(map[string]any); act["sub"] != agent || act["act"] != nil {
		t.Errorf("act: %v", act)
	}
	// The grants are live: the agent may write, and the check needs no token.
	if d := e.s.Check(agent, "write", "repo:acme/api", nil); d["allowed"] != true {
		t.Fatalf("check: %v", d)
	}

	// Delegation: a narrower scope for a sub-agent, with the act chain nested.
	sub := e.mustExchange(testenv.ExchangeForm(tok, "jwt", "read:repo:acme/web"))
	subTok := sub["access_token"].(string)
	sc := claimsOf(t, subTok)
	wantAct := map[string]any{"sub": sub["agent"], "act": map[string]any{"sub": agent}}
	if got, _ := json.Marshal(sc["act"]); string(got) != mustJSON(t, wantAct) {
		t.Errorf("act %s, want %s (RFC 8693 §4.1's nesting)", got, mustJSON(t, wantAct))
	}
	if d := e.s.Check(sub["agent"].(string), "read", "repo:acme/web", nil); d["allowed"] != true {
		t.Fatalf("sub-agent check: %v", d)
	}

	// Wider than the parent holds: invalid_scope, and nothing is created.
	before := e.agentCount()
	code, bad := e.exchange(testenv.ExchangeForm(subTok, "jwt", "write:repo:acme/api"))
	if code != 400 || bad["error"] != "invalid_scope" || !strings.HasPrefix(bad["error_description"].(string), "scope") {
		t.Fatalf("wider delegation: %d %v", code, bad)
	}
	if after := e.agentCount(); after != before {
		t.Fatalf("a refused delegation created agents: %d → %d", before, after)
	}

	// Renewal: empty scope, a new jti, the same chain.
	ren := e.mustExchange(testenv.ExchangeForm(subTok, "jwt", ""))
	rc := claimsOf(t, ren["access_token"].(string))
	if rc["jti"] == sc["jti"] || mustJSON(t, rc["act"]) != mustJSON(t, sc["act"]) || rc["scope"] != "read:repo:acme/web" {
		t.Errorf("renewed claims %v from %v", rc, sc)
	}

	in := e.introspect(subTok)
	if in["active"] != true || in["sub"] != "user:alice" || in["jti"] != sc["jti"] || in["task"] != out["task"] || in["scope"] != "read:repo:acme/web" {
		t.Fatalf("introspection: %v", in)
	}

	// Completing the task ends every token of it, and renewal is refused.
	taskID := strings.TrimPrefix(out["task"].(string), "task:")
	e.s.OK("POST", "/v1/tasks/"+taskID+":complete", service.RoleOperator, nil)
	for _, x := range []string{tok, subTok, ren["access_token"].(string)} {
		if in := e.introspect(x); in["active"] != false || len(in) != 1 {
			t.Errorf("after completion: %v", in)
		}
	}
	code, bad = e.exchange(testenv.ExchangeForm(subTok, "jwt", ""))
	if code != 400 || bad["error"] != "invalid_grant" {
		t.Fatalf("renewal after completion: %d %v", code, bad)
	}
}

func mustJSON(t *testing.T, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// TestTokensVerifyWithJWX verifies mandate's tokens against its JWKS with an
// independent JOSE library, and reads the header RFC 9068 asks for.
func TestTokensVerifyWithJWX(t *testing.T) {
	e := start(t, server.Config{})
	out := e.mustExchange(testenv.ExchangeForm(e.idp.Login("alice"), "id_token", "write:repo:acme/api"))
	raw := out["access_token"].(string)
	set, err := jwk.Fetch(context.Background(), e.s.Base+"/.well-known/jwks.json")
	if err != nil {
		t.Fatal(err)
	}
	tok, err := jwt.Parse([]byte(raw), jwt.WithKeySet(set), jwt.WithIssuer(e.s.Base), jwt.WithValidate(true))
	if err != nil {
		t.Fatalf("jwx refuses mandate's token: %v", err)
	}
	if sub, _ := tok.Subject(); sub != "user:alice" {
		t.Errorf("sub %q", sub)
	}
	msg, err := jws.Parse([]byte(raw))
	if err != nil {
		t.Fatal(err)
	}
	h := msg.Signatures()[0].ProtectedHeaders()
	typ, _ := h.Type()
	kid, _ := h.KeyID()
	alg, _ := h.Algorithm()
	if typ != "at+jwt" || alg.String() != "ES256" {
		t.Errorf("header typ %q alg %q", typ, alg)
	}
	key, ok := set.LookupKeyID(kid)
	if !ok {
		t.Fatalf("kid %q is not in the JWKS", kid)
	}
	tp, err := key.Thumbprint(crypto.SHA256)
	if err != nil {
		t.Fatal(err)
	}
	if base64.RawURLEncoding.EncodeToString(tp) != kid {
		t.Errorf("kid %q is not the key's RFC 7638 thumbprint", kid)
	}
}

// TestHumanTokenRefusals: every token a relying party must refuse is
// refused with invalid_grant naming subject_token, and creates nothing.
func TestHumanTokenRefusals(t *testing.T) {
	e := start(t, server.Config{})
	other := testenv.StartIdP(t) // trusted by no one
	stranger, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	with := func(k string, v any) map[string]any { c := e.idp.Claims("alice"); c[k] = v; return c }
	header := base64.RawURLEncoding.EncodeToString([]byte(`{"alg":"none","typ":"JWT"}`))
	payload := base64.RawURLEncoding.EncodeToString([]byte(mustJSON(t, e.idp.Claims("alice"))))
	cases := []struct{ name, token string }{
		{"forged: right kid, wrong key", testenv.SignRS256(t, stranger, e.idp.KID(), e.idp.Claims("alice"))},
		{"expired", e.idp.Token(with("exp", now.Add(-time.Minute).Unix()))},
		{"not yet valid", e.idp.Token(with("nbf", now.Add(time.Hour).Unix()))},
		{"issued in the future", e.idp.Token(with("iat", now.Add(time.Hour).Unix()))},
		{"foreign issuer", other.Login("alice")},
		{"foreign issuer claiming ours", testenv.SignRS256(t, stranger, "k1", e.idp.Claims("alice"))},
		{"wrong audience", e.idp.Token(with("aud", "someone-else"))},
		{"alg none", header + "." + payload + "."},
		{"HS256 with the public key", testenv.SignHS256(t, e.idp.PublicKeyPEM(), e.idp.KID(), e.idp.Claims("alice"))},
		{"no sub", e.idp.Token(with("sub", ""))},
		{"garbage", "not.a.token"},
	}
	before := e.agentCount()
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			code, out := e.exchange(testenv.ExchangeForm(tc.token, "id_token", "write:repo:acme/api"))
			if code != 400 || out["error"] != "invalid_grant" || !strings.HasPrefix(out["error_description"].(string), "subject_token") {
				t.Fatalf("%d %v", code, out)
			}
		})
	}
	if after := e.agentCount(); after != before {
		t.Fatalf("refused exchanges created agents: %d → %d", before, after)
	}

	t.Run("unknown kid after one JWKS refresh", func(t *testing.T) {
		e.mustExchange(testenv.ExchangeForm(e.idp.Login("alice"), "id_token", "write:repo:acme/api")) // keys cached
		fetches := e.idp.JWKSFetches()
		code, out := e.exchange(testenv.ExchangeForm(testenv.SignRS256(t, stranger, "k99", e.idp.Claims("alice")), "id_token", "write:repo:acme/api"))
		if code != 400 || out["error"] != "invalid_grant" {
			t.Fatalf("%d %v", code, out)
		}
		refreshed := e.idp.JWKSFetches() - fetches
		if refreshed != 1 {
			t.Errorf("JWKS fetched %d times for an unknown kid, want exactly one refresh", refreshed)
		}
	})

	t.Run("the IdP rotates its key", func(t *testing.T) {
		e.idp.Rotate()
		e.mustExchange(testenv.ExchangeForm(e.idp.Login("alice"), "id_token", "write:repo:acme/api"))
	})

	t.Run("scope wider than the human's", func(t *testing.T) {
		before := e.agentCount()
		code, out := e.exchange(testenv.ExchangeForm(e.idp.Login("alice"), "id_token", "write:repo:acme/api write:repo:acme/web"))
		if code != 400 || out["error"] != "invalid_scope" {
			t.Fatalf("%d %v", code, out)
		}
		if after := e.agentCount(); after != before {
			t.Fatalf("a refused exchange created agents: %d → %d", before, after)
		}
	})
}

func TestTokenEndpointRequests(t *testing.T) {
	e := start(t, server.Config{})
	good := func() url.Values {
		return testenv.ExchangeForm(e.idp.Login("alice"), "id_token", "write:repo:acme/api")
	}
	set := func(k, v string) url.Values { f := good(); f.Set(k, v); return f }
	add := func(k, v string) url.Values { f := good(); f.Add(k, v); return f }
	cases := []struct {
		name       string
		auth       string
		form       url.Values
		code       int
		err, field string
	}{
		{"no key", "", good(), 401, "invalid_client", "authorization"},
		{"wrong Basic name", basic("someone", testenv.Keys[service.RoleOperator]), good(), 401, "invalid_client", "authorization"},
		{"checker key", bearer(service.RoleChecker), good(), 400, "unauthorized_client", "authorization"},
		{"grant type", bearer(service.RoleOperator), set("grant_type", "client_credentials"), 400, "unsupported_grant_type", "grant_type"},
		{"actor_token", bearer(service.RoleOperator), set("actor_token", "x"), 400, "invalid_request", "actor_token"},
		{"repeated scope", bearer(service.RoleOperator), add("scope", "read:repo:acme/web"), 400, "invalid_request", "scope"},
		{"bad scope", bearer(service.RoleOperator), set("scope", "write:repo"), 400, "invalid_scope", "scope"},
		{"unknown type in scope", bearer(service.RoleOperator), set("scope", "write:nosuch:x"), 400, "invalid_scope", "scope"},
		{"subject_token_type", bearer(service.RoleOperator), set("subject_token_type", "urn:x"), 400, "invalid_request", "subject_token_type"},
		{"resource", bearer(service.RoleOperator), set("resource", "not-absolute"), 400, "invalid_target", "resource"},
		{"task_ttl", bearer(service.RoleOperator), set("task_ttl", "forever"), 400, "invalid_request", "task_ttl"},
		{"client_id", bearer(service.RoleOperator), set("client_id", "test-admin"), 401, "invalid_client", "client_id"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			code, out := e.s.Form("/oauth2/token", tc.auth, tc.form)
			if code != tc.code || out["error"] != tc.err || !strings.HasPrefix(out["error_description"].(string), tc.field) {
				t.Fatalf("%d %v, want %d %s on %s", code, out, tc.code, tc.err, tc.field)
			}
		})
	}
	// Bearer works as well as Basic, and a JSON body is refused.
	if code, out := e.s.Form("/oauth2/token", bearer(service.RoleOperator), good()); code != 200 {
		t.Fatalf("bearer: %d %v", code, out)
	}
	code, _, _ := e.s.Call("POST", "/oauth2/token", bearer(service.RoleOperator), `{"grant_type":"x"}`)
	if code != 400 {
		t.Fatalf("JSON body: %d", code)
	}
}

func TestRevoke(t *testing.T) {
	e := start(t, server.Config{})
	out := e.mustExchange(testenv.ExchangeForm(e.idp.Login("alice"), "id_token", "write:repo:acme/api"))
	tok := out["access_token"].(string)
	sub := e.mustExchange(testenv.ExchangeForm(tok, "jwt", "write:repo:acme/api"))["access_token"].(string)

	if code, _ := e.s.Form("/oauth2/revoke", bearer(service.RoleOperator), url.Values{"token": {"unknown"}}); code != 200 {
		t.Fatalf("unknown token: %d, want 200 (RFC 7009 §2.2)", code)
	}
	if code, _ := e.s.Form("/oauth2/revoke", bearer(service.RoleChecker), url.Values{"token": {tok}}); code != 400 {
		t.Fatalf("another client's token: %d, want 400", code)
	}
	if e.introspect(tok)["active"] != true {
		t.Fatal("a refused revocation revoked")
	}
	if code, out := e.s.Form("/oauth2/revoke", basic(operatorBasic, testenv.Keys[service.RoleOperator]), url.Values{"token": {tok}}); code != 200 {
		t.Fatalf("revoke: %d %v", code, out)
	}
	for _, x := range []string{tok, sub} {
		if e.introspect(x)["active"] != false {
			t.Fatal("a token of the revoked subtree is still active")
		}
	}
	if d := e.s.Check(out["agent"].(string), "write", "repo:acme/api", nil); d["allowed"] != false {
		t.Fatalf("check after revocation: %v", d)
	}
	code, bad := e.exchange(testenv.ExchangeForm(tok, "jwt", ""))
	if code != 400 || bad["error"] != "invalid_grant" {
		t.Fatalf("renewal after revocation: %d %v", code, bad)
	}

	// The trail: every issue, refusal and revocation, with the jti and never a token.
	_, _, raw := e.s.Call("GET", "/v1/audit?page_size=1000", bearer(service.RoleReviewer), nil)
	for _, action := range []string{"token.issue", "token.refused", "token.revoke"} {
		if !strings.Contains(string(raw), `"`+action+`"`) {
			t.Errorf("no %s record in %s", action, raw)
		}
	}
	for _, x := range []string{tok, sub} {
		if strings.Contains(string(raw), strings.Split(x, ".")[2]) {
			t.Fatal("the audit trail holds a token")
		}
	}
	if !strings.Contains(string(raw), claimsOf(t, tok)["jti"].(string)) {
		t.Error("the audit trail lacks the token's jti")
	}
}

// TestRevokedWithinExp: a token within its exp whose agent was revoked is
// inactive at once, a hundred times, on memory and on Postgres.
func TestRevokedWithinExp(t *testing.T) {
	backends := map[string]func(t *testing.T) server.Config{"memory": func(*testing.T) server.Config { return server.Config{} }}
	if os.Getenv("MANDATE_TEST_POSTGRES_DSN") != "" {
		backends["postgres"] = func(t *testing.T) server.Config {
			return server.Config{Embedded: embedded.Config{Engine: "postgres", URI: testenv.PostgresDB(t, "mandate_token_revoke"), Migrate: true}}
		}
	}
	for name, cfg := range backends {
		t.Run(name, func(t *testing.T) {
			e := start(t, cfg(t))
			for i := range 100 {
				out := e.mustExchange(testenv.ExchangeForm(e.idp.Login("alice"), "id_token", "write:repo:acme/api"))
				agent := strings.TrimPrefix(out["agent"].(string), "agent:")
				e.s.OK("DELETE", "/v1/agents/"+agent, service.RoleOperator, nil)
				if in := e.introspect(out["access_token"].(string)); in["active"] != false {
					t.Fatalf("iteration %d: introspection of a revoked agent's token: %v", i, in)
				}
				if d := e.s.Check(out["agent"].(string), "write", "repo:acme/api", nil); d["allowed"] != false {
					t.Fatalf("iteration %d: check: %v", i, d)
				}
				if d := e.s.OK("POST", "/v1/check", service.RoleChecker, checkBody(out["access_token"].(string), "write", "repo:acme/api")); d["allowed"] != false {
					t.Fatalf("iteration %d: check by token: %v", i, d)
				}
			}
		})
	}
}

func TestDiscoveryUsesThePublicURL(t *testing.T) {
	e := start(t, server.Config{PublicURL: "https://mandate.example.com/"})
	for _, path := range []string{"/.well-known/oauth-authorization-server", "/.well-known/authzen-configuration"} {
		req, _ := http.NewRequest("GET", e.s.Base+path, nil)
		req.Host = "evil.example"
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		var m map[string]any
		_ = json.NewDecoder(resp.Body).Decode(&m)
		resp.Body.Close()
		for k, v := range m {
			if s, ok := v.(string); ok && strings.HasPrefix(s, "http") && !strings.HasPrefix(s, "https://mandate.example.com") {
				t.Errorf("%s %s = %q, not under --public-url", path, k, s)
			}
		}
		if path == "/.well-known/oauth-authorization-server" {
			if m["issuer"] != "https://mandate.example.com" || m["token_endpoint"] != "https://mandate.example.com/oauth2/token" {
				t.Errorf("metadata: %v", m)
			}
			for _, f := range []string{"issuer", "token_endpoint", "jwks_uri", "response_types_supported", "grant_types_supported",
				"token_endpoint_auth_methods_supported", "introspection_endpoint", "revocation_endpoint"} {
				if _, ok := m[f]; !ok {
					t.Errorf("metadata lacks %s", f)
				}
			}
		}
	}
	out := e.mustExchange(testenv.ExchangeForm(e.idp.Login("alice"), "id_token", "write:repo:acme/api"))
	if c := claimsOf(t, out["access_token"].(string)); c["iss"] != "https://mandate.example.com" {
		t.Errorf("iss %v", c["iss"])
	}
}

// TestRequireHumanToken: with an OIDC issuer, tasks and agents' grants come
// only from human tokens, unless the operator turns it off.
func TestRequireHumanToken(t *testing.T) {
	e := start(t, server.Config{})
	code, out := e.s.Do("POST", "/v1/tasks", service.RoleOperator, map[string]any{"principal": "user:alice", "ttl": "1h"})
	if code != 400 || !strings.Contains(out["message"].(string), "principal") {
		t.Fatalf("bare task: %d %v", code, out)
	}
	tok := e.mustExchange(testenv.ExchangeForm(e.idp.Login("alice"), "id_token", "write:repo:acme/api"))
	code, out = e.s.Do("POST", "/v1/grants", service.RoleOperator, map[string]any{"holder": tok["agent"], "permission": "read", "resource": "repo:acme/web", "ttl": "5m"})
	if code != 400 || !strings.Contains(out["message"].(string), "holder") {
		t.Fatalf("grant to an agent: %d %v", code, out)
	}

	off := start(t, server.Config{Credentials: server.CredentialsConfig{RequireHumanToken: "off"}})
	off.s.OK("POST", "/v1/tasks", service.RoleOperator, map[string]any{"principal": "user:alice", "ttl": "1h"})
}

// TestUserIDs: with email as the user claim, only a verified email counts,
// and with two issuers every id is qualified by its issuer, escaped alike.
func TestUserIDs(t *testing.T) {
	a, b := testenv.StartIdP(t), testenv.StartIdP(t)
	cfg := testenv.WithIdP(testenv.WithIdP(server.Config{Credentials: server.CredentialsConfig{OIDCUserClaim: "email"}}, a), b)
	s := testenv.Start(t, cfg)
	e := &env{t: t, idp: a, s: s}
	prefix := func(p *testenv.IdP) string { return credential.Escape(strings.TrimPrefix(p.URL, "http://")) }
	aliceA := "user:" + prefix(a) + "|" + credential.Escape("alice@example.com")
	aliceB := "user:" + prefix(b) + "|" + credential.Escape("alice@example.com")
	s.OK("POST", "/v1/relationships:write", service.RoleAdmin, map[string]any{"updates": []map[string]string{
		{"operation": "TOUCH", "relationship": "repo:acme/api#writer@" + aliceA}}})

	login := func(p *testenv.IdP, verified any) string {
		c := p.Claims("opaque-sub")
		c["email"] = "alice@example.com"
		if verified != nil {
			c["email_verified"] = verified
		}
		return p.Token(c)
	}
	out := e.mustExchange(testenv.ExchangeForm(login(a, true), "id_token", "write:repo:acme/api"))
	if c := claimsOf(t, out["access_token"].(string)); c["sub"] != aliceA {
		t.Fatalf("sub %v, want %s", c["sub"], aliceA)
	}
	for name, verified := range map[string]any{"unverified": false, "no email_verified": nil, "a string": "true"} {
		code, body := e.exchange(testenv.ExchangeForm(login(a, verified), "id_token", "write:repo:acme/api"))
		if code != 400 || body["error"] != "invalid_grant" {
			t.Errorf("%s email: %d %v", name, code, body)
		}
	}
	// The same email from the other issuer is another user, who holds nothing.
	code, body := e.exchange(testenv.ExchangeForm(login(b, true), "id_token", "write:repo:acme/api"))
	if code != 400 || body["error"] != "invalid_scope" || !strings.Contains(body["error_description"].(string), aliceB) {
		t.Fatalf("other issuer: %d %v", code, body)
	}
}

// TestEndpointRoles: who may call each OAuth endpoint. These routes are not
// in the OpenAPI document, so server's route × role test does not see them.
func TestEndpointRoles(t *testing.T) {
	e := start(t, server.Config{})
	tok := e.mustExchange(testenv.ExchangeForm(e.idp.Login("alice"), "id_token", "write:repo:acme/api"))["access_token"].(string)
	want := map[string]map[service.Role]int{
		"/oauth2/token":      {service.RoleChecker: 400, service.RoleReviewer: 400, service.RoleGateway: 400, service.RoleOperator: 200, service.RoleAdmin: 200},
		"/oauth2/introspect": {service.RoleChecker: 200, service.RoleReviewer: 403, service.RoleGateway: 403, service.RoleOperator: 403, service.RoleAdmin: 200},
	}
	for path, roles := range want {
		for role, code := range roles {
			form := url.Values{"token": {tok}}
			if path == "/oauth2/token" {
				form = testenv.ExchangeForm(e.idp.Login("alice"), "id_token", "write:repo:acme/api")
			}
			if got, out := e.s.Form(path, bearer(role), form); got != code {
				t.Errorf("%s as %s: %d %v, want %d", path, role, got, out, code)
			}
		}
		if got, _ := e.s.Form(path, "", url.Values{"token": {tok}}); got != 401 {
			t.Errorf("%s without a key: %d, want 401", path, got)
		}
	}
	// Revocation: the key the token was issued to, or an admin; others are refused.
	for _, role := range []service.Role{service.RoleChecker, service.RoleReviewer, service.RoleGateway} {
		if got, _ := e.s.Form("/oauth2/revoke", bearer(role), url.Values{"token": {tok}}); got != 400 {
			t.Errorf("revoke as %s: %d, want 400", role, got)
		}
	}
	if got, _ := e.s.Form("/oauth2/revoke", bearer(service.RoleAdmin), url.Values{"token": {tok}}); got != 200 {
		t.Errorf("revoke as admin: %d", got)
	}
	if in := e.introspect(tok); in["active"] != false {
		t.Errorf("after an admin's revocation: %v", in)
	}
	for _, path := range []string{"/.well-known/jwks.json", "/.well-known/oauth-authorization-server"} {
		if code, _, _ := e.s.Call("GET", path, "", nil); code != 200 {
			t.Errorf("%s: %d, want 200 without a key", path, code)
		}
	}
}
