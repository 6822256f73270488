package service_test

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mandate-dev/mandate/engine/alert"
	"github.com/mandate-dev/mandate/engine/bounds"
	"github.com/mandate-dev/mandate/engine/embedded"
	"github.com/mandate-dev/mandate/engine/tcpproxy"
	"github.com/mandate-dev/mandate/internal/testenv"
	"github.com/mandate-dev/mandate/server"
	"github.com/mandate-dev/mandate/service"
)

func (a *api) check(agent, perm, res string, ctx map[string]any) map[string]any {
	a.t.Helper()
	return a.Check(agent, perm, res, ctx)
}

func (a *api) expectReason(out map[string]any, reason string) {
	a.t.Helper()
	if out["reason_code"] != reason || out["allowed"] != (reason == "ALLOWED") {
		a.t.Fatalf("got %v, want %s", out, reason)
	}
}

// TestConditionsOverREST: a conditioned grant through POST /v1/grants, checks
// with context, and the cache never answering one context with another's
// decision.
func TestConditionsOverREST(t *testing.T) {
	a := startServer(t, server.Config{})
	_, agent, _ := a.scene()
	a.ok("POST", "/v1/relationships:write", service.RoleAdmin, map[string]any{"updates": []map[string]string{
		{"operation": "TOUCH", "relationship": "environment:prod#deployer@user:alice"},
		{"operation": "TOUCH", "relationship": "repo:acme/api#writer@user:alice"},
	}})
	g := a.ok("POST", "/v1/grants", service.RoleOperator, map[string]any{
		"holder": "agent:" + agent, "permission": "deploy", "resource": "environment:prod", "ttl": "15m",
		"condition": map[string]any{"source_network": map[string]any{"cidrs": []string{"10.0.0.0/8"}}},
	})
	if cidrs := field(g, "grant", "condition", "source_network", "cidrs"); cidrs == nil || cidrs.([]any)[0] != "10.0.0.0/8" {
		t.Fatalf("grant does not show its condition: %v", g)
	}
	id := field(g, "grant", "id").(string)
	if c := field(a.ok("GET", "/v1/grants/"+id, service.RoleReviewer, nil), "grant", "condition", "source_network"); c == nil {
		t.Fatal("GET /v1/grants does not show the condition")
	}
	inside := map[string]any{"source_ip": "10.9.8.7"}
	outside := map[string]any{"source_ip": "172.16.0.1"}
	ag := "agent:" + agent
	// Alternate the contexts, so every answer after the first two could come
	// from the cache: each must still be the one for its own context.
	for i := 0; i < 3; i++ {
		a.expectReason(a.check(ag, "deploy", "environment:prod", inside), "ALLOWED")
		out := a.check(ag, "deploy", "environment:prod", outside)
		a.expectReason(out, "CONDITION_FAILED")
		if out["condition"] != "source_network" {
			t.Fatalf("condition not named: %v", out)
		}
		out = a.check(ag, "deploy", "environment:prod", nil)
		a.expectReason(out, "MISSING_CONTEXT")
		if mc, _ := out["missing_context"].([]any); len(mc) != 1 || mc[0] != "source_ip" {
			t.Fatalf("missing context not named: %v", out)
		}
		// Extra context the condition does not read still keys the cache apart, and still decides correctly.
		a.expectReason(a.check(ag, "deploy", "environment:prod", map[string]any{"source_ip": "10.9.8.7", "ticket": "INC-1"}), "ALLOWED")
		a.expectReason(a.check(ag, "deploy", "environment:prod", map[string]any{"source_ip": "172.16.0.1", "ticket": "INC-1"}), "CONDITION_FAILED")
	}

	// The audit keeps what the condition saw.
	var failed map[string]any
	for _, r := range records(a.ok("GET", "/v1/audit?agent=agent:"+agent+"&decision=deny&page_size=1000", service.RoleReviewer, nil)) {
		if r["reason_code"] == "CONDITION_FAILED" {
			failed = r
			break
		}
	}
	if field(failed, "details", "condition") != "source_network" || field(failed, "details", "context", "source_ip") != "172.16.0.1" {
		t.Fatalf("audit record of a failed condition: %v", failed)
	}

	// The access review lists the conditioned grant with its condition.
	acc := a.ok("GET", "/v1/agents/"+agent+"/access?resource_type=environment", service.RoleReviewer, nil)
	entries := asList(acc["access"])
	if len(entries) != 1 || field(entries[0].(map[string]any), "resource") != "environment:prod" ||
		len(asList(entries[0].(map[string]any)["conditions"])) != 1 || asList(entries[0].(map[string]any)["conditions"])[0] != "context.source_ip is in 10.0.0.0/8" {
		t.Fatalf("access listing of a conditioned grant: %v", acc)
	}

	// Malformed conditions and context are 400s naming the field.
	for _, c := range []struct {
		path  string
		body  map[string]any
		field string
	}{
		{"/v1/grants", map[string]any{"holder": ag, "permission": "write", "resource": "repo:acme/api", "ttl": "5m",
			"condition": map[string]any{"hours": map[string]any{"time_zone": "Nowhere/Else", "start": "09:00", "end": "17:00"}}}, "condition.hours.time_zone"},
		{"/v1/grants", map[string]any{"holder": ag, "permission": "write", "resource": "repo:acme/api", "ttl": "5m",
			"condition": map[string]any{"max_risk": map[string]any{"max": "high"}}}, ""},
		{"/v1/grants", map[string]any{"holder": ag, "permission": "write", "resource": "repo:acme/api", "ttl": "5m",
			"condition": map[string]any{}}, "condition"},
		{"/v1/grants", map[string]any{"holder": ag, "permission": "read", "resource": "repo:acme/api", "ttl": "5m",
			"condition": map[string]any{"environment": map[string]any{"label": "ci"}}}, "condition"},
		{"/v1/check", map[string]any{"subject": ag, "permission": "deploy", "resource": "environment:prod", "context": map[string]any{"source_ip": "not-an-ip"}}, "context.source_ip"},
		{"/v1/check", map[string]any{"subject": ag, "permission": "deploy", "resource": "environment:prod", "context": map[string]any{"risk_score": "low"}}, "context.risk_score"},
	} {
		code, out := a.do("POST", c.path, service.RoleAdmin, c.body)
		if code != 400 {
			t.Errorf("%v: %d %v, want 400", c.body, code, out)
			continue
		}
		if c.field != "" && !hasFieldViolation(out, c.field) {
			t.Errorf("%v: 400 does not name %s: %v", c.body, c.field, out)
		}
	}
}

