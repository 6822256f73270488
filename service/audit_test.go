package service_test

import (
	"fmt"
	"net/url"
	"strings"
	"testing"

	"github.com/mandate-dev/mandate/server"
	"github.com/mandate-dev/mandate/service"
)

func records(out map[string]any) []map[string]any {
	raw, _ := out["records"].([]any)
	rs := make([]map[string]any, len(raw))
	for i, r := range raw {
		rs[i] = r.(map[string]any)
	}
	return rs
}

// TestAuditTrail: every check and every change is recorded with its agent,
// human, task, grants, stated reason, correlation id and caller, and the
// article's question ("what has this agent accessed?") is one query.
func TestAuditTrail(t *testing.T) {
	a := startServer(t, server.Config{})
	task, agent, sub := a.scene()
	g := a.ok("POST", "/v1/grants", service.RoleOperator, map[string]string{"holder": "agent:" + agent, "permission": "read", "resource": "repo:acme/api", "ttl": "15m"})
	grantID := field(g, "grant", "id").(string)
	if code, _ := a.do("POST", "/v1/grants", service.RoleOperator, map[string]string{"holder": "agent:" + agent, "permission": "write", "resource": "repo:acme/api", "ttl": "5m"}); code != 403 {
		t.Fatalf("escalation: %d", code)
	}
	var allowIDs []string
	for i := 0; i < 3; i++ {
		out := a.ok("POST", "/v1/check", service.RoleChecker, map[string]string{
			"subject": "agent:" + agent, "permission": "read", "resource": "repo:acme/api",
			"correlation_id": "deploy-42", "reason": fmt.Sprintf("pull the code, attempt %d", i),
		})
		allowIDs = append(allowIDs, out["decision_id"].(string))
	}
	deny := a.ok("POST", "/v1/check", service.RoleChecker, map[string]string{"subject": "agent:" + sub, "permission": "read", "resource": "repo:acme/api", "correlation_id": "deploy-42"})
	a.ok("POST", "/v1/check:bulk", service.RoleChecker, map[string]any{"checks": []map[string]string{
		{"subject": "user:alice", "permission": "read", "resource": "repo:acme/api", "correlation_id": "bulk-1"},
		{"subject": "user:bob", "permission": "read", "resource": "repo:acme/api", "correlation_id": "bulk-1"},
	}})
	a.ok("DELETE", "/v1/agents/"+sub, service.RoleOperator, nil)

	// What has this agent done? Newest first, with everything the article asks for.
	got := records(a.ok("GET", "/v1/audit?agent=agent:"+agent+"&decision=allow", service.RoleReviewer, nil))
	if len(got) != 3 {
		t.Fatalf("allowed checks of the agent: %d records", len(got))
	}
	for i, r := range got {
		if r["id"] != allowIDs[2-i] {
			t.Fatalf("record %d is %v, want %s (newest first)", i, r["id"], allowIDs[2-i])
		}
		chain, _ := r["chain"].([]any)
		grants, _ := r["grants"].([]any)
		if r["principal"] != "user:alice" || r["task"] != "task:"+task || len(chain) != 2 || len(grants) != 1 || grants[0] != grantID ||
			r["correlation_id"] != "deploy-42" || r["caller"] != "test-checker" || r["reason_code"] != "ALLOWED" || r["request_id"] == "" ||
			r["consistency_token"] == "" || !strings.HasPrefix(r["reason"].(string), "pull the code") {
			t.Fatalf("record lacks context: %v", r)
		}
	}
	if got[0]["cached"] != true {
		t.Fatalf("the third identical check should have come from the cache: %v", got[0])
	}

	// Across systems, by correlation id: the agent's allows and the sub-agent's deny.
	corr := records(a.ok("GET", "/v1/audit?correlation_id=deploy-42", service.RoleReviewer, nil))
	if len(corr) != 4 || corr[0]["id"] != deny["decision_id"] || corr[0]["failed_leg"] != "grant" || corr[0]["reason_code"] != "NO_GRANT" {
		t.Fatalf("by correlation id: %v", corr)
	}
	if bulk := records(a.ok("GET", "/v1/audit?correlation_id=bulk-1", service.RoleReviewer, nil)); len(bulk) != 2 {
		t.Fatalf("bulk items: %d records", len(bulk))
	}

	// Changes, with caller and identifiers.
	changes := map[string]map[string]any{}
	for _, r := range records(a.ok("GET", "/v1/audit?page_size=100", service.RoleAdmin, nil)) {
		if r["kind"] == "change" {
			changes[r["action"].(string)] = r
		}
	}
	for _, action := range []string{"relationships.write", "task.create", "agent.create", "grant.create", "grant.refused", "agent.revoke"} {
		c, ok := changes[action]
		if !ok {
			t.Fatalf("no %s record among %v", action, changes)
		}
		if c["caller"] == "" || c["target"] == "" {
			t.Fatalf("%s record lacks caller or target: %v", action, c)
		}
	}
	if revoked := field(changes["agent.revoke"], "details", "revoked").([]any); len(revoked) != 1 || revoked[0] != "agent:"+sub {
		t.Fatalf("agent.revoke details: %v", changes["agent.revoke"])
	}

	// Pagination with opaque tokens walks everything exactly once.
	seen := map[string]bool{}
	token := ""
	for pages := 0; ; pages++ {
		out := a.ok("GET", "/v1/audit?page_size=2&page_token="+url.QueryEscape(token), service.RoleReviewer, nil)
		for _, r := range records(out) {
			if seen[r["id"].(string)] {
				t.Fatalf("record %v listed twice", r["id"])
			}
			seen[r["id"].(string)] = true
		}
		token, _ = out["next_page_token"].(string)
		if token == "" {
			break
		}
		if pages > 100 {
			t.Fatal("pagination does not end")
		}
	}
	all := records(a.ok("GET", "/v1/audit?page_size=1000", service.RoleReviewer, nil))
	if len(seen) != len(all) {
		t.Fatalf("paged %d records, listed %d", len(seen), len(all))
	}

	// Only reviewers and admins may read it.
	for _, role := range []service.Role{service.RoleChecker, service.RoleOperator} {
		if code, _ := a.do("GET", "/v1/audit", role, nil); code != 403 {
			t.Fatalf("%s reading the audit: %d", role, code)
		}
	}
}

func TestAuditBadFilters(t *testing.T) {
	a := startServer(t, server.Config{})
	for q, field := range map[string]string{
		"agent=alice":            "agent",
		"agent=user:alice":       "agent",
		"principal=agent:agt_x":  "principal",
		"task=tsk_1":             "task",
		"resource=nope":          "resource",
		"decision=maybe":         "decision",
		"since=yesterday":        "since",
		"until=-5h":              "until",
		"since=1h&until=2h":      "since",
		"page_size=5000":         "page_size",
		"page_token=garbage":     "page_token",
		"page_token=eyJ2IjoyfQ":  "page_token",
		"page_size=-1":           "page_size",
		"since=2026-13-45T00:00": "since",
	} {
		code, out := a.do("GET", "/v1/audit?"+q, service.RoleReviewer, nil)
		msg, _ := out["message"].(string)
		if code != 400 || !strings.Contains(msg, field) {
			t.Errorf("%s: %d %q, want 400 naming %s", q, code, msg, field)
		}
	}
}
