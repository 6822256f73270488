package service_test

import (
	"encoding/csv"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/mandate-dev/mandate/internal/testenv"
	"github.com/mandate-dev/mandate/server"
	"github.com/mandate-dev/mandate/service"
)

type reviewScene struct {
	a                      *api
	task, top, sub, other  string
	grantReadA, grantWrite string
}

func (a *api) agentOf(task, parent, ttl string) string {
	body := map[string]string{"task": "task:" + task, "name": "x", "ttl": ttl}
	if parent != "" {
		body["parent"] = "agent:" + parent
	}
	return field(a.ok("POST", "/v1/agents", service.RoleOperator, body), "agent", "id").(string)
}

func (a *api) grantTo(holder, perm, res, ttl string) string {
	return field(a.ok("POST", "/v1/grants", service.RoleOperator, map[string]string{"holder": holder, "permission": perm, "resource": res, "ttl": ttl}), "grant", "id").(string)
}

func (a *api) access(agent, query string) []string {
	var out []string
	token := ""
	for {
		q := "/v1/agents/" + agent + "/access?page_size=2&page_token=" + url.QueryEscape(token)
		if query != "" {
			q += "&" + query
		}
		resp := a.ok("GET", q, service.RoleReviewer, nil)
		entries, _ := resp["access"].([]any)
		for _, e := range entries {
			m := e.(map[string]any)
			if m["principal_holds"] != true || m["valid_until"] == nil || len(m["grants"].([]any)) == 0 {
				a.t.Fatalf("access entry lacks its reasons: %v", m)
			}
			out = append(out, m["permission"].(string)+" "+m["resource"].(string))
		}
		token, _ = resp["next_page_token"].(string)
		if token == "" {
			return out
		}
	}
}

func newReviewScene(t *testing.T) *reviewScene {
	a := startServer(t, server.Config{})
	a.ok("POST", "/v1/relationships:write", service.RoleAdmin, map[string]any{"updates": []map[string]string{
		{"operation": "TOUCH", "relationship": "repo:acme/a#reader@user:alice"},
		{"operation": "TOUCH", "relationship": "repo:acme/a#writer@user:alice"},
		{"operation": "TOUCH", "relationship": "repo:acme/b#reader@user:alice"},
		{"operation": "TOUCH", "relationship": "repo:acme/c#reader@user:alice"},
		{"operation": "TOUCH", "relationship": "pipeline:acme/build#runner@user:alice"},
	}})
	s := &reviewScene{a: a}
	s.task = field(a.ok("POST", "/v1/tasks", service.RoleOperator, map[string]string{"principal": "user:alice", "ttl": "2h"}), "task", "id").(string)
	s.top = a.agentOf(s.task, "", "1h")
	s.sub = a.agentOf(s.task, s.top, "1h")
	s.other = a.agentOf(s.task, "", "1h")
	s.grantReadA = a.grantTo("agent:"+s.top, "read", "repo:acme/a", "15m")
	s.grantWrite = a.grantTo("agent:"+s.top, "write", "repo:acme/a", "15m")
	a.grantTo("task:"+s.task, "execute", "pipeline:acme/build", "30m")
	a.grantTo("agent:"+s.sub, "read", "repo:acme/a", "10m")
	return s
}

func sorted(xs []string) []string { sort.Strings(xs); return xs }

