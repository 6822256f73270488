package main

import (
	"bytes"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/mandate-dev/mandate/schema"
)

// TestCLI drives the client commands against a running `mandate serve`, over gRPC.
func TestCLI(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the server")
	}
	bin, keys := buildBinary(t)
	grpcAddr := freeAddr(t)
	r := &replica{name: "cli", logs: &bytes.Buffer{}}
	r.start(t, bin, []string{"serve", "--keys-file", keys, "--grpc-addr", grpcAddr, "--http-addr", freeAddr(t)})
	waitServing(t, r)

	run := func(key string, args ...string) (string, int) {
		t.Helper()
		cmd := exec.Command(bin, append(args, "--addr", grpcAddr, "--key", key)...)
		out, err := cmd.CombinedOutput()
		var exit *exec.ExitError
		if errors.As(err, &exit) {
			return string(out), exit.ExitCode()
		}
		if err != nil {
			t.Fatal(err)
		}
		return string(out), 0
	}

	// An admin applies the default schema plus a new resource type.
	file := filepath.Join(t.TempDir(), "schema.zed")
	extended := schema.Default + `
definition doc {
	relation viewer: user
	relation view_grant: agent with grant_lifetime | task#member with grant_lifetime
	permission view = viewer
}
`
	if err := os.WriteFile(file, []byte(extended), 0o600); err != nil {
		t.Fatal(err)
	}
	if out, code := run(adminKey, "schema", "apply", file); code != 0 || !strings.Contains(out, "schema written") {
		t.Fatalf("schema apply: %d %s", code, out)
	}
	if out, code := run(checkerKey, "schema", "apply", file); code == 0 || !strings.Contains(out, "PermissionDenied") {
		t.Fatalf("schema apply with a checker key: %d %s", code, out)
	}
	bad := filepath.Join(t.TempDir(), "bad.zed")
	if err := os.WriteFile(bad, []byte("definition user {}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if out, code := run(adminKey, "schema", "apply", bad); code == 0 || !strings.Contains(out, "InvalidArgument") {
		t.Fatalf("schema apply dropping the core: %d %s", code, out)
	}
	if out, code := run(adminKey, "schema", "read"); code != 0 || !strings.Contains(out, "definition doc") {
		t.Fatalf("schema read: %d %s", code, out)
	}

	post(t, r, "/v1/relationships:write", adminKey, map[string]any{"updates": []map[string]string{
		{"operation": "TOUCH", "relationship": "doc:readme#viewer@user:alice"},
	}})
	if out, code := run(checkerKey, "check", "user:alice", "view", "doc:readme"); code != 0 || !strings.HasPrefix(out, "ALLOW ALLOWED") {
		t.Fatalf("check allowed: %d %s", code, out)
	}
	if out, code := run(checkerKey, "check", "user:bob", "view", "doc:readme", "-o", "json"); code != 3 || !strings.Contains(out, `"reason_code": "NO_PERMISSION"`) {
		t.Fatalf("check denied: %d %s", code, out)
	}
	if out, code := run("wrong-key", "check", "user:alice", "view", "doc:readme"); code != 1 || !strings.Contains(out, "Unauthenticated") {
		t.Fatalf("check with a wrong key: %d %s", code, out)
	}
	if out, code := run(checkerKey, "check", "alice", "view", "doc:readme"); code != 1 || !strings.Contains(out, "subject") {
		t.Fatalf("check with a malformed subject: %d %s", code, out)
	}

	// The audit trail has both checks and the schema change.
	out, code := run(adminKey, "audit", "-o", "json")
	if code != 0 || !strings.Contains(out, `"action": "schema.write"`) || !strings.Contains(out, `"reason_code": "NO_PERMISSION"`) {
		t.Fatalf("audit -o json: %d %s", code, out)
	}
	if out, code := run(adminKey, "audit", "--decision", "allow"); code != 0 || !strings.Contains(out, "user:alice") || strings.Contains(out, "user:bob") {
		t.Fatalf("audit --decision allow: %d %s", code, out)
	}
	if out, code := run(adminKey, "audit", "--since", "yesterday"); code != 1 || !strings.Contains(out, "since") {
		t.Fatalf("audit with a bad --since: %d %s", code, out)
	}
	if out, code := run(checkerKey, "audit"); code != 1 || !strings.Contains(out, "PermissionDenied") {
		t.Fatalf("audit with a checker key: %d %s", code, out)
	}

	// The review commands.
	post(t, r, "/v1/relationships:write", adminKey, map[string]any{"updates": []map[string]string{
		{"operation": "TOUCH", "relationship": "repo:acme/api#reader@user:alice"},
	}})
	_, agent, _ := provision(t, r, "15m")
	if out, code := run(adminKey, "agents", "list", "--principal", "user:alice", "-o", "csv"); code != 0 || !strings.HasPrefix(out, "AGENT,NAME,STATUS") || !strings.Contains(out, "agent:"+agent+",a,active") {
		t.Fatalf("agents list: %d %s", code, out)
	}
	if out, code := run(adminKey, "agents", "access", "agent:"+agent, "-o", "json"); code != 0 || !strings.Contains(out, `"resource": "repo:acme/api"`) {
		t.Fatalf("agents access: %d %s", code, out)
	}
	if out, code := run(adminKey, "explain", "agent:"+agent, "read", "repo:acme/api"); code != 0 || !strings.HasPrefix(out, "ALLOW ALLOWED") || !strings.Contains(out, "attenuation") {
		t.Fatalf("explain: %d %s", code, out)
	}
	if out, code := run(adminKey, "explain", "agent:"+agent, "write", "repo:acme/api", "-o", "json"); code != 0 || !strings.Contains(out, `"reason_code": "NO_GRANT"`) {
		t.Fatalf("explain a deny: %d %s", code, out)
	}
	if out, code := run(adminKey, "review", "report", "--principal", "user:alice", "-o", "csv"); code != 0 || !strings.HasPrefix(out, "agent,name,principal") || !strings.Contains(out, "can_reach,read,repo:acme/api") {
		t.Fatalf("review report csv: %d %s", code, out)
	}
	if out, code := run(adminKey, "review", "report", "--principal", "user:alice"); code != 0 || !strings.Contains(out, "never used  read repo:acme/api") {
		t.Fatalf("review report: %d %s", code, out)
	}

	// The kill switches.
	check := map[string]string{"subject": "agent:" + agent, "permission": "read", "resource": "repo:acme/api"}
	if out, code := run(operatorKey, "agents", "freeze-all"); code != 1 || !strings.Contains(out, "PermissionDenied") {
		t.Fatalf("freeze-all with an operator key: %d %s", code, out)
	}
	if out, code := run(adminKey, "agents", "freeze-all", "--reason", "drill"); code != 0 || !strings.Contains(out, "every agent is frozen") {
		t.Fatalf("freeze-all: %d %s", code, out)
	}
	if out := post(t, r, "/v1/check", checkerKey, check); out["reason_code"] != "AGENTS_FROZEN" {
		t.Fatalf("after freeze-all: %v", out)
	}
	if out, code := run(adminKey, "agents", "unfreeze-all", "-o", "json"); code != 0 || !strings.Contains(out, `"was_frozen": true`) {
		t.Fatalf("unfreeze-all: %d %s", code, out)
	}
	if out, code := run(operatorKey, "principals", "suspend-agents", "user:alice", "--reason", "drill"); code != 0 || !strings.Contains(out, "user:alice is suspended") {
		t.Fatalf("suspend-agents: %d %s", code, out)
	}
	if out := post(t, r, "/v1/check", checkerKey, check); out["reason_code"] != "PRINCIPAL_AGENTS_SUSPENDED" {
		t.Fatalf("after suspend-agents: %v", out)
	}
	if out, code := run(operatorKey, "principals", "resume-agents", "alice"); code != 0 || !strings.Contains(out, "were suspended: true") {
		t.Fatalf("resume-agents: %d %s", code, out)
	}
	if out := post(t, r, "/v1/check", checkerKey, check); out["allowed"] != true {
		t.Fatalf("after resume-agents: %v", out)
	}

	// Access requests: filed by the agent runtime's key, answered by an admin.
	post(t, r, "/v1/relationships:write", adminKey, map[string]any{"updates": []map[string]string{
		{"operation": "TOUCH", "relationship": "repo:acme/api#writer@user:alice"},
	}})
	out, code = run(operatorKey, "access-requests", "file", "agent:"+agent, "write", "repo:acme/api", "--ttl", "10m", "--reason", "release")
	if code != 0 || !strings.Contains(out, " PENDING agent:"+agent+" write on repo:acme/api") {
		t.Fatalf("access-requests file: %d %s", code, out)
	}
	id := strings.Fields(out)[0]
	if out, code := run(operatorKey, "access-requests", "approve", id); code != 1 || !strings.Contains(out, "PermissionDenied") {
		t.Fatalf("approving with the filing key: %d %s", code, out)
	}
	if out, code := run(adminKey, "access-requests", "approve", "access_request:"+id, "--reason", "ok"); code != 0 || !strings.Contains(out, "APPROVED") || !strings.Contains(out, "grant grt_") {
		t.Fatalf("access-requests approve: %d %s", code, out)
	}
	if out, code := run(operatorKey, "access-requests", "get", id, "--wait", "5s"); code != 0 || !strings.Contains(out, "approved by test-admin as admin") {
		t.Fatalf("access-requests get --wait: %d %s", code, out)
	}
	if out, code := run(adminKey, "access-requests", "list", "--human", "user:alice", "-o", "csv"); code != 0 || !strings.HasPrefix(out, "ID,STATE,AGENT") || !strings.Contains(out, id+",approved,agent:"+agent) {
		t.Fatalf("access-requests list: %d %s", code, out)
	}
	if out := post(t, r, "/v1/check", checkerKey, map[string]string{"subject": "agent:" + agent, "permission": "write", "resource": "repo:acme/api"}); out["allowed"] != true {
		t.Fatalf("after the approval: %v", out)
	}
}

