package main

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mandate-dev/mandate/internal/testenv"
)

// TestCLIOverMutualTLS: the client commands reach a `mandate serve` that
// serves TLS with --tls-ca, and authenticate with a client certificate
// (an X.509-SVID) instead of a key; an unmapped certificate is refused.
func TestCLIOverMutualTLS(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the server")
	}
	bin, _ := buildBinary(t)
	ca := testenv.NewCA(t, "trust")
	srv := ca.Issue(t, "server", true, nil)
	const svid = "spiffe://acme.internal/ns/ci/sa/runner"
	runner := ca.Issue(t, "runner", false, nil, svid)
	stranger := ca.Issue(t, "stranger", false, nil, "spiffe://acme.internal/ns/ci/sa/other")
	keys := filepath.Join(t.TempDir(), "keys.yaml")
	if err := os.WriteFile(keys, []byte(fmt.Sprintf("keys:\n  - {name: ci-runner, role: checker, spiffe_id: %q}\n", svid)), 0o600); err != nil {
		t.Fatal(err)
	}
	grpcAddr := freeAddr(t)
	r := &replica{name: "tls", logs: &bytes.Buffer{}}
	r.start(t, bin, []string{"serve", "--keys-file", keys, "--grpc-addr", grpcAddr, "--http-addr", freeAddr(t),
		"--tls-cert", srv.CertFile, "--tls-key", srv.KeyFile, "--client-ca", ca.File})

	run := func(leaf testenv.Leaf) (string, int) {
		cmd := exec.Command(bin, "check", "user:alice", "read", "repo:acme/api", "--addr", grpcAddr,
			"--tls-ca", ca.File, "--tls-cert", leaf.CertFile, "--tls-key", leaf.KeyFile)
		cmd.Env = append(os.Environ(), "MANDATE_KEY=")
		out, err := cmd.CombinedOutput()
		var exit *exec.ExitError
		if errors.As(err, &exit) {
			return string(out), exit.ExitCode()
		}
		return string(out), 0
	}
	deadline := time.Now().Add(90 * time.Second)
	for {
		out, code := run(runner)
		// 3 is a deny: alice holds nothing, but the caller was let in.
		if code == 3 && strings.Contains(out, "DENY") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("check with the SVID: %d %s\nserver log:\n%s", code, out, r.logs.String())
		}
		time.Sleep(200 * time.Millisecond)
	}
	if out, code := run(stranger); code != 1 || !strings.Contains(out, "Unauthenticated") {
		t.Fatalf("check with an unmapped certificate: %d %s", code, out)
	}
}
