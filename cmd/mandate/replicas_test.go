package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mandate-dev/mandate/engine/embedded"
	"github.com/mandate-dev/mandate/internal/testenv"
	"github.com/mandate-dev/mandate/service"
)

// propagationBound is how long a revocation on one replica may take to reach
// another's cache: replicas sharing Postgres notify each other at once, and
// SpiceDB's watch, the guarantee, polls every 100ms; the rest is slack for a
// loaded CI machine. The bench harness measures the real distribution.
const propagationBound = 2 * time.Second

// The tests' keys, one per role, from the shared test environment.
var (
	operatorKey = testenv.Keys[service.RoleOperator]
	checkerKey  = testenv.Keys[service.RoleChecker]
	adminKey    = testenv.Keys[service.RoleAdmin]
)

type replica struct {
	name string
	http string
	cmd  *exec.Cmd
	logs *bytes.Buffer
}

// TestThreeReplicasOnPostgres runs three `mandate serve` processes on one
// Postgres datastore and shows the cache's freshness rules across them.
func TestThreeReplicasOnPostgres(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs three servers")
	}
	dsn := testenv.Postgres(t, true)
	bin, keys := buildBinary(t)
	uri := freshDatabase(t, dsn)

	var rs []*replica
	for i, name := range []string{"A", "B", "C"} {
		args := []string{"serve", "--keys-file", keys, "--datastore-engine", "postgres", "--datastore-uri", uri,
			"--grpc-addr", freeAddr(t), "--http-addr", freeAddr(t)}
		if i == 0 {
			args = append(args, "--datastore-migrate")
		}
		r := &replica{name: name, logs: &bytes.Buffer{}}
		r.start(t, bin, args)
		// The first replica migrates; the others start once it serves.
		waitServing(t, r)
		rs = append(rs, r)
	}
	a, b, c := rs[0], rs[1], rs[2]

	post(t, a, "/v1/relationships:write", adminKey, map[string]any{"updates": []map[string]string{
		{"operation": "TOUCH", "relationship": "repo:acme/api#reader@user:alice"},
	}})
	// Each revocation kind, made on A, denied on B and C within the bound.
	kinds := []struct {
		name    string
		reason  string
		revoke  func(task, agent, grant string)
		restore func()
	}{
		{"complete", "TASK_COMPLETED", func(task, _, _ string) { post(t, a, "/v1/tasks/"+task+":complete", operatorKey, nil) }, nil},
		{"delete agent", "AGENT_REVOKED", func(_, agent, _ string) { do(t, a, "DELETE", "/v1/agents/"+agent, operatorKey, nil) }, nil},
		{"suspend", "AGENT_SUSPENDED", func(_, agent, _ string) { post(t, a, "/v1/agents/"+agent+":suspend", operatorKey, nil) }, nil},
		{"delete grant", "NO_GRANT", func(_, _, grant string) { do(t, a, "DELETE", "/v1/grants/"+grant, operatorKey, nil) }, nil},
		{"suspend the principal's agents", "PRINCIPAL_AGENTS_SUSPENDED",
			func(_, _, _ string) { post(t, a, "/v1/principals/alice:suspend-agents", operatorKey, nil) },
			func() { post(t, a, "/v1/principals/alice:resume-agents", operatorKey, nil) }},
		{"freeze all agents", "AGENTS_FROZEN",
			func(_, _, _ string) { post(t, a, "/v1/agents:freeze-all", adminKey, nil) },
			func() { post(t, a, "/v1/agents:unfreeze-all", adminKey, nil) }},
	}
	for _, k := range kinds {
		task, agent, grant := provision(t, a, "15m")
		check := map[string]string{"subject": "agent:" + agent, "permission": "read", "resource": "repo:acme/api"}
		for _, r := range []*replica{b, c} {
			// Twice: the second answer comes from the cache.
			for i := 0; i < 2; i++ {
				if out := post(t, r, "/v1/check", checkerKey, check); out["allowed"] != true {
					t.Fatalf("%s: %s denied before revocation: %v", k.name, r.name, out)
				}
			}
		}
		k.revoke(task, agent, grant)
		// Same replica: at once.
		if out := post(t, a, "/v1/check", checkerKey, check); out["allowed"] != false || out["reason_code"] != k.reason {
			t.Fatalf("%s: A answered %v right after its own revocation", k.name, out)
		}
		for _, r := range []*replica{b, c} {
			took := waitDeny(t, r, check, k.reason)
			t.Logf("%s: %s denied %v after the revocation on A", k.name, r.name, took)
		}
		if k.restore != nil {
			k.restore()
			for _, r := range rs {
				waitAllow(t, r, check)
			}
		}
	}

	// Behavioural bounds share one budget: checks on B and C count together,
	// and the crossing on A suspends the agent for every replica.
	task := post(t, a, "/v1/tasks", operatorKey, map[string]any{"principal": "user:alice", "ttl": "1h", "bounds": map[string]any{"checks_per_minute": 4}})["task"].(map[string]any)["id"].(string)
	bounded := post(t, a, "/v1/agents", operatorKey, map[string]string{"task": "task:" + task, "name": "b", "ttl": "1h"})["agent"].(map[string]any)["id"].(string)
	post(t, a, "/v1/grants", operatorKey, map[string]string{"holder": "agent:" + bounded, "permission": "read", "resource": "repo:acme/api", "ttl": "15m"})
	bcheck := map[string]string{"subject": "agent:" + bounded, "permission": "read", "resource": "repo:acme/api"}
	for _, r := range []*replica{b, c, b, c} {
		if out := post(t, r, "/v1/check", checkerKey, bcheck); out["allowed"] != true {
			t.Fatalf("bounded agent denied on %s within its budget: %v", r.name, out)
		}
	}
	if out := post(t, a, "/v1/check", checkerKey, bcheck); out["reason_code"] != "BOUND_EXCEEDED" {
		t.Fatalf("the fifth check across replicas did not cross the shared bound: %v", out)
	}
	for _, r := range []*replica{b, c} {
		waitDeny(t, r, bcheck, "AGENT_SUSPENDED")
	}

	// Expiry across replicas, with no write at all.
	_, agent, _ := provision(t, a, "2s")
	check := map[string]string{"subject": "agent:" + agent, "permission": "read", "resource": "repo:acme/api"}
	out := post(t, b, "/v1/check", checkerKey, check)
	validUntil, err := time.Parse(time.RFC3339Nano, out["valid_until"].(string))
	if err != nil {
		t.Fatal(err)
	}
	post(t, c, "/v1/check", checkerKey, check)
	for time.Now().Before(validUntil) {
		time.Sleep(5 * time.Millisecond)
	}
	for _, r := range []*replica{b, c} {
		if out := post(t, r, "/v1/check", checkerKey, check); out["allowed"] != false {
			t.Fatalf("%s served a cached allow after the grant expired: %v", r.name, out)
		}
	}

	// An outside writer: alice loses access with a write on C; A and B follow.
	_, agent, _ = provision(t, a, "15m")
	check = map[string]string{"subject": "agent:" + agent, "permission": "read", "resource": "repo:acme/api"}
	post(t, a, "/v1/check", checkerKey, check)
	post(t, b, "/v1/check", checkerKey, check)
	post(t, c, "/v1/relationships:write", adminKey, map[string]any{"updates": []map[string]string{
		{"operation": "DELETE", "relationship": "repo:acme/api#reader@user:alice"},
	}})
	for _, r := range []*replica{a, b} {
		waitDeny(t, r, check, "PRINCIPAL_LACKS_PERMISSION")
	}

	// Every replica reports its cache state and the fail-safe gauge.
	for _, r := range rs {
		h := get(t, r, "/healthz")
		if h["status"] != "SERVING" || h["cache"] != "serving" {
			t.Fatalf("%s health: %v", r.name, h)
		}
		if m := getText(t, r, "/metrics"); !strings.Contains(m, "mandate_cache_failsafe 0") || !strings.Contains(m, "mandate_cache_hits_total") {
			t.Fatalf("%s metrics lack the cache gauges", r.name)
		}
	}
}

