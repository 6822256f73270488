package mcpgateway_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"
	"go.uber.org/goleak"

	"github.com/mandate-dev/mandate/client"
	"github.com/mandate-dev/mandate/client/mandatetest"
	"github.com/mandate-dev/mandate/client/mcpgateway"
	"github.com/mandate-dev/mandate/server"
	"github.com/mandate-dev/mandate/service"
)

var secret = []byte("test-gateway-secret-0123456789abcdef")

const issuer = "https://mandate.example.test"

// world is a running mandate, the pretend upstreams and a gateway in front.
type world struct {
	m           *mandatetest.Mandate
	gw          *mcpgateway.Gateway
	base        string // the gateway's base URL
	deployCalls *atomic.Int64
	crmCalls    *atomic.Int64
	agents      map[string]string // name → agent id
	tasks       map[string]string
}

func gatewayConfig(deployURL, crmURL string) string {
	var b strings.Builder
	fmt.Fprintf(&b, `upstreams:
  - name: slack
    command: [%q, "-test.run=^$"]
    env: {%s: slack}
  - name: deploy
    url: %s
  - name: crm
    url: %s
  - name: ops
    command: [%q, "-test.run=^$"]
    env: {%s: ops}
rules:
  - tool: slack.read_channel
    permission: read_history
    resource: "channel:{channel_id}"
  - tool: slack.exit
    permission: read_history
    resource: "channel:general"
  - tool: slack.post_message
    permission: post
    resource: "channel:{channel_id}"
  - prompt: slack.summarize_channel
    permission: read_history
    resource: "channel:{channel_id}"
  - tool: deploy.deploy
    permission: deploy
    resource: "environment:{environment}"
  - tool: deploy.status                 # the schema has no environment#inspect
    permission: inspect
    resource: "environment:{environment}"
  - tool: deploy.rollback                # nor environment:production#rollback
    permission: rollback
    resource: "environment:production"
  - tool: crm.get_account
    permission: view_account
    resource: "customer:{customer_id}"
  - tool: crm.get_tickets
    permission: view_tickets
    resource: "customer:{customer_id}"
  - tool: crm.get_pii
    permission: view_pii
    resource: "customer:{customer_id}"
  - uri: "crm://customers/{id}/account"
    upstream: crm
    permission: view_account
    resource: "customer:{id}"
  - uri: "crm://customers/{id}/pii"
    upstream: crm
    permission: view_pii
    resource: "customer:{id}"
`, os.Args[0], upstreamEnv, deployURL, crmURL, os.Args[0], upstreamEnv)
	for _, t := range opsTools {
		fmt.Fprintf(&b, "  - tool: ops.%s\n    permission: %s\n    resource: %q\n", t.name, t.permission, t.resource)
	}
	b.WriteString("default: deny\n")
	return b.String()
}

