package audit_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"

	"github.com/mandate-dev/mandate/engine/bounds"
	"github.com/mandate-dev/mandate/internal/testenv"
	mandatev1 "github.com/mandate-dev/mandate/proto/mandate/v1"
	"github.com/mandate-dev/mandate/server"
	"github.com/mandate-dev/mandate/service"
)

// session drives a real mandate server over REST, AuthZEN and gRPC.
type session struct {
	t     *testing.T
	base  string
	keys  map[service.Role]string
	extra http.Header // sent with every request
}

func (s *session) call(method, path string, role service.Role, body any) (int, map[string]any) {
	s.t.Helper()
	var r io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		r = bytes.NewReader(b)
	}
	req, _ := http.NewRequest(method, s.base+path, r)
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+s.keys[role])
	for k, v := range s.extra {
		req.Header[k] = v
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		s.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	var out map[string]any
	_ = json.NewDecoder(resp.Body).Decode(&out)
	return resp.StatusCode, out
}

func (s *session) ok(method, path string, role service.Role, body any) map[string]any {
	s.t.Helper()
	code, out := s.call(method, path, role, body)
	if code != 200 {
		s.t.Fatalf("%s %s: %d %v", method, path, code, out)
	}
	return out
}

func (s *session) check(subject, perm, res string, ctx map[string]any, want string) {
	s.t.Helper()
	body := map[string]any{"subject": subject, "permission": perm, "resource": res, "correlation_id": "ocsf-session", "reason": "exercise the export"}
	if ctx != nil {
		body["context"] = ctx
	}
	out := s.ok("POST", "/v1/check", service.RoleChecker, body)
	if out["reason_code"] != want {
		s.t.Fatalf("check %s %s %s: %v, want %s", subject, perm, res, out, want)
	}
}

func (s *session) id(out map[string]any, obj string) string {
	return out[obj].(map[string]any)["id"].(string)
}

// startSession starts an in-process mandate with --audit-ocsf to a file and
// returns the session, the file and a function that stops the server (which
// flushes every record).
func startSession(t *testing.T) (*session, string, string, func()) {
	t.Helper()
	ocsfPath := filepath.Join(t.TempDir(), "ocsf.jsonl")
	m := testenv.Start(t, server.Config{
		Audit:  server.AuditConfig{OCSF: ocsfPath},
		Bounds: server.BoundsConfig{Defaults: bounds.Limits{ChecksPerMinute: 1000}},
	})
	s := &session{t: t, base: m.Base, keys: testenv.Keys}
	return s, m.Srv.GRPCAddr(), ocsfPath, m.Stop
}

