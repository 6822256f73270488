package schema_test

import (
	"os"
	"strings"
	"testing"

	"github.com/mandate-dev/mandate/schema"
)

// TestUpgrade: a schema written for the previous core (testdata/core-v0.zed,
// the default schema before grant conditions and kill switches, plus an
// admin's own type) is brought up to the current core, keeping the admin's
// types, and the result is a fixed point.
func TestUpgrade(t *testing.T) {
	raw, err := os.ReadFile("testdata/core-v0.zed")
	if err != nil {
		t.Fatal(err)
	}
	old := string(raw)
	if _, err := schema.Parse(old); err == nil {
		t.Fatal("the old core parses as current; the test no longer covers an upgrade")
	}
	up, changed, err := schema.Upgrade(old)
	if err != nil || !changed {
		t.Fatalf("Upgrade: changed=%v err=%v", changed, err)
	}
	info, err := schema.Parse(up)
	if err != nil {
		t.Fatalf("the upgraded schema is refused: %v\n%s", err, up)
	}
	for _, c := range []struct{ typ, perm string }{{"doc", "view"}, {"repo", "read"}, {"customer", "view_pii"}} {
		if !info.Grantable(c.typ, c.perm) {
			t.Errorf("%s#%s lost in the upgrade", c.typ, c.perm)
		}
	}
	if !strings.Contains(up, "agents_frozen") || !strings.Contains(up, "caveat grant_hours") {
		t.Error("the upgrade did not add the new core")
	}
	again, changed, err := schema.Upgrade(up)
	if err != nil || changed || again != up {
		t.Fatalf("a second upgrade changed it: changed=%v err=%v", changed, err)
	}
	// Upgrading never waives the convention for the admin's own types.
	bad := old + "\ndefinition wiki {\n\trelation editor: user\n\tpermission edit = editor\n}\n"
	if _, _, err := schema.Upgrade(bad); err == nil || !strings.Contains(err.Error(), "edit_grant") {
		t.Fatalf("Upgrade accepted a type without its grant relation: %v", err)
	}
}
