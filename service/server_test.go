package service_test

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mandate-dev/mandate/engine/embedded"
	"github.com/mandate-dev/mandate/internal/testenv"
	"github.com/mandate-dev/mandate/server"
	"github.com/mandate-dev/mandate/service"
)

// api is a running server as the tests here talk to it.
type api struct {
	*testenv.Server
	t    *testing.T
	base string
}

func startServer(t *testing.T, cfg server.Config) *api {
	t.Helper()
	a, _ := startStoppable(t, cfg)
	return a
}

// startStoppable starts a server and returns a function that stops it.
func startStoppable(t *testing.T, cfg server.Config) (*api, func()) {
	t.Helper()
	s := testenv.Start(t, cfg)
	return &api{Server: s, t: t, base: s.Base}, s.Stop
}

// do sends a request and returns the status and decoded JSON body.
func (a *api) do(method, path string, role service.Role, body any) (int, map[string]any) {
	a.t.Helper()
	return a.Do(method, path, role, body)
}

func (a *api) ok(method, path string, role service.Role, body any) map[string]any {
	a.t.Helper()
	code, out := a.do(method, path, role, body)
	if code != 200 {
		a.t.Fatalf("%s %s: %d %v", method, path, code, out)
	}
	return out
}

func field(m map[string]any, path ...string) any {
	var cur any = m
	for _, p := range path {
		mm, ok := cur.(map[string]any)
		if !ok {
			return nil
		}
		cur = mm[p]
	}
	return cur
}

// scene sets up alice, a task, an agent and a sub-agent, and returns their ids.
func (a *api) scene() (task, agent, sub string) {
	a.ok("POST", "/v1/relationships:write", service.RoleAdmin, map[string]any{"updates": []map[string]string{
		{"operation": "TOUCH", "relationship": "repo:acme/api#reader@user:alice"},
	}})
	task = field(a.ok("POST", "/v1/tasks", service.RoleOperator, map[string]string{"principal": "user:alice", "description": "fix the flaky test", "ttl": "2h"}), "task", "id").(string)
	agent = field(a.ok("POST", "/v1/agents", service.RoleOperator, map[string]string{"task": "task:" + task, "name": "fixer", "ttl": "1h"}), "agent", "id").(string)
	sub = field(a.ok("POST", "/v1/agents", service.RoleOperator, map[string]string{"task": "task:" + task, "parent": "agent:" + agent, "name": "runner", "ttl": "30m"}), "agent", "id").(string)
	return
}

func TestWalkthroughOverREST(t *testing.T) {
	a := startServer(t, server.Config{})
	task, agent, sub := a.scene()
	a.ok("POST", "/v1/grants", service.RoleOperator, map[string]string{"holder": "agent:" + agent, "permission": "read", "resource": "repo:acme/api", "ttl": "15m"})
	a.ok("POST", "/v1/grants", service.RoleOperator, map[string]string{"holder": "agent:" + sub, "permission": "read", "resource": "repo:acme/api", "ttl": "10m"})
	for _, s := range []string{agent, sub} {
		out := a.ok("POST", "/v1/check", service.RoleChecker, map[string]string{"subject": "agent:" + s, "permission": "read", "resource": "repo:acme/api", "correlation_id": "c-1", "reason": "pull the code"})
		if out["allowed"] != true || out["reason_code"] != "ALLOWED" || out["principal"] != "user:alice" || out["task"] != "task:"+task {
			t.Fatalf("check %s: %v", s, out)
		}
		if !strings.HasPrefix(out["decision_id"].(string), "dec_") || out["consistency_token"] == "" || out["valid_until"] == nil {
			t.Fatalf("check response lacks ids: %v", out)
		}
	}
	bulk := a.ok("POST", "/v1/check:bulk", service.RoleChecker, map[string]any{"checks": []map[string]string{
		{"subject": "agent:" + agent, "permission": "read", "resource": "repo:acme/api"},
		{"subject": "agent:" + agent, "permission": "write", "resource": "repo:acme/api"},
	}})
	results := bulk["results"].([]any)
	if len(results) != 2 || results[0].(map[string]any)["allowed"] != true || results[1].(map[string]any)["reason_code"] != "NO_GRANT" {
		t.Fatalf("bulk: %v", bulk)
	}
	got := a.ok("GET", "/v1/agents/"+sub, service.RoleReviewer, nil)
	if chain := field(got, "agent", "chain").([]any); len(chain) != 3 || chain[1] != "agent:"+agent || chain[2] != "user:alice" {
		t.Fatalf("sub-agent chain: %v", got)
	}
	a.ok("POST", "/v1/tasks/"+task+":complete", service.RoleOperator, nil)
	for _, s := range []string{agent, sub} {
		out := a.ok("POST", "/v1/check", service.RoleChecker, map[string]string{"subject": "agent:" + s, "permission": "read", "resource": "repo:acme/api"})
		if out["allowed"] != false || out["reason_code"] != "TASK_COMPLETED" {
			t.Fatalf("after complete, %s: %v", s, out)
		}
	}
	if st := field(a.ok("GET", "/v1/tasks/"+task, service.RoleReviewer, nil), "task", "status"); st != "completed" {
		t.Fatalf("task status %v", st)
	}
}

