package main

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"

	"github.com/mandate-dev/mandate/client"
	"github.com/mandate-dev/mandate/internal/testenv"
	"github.com/mandate-dev/mandate/server"
	"github.com/mandate-dev/mandate/service"
)

const audience = "https://repos.example.test"

// TestRepoServiceAgainstMandate runs the example service in front of a real
// mandate (embedded memory SpiceDB, an in-test OIDC issuer) and walks
// through every answer the middleware gives to an agent holding a token
// from token exchange: allow, deny, a sub-agent, no token, a forged token, a
// token for another service, a shifted id, revocation, and mandate going
// away.
func TestRepoServiceAgainstMandate(t *testing.T) {
	idp := testenv.StartIdP(t)
	m := testenv.Start(t, testenv.WithIdP(server.Config{}, idp))
	m.OK("POST", "/v1/relationships:write", service.RoleAdmin, map[string]any{"updates": []map[string]string{
		{"operation": "TOUCH", "relationship": "repo:acme/api#reader@user:alice"},
		{"operation": "TOUCH", "relationship": "repo:acme/api#writer@user:alice"},
	}})
	token, agent, task := m.AgentToken(idp, "alice", "read:repo:acme/api", url.Values{"resource": {audience}, "task_description": {"fix the flaky test"}})
	c, err := client.New(client.Config{Addr: m.Srv.GRPCAddr(), Key: testenv.Keys[service.RoleChecker], Plaintext: true})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	h, err := newHandler(c, audience, "")
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(h)
	defer srv.Close()

	do := func(method, path string, hdr map[string]string) (int, http.Header, map[string]any) {
		t.Helper()
		req, _ := http.NewRequest(method, srv.URL+path, nil)
		for k, v := range hdr {
			req.Header.Set(k, v)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var out map[string]any
		_ = json.NewDecoder(resp.Body).Decode(&out)
		return resp.StatusCode, resp.Header, out
	}
	bearer := func(tok string) map[string]string {
		return map[string]string{"Authorization": "Bearer " + tok, "X-Correlation-Id": "fix-42", "X-Agent-Reason": "read the failing test"}
	}
	as := bearer(token)

	if code, _, out := do("GET", "/repos/acme/api", as); code != 200 || out["on_behalf_of"] != "user:alice" || out["agent"] != agent {
		t.Fatalf("read with a grant: %d %v", code, out)
	}
	if code, _, out := do("POST", "/repos/acme/api/commits", as); code != 403 || out["reason_code"] != "NO_GRANT" || out["decision_id"] == "" {
		t.Fatalf("write without a grant: %d %v", code, out)
	}
	sub, _ := m.SubAgentToken(token, "read:repo:acme/api", url.Values{"resource": {audience}})
	if code, _, out := do("GET", "/repos/acme/api", bearer(sub)); code != 200 || out["on_behalf_of"] != "user:alice" {
		t.Fatalf("a sub-agent's read: %d %v", code, out)
	}
	if code, hdr, _ := do("GET", "/repos/acme/api", nil); code != 401 || hdr.Get("WWW-Authenticate") != `Bearer realm="mandate"` {
		t.Fatalf("no token: %d %v", code, hdr)
	}
	if code, _, _ := do("GET", "/repos/acme/api", map[string]string{"X-Mandate-Agent": agent}); code != 401 {
		t.Fatalf("a header is not trusted unless chosen: %d", code)
	}
	parts := strings.Split(token, ".")
	forged := parts[0] + "." + parts[1] + "." + strings.Repeat("A", len(parts[2]))
	foreign, _, _ := m.AgentToken(idp, "alice", "read:repo:acme/api", url.Values{"resource": {"https://ci.example.test"}})
	for name, tok := range map[string]string{"forged": forged, "for another service": foreign} {
		if code, hdr, out := do("GET", "/repos/acme/api", bearer(tok)); code != 401 || !strings.Contains(hdr.Get("WWW-Authenticate"), `error="invalid_token"`) || out["error"] != "invalid_token" {
			t.Fatalf("%s token: %d %v %v", name, code, hdr, out)
		}
	}
	// "acme%2Fapi" is the owner "acme/api": it would shift the id, so it is refused before mandate is asked.
	if code, _, out := do("GET", "/repos/acme%2Fapi/x", as); code != 403 || out["reason_code"] != "INVALID_REQUEST" {
		t.Fatalf("owner with a separator: %d %v", code, out)
	}

	// The audit trail has the correlation id, the agent's reason and the task.
	out := m.OK("GET", "/v1/audit?correlation_id=fix-42&agent="+agent, service.RoleReviewer, nil)
	recs, _ := out["records"].([]any)
	if len(recs) != 2 || recs[1].(map[string]any)["reason"] != "read the failing test" || recs[1].(map[string]any)["task"] != task {
		t.Fatalf("audit by correlation id: %v", out)
	}

	// Revoking the agent stops the very next request, its sub-agent's too.
	m.OK("DELETE", "/v1/agents/"+strings.TrimPrefix(agent, "agent:"), service.RoleOperator, nil)
	for _, tok := range []string{token, sub} {
		if code, _, out := do("GET", "/repos/acme/api", bearer(tok)); code != 403 || out["reason_code"] != "AGENT_REVOKED" {
			t.Fatalf("after revocation: %d %v", code, out)
		}
	}

	// Without mandate, every request is refused with 503, never passed through.
	m.Stop()
	if code, _, out := do("GET", "/repos/acme/api", as); code != 503 || out["error"] != "unavailable" {
		t.Fatalf("with mandate stopped: %d %v", code, out)
	}
}