// TestStartupMistakesAreOneLine: a mistake in serve's flags or files ends
// the process at once with exit status 2 and one line naming the flag, or the
// file and the field, to fix.
func TestStartupMistakesAreOneLine(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary")
	}
	bin, _ := buildBinary(t)
	dir := t.TempDir()
	keysFile := func(name, body string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	hash := strings.Repeat("ab", 32)
	badKeys := keysFile("broken.yaml", "keys:\n  - {name: a, role: checker, sha256: 00}\n  - name: [\n")
	unknownField := keysFile("unknown.yaml", "keys:\n  - {name: a, role: checker, sha256: "+hash+", colour: red}\n")
	noKeys := keysFile("empty.yaml", "keys: []\n")
	emptyFile := keysFile("nothing.yaml", "")
	badRole := keysFile("role.yaml", "keys:\n  - {name: a, role: root, sha256: "+hash+"}\n")
	badHash := keysFile("hash.yaml", "keys:\n  - {name: a, role: checker, sha256: xyz}\n")
	badSPIFFE := keysFile("spiffe.yaml", "keys:\n  - {name: a, role: checker, spiffe_id: \"https://acme/x\"}\n")
	bothIDs := keysFile("both.yaml", "keys:\n  - {name: a, role: checker, sha256: "+hash+", dns_name: a.acme.internal}\n")
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--audit-mode", "sometimes"}, "--audit-mode"},
		{[]string{"--datastore-engine", "postgres"}, "--datastore-uri"},
		{[]string{"--datastore-engine", "oracle"}, "--datastore-engine"},
		{[]string{"--bound-denial-window", "48h"}, "--bound-denial-window"},
		{[]string{"--access-request-ttl", "-5m"}, "--access-request-ttl"},
		{[]string{"--keys-file", filepath.Join(t.TempDir(), "missing.yaml")}, "--keys-file"},
		{[]string{"--keys-file", badKeys}, "broken.yaml"},
		{[]string{"--keys-file", unknownField}, "colour"},
		{[]string{"--keys-file", noKeys}, "empty.yaml: keys"},
		{[]string{"--keys-file", emptyFile}, "nothing.yaml"},
		{[]string{"--keys-file", badRole}, "keys[0] (a): role"},
		{[]string{"--keys-file", badHash}, "keys[0] (a): sha256"},
		{[]string{"--keys-file", badSPIFFE}, "keys[0] (a): spiffe_id"},
		{[]string{"--keys-file", bothIDs}, "keys[0] (a)"},
		{[]string{"--tls-cert", "cert.pem"}, "--tls-key"},
		{[]string{"--client-ca", "ca.pem"}, "--client-ca"},
		{[]string{"--bind-agents-to-workload"}, "--bind-agents-to-workload"},
		{[]string{"--tls-cert", filepath.Join(dir, "none.pem"), "--tls-key", filepath.Join(dir, "none-key.pem")}, "--tls-cert"},
		{[]string{"--log-level", "loud"}, "--log-level"},
		{[]string{"--max-body-bytes", "-1"}, "--max-body-bytes"},
		{[]string{"--check-timeout", "soon"}, "--check-timeout"},
		{[]string{"--audit-file", filepath.Join(dir, "no", "such", "dir", "audit.jsonl")}, "--audit-file"},
		{[]string{"--grpc-addr", "nonsense"}, "--grpc-addr"},
		{[]string{"--no-such-flag"}, "no-such-flag"},
		{[]string{"--spicedb-endpoint", "127.0.0.1:1"}, "--spicedb-token"},
		{[]string{"--spicedb-token", "k"}, "--spicedb-endpoint"},
		{[]string{"--spicedb-endpoint", "127.0.0.1:1", "--spicedb-token", "k", "--spicedb-insecure", "--spicedb-ca", "ca.pem"}, "--spicedb-ca"},
		{[]string{"--spicedb-endpoint", "127.0.0.1:1", "--spicedb-token", "k", "--spicedb-ca", filepath.Join(dir, "none-ca.pem")}, "--spicedb-ca"},
	} {
		cmd := exec.Command(bin, append([]string{"serve", "--http-addr", "127.0.0.1:0"}, tc.args...)...)
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		err := cmd.Run()
		var exit *exec.ExitError
		if !errors.As(err, &exit) || exit.ExitCode() != 2 {
			t.Errorf("%v: exited with %v (%s), want exit status 2", tc.args, err, stderr.String())
			continue
		}
		// Development-mode keys and JSON logs may precede the error; the
		// error itself is the last line, and only one.
		lines := strings.Split(strings.TrimRight(stderr.String(), "\n"), "\n")
		last := lines[len(lines)-1]
		if !strings.HasPrefix(last, "error: ") || !strings.Contains(last, tc.want) {
			t.Errorf("%v: last line %q, want one line starting \"error: \" naming %s", tc.args, last, tc.want)
		}
		for _, l := range lines[:len(lines)-1] {
			if !strings.HasPrefix(l, "{") && !strings.HasPrefix(l, "  ") && !strings.HasPrefix(l, "mandate development keys") {
				t.Errorf("%v: stray line %q before the error", tc.args, l)
			}
		}
	}
}