// runSession makes every kind of record mandate writes.
func runSession(t *testing.T, s *session, grpcAddr string) {
	admin, op, checker := service.RoleAdmin, service.RoleOperator, service.RoleChecker
	s.ok("POST", "/v1/relationships:write", admin, map[string]any{"updates": []map[string]string{
		{"operation": "TOUCH", "relationship": "repo:acme/api#reader@user:alice"},
		{"operation": "TOUCH", "relationship": "repo:acme/api#writer@user:alice"},
		{"operation": "TOUCH", "relationship": "environment:prod#deployer@user:alice"},
		{"operation": "TOUCH", "relationship": "repo:acme/web#writer@user:alice"},
	}})
	task := s.id(s.ok("POST", "/v1/tasks", op, map[string]any{"principal": "user:alice", "description": "fix the flaky test", "ttl": "1h"}), "task")
	agent := s.id(s.ok("POST", "/v1/agents", op, map[string]any{"task": "task:" + task, "name": "deployer", "ttl": "30m"}), "agent")
	sub := s.id(s.ok("POST", "/v1/agents", op, map[string]any{"task": "task:" + task, "parent": "agent:" + agent, "name": "tester", "ttl": "20m"}), "agent")
	readGrant := s.id(s.ok("POST", "/v1/grants", op, map[string]any{"holder": "agent:" + agent, "permission": "read", "resource": "repo:acme/api", "ttl": "10m"}), "grant")
	s.ok("POST", "/v1/grants", op, map[string]any{"holder": "agent:" + sub, "permission": "read", "resource": "repo:acme/api", "ttl": "10m"})
	s.ok("POST", "/v1/grants", op, map[string]any{"holder": "agent:" + agent, "permission": "write", "resource": "repo:acme/api", "ttl": "10m",
		"condition": map[string]any{"source_network": map[string]any{"cidrs": []string{"10.0.0.0/8"}}}})
	s.ok("POST", "/v1/grants", op, map[string]any{"holder": "task:" + task, "permission": "deploy", "resource": "environment:prod", "ttl": "10m"})
	if code, out := s.call("POST", "/v1/grants", op, map[string]any{"holder": "agent:" + agent, "permission": "deploy", "resource": "environment:staging", "ttl": "5m"}); code != 403 {
		t.Fatalf("escalation: %d %v", code, out)
	}

	// Access requests: refused, filed, approved by an admin, declined.
	if code, out := s.call("POST", "/v1/access-requests", op, map[string]any{"agent": "agent:" + sub, "permission": "write", "resource": "repo:acme/web", "ttl": "5m", "reason": "tests need it"}); code != 403 {
		t.Fatalf("escalating access request: %d %v", code, out)
	}
	for i, answer := range []string{":approve", ":decline"} {
		req := s.ok("POST", "/v1/access-requests", op, map[string]any{"agent": "agent:" + agent, "permission": []string{"read", "write"}[i], "resource": "repo:acme/web", "ttl": "5m", "reason": "the web repo too"})
		id := req["access_request"].(map[string]any)["id"].(string)
		s.ok("POST", "/v1/access-requests/"+id+answer, admin, map[string]any{"reason": "reviewed"})
	}

	// Checks: allowed, denied, conditioned, missing context, a user's.
	s.check("agent:"+agent, "read", "repo:acme/api", nil, "ALLOWED")
	s.check("agent:"+sub, "read", "repo:acme/api", nil, "ALLOWED")
	s.check("agent:"+sub, "deploy", "environment:prod", nil, "ALLOWED")
	s.check("agent:"+agent, "read", "repo:acme/web", nil, "ALLOWED") // approved above
	s.check("agent:"+agent, "read", "repo:acme/docs", nil, "NO_GRANT")
	s.check("agent:"+agent, "write", "repo:acme/api", map[string]any{"source_ip": "10.1.2.3"}, "ALLOWED")
	s.check("agent:"+agent, "write", "repo:acme/api", map[string]any{"source_ip": "192.0.2.1"}, "CONDITION_FAILED")
	s.check("agent:"+agent, "write", "repo:acme/api", nil, "MISSING_CONTEXT")
	s.check("agent:agt_nobody", "read", "repo:acme/api", nil, "UNKNOWN_SUBJECT")
	s.check("user:alice", "read", "repo:acme/api", nil, "ALLOWED")
	s.check("user:bob", "read", "repo:acme/api", nil, "NO_PERMISSION")
	s.ok("POST", "/v1/check:bulk", checker, map[string]any{"checks": []map[string]any{
		{"subject": "agent:" + agent, "permission": "read", "resource": "repo:acme/api"},
		{"subject": "agent:" + sub, "permission": "write", "resource": "repo:acme/api", "context": map[string]any{"source_ip": "10.9.9.9"}},
	}})
	if out := s.ok("POST", "/access/v1/evaluation", checker, map[string]any{
		"subject": map[string]any{"type": "agent", "id": agent}, "action": map[string]any{"name": "read"},
		"resource": map[string]any{"type": "repo", "id": "acme/api"},
	}); out["decision"] != true {
		t.Fatalf("AuthZEN evaluation: %v", out)
	}
	// One check over gRPC, whose caller has a port.
	conn, err := grpc.NewClient(grpcAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	gctx := metadata.AppendToOutgoingContext(context.Background(), "authorization", "Bearer "+s.keys[checker])
	if _, err := mandatev1.NewCheckServiceClient(conn).Check(gctx, &mandatev1.CheckRequest{Subject: "agent:" + agent, Permission: "read", Resource: "repo:acme/api"}); err != nil {
		t.Fatalf("gRPC check: %v", err)
	}

	// A crossed bound suspends its agent.
	bounded := s.id(s.ok("POST", "/v1/tasks", op, map[string]any{"principal": "user:alice", "ttl": "1h", "bounds": map[string]any{"checks_per_minute": 2}}), "task")
	runner := s.id(s.ok("POST", "/v1/agents", op, map[string]any{"task": "task:" + bounded, "name": "runner", "ttl": "30m"}), "agent")
	s.ok("POST", "/v1/grants", op, map[string]any{"holder": "agent:" + runner, "permission": "read", "resource": "repo:acme/api", "ttl": "10m"})
	s.check("agent:"+runner, "read", "repo:acme/api", nil, "ALLOWED")
	s.check("agent:"+runner, "read", "repo:acme/api", nil, "ALLOWED")
	s.check("agent:"+runner, "read", "repo:acme/api", nil, "BOUND_EXCEEDED")
	s.check("agent:"+runner, "read", "repo:acme/api", nil, "AGENT_SUSPENDED")

	// Kill switches.
	s.ok("POST", "/v1/principals/alice:suspend-agents", op, map[string]any{"reason": "laptop stolen"})
	s.check("agent:"+agent, "read", "repo:acme/api", nil, "PRINCIPAL_AGENTS_SUSPENDED")
	s.ok("POST", "/v1/principals/alice:resume-agents", op, map[string]any{})
	s.ok("POST", "/v1/agents:freeze-all", admin, map[string]any{"reason": "incident 42"})
	s.check("agent:"+agent, "read", "repo:acme/api", nil, "AGENTS_FROZEN")
	s.ok("POST", "/v1/agents:unfreeze-all", admin, map[string]any{})

	// Lifecycle and revocations.
	s.ok("POST", "/v1/agents/"+sub+":suspend", op, nil)
	s.check("agent:"+sub, "read", "repo:acme/api", nil, "AGENT_SUSPENDED")
	s.ok("POST", "/v1/agents/"+sub+":resume", op, nil)
	s.ok("DELETE", "/v1/grants/"+readGrant, op, nil)
	s.check("agent:"+agent, "read", "repo:acme/api", nil, "NO_GRANT")
	s.ok("DELETE", "/v1/agents/"+sub, op, nil)
	s.check("agent:"+sub, "read", "repo:acme/api", nil, "AGENT_REVOKED")
	s.ok("POST", "/v1/tasks/"+task+":complete", op, nil)
	s.check("agent:"+agent, "write", "repo:acme/api", map[string]any{"source_ip": "10.1.2.3"}, "TASK_COMPLETED")
}

// TestOCSFSessionValidates runs a session that makes every kind of record
// through a real mandate with --audit-ocsf, and validates every exported
// event against the OCSF 1.8.0 schema: there must be no error at all.
func TestOCSFSessionValidates(t *testing.T) {
	schema := loadOCSFSchema(t, ocsfSchemaDir)
	s, grpcAddr, path, stop := startSession(t)
	runSession(t, s, grpcAddr)
	stop()

	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var events []map[string]any
	errors := 0
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		var ev map[string]any
		if err := json.Unmarshal(sc.Bytes(), &ev); err != nil {
			t.Fatalf("line %d: %v", len(events)+1, err)
		}
		events = append(events, ev)
		for _, e := range schema.Validate("api_activity", ev) {
			errors++
			if errors <= 50 {
				t.Errorf("event %d (%v %v): %s", len(events), at(ev, "metadata.event_code"), at(ev, "status_code"), e)
			}
		}
	}
	if errors > 0 {
		t.Fatalf("%d OCSF validation errors in %d events", errors, len(events))
	}

	// The session made every kind of record, and each landed where it should.
	seen := map[string]int{}
	for _, ev := range events {
		code := fmt.Sprint(at(ev, "metadata.event_code"))
		if code == "check" {
			code += ":" + fmt.Sprint(at(ev, "status_code"))
		}
		seen[code]++
		self := code == "agent.auto_suspend"
		switch {
		case self && at(ev, "src_endpoint.svc_name") != "mandate":
			t.Errorf("%s: src_endpoint %v, want mandate itself", code, ev["src_endpoint"])
		case !self && at(ev, "src_endpoint.ip") != "127.0.0.1":
			t.Errorf("%s: src_endpoint %v, want the caller 127.0.0.1", code, ev["src_endpoint"])
		}
		if strings.HasPrefix(code, "check:") && strings.HasPrefix(fmt.Sprint(at(ev, "unmapped.subject")), "agent:") && code != "check:UNKNOWN_SUBJECT" {
			if at(ev, "actor.user.type_id") != 1.0 || at(ev, "actor.session.uid") == nil {
				t.Errorf("%s: actor %v, want the human as user and the agent as session", code, ev["actor"])
			}
		}
		if !strings.HasPrefix(code, "check:") && code != "agent.auto_suspend" && at(ev, "actor.app_name") != "test-"+map[bool]string{true: "admin", false: "operator"}[code == "agents.freeze_all" || code == "agents.unfreeze_all" || code == "relationships.write" ||
			code == "access_request.approve" || code == "access_request.decline" || code == "grant.create" && at(ev, "unmapped.details.access_request") != nil] {
			t.Errorf("%s: actor %v, want the calling key", code, ev["actor"])
		}
	}
	want := []string{
		"relationships.write", "task.create", "agent.create", "grant.create", "grant.refused", "grant.delete",
		"agent.suspend", "agent.resume", "agent.revoke", "task.complete", "agent.auto_suspend",
		"principal.suspend_agents", "principal.resume_agents", "agents.freeze_all", "agents.unfreeze_all",
		"access_request.file", "access_request.refused", "access_request.approve", "access_request.decline",
		"check:ALLOWED", "check:NO_GRANT", "check:CONDITION_FAILED", "check:MISSING_CONTEXT", "check:UNKNOWN_SUBJECT",
		"check:NO_PERMISSION", "check:BOUND_EXCEEDED", "check:AGENT_SUSPENDED", "check:PRINCIPAL_AGENTS_SUSPENDED",
		"check:AGENTS_FROZEN", "check:AGENT_REVOKED", "check:TASK_COMPLETED",
	}
	var missing []string
	for _, w := range want {
		if seen[w] == 0 {
			missing = append(missing, w)
		}
	}
	if len(missing) > 0 {
		t.Fatalf("the session made no %v; it made %v", missing, seen)
	}
	alerts := 0
	ports := 0
	for _, ev := range events {
		if ev["is_alert"] == true {
			alerts++
		}
		if at(ev, "src_endpoint.port") != nil {
			ports++
		}
	}
	if alerts != 2 || ports == 0 {
		t.Fatalf("%d alerts (want the auto-suspension and the freeze), %d records with a caller port (want the gRPC check)", alerts, ports)
	}
	var kinds []string
	for k := range seen {
		kinds = append(kinds, k)
	}
	sort.Strings(kinds)
	t.Logf("%d events, 0 errors against OCSF %s: %v", len(events), schema.version, kinds)
}