func TestRoles(t *testing.T) {
	a := startServer(t, server.Config{})
	task, agent, _ := a.scene()
	type call struct {
		method, path string
		body         any
	}
	calls := map[string]call{
		"check":             {"POST", "/v1/check", map[string]string{"subject": "user:alice", "permission": "read", "resource": "repo:acme/api"}},
		"create task":       {"POST", "/v1/tasks", map[string]string{"principal": "user:alice", "ttl": "1h"}},
		"get task":          {"GET", "/v1/tasks/" + task, nil},
		"get agent":         {"GET", "/v1/agents/" + agent, nil},
		"read schema":       {"GET", "/v1/schema", nil},
		"read rels":         {"GET", "/v1/relationships?resource_type=repo", nil},
		"write rels":        {"POST", "/v1/relationships:write", map[string]any{"updates": []map[string]string{{"operation": "TOUCH", "relationship": "repo:acme/x#reader@user:bob"}}}},
		"write schema":      {"PUT", "/v1/schema", map[string]string{"schema": "definition user {}"}},
		"freeze":            {"POST", "/v1/agents:freeze-all", map[string]string{"reason": "drill"}},
		"unfreeze":          {"POST", "/v1/agents:unfreeze-all", map[string]string{}},
		"suspend principal": {"POST", "/v1/principals/alice:suspend-agents", map[string]string{}},
		"resume principal":  {"POST", "/v1/principals/alice:resume-agents", map[string]string{}},
	}
	allowed := map[service.Role][]string{
		service.RoleChecker:  {"check"},
		service.RoleOperator: {"create task", "get task", "get agent", "suspend principal", "resume principal"},
		service.RoleReviewer: {"get task", "get agent", "read schema", "read rels"},
		service.RoleGateway:  {"check"},
		service.RoleAdmin:    {"check", "create task", "get task", "get agent", "read schema", "read rels", "write rels", "write schema", "freeze", "unfreeze", "suspend principal", "resume principal"},
	}
	for _, role := range service.Roles {
		ok := map[string]bool{}
		for _, n := range allowed[role] {
			ok[n] = true
		}
		for name, c := range calls {
			code, out := a.do(c.method, c.path, role, c.body)
			switch {
			case ok[name] && (code == 401 || code == 403):
				t.Errorf("%s may %s, got %d %v", role, name, code, out)
			case !ok[name] && code != 403:
				t.Errorf("%s may not %s, got %d %v", role, name, code, out)
			}
		}
	}
	for name, c := range calls {
		if code, _ := a.do(c.method, c.path, "", c.body); code != 401 {
			t.Errorf("%s without a key: %d, want 401", name, code)
		}
		req, _ := http.NewRequest(c.method, a.base+c.path, nil)
		req.Header.Set("Authorization", "Bearer not-a-key")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 401 || !strings.HasPrefix(resp.Header.Get("WWW-Authenticate"), "Bearer") {
			t.Errorf("%s with a wrong key: %d %q, want 401 with a Bearer challenge", name, resp.StatusCode, resp.Header.Get("WWW-Authenticate"))
		}
	}
	// Health needs no key.
	if resp, err := http.Get(a.base + "/healthz"); err != nil || resp.StatusCode != 200 {
		t.Fatalf("healthz: %v %v", resp, err)
	}
	if code, out := a.do("GET", "/openapi.json", "", nil); code != 200 || out["swagger"] != "2.0" {
		t.Fatalf("openapi: %d", code)
	}
}

