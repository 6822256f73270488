// Package testenv starts mandate servers for tests and talks to them: one
// key per role, one server starter, one way to call REST and to check, used
// by the tests of service, server, gateway/authzen and cmd/mandate.
package testenv

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/authzed/grpcutil"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/mandate-dev/mandate/server"
	"github.com/mandate-dev/mandate/service"
)

// Keys are the test keys, one per role.
var Keys = map[service.Role]string{
	service.RoleChecker:  "test-checker-key",
	service.RoleOperator: "test-operator-key",
	service.RoleReviewer: "test-reviewer-key",
	service.RoleAdmin:    "test-admin-key",
	service.RoleGateway:  "test-gateway-key",
}

// UntrustedCheckerKey is a checker key not marked counts_for_bounds: its
// checks never count against an agent's bounds. The Keys checker and admin
// keys are marked.
const UntrustedCheckerKey = "test-untrusted-checker-key"

// KeysFile writes a keys file accepting Keys and UntrustedCheckerKey and
// returns its path.
func KeysFile(t testing.TB) string {
	t.Helper()
	var b strings.Builder
	b.WriteString("keys:\n")
	for _, r := range service.Roles {
		sum := sha256.Sum256([]byte(Keys[r]))
		trusted := r == service.RoleChecker || r == service.RoleAdmin
		fmt.Fprintf(&b, "  - {name: test-%s, role: %s, sha256: %s, counts_for_bounds: %t}\n", r, r, hex.EncodeToString(sum[:]), trusted)
	}
	sum := sha256.Sum256([]byte(UntrustedCheckerKey))
	fmt.Fprintf(&b, "  - {name: test-untrusted-checker, role: checker, sha256: %s}\n", hex.EncodeToString(sum[:]))
	p := filepath.Join(t.TempDir(), "keys.yaml")
	if err := os.WriteFile(p, []byte(b.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// Server is a mandate server running in the test's process.
type Server struct {
	T testing.TB
	// Srv is the running server.
	Srv *server.Server
	// Base is its REST root, "http://host:port".
	Base string
	stop func()
	// client sends Call, Do and Form; nil is http.DefaultClient.
	client *http.Client
}

// As returns a view of s whose Call, Do, OK, Check and Form send over c:
// for example MTLSClient's connection presenting a client certificate.
func (s *Server) As(c *http.Client) *Server {
	cp := *s
	cp.client = c
	return &cp
}

func (s *Server) httpClient() *http.Client {
	if s.client != nil {
		return s.client
	}
	return http.DefaultClient
}

// Start runs a server on free ports until the test ends, with Keys unless
// cfg names a keys file, and a silent log unless cfg has one. It returns
// once the server answers /healthz with 200: tests wait for readiness, never
// for a fixed time.
func Start(t testing.TB, cfg server.Config) *Server {
	t.Helper()
	if cfg.KeysFile == "" {
		cfg.KeysFile = KeysFile(t)
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
	ctx, cancel := context.WithCancel(context.Background())
	srv, err := cfg.Complete(ctx)
	if err != nil {
		cancel()
		t.Fatalf("starting mandate: %v", err)
	}
	done := make(chan struct{})
	go func() { _ = srv.Run(ctx); close(done) }()
	var once sync.Once
	s := &Server{T: t, Srv: srv, Base: "http://" + srv.HTTPAddr(), stop: func() { once.Do(func() { cancel(); <-done }) }}
	t.Cleanup(s.stop)
	if cfg.TLS.Enabled() {
		// Readiness only: the tests themselves verify the server's certificate.
		s.Base = "https://" + srv.HTTPAddr()
		waitHealthyWith(t, s.Base, &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}})
		return s
	}
	WaitHealthy(t, s.Base)
	return s
}

// Stop stops the server now rather than when the test ends.
func (s *Server) Stop() { s.stop() }

// WaitHealthy waits until base/healthz answers 200. It gives up only after a
// minute, far beyond any healthy start, so a slow machine does not fail it.
func WaitHealthy(t testing.TB, base string) {
	t.Helper()
	waitHealthyWith(t, base, http.DefaultClient)
}

func waitHealthyWith(t testing.TB, base string, client *http.Client) {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for time.Now().Before(deadline) {
		resp, err := client.Get(base + "/healthz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("%s never became healthy", base)
}

// Call sends a request with an Authorization header as given (none when
// empty) and returns the status, the headers and the raw body. body is sent
// as is when it is a string or []byte, as JSON otherwise.
func (s *Server) Call(method, path, authorization string, body any) (int, http.Header, []byte) {
	s.T.Helper()
	var r io.Reader
	switch b := body.(type) {
	case nil:
	case string:
		r = strings.NewReader(b)
	case []byte:
		r = bytes.NewReader(b)
	default:
		j, err := json.Marshal(b)
		if err != nil {
			s.T.Fatal(err)
		}
		r = bytes.NewReader(j)
	}
	req, err := http.NewRequest(method, s.Base+path, r)
	if err != nil {
		s.T.Fatal(err)
	}
	if authorization != "" {
		req.Header.Set("Authorization", authorization)
	}
	resp, err := s.httpClient().Do(req)
	if err != nil {
		s.T.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header, raw
}

// Do calls the REST API with the key of role (none when role is "") and
// returns the status and the decoded JSON body ({"raw": body} if not JSON).
func (s *Server) Do(method, path string, role service.Role, body any) (int, map[string]any) {
	s.T.Helper()
	auth := ""
	if role != "" {
		auth = "Bearer " + Keys[role]
	}
	code, _, raw := s.Call(method, path, auth, body)
	var out map[string]any
	_ = json.Unmarshal(raw, &out)
	if out == nil {
		out = map[string]any{"raw": string(raw)}
	}
	return code, out
}

// OK is Do that requires a 200.
func (s *Server) OK(method, path string, role service.Role, body any) map[string]any {
	s.T.Helper()
	code, out := s.Do(method, path, role, body)
	if code != http.StatusOK {
		s.T.Fatalf("%s %s: %d %v", method, path, code, out)
	}
	return out
}

// Check asks POST /v1/check with the checker key, with context when not
// nil, and requires a 200.
func (s *Server) Check(subject, permission, resource string, context map[string]any) map[string]any {
	s.T.Helper()
	body := map[string]any{"subject": subject, "permission": permission, "resource": resource}
	if context != nil {
		body["context"] = context
	}
	return s.OK("POST", "/v1/check", service.RoleChecker, body)
}

// Dial connects to the server's gRPC port with the key of role (none when
// role is "") or, when key is set, with that key.
func (s *Server) Dial(role service.Role, key ...string) *grpc.ClientConn {
	s.T.Helper()
	opts := []grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials())}
	k := Keys[role]
	if len(key) > 0 {
		k = key[0]
	}
	if k != "" {
		opts = append(opts, grpcutil.WithInsecureBearerToken(k))
	}
	conn, err := grpc.NewClient(s.Srv.GRPCAddr(), opts...)
	if err != nil {
		s.T.Fatal(err)
	}
	s.T.Cleanup(func() { conn.Close() })
	return conn
}
