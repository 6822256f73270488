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
	secret := filepath.Join(dir, "secret")
	if err := os.WriteFile(secret, []byte("0123456789abcdef0123456789abcdef\n"), 0o600); err != nil {
		t.Fatal(err)
	}
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
	run := func(args ...string) (string, error) {
		root := rootCmd()
		var out bytes.Buffer
		root.SetOut(&out)
		root.SetErr(&out)
		root.SetArgs(args)
		err := root.Execute()
		return out.String(), err
	}
	_, err := run("mcp-gateway", "--config", bad, "--secret-file", secret, "--key", "k")
	if err == nil || !strings.HasPrefix(err.Error(), bad+":7: rules[0].resource:") || strings.Contains(err.Error(), "\n") {
		t.Fatalf("bad config: %v", err)
	}
	short := filepath.Join(dir, "short")
	_ = os.WriteFile(short, []byte("short"), 0o600)
	if _, err := run("mcp-gateway", "token", "agt_1", "--secret-file", short); err == nil || !strings.Contains(err.Error(), "at least 32 bytes") {
		t.Fatalf("a short secret: %v", err)
	}
	out, err := run("mcp-gateway", "token", "agent:agt_1", "--secret-file", secret)
	if err != nil || !strings.HasPrefix(out, "mgw1.agt_1.") {
		t.Fatalf("token: %q %v", out, err)
	}
}