func TestBadInput(t *testing.T) {
	a := startServer(t, server.Config{})
	task, agent, _ := a.scene()
	huge := strings.Repeat("x", 2<<20)
	cases := []struct {
		name      string
		method    string
		path      string
		role      service.Role
		body      any
		wantCode  int
		wantField string
	}{
		{"malformed principal", "POST", "/v1/tasks", service.RoleOperator, map[string]string{"principal": "alice", "ttl": "1h"}, 400, "principal"},
		{"principal not a user", "POST", "/v1/tasks", service.RoleOperator, map[string]string{"principal": "repo:x", "ttl": "1h"}, 400, "principal"},
		{"missing principal", "POST", "/v1/tasks", service.RoleOperator, map[string]string{"ttl": "1h"}, 400, "principal"},
		{"missing ttl", "POST", "/v1/tasks", service.RoleOperator, map[string]string{"principal": "user:alice"}, 400, "ttl"},
		{"zero ttl", "POST", "/v1/tasks", service.RoleOperator, map[string]string{"principal": "user:alice", "ttl": "0s"}, 400, "ttl"},
		{"negative ttl", "POST", "/v1/tasks", service.RoleOperator, map[string]string{"principal": "user:alice", "ttl": "-5m"}, 400, "ttl"},
		{"too long ttl", "POST", "/v1/tasks", service.RoleOperator, map[string]string{"principal": "user:alice", "ttl": "25h"}, 400, "ttl"},
		{"unparseable ttl", "POST", "/v1/tasks", service.RoleOperator, map[string]string{"principal": "user:alice", "ttl": "two hours"}, 400, "ttl"},
		{"unknown field", "POST", "/v1/tasks", service.RoleOperator, `{"principal":"user:alice","ttl":"1h","owner":"bob"}`, 400, "owner"},
		{"malformed json", "POST", "/v1/tasks", service.RoleOperator, `{"principal":`, 400, "body"},
		{"oversized body", "POST", "/v1/tasks", service.RoleOperator, map[string]string{"principal": "user:alice", "ttl": "1h", "description": huge}, 413, "body"},
		{"bad task id", "GET", "/v1/tasks/nope", service.RoleOperator, nil, 400, "id"},
		{"unknown task", "GET", "/v1/tasks/tsk_0000000000000000000000000", service.RoleOperator, nil, 404, "id"},
		{"agent for unknown task", "POST", "/v1/agents", service.RoleOperator, map[string]string{"task": "task:tsk_0000000000000000000000000", "name": "x", "ttl": "1h"}, 404, "task"},
		{"agent without name", "POST", "/v1/agents", service.RoleOperator, map[string]string{"task": "task:" + task, "ttl": "1h"}, 400, "name"},
		{"agent task wrong type", "POST", "/v1/agents", service.RoleOperator, map[string]string{"task": "agent:" + agent, "name": "x", "ttl": "1h"}, 400, "task"},
		{"unknown parent", "POST", "/v1/agents", service.RoleOperator, map[string]string{"task": "task:" + task, "parent": "agent:agt_nope", "name": "x", "ttl": "1h"}, 404, "parent"},
		{"grant unknown type", "POST", "/v1/grants", service.RoleOperator, map[string]string{"holder": "agent:" + agent, "permission": "read", "resource": "spaceship:x", "ttl": "1m"}, 400, "resource"},
		{"grant unknown permission", "POST", "/v1/grants", service.RoleOperator, map[string]string{"holder": "agent:" + agent, "permission": "fly", "resource": "repo:acme/api", "ttl": "1m"}, 400, "permission"},
		{"grant relation not permission", "POST", "/v1/grants", service.RoleOperator, map[string]string{"holder": "agent:" + agent, "permission": "reader", "resource": "repo:acme/api", "ttl": "1m"}, 400, "permission"},
		{"grant holder user", "POST", "/v1/grants", service.RoleOperator, map[string]string{"holder": "user:alice", "permission": "read", "resource": "repo:acme/api", "ttl": "1m"}, 400, "holder"},
		{"grant too long", "POST", "/v1/grants", service.RoleOperator, map[string]string{"holder": "agent:" + agent, "permission": "read", "resource": "repo:acme/api", "ttl": "2h"}, 400, "ttl"},
		{"escalation", "POST", "/v1/grants", service.RoleOperator, map[string]string{"holder": "agent:" + agent, "permission": "write", "resource": "repo:acme/api", "ttl": "1m"}, 403, ""},
		{"check malformed subject", "POST", "/v1/check", service.RoleChecker, map[string]string{"subject": "agentx", "permission": "read", "resource": "repo:acme/api"}, 400, "subject"},
		{"check unknown type", "POST", "/v1/check", service.RoleChecker, map[string]string{"subject": "agent:" + agent, "permission": "read", "resource": "spaceship:x"}, 400, "resource"},
		{"check unknown permission", "POST", "/v1/check", service.RoleChecker, map[string]string{"subject": "agent:" + agent, "permission": "fly", "resource": "repo:acme/api"}, 400, "permission"},
		{"check missing permission", "POST", "/v1/check", service.RoleChecker, map[string]string{"subject": "agent:" + agent, "resource": "repo:acme/api"}, 400, "permission"},
		{"check reserved context", "POST", "/v1/check", service.RoleChecker, map[string]any{"subject": "agent:" + agent, "permission": "read", "resource": "repo:acme/api", "context": map[string]any{"now": "2030-01-01T00:00:00Z"}}, 400, "context.now"},
		{"check reserved caveat parameter", "POST", "/v1/check", service.RoleChecker, map[string]any{"subject": "agent:" + agent, "permission": "read", "resource": "repo:acme/api", "context": map[string]any{"expires_at": "2999-01-01T00:00:00Z"}}, 400, "context.expires_at"},
		{"check garbage consistency_token", "POST", "/v1/check", service.RoleChecker, map[string]string{"subject": "agent:" + agent, "permission": "read", "resource": "repo:acme/api", "consistency_token": "garbage!!"}, 400, "consistency_token"},
		{"check base64 non-token consistency_token", "POST", "/v1/check", service.RoleChecker, map[string]string{"subject": "agent:" + agent, "permission": "read", "resource": "repo:acme/api", "consistency_token": "aGVsbG8="}, 400, "consistency_token"},
		{"bulk item garbage consistency_token", "POST", "/v1/check:bulk", service.RoleChecker, map[string]any{"checks": []map[string]string{{"subject": "user:alice", "permission": "read", "resource": "repo:acme/api", "consistency_token": "x"}}}, 400, "checks[0].consistency_token"},
		{"check risk_score as a string", "POST", "/v1/check", service.RoleChecker, map[string]any{"subject": "agent:" + agent, "permission": "read", "resource": "repo:acme/api", "context": map[string]any{"risk_score": "0.1"}}, 400, "context.risk_score"},
		{"check long correlation_id", "POST", "/v1/check", service.RoleChecker, map[string]any{"subject": "agent:" + agent, "permission": "read", "resource": "repo:acme/api", "correlation_id": strings.Repeat("c", 257)}, 400, "correlation_id"},
		{"check huge context", "POST", "/v1/check", service.RoleChecker, map[string]any{"subject": "agent:" + agent, "permission": "read", "resource": "repo:acme/api", "context": map[string]any{"note": strings.Repeat("n", 9000)}}, 400, "context"},
		{"check long reason", "POST", "/v1/check", service.RoleChecker, map[string]any{"subject": "agent:" + agent, "permission": "read", "resource": "repo:acme/api", "reason": strings.Repeat("r", 4097)}, 400, "reason"},
		{"bulk empty", "POST", "/v1/check:bulk", service.RoleChecker, map[string]any{"checks": []any{}}, 400, "checks"},
		{"bulk bad item", "POST", "/v1/check:bulk", service.RoleChecker, map[string]any{"checks": []map[string]string{{"subject": "user:alice", "permission": "read", "resource": "repo:acme/api"}, {"subject": "bad", "permission": "read", "resource": "repo:acme/api"}}}, 400, "checks[1].subject"},
		{"write core relationship", "POST", "/v1/relationships:write", service.RoleAdmin, map[string]any{"updates": []map[string]string{{"operation": "TOUCH", "relationship": "agent:" + agent + "#suspended@agent:*"}}}, 400, "updates[0].relationship"},
		{"write grant relation", "POST", "/v1/relationships:write", service.RoleAdmin, map[string]any{"updates": []map[string]string{{"operation": "TOUCH", "relationship": "repo:acme/api#read_grant@agent:" + agent}}}, 400, "updates[0].relationship"},
		{"write bad operation", "POST", "/v1/relationships:write", service.RoleAdmin, map[string]any{"updates": []map[string]string{{"operation": "UPSERT", "relationship": "repo:acme/api#reader@user:bob"}}}, 400, "updates[0].operation"},
		{"write unknown relation", "POST", "/v1/relationships:write", service.RoleAdmin, map[string]any{"updates": []map[string]string{{"operation": "TOUCH", "relationship": "repo:acme/api#owner@user:bob"}}}, 400, "updates[0].relationship"},
		{"write wrong subject type", "POST", "/v1/relationships:write", service.RoleAdmin, map[string]any{"updates": []map[string]string{{"operation": "TOUCH", "relationship": "repo:acme/api#reader@repo:other"}}}, 400, "updates"},
		{"schema dropping core", "PUT", "/v1/schema", service.RoleAdmin, map[string]string{"schema": "definition user {}"}, 400, "schema"},
		{"schema without grant relation", "PUT", "/v1/schema", service.RoleAdmin, map[string]string{"schema": strings.Replace(defaultSchema(t, a), "definition repo {", "definition doc {\n\trelation viewer: user\n\tpermission view = viewer\n}\n\ndefinition repo {", 1)}, 400, "schema"},
		{"read rels without type", "GET", "/v1/relationships", service.RoleReviewer, nil, 400, "resource_type"},
		{"read rels bad page size", "GET", "/v1/relationships?resource_type=repo&page_size=5000", service.RoleReviewer, nil, 400, "page_size"},
		{"unknown route", "GET", "/v1/nothing", service.RoleAdmin, nil, 404, ""},
		{"wrong method", "PATCH", "/v1/tasks", service.RoleAdmin, nil, 405, ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			code, out := a.do(c.method, c.path, c.role, c.body)
			if code != c.wantCode {
				t.Fatalf("got %d %v, want %d", code, out, c.wantCode)
			}
			msg, _ := out["message"].(string)
			if c.wantField != "" && !strings.Contains(msg, c.wantField) {
				t.Fatalf("message %q does not name %q", msg, c.wantField)
			}
		})
	}
	// A huge id is refused without coming back in the answer.
	hugeID := strings.Repeat("a", 100000)
	code, _, body := a.Call("POST", "/v1/check", "Bearer "+testenv.Keys[service.RoleChecker], map[string]string{"subject": "agent:" + hugeID, "permission": "read", "resource": "repo:acme/api"})
	if code != 400 || len(body) > 4096 || !strings.Contains(string(body), "subject") {
		t.Fatalf("huge subject: %d, %d bytes, want a short 400 naming subject", code, len(body))
	}
	// Nothing half-written: the refused schema left the old one in place.
	if !strings.Contains(defaultSchema(t, a), "definition repo") || strings.Contains(defaultSchema(t, a), "definition doc") {
		t.Fatal("a refused schema changed the stored schema")
	}
}