// TestAgentAccess builds each expected listing from the grants and checks it exactly.
func TestAgentAccess(t *testing.T) {
	s := newReviewScene(t)
	a := s.a
	expired := a.grantTo("agent:"+s.top, "read", "repo:acme/b", "1s")
	removed := a.grantTo("agent:"+s.other, "read", "repo:acme/b", "15m")
	a.grantTo("agent:"+s.other, "read", "repo:acme/c", "15m")
	_ = expired

	want := map[string][]string{
		s.top:   {"execute pipeline:acme/build", "read repo:acme/a", "read repo:acme/b", "write repo:acme/a"},
		s.sub:   {"execute pipeline:acme/build", "read repo:acme/a"},
		s.other: {"execute pipeline:acme/build", "read repo:acme/b", "read repo:acme/c"},
	}
	for agent, w := range want {
		if got := sorted(a.access(agent, "")); fmt.Sprint(got) != fmt.Sprint(w) {
			t.Fatalf("access of %s:\n got %v\nwant %v", agent, got, w)
		}
	}
	// Filters.
	if got := a.access(s.top, "resource_type=repo&permission=write"); fmt.Sprint(got) != "[write repo:acme/a]" {
		t.Fatalf("filtered access: %v", got)
	}
	// An expired grant, a removed grant and a principal who lost access all disappear.
	time.Sleep(1100 * time.Millisecond)
	a.ok("DELETE", "/v1/grants/"+removed, service.RoleOperator, nil)
	a.ok("POST", "/v1/relationships:write", service.RoleAdmin, map[string]any{"updates": []map[string]string{
		{"operation": "DELETE", "relationship": "repo:acme/c#reader@user:alice"},
	}})
	if got := sorted(a.access(s.top, "")); fmt.Sprint(got) != "[execute pipeline:acme/build read repo:acme/a write repo:acme/a]" {
		t.Fatalf("after expiry: %v", got)
	}
	if got := sorted(a.access(s.other, "")); fmt.Sprint(got) != "[execute pipeline:acme/build]" {
		t.Fatalf("after removal and loss of access: %v", got)
	}
	// A sub-agent sees no more than its parent: suspend the parent and it sees nothing.
	a.ok("POST", "/v1/agents/"+s.top+":suspend", service.RoleOperator, nil)
	if got := a.access(s.sub, ""); len(got) != 0 {
		t.Fatalf("sub-agent of a suspended parent can reach %v", got)
	}
	// A suspension in the middle of paging ends the listing.
	a.ok("POST", "/v1/agents/"+s.top+":resume", service.RoleOperator, nil)
	first := a.ok("GET", "/v1/agents/"+s.top+"/access?page_size=1", service.RoleReviewer, nil)
	if len(first["access"].([]any)) != 1 || first["next_page_token"] == "" {
		t.Fatalf("first page: %v", first)
	}
	a.ok("POST", "/v1/agents/"+s.top+":suspend", service.RoleOperator, nil)
	rest := a.ok("GET", "/v1/agents/"+s.top+"/access?page_size=1&page_token="+url.QueryEscape(first["next_page_token"].(string)), service.RoleReviewer, nil)
	if entries, _ := rest["access"].([]any); len(entries) != 0 {
		t.Fatalf("pages after a suspension still list %v", entries)
	}
	// Every listed entry is one Check allows.
	a.ok("POST", "/v1/agents/"+s.top+":resume", service.RoleOperator, nil)
	for _, e := range a.access(s.sub, "") {
		perm, res, _ := strings.Cut(e, " ")
		if out := a.ok("POST", "/v1/check", service.RoleChecker, map[string]string{"subject": "agent:" + s.sub, "permission": perm, "resource": res}); out["allowed"] != true {
			t.Fatalf("listed %s but Check says %v", e, out["reason_code"])
		}
	}
}

func TestListAgentsAndTree(t *testing.T) {
	s := newReviewScene(t)
	a := s.a
	a.ok("POST", "/v1/agents/"+s.other+":suspend", service.RoleOperator, nil)
	list := func(q string) []string {
		var ids []string
		token := ""
		for {
			out := a.ok("GET", "/v1/agents?page_size=1&"+q+"&page_token="+url.QueryEscape(token), service.RoleReviewer, nil)
			for _, x := range out["agents"].([]any) {
				ids = append(ids, x.(map[string]any)["id"].(string))
			}
			token, _ = out["next_page_token"].(string)
			if token == "" {
				return sorted(ids)
			}
		}
	}
	all := sorted([]string{s.top, s.sub, s.other})
	if got := list("principal=user:alice"); fmt.Sprint(got) != fmt.Sprint(all) {
		t.Fatalf("agents of alice: %v, want %v", got, all)
	}
	if got := list("task=task:" + s.task + "&status=suspended"); fmt.Sprint(got) != fmt.Sprint([]string{s.other}) {
		t.Fatalf("suspended agents: %v", got)
	}
	if got := list("principal=user:bob"); len(got) != 0 {
		t.Fatalf("agents of bob: %v", got)
	}
	tree := a.ok("GET", "/v1/principals/alice/agents", service.RoleReviewer, nil)
	roots := tree["agents"].([]any)
	if len(roots) != 2 || len(tree["tasks"].([]any)) != 1 {
		t.Fatalf("tree: %v", tree)
	}
	for _, r := range roots {
		n := r.(map[string]any)
		id := n["agent"].(map[string]any)["id"]
		kids, _ := n["children"].([]any)
		if id == s.top && (len(kids) != 1 || kids[0].(map[string]any)["agent"].(map[string]any)["id"] != s.sub) {
			t.Fatalf("the parent's children: %v", kids)
		}
	}
}

