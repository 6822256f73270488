package schema_test

import (
	"errors"
	"reflect"
	"strings"
	"testing"

	"github.com/mandate-dev/mandate/schema"
)

// without returns src with the first occurrence of old removed, and fails the
// test when old is absent so that a change to default.zed cannot turn a case
// into a no-op.
func without(t *testing.T, src, old string) string {
	t.Helper()
	if !strings.Contains(src, old) {
		t.Fatalf("default schema no longer contains %q; update the test", old)
	}
	return strings.Replace(src, old, "", 1)
}

// replaced returns src with the first occurrence of old replaced by repl.
func replaced(t *testing.T, src, old, repl string) string {
	t.Helper()
	if !strings.Contains(src, old) {
		t.Fatalf("default schema no longer contains %q; update the test", old)
	}
	return strings.Replace(src, old, repl, 1)
}

// definitionBlock returns the text of `definition name { ... }` in src.
func definitionBlock(t *testing.T, src, name string) string {
	t.Helper()
	start := strings.Index(src, "definition "+name+" {")
	if start < 0 {
		t.Fatalf("default schema has no definition %s", name)
	}
	end := strings.Index(src[start:], "\n}\n")
	if end < 0 {
		t.Fatalf("definition %s is not closed", name)
	}
	return src[start : start+end+len("\n}\n")]
}

// docType is a resource type an admin might add. %s is its view_grant relation.
const docType = `
/** doc is a document. */
definition doc {
	relation viewer: user
%s
	permission view = viewer
}
`

func withDoc(grantRelation string) string {
	return schema.Default + strings.Replace(docType, "%s", grantRelation, 1)
}