func defaultSchema(t *testing.T, a *api) string {
	t.Helper()
	return a.ok("GET", "/v1/schema", service.RoleAdmin, nil)["schema"].(string)
}

// TestSpiceDBDown runs mandate against a remote SpiceDB (the --spicedb-endpoint
// path), then stops that SpiceDB: every check must fail with 503, never allow.
func TestSpiceDBDown(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	sdb, err := embedded.Start(context.Background(), embedded.Config{Engine: "memory", APIAddr: addr, APIKey: "sdb-key"})
	if err != nil {
		t.Fatal(err)
	}
	stopped := false
	t.Cleanup(func() {
		if !stopped {
			_ = sdb.Close()
		}
	})
	a := startServer(t, server.Config{SpiceDBEndpoint: addr, SpiceDBToken: "sdb-key", SpiceDBInsecure: true})
	_, agent, _ := a.scene()
	a.ok("POST", "/v1/grants", service.RoleOperator, map[string]string{"holder": "agent:" + agent, "permission": "read", "resource": "repo:acme/api", "ttl": "15m"})
	check := map[string]string{"subject": "agent:" + agent, "permission": "read", "resource": "repo:acme/api"}
	if out := a.ok("POST", "/v1/check", service.RoleChecker, check); out["allowed"] != true {
		t.Fatalf("before the outage: %v", out)
	}
	if err := sdb.Close(); err != nil {
		t.Fatal(err)
	}
	stopped = true
	// Until the cache's watch notices the outage (milliseconds), it may still
	// serve the answer it holds: that answer reflects every write SpiceDB
	// made, and no write can happen while SpiceDB is down. Once the watch
	// breaks, the cache is bypassed and nothing is allowed.
	deadline := time.Now().Add(5 * time.Second)
	for {
		code, h := a.do("GET", "/healthz", "", nil)
		if code == 503 && strings.HasPrefix(fmt.Sprint(h["cache"]), "bypassed") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("healthz never reported the outage and the bypassed cache: %d %v", code, h)
		}
		time.Sleep(10 * time.Millisecond)
	}
	for i := 0; i < 5; i++ {
		code, out := a.do("POST", "/v1/check", service.RoleChecker, check)
		if code != 503 || out["allowed"] == true {
			t.Fatalf("with SpiceDB down: %d %v, want 503", code, out)
		}
		userCheck := map[string]string{"subject": "user:alice", "permission": "read", "resource": "repo:acme/api"}
		if code, out := a.do("POST", "/v1/check", service.RoleChecker, userCheck); code != 503 {
			t.Fatalf("user check with SpiceDB down: %d %v, want 503", code, out)
		}
	}
	if resp, err := http.Get(a.base + "/healthz"); err != nil || resp.StatusCode != 503 {
		t.Fatalf("healthz with SpiceDB down: %v %v, want 503", resp, err)
	}
	// A 503 says when to come back.
	if code, hdr, body := a.Call("POST", "/v1/check", "Bearer "+testenv.Keys[service.RoleChecker], check); code != 503 || hdr.Get("Retry-After") == "" {
		t.Fatalf("check with SpiceDB down: %d, Retry-After %q, %s; want 503 with Retry-After", code, hdr.Get("Retry-After"), body)
	}
	// Every check that failed (five, and the one that read Retry-After) left
	// a record saying so, with its subject.
	out := a.ok("GET", "/v1/audit?decision=error&agent=agent:"+agent, service.RoleReviewer, nil)
	recs := asList(out["records"])
	if len(recs) != 6 {
		t.Fatalf("%d decision=error records of the agent, want 6: %v", len(recs), out)
	}
	for _, r := range recs {
		if m := r.(map[string]any); m["decision"] != "error" || m["subject"] != "agent:"+agent || m["id"] == nil {
			t.Fatalf("error record %v", m)
		}
	}
}