func hasFieldViolation(out map[string]any, f string) bool {
	details, _ := out["details"].([]any)
	for _, d := range details {
		for _, v := range asList(d.(map[string]any)["field_violations"]) {
			if v.(map[string]any)["field"] == f {
				return true
			}
		}
		if md, ok := d.(map[string]any)["metadata"].(map[string]any); ok && md["field"] == f {
			return true
		}
	}
	return false
}

func asList(v any) []any { l, _ := v.([]any); return l }

// webhook is a local alert receiver that fails its first `fail` deliveries.
type webhook struct {
	mu       sync.Mutex
	secret   string // when set, every delivery must be signed with it
	fail     int
	attempts int
	got      []alert.Event
	keys     []string
	srv      *httptest.Server
}

func newWebhook(t *testing.T, fail int, secret string) *webhook {
	w := &webhook{fail: fail, secret: secret}
	w.srv = httptest.NewServer(http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		w.mu.Lock()
		defer w.mu.Unlock()
		w.attempts++
		w.keys = append(w.keys, r.Header.Get("Idempotency-Key"))
		if w.attempts <= w.fail {
			http.Error(rw, "not yet", http.StatusServiceUnavailable)
			return
		}
		var ev alert.Event
		raw, _ := io.ReadAll(r.Body)
		if got, want := r.Header.Get("X-Mandate-Signature"), alert.Sign(w.secret, raw); w.secret != "" && got != want {
			t.Errorf("alert signature %q, want %q", got, want)
		}
		if err := json.Unmarshal(raw, &ev); err != nil {
			t.Errorf("alert is not JSON: %s", raw)
		}
		w.got = append(w.got, ev)
	}))
	t.Cleanup(w.srv.Close)
	return w
}

