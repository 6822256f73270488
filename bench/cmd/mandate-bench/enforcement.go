package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/mandate-dev/mandate/bench"
	"github.com/mandate-dev/mandate/client"
	"github.com/mandate-dev/mandate/client/mcpgateway"
	"github.com/mandate-dev/mandate/client/middleware"
	"github.com/mandate-dev/mandate/server"
)

// Enforcement overhead: what the MCP gateway adds to a tool call, and what
// the HTTP middleware adds to a request, each against the same call made
// directly, interleaved in one loop on a warm decision cache (the hot set).

// serve runs h on a fresh localhost port until the returned stop.
func serve(h http.Handler) (string, func()) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	must(err)
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = srv.Serve(lis) }()
	return lis.Addr().String(), func() { _ = srv.Close() }
}

type bearer struct {
	token string
	next  http.RoundTripper
}

func (b bearer) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	r.Header.Set("Authorization", "Bearer "+b.token)
	return b.next.RoundTrip(r)
}

func mcpSession(ctx context.Context, url, token string) *mcp.ClientSession {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.MaxIdleConnsPerHost = 64
	var rt http.RoundTripper = tr
	if token != "" {
		rt = bearer{token, tr}
	}
	cs, err := mcp.NewClient(&mcp.Implementation{Name: "bench", Version: "v1"}, nil).Connect(ctx,
		&mcp.StreamableClientTransport{Endpoint: url, DisableStandaloneSSE: true, HTTPClient: &http.Client{Transport: rt}}, nil)
	must(err)
	return cs
}

// benchToken exchanges alice's ID token for an agent token holding read on
// the first tokenScope repos of the hot set, for resource.
func benchToken(ctx context.Context, srv *server.Server, idp *benchIdP, resource string) string {
	scope := make([]string, tokenScope)
	for i := range scope {
		scope[i] = fmt.Sprintf("read:repo:bench/hot%d", i)
	}
	form := url.Values{"grant_type": {"urn:ietf:params:oauth:grant-type:token-exchange"}, "subject_token": {idp.login("alice")},
		"subject_token_type": {"urn:ietf:params:oauth:token-type:id_token"}, "scope": {strings.Join(scope, " ")}, "resource": {resource}}
	return exchangeForToken(ctx, &http.Client{}, "http://"+srv.HTTPAddr(), form).token
}

// gatewayOverhead: the same tool call on the same upstream, direct and
// through the gateway (which verifies the agent's token, remembered, and
// checks the call with mandate by that token, cached), interleaved.
func gatewayOverhead(ctx context.Context, srv *server.Server, idp *benchIdP, warmup, d time.Duration) []bench.Result {
	upstream := mcp.NewServer(&mcp.Implementation{Name: "repos", Version: "v1"}, nil)
	mcp.AddTool(upstream, &mcp.Tool{Name: "get_file"}, func(_ context.Context, _ *mcp.CallToolRequest, in map[string]any) (*mcp.CallToolResult, any, error) {
		return &mcp.CallToolResult{Content: []mcp.Content{&mcp.TextContent{Text: fmt.Sprint(in["owner"], "/", in["repo"])}}}, nil, nil
	})
	upAddr, stopUp := serve(mcp.NewStreamableHTTPHandler(func(*http.Request) *mcp.Server { return upstream }, &mcp.StreamableHTTPOptions{Stateless: true, JSONResponse: true}))
	defer stopUp()
	file, err := mcpgateway.Parse([]byte(fmt.Sprintf(`upstreams:
  - name: repos
    url: http://%s/mcp
rules:
  - tool: repos.get_file
    permission: read
    resource: "repo:{owner}/{repo}"
`, upAddr)))
	must(err)
	c, err := client.New(client.Config{Addr: srv.GRPCAddr(), Key: gatewayKey, Plaintext: true})
	must(err)
	defer c.Close()
	gctx, cancel := context.WithCancel(ctx)
	gw, err := mcpgateway.Config{File: file, Client: c, Issuer: "http://" + srv.HTTPAddr(), Listen: "127.0.0.1:0", Log: slog.New(slog.NewTextHandler(io.Discard, nil))}.Complete(gctx)
	must(err)
	done := make(chan struct{})
	go func() { _ = gw.Run(gctx); close(done) }()
	defer func() { cancel(); <-done }()
	token := benchToken(ctx, srv, idp, gw.Resource())
	direct := mcpSession(ctx, "http://"+upAddr+"/mcp", "")
	defer direct.Close()
	via := mcpSession(ctx, "http://"+gw.Addr()+"/mcp", token)
	defer via.Close()
	op := func(cs *mcp.ClientSession, prefix string) bench.Op {
		return func(ctx context.Context, w, i int) error {
			repo := fmt.Sprintf("hot%d", (w*7919+i)%tokenScope)
			res, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: prefix + "get_file", Arguments: map[string]any{"owner": "bench", "repo": repo}})
			if err != nil {
				return err
			}
			if res.IsError || len(res.Content) != 1 || res.Content[0].(*mcp.TextContent).Text != "bench/"+repo {
				return errors.New("unexpected tool result")
			}
			return nil
		}
	}
	var out []bench.Result
	for _, n := range []int{1, 8} {
		a, b := interleaved(ctx, "mcp-direct", "mcp-gateway", n, warmup, d, op(direct, ""), op(via, "repos."))
		a.Description = "MCP tools/call straight to the upstream (Streamable HTTP), interleaved with the next"
		b.Description = "the same tools/call through mcp-gateway: agent token verified (remembered), rule, mandate Check by subject_token (cached), forward"
		out = append(out, a, b)
	}
	return out
}

