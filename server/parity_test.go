package server_test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mandate-dev/mandate/engine"
	"github.com/mandate-dev/mandate/gateway/authzen"
	"github.com/mandate-dev/mandate/internal/testenv"
	"github.com/mandate-dev/mandate/server"
	"github.com/mandate-dev/mandate/service"
)

// settableClock is the engine's clock, moved forward by the test to lapse
// lifetimes without waiting.
type settableClock struct {
	mu  sync.Mutex
	off time.Duration
}

func (c *settableClock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return time.Now().Add(c.off)
}

func (c *settableClock) advance(d time.Duration) {
	c.mu.Lock()
	c.off += d
	c.mu.Unlock()
}

// TestEveryViewAgreesWithCheck puts an agent in every state it can be in and
// asks every view of mandate about it: Check, CheckBulk, AuthZEN evaluation,
// the access listing, Explain, native and AuthZEN resource search, and the
// review report. They must all tell the same story as Check: the resource is
// reachable exactly when Check allows, and every reason code is the same.
func TestEveryViewAgreesWithCheck(t *testing.T) {
	clk := &settableClock{}
	s := testenv.Start(t, server.Config{Engine: engine.Config{Now: clk.now}})
	s.OK("POST", "/v1/relationships:write", service.RoleAdmin, map[string]any{"updates": []map[string]string{
		{"operation": "TOUCH", "relationship": "repo:acme/api#writer@user:alice"},
		{"operation": "TOUCH", "relationship": "repo:acme/api#writer@user:bob"},
		{"operation": "TOUCH", "relationship": "repo:acme/api#writer@user:carol"},
		{"operation": "TOUCH", "relationship": "repo:acme/api#writer@user:dave"},
	}})
	task := func(principal string, bounds map[string]any) string {
		body := map[string]any{"principal": principal, "description": "parity", "ttl": "2h"}
		if bounds != nil {
			body["bounds"] = bounds
		}
		return s.OK("POST", "/v1/tasks", service.RoleOperator, body)["task"].(map[string]any)["id"].(string)
	}
	agent := func(task, parent, ttl string) string {
		body := map[string]any{"task": "task:" + task, "name": "parity", "ttl": ttl}
		if parent != "" {
			body["parent"] = "agent:" + parent
		}
		return s.OK("POST", "/v1/agents", service.RoleOperator, body)["agent"].(map[string]any)["id"].(string)
	}
	grant := func(holder string, condition map[string]any) string {
		body := map[string]any{"holder": holder, "permission": "write", "resource": "repo:acme/api", "ttl": "30m"}
		if condition != nil {
			body["condition"] = condition
		}
		return s.OK("POST", "/v1/grants", service.RoleOperator, body)["grant"].(map[string]any)["id"].(string)
	}
	inside, outside := map[string]any{"source_ip": "10.1.2.3"}, map[string]any{"source_ip": "192.0.2.1"}

	type state struct {
		name string
		// setup returns the agent to ask about; context is the check's.
		setup   func() string
		context map[string]any
		want    engine.Reason
		// listed: whether the access listing shows the resource. It agrees
		// with Check except for a conditioned grant, which it lists with its
		// condition because whether a check allows depends on the context.
		listed bool
	}
	states := []state{
		{name: "active", want: engine.ReasonAllowed, listed: true, setup: func() string {
			a := agent(task("user:alice", nil), "", "1h")
			grant("agent:"+a, nil)
			return a
		}},
		{name: "revoked", want: engine.ReasonAgentRevoked, setup: func() string {
			a := agent(task("user:alice", nil), "", "1h")
			grant("agent:"+a, nil)
			s.OK("DELETE", "/v1/agents/"+a, service.RoleOperator, nil)
			return a
		}},
		{name: "suspended", want: engine.ReasonAgentSuspended, setup: func() string {
			a := agent(task("user:alice", nil), "", "1h")
			grant("agent:"+a, nil)
			s.OK("POST", "/v1/agents/"+a+":suspend", service.RoleOperator, map[string]any{})
			return a
		}},
		{name: "parent suspended", want: engine.ReasonAgentSuspended, setup: func() string {
			tk := task("user:alice", nil)
			p := agent(tk, "", "1h")
			grant("agent:"+p, nil)
			c := agent(tk, p, "1h")
			grant("agent:"+c, nil)
			s.OK("POST", "/v1/agents/"+p+":suspend", service.RoleOperator, map[string]any{})
			return c
		}},
		{name: "task completed", want: engine.ReasonTaskCompleted, setup: func() string {
			tk := task("user:alice", nil)
			a := agent(tk, "", "1h")
			grant("agent:"+a, nil)
			s.OK("POST", "/v1/tasks/"+tk+":complete", service.RoleOperator, map[string]any{})
			return a
		}},
		{name: "grant removed", want: engine.ReasonNoGrant, setup: func() string {
			a := agent(task("user:alice", nil), "", "1h")
			g := grant("agent:"+a, nil)
			s.OK("DELETE", "/v1/grants/"+g, service.RoleOperator, nil)
			return a
		}},
		{name: "parent's grant removed", want: engine.ReasonDelegatorLacksPermission, setup: func() string {
			tk := task("user:alice", nil)
			p := agent(tk, "", "1h")
			g := grant("agent:"+p, nil)
			c := agent(tk, p, "1h")
			grant("agent:"+c, nil)
			s.OK("DELETE", "/v1/grants/"+g, service.RoleOperator, nil)
			return c
		}},
		{name: "expired", want: engine.ReasonAgentExpired, setup: func() string {
			a := agent(task("user:alice", nil), "", "1m")
			grant("agent:"+a, nil)
			clk.advance(2 * time.Minute)
			return a
		}},
		{name: "principal lost the permission", want: engine.ReasonPrincipalLacksPermission, setup: func() string {
			a := agent(task("user:bob", nil), "", "1h")
			grant("agent:"+a, nil)
			s.OK("POST", "/v1/relationships:write", service.RoleAdmin, map[string]any{"updates": []map[string]string{
				{"operation": "DELETE", "relationship": "repo:acme/api#writer@user:bob"}}})
			return a
		}},
		{name: "principal's agents suspended", want: engine.ReasonPrincipalSuspended, setup: func() string {
			a := agent(task("user:carol", nil), "", "1h")
			grant("agent:"+a, nil)
			s.OK("POST", "/v1/principals/carol:suspend-agents", service.RoleOperator, map[string]any{})
			return a
		}},
		{name: "condition holds", context: inside, want: engine.ReasonAllowed, listed: true, setup: func() string {
			a := agent(task("user:alice", nil), "", "1h")
			grant("agent:"+a, map[string]any{"source_network": map[string]any{"cidrs": []string{"10.0.0.0/8"}}})
			return a
		}},
		{name: "condition failing", context: outside, want: engine.ReasonConditionFailed, listed: true, setup: func() string {
			a := agent(task("user:alice", nil), "", "1h")
			grant("agent:"+a, map[string]any{"source_network": map[string]any{"cidrs": []string{"10.0.0.0/8"}}})
			return a
		}},
		{name: "bound crossed", want: engine.ReasonAgentSuspended, setup: func() string {
			a := agent(task("user:alice", map[string]any{"checks_per_minute": 1}), "", "1h")
			grant("agent:"+a, nil)
			s.Check("agent:"+a, "write", "repo:acme/api", nil)
			if out := s.Check("agent:"+a, "write", "repo:acme/api", nil); out["reason_code"] != string(engine.ReasonBoundExceeded) {
				t.Fatalf("the second check in a minute: %v, want BOUND_EXCEEDED", out)
			}
			return a // suspended by the crossing
		}},
	}
	// The freeze acts on every agent, so it is judged last, on the active one.
	for _, st := range states {
		t.Run(st.name, func(t *testing.T) {
			a := st.setup()
			assertViewsAgree(t, s, a, st.context, st.want, st.listed)
		})
	}
	t.Run("frozen", func(t *testing.T) {
		a := agent(task("user:dave", nil), "", "1h")
		grant("agent:"+a, nil)
		assertViewsAgree(t, s, a, nil, engine.ReasonAllowed, true)
		s.OK("POST", "/v1/agents:freeze-all", service.RoleAdmin, map[string]any{})
		assertViewsAgree(t, s, a, nil, engine.ReasonAgentsFrozen, false)
		s.OK("POST", "/v1/agents:unfreeze-all", service.RoleAdmin, map[string]any{})
		assertViewsAgree(t, s, a, nil, engine.ReasonAllowed, true)
	})
}