func newWorld(t *testing.T) *world {
	t.Helper()
	w := &world{m: mandatetest.New(t, server.Config{}), agents: map[string]string{}, tasks: map[string]string{}}
	s := &mandatetest.Setup{M: w.m}
	s.Relate(
		"channel:general#public_reader@user:*", "channel:exec-private#member@user:ceo", "channel:ops#member@user:carol",
		"environment:staging#deployer@user:alice", "environment:production#deployer@user:alice",
		"customer:c1#account_viewer@user:sam", "customer:c1#ticket_viewer@user:sam", "customer:c1#pii_viewer@user:sam",
		"repo:acme/api#writer@user:carol", "repo:acme/runbooks#reader@user:carol", "pipeline:acme/api-build#runner@user:carol",
		"registry:acme/images#pusher@user:carol", "environment:staging#deployer@user:carol",
		"customer:c1#account_viewer@user:carol", "customer:c1#ticket_viewer@user:carol",
	)
	for _, a := range []struct{ name, human, task string }{
		{"bot", "user:bob", "answer questions in #general"},
		{"ci", "user:alice", "ship the api to staging"},
		{"support", "user:sam", "answer ticket 1234"},
		{"ops", "user:carol", "rotate the api certificate"},
	} {
		w.agents[a.name], w.tasks[a.name] = s.Agent(a.human, a.task, a.name)
	}
	s.Grant(w.agents["bot"], "read_history", "channel:general")
	s.Grant(w.agents["ci"], "deploy", "environment:staging")
	s.Grant(w.agents["support"], "view_account", "customer:c1")
	s.Grant(w.agents["support"], "view_tickets", "customer:c1")
	for _, g := range [][2]string{
		{"read", "repo:acme/api"}, {"write", "repo:acme/api"}, {"execute", "pipeline:acme/api-build"}, {"push", "registry:acme/images"},
		{"deploy", "environment:staging"}, {"read", "repo:acme/runbooks"}, {"read_history", "channel:ops"}, {"post", "channel:ops"},
		{"view_account", "customer:c1"}, {"view_tickets", "customer:c1"},
	} {
		s.Grant(w.agents["ops"], g[0], g[1])
	}
	if s.Err != nil {
		t.Fatal(s.Err)
	}

	var deployURL, crmURL string
	deployURL, w.deployCalls = httpUpstream(t, "deploy")
	crmURL, w.crmCalls = httpUpstream(t, "crm")
	path := filepath.Join(t.TempDir(), "gateway.yaml")
	if err := os.WriteFile(path, []byte(gatewayConfig(deployURL, crmURL)), 0o600); err != nil {
		t.Fatal(err)
	}
	file, err := mcpgateway.LoadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	checker := newClient(t, w.m, service.RoleChecker)
	reviewer := newClient(t, w.m, service.RoleReviewer)
	// Everything the gateway starts (upstream sessions, stdio processes, their
	// watchers, the HTTP server) is gone once it has shut down.
	// (The mandate clients belong to the test: they connect first.)
	for _, c := range []*client.Client{checker, reviewer} {
		if _, err := c.HasAccess(context.Background(), "agt_none", "repo", "read"); err != nil && !strings.Contains(err.Error(), "PermissionDenied") {
			t.Fatal(err)
		}
	}
	ignore := goleak.IgnoreCurrent()
	// The test's mandate clients reconnect (in backoff) once mandate stops.
	t.Cleanup(func() {
		goleak.VerifyNone(t, ignore, goleak.IgnoreTopFunction("google.golang.org/grpc.(*addrConn).resetTransportAndUnlock"))
	})
	ctx, cancel := context.WithCancel(context.Background())
	gw, err := mcpgateway.Config{File: file, Checker: checker, Reviewer: reviewer, Secret: secret, Listen: "127.0.0.1:0", Issuer: issuer,
		Log: slog.New(slog.NewTextHandler(io.Discard, nil))}.Complete(ctx)
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { _ = gw.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	w.gw, w.base = gw, "http://"+gw.Addr()
	return w
}

func newClient(t *testing.T, m *mandatetest.Mandate, role service.Role) *client.Client {
	c, err := client.New(client.Config{Addr: m.GRPCAddr, Key: mandatetest.Keys[role], Plaintext: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// headers adds the bearer token and fixed headers to every request.
type headers struct {
	h    map[string]string
	next http.RoundTripper
}

func (h headers) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	for k, v := range h.h {
		r.Header.Set(k, v)
	}
	return h.next.RoundTrip(r)
}

// connect opens an MCP session through the gateway as agent.
func (w *world) connect(t *testing.T, agent string, hdr map[string]string) *mcp.ClientSession {
	t.Helper()
	token, err := mcpgateway.MintToken(secret, agent)
	if err != nil {
		t.Fatal(err)
	}
	h := map[string]string{"Authorization": "Bearer " + token}
	for k, v := range hdr {
		h[k] = v
	}
	c := mcp.NewClient(&mcp.Implementation{Name: "agent", Version: "test"}, nil)
	cs, err := c.Connect(context.Background(), &mcp.StreamableClientTransport{Endpoint: w.base + "/mcp", DisableStandaloneSSE: true, MaxRetries: -1,
		HTTPClient: &http.Client{Transport: headers{h, http.DefaultTransport}}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cs.Close() })
	return cs
}

func toolNames(t *testing.T, cs *mcp.ClientSession) map[string]bool {
	t.Helper()
	res, err := cs.ListTools(context.Background(), nil)
	if err != nil {
		t.Fatal(err)
	}
	if res.CacheScope != "private" || res.TTLMs != 0 {
		t.Fatalf("tools/list must be private and uncached: %+v", res.Cacheable)
	}
	out := map[string]bool{}
	for _, tl := range res.Tools {
		out[tl.Name] = true
	}
	return out
}

func call(t *testing.T, cs *mcp.ClientSession, name string, args map[string]any) *mcp.CallToolResult {
	t.Helper()
	res, err := cs.CallTool(context.Background(), &mcp.CallToolParams{Name: name, Arguments: args})
	if err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	return res
}

func text(r *mcp.CallToolResult) string {
	var b strings.Builder
	for _, c := range r.Content {
		if tc, ok := c.(*mcp.TextContent); ok {
			b.WriteString(tc.Text)
		}
	}
	return b.String()
}

func reasonCode(r *mcp.CallToolResult) string {
	m, _ := r.Meta["mandate"].(map[string]any)
	s, _ := m["reason_code"].(string)
	return s
}

func expectAllowed(t *testing.T, r *mcp.CallToolResult, want string) {
	t.Helper()
	if r.IsError || text(r) != want {
		t.Fatalf("want %q, got error=%v %q", want, r.IsError, text(r))
	}
}

func expectDenied(t *testing.T, r *mcp.CallToolResult, code string) {
	t.Helper()
	if !r.IsError || reasonCode(r) != code {
		t.Fatalf("want a tool error %s, got error=%v %q %v", code, r.IsError, text(r), r.Meta)
	}
}

func expectRefused(t *testing.T, r *mcp.CallToolResult, contains string) {
	t.Helper()
	if !r.IsError || !strings.Contains(text(r), contains) {
		t.Fatalf("want a tool error saying %q, got error=%v %q", contains, r.IsError, text(r))
	}
}

// TestGatewayAuth: the gateway is an OAuth protected resource; a missing,
// malformed or forged token is a 401 that points at its metadata.
func TestGatewayAuth(t *testing.T) {
	w := newWorld(t)
	wantMeta := fmt.Sprintf(`resource_metadata=%q`, w.base+"/.well-known/oauth-protected-resource/mcp")
	forged, _ := mcpgateway.MintToken([]byte("another-secret-0123456789abcdef-xyz"), w.agents["ops"])
	good, _ := mcpgateway.MintToken(secret, w.agents["ci"])
	other := strings.Replace(good, w.agents["ci"], w.agents["ops"], 1) // someone else's id, ci's mac
	for _, auth := range []string{"", "Bearer", "Bearer nonsense", "Bearer " + forged, "Bearer " + other, "Basic " + good} {
		req, _ := http.NewRequest("POST", w.base+"/mcp", strings.NewReader(`{"jsonrpc":"2.0","id":1,"method":"tools/list"}`))
		if auth != "" {
			req.Header.Set("Authorization", auth)
		}
		req.Header.Set("Content-Type", "application/json")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 401 || !strings.Contains(resp.Header.Get("WWW-Authenticate"), wantMeta) {
			t.Fatalf("%q: %d %q", auth, resp.StatusCode, resp.Header.Get("WWW-Authenticate"))
		}
	}
	for _, p := range []string{"/.well-known/oauth-protected-resource", "/.well-known/oauth-protected-resource/mcp"} {
		resp, err := http.Get(w.base + p)
		if err != nil {
			t.Fatal(err)
		}
		var meta map[string]any
		_ = json.NewDecoder(resp.Body).Decode(&meta)
		resp.Body.Close()
		if resp.StatusCode != 200 || meta["resource"] != w.base+"/mcp" || fmt.Sprint(meta["authorization_servers"]) != "["+issuer+"]" {
			t.Fatalf("%s: %d %v", p, resp.StatusCode, meta)
		}
	}
	resp, err := http.Get(w.base + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("healthz: %d", resp.StatusCode)
	}
}

// TestGatewayHostileRequests: malformed MCP requests get errors, never a
// crash, and the gateway goes on serving.
func TestGatewayHostileRequests(t *testing.T) {
	w := newWorld(t)
	token, _ := mcpgateway.MintToken(secret, w.agents["ci"])
	for _, body := range []string{
		`{"jsonrpc":"2.0","id":1,"method":"tools/call"}`,
		`{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{}}`,
		`{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"deploy.deploy","arguments":{"environment":"production"},"_meta":{"correlation_id":7,"reason":["x"]}}}`,
		`{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"deploy.deploy","arguments":[1,2]}}`,
		`{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"deploy.deploy","arguments":"staging"}}`,
		`{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"deploy.deploy","arguments":{"environment":{"a":1}}}}`,
		`{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"deploy.deploy","arguments":{"environment":"production"},"_meta":{"correlation_id":7}}}`,
		`{"jsonrpc":"2.0","id":1,"method":"resources/read","params":{}}`,
		`{"jsonrpc":"2.0","id":1,"method":"resources/read","params":{"uri":"crm://customers/../account"}}`,
		`{"jsonrpc":"2.0","id":1,"method":"prompts/get","params":{"name":"slack.summarize_channel"}}`,
		`{"jsonrpc":"2.0","id":1,"method":"prompts/get","params":{"name":"slack.summarize_channel","arguments":{"channel_id":"a/b"}}}`,
		`{"jsonrpc":"2.0","id":1,"method":"nonsense"}`,
		`{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"deploy.deploy","arguments":{"environment":"` + strings.Repeat("a", 5000) + `"}}}`,
		`{"jsonrpc":"2.0",`,
		`[]`,
	} {
		// Requests of MCP 2026-07-28 carry their protocol version in _meta,
		// and their method and name in headers too.
		hdr := http.Header{}
		var msg map[string]any
		if json.Unmarshal([]byte(body), &msg) == nil {
			hdr.Set("Mcp-Method", fmt.Sprint(msg["method"]))
			if params, ok := msg["params"].(map[string]any); ok {
				meta, _ := params["_meta"].(map[string]any)
				if meta == nil {
					meta = map[string]any{}
				}
				meta["io.modelcontextprotocol/protocolVersion"] = "2026-07-28"
				meta["io.modelcontextprotocol/clientCapabilities"] = map[string]any{}
				meta["io.modelcontextprotocol/clientInfo"] = map[string]any{"name": "raw", "version": "0"}
				params["_meta"] = meta
				for _, k := range []string{"name", "uri"} {
					if v, ok := params[k].(string); ok {
						hdr.Set("Mcp-Name", v)
					}
				}
				raw, _ := json.Marshal(msg)
				body = string(raw)
			}
		}
		req, _ := http.NewRequest("POST", w.base+"/mcp", strings.NewReader(body))
		req.Header = hdr
		req.Header.Set("Authorization", "Bearer "+token)
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Accept", "application/json, text/event-stream")
		req.Header.Set("Mcp-Protocol-Version", "2026-07-28")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatalf("%s: %v", body, err)
		}
		raw, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		t.Logf("%.80s → %d %.200s", body, resp.StatusCode, raw)
		if resp.StatusCode >= 500 || strings.Contains(string(raw), `"isError":false`) || strings.Contains(string(raw), "deploy called") {
			t.Fatalf("%s: %d %s", body, resp.StatusCode, raw)
		}
	}
	if w.deployCalls.Load() != 0 {
		t.Fatal("a malformed call reached the upstream")
	}
	cs := w.connect(t, w.agents["ci"], nil)
	expectAllowed(t, call(t, cs, "deploy.deploy", map[string]any{"environment": "staging"}), "deploy called environment=staging")
}

// TestGatewayUpstreamRestart: when a stdio upstream exits, the gateway
// starts it again for a later request.
func TestGatewayUpstreamRestart(t *testing.T) {
	w := newWorld(t)
	cs := w.connect(t, w.agents["bot"], nil)
	expectAllowed(t, call(t, cs, "slack.exit", nil), "exiting")
	deadline := time.Now().Add(10 * time.Second)
	for {
		res, err := cs.CallTool(context.Background(), &mcp.CallToolParams{Name: "slack.read_channel", Arguments: map[string]any{"channel_id": "general"}})
		if err == nil && !res.IsError && text(res) == "read_channel called channel_id=general" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the upstream never came back: %v %v", res, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
