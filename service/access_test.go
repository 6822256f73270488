package service_test

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mandate-dev/mandate/engine"
	"github.com/mandate-dev/mandate/engine/alert"
	"github.com/mandate-dev/mandate/engine/embedded"
	"github.com/mandate-dev/mandate/internal/testenv"
	"github.com/mandate-dev/mandate/server"
	"github.com/mandate-dev/mandate/service"
)

// oncallKey is a second operator key: the testenv operator key files
// requests, this one answers them.
const oncallKey = "test-oncall-operator-key"

// keysWithOncall is testenv's keys file plus the oncall operator key.
func keysWithOncall(t *testing.T) string {
	t.Helper()
	p := testenv.KeysFile(t)
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256([]byte(oncallKey))
	b = append(b, fmt.Sprintf("  - {name: oncall, role: operator, sha256: %s}\n", hex.EncodeToString(sum[:]))...)
	if err := os.WriteFile(p, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// call sends a JSON request with a raw Authorization header and decodes the answer.
func (a *api) call(method, path, authorization string, body any) (int, map[string]any) {
	a.t.Helper()
	code, _, raw := a.Call(method, path, authorization, body)
	out := map[string]any{}
	if err := json.Unmarshal(raw, &out); err != nil {
		out["raw"] = string(raw)
	}
	return code, out
}

// fileRequest files a request as the testenv operator key ("test-operator").
func (a *api) fileRequest(agent, perm, res, ttl string) map[string]any {
	a.t.Helper()
	return a.ok("POST", "/v1/access-requests", service.RoleOperator, map[string]string{
		"agent": "agent:" + agent, "permission": perm, "resource": res, "ttl": ttl, "reason": "the release needs it",
	})["access_request"].(map[string]any)
}

// TestAccessRequestsOverREST: the whole loop on REST without an OIDC issuer:
// filed by an agent runtime's key (and the human told through the webhook),
// refused to the filing key, approved by another operator key, after which
// the agent's next check (with the approval's token) allows and its access
// listing shows the grant; answered only once; every step audited; bad input
// answered 400 naming the field.
func TestAccessRequestsOverREST(t *testing.T) {
	hook := newWebhook(t, 0, "")
	a := startServer(t, server.Config{KeysFile: keysWithOncall(t), Bounds: server.BoundsConfig{Webhook: hook.srv.URL}})
	_, agent, sub := a.scene()
	a.ok("POST", "/v1/relationships:write", service.RoleAdmin, map[string]any{"updates": []map[string]string{
		{"operation": "TOUCH", "relationship": "repo:acme/api#writer@user:alice"},
	}})
	a.expectReason(a.check("agent:"+agent, "write", "repo:acme/api", nil), "NO_GRANT")

	req := a.fileRequest(agent, "write", "repo:acme/api", "30m")
	id := req["id"].(string)
	if req["state"] != "pending" || req["filed_by"] != "test-operator" || req["human"] != "user:alice" || !strings.HasPrefix(id, "acr_") {
		t.Fatalf("filed: %v", req)
	}
	ev := hook.wait(t, 1)[0]
	if ev.Type != alert.TypeAccessRequestFiled || ev.AccessRequest == nil || ev.AccessRequest.ID != id || ev.AccessRequest.Human != "user:alice" ||
		ev.Principal != "user:alice" || ev.Agent != "agent:"+agent || ev.AccessRequest.Reason != "the release needs it" {
		t.Fatalf("webhook event: %+v", ev)
	}

	// The runtime asking again gets the same request; the human is not told twice.
	if again := a.fileRequest(agent, "write", "repo:acme/api", "30m"); again["id"] != id {
		t.Fatalf("asking again: %v, want %s back", again, id)
	}

	// A long poll started now wakes with the answer.
	polled := make(chan map[string]any, 1)
	go func() {
		code, out := a.call("GET", "/v1/access-requests/"+id+"?wait=30s", "Bearer "+testenv.Keys[service.RoleOperator], nil)
		if code != 200 {
			t.Errorf("long poll: %d %v", code, out)
		}
		polled <- out
	}()

	code, out := a.do("POST", "/v1/access-requests/"+id+":approve", service.RoleOperator, map[string]string{"reason": "self-service"})
	if code != http.StatusForbidden || !strings.Contains(fmt.Sprint(out["message"]), "filed") {
		t.Fatalf("the filing key approving its own request: %d %v, want 403", code, out)
	}
	code, out = a.call("POST", "/v1/access-requests/"+id+":approve", "Bearer "+oncallKey, map[string]string{"reason": "release day"})
	if code != 200 {
		t.Fatalf("approval by another operator key: %d %v", code, out)
	}
	approved := out["access_request"].(map[string]any)
	grant := out["grant"].(map[string]any)
	if approved["state"] != "approved" || approved["decided_by"] != "oncall" || approved["decided_as"] != "operator" || approved["grant"] != grant["id"] ||
		approved["decision_reason"] != "release day" || grant["holder"] != "agent:"+agent {
		t.Fatalf("approved: %v", out)
	}
	d := a.ok("POST", "/v1/check", service.RoleChecker, map[string]string{"subject": "agent:" + agent, "permission": "write", "resource": "repo:acme/api",
		"consistency_token": out["consistency_token"].(string)})
	a.expectReason(d, "ALLOWED")
	if got := a.access(agent, "permission=write"); len(got) != 1 || !strings.Contains(got[0], "repo:acme/api") {
		t.Fatalf("access listing after the approval: %v", got)
	}
	select {
	case p := <-polled:
		if r, _ := p["access_request"].(map[string]any); r == nil || r["state"] != "approved" {
			t.Fatalf("long poll returned %v", p)
		}
	case <-time.After(25 * time.Second):
		t.Fatal("the long poll did not return after the approval")
	}

	code, out = a.do("POST", "/v1/access-requests/"+id+":approve", service.RoleAdmin, map[string]string{})
	if code != http.StatusConflict || !strings.Contains(fmt.Sprint(out["message"]), "already") {
		t.Fatalf("a second approval: %d %v, want 409", code, out)
	}
	code, _ = a.do("POST", "/v1/access-requests/"+id+":decline", service.RoleAdmin, map[string]string{})
	if code != http.StatusConflict {
		t.Fatalf("declining an approved request: %d, want 409", code)
	}

	// A sub-agent's request for what its parent lacks is refused at once.
	code, out = a.do("POST", "/v1/access-requests", service.RoleOperator, map[string]string{
		"agent": "agent:" + sub, "permission": "read", "resource": "repo:acme/api", "ttl": "5m", "reason": "x"})
	if code != http.StatusForbidden || !hasReason(out, "ESCALATION") {
		t.Fatalf("escalating request: %d %v, want 403 ESCALATION", code, out)
	}

	// Declined: no grant.
	a.grantTo("agent:"+agent, "read", "repo:acme/api", "30m")
	dec := a.fileRequest(sub, "read", "repo:acme/api", "5m")
	out = a.ok("POST", "/v1/access-requests/"+dec["id"].(string)+":decline", service.RoleAdmin, map[string]string{"reason": "not for a sub-agent"})
	if r := out["access_request"].(map[string]any); r["state"] != "declined" || r["decided_as"] != "admin" || r["decided_by"] != "test-admin" {
		t.Fatalf("declined: %v", out)
	}
	a.expectReason(a.check("agent:"+sub, "read", "repo:acme/api", nil), "NO_GRANT")
	if evs := hook.wait(t, 2); len(evs) != 2 || evs[1].AccessRequest == nil || evs[1].AccessRequest.ID != dec["id"] {
		t.Fatalf("webhook events: %+v, want one per request filed (the refiling and the refused one tell no one)", evs)
	}

	// Listings: by agent, by human, by state; reviewers may read.
	list := a.ok("GET", "/v1/access-requests?human=user:alice&state=pending", service.RoleReviewer, nil)
	if n := len(asList(list["access_requests"])); n != 0 {
		t.Fatalf("alice's pending requests: %v", list)
	}
	list = a.ok("GET", "/v1/access-requests?agent=agent:"+agent, service.RoleReviewer, nil)
	if l := asList(list["access_requests"]); len(l) != 1 || l[0].(map[string]any)["id"] != id {
		t.Fatalf("the agent's requests: %v", list)
	}
	list = a.ok("GET", "/v1/access-requests?page_size=1", service.RoleReviewer, nil)
	if l := asList(list["access_requests"]); len(l) != 1 || l[0].(map[string]any)["id"] != dec["id"] || list["next_page_token"] == "" {
		t.Fatalf("first page: %v", list)
	}
	list = a.ok("GET", "/v1/access-requests?page_size=1&page_token="+url.QueryEscape(list["next_page_token"].(string)), service.RoleReviewer, nil)
	if l := asList(list["access_requests"]); len(l) != 1 || l[0].(map[string]any)["id"] != id {
		t.Fatalf("second page: %v", list)
	}

	// Every step is in the audit trail, with the key, the human and the reason.
	for _, c := range []struct{ action, caller, reason string }{
		{"access_request.file", "test-operator", "the release needs it"},
		{"access_request.approve", "oncall", "release day"},
		{"access_request.decline", "test-admin", "not for a sub-agent"},
		{"access_request.refused", "test-operator", ""},
	} {
		recs := a.records(c.action)
		if len(recs) == 0 {
			t.Fatalf("no %s record", c.action)
		}
		r := recs[len(recs)-1]
		if r["caller"] != c.caller || c.reason != "" && (r["reason"] != c.reason || r["principal"] != "user:alice") {
			t.Errorf("%s record: %v", c.action, r)
		}
	}
	if recs := a.records("access_request.approve"); field(recs[0], "details", "decided_as") != "operator" {
		t.Errorf("the approval's record does not say an operator key answered: %v", recs[0])
	}
	if recs := a.records("grant.create"); len(recs) != 2 || field(recs[0], "details", "access_request") != "access_request:"+id && field(recs[1], "details", "access_request") != "access_request:"+id {
		t.Errorf("the approval's grant is not audited as made for the request: %v", recs)
	}
	byAgent := records(a.ok("GET", "/v1/audit?agent=agent:"+agent, service.RoleReviewer, nil))
	seen := map[string]bool{}
	for _, r := range byAgent {
		seen[fmt.Sprint(r["action"])] = true
	}
	if !seen["access_request.file"] || !seen["access_request.approve"] {
		t.Errorf("the agent's audit trail lacks its requests: %v", seen)
	}

	// Bad input: 400 naming the field.
	for _, c := range []struct {
		method, path string
		body         any
		field        string
	}{
		{"POST", "/v1/access-requests", map[string]string{"permission": "read", "resource": "repo:acme/api", "ttl": "5m", "reason": "x"}, "agent"},
		{"POST", "/v1/access-requests", map[string]string{"agent": "agent:agt_nobody", "permission": "read", "resource": "repo:acme/api", "ttl": "5m", "reason": "x"}, "agent"},
		{"POST", "/v1/access-requests", map[string]string{"agent": "agent:" + agent, "permission": "read", "resource": "repo:acme/api", "ttl": "5h", "reason": "x"}, "ttl"},
		{"POST", "/v1/access-requests", map[string]string{"agent": "agent:" + agent, "permission": "read", "resource": "acme", "ttl": "5m", "reason": "x"}, "resource"},
		{"POST", "/v1/access-requests", map[string]string{"agent": "agent:" + agent, "permission": "read", "resource": "repo:acme/api", "ttl": "5m"}, "reason"},
		{"GET", "/v1/access-requests/" + id + "?wait=2m", nil, "wait"},
		{"GET", "/v1/access-requests/" + id + "?wait=soon", nil, "wait"},
		{"GET", "/v1/access-requests/not-a-request", nil, "id"},
		{"GET", "/v1/access-requests?state=open", nil, "state"},
		{"GET", "/v1/access-requests?human=alice", nil, "human"},
		{"GET", "/v1/access-requests?page_size=5000", nil, "page_size"},
		{"GET", "/v1/access-requests?page_token=zzz", nil, "page_token"},
		{"POST", "/v1/access-requests/" + id + ":approve", map[string]string{"reason": strings.Repeat("x", 5000)}, "reason"},
	} {
		role := service.RoleOperator
		if strings.HasSuffix(c.path, ":approve") {
			role = service.RoleAdmin
		}
		code, out := a.do(c.method, c.path, role, c.body)
		if code != http.StatusBadRequest || !hasFieldViolation(out, c.field) {
			t.Errorf("%s %s %v: %d %v, want 400 naming %s", c.method, c.path, c.body, code, out, c.field)
		}
	}
	if code, out := a.do("GET", "/v1/access-requests/acr_nothere", service.RoleOperator, nil); code != http.StatusNotFound {
		t.Errorf("an unknown request: %d %v, want 404", code, out)
	}
}

func hasReason(out map[string]any, reason string) bool {
	for _, d := range asList(out["details"]) {
		if d.(map[string]any)["reason"] == reason {
			return true
		}
	}
	return false
}

// TestAccessRequestsWithOIDC: once humans sign in through an OIDC issuer, an
// operator key no longer answers; the human answers with their own token,
// and only for their own agents; another human sees and answers none of it;
// an admin still may. A human's token opens nothing else.
func TestAccessRequestsWithOIDC(t *testing.T) {
	idp := testenv.StartIdP(t)
	cfg := testenv.WithIdP(server.Config{KeysFile: keysWithOncall(t)}, idp)
	// Tasks here are opened with a bare principal, for brevity; the agents
	// of token exchange file and get answers the same way.
	cfg.Credentials.RequireHumanToken = "off"
	a := startServer(t, cfg)
	_, agent, _ := a.scene()
	a.ok("POST", "/v1/relationships:write", service.RoleAdmin, map[string]any{"updates": []map[string]string{
		{"operation": "TOUCH", "relationship": "repo:acme/api#writer@user:alice"},
	}})
	id := a.fileRequest(agent, "write", "repo:acme/api", "30m")["id"].(string)
	alice, bob := "Bearer "+idp.Login("alice"), "Bearer "+idp.Login("bob")

	code, out := a.call("POST", "/v1/access-requests/"+id+":approve", "Bearer "+oncallKey, map[string]string{})
	if code != http.StatusForbidden || !strings.Contains(fmt.Sprint(out["message"]), "OIDC") {
		t.Fatalf("an operator key approving with OIDC configured: %d %v, want 403", code, out)
	}
	for _, path := range []string{"/v1/access-requests/" + id + ":approve", "/v1/access-requests/" + id + ":decline"} {
		if code, out := a.call("POST", path, bob, map[string]string{}); code != http.StatusForbidden {
			t.Fatalf("bob answering alice's request (%s): %d %v, want 403", path, code, out)
		}
	}
	if code, out := a.call("GET", "/v1/access-requests/"+id, bob, nil); code != http.StatusForbidden {
		t.Fatalf("bob reading alice's request: %d %v, want 403", code, out)
	}
	if code, out := a.call("GET", "/v1/access-requests", bob, nil); code != 200 || len(asList(out["access_requests"])) != 0 {
		t.Fatalf("bob's list: %d %v, want his own (none)", code, out)
	}
	if code, out := a.call("GET", "/v1/access-requests?human=user:alice", bob, nil); code != http.StatusForbidden {
		t.Fatalf("bob listing alice's: %d %v, want 403", code, out)
	}
	if code, out := a.call("GET", "/v1/access-requests", alice, nil); code != 200 || len(asList(out["access_requests"])) != 1 {
		t.Fatalf("alice's list: %d %v", code, out)
	}
	// A human token is no key: nothing outside access requests takes it,
	// and a forged or foreign token is no human.
	if code, _ := a.call("POST", "/v1/grants", alice, map[string]string{"holder": "agent:" + agent, "permission": "write", "resource": "repo:acme/api", "ttl": "5m"}); code != http.StatusUnauthorized {
		t.Fatalf("a human token on POST /v1/grants: %d, want 401", code)
	}
	forged := "Bearer " + testenv.SignHS256(t, idp.PublicKeyPEM(), idp.KID(), idp.Claims("alice"))
	if code, _ := a.call("POST", "/v1/access-requests/"+id+":approve", forged, map[string]string{}); code != http.StatusUnauthorized {
		t.Fatalf("a forged token: %d, want 401", code)
	}
	a.expectReason(a.check("agent:"+agent, "write", "repo:acme/api", nil), "NO_GRANT")

	code, out = a.call("POST", "/v1/access-requests/"+id+":approve", alice, map[string]string{"reason": "go ahead"})
	if code != 200 {
		t.Fatalf("alice approving: %d %v", code, out)
	}
	if r := out["access_request"].(map[string]any); r["decided_by"] != "user:alice" || r["decided_as"] != "human" || r["state"] != "approved" {
		t.Fatalf("approved: %v", r)
	}
	a.expectReason(a.check("agent:"+agent, "write", "repo:acme/api", nil), "ALLOWED")
	if recs := a.records("access_request.approve"); len(recs) != 1 || recs[0]["caller"] != "user:alice" || field(recs[0], "details", "decided_as") != "human" {
		t.Fatalf("the approval's audit record: %v", recs)
	}

	// An admin key still answers.
	a.ok("POST", "/v1/relationships:write", service.RoleAdmin, map[string]any{"updates": []map[string]string{
		{"operation": "TOUCH", "relationship": "repo:acme/web#reader@user:alice"},
	}})
	second := a.fileRequest(agent, "read", "repo:acme/web", "5m")["id"].(string)
	out = a.ok("POST", "/v1/access-requests/"+second+":decline", service.RoleAdmin, map[string]string{"reason": "no"})
	if r := out["access_request"].(map[string]any); r["decided_as"] != "admin" {
		t.Fatalf("declined by an admin: %v", r)
	}
}

// TestAccessRequestLongPollAcrossReplicas: on Postgres, a long poll on one
// replica returns as soon as another replica approves, through SpiceDB's
// watch: its fallback polling is set to an hour, so only the watch can wake
// it before its wait is over.
func TestAccessRequestLongPollAcrossReplicas(t *testing.T) {
	uri := testenv.PostgresDB(t, "mandate_access_replicas")
	cfg := server.Config{KeysFile: keysWithOncall(t), Embedded: embedded.Config{Engine: "postgres", URI: uri, Migrate: true}, Audit: server.AuditConfig{Mode: "off"},
		Engine: engine.Config{AccessRequestPoll: time.Hour}}
	one := startServer(t, cfg)
	cfg.Embedded.Migrate = false
	two := startServer(t, cfg)
	_, agent, _ := one.scene()
	one.ok("POST", "/v1/relationships:write", service.RoleAdmin, map[string]any{"updates": []map[string]string{
		{"operation": "TOUCH", "relationship": "repo:acme/api#writer@user:alice"},
	}})
	id := one.fileRequest(agent, "write", "repo:acme/api", "30m")["id"].(string)

	var wg sync.WaitGroup
	polled := make(chan map[string]any, 1)
	wg.Add(1)
	go func() {
		defer wg.Done()
		code, out := one.call("GET", "/v1/access-requests/"+id+"?wait=40s", "Bearer "+testenv.Keys[service.RoleOperator], nil)
		if code != 200 {
			t.Errorf("long poll: %d %v", code, out)
		}
		polled <- out
	}()
	// The poll is waiting (it is pending until the approval below lands).
	time.Sleep(300 * time.Millisecond)
	code, out := two.call("POST", "/v1/access-requests/"+id+":approve", "Bearer "+oncallKey, map[string]string{"reason": "from the other replica"})
	if code != 200 {
		t.Fatalf("approval on the second replica: %d %v", code, out)
	}
	select {
	case p := <-polled:
		if r, _ := p["access_request"].(map[string]any); r == nil || r["state"] != "approved" || r["decided_by"] != "oncall" {
			t.Fatalf("the long poll on the first replica returned %v", p)
		}
	case <-time.After(50 * time.Second):
		t.Fatal("the long poll on the first replica did not return")
	}
	wg.Wait()
	one.expectReason(one.check("agent:"+agent, "write", "repo:acme/api", nil), "ALLOWED")
}

// offsetClock is the real clock plus an offset the test moves forward.
type offsetClock struct{ off atomic.Int64 }

func (c *offsetClock) now() time.Time { return time.Now().Add(time.Duration(c.off.Load())) }

// TestAccessRequestExpiresOverREST: a request unanswered past
// --access-request-ttl reads as expired, is audited as expired once (by
// mandate, naming the key whose read found it), and cannot be approved.
func TestAccessRequestExpiresOverREST(t *testing.T) {
	clk := &offsetClock{}
	a := startServer(t, server.Config{Engine: engine.Config{Now: clk.now, AccessRequestTTL: 10 * time.Minute}})
	_, agent, _ := a.scene()
	a.ok("POST", "/v1/relationships:write", service.RoleAdmin, map[string]any{"updates": []map[string]string{
		{"operation": "TOUCH", "relationship": "repo:acme/api#writer@user:alice"},
	}})
	id := a.fileRequest(agent, "write", "repo:acme/api", "5m")["id"].(string)
	clk.off.Store(int64(11 * time.Minute))
	for i := 0; i < 2; i++ {
		r := a.ok("GET", "/v1/access-requests/"+id, service.RoleReviewer, nil)["access_request"].(map[string]any)
		if r["state"] != "expired" || r["grant"] != "" {
			t.Fatalf("read %d after the ttl: %v", i, r)
		}
	}
	if code, out := a.do("POST", "/v1/access-requests/"+id+":approve", service.RoleAdmin, map[string]string{}); code != http.StatusConflict ||
		!strings.Contains(fmt.Sprint(out["message"]), "expired") {
		t.Fatalf("approving an expired request: %d %v, want 409", code, out)
	}
	recs := a.records("access_request.expire")
	if len(recs) != 1 || recs[0]["caller"] != "test-reviewer" || recs[0]["principal"] != "user:alice" {
		t.Fatalf("expiry records: %v, want one, found by the reviewer's read", recs)
	}
	a.expectReason(a.check("agent:"+agent, "write", "repo:acme/api", nil), "NO_GRANT")
}

// TestLongPollOutlivesTheWriteTimeout: a long poll longer than the
// server's write timeout still answers, because the handler sets its own
// deadline; without that the connection would be cut.
func TestLongPollOutlivesTheWriteTimeout(t *testing.T) {
	a := startServer(t, server.Config{Conn: server.ConnLimits{WriteTimeout: 500 * time.Millisecond}})
	_, agent, _ := a.scene()
	a.ok("POST", "/v1/relationships:write", service.RoleAdmin, map[string]any{"updates": []map[string]string{
		{"operation": "TOUCH", "relationship": "repo:acme/api#writer@user:alice"},
	}})
	id := a.fileRequest(agent, "write", "repo:acme/api", "5m")["id"].(string)
	start := time.Now()
	code, out := a.call("GET", "/v1/access-requests/"+id+"?wait=2s", "Bearer "+testenv.Keys[service.RoleOperator], nil)
	if code != 200 || out["access_request"].(map[string]any)["state"] != "pending" {
		t.Fatalf("a 2s long poll under a 500ms write timeout: %d %v", code, out)
	}
	if waited := time.Since(start); waited < 2*time.Second {
		t.Fatalf("the long poll answered after %s, before its wait", waited)
	}
}

// TestNoKeyIsHuman: RoleHuman is what a verified OIDC token gets, never a
// key: a keys file that gives a key that role is refused.
func TestNoKeyIsHuman(t *testing.T) {
	_, err := service.ParseKeys([]byte("keys:\n  - {name: fake-alice, role: human, sha256: " + strings.Repeat("ab", 32) + "}\n"))
	if err == nil || !strings.Contains(err.Error(), "role") {
		t.Fatalf("a key with role human: %v, want refused", err)
	}
}