func TestParse(t *testing.T) {
	def := schema.Default

	type check func(t *testing.T, info *schema.Info)

	cases := []struct {
		name string
		src  func(t *testing.T) string
		// For a refused schema: the definition the error names ("" for none)
		// and words its message must contain.
		wantErr  bool
		wantType string
		wantMsg  []string
		check    check
	}{
		{
			name: "default schema",
			src:  func(*testing.T) string { return def },
			check: func(t *testing.T, info *schema.Info) {
				for _, ty := range []string{"user", "task", "agent", "grant", "repo", "channel", "customer"} {
					if !info.HasType(ty) {
						t.Errorf("HasType(%q) = false", ty)
					}
				}
				if !info.Grantable("repo", "read") || !info.Grantable("customer", "view_pii") {
					t.Error("repo#read and customer#view_pii should be grantable")
				}
				if info.Grantable("repo", "read_grant") || info.Grantable("repo", "reader") {
					t.Error("relations are not grantable")
				}
				if info.Grantable("agent", "chain_alive") || info.Grantable("task", "active") {
					t.Error("core permissions are not grantable")
				}
				got := strings.Join(info.ResourceTypes(), ",")
				if want := "channel,customer,environment,pipeline,registry,repo"; got != want {
					t.Errorf("ResourceTypes() = %s, want %s", got, want)
				}
				if info.Source() != def {
					t.Error("Source() is not the parsed text")
				}
			},
		},
		{
			name: "default schema without doc comments and with extra blank lines",
			src: func(t *testing.T) string {
				s := without(t, def, "/** user is a human principal. */")
				return replaced(t, s, "definition user {", "\n\ndefinition user {\n\n")
			},
		},
		{
			name:     "agent definition removed",
			src:      func(t *testing.T) string { return without(t, def, definitionBlock(t, def, "agent")) },
			wantErr:  true,
			wantType: "agent",
			wantMsg:  []string{"removed"},
		},
		{
			name:     "a definition named agent_token",
			src:      func(*testing.T) string { return def + "\ndefinition agent_token {\n\trelation owner: user\n}\n" },
			wantErr:  true,
			wantType: "agent_token",
			wantMsg:  []string{"reserved"},
		},
		{
			name:     "grant definition removed",
			src:      func(t *testing.T) string { return without(t, def, definitionBlock(t, def, "grant")) },
			wantErr:  true,
			wantType: "grant",
			wantMsg:  []string{"removed"},
		},
		{
			name:     "task without relation member",
			src:      func(t *testing.T) string { return without(t, def, "\trelation member: agent\n") },
			wantErr:  true,
			wantType: "task",
			wantMsg:  []string{"changed"},
		},
		{
			name: "agent with a weakened chain_alive",
			src: func(t *testing.T) string {
				return replaced(t, def, "permission chain_alive = alive & (root + parent->chain_alive)", "permission chain_alive = alive")
			},
			wantErr:  true,
			wantType: "agent",
			wantMsg:  []string{"changed"},
		},
		{
			name: "user gains a relation",
			src: func(t *testing.T) string {
				return replaced(t, def, "definition user {", "definition user {\n\trelation manager: user")
			},
			wantErr:  true,
			wantType: "user",
			wantMsg:  []string{"changed"},
		},
		{
			name: "caveat within_lifetime changed",
			src: func(t *testing.T) string {
				return replaced(t, def, "\tnow < expires_at\n}", "\tnow <= expires_at\n}")
			},
			wantErr: true,
			wantMsg: []string{"within_lifetime", "changed"},
		},
		{
			name: "caveat mandate_record removed",
			src: func(t *testing.T) string {
				s := replaced(t, def, "relation record: user with mandate_record", "relation record: user")
				s = replaced(t, s, "relation record: task with mandate_record", "relation record: task")
				s = replaced(t, s, "relation record: agent with mandate_record | task with mandate_record", "relation record: agent | task")
				start := strings.Index(s, "caveat mandate_record(")
				end := strings.Index(s[start:], "\n}\n")
				return s[:start] + s[start+end+len("\n}\n"):]
			},
			wantErr: true,
			wantMsg: []string{"mandate_record", "removed"},
		},
		{
			name:     "resource permission without a grant relation",
			src:      func(*testing.T) string { return withDoc("") },
			wantErr:  true,
			wantType: "doc",
			wantMsg:  []string{"view", "relation view_grant: " + schema.GrantRelationTypes},
		},
		{
			name: "resource permission with the grant relation",
			src:  func(*testing.T) string { return withDoc("\trelation view_grant: " + schema.GrantRelationTypes) },
			check: func(t *testing.T, info *schema.Info) {
				if !info.Grantable("doc", "view") {
					t.Error(`Grantable("doc", "view") = false`)
				}
				if info.Grantable("doc", "viewer") || info.Grantable("doc", "view_grant") || info.Grantable("doc", "edit") {
					t.Error("only permissions with a grant relation are grantable")
				}
				if !info.HasRelation("doc", "view_grant") || info.HasPermission("doc", "view_grant") {
					t.Error("view_grant is a relation")
				}
				if got := strings.Join(info.Permissions("doc"), ","); got != "view" {
					t.Errorf(`Permissions("doc") = %s, want view`, got)
				}
			},
		},
		{
			name: "grant relation with the two types in the other order",
			src: func(*testing.T) string {
				return withDoc("\trelation view_grant: task#member with grant_lifetime | agent with grant_lifetime")
			},
			check: func(t *testing.T, info *schema.Info) {
				if !info.Grantable("doc", "view") {
					t.Error(`Grantable("doc", "view") = false`)
				}
			},
		},
		{
			name:     "grant relation without its caveat",
			src:      func(*testing.T) string { return withDoc("\trelation view_grant: agent | task#member") },
			wantErr:  true,
			wantType: "doc",
			wantMsg:  []string{"view_grant", "must be `agent with grant_lifetime"},
		},
		{
			name: "grant relation with the wrong caveat",
			src: func(*testing.T) string {
				return withDoc("\trelation view_grant: agent with within_lifetime | task#member with within_lifetime")
			},
			wantErr:  true,
			wantType: "doc",
			wantMsg:  []string{"view_grant", "must be `agent with grant_lifetime"},
		},
		{
			name:     "grant relation for agents only",
			src:      func(*testing.T) string { return withDoc("\trelation view_grant: agent with grant_lifetime") },
			wantErr:  true,
			wantType: "doc",
			wantMsg:  []string{"view_grant", "must be `agent with grant_lifetime"},
		},
		{
			name: "grant relation naming task instead of task#member",
			src: func(*testing.T) string {
				return withDoc("\trelation view_grant: agent with grant_lifetime | task with grant_lifetime")
			},
			wantErr:  true,
			wantType: "doc",
			wantMsg:  []string{"view_grant", "must be `agent with grant_lifetime"},
		},
		{
			name: "grant relation with an extra user type",
			src: func(*testing.T) string {
				return withDoc("\trelation view_grant: agent with grant_lifetime | task#member with grant_lifetime | user with grant_lifetime")
			},
			wantErr:  true,
			wantType: "doc",
			wantMsg:  []string{"view_grant", "must be `agent with grant_lifetime"},
		},
		{
			name: "grant relation with an expiration trait",
			src: func(*testing.T) string {
				return "use expiration\n" + withDoc("\trelation view_grant: agent with grant_lifetime and expiration | task#member with grant_lifetime")
			},
			wantErr:  true,
			wantType: "doc",
			wantMsg:  []string{"view_grant", "must be `agent with grant_lifetime"},
		},
		{
			name: "grant relation offering conditions",
			src: func(*testing.T) string {
				return withDoc("\trelation view_grant: agent with grant_lifetime | task#member with grant_lifetime | agent with grant_max_risk | agent with grant_hours | task#member with grant_hours")
			},
			check: func(t *testing.T, info *schema.Info) {
				if got := info.GrantConditions("doc", "view", "agent"); !reflect.DeepEqual(got, []string{"grant_hours", "grant_max_risk"}) {
					t.Errorf("agent conditions = %v", got)
				}
				if got := info.GrantConditions("doc", "view", "task"); !reflect.DeepEqual(got, []string{"grant_hours"}) {
					t.Errorf("task conditions = %v", got)
				}
			},
		},
		{
			name: "grant relation with a condition but no plain grant",
			src: func(*testing.T) string {
				return withDoc("\trelation view_grant: agent with grant_max_risk | task#member with grant_lifetime")
			},
			wantErr:  true,
			wantType: "doc",
			wantMsg:  []string{"view_grant", "must be `agent with grant_lifetime"},
		},
		{
			name: "grant relation with a caveat that is not a condition",
			src: func(*testing.T) string {
				return withDoc("\trelation view_grant: agent with grant_lifetime | task#member with grant_lifetime | agent with within_lifetime")
			},
			wantErr:  true,
			wantType: "doc",
			wantMsg:  []string{"view_grant", "must be `agent with grant_lifetime"},
		},
		{
			name: "condition caveat changed",
			src: func(t *testing.T) string {
				return replaced(t, def, "risk_score <= max_risk", "risk_score <= max_risk + 1.0")
			},
			wantErr: true,
			wantMsg: []string{"grant_max_risk", "changed"},
		},
		{
			name:     "mandate definition removed",
			src:      func(t *testing.T) string { return without(t, def, definitionBlock(t, def, "mandate")) },
			wantErr:  true,
			wantType: "mandate",
			wantMsg:  []string{"removed"},
		},
		{
			name:     "grant relation that is a permission",
			src:      func(*testing.T) string { return withDoc("\tpermission view_grant = viewer") },
			wantErr:  true,
			wantType: "doc",
			wantMsg:  []string{"view_grant", "cannot receive agent grants"},
		},
		{
			name:    "empty schema",
			src:     func(*testing.T) string { return "" },
			wantErr: true,
			wantMsg: []string{"empty"},
		},
		{
			name:    "blank schema",
			src:     func(*testing.T) string { return " \n\t\n" },
			wantErr: true,
			wantMsg: []string{"empty"},
		},
		{
			name:    "syntax error",
			src:     func(*testing.T) string { return def + "\ndefinition broken {\n\trelation viewer user\n" },
			wantErr: true,
			wantMsg: []string{"parse error"},
		},
		{
			name:    "a resource type without the core",
			src:     func(*testing.T) string { return "definition user {}\ndefinition repo {\n\trelation reader: user\n}\n" },
			wantErr: true,
			wantMsg: []string{"removed"},
		},
	}

	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			info, err := schema.Parse(c.src(t))
			if !c.wantErr {
				if err != nil {
					t.Fatalf("Parse: %v", err)
				}
				if info == nil {
					t.Fatal("Parse returned nil Info and nil error")
				}
				if c.check != nil {
					c.check(t, info)
				}
				return
			}
			if err == nil {
				t.Fatal("Parse accepted the schema")
			}
			t.Logf("refused: %v", err)
			if info != nil {
				t.Error("Parse returned an Info with its error")
			}
			var se *schema.Error
			if !errors.As(err, &se) {
				t.Fatalf("error is %T, want *schema.Error: %v", err, err)
			}
			if se.Type != c.wantType {
				t.Errorf("Error.Type = %q, want %q (%v)", se.Type, c.wantType, err)
			}
			for _, m := range c.wantMsg {
				if !strings.Contains(err.Error(), m) {
					t.Errorf("error %q does not mention %q", err, m)
				}
			}
			if c.wantType != "" && !strings.HasPrefix(err.Error(), "definition "+c.wantType+":") {
				t.Errorf("error %q does not name definition %s", err, c.wantType)
			}
		})
	}
}