func TestExplainEachReason(t *testing.T) {
	s := newReviewScene(t)
	a := s.a
	a.grantTo("agent:"+s.top, "read", "repo:acme/b", "15m")
	gb := a.grantTo("agent:"+s.sub, "read", "repo:acme/b", "15m")
	_ = gb
	// Delegator loses it: remove the parent's grant of b.
	for _, g := range a.records("grant.create") {
		if field(g, "details", "holder") == "agent:"+s.top && field(g, "details", "resource") == "repo:acme/b" {
			a.ok("DELETE", "/v1/grants/"+strings.TrimPrefix(g["target"].(string), "grant:"), service.RoleOperator, nil)
		}
	}
	suspended := a.agentOf(s.task, "", "1h")
	a.ok("POST", "/v1/agents/"+suspended+":suspend", service.RoleOperator, nil)
	revoked := a.agentOf(s.task, "", "1h")
	a.ok("DELETE", "/v1/agents/"+revoked, service.RoleOperator, nil)
	done := field(a.ok("POST", "/v1/tasks", service.RoleOperator, map[string]string{"principal": "user:alice", "ttl": "1h"}), "task", "id").(string)
	doneAgent := a.agentOf(done, "", "1h")
	a.ok("POST", "/v1/tasks/"+done+":complete", service.RoleOperator, nil)
	short := a.agentOf(s.task, "", "1s")
	a.grantTo("agent:"+s.top, "read", "repo:acme/c", "15m")
	a.ok("POST", "/v1/relationships:write", service.RoleAdmin, map[string]any{"updates": []map[string]string{
		{"operation": "DELETE", "relationship": "repo:acme/c#reader@user:alice"},
	}})
	// A conditioned grant, and a human whose agents are all suspended.
	a.ok("POST", "/v1/grants", service.RoleOperator, map[string]any{"holder": "agent:" + s.other, "permission": "write", "resource": "repo:acme/a", "ttl": "15m",
		"condition": map[string]any{"max_risk": map[string]any{"max": 0.5}}})
	a.ok("POST", "/v1/relationships:write", service.RoleAdmin, map[string]any{"updates": []map[string]string{
		{"operation": "TOUCH", "relationship": "repo:acme/a#reader@user:carol"},
	}})
	carolTask := field(a.ok("POST", "/v1/tasks", service.RoleOperator, map[string]string{"principal": "user:carol", "ttl": "1h"}), "task", "id").(string)
	carolAgent := a.agentOf(carolTask, "", "1h")
	a.grantTo("agent:"+carolAgent, "read", "repo:acme/a", "15m")
	a.ok("POST", "/v1/principals/carol:suspend-agents", service.RoleOperator, nil)
	time.Sleep(1100 * time.Millisecond)

	type explainCase struct {
		subject, perm, res, reason, failedLeg string
		ctx                                   map[string]any
	}
	cases := []explainCase{
		{"agent:" + s.other, "write", "repo:acme/a", "CONDITION_FAILED", "grant", map[string]any{"risk_score": 0.9}},
		{"agent:" + s.other, "write", "repo:acme/a", "MISSING_CONTEXT", "grant", nil},
		{"agent:" + s.other, "write", "repo:acme/a", "ALLOWED", "", map[string]any{"risk_score": 0.1}},
		{"agent:" + carolAgent, "read", "repo:acme/a", "PRINCIPAL_AGENTS_SUSPENDED", "task", nil},
	}
	for _, c := range []struct {
		subject, perm, res, reason, failedLeg string
	}{
		{"agent:" + s.top, "read", "repo:acme/a", "ALLOWED", ""},
		{"agent:" + s.top, "read", "repo:acme/zzz", "NO_GRANT", "grant"},
		{"agent:" + s.top, "read", "repo:acme/c", "PRINCIPAL_LACKS_PERMISSION", "attenuation"},
		{"agent:" + s.sub, "read", "repo:acme/b", "DELEGATOR_LACKS_PERMISSION", "attenuation"},
		{"agent:" + suspended, "read", "repo:acme/a", "AGENT_SUSPENDED", "identity"},
		{"agent:" + revoked, "read", "repo:acme/a", "AGENT_REVOKED", "identity"},
		{"agent:" + short, "read", "repo:acme/a", "AGENT_EXPIRED", "identity"},
		{"agent:" + doneAgent, "read", "repo:acme/a", "TASK_COMPLETED", "task"},
		{"agent:agt_nobody", "read", "repo:acme/a", "UNKNOWN_SUBJECT", "identity"},
		{"user:alice", "read", "repo:acme/a", "ALLOWED", ""},
		{"user:bob", "read", "repo:acme/a", "NO_PERMISSION", "permission"},
	} {
		cases = append(cases, explainCase{c.subject, c.perm, c.res, c.reason, c.failedLeg, nil})
	}
	explain := func(c explainCase) {
		t.Helper()
		out := a.ok("POST", "/v1/explain", service.RoleReviewer, map[string]any{"subject": c.subject, "permission": c.perm, "resource": c.res, "context": c.ctx})
		if out["reason_code"] != c.reason || (out["allowed"] == true) != (c.reason == "ALLOWED") {
			t.Fatalf("explain %s %s %s: %v, want %s", c.subject, c.perm, c.res, out["reason_code"], c.reason)
		}
		legs := out["legs"].([]any)
		failed := ""
		for _, l := range legs {
			m := l.(map[string]any)
			if m["passed"] != true && failed == "" {
				failed = m["name"].(string)
			}
			if m["detail"] == "" {
				t.Fatalf("leg without detail: %v", m)
			}
		}
		if failed != c.failedLeg {
			t.Fatalf("explain %s: first failed leg %q, want %q (%v)", c.reason, failed, c.failedLeg, legs)
		}
		if wc, _ := out["would_change"].([]any); len(wc) == 0 {
			t.Fatalf("explain %s says nothing about what would change it", c.reason)
		}
	}
	for _, c := range cases {
		explain(c)
	}
	a.ok("POST", "/v1/agents:freeze-all", service.RoleAdmin, nil)
	explain(explainCase{"agent:" + s.top, "read", "repo:acme/a", "AGENTS_FROZEN", "freeze", nil})
	a.ok("POST", "/v1/agents:unfreeze-all", service.RoleAdmin, nil)
	// The human's path comes from SpiceDB's trace.
	out := a.ok("POST", "/v1/explain", service.RoleReviewer, map[string]string{"subject": "agent:" + s.top, "permission": "read", "resource": "repo:acme/a"})
	att := out["legs"].([]any)[3].(map[string]any)
	if path := fmt.Sprint(att["path"]); !strings.Contains(path, "repo:acme/a#read") {
		t.Fatalf("attenuation path: %v", path)
	}
}