// TestRequestIDInAnswerAndAudit: the id an answer carries is the id its audit
// record names, whether the caller's id was kept or, too long, replaced.
func TestRequestIDInAnswerAndAudit(t *testing.T) {
	a := startServer(t, server.Config{})
	for _, sent := range []string{"deploy-42", strings.Repeat("x", 10000)} {
		req, _ := http.NewRequest("POST", a.base+"/v1/check", strings.NewReader(`{"subject":"user:alice","permission":"read","resource":"repo:acme/api"}`))
		req.Header.Set("Authorization", "Bearer "+testenv.Keys[service.RoleChecker])
		req.Header.Set("X-Request-Id", sent)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		got := resp.Header.Get("X-Request-Id")
		if got == "" || len(got) > 128 || (len(sent) <= 128 && got != sent) {
			t.Fatalf("sent %d bytes, answer id %q", len(sent), got)
		}
		found := false
		for _, r := range asList(a.ok("GET", "/v1/audit?limit=50", service.RoleReviewer, nil)["records"]) {
			if r.(map[string]any)["request_id"] == got {
				found = true
			}
		}
		if !found {
			t.Fatalf("no audit record names request id %q", got)
		}
	}
}

// lockedBuffer is a log destination tests can read while the server writes.
type lockedBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// TestFailedAuthenticationLeavesATrace: refused calls are counted by reason,
// and a known key whose role is too small is logged by name.
func TestFailedAuthenticationLeavesATrace(t *testing.T) {
	logs := &lockedBuffer{}
	a := startServer(t, server.Config{Log: slog.New(slog.NewTextHandler(logs, nil))})
	for i := 0; i < 3; i++ {
		if code, _, _ := a.Call("GET", "/v1/audit", "Bearer not-a-key", nil); code != 401 {
			t.Fatalf("unknown key: %d", code)
		}
	}
	if code, _ := a.do("GET", "/v1/audit", service.RoleChecker, nil); code != 403 {
		t.Fatalf("checker reading audit: %d", code)
	}
	_, _, metrics := a.Call("GET", "/metrics", "", nil)
	// (Also served: the count of SpiceDB answers from before an acknowledged write, none here.)
	for _, want := range []string{`mandate_auth_failures_total{reason="unauthenticated"} 3`, `mandate_auth_failures_total{reason="forbidden"} 1`, "mandate_stale_reads_total 0"} {
		if !strings.Contains(string(metrics), want) {
			t.Errorf("metrics lack %s", want)
		}
	}
	if l := logs.String(); !strings.Contains(l, "call refused") || !strings.Contains(l, "key=test-checker") || !strings.Contains(l, "ListAudit") {
		t.Errorf("no log line names the checker key refused on ListAudit:\n%s", l)
	}
}