// assertViewsAgree asks every view about agent a writing repo:acme/api.
func assertViewsAgree(t *testing.T, s *testenv.Server, a string, qctx map[string]any, want engine.Reason, listed bool) {
	t.Helper()
	subject := "agent:" + a
	allowed := want == engine.ReasonAllowed
	q := map[string]any{"subject": subject, "permission": "write", "resource": "repo:acme/api"}
	if qctx != nil {
		q["context"] = qctx
	}
	// Explain first: it neither counts nor caches.
	x := s.OK("POST", "/v1/explain", service.RoleReviewer, q)
	if x["reason_code"] != string(want) || (x["allowed"] == true) != allowed {
		t.Errorf("explain: %v %v, want %s", x["allowed"], x["reason_code"], want)
	}
	failed := ""
	for _, l := range x["legs"].([]any) {
		leg := l.(map[string]any)
		if leg["passed"] != true && failed == "" {
			failed = leg["name"].(string)
		}
	}
	if wantLeg := want.Leg(); failed != wantLeg && !(want == engine.ReasonAllowed && failed == "") {
		t.Errorf("explain: the first failed leg is %q, Check's reason %s belongs to %q", failed, want, wantLeg)
	}
	check := s.Check(subject, "write", "repo:acme/api", qctx)
	if check["reason_code"] != string(want) || (check["allowed"] == true) != allowed {
		t.Errorf("check: %v %v, want %s", check["allowed"], check["reason_code"], want)
	}
	bulk := s.OK("POST", "/v1/check:bulk", service.RoleChecker, map[string]any{"checks": []any{q}})
	r0 := bulk["results"].([]any)[0].(map[string]any)
	if r0["reason_code"] != string(want) || (r0["allowed"] == true) != allowed {
		t.Errorf("check:bulk: %v %v, want %s", r0["allowed"], r0["reason_code"], want)
	}
	// AuthZEN: the same question, with the reason code asked for.
	ev := map[string]any{"subject": map[string]any{"type": "agent", "id": a}, "action": map[string]any{"name": "write"},
		"resource": map[string]any{"type": "repo", "id": "acme/api"}}
	if qctx != nil {
		ev["context"] = qctx
	}
	az := authzenCall(t, s, authzen.PathEvaluation, testenv.Keys[service.RoleChecker], ev)
	if az["decision"] != allowed || az["context"].(map[string]any)["reason_code"] != string(want) {
		t.Errorf("authzen evaluation: %v, want %s", az, want)
	}
	// The listing and the review report: reachable exactly when Check allows
	// (a conditioned grant is listed with its condition).
	access := s.OK("GET", "/v1/agents/"+a+"/access", service.RoleReviewer, nil)
	inListing := false
	for _, e := range asList(access["access"]) {
		if e.(map[string]any)["resource"] == "repo:acme/api" {
			inListing = true
		}
	}
	if inListing != listed {
		t.Errorf("access listing shows repo:acme/api: %v, want %v (Check: %s)", inListing, listed, want)
	}
	principal := strings.TrimPrefix(fmt.Sprint(check["principal"]), "user:")
	rep := s.OK("GET", "/v1/review/report?principal=user:"+principal, service.RoleReviewer, nil)
	inReport := false
	for _, ar := range asList(rep["agents"]) {
		ag := ar.(map[string]any)
		if ag["agent"].(map[string]any)["id"] != a {
			continue
		}
		for _, e := range asList(ag["can_reach"]) {
			if e.(map[string]any)["resource"] == "repo:acme/api" {
				inReport = true
			}
		}
	}
	if inReport != listed {
		t.Errorf("review report can reach repo:acme/api: %v, want %v (Check: %s)", inReport, listed, want)
	}
	// Search, native and AuthZEN, with the check's context.
	search := map[string]any{"subject": subject, "permission": "write", "resource_type": "repo"}
	if qctx != nil {
		search["context"] = qctx
	}
	native := s.OK("POST", "/v1/search/resources", service.RoleReviewer, search)
	if got := slices.Contains(asList(native["resources"]), any("repo:acme/api")) || slices.Contains(asList(native["resources"]), any("acme/api")); got != allowed {
		t.Errorf("native resource search finds repo:acme/api: %v, want %v (%v)", got, allowed, native)
	}
	azSearch := map[string]any{"subject": map[string]any{"type": "agent", "id": a}, "action": map[string]any{"name": "write"},
		"resource": map[string]any{"type": "repo"}}
	if qctx != nil {
		azSearch["context"] = qctx
	}
	found := authzenCall(t, s, authzen.PathSearchResource, testenv.Keys[service.RoleReviewer], azSearch)
	got := false
	for _, r := range asList(found["results"]) {
		if r.(map[string]any)["id"] == "acme/api" {
			got = true
		}
	}
	if got != allowed {
		t.Errorf("AuthZEN resource search finds acme/api: %v, want %v (%v)", got, allowed, found)
	}
}

