package mcpgateway_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"
	"go.uber.org/goleak"

	"github.com/mandate-dev/mandate/client"
	"github.com/mandate-dev/mandate/client/mcpgateway"
	"github.com/mandate-dev/mandate/credential"
	"github.com/mandate-dev/mandate/internal/testenv"
	"github.com/mandate-dev/mandate/server"
	"github.com/mandate-dev/mandate/service"
)

// world is a running mandate with an in-test OIDC issuer, the pretend
// upstreams, a gateway in front, and one agent token per incident, each
// obtained by token exchange for the gateway's resource.
type world struct {
	m           *testenv.Server
	idp         *testenv.IdP
	signer      *testenv.Signer // signs as mandate does
	file        *mcpgateway.File
	client      *client.Client
	gw          *mcpgateway.Gateway
	base        string // the gateway's base URL
	deployCalls *atomic.Int64
	crmCalls    *atomic.Int64
	agents      map[string]string // name → bare agent id
	tasks       map[string]string // name → bare task id
	tokens      map[string]string // name → the agent's token
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

// opsScope is what carol's ops agent is granted at the exchange.
const opsScope = "read:repo:acme/api write:repo:acme/api execute:pipeline:acme/api-build push:registry:acme/images " +
	"deploy:environment:staging read:repo:acme/runbooks read_history:channel:ops post:channel:ops " +
	"view_account:customer:c1 view_tickets:customer:c1"

func newWorld(t *testing.T) *world {
	t.Helper()
	w := &world{idp: testenv.StartIdP(t), agents: map[string]string{}, tasks: map[string]string{}, tokens: map[string]string{}}
	cfg, signer := testenv.WithSigningKey(t, testenv.WithIdP(server.Config{}, w.idp))
	w.m, w.signer = testenv.Start(t, cfg), signer
	var ups []map[string]string
	for _, r := range []string{
		"channel:general#public_reader@user:*", "channel:exec-private#member@user:ceo", "channel:ops#member@user:carol",
		"environment:staging#deployer@user:alice", "environment:production#deployer@user:alice",
		"customer:c1#account_viewer@user:sam", "customer:c1#ticket_viewer@user:sam", "customer:c1#pii_viewer@user:sam",
		"repo:acme/api#writer@user:carol", "repo:acme/runbooks#reader@user:carol", "pipeline:acme/api-build#runner@user:carol",
		"registry:acme/images#pusher@user:carol", "environment:staging#deployer@user:carol",
		"customer:c1#account_viewer@user:carol", "customer:c1#ticket_viewer@user:carol",
	} {
		ups = append(ups, map[string]string{"operation": "TOUCH", "relationship": r})
	}
	w.m.OK("POST", "/v1/relationships:write", service.RoleAdmin, map[string]any{"updates": ups})

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
	w.file = file
	// One key with the gateway role: Check, CheckBulk, ListAgentAccess, Explain.
	w.client = newClient(t, w.m, testenv.Keys[service.RoleGateway])
	// Everything the gateway starts (upstream sessions, stdio processes, their
	// watchers, the HTTP server) is gone once it has shut down.
	// (The mandate client belongs to the test: it connects first.)
	if _, err := w.client.HasAccess(context.Background(), "agt_none", "repo", "read"); err != nil {
		t.Fatal(err)
	}
	// So is mandate's connection to the OIDC issuer, made at the first exchange.
	w.m.AgentToken(w.idp, "alice", "deploy:environment:staging", nil)
	ignore := goleak.IgnoreCurrent()
	// The test's mandate client reconnects (in backoff) once mandate stops.
	t.Cleanup(func() {
		// The test's own keep-alive connections (to mandate, to the issuer) are not the gateway's.
		http.DefaultClient.CloseIdleConnections()
		goleak.VerifyNone(t, ignore, goleak.IgnoreTopFunction("google.golang.org/grpc.(*addrConn).resetTransportAndUnlock"))
	})
	w.gw, w.base = w.startGateway(t, mcpgateway.Config{})

	for _, a := range []struct{ name, human, task, scope string }{
		{"bot", "bob", "answer questions in #general", "read_history:channel:general"},
		{"ci", "alice", "ship the api to staging", "deploy:environment:staging"},
		{"support", "sam", "answer ticket 1234", "view_account:customer:c1 view_tickets:customer:c1"},
		{"ops", "carol", "rotate the api certificate", opsScope},
	} {
		token, agent, task := w.m.AgentToken(w.idp, a.human, a.scope, url.Values{"resource": {w.gw.Resource()}, "agent_name": {a.name}, "task_description": {a.task}})
		w.tokens[a.name], w.agents[a.name], w.tasks[a.name] = token, strings.TrimPrefix(agent, "agent:"), strings.TrimPrefix(task, "task:")
	}
	return w
}

// startGateway runs a gateway on the world's config and client until the
// test ends; cfg's non-zero fields override.
func (w *world) startGateway(t *testing.T, cfg mcpgateway.Config) (*mcpgateway.Gateway, string) {
	t.Helper()
	cfg.File, cfg.Client, cfg.Listen = w.file, w.client, "127.0.0.1:0"
	if cfg.Issuer == "" {
		cfg.Issuer = w.m.Base
	}
	cfg.Log = slog.New(slog.NewTextHandler(io.Discard, nil))
	ctx, cancel := context.WithCancel(context.Background())
	gw, err := cfg.Complete(ctx)
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { _ = gw.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	return gw, "http://" + gw.Addr()
}

func newClient(t *testing.T, m *testenv.Server, key string) *client.Client {
	c, err := client.New(client.Config{Addr: m.Srv.GRPCAddr(), Key: key, Plaintext: true})
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

// connect opens an MCP session through the gateway as the named agent.
func (w *world) connect(t *testing.T, name string, hdr map[string]string) *mcp.ClientSession {
	t.Helper()
	return connectWith(t, w.base, w.tokens[name], hdr)
}

// connectWith opens an MCP session to the gateway at base with token.
func connectWith(t *testing.T, base, token string, hdr map[string]string) *mcp.ClientSession {
	t.Helper()
	h := map[string]string{"Authorization": "Bearer " + token}
	for k, v := range hdr {
		h[k] = v
	}
	c := mcp.NewClient(&mcp.Implementation{Name: "agent", Version: "test"}, nil)
	cs, err := c.Connect(context.Background(), &mcp.StreamableClientTransport{Endpoint: base + "/mcp", DisableStandaloneSSE: true, MaxRetries: -1,
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

// TestGatewayAuth: the gateway is an OAuth protected resource for mandate's
// agent tokens; a missing, malformed, forged or expired token, a token of
// another issuer or for another resource, and a decision receipt are each a
// 401 that points at its metadata.
func TestGatewayAuth(t *testing.T) {
	w := newWorld(t)
	wantMeta := fmt.Sprintf(`resource_metadata=%q`, w.base+"/.well-known/oauth-protected-resource/mcp")
	good := w.tokens["ci"]
	parts := strings.Split(good, ".")
	forged := parts[0] + "." + parts[1] + "." + strings.Repeat("A", len(parts[2]))
	expired := w.signer.Token(t, w.m.Base, time.Now().Add(-time.Hour), credential.IssueInput{Subject: "user:alice",
		Agents: []string{"agent:" + w.agents["ci"]}, Task: "task:" + w.tasks["ci"], Audience: w.gw.Resource()})
	otherIssuer := w.signer.Token(t, "https://evil.example.test", time.Now(), credential.IssueInput{Subject: "user:alice",
		Agents: []string{"agent:" + w.agents["ci"]}, Task: "task:" + w.tasks["ci"], Audience: w.gw.Resource()})
	bound := w.signer.Token(t, w.m.Base, time.Now(), credential.IssueInput{Subject: "user:alice", Agents: []string{"agent:" + w.agents["ci"]},
		Task: "task:" + w.tasks["ci"], Audience: w.gw.Resource(), CertThumbprint: credential.CertThumbprint([]byte("the agent's certificate"))})
	other, _, _ := w.m.AgentToken(w.idp, "alice", "deploy:environment:staging", url.Values{"resource": {"https://ci.example.test/mcp"}})
	noAud, _, _ := w.m.AgentToken(w.idp, "alice", "deploy:environment:staging", nil)
	receipt := w.m.OK("POST", "/v1/check", service.RoleChecker, map[string]any{"subject_token": good, "permission": "deploy",
		"resource": "environment:staging", "receipt": true})["receipt"].(string)
	for _, tc := range []struct{ name, auth, error string }{
		{"no token", "", ""},
		{"a bare Bearer", "Bearer", `error="invalid_request"`},
		{"basic", "Basic " + good, `error="invalid_request"`},
		{"nonsense", "Bearer nonsense", `error="invalid_token"`},
		{"the transitional token", "Bearer mgw1." + w.agents["ci"] + ".abc", `error="invalid_token"`},
		{"forged", "Bearer " + forged, `error="invalid_token"`},
		{"expired", "Bearer " + expired, `error="invalid_token"`},
		{"another issuer", "Bearer " + otherIssuer, `error="invalid_token"`},
		{"another resource", "Bearer " + other, `error="invalid_token"`},
		{"mandate's own audience", "Bearer " + noAud, `error="invalid_token"`},
		{"a decision receipt", "Bearer " + receipt, `error="invalid_token"`},
		{"bound to a certificate not presented", "Bearer " + bound, `error="invalid_token"`},
	} {
		req, _ := http.NewRequest("POST", w.base+"/mcp", strings.NewReader(`{"jsonrpc":"2.0","id":1,"method":"tools/list"}`))
		if tc.auth != "" {
			req.Header.Set("Authorization", tc.auth)
		}
		req.Header.Set("Content-Type", "application/json")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		challenge := resp.Header.Get("WWW-Authenticate")
		if resp.StatusCode != 401 || !strings.HasPrefix(challenge, "Bearer "+wantMeta) || !strings.Contains(challenge, tc.error) || (tc.error == "" && strings.Contains(challenge, "error=")) {
			t.Errorf("%s: %d %q", tc.name, resp.StatusCode, challenge)
		}
	}
	// The audience is the gateway's: a token for another resource opens nothing.
	if w.deployCalls.Load() != 0 {
		t.Fatal("a refused token reached an upstream")
	}
	for _, p := range []string{"/.well-known/oauth-protected-resource", "/.well-known/oauth-protected-resource/mcp"} {
		resp, err := http.Get(w.base + p)
		if err != nil {
			t.Fatal(err)
		}
		var meta map[string]any
		_ = json.NewDecoder(resp.Body).Decode(&meta)
		resp.Body.Close()
		if resp.StatusCode != 200 || meta["resource"] != w.gw.Resource() || meta["resource"] != w.base+"/mcp" || fmt.Sprint(meta["authorization_servers"]) != "["+w.m.Base+"]" {
			t.Fatalf("%s: %d %v", p, resp.StatusCode, meta)
		}
	}
	// mandate's discovery names the JWKS the gateway reads by default.
	out := w.m.OK("GET", "/.well-known/oauth-authorization-server", "", nil)
	if out["issuer"] != w.m.Base || out["jwks_uri"] != w.m.Base+"/.well-known/jwks.json" {
		t.Fatalf("mandate's metadata: %v", out)
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

// TestGatewayFailsClosedOnKeys: when mandate's signing keys cannot be
// fetched the gateway answers 503, and a token the gateway accepts but
// mandate refuses (its key is not mandate's) is a tool error: either way
// nothing is forwarded.
func TestGatewayFailsClosedOnKeys(t *testing.T) {
	w := newWorld(t)
	// A JWKS that is not mandate's: it publishes a key mandate never signs with.
	_, rogue := testenv.WithSigningKey(t, server.Config{})
	jwks := httptest.NewServer(http.HandlerFunc(func(rw http.ResponseWriter, _ *http.Request) { _ = json.NewEncoder(rw).Encode(rogue.JWKS()) }))
	defer jwks.Close()
	gw, base := w.startGateway(t, mcpgateway.Config{JWKSURL: jwks.URL})
	tok := rogue.Token(t, w.m.Base, time.Now(), credential.IssueInput{Subject: "user:alice", Agents: []string{"agent:" + w.agents["ci"]},
		Task: "task:" + w.tasks["ci"], Audience: gw.Resource()})
	cs := connectWith(t, base, tok, nil)
	res := call(t, cs, "deploy.deploy", map[string]any{"environment": "staging"})
	expectDenied(t, res, "INVALID_TOKEN")
	if tools := toolNames(t, cs); len(tools) != 0 {
		t.Fatalf("the tools of a token mandate refuses: %v", tools)
	}

	dead := httptest.NewServer(http.NotFoundHandler())
	dead.Close()
	_, base = w.startGateway(t, mcpgateway.Config{JWKSURL: dead.URL})
	req, _ := http.NewRequest("POST", base+"/mcp", strings.NewReader(`{"jsonrpc":"2.0","id":1,"method":"tools/list"}`))
	req.Header.Set("Authorization", "Bearer "+w.tokens["ci"])
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 503 {
		t.Fatalf("mandate's keys unreachable: %d", resp.StatusCode)
	}
	if w.deployCalls.Load() != 0 {
		t.Fatal("a call reached the upstream")
	}
}

// TestGatewaySubAgent: a sub-agent's token (delegated by the ops agent with
// a narrower scope, for the gateway) lists and calls only what it holds
// itself; revoking its parent stops its very next call on an open
// connection, as completing the task does for the parent's.
func TestGatewaySubAgent(t *testing.T) {
	w := newWorld(t)
	subToken, subAgent := w.m.SubAgentToken(w.tokens["ops"], "read:repo:acme/runbooks read_history:channel:ops", url.Values{"resource": {w.gw.Resource()}, "agent_name": {"runbook-reader"}})
	sub := connectWith(t, w.base, subToken, map[string]string{"X-Correlation-Id": "sub-1"})
	// What its two grants reach: templated tools of those types, and the
	// fixed runbooks; nothing its parent holds beyond them.
	tools := toolNames(t, sub)
	want := map[string]bool{"ops.read_runbooks": true, "ops.get_file": true, "ops.read_channel": true, "slack.read_channel": true}
	if len(tools) != len(want) {
		t.Fatalf("the sub-agent's tools: %v, want %v", tools, want)
	}
	for name := range want {
		if !tools[name] {
			t.Fatalf("the sub-agent's tools: %v, want %v", tools, want)
		}
	}
	expectAllowed(t, call(t, sub, "ops.read_runbooks", nil), "read_runbooks called")
	expectDenied(t, call(t, sub, "ops.push_commit", map[string]any{"owner": "acme", "repo": "api"}), "NO_GRANT")
	// The audit record names the sub-agent and its chain up to carol.
	recs := w.m.OK("GET", "/v1/audit?correlation_id=sub-1", service.RoleReviewer, nil)["records"].([]any)
	if len(recs) == 0 || recs[0].(map[string]any)["subject"] != subAgent || recs[0].(map[string]any)["principal"] != "user:carol" {
		t.Fatalf("the sub-agent's audit: %v", recs)
	}
	parent := w.connect(t, "ops", nil)
	expectAllowed(t, call(t, parent, "ops.read_runbooks", nil), "read_runbooks called")
	w.m.OK("DELETE", "/v1/agents/"+w.agents["ops"], service.RoleOperator, nil)
	expectDenied(t, call(t, sub, "ops.read_runbooks", nil), "AGENT_REVOKED")
	expectDenied(t, call(t, parent, "ops.read_runbooks", nil), "AGENT_REVOKED")
	if tools := toolNames(t, sub); len(tools) != 0 {
		t.Fatalf("a revoked sub-agent's tools: %v", tools)
	}
}

// TestGatewayHostileRequests: malformed MCP requests get errors, never a
// crash, and the gateway goes on serving.
func TestGatewayHostileRequests(t *testing.T) {
	w := newWorld(t)
	token := w.tokens["ci"]
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
	cs := w.connect(t, "ci", nil)
	expectAllowed(t, call(t, cs, "deploy.deploy", map[string]any{"environment": "staging"}), "deploy called environment=staging")
}

// TestGatewayUpstreamRestart: when a stdio upstream exits, the gateway
// starts it again for a later request.
func TestGatewayUpstreamRestart(t *testing.T) {
	w := newWorld(t)
	cs := w.connect(t, "bot", nil)
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
