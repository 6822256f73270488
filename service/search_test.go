package service_test

import (
	"fmt"
	"strings"
	"testing"

	"github.com/mandate-dev/mandate/server"
	"github.com/mandate-dev/mandate/service"
)

// TestSearchOverREST: the native search API behind AuthZEN's search, on the
// default schema.
func TestSearchOverREST(t *testing.T) {
	a := startServer(t, server.Config{})
	var ups []map[string]string
	for i := 0; i < 5; i++ {
		ups = append(ups, map[string]string{"operation": "TOUCH", "relationship": fmt.Sprintf("repo:acme/r%d#reader@user:alice", i)})
	}
	ups = append(ups, map[string]string{"operation": "TOUCH", "relationship": "repo:acme/r0#writer@user:bob"},
		map[string]string{"operation": "TOUCH", "relationship": "channel:general#public_reader@user:*"})
	a.ok("POST", "/v1/relationships:write", service.RoleAdmin, map[string]any{"updates": ups})

	// Resources, paged by two, in id order.
	var got []any
	token := ""
	for pages := 0; ; pages++ {
		out := a.ok("POST", "/v1/search/resources", service.RoleReviewer, map[string]any{"subject": "user:alice", "permission": "read", "resource_type": "repo", "page_size": 2, "page_token": token})
		rs, _ := out["resources"].([]any)
		got = append(got, rs...)
		if token, _ = out["next_page_token"].(string); token == "" || pages > 5 {
			break
		}
	}
	if fmt.Sprint(got) != "[repo:acme/r0 repo:acme/r1 repo:acme/r2 repo:acme/r3 repo:acme/r4]" {
		t.Errorf("resources: %v", got)
	}
	// Subjects through a permission (write implies read); the user:* wildcard is not a listable subject.
	if out := a.ok("POST", "/v1/search/subjects", service.RoleReviewer, map[string]any{"resource": "repo:acme/r0", "permission": "read", "subject_type": "user"}); fmt.Sprint(out["subjects"]) != "[user:alice user:bob]" {
		t.Errorf("subjects: %v", out)
	}
	if out := a.ok("POST", "/v1/search/subjects", service.RoleReviewer, map[string]any{"resource": "channel:general", "permission": "read_history", "subject_type": "user"}); fmt.Sprint(out["subjects"]) != "[]" {
		t.Errorf("wildcard subjects: %v", out)
	}
	// Actions are permissions only, never relations.
	if out := a.ok("POST", "/v1/search/actions", service.RoleReviewer, map[string]any{"subject": "user:bob", "resource": "repo:acme/r0"}); fmt.Sprint(out["permissions"]) != "[read write]" {
		t.Errorf("actions: %v", out)
	}
	// Unknown types and permissions find nothing.
	for _, body := range []map[string]any{
		{"subject": "user:alice", "permission": "read", "resource_type": "ledger"},
		{"subject": "user:alice", "permission": "fly", "resource_type": "repo"},
		{"subject": "robot:r2", "permission": "read", "resource_type": "repo"},
	} {
		if out := a.ok("POST", "/v1/search/resources", service.RoleReviewer, body); fmt.Sprint(out["resources"]) != "[]" {
			t.Errorf("%v: %v", body, out)
		}
	}
	// Malformed requests are 400s naming the field; the checker role may not search.
	for _, c := range []struct {
		body  map[string]any
		field string
	}{
		{map[string]any{"subject": "alice", "permission": "read", "resource_type": "repo"}, "subject"},
		{map[string]any{"subject": "user:alice", "permission": "read", "resource_type": "repo", "page_size": 5000}, "page_size"},
		{map[string]any{"subject": "user:alice", "permission": "read", "resource_type": "repo", "page_token": "nope"}, "page_token"},
		{map[string]any{"subject": "user:alice", "permission": "read", "resource_type": "repo", "context": map[string]any{"now": "x"}}, "context.now"},
	} {
		if code, out := a.do("POST", "/v1/search/resources", service.RoleReviewer, c.body); code != 400 || !strings.HasPrefix(fmt.Sprint(out["message"]), c.field+":") {
			t.Errorf("%v: %d %v, want 400 naming %s", c.body, code, out, c.field)
		}
	}
	if code, _ := a.do("POST", "/v1/search/actions", service.RoleChecker, map[string]any{"subject": "user:bob", "resource": "repo:acme/r0"}); code != 403 {
		t.Errorf("checker searching: %d, want 403", code)
	}
}