func asList(v any) []any {
	l, _ := v.([]any)
	return l
}

func authzenCall(t *testing.T, s *testenv.Server, path, key string, body any) map[string]any {
	t.Helper()
	raw, _ := json.Marshal(body)
	req, _ := http.NewRequest("POST", s.Base+path, strings.NewReader(string(raw)))
	req.Header.Set("Authorization", "Bearer "+key)
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set(authzen.ReasonHeader, "true")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var out map[string]any
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil || resp.StatusCode != 200 {
		t.Fatalf("%s: %d %v", path, resp.StatusCode, err)
	}
	return out
}

// TestListingPagesAgreeWithCheck: the later pages of an access listing drop
// what Check denies by then: a grant that expired between pages, and
// everything once the agent is revoked.
func TestListingPagesAgreeWithCheck(t *testing.T) {
	clk := &settableClock{}
	s := testenv.Start(t, server.Config{Engine: engine.Config{Now: clk.now}})
	s.OK("POST", "/v1/relationships:write", service.RoleAdmin, map[string]any{"updates": []map[string]string{
		{"operation": "TOUCH", "relationship": "repo:acme/a#reader@user:alice"},
		{"operation": "TOUCH", "relationship": "repo:acme/b#reader@user:alice"},
		{"operation": "TOUCH", "relationship": "repo:acme/c#reader@user:alice"},
	}})
	tk := s.OK("POST", "/v1/tasks", service.RoleOperator, map[string]any{"principal": "user:alice", "ttl": "2h"})["task"].(map[string]any)["id"].(string)
	a := s.OK("POST", "/v1/agents", service.RoleOperator, map[string]any{"task": "task:" + tk, "name": "worker", "ttl": "1h"})["agent"].(map[string]any)["id"].(string)
	for res, ttl := range map[string]string{"repo:acme/a": "30m", "repo:acme/b": "5m", "repo:acme/c": "30m"} {
		s.OK("POST", "/v1/grants", service.RoleOperator, map[string]any{"holder": "agent:" + a, "permission": "read", "resource": res, "ttl": ttl})
	}
	page := func(token string) ([]string, string) {
		out := s.OK("GET", "/v1/agents/"+a+"/access?page_size=1&page_token="+token, service.RoleReviewer, nil)
		var rs []string
		for _, e := range asList(out["access"]) {
			rs = append(rs, e.(map[string]any)["resource"].(string))
		}
		next, _ := out["next_page_token"].(string)
		return rs, next
	}
	first, next := page("")
	if len(first) != 1 || first[0] != "repo:acme/a" || next == "" {
		t.Fatalf("first page: %v, next %q", first, next)
	}
	// b's grant lapses between pages: Check denies it, so does the listing.
	clk.advance(10 * time.Minute)
	if out := s.Check("agent:"+a, "read", "repo:acme/b", nil); out["reason_code"] != string(engine.ReasonNoGrant) {
		t.Fatalf("check of the lapsed grant: %v", out)
	}
	second, next := page(next)
	if len(second) != 1 || second[0] != "repo:acme/c" {
		t.Fatalf("second page after b's grant lapsed: %v, want [repo:acme/c]", second)
	}
	// Revoked: the next pages of a listing already under way are empty.
	first, next = page("")
	if len(first) != 1 || next == "" {
		t.Fatalf("a fresh listing: %v, next %q", first, next)
	}
	s.OK("DELETE", "/v1/agents/"+a, service.RoleOperator, nil)
	if rest, _ := page(next); len(rest) != 0 {
		t.Fatalf("pages after the revocation: %v", rest)
	}
}

