package main

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/mandate-dev/mandate/client"
	"github.com/mandate-dev/mandate/client/mandatetest"
	"github.com/mandate-dev/mandate/server"
	"github.com/mandate-dev/mandate/service"
)

// TestRepoServiceAgainstMandate runs the example service in front of a real
// mandate (embedded memory SpiceDB) and walks through every answer the
// middleware gives: allow, deny, no agent, a shifted id, revocation, and
// mandate going away.
func TestRepoServiceAgainstMandate(t *testing.T) {
	m := mandatetest.New(t, server.Config{})
	s := &mandatetest.Setup{M: m}
	s.Relate("repo:acme/api#reader@user:alice", "repo:acme/api#writer@user:alice")
	agent, task := s.Agent("user:alice", "fix the flaky test", "fixer")
	s.Grant(agent, "read", "repo:acme/api")
	if s.Err != nil {
		t.Fatal(s.Err)
	}
	c, err := client.New(client.Config{Addr: m.GRPCAddr, Key: mandatetest.Keys[service.RoleChecker], Plaintext: true})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	h, err := newHandler(c, "X-Mandate-Agent")
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
	as := map[string]string{"X-Mandate-Agent": agent, "X-Correlation-Id": "fix-42", "X-Agent-Reason": "read the failing test"}

	if code, _, out := do("GET", "/repos/acme/api", as); code != 200 || out["on_behalf_of"] != "user:alice" {
		t.Fatalf("read with a grant: %d %v", code, out)
	}
	if code, _, out := do("POST", "/repos/acme/api/commits", as); code != 403 || out["reason_code"] != "NO_GRANT" || out["decision_id"] == "" {
		t.Fatalf("write without a grant: %d %v", code, out)
	}
	if code, hdr, _ := do("GET", "/repos/acme/api", nil); code != 401 || !strings.HasPrefix(hdr.Get("WWW-Authenticate"), "Bearer") {
		t.Fatalf("no agent: %d %v", code, hdr)
	}
	if code, _, _ := do("GET", "/repos/acme/api", map[string]string{"X-Mandate-Agent": "user:alice"}); code != 401 {
		t.Fatalf("a header naming a human: %d", code)
	}
	// "acme%2Fapi" is the owner "acme/api": it would shift the id, so it is refused before mandate is asked.
	if code, _, out := do("GET", "/repos/acme%2Fapi/x", as); code != 403 || out["reason_code"] != "INVALID_REQUEST" {
		t.Fatalf("owner with a separator: %d %v", code, out)
	}

	// The audit trail has the correlation id and the agent's reason.
	_, audit, err := m.Do("GET", "/v1/audit?correlation_id=fix-42", service.RoleReviewer, nil)
	if err != nil {
		t.Fatal(err)
	}
	recs, _ := audit["records"].([]any)
	if len(recs) != 2 || recs[1].(map[string]any)["reason"] != "read the failing test" || recs[1].(map[string]any)["task"] != "task:"+task {
		t.Fatalf("audit by correlation id: %v", audit)
	}

	// Revocation stops the very next request.
	m.Must(t, "DELETE", "/v1/agents/"+agent, service.RoleOperator, nil)
	if code, _, out := do("GET", "/repos/acme/api", as); code != 403 || out["reason_code"] != "AGENT_REVOKED" {
		t.Fatalf("after revocation: %d %v", code, out)
	}

	// Without mandate, every request is refused with 503, never passed through.
	m.Stop()
	if code, _, out := do("GET", "/repos/acme/api", as); code != 503 || out["error"] != "unavailable" {
		t.Fatalf("with mandate stopped: %d %v", code, out)
	}
}
