package mcpgateway

import (
	"strings"
	"testing"
)

const goodConfig = `upstreams:
  - name: github
    command: ["github-mcp-server", "stdio"]
  - name: crm
    url: http://127.0.0.1:9000/mcp
rules:
  - tool: github.get_file_contents
    permission: read
    resource: "repo:{owner}/{repo}"
  - uri: "crm://customers/{id}"
    upstream: crm
    permission: view_account
    resource: "customer:{id}"
  - prompt: github.review
    permission: read
    resource: "repo:acme/api"
default: deny
`

func TestParseGood(t *testing.T) {
	f, err := Parse([]byte(goodConfig))
	if err != nil {
		t.Fatal(err)
	}
	if len(f.Rules) != 3 || f.Rules[0].Line() != 7 || f.Rules[1].Template().Type() != "customer" {
		t.Fatalf("%+v", f.Rules)
	}
	vars, ok := f.Rules[1].matchURI("crm://customers/c1")
	if !ok || vars["id"] != "c1" {
		t.Fatalf("match: %v %v", vars, ok)
	}
	for _, uri := range []string{"crm://customers/c1/x", "crm://customers/", "crm://customers/c1?x", "crm://other/c1"} {
		if _, ok := f.Rules[1].matchURI(uri); ok {
			t.Errorf("%s matched", uri)
		}
	}
}

// TestParseBad: every bad config fails with one line that starts with the
// line at fault and names the field.
func TestParseBad(t *testing.T) {
	for _, tc := range []struct{ replace, with, want string }{
		{"default: deny", "default: allow", "17: default:"},
		{"    permission: read\n    resource: \"repo:{owner}/{repo}\"", "    permission: read\n    resource: \"repo:{owner}{repo}\"", "9: rules[0].resource:"},
		{"    resource: \"repo:{owner}/{repo}\"", "    resource: \"repo\"", "9: rules[0].resource:"},
		{"  - tool: github.get_file_contents", "  - tool: gitlab.get_file_contents", "7: rules[0].tool:"},
		{"  - tool: github.get_file_contents", "  - tool: get_file_contents", "7: rules[0].tool:"},
		{"    permission: view_account", "    permission: View-Account", "12: rules[1].permission:"},
		{"    resource: \"customer:{id}\"", "    resource: \"customer:{cid}\"", "13: rules[1].resource:"},
		{"    upstream: crm", "    upstream: nope", "11: rules[1].upstream:"},
		{"  - uri: \"crm://customers/{id}\"", "  - uri: \"customers/{id}\"", "10: rules[1].uri:"},
		{"  - uri: \"crm://customers/{id}\"", "  - uri: \"crm://customers/{id}{x}\"", "10: rules[1].uri:"},
		{"  - name: crm", "  - name: github", "4: upstreams[1].name:"},
		{"    url: http://127.0.0.1:9000/mcp", "    url: ftp://x", "5: upstreams[1].url:"},
		{"    url: http://127.0.0.1:9000/mcp", "    urll: http://x", "5: field urll not found"},
		{"  - prompt: github.review", "  - prompt: github.review\n    tool: github.x", "14: rules[2]:"},
		{"default: deny", "default: [deny]", "17: cannot unmarshal"},
		{"    command: [\"github-mcp-server\", \"stdio\"]", "    command: [\"\"]", "3: upstreams[0].command:"},
	} {
		raw := strings.Replace(goodConfig, tc.replace, tc.with, 1)
		if raw == goodConfig {
			t.Fatalf("%q is not in the config", tc.replace)
		}
		_, err := Parse([]byte(raw))
		if err == nil || !strings.HasPrefix(err.Error(), tc.want) || strings.Contains(err.Error(), "\n") {
			t.Errorf("%s → %q: %v; want prefix %q", tc.replace, tc.with, err, tc.want)
		}
	}
	dup := strings.Replace(goodConfig, "default: deny", "  - prompt: github.review\n    permission: read\n    resource: \"repo:acme/api\"\ndefault: deny", 1)
	if _, err := Parse([]byte(dup)); err == nil || !strings.Contains(err.Error(), "repeats the rule on line 14") {
		t.Errorf("duplicate rule: %v", err)
	}
	if _, err := Parse([]byte("")); err == nil {
		t.Error("an empty config parsed")
	}
	if _, err := Parse([]byte("rules: []\n")); err == nil || !strings.Contains(err.Error(), "upstreams") {
		t.Errorf("no upstreams: %v", err)
	}
}

func FuzzParse(f *testing.F) {
	f.Add([]byte(goodConfig))
	f.Add([]byte("upstreams: [{name: a, url: 'http://x'}]\nrules: [{tool: a.b, permission: read, resource: 'r:{x}'}]"))
	f.Fuzz(func(t *testing.T, raw []byte) {
		file, err := Parse(raw)
		if err != nil {
			if strings.Contains(err.Error(), "\n") {
				t.Fatalf("a multi-line error: %q", err)
			}
			return
		}
		for i := range file.Rules {
			if file.Rules[i].Template() == nil {
				t.Fatal("a loaded rule without a template")
			}
		}
	})
}