// TestConditionalPrincipalOverREST: when the human's own permission is only
// conditional, an agent check is never an allow on SpiceDB's CONDITIONAL
// answer: MISSING_CONTEXT without the context, PRINCIPAL_LACKS_PERMISSION
// with the wrong one.
func TestConditionalPrincipalOverREST(t *testing.T) {
	s := testenv.Start(t, server.Config{})
	cur := s.OK("GET", "/v1/schema", service.RoleAdmin, nil)["schema"].(string)
	s.OK("PUT", "/v1/schema", service.RoleAdmin, map[string]any{"schema": cur + `
caveat principal_environment(environment string, required_env string) {
	environment == required_env
}

definition document {
	relation viewer: user | user with principal_environment
	relation read_grant: agent with grant_lifetime | task#member with grant_lifetime

	permission read = viewer
}
`})
	write := func(op, rel string) {
		s.OK("POST", "/v1/relationships:write", service.RoleAdmin, map[string]any{"updates": []map[string]string{{"operation": op, "relationship": rel}}})
	}
	write("TOUCH", "document:plan#viewer@user:alice")
	tk := s.OK("POST", "/v1/tasks", service.RoleOperator, map[string]any{"principal": "user:alice", "ttl": "1h"})["task"].(map[string]any)["id"].(string)
	a := s.OK("POST", "/v1/agents", service.RoleOperator, map[string]any{"task": "task:" + tk, "name": "worker", "ttl": "1h"})["agent"].(map[string]any)["id"].(string)
	s.OK("POST", "/v1/grants", service.RoleOperator, map[string]any{"holder": "agent:" + a, "permission": "read", "resource": "document:plan", "ttl": "30m"})
	write("DELETE", "document:plan#viewer@user:alice")
	write("TOUCH", `document:plan#viewer@user:alice[principal_environment:{"required_env":"prod"}]`)
	for _, c := range []struct {
		ctx  map[string]any
		want engine.Reason
	}{{nil, engine.ReasonMissingContext}, {map[string]any{"environment": "dev"}, engine.ReasonPrincipalLacksPermission}, {map[string]any{"environment": "prod"}, engine.ReasonAllowed}} {
		out := s.Check("agent:"+a, "read", "document:plan", c.ctx)
		if out["reason_code"] != string(c.want) || (out["allowed"] == true) != (c.want == engine.ReasonAllowed) {
			t.Errorf("context %v: %v %v, want %s", c.ctx, out["allowed"], out["reason_code"], c.want)
		}
		if c.want == engine.ReasonMissingContext && fmt.Sprint(out["missing_context"]) != "[environment]" {
			t.Errorf("missing_context %v, want [environment]", out["missing_context"])
		}
	}
}