// middlewareOverhead: the same GET on a bare handler and on the same handler
// behind client/middleware (the agent's bearer token, audience, path
// template, mandate Check by subject_token, cached), interleaved.
func middlewareOverhead(ctx context.Context, srv *server.Server, idp *benchIdP, warmup, d time.Duration) []bench.Result {
	c, err := client.New(client.Config{Addr: srv.GRPCAddr(), Key: checkerKey, Plaintext: true})
	must(err)
	defer c.Close()
	const audience = "https://repos.bench.test"
	mw, err := middleware.HTTP(middleware.HTTPOptions{Checker: c, Resolve: middleware.PathTemplate("read", "repo:{owner}/{name}"), Audience: audience})
	must(err)
	token := benchToken(ctx, srv, idp, audience)
	handler := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, r.PathValue("owner")+"/"+r.PathValue("name"))
	})
	mux := http.NewServeMux()
	mux.Handle("GET /bare/{owner}/{name}", handler)
	mux.Handle("GET /guarded/{owner}/{name}", mw(handler))
	addr, stop := serve(mux)
	defer stop()
	hc := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64}}
	op := func(prefix string) bench.Op {
		return func(ctx context.Context, w, i int) error {
			repo := fmt.Sprintf("hot%d", (w*7919+i)%tokenScope)
			req, _ := http.NewRequestWithContext(ctx, "GET", "http://"+addr+prefix+"/bench/"+repo, nil)
			req.Header.Set("Authorization", "Bearer "+token)
			resp, err := hc.Do(req)
			if err != nil {
				return err
			}
			defer resp.Body.Close()
			body, _ := io.ReadAll(resp.Body)
			if resp.StatusCode != 200 || string(body) != "bench/"+repo {
				return fmt.Errorf("status %d %q", resp.StatusCode, body)
			}
			return nil
		}
	}
	var out []bench.Result
	for _, n := range []int{1, 8} {
		a, b := interleaved(ctx, "http-bare", "http-middleware", n, warmup, d, op("/bare"), op("/guarded"))
		a.Description = "net/http GET on a bare handler, interleaved with the next"
		b.Description = "the same GET behind client/middleware: bearer token, audience, path template, mandate Check by subject_token (cached)"
		out = append(out, a, b)
	}
	return out
}

// overheadLines reports p50 added, against the targets of issue 13.
func overheadLines(rs []bench.Result) []string {
	var out []string
	for _, p := range []struct {
		base, with string
		target     float64
	}{{"mcp-direct", "mcp-gateway", 1}, {"http-bare", "http-middleware", 0.3}} {
		for _, n := range []int{1, 8} {
			b, w := find(rs, p.base, n), find(rs, p.with, n)
			if b == nil || w == nil {
				continue
			}
			out = append(out, fmt.Sprintf("%s: p50 added %.3f ms at %d in flight (%.3f → %.3f; target <= %.1f ms at 1 in flight)", p.with, w.P50ms-b.P50ms, n, b.P50ms, w.P50ms, p.target))
		}
	}
	return out
}
