package mcpgateway_test

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/mandate-dev/mandate/internal/testenv"
	"github.com/mandate-dev/mandate/service"
)

// TestFourIncidents replays the article's four incidents through the
// gateway, with a real go-sdk client, the gateway over Streamable HTTP, and
// real go-sdk upstreams over stdio (Slack, ops) and Streamable HTTP
// (deployment, CRM), against a real mandate.
func TestFourIncidents(t *testing.T) {
	w := newWorld(t)
	ctx := context.Background()

	t.Run("the bot cannot read the private channel", func(t *testing.T) {
		cs := w.connect(t, "bot", nil)
		tools := toolNames(t, cs)
		if !tools["slack.read_channel"] || tools["slack.post_message"] || tools["deploy.deploy"] || tools["crm.get_pii"] {
			t.Fatalf("the bot's tools: %v", tools)
		}
		expectAllowed(t, call(t, cs, "slack.read_channel", map[string]any{"channel_id": "general"}), "read_channel called channel_id=general")
		denied := call(t, cs, "slack.read_channel", map[string]any{"channel_id": "exec-private"})
		expectDenied(t, denied, "NO_GRANT")
		if !strings.Contains(text(denied), "What would change it") {
			t.Fatalf("a deny says what would change it: %q", text(denied))
		}
		// And nobody can get the bot a token for that channel: bob is not a
		// member, and a delegation holds only what its parent holds.
		if code, out := w.m.Form("/oauth2/token", "Bearer "+testenv.Keys[service.RoleOperator],
			testenv.ExchangeForm(w.idp.Login("bob"), "id_token", "read_history:channel:exec-private")); code == 200 {
			t.Fatalf("exchanging for the private channel: %d %v", code, out)
		}
		if code, out := w.m.Form("/oauth2/token", "Bearer "+testenv.Keys[service.RoleOperator],
			testenv.ExchangeForm(w.tokens["bot"], "jwt", "read_history:channel:exec-private")); code == 200 || out["error"] != "invalid_scope" {
			t.Fatalf("delegating the private channel: %d %v", code, out)
		}
		// The same rule covers the prompt, by name.
		prompts, err := cs.ListPrompts(ctx, nil)
		if err != nil || len(prompts.Prompts) != 1 || prompts.Prompts[0].Name != "slack.summarize_channel" {
			t.Fatalf("prompts: %v %v", prompts, err)
		}
		if _, err := cs.GetPrompt(ctx, &mcp.GetPromptParams{Name: "slack.summarize_channel", Arguments: map[string]string{"channel_id": "general"}}); err != nil {
			t.Fatalf("allowed prompt: %v", err)
		}
		if _, err := cs.GetPrompt(ctx, &mcp.GetPromptParams{Name: "slack.summarize_channel", Arguments: map[string]string{"channel_id": "exec-private"}}); err == nil || !strings.Contains(err.Error(), "NO_GRANT") {
			t.Fatalf("denied prompt: %v", err)
		}
	})

	t.Run("the CI agent cannot deploy to production", func(t *testing.T) {
		cs := w.connect(t, "ci", nil)
		if tools := toolNames(t, cs); !tools["deploy.deploy"] || tools["deploy.status"] || tools["deploy.rollback"] || tools["slack.read_channel"] {
			t.Fatalf("the CI agent's tools: %v", tools)
		}
		before := w.deployCalls.Load()
		ok := call(t, cs, "deploy.deploy", map[string]any{"environment": "staging"})
		expectAllowed(t, ok, "deploy called environment=staging")
		if info, _ := ok.Meta["io.modelcontextprotocol/serverInfo"].(map[string]any); info != nil && info["name"] != "mandate-mcp-gateway" {
			t.Fatalf("the agent talks to the gateway, not the upstream: %v", info)
		}
		expectDenied(t, call(t, cs, "deploy.deploy", map[string]any{"environment": "production"}), "NO_GRANT")
		// Bad calls are tool errors, never a crash, and never reach the upstream.
		expectRefused(t, call(t, cs, "deploy.status", map[string]any{"environment": "staging"}), "refused the check of inspect on environment:staging as invalid")
		expectRefused(t, call(t, cs, "deploy.nope", nil), "no rule names it")
		expectRefused(t, call(t, cs, "nope", nil), "no rule names it")
		expectRefused(t, call(t, cs, "deploy.deploy", map[string]any{}), "{environment}: the argument is missing")
		expectRefused(t, call(t, cs, "deploy.deploy", nil), "{environment}: the argument is missing")
		expectRefused(t, call(t, cs, "deploy.deploy", map[string]any{"environment": 7}), "must be a string")
		expectRefused(t, call(t, cs, "deploy.deploy", map[string]any{"environment": ""}), "is empty")
		expectRefused(t, call(t, cs, "deploy.deploy", map[string]any{"environment": "prod uction"}), "may hold only")
		expectRefused(t, call(t, cs, "ops.get_file", map[string]any{"owner": "acme/api", "repo": "x"}), "contains a separator")
		// A duplicate key is read once, by the gateway: the upstream gets what was checked.
		dup, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: "deploy.deploy", Arguments: json.RawMessage(`{"environment":"production","environment":"staging"}`)})
		if err != nil {
			t.Fatal(err)
		}
		expectAllowed(t, dup, "deploy called environment=staging")
		dup, err = cs.CallTool(ctx, &mcp.CallToolParams{Name: "deploy.deploy", Arguments: json.RawMessage(`{"environment":"staging","environment":"production"}`)})
		if err != nil {
			t.Fatal(err)
		}
		expectDenied(t, dup, "NO_GRANT")
		if got := w.deployCalls.Load() - before; got != 2 {
			t.Fatalf("the deployment system was called %d times; only the two allowed calls may reach it", got)
		}
	})

	t.Run("the support agent sees no PII fields", func(t *testing.T) {
		cs := w.connect(t, "support", nil)
		if tools := toolNames(t, cs); !tools["crm.get_account"] || !tools["crm.get_tickets"] || tools["crm.get_pii"] {
			t.Fatalf("the support agent's tools: %v", tools)
		}
		expectAllowed(t, call(t, cs, "crm.get_account", map[string]any{"customer_id": "c1"}), "get_account called customer_id=c1")
		expectDenied(t, call(t, cs, "crm.get_pii", map[string]any{"customer_id": "c1"}), "NO_GRANT")
		templates, err := cs.ListResourceTemplates(ctx, nil)
		if err != nil || len(templates.ResourceTemplates) != 1 || templates.ResourceTemplates[0].URITemplate != "crm://customers/{id}/account" {
			t.Fatalf("templates: %v %v", templates, err)
		}
		resources, err := cs.ListResources(ctx, nil)
		if err != nil || len(resources.Resources) != 1 || resources.Resources[0].URI != "crm://customers/c1/account" {
			t.Fatalf("resources: %v %v", resources, err)
		}
		if r, err := cs.ReadResource(ctx, &mcp.ReadResourceParams{URI: "crm://customers/c1/account"}); err != nil || r.Contents[0].Text != "record crm://customers/c1/account" {
			t.Fatalf("the account: %v %v", r, err)
		}
		before := w.crmCalls.Load()
		for _, uri := range []string{"crm://customers/c1/pii", "crm://customers/c1/secrets", "crm://customers/c%2F1/account"} {
			if _, err := cs.ReadResource(ctx, &mcp.ReadResourceParams{URI: uri}); err == nil {
				t.Fatalf("%s was read", uri)
			}
		}
		if w.crmCalls.Load() != before {
			t.Fatal("a refused read reached the CRM")
		}
	})

	t.Run("one audit query returns every call of the 14-tool agent", func(t *testing.T) {
		cs := w.connect(t, "ops", map[string]string{"X-Correlation-Id": "ops-incident-7", "X-Agent-Reason": "rotate the api certificate"})
		tools := toolNames(t, cs)
		want := map[string]bool{ // what carol's grants allow
			"get_file": true, "push_commit": true, "run_pipeline": true, "push_image": true, "deploy": true, "restart_service": true,
			"read_runbooks": true, "read_channel": true, "post_message": true, "get_account": true, "get_tickets": true,
		}
		args := map[string]any{"owner": "acme", "repo": "api", "pipeline": "acme/api-build", "registry": "acme/images",
			"environment": "staging", "channel_id": "ops", "customer_id": "c1"}
		for _, tl := range opsTools {
			if tools["ops."+tl.name] != want[tl.name] {
				t.Errorf("ops.%s listed: %v, want %v", tl.name, tools["ops."+tl.name], want[tl.name])
			}
			r := call(t, cs, "ops."+tl.name, args)
			if r.IsError == want[tl.name] {
				t.Errorf("ops.%s: error=%v %q", tl.name, r.IsError, text(r))
			}
		}
		// Every call, allowed or denied, is one record with its tool, human, task and reason.
		var recs []map[string]any
		for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(50 * time.Millisecond) {
			out := w.m.OK("GET", "/v1/audit?agent=agent:"+w.agents["ops"]+"&page_size=1000", service.RoleReviewer, nil)
			recs = recs[:0]
			all, _ := out["records"].([]any)
			for _, r := range all {
				rec := r.(map[string]any)
				if reason, _ := rec["reason"].(string); strings.HasPrefix(reason, "tools/call ") {
					recs = append(recs, rec)
				}
			}
			if len(recs) >= len(opsTools) || time.Now().After(deadline) {
				break
			}
		}
		if len(recs) != len(opsTools) {
			t.Fatalf("audit: %d tool calls, want %d", len(recs), len(opsTools))
		}
		seen := map[string]bool{}
		for _, rec := range recs {
			reason := rec["reason"].(string)
			tool := strings.Fields(reason)[1]
			seen[tool] = true
			if rec["principal"] != "user:carol" || rec["task"] != "task:"+w.tasks["ops"] || rec["correlation_id"] != "ops-incident-7" ||
				!strings.Contains(reason, "args=sha256:") || !strings.HasSuffix(reason, "; agent: rotate the api certificate") {
				t.Fatalf("audit record: %v", rec)
			}
			t.Logf("%-6s %-22s %-12s %-26s %s", rec["decision"], tool, rec["principal"], rec["resource"], rec["reason_code"])
		}
		if len(seen) != len(opsTools) {
			t.Fatalf("tools in the audit: %v", seen)
		}
	})

	t.Run("revocation stops the very next call on an open connection", func(t *testing.T) {
		ci := w.connect(t, "ci", nil)
		expectAllowed(t, call(t, ci, "deploy.deploy", map[string]any{"environment": "staging"}), "deploy called environment=staging")
		w.m.OK("POST", "/v1/tasks/"+w.tasks["ci"]+":complete", service.RoleOperator, map[string]any{})
		expectDenied(t, call(t, ci, "deploy.deploy", map[string]any{"environment": "staging"}), "TASK_COMPLETED")

		bot := w.connect(t, "bot", nil)
		expectAllowed(t, call(t, bot, "slack.read_channel", map[string]any{"channel_id": "general"}), "read_channel called channel_id=general")
		w.m.OK("POST", "/v1/agents:freeze-all", service.RoleAdmin, map[string]any{})
		expectDenied(t, call(t, bot, "slack.read_channel", map[string]any{"channel_id": "general"}), "AGENTS_FROZEN")
		// The listing of templated tools comes from the access listing, which
		// the same evaluator judges, freeze included: a frozen agent lists nothing.
		if tools := toolNames(t, bot); len(tools) != 0 {
			t.Fatalf("a frozen agent's tools: %v", tools)
		}
		w.m.OK("POST", "/v1/agents:unfreeze-all", service.RoleAdmin, map[string]any{})
		expectAllowed(t, call(t, bot, "slack.read_channel", map[string]any{"channel_id": "general"}), "read_channel called channel_id=general")

		support := w.connect(t, "support", nil)
		expectAllowed(t, call(t, support, "crm.get_account", map[string]any{"customer_id": "c1"}), "get_account called customer_id=c1")
		w.m.OK("DELETE", "/v1/agents/"+w.agents["support"], service.RoleOperator, nil)
		expectDenied(t, call(t, support, "crm.get_account", map[string]any{"customer_id": "c1"}), "AGENT_REVOKED")
	})

	t.Run("correlation from _meta and traceparent", func(t *testing.T) {
		cs := w.connect(t, "ops", map[string]string{"traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"})
		call(t, cs, "ops.get_file", map[string]any{"owner": "acme", "repo": "api"})
		if _, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: "ops.read_runbooks", Meta: mcp.Meta{"correlation_id": "from-meta"}}); err != nil {
			t.Fatal(err)
		}
		for _, corr := range []string{"4bf92f3577b34da6a3ce929d0e0e4736", "from-meta"} {
			var recs []any
			for deadline := time.Now().Add(5 * time.Second); len(recs) == 0 && time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
				recs, _ = w.m.OK("GET", "/v1/audit?correlation_id="+corr, service.RoleReviewer, nil)["records"].([]any)
			}
			if len(recs) != 1 {
				t.Fatalf("correlation %s: %v", corr, recs)
			}
		}
	})

	t.Run("metrics", func(t *testing.T) {
		resp, err := http.Get(w.base + "/metrics")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		raw, _ := io.ReadAll(resp.Body)
		body := string(raw)
		for _, want := range []string{`mandate_mcp_gateway_requests_total{method="tools/call",outcome="denied"}`, `mandate_mcp_gateway_upstream_up{upstream="slack"} 1`} {
			if !strings.Contains(body, want) {
				t.Errorf("metrics lack %s", want)
			}
		}
	})

	t.Run("without mandate, nothing is forwarded", func(t *testing.T) {
		cs := w.connect(t, "ops", nil)
		before := w.deployCalls.Load()
		w.m.Stop()
		if _, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: "deploy.deploy", Arguments: map[string]any{"environment": "staging"}}); err == nil || !strings.Contains(err.Error(), "unavailable") {
			t.Fatalf("a call with mandate stopped: %v", err)
		}
		if _, err := cs.ListTools(ctx, nil); err == nil {
			t.Fatal("tools/list with mandate stopped succeeded")
		}
		if w.deployCalls.Load() != before {
			t.Fatal("a call reached the upstream with mandate stopped")
		}
		resp, err := http.Get(w.base + "/healthz")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 503 {
			t.Fatalf("healthz with mandate stopped: %d", resp.StatusCode)
		}
	})
}
