package service_test

import (
	"testing"

	"github.com/mandate-dev/mandate/server"
	"github.com/mandate-dev/mandate/service"
)

// TestCaveatedRelationships: admins write caveated resource relationships in
// SpiceDB's own syntax, checks pass context to them, and every malformed
// caveat or context is a 400 naming the field, never a 500.
func TestCaveatedRelationships(t *testing.T) {
	a := startServer(t, server.Config{})
	sch := defaultSchema(t, a) + `
caveat small(x int) { x < 10 }
definition doc {
	relation viewer: user with small
	relation view_grant: agent with grant_lifetime | task#member with grant_lifetime
	permission view = viewer
}
`
	a.ok("PUT", "/v1/schema", service.RoleAdmin, map[string]string{"schema": sch})
	write := func(op, rel string) (int, map[string]any) {
		return a.do("POST", "/v1/relationships:write", service.RoleAdmin, map[string]any{"updates": []map[string]string{{"operation": op, "relationship": rel}}})
	}
	if code, out := write("TOUCH", `doc:d#viewer@user:alice[small]`); code != 200 {
		t.Fatalf("caveated write: %d %v", code, out)
	}
	if code, out := write("TOUCH", `doc:e#viewer@user:alice[small:{"x":3}]`); code != 200 {
		t.Fatalf("caveated write with context: %d %v", code, out)
	}
	rels := asList(a.ok("GET", "/v1/relationships?resource_type=doc", service.RoleReviewer, nil)["relationships"])
	if len(rels) != 2 || rels[0] != "doc:d#viewer@user:alice[small]" || rels[1] != `doc:e#viewer@user:alice[small:{"x":3}]` {
		t.Fatalf("read back: %v", rels)
	}

	check := func(res string, ctx map[string]any) (int, map[string]any) {
		return a.do("POST", "/v1/check", service.RoleChecker, map[string]any{"subject": "user:alice", "permission": "view", "resource": res, "context": ctx})
	}
	for _, c := range []struct {
		res    string
		ctx    map[string]any
		reason string
	}{
		{"doc:d", map[string]any{"x": 5}, "ALLOWED"},
		{"doc:d", map[string]any{"x": 50}, "NO_PERMISSION"},
		{"doc:d", nil, "MISSING_CONTEXT"},
		{"doc:e", nil, "ALLOWED"}, // the stored context answers it
	} {
		code, out := check(c.res, c.ctx)
		if code != 200 || out["reason_code"] != c.reason {
			t.Errorf("check %s with %v: %d %v, want %s", c.res, c.ctx, code, out, c.reason)
		}
	}
	if code, out := check("doc:d", map[string]any{"x": "abc"}); code != 400 || !hasFieldViolation(out, "context.x") {
		t.Errorf("a context value of the wrong type: %d %v, want 400 on context.x", code, out)
	}

	for _, bad := range []string{
		`doc:f#viewer@user:alice[nope]`,              // no such caveat
		`doc:f#viewer@user:alice[small:{"y":1}]`,     // no such parameter
		`doc:f#viewer@user:alice[small:{"x":"abc"}]`, // wrong type
		`doc:f#viewer@user:alice[small:[1]]`,         // not an object
		`doc:f#viewer@user:alice[grant_lifetime]`,    // mandate's own
		`doc:f#viewer@user:alice[Small]`,             // not a caveat name
		`doc:f#viewer@user:alice]`,                   // unbalanced
		`doc:f#viewer@user:alice[small:{"x":1}`,      // unbalanced
	} {
		if code, out := write("TOUCH", bad); code != 400 || !hasFieldViolation(out, "updates[0].relationship") {
			t.Errorf("%s: %d %v, want 400 on updates[0].relationship", bad, code, out)
		}
	}
	// A delete names the relationship; its caveat, if given, does not matter.
	if code, out := write("DELETE", `doc:d#viewer@user:alice[small]`); code != 200 {
		t.Fatalf("delete: %d %v", code, out)
	}
	if code, out := check("doc:d", map[string]any{"x": 5}); code != 200 || out["reason_code"] != "NO_PERMISSION" {
		t.Fatalf("after the delete: %d %v", code, out)
	}
}
