package mcpgateway_test

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"sort"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"
)

// The upstream MCP servers of the tests: small go-sdk servers that pretend
// to be Slack, the deployment system, the CRM and a 14-tool ops server. Each
// tool answers with what it was asked, so a test sees exactly what reached
// the upstream. Slack and ops run over stdio (this test binary, re-executed
// with upstreamEnv set); deploy and CRM over Streamable HTTP.

const upstreamEnv = "MANDATE_MCPGW_TEST_UPSTREAM"

func TestMain(m *testing.M) {
	if name := os.Getenv(upstreamEnv); name != "" {
		srv := newUpstream(name, nil)
		if err := srv.Run(context.Background(), &mcp.StdioTransport{}); err != nil {
			fmt.Fprintln(os.Stderr, "upstream:", err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// opsTools are the ops server's 14 tools, with the rule each gets.
var opsTools = []struct{ name, permission, resource string }{
	{"get_file", "read", "repo:{owner}/{repo}"},
	{"push_commit", "write", "repo:{owner}/{repo}"},
	{"run_pipeline", "execute", "pipeline:{pipeline}"},
	{"push_image", "push", "registry:{registry}"},
	{"deploy", "deploy", "environment:{environment}"},
	{"restart_service", "deploy", "environment:{environment}"},
	{"deploy_production", "deploy", "environment:production"},
	{"read_runbooks", "read", "repo:acme/runbooks"},
	{"read_channel", "read_history", "channel:{channel_id}"},
	{"post_message", "post", "channel:{channel_id}"},
	{"get_account", "view_account", "customer:{customer_id}"},
	{"get_tickets", "view_tickets", "customer:{customer_id}"},
	{"get_payment", "view_payment", "customer:{customer_id}"},
	{"get_pii", "view_pii", "customer:{customer_id}"},
}

func echo(name string, calls *atomic.Int64) mcp.ToolHandlerFor[map[string]any, any] {
	return func(_ context.Context, _ *mcp.CallToolRequest, args map[string]any) (*mcp.CallToolResult, any, error) {
		if calls != nil {
			calls.Add(1)
		}
		keys := make([]string, 0, len(args))
		for k := range args {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		var b strings.Builder
		fmt.Fprintf(&b, "%s called", name)
		for _, k := range keys {
			fmt.Fprintf(&b, " %s=%v", k, args[k])
		}
		return &mcp.CallToolResult{Content: []mcp.Content{&mcp.TextContent{Text: b.String()}}}, nil, nil
	}
}

func tool(s *mcp.Server, name string, calls *atomic.Int64) {
	mcp.AddTool(s, &mcp.Tool{Name: name, Description: name}, echo(name, calls))
}

// newUpstream builds one of the pretend servers; calls counts tool calls
// that reached it (nil for stdio ones, which run in another process).
func newUpstream(name string, calls *atomic.Int64) *mcp.Server {
	s := mcp.NewServer(&mcp.Implementation{Name: name, Version: "test"}, nil)
	switch name {
	case "slack":
		tool(s, "read_channel", calls)
		tool(s, "post_message", calls)
		// exit ends the upstream process, as a crash would.
		mcp.AddTool(s, &mcp.Tool{Name: "exit"}, func(context.Context, *mcp.CallToolRequest, map[string]any) (*mcp.CallToolResult, any, error) {
			go func() { time.Sleep(10 * time.Millisecond); os.Exit(3) }()
			return &mcp.CallToolResult{Content: []mcp.Content{&mcp.TextContent{Text: "exiting"}}}, nil, nil
		})
		s.AddPrompt(&mcp.Prompt{Name: "summarize_channel", Arguments: []*mcp.PromptArgument{{Name: "channel_id", Required: true}}},
			func(_ context.Context, r *mcp.GetPromptRequest) (*mcp.GetPromptResult, error) {
				return &mcp.GetPromptResult{Messages: []*mcp.PromptMessage{{Role: "user", Content: &mcp.TextContent{Text: "summarize " + r.Params.Arguments["channel_id"]}}}}, nil
			})
	case "deploy":
		tool(s, "deploy", calls)
		tool(s, "status", calls)
		tool(s, "rollback", calls)
	case "crm":
		tool(s, "get_account", calls)
		tool(s, "get_tickets", calls)
		tool(s, "get_pii", calls)
		for _, field := range []string{"account", "pii"} {
			s.AddResourceTemplate(&mcp.ResourceTemplate{Name: field, URITemplate: "crm://customers/{id}/" + field},
				func(_ context.Context, r *mcp.ReadResourceRequest) (*mcp.ReadResourceResult, error) {
					if calls != nil {
						calls.Add(1)
					}
					return &mcp.ReadResourceResult{Contents: []*mcp.ResourceContents{{URI: r.Params.URI, Text: "record " + r.Params.URI}}}, nil
				})
		}
		s.AddResource(&mcp.Resource{Name: "c1-account", URI: "crm://customers/c1/account"}, func(_ context.Context, r *mcp.ReadResourceRequest) (*mcp.ReadResourceResult, error) {
			return &mcp.ReadResourceResult{Contents: []*mcp.ResourceContents{{URI: r.Params.URI, Text: "record " + r.Params.URI}}}, nil
		})
		s.AddResource(&mcp.Resource{Name: "c1-pii", URI: "crm://customers/c1/pii"}, func(_ context.Context, r *mcp.ReadResourceRequest) (*mcp.ReadResourceResult, error) {
			return &mcp.ReadResourceResult{Contents: []*mcp.ResourceContents{{URI: r.Params.URI, Text: "record " + r.Params.URI}}}, nil
		})
	case "ops":
		for _, t := range opsTools {
			tool(s, t.name, calls)
		}
	default:
		panic("no upstream " + name)
	}
	return s
}

// httpUpstream serves a pretend server over Streamable HTTP.
func httpUpstream(t *testing.T, name string) (url string, calls *atomic.Int64) {
	calls = &atomic.Int64{}
	srv := newUpstream(name, calls)
	ts := httptest.NewServer(mcp.NewStreamableHTTPHandler(func(*http.Request) *mcp.Server { return srv }, &mcp.StreamableHTTPOptions{Stateless: true, JSONResponse: true}))
	t.Cleanup(ts.Close)
	return ts.URL + "/mcp", calls
}
