package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestMCPGatewayStartup: a bad config stops `mandate mcp-gateway` before
// it connects anywhere, with one line naming the file, line and field.
func TestMCPGatewayStartup(t *testing.T) {
	dir := t.TempDir()
	bad := filepath.Join(dir, "gateway.yaml")
	if err := os.WriteFile(bad, []byte(`upstreams:
  - name: github
    command: ["github-mcp-server", "stdio"]
rules:
  - tool: github.get_file_contents
    permission: read
    resource: "repo:{owner}{repo}"
default: deny
`), 0o600); err != nil {
		t.Fatal(err)
	}
	good := filepath.Join(dir, "good.yaml")
	if err := os.WriteFile(good, []byte("upstreams:\n  - name: x\n    url: http://127.0.0.1:1/mcp\nrules: []\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	run := func(args ...string) (string, error) {
		root := rootCmd()
		var out bytes.Buffer
		root.SetOut(&out)
		root.SetErr(&out)
		root.SetArgs(args)
		err := root.Execute()
		return out.String(), err
	}
	_, err := run("mcp-gateway", "--config", bad, "--key", "k", "--issuer", "http://127.0.0.1:8080")
	if err == nil || !strings.HasPrefix(err.Error(), bad+":7: rules[0].resource:") || strings.Contains(err.Error(), "\n") {
		t.Fatalf("bad config: %v", err)
	}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--key", "k"}, "--issuer"},
		{[]string{"--issuer", "http://127.0.0.1:8080"}, "--key or MANDATE_KEY"},
		{[]string{"--key", "k", "--issuer", "mandate.example"}, `issuer "mandate.example" must be an absolute http(s) URL`},
		{[]string{"--key", "k", "--issuer", "http://127.0.0.1:8080", "--jwks-url", "http://x/jwks?a=b"}, "jwks url"},
	} {
		t.Setenv("MANDATE_KEY", "")
		_, err := run(append([]string{"mcp-gateway", "--config", good}, tc.args...)...)
		if err == nil || !strings.Contains(err.Error(), tc.want) || strings.Contains(err.Error(), "\n") {
			t.Fatalf("%v: %v, want one line naming %s", tc.args, err, tc.want)
		}
	}
}