// buildBinary builds mandate once per test run and writes a keys file.
// built is the mandate binary, built once for every test of the package:
// on a busy machine each build takes tens of seconds.
var built struct {
	once sync.Once
	dir  string
	bin  string
	err  error
}

func TestMain(m *testing.M) {
	code := m.Run()
	if built.dir != "" {
		_ = os.RemoveAll(built.dir)
	}
	os.Exit(code)
}

// buildBinary returns the mandate binary and a keys file of testenv.Keys.
func buildBinary(t *testing.T) (bin, keys string) {
	t.Helper()
	built.once.Do(func() {
		if built.dir, built.err = os.MkdirTemp("", "mandate-bin-"); built.err != nil {
			return
		}
		built.bin = filepath.Join(built.dir, "mandate")
		if out, err := exec.Command("go", "build", "-o", built.bin, ".").CombinedOutput(); err != nil {
			built.err = fmt.Errorf("%v\n%s", err, out)
		}
	})
	if built.err != nil {
		t.Fatalf("building mandate: %v", built.err)
	}
	return built.bin, testenv.KeysFile(t)
}

// start runs `mandate serve` and stops it when the test ends.
func (r *replica) start(t *testing.T, bin string, args []string) {
	t.Helper()
	for j, a := range args {
		if a == "--http-addr" {
			r.http = "http://" + args[j+1]
		}
	}
	r.cmd = exec.Command(bin, args...)
	r.cmd.Stdout, r.cmd.Stderr = r.logs, r.logs
	if err := r.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = r.cmd.Process.Signal(os.Interrupt)
		done := make(chan struct{})
		go func() { _ = r.cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			_ = r.cmd.Process.Kill()
		}
		if t.Failed() {
			t.Logf("replica %s log:\n%s", r.name, r.logs.String())
		}
	})
}