func (a *api) records(action string) []map[string]any {
	var out []map[string]any
	for _, r := range records(a.ok("GET", "/v1/audit?page_size=1000", service.RoleReviewer, nil)) {
		if r["action"] == action {
			out = append(out, r)
		}
	}
	return out
}

func TestUnusedGrantsAndReport(t *testing.T) {
	s := newReviewScene(t)
	a := s.a
	// Exercise the read grant and hit one denial.
	a.ok("POST", "/v1/check", service.RoleChecker, map[string]string{"subject": "agent:" + s.top, "permission": "read", "resource": "repo:acme/a"})
	a.ok("POST", "/v1/check", service.RoleChecker, map[string]string{"subject": "agent:" + s.top, "permission": "read", "resource": "repo:acme/zzz"})

	out := a.ok("GET", "/v1/review/unused-grants?since=30d&agent=agent:"+s.top, service.RoleReviewer, nil)
	var unused []string
	for _, g := range out["grants"].([]any) {
		gr := g.(map[string]any)["grant"].(map[string]any)
		unused = append(unused, gr["permission"].(string)+" "+gr["resource"].(string)+" "+gr["holder"].(string))
	}
	want := sorted([]string{"write repo:acme/a agent:" + s.top, "execute pipeline:acme/build task:" + s.task})
	if fmt.Sprint(sorted(unused)) != fmt.Sprint(want) {
		t.Fatalf("unused grants:\n got %v\nwant %v", sorted(unused), want)
	}

	rep := a.ok("GET", "/v1/review/report?principal=user:alice", service.RoleReviewer, nil)
	var top map[string]any
	for _, x := range rep["agents"].([]any) {
		if field(x.(map[string]any), "agent", "id") == s.top {
			top = x.(map[string]any)
		}
	}
	if top == nil {
		t.Fatalf("report has no page for the agent: %v", rep)
	}
	if used := fmt.Sprint(top["used"]); used != "[read repo:acme/a]" {
		t.Fatalf("used: %v", used)
	}
	if den, _ := top["denials"].([]any); len(den) != 1 || den[0].(map[string]any)["reason_code"] != "NO_GRANT" {
		t.Fatalf("denials: %v", top["denials"])
	}
	if reach, _ := top["can_reach"].([]any); len(reach) != 3 {
		t.Fatalf("can_reach: %v", top["can_reach"])
	}
	if ug, _ := top["unused_grants"].([]any); len(ug) != 2 {
		t.Fatalf("unused_grants: %v", top["unused_grants"])
	}

	req, _ := http.NewRequest("GET", a.base+"/v1/review/report.csv?principal=user:alice", nil)
	req.Header.Set("Authorization", "Bearer "+testenv.Keys[service.RoleReviewer])
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/csv") {
		t.Fatalf("csv: %d %s %s", resp.StatusCode, resp.Header.Get("Content-Type"), body)
	}
	rows, err := csv.NewReader(strings.NewReader(string(body))).ReadAll()
	if err != nil || len(rows) < 8 || rows[0][0] != "agent" {
		t.Fatalf("csv rows: %v %v", rows, err)
	}
	findings := map[string]int{}
	for _, r := range rows[1:] {
		if r[0] == "agent:"+s.top {
			findings[r[6]]++
		}
	}
	if findings["identity"] != 1 || findings["can_reach"] != 3 || findings["used"] != 1 || findings["unused_grant"] != 2 || findings["denied"] != 1 {
		t.Fatalf("csv findings for the agent: %v", findings)
	}
}