func (w *webhook) wait(t *testing.T, n int) []alert.Event {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		w.mu.Lock()
		if len(w.got) >= n {
			got := append([]alert.Event(nil), w.got...)
			w.mu.Unlock()
			return got
		}
		w.mu.Unlock()
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("webhook got %d alerts after %d attempts, want %d", len(w.got), w.attempts, n)
	return nil
}

// TestBoundsSuspend: each bound trips at exactly its threshold, the agent
// and its sub-agents are suspended, the audit has the numbers, the webhook
// gets the alert after retries, and only operators and admins can resume.
func TestBoundsSuspend(t *testing.T) {
	hook := newWebhook(t, 2, "test-webhook-secret")
	a := startServer(t, server.Config{Bounds: server.BoundsConfig{
		Webhook: hook.srv.URL, WebhookSecret: "test-webhook-secret", WebhookBackoff: 20 * time.Millisecond,
		// A server-wide default that the task overrides below.
		Defaults: bounds.Limits{ChecksPerMinute: 1000},
	}})
	a.ok("POST", "/v1/relationships:write", service.RoleAdmin, map[string]any{"updates": []map[string]string{
		{"operation": "TOUCH", "relationship": "repo:acme/api#reader@user:alice"},
		{"operation": "TOUCH", "relationship": "repo:acme/web#reader@user:alice"},
		{"operation": "TOUCH", "relationship": "repo:acme/cli#reader@user:alice"},
	}})
	newTask := func(b map[string]any) string {
		return field(a.ok("POST", "/v1/tasks", service.RoleOperator, map[string]any{"principal": "user:alice", "ttl": "1h", "bounds": b}), "task", "id").(string)
	}

	cases := []struct {
		name   string
		bounds map[string]any
		// steps run in order; the last one crosses the bound.
		steps func(agent string) []func() map[string]any
		bound string
		limit float64
	}{
		{
			name: "checks per minute", bounds: map[string]any{"checks_per_minute": 3},
			steps: func(ag string) []func() map[string]any {
				c := func() map[string]any { return a.check(ag, "read", "repo:acme/api", nil) }
				return []func() map[string]any{c, c, c, c}
			},
			bound: bounds.ChecksPerMinute, limit: 3,
		},
		{
			name: "denied checks", bounds: map[string]any{"max_denials": 2, "denial_window": "1m"},
			steps: func(ag string) []func() map[string]any {
				ok := func() map[string]any { return a.check(ag, "read", "repo:acme/api", nil) }
				denied := func() map[string]any { return a.check(ag, "write", "repo:acme/api", nil) }
				return []func() map[string]any{denied, ok, ok, denied, ok, denied}
			},
			bound: bounds.DeniedChecks, limit: 2,
		},
		{
			name: "distinct resources per hour", bounds: map[string]any{"resources_per_hour": 2},
			steps: func(ag string) []func() map[string]any {
				on := func(r string) func() map[string]any {
					return func() map[string]any { return a.check(ag, "read", r, nil) }
				}
				return []func() map[string]any{on("repo:acme/api"), on("repo:acme/web"), on("repo:acme/api"), on("repo:acme/web"), on("repo:acme/cli")}
			},
			bound: bounds.ResourcesPerHour, limit: 2,
		},
	}
	for i, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			a.t = t
			task := newTask(c.bounds)
			agent := a.agentOf(task, "", "50m")
			sub := a.agentOf(task, agent, "40m")
			if got := field(a.ok("GET", "/v1/agents/"+sub, service.RoleReviewer, nil), "agent", "bounds"); got == nil {
				t.Fatalf("the sub-agent did not inherit the task's bounds")
			}
			for _, res := range []string{"repo:acme/api", "repo:acme/web", "repo:acme/cli"} {
				a.grantTo("task:"+task, "read", res, "30m")
			}
			ag := "agent:" + agent
			steps := c.steps(ag)
			for j, step := range steps[:len(steps)-1] {
				if out := step(); out["reason_code"] == "BOUND_EXCEEDED" {
					t.Fatalf("step %d crossed early: %v", j, out)
				}
			}
			out := steps[len(steps)-1]()
			a.expectReason(out, "BOUND_EXCEEDED")
			if out["bound"] != c.bound {
				t.Fatalf("crossing names bound %v, want %s", out["bound"], c.bound)
			}
			// Suspended with the :suspend mechanism; the sub-agent is denied too.
			a.expectReason(a.check(ag, "read", "repo:acme/api", nil), "AGENT_SUSPENDED")
			a.expectReason(a.check("agent:"+sub, "read", "repo:acme/api", nil), "AGENT_SUSPENDED")
			if st := field(a.ok("GET", "/v1/agents/"+agent, service.RoleReviewer, nil), "agent", "status"); st != "suspended" {
				t.Fatalf("agent status %v", st)
			}

			recs := a.records("agent.auto_suspend")
			if len(recs) != i+1 {
				t.Fatalf("%d auto_suspend records, want %d", len(recs), i+1)
			}
			d := recs[0]["details"].(map[string]any)
			if recs[0]["target"] != ag || d["bound"] != c.bound || d["limit"] != c.limit || d["observed"] != c.limit+1 ||
				asList(d["decision_ids"])[0] != out["decision_id"] || len(asList(d["suspended"])) != 2 {
				t.Fatalf("audit record: %v", recs[0])
			}
			alerts := hook.wait(t, i+1)
			ev := alerts[i]
			if ev.Agent != ag || ev.Bound != c.bound || ev.Observed != int(c.limit)+1 || ev.DecisionID != out["decision_id"] || len(ev.Suspended) != 2 {
				t.Fatalf("alert: %+v", ev)
			}

			// Only operators and admins resume.
			for _, r := range []service.Role{service.RoleChecker, service.RoleReviewer} {
				if code, _ := a.do("POST", "/v1/agents/"+agent+":resume", r, nil); code != 403 {
					t.Fatalf("%s resumed: %d", r, code)
				}
			}
			a.ok("POST", "/v1/agents/"+agent+":resume", service.RoleOperator, nil)
			// The counts start afresh after a resume.
			a.expectReason(a.check(ag, "read", "repo:acme/api", nil), "ALLOWED")
			a.expectReason(a.check("agent:"+sub, "read", "repo:acme/api", nil), "ALLOWED")
		})
	}
	// The metrics count crossings and deliveries (the last delivery is
	// counted just after the receiver has it, so allow a moment).
	wants := []string{`mandate_bounds_crossed_total{bound="checks_per_minute"} 1`, `mandate_bounds_crossed_total{bound="denied_checks"} 1`,
		`mandate_bounds_crossed_total{bound="resources_per_hour"} 1`, `mandate_alert_deliveries_total{result="delivered"} 3`, `mandate_alert_deliveries_total{result="retried"} 2`}
	deadline := time.Now().Add(5 * time.Second)
	for _, want := range wants {
		for {
			resp, err := http.Get(a.base + "/metrics")
			if err != nil {
				t.Fatal(err)
			}
			metrics, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if strings.Contains(string(metrics), want) {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("metrics lack %s", want)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	hook.mu.Lock()
	defer hook.mu.Unlock()
	if hook.attempts != len(cases)+2 {
		t.Errorf("webhook saw %d attempts, want %d (two failures, then one per alert)", hook.attempts, len(cases)+2)
	}
	if hook.keys[0] != hook.keys[1] || hook.keys[1] != hook.keys[2] {
		t.Errorf("retries of one alert carry different idempotency keys: %v", hook.keys[:3])
	}
}

// TestKillSwitchesOverREST: a principal-wide suspension and its resume, and
// freeze-all, with their audit records.
func TestKillSwitchesOverREST(t *testing.T) {
	a := startServer(t, server.Config{})
	task, agent, sub := a.scene()
	a.grantTo("task:"+task, "read", "repo:acme/api", "30m")
	a.ok("POST", "/v1/relationships:write", service.RoleAdmin, map[string]any{"updates": []map[string]string{
		{"operation": "TOUCH", "relationship": "repo:acme/api#reader@user:bob"},
	}})
	bobTask := field(a.ok("POST", "/v1/tasks", service.RoleOperator, map[string]string{"principal": "user:bob", "ttl": "1h"}), "task", "id").(string)
	bob := a.agentOf(bobTask, "", "30m")
	a.grantTo("task:"+bobTask, "read", "repo:acme/api", "30m")
	for _, x := range []string{agent, sub, bob} {
		a.expectReason(a.check("agent:"+x, "read", "repo:acme/api", nil), "ALLOWED")
	}

	out := a.ok("POST", "/v1/principals/alice:suspend-agents", service.RoleOperator, map[string]string{"reason": "laptop stolen"})
	if out["principal"] != "user:alice" || out["already_suspended"] != false {
		t.Fatalf("suspend-agents: %v", out)
	}
	a.expectReason(a.check("agent:"+agent, "read", "repo:acme/api", nil), "PRINCIPAL_AGENTS_SUSPENDED")
	a.expectReason(a.check("agent:"+sub, "read", "repo:acme/api", nil), "PRINCIPAL_AGENTS_SUSPENDED")
	a.expectReason(a.check("agent:"+bob, "read", "repo:acme/api", nil), "ALLOWED")
	a.expectReason(a.check("user:alice", "read", "repo:acme/api", nil), "ALLOWED")
	if recs := a.records("principal.suspend_agents"); len(recs) != 1 || field(recs[0], "details", "why") != "laptop stolen" {
		t.Fatalf("audit: %v", recs)
	}
	out = a.ok("POST", "/v1/principals/alice:resume", service.RoleOperator, map[string]string{})
	if out["was_suspended"] != true {
		t.Fatalf("resume: %v", out)
	}
	a.expectReason(a.check("agent:"+agent, "read", "repo:acme/api", nil), "ALLOWED")
	a.expectReason(a.check("agent:"+sub, "read", "repo:acme/api", nil), "ALLOWED")
	if code, out := a.do("POST", "/v1/principals/a%20b:suspend-agents", service.RoleOperator, map[string]string{}); code != 400 {
		t.Fatalf("bad principal id: %d %v", code, out)
	}

	if code, _ := a.do("POST", "/v1/agents:freeze-all", service.RoleOperator, map[string]string{}); code != 403 {
		t.Fatalf("an operator froze every agent: %d", code)
	}
	out = a.ok("POST", "/v1/agents:freeze-all", service.RoleAdmin, map[string]string{"reason": "incident 42"})
	if out["already_frozen"] != false {
		t.Fatalf("freeze: %v", out)
	}
	for _, x := range []string{agent, sub, bob} {
		a.expectReason(a.check("agent:"+x, "read", "repo:acme/api", nil), "AGENTS_FROZEN")
	}
	a.expectReason(a.check("user:bob", "read", "repo:acme/api", nil), "ALLOWED")
	if recs := a.records("agents.freeze_all"); len(recs) != 1 || recs[0]["caller"] != "test-admin" || field(recs[0], "details", "why") != "incident 42" {
		t.Fatalf("audit: %v", recs)
	}
	a.ok("POST", "/v1/agents:unfreeze-all", service.RoleAdmin, map[string]string{})
	a.expectReason(a.check("agent:"+bob, "read", "repo:acme/api", nil), "ALLOWED")
}

// TestBoundsSurviveRestart: on a Postgres datastore the counts are durable,
// so a restarted server keeps counting where the last one stopped.
func TestBoundsSurviveRestart(t *testing.T) {
	dsn := testenv.Postgres(t, false)
	uri, drop, err := embedded.CreateDatabase(context.Background(), dsn, "mandate_bounds_restart")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(drop)
	cfg := server.Config{Embedded: embedded.Config{Engine: "postgres", URI: uri, Migrate: true},
		Audit: server.AuditConfig{Mode: "off"}, Bounds: server.BoundsConfig{Defaults: bounds.Limits{ChecksPerMinute: 4}}}
	first, stop := startStoppable(t, cfg)
	_, agent, _ := first.scene()
	first.grantTo("agent:"+agent, "read", "repo:acme/api", "30m")
	for i := 0; i < 3; i++ {
		first.expectReason(first.check("agent:"+agent, "read", "repo:acme/api", nil), "ALLOWED")
	}
	stop()

	second, _ := startStoppable(t, cfg)
	second.expectReason(second.check("agent:"+agent, "read", "repo:acme/api", nil), "ALLOWED")
	out := second.check("agent:"+agent, "read", "repo:acme/api", nil)
	second.expectReason(out, "BOUND_EXCEEDED")
}

// TestBoundsFailClosed: when the counts cannot be recorded, an agent check
// is an error, never an allow; it recovers when the database returns.
func TestBoundsFailClosed(t *testing.T) {
	dsn := testenv.Postgres(t, false)
	uri, drop, err := embedded.CreateDatabase(context.Background(), dsn, "mandate_bounds_outage")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(drop)
	u, err := url.Parse(uri)
	if err != nil {
		t.Fatal(err)
	}
	px, err := tcpproxy.New(u.Host)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(px.Down)
	u.Host = px.Addr
	a := startServer(t, server.Config{Bounds: server.BoundsConfig{DSN: u.String(), Defaults: bounds.Limits{ChecksPerMinute: 100}}})
	_, agent, _ := a.scene()
	a.grantTo("agent:"+agent, "read", "repo:acme/api", "30m")
	a.expectReason(a.check("agent:"+agent, "read", "repo:acme/api", nil), "ALLOWED")

	px.Down()
	code, out := a.do("POST", "/v1/check", service.RoleChecker, map[string]any{"subject": "agent:" + agent, "permission": "read", "resource": "repo:acme/api"})
	if code != 503 || out["allowed"] == true {
		t.Fatalf("with the bounds database down: %d %v, want 503", code, out)
	}
	// Humans are not bounded; their checks go on.
	a.expectReason(a.check("user:alice", "read", "repo:acme/api", nil), "ALLOWED")
	if err := px.Up(); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		code, out = a.do("POST", "/v1/check", service.RoleChecker, map[string]any{"subject": "agent:" + agent, "permission": "read", "resource": "repo:acme/api"})
		if code == 200 {
			a.expectReason(out, "ALLOWED")
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("never recovered: %d %v", code, out)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestBoundCrossedOnceUnderConcurrency: many checks of one agent at once
// over its bound are all denied beyond the budget, and exactly one of them
// suspends the agent and alerts.
func TestBoundCrossedOnceUnderConcurrency(t *testing.T) {
	hook := newWebhook(t, 0, "")
	a := startServer(t, server.Config{Bounds: server.BoundsConfig{Webhook: hook.srv.URL, Defaults: bounds.Limits{ChecksPerMinute: 3}}})
	_, agent, _ := a.scene()
	a.grantTo("agent:"+agent, "read", "repo:acme/api", "30m")
	const n = 12
	var wg sync.WaitGroup
	results := make(chan map[string]any, n)
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, out := a.do("POST", "/v1/check", service.RoleChecker, map[string]any{"subject": "agent:" + agent, "permission": "read", "resource": "repo:acme/api"})
			results <- out
		}()
	}
	wg.Wait()
	close(results)
	allowed := 0
	for out := range results {
		switch out["reason_code"] {
		case "ALLOWED":
			allowed++
		case "BOUND_EXCEEDED", "AGENT_SUSPENDED":
		default:
			t.Errorf("unexpected answer %v", out)
		}
	}
	if allowed != 3 {
		t.Fatalf("%d checks allowed, want the budget of 3", allowed)
	}
	hook.wait(t, 1)
	if recs := a.records("agent.auto_suspend"); len(recs) != 1 {
		t.Fatalf("%d automatic suspensions, want 1", len(recs))
	}
	time.Sleep(200 * time.Millisecond)
	hook.mu.Lock()
	defer hook.mu.Unlock()
	if len(hook.got) != 1 {
		t.Fatalf("%d alerts, want 1", len(hook.got))
	}
}

// TestBoundsCountOnlyTrustedCallers: checks by a key not marked
// counts_for_bounds cannot push an agent into suspension, however many; the
// same checks from a trusted key do. A sub-agent cannot loosen its parent's
// bounds.
func TestBoundsCountOnlyTrustedCallers(t *testing.T) {
	a := startServer(t, server.Config{})
	a.ok("POST", "/v1/relationships:write", service.RoleAdmin, map[string]any{"updates": []map[string]string{
		{"operation": "TOUCH", "relationship": "repo:acme/api#reader@user:alice"},
	}})
	task := field(a.ok("POST", "/v1/tasks", service.RoleOperator, map[string]any{"principal": "user:alice", "ttl": "1h", "bounds": map[string]any{"max_denials": 3}}), "task", "id").(string)
	agent := a.agentOf(task, "", "50m")
	a.grantTo("agent:"+agent, "read", "repo:acme/api", "15m")
	denied := map[string]string{"subject": "agent:" + agent, "permission": "write", "resource": "repo:acme/api"}
	for i := 0; i < 10; i++ {
		code, _, body := a.Call("POST", "/v1/check", "Bearer "+testenv.UntrustedCheckerKey, denied)
		if code != 200 || strings.Contains(string(body), "BOUND_EXCEEDED") {
			t.Fatalf("untrusted check %d: %d %s", i, code, body)
		}
	}
	a.expectReason(a.check("agent:"+agent, "read", "repo:acme/api", nil), "ALLOWED")
	for i := 0; i < 3; i++ {
		a.expectReason(a.check("agent:"+agent, "write", "repo:acme/api", nil), "NO_GRANT")
	}
	a.expectReason(a.check("agent:"+agent, "write", "repo:acme/api", nil), "BOUND_EXCEEDED")

	// Clamped: a sub-agent asking for looser bounds than its parent gets the parent's.
	parent := field(a.ok("POST", "/v1/agents", service.RoleOperator, map[string]any{"task": "task:" + task, "name": "p", "ttl": "40m", "bounds": map[string]any{"checks_per_minute": 5, "max_denials": 2}}), "agent", "id").(string)
	sub := field(a.ok("POST", "/v1/agents", service.RoleOperator, map[string]any{"task": "task:" + task, "parent": "agent:" + parent, "name": "s", "ttl": "30m", "bounds": map[string]any{"checks_per_minute": 500, "max_denials": 100}}), "agent", "id").(string)
	b, _ := field(a.ok("GET", "/v1/agents/"+sub, service.RoleReviewer, nil), "agent", "bounds").(map[string]any)
	if b["checks_per_minute"] != float64(5) || b["max_denials"] != float64(2) {
		t.Fatalf("sub-agent bounds %v, want its parent's checks_per_minute 5 and max_denials 2", b)
	}
}