func provision(t *testing.T, r *replica, grantTTL string) (task, agent, grant string) {
	t.Helper()
	task = post(t, r, "/v1/tasks", operatorKey, map[string]string{"principal": "user:alice", "ttl": "1h"})["task"].(map[string]any)["id"].(string)
	agent = post(t, r, "/v1/agents", operatorKey, map[string]string{"task": "task:" + task, "name": "a", "ttl": "1h"})["agent"].(map[string]any)["id"].(string)
	grant = post(t, r, "/v1/grants", operatorKey, map[string]string{"holder": "agent:" + agent, "permission": "read", "resource": "repo:acme/api", "ttl": grantTTL})["grant"].(map[string]any)["id"].(string)
	return
}

func waitDeny(t *testing.T, r *replica, check map[string]string, reason string) time.Duration {
	t.Helper()
	start := time.Now()
	for {
		out := post(t, r, "/v1/check", checkerKey, check)
		if out["allowed"] == false {
			if out["reason_code"] != reason {
				t.Fatalf("%s denied with %v, want %s", r.name, out["reason_code"], reason)
			}
			return time.Since(start)
		}
		if time.Since(start) > propagationBound {
			t.Fatalf("%s still allowed %v after the revocation", r.name, propagationBound)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

func waitAllow(t *testing.T, r *replica, check map[string]string) {
	t.Helper()
	start := time.Now()
	for {
		if out := post(t, r, "/v1/check", checkerKey, check); out["allowed"] == true {
			return
		}
		if time.Since(start) > propagationBound {
			t.Fatalf("%s still denied %v after the switch was lifted", r.name, propagationBound)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

func waitServing(t *testing.T, r *replica) {
	t.Helper()
	deadline := time.Now().Add(90 * time.Second)
	for time.Now().Before(deadline) {
		resp, err := http.Get(r.http + "/healthz")
		if err == nil {
			var h map[string]string
			_ = json.NewDecoder(resp.Body).Decode(&h)
			resp.Body.Close()
			if resp.StatusCode == 200 && h["cache"] == "serving" {
				return
			}
		}
		if r.cmd.ProcessState != nil {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("replica %s never became healthy:\n%s", r.name, r.logs.String())
}

func do(t *testing.T, r *replica, method, path, key string, body any) map[string]any {
	t.Helper()
	var rd io.Reader
	if body != nil {
		j, _ := json.Marshal(body)
		rd = bytes.NewReader(j)
	}
	req, _ := http.NewRequest(method, r.http+path, rd)
	req.Header.Set("Authorization", "Bearer "+key)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s on %s: %v", method, path, r.name, err)
	}
	defer resp.Body.Close()
	var out map[string]any
	_ = json.NewDecoder(resp.Body).Decode(&out)
	if resp.StatusCode != 200 {
		t.Fatalf("%s %s on %s: %d %v", method, path, r.name, resp.StatusCode, out)
	}
	return out
}

// tryPost is post for a server that may be gone: it reports failure instead of failing the test.
func tryPost(r *replica, path, key string, body any) (map[string]any, bool) {
	j, _ := json.Marshal(body)
	req, _ := http.NewRequest("POST", r.http+path, bytes.NewReader(j))
	req.Header.Set("Authorization", "Bearer "+key)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, false
	}
	defer resp.Body.Close()
	var out map[string]any
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil || resp.StatusCode != 200 {
		return nil, false
	}
	return out, true
}

func post(t *testing.T, r *replica, path, key string, body any) map[string]any {
	t.Helper()
	return do(t, r, "POST", path, key, body)
}

func get(t *testing.T, r *replica, path string) map[string]any {
	t.Helper()
	resp, err := http.Get(r.http + path)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var out map[string]any
	_ = json.NewDecoder(resp.Body).Decode(&out)
	return out
}

func getText(t *testing.T, r *replica, path string) string {
	t.Helper()
	resp, err := http.Get(r.http + path)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}

func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

func freshDatabase(t *testing.T, dsn string) string {
	t.Helper()
	uri, drop, err := embedded.CreateDatabase(context.Background(), dsn, "mandate_replicas")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(drop)
	return uri
}