func TestReviewBadInput(t *testing.T) {
	s := newReviewScene(t)
	a := s.a
	for _, c := range []struct {
		method, path string
		body         any
		code         int
		field        string
	}{
		{"GET", "/v1/agents?status=bogus", nil, 400, "status"},
		{"GET", "/v1/agents?principal=agent:x", nil, 400, "principal"},
		{"GET", "/v1/agents?task=tsk", nil, 400, "task"},
		{"GET", "/v1/agents?page_size=5000", nil, 400, "page_size"},
		{"GET", "/v1/agents?page_token=garbage", nil, 400, "page_token"},
		{"GET", "/v1/agents/" + s.top + "/access?resource_type=spaceship", nil, 400, "resource_type"},
		{"GET", "/v1/agents/" + s.top + "/access?resource_type=agent", nil, 400, "resource_type"},
		{"GET", "/v1/agents/" + s.top + "/access?permission=Bad-Name", nil, 400, "permission"},
		{"GET", "/v1/agents/" + s.top + "/access?page_token=%21", nil, 400, "page_token"},
		{"GET", "/v1/agents/nope/access", nil, 400, "id"},
		{"GET", "/v1/agents/agt_missing/access", nil, 404, "id"},
		{"GET", "/v1/principals/bad%20id/agents", nil, 400, "id"},
		{"POST", "/v1/explain", map[string]string{"subject": "x", "permission": "read", "resource": "repo:a"}, 400, "subject"},
		{"POST", "/v1/explain", map[string]string{"subject": "user:a", "permission": "fly", "resource": "repo:a"}, 400, "permission"},
		{"GET", "/v1/review/unused-grants?since=soon", nil, 400, "since"},
		{"GET", "/v1/review/unused-grants?agent=user:alice", nil, 400, "agent"},
		{"GET", "/v1/review/unused-grants?agent=agent:agt_missing", nil, 404, "id"},
		{"GET", "/v1/review/report?principal=alice", nil, 400, "principal"},
	} {
		code, out := a.do(c.method, c.path, service.RoleReviewer, c.body)
		msg, _ := out["message"].(string)
		if code != c.code || !strings.Contains(msg, c.field) {
			t.Errorf("%s %s: %d %q, want %d naming %s", c.method, c.path, code, msg, c.code, c.field)
		}
	}
	for _, role := range []service.Role{service.RoleChecker, service.RoleOperator} {
		if code, _ := a.do("GET", "/v1/agents/"+s.top+"/access", role, nil); code != 403 {
			t.Errorf("%s listing access: %d", role, code)
		}
	}
}
