// Package mandatetest runs a real mandate in process, on the embedded memory
// SpiceDB, for the tests and benchmarks of code that asks mandate (the
// client, the middleware, the MCP gateway). Like net/http/httptest, it is
// for tests; nothing in it is faked.
package mandatetest

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/mandate-dev/mandate/server"
	"github.com/mandate-dev/mandate/service"
)

// Keys are the plaintext keys the server accepts, one per role.
var Keys = map[service.Role]string{
	service.RoleChecker:  "mandatetest-checker-key",
	service.RoleOperator: "mandatetest-operator-key",
	service.RoleReviewer: "mandatetest-reviewer-key",
	service.RoleAdmin:    "mandatetest-admin-key",
	service.RoleGateway:  "mandatetest-gateway-key",
}

// Mandate is a running server.
type Mandate struct {
	// GRPCAddr and HTTPBase are where it listens.
	GRPCAddr, HTTPBase string

	stopOnce sync.Once
	cancel   context.CancelFunc
	done     chan struct{}
}

// Start runs mandate with cfg (listen addresses, keys file and logger are
// set here) until Stop. dir receives the keys file.
func Start(dir string, cfg server.Config) (*Mandate, error) {
	var b bytes.Buffer
	b.WriteString("keys:\n")
	for _, r := range service.Roles {
		sum := sha256.Sum256([]byte(Keys[r]))
		fmt.Fprintf(&b, "  - {name: test-%s, role: %s, sha256: %s, counts_for_bounds: true}\n", r, r, hex.EncodeToString(sum[:]))
	}
	cfg.KeysFile = filepath.Join(dir, "keys.yaml")
	if err := os.WriteFile(cfg.KeysFile, b.Bytes(), 0o600); err != nil {
		return nil, err
	}
	if cfg.GRPCAddr == "" {
		cfg.GRPCAddr = "127.0.0.1:0"
	}
	if cfg.HTTPAddr == "" {
		cfg.HTTPAddr = "127.0.0.1:0"
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if cfg.Audit.SpoolPath == "" {
		cfg.Audit.SpoolPath = filepath.Join(dir, "audit.spool")
	}
	ctx, cancel := context.WithCancel(context.Background())
	srv, err := cfg.Complete(ctx)
	if err != nil {
		cancel()
		return nil, fmt.Errorf("starting mandate: %w", err)
	}
	m := &Mandate{GRPCAddr: srv.GRPCAddr(), HTTPBase: "http://" + srv.HTTPAddr(), cancel: cancel, done: make(chan struct{})}
	go func() { _ = srv.Run(ctx); close(m.done) }()
	deadline := time.Now().Add(15 * time.Second)
	for {
		resp, err := http.Get(m.HTTPBase + "/healthz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return m, nil
			}
		}
		if time.Now().After(deadline) {
			m.Stop()
			return nil, fmt.Errorf("mandate never became healthy")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// New starts mandate for a test and stops it when the test ends.
func New(t testing.TB, cfg server.Config) *Mandate {
	t.Helper()
	m, err := Start(t.TempDir(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(m.Stop)
	return m
}

// Stop shuts mandate down and waits for it; safe to call twice.
func (m *Mandate) Stop() {
	m.stopOnce.Do(func() { m.cancel(); <-m.done })
}

// Do sends a REST request with role's key and decodes the JSON answer.
func (m *Mandate) Do(method, path string, role service.Role, body any) (int, map[string]any, error) {
	var r io.Reader
	if body != nil {
		j, err := json.Marshal(body)
		if err != nil {
			return 0, nil, err
		}
		r = bytes.NewReader(j)
	}
	req, err := http.NewRequest(method, m.HTTPBase+path, r)
	if err != nil {
		return 0, nil, err
	}
	req.Header.Set("Authorization", "Bearer "+Keys[role])
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	var out map[string]any
	if err := json.Unmarshal(raw, &out); err != nil {
		out = map[string]any{"raw": string(raw)}
	}
	return resp.StatusCode, out, nil
}

// Must is Do that fails the test unless the answer is 200.
func (m *Mandate) Must(t testing.TB, method, path string, role service.Role, body any) map[string]any {
	t.Helper()
	code, out, err := m.Do(method, path, role, body)
	if err != nil || code != 200 {
		t.Fatalf("%s %s: %d %v %v", method, path, code, out, err)
	}
	return out
}

// Setup makes the calls a test scene needs, outside a test (benchmarks).
type Setup struct {
	M *Mandate
	// Err is the first error; every call after it does nothing.
	Err error
}

func (s *Setup) call(method, path string, role service.Role, body any) map[string]any {
	if s.Err != nil {
		return nil
	}
	code, out, err := s.M.Do(method, path, role, body)
	if err == nil && code != 200 {
		err = fmt.Errorf("%s %s: %d %v", method, path, code, out)
	}
	s.Err = err
	return out
}

// Relate touches relationships ("repo:acme/api#reader@user:alice").
func (s *Setup) Relate(rels ...string) {
	var ups []map[string]string
	for _, r := range rels {
		ups = append(ups, map[string]string{"operation": "TOUCH", "relationship": r})
	}
	s.call("POST", "/v1/relationships:write", service.RoleAdmin, map[string]any{"updates": ups})
}

// Agent creates a task for principal and an agent under it; it returns the
// bare agent id and the task id.
func (s *Setup) Agent(principal, description, name string) (agent, task string) {
	out := s.call("POST", "/v1/tasks", service.RoleOperator, map[string]string{"principal": principal, "description": description, "ttl": "2h"})
	if s.Err != nil {
		return "", ""
	}
	task = out["task"].(map[string]any)["id"].(string)
	out = s.call("POST", "/v1/agents", service.RoleOperator, map[string]string{"task": "task:" + task, "name": name, "ttl": "1h"})
	if s.Err != nil {
		return "", ""
	}
	return out["agent"].(map[string]any)["id"].(string), task
}

// Grant gives the agent permission on resource for an hour; it returns the grant id.
func (s *Setup) Grant(agent, permission, resource string) string {
	out := s.call("POST", "/v1/grants", service.RoleOperator, map[string]string{"holder": "agent:" + agent, "permission": permission, "resource": resource, "ttl": "1h"})
	if s.Err != nil {
		return ""
	}
	return out["grant"].(map[string]any)["id"].(string)
}
