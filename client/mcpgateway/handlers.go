package mcpgateway

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/modelcontextprotocol/go-sdk/jsonrpc"
	"github.com/modelcontextprotocol/go-sdk/mcp"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/mandate-dev/mandate/client"
	"github.com/mandate-dev/mandate/client/middleware"
)

// intercept answers every tools, resources and prompts method itself; the
// SDK's server handles the rest (initialize, ping).
func (g *Gateway) intercept(next mcp.MethodHandler) mcp.MethodHandler {
	return func(ctx context.Context, method string, req mcp.Request) (mcp.Result, error) {
		switch method {
		case "tools/list", "tools/call", "resources/list", "resources/templates/list", "resources/read", "prompts/list", "prompts/get":
		default:
			return next(ctx, method, req)
		}
		c, err := g.caller(req, method)
		if err != nil {
			return nil, err
		}
		switch r := req.(type) {
		case *mcp.ListToolsRequest:
			return g.listTools(ctx, c)
		case *mcp.CallToolRequest:
			return g.callTool(ctx, c, r.Params)
		case *mcp.ListResourcesRequest:
			return g.listResources(ctx, c)
		case *mcp.ListResourceTemplatesRequest:
			return g.listResourceTemplates(ctx, c)
		case *mcp.ReadResourceRequest:
			return g.readResource(ctx, c, r.Params)
		case *mcp.ListPromptsRequest:
			return g.listPrompts(ctx, c)
		case *mcp.GetPromptRequest:
			return g.getPrompt(ctx, c, r.Params)
		}
		return nil, &jsonrpc.Error{Code: jsonrpc.CodeInternalError, Message: "unexpected request type for " + method}
	}
}

// caller is who sends one request, and what travels with its checks.
type caller struct {
	method  string
	subject string      // "agent:<id>", from the verified bearer token
	token   string      // the agent's token: every check sends it as subject_token
	header  http.Header // never nil
	stated  string      // the agent's stated reason (X-Agent-Reason or _meta)
}

func (g *Gateway) caller(req mcp.Request, method string) (*caller, error) {
	extra := req.GetExtra()
	var t agentToken
	if extra != nil && extra.TokenInfo != nil {
		t, _ = extra.TokenInfo.Extra[tokenExtra].(agentToken)
	}
	if t.claims == nil || t.raw == "" {
		// bearer guards /mcp, so this is a wiring error; refuse.
		return nil, &jsonrpc.Error{Code: jsonrpc.CodeInvalidRequest, Message: "no agent: a bearer token is required"}
	}
	c := &caller{method: method, subject: t.claims.Agent(), token: t.raw, header: extra.Header}
	if c.header == nil {
		c.header = http.Header{}
	}
	c.stated = strings.TrimSpace(c.header.Get("X-Agent-Reason"))
	return c, nil
}

// correlation is X-Correlation-Id, else _meta's correlation_id, else the
// trace id of traceparent (MCP 2026-07-28 has no sessions to correlate by).
func (c *caller) correlation(meta mcp.Meta) string {
	if v := strings.TrimSpace(c.header.Get("X-Correlation-Id")); v != "" {
		return truncate(v, 256)
	}
	for _, k := range []string{"correlation_id", "correlationId"} {
		if v, ok := meta[k].(string); ok && strings.TrimSpace(v) != "" {
			return truncate(strings.TrimSpace(v), 256)
		}
	}
	return middleware.Correlation(func(name string) string {
		if name == "traceparent" {
			if v := c.header.Get("traceparent"); v != "" {
				return v
			}
			v, _ := meta["traceparent"].(string)
			return v
		}
		return ""
	})
}

// reason is what mandate audits as the check's reason: the method, the
// tool (or URI, or prompt), a digest of the arguments, and the agent's own
// stated reason.
func (c *caller) reason(what string, args []byte, meta mcp.Meta) string {
	stated := c.stated
	if v, ok := meta["reason"].(string); ok && stated == "" {
		stated = strings.TrimSpace(v)
	}
	s := c.method + " " + what
	if args != nil {
		sum := sha256.Sum256(args)
		s += " args=sha256:" + hex.EncodeToString(sum[:8])
	}
	if stated != "" {
		s += "; agent: " + stated
	}
	return truncate(s, middleware.MaxReasonLen)
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n]
}

// checkError is the JSON-RPC error of a resource read or prompt whose check
// failed: the token refused, the check refused as invalid, or mandate
// unreachable. Nothing is forwarded.
func (g *Gateway) checkError(c *caller, what string, err error) error {
	switch {
	case client.IsInvalidToken(err):
		g.tokenRefused(c, err)
		return &jsonrpc.Error{Code: jsonrpc.CodeInvalidParams, Message: fmt.Sprintf("mandate refused the agent's token (%s): %v", client.InvalidToken, err)}
	case client.IsInvalid(err):
		g.metrics.requests.WithLabelValues(c.method, "refused").Inc()
		return &jsonrpc.Error{Code: jsonrpc.CodeInvalidParams, Message: fmt.Sprintf("%s: mandate refused the check as invalid", what)}
	}
	return g.errUnavailable(c, err)
}

// errUnavailable is what a request gets when mandate cannot answer: the
// request fails and nothing is forwarded.
func (g *Gateway) errUnavailable(c *caller, err error) error {
	g.metrics.requests.WithLabelValues(c.method, "unavailable").Inc()
	g.cfg.Log.Error("mcp-gateway: mandate could not answer; refusing", "method", c.method, "agent", c.subject, "err", err)
	return &jsonrpc.Error{Code: jsonrpc.CodeInternalError, Message: "authorization is unavailable: mandate could not be reached, and the request was not forwarded"}
}

// check asks mandate about one request, with the agent's own token, and
// times it. mandate verifies the token and its chain on every check.
func (g *Gateway) check(ctx context.Context, c *caller, permission, resource, corr, reason string) (client.Decision, error) {
	start := time.Now()
	d, err := g.cfg.Client.Check(ctx, client.Request{SubjectToken: c.token, Permission: permission, Resource: resource, CorrelationID: corr, Reason: reason})
	g.metrics.check.WithLabelValues(c.method).Observe(time.Since(start).Seconds())
	return d, err
}

// reviewRefused notes that mandate refused the key a review call (a checker
// key rather than a gateway key), once, and reports whether err was that.
func (g *Gateway) reviewRefused(err error) bool {
	if status.Code(err) != codes.PermissionDenied {
		return false
	}
	if !g.noReview.Swap(true) {
		g.cfg.Log.Warn("mcp-gateway: mandate refuses this key ListAgentAccess and Explain; use a gateway key. Until then templated tools are left out of lists and denies are not explained", "err", err)
	}
	return true
}

// tokenRefused is mandate refusing the agent's token the gateway had
// verified (its key was withdrawn, or it expired in between): the request
// is refused, never forwarded.
func (g *Gateway) tokenRefused(c *caller, err error) {
	g.metrics.requests.WithLabelValues(c.method, "unauthenticated").Inc()
	g.cfg.Log.Info("mcp-gateway: mandate refused the agent's token", "method", c.method, "agent", c.subject, "err", err)
}

// denial says why mandate denied, and what would change it (from Explain).
func (g *Gateway) denial(ctx context.Context, c *caller, what, permission, resource string, d client.Decision) (string, map[string]any) {
	g.metrics.requests.WithLabelValues(c.method, "denied").Inc()
	g.cfg.Log.Info("mcp-gateway: denied", "method", c.method, "what", what, "agent", c.subject, "permission", permission, "resource", resource, "reason_code", d.ReasonCode, "decision_id", d.DecisionID)
	msg := fmt.Sprintf("mandate denied %s: %s (%s on %s, decision %s).", what, d.ReasonCode, permission, resource, d.DecisionID)
	data := map[string]any{"reason_code": string(d.ReasonCode), "decision_id": d.DecisionID, "permission": permission, "resource": resource}
	if !g.noReview.Load() {
		ectx, cancel := context.WithTimeout(ctx, 500*time.Millisecond)
		e, err := g.cfg.Client.Explain(ectx, client.Request{Subject: c.subject, Permission: permission, Resource: resource})
		cancel()
		g.reviewRefused(err)
		if err == nil && len(e.WouldChange) > 0 {
			msg += " What would change it: " + strings.Join(e.WouldChange, "; ")
			data["would_change"] = e.WouldChange
		}
	}
	return msg, data
}

// serverInfoKey is where an upstream names itself in a result's _meta; the
// agent talks to the gateway, which names itself there instead.
const serverInfoKey = "io.modelcontextprotocol/serverInfo"

func toolError(text string, meta map[string]any) *mcp.CallToolResult {
	res := &mcp.CallToolResult{IsError: true, Content: []mcp.Content{&mcp.TextContent{Text: text}}}
	if meta != nil {
		res.Meta = mcp.Meta{"mandate": meta}
	}
	return res
}

// split parses "<upstream>.<name>".
func (g *Gateway) split(name string) (*upstream, string, bool) {
	up, local, ok := strings.Cut(name, ".")
	u := g.byName[up]
	return u, local, ok && u != nil && local != ""
}

// expand fills a rule's template from string arguments.
func expand(r *Rule, args map[string]any) (string, error) {
	return r.template.Expand(func(name string) (string, error) {
		v, ok := args[name]
		if !ok || v == nil {
			return "", errors.New("the argument is missing")
		}
		s, ok := v.(string)
		if !ok {
			return "", fmt.Errorf("the argument must be a string, not %T", v)
		}
		return s, nil
	})
}

func (g *Gateway) callTool(ctx context.Context, c *caller, p *mcp.CallToolParamsRaw) (mcp.Result, error) {
	if p == nil {
		return nil, &jsonrpc.Error{Code: jsonrpc.CodeInvalidParams, Message: "missing params"}
	}
	refuse := func(text string) (mcp.Result, error) {
		g.metrics.requests.WithLabelValues(c.method, "refused").Inc()
		return toolError(text, nil), nil
	}
	up, local, ok := g.split(p.Name)
	rule := g.tools[p.Name]
	if !ok || rule == nil {
		return refuse(fmt.Sprintf("tool %q is not callable through this gateway: no rule names it (default: deny)", p.Name))
	}
	// The arguments are decoded once, checked, and forwarded as decoded, so
	// the upstream sees exactly what was checked: no second parser can read
	// a duplicate key differently. Numbers keep their literal form.
	args := map[string]any{}
	var canonical []byte
	if raw := bytes.TrimSpace(p.Arguments); len(raw) > 0 && string(raw) != "null" {
		dec := json.NewDecoder(bytes.NewReader(raw))
		dec.UseNumber()
		if err := dec.Decode(&args); err != nil || dec.More() {
			return refuse(fmt.Sprintf("tool %q: arguments must be a JSON object", p.Name))
		}
		canonical, _ = json.Marshal(args) // sorted keys: the digest does not depend on the agent's key order
	}
	resource, err := expand(rule, args)
	if err != nil {
		return refuse(fmt.Sprintf("tool %q: cannot name the resource %s: %v", p.Name, rule.Resource, err))
	}
	d, err := g.check(ctx, c, rule.Permission, resource, c.correlation(p.Meta), c.reason(p.Name, canonical, p.Meta))
	if client.IsInvalidToken(err) {
		g.tokenRefused(c, err)
		return toolError(fmt.Sprintf("tool %q: mandate refused the agent's token: %v", p.Name, err), map[string]any{"reason_code": string(client.InvalidToken)}), nil
	}
	if client.IsInvalid(err) {
		return refuse(fmt.Sprintf("tool %q: mandate refused the check of %s on %s as invalid", p.Name, rule.Permission, resource))
	}
	if err != nil {
		return nil, g.errUnavailable(c, err)
	}
	if !d.Allowed {
		msg, data := g.denial(ctx, c, "tool "+p.Name, rule.Permission, resource, d)
		return toolError(msg, data), nil
	}
	cs, err := up.session(ctx)
	if err != nil {
		return g.upstreamError(c, up, err)
	}
	uctx, cancel := context.WithTimeout(ctx, g.cfg.UpstreamTimeout)
	defer cancel()
	start := time.Now()
	var fwd any
	if canonical != nil {
		fwd = json.RawMessage(canonical)
	}
	res, err := cs.CallTool(uctx, &mcp.CallToolParams{Meta: p.Meta, Name: local, Arguments: fwd})
	g.metrics.upstream.WithLabelValues(up.cfg.Name).Observe(time.Since(start).Seconds())
	if err != nil {
		return g.upstreamError(c, up, err)
	}
	g.metrics.requests.WithLabelValues(c.method, "allowed").Inc()
	g.cfg.Log.Debug("mcp-gateway: forwarded", "tool", p.Name, "agent", c.subject, "decision_id", d.DecisionID)
	delete(res.Meta, serverInfoKey)
	return res, nil
}

func (g *Gateway) upstreamError(c *caller, up *upstream, err error) (mcp.Result, error) {
	g.metrics.requests.WithLabelValues(c.method, "upstream_error").Inc()
	g.cfg.Log.Warn("mcp-gateway: upstream failed", "upstream", up.cfg.Name, "method", c.method, "err", err)
	var werr *jsonrpc.Error
	if errors.As(err, &werr) {
		return nil, werr
	}
	return nil, &jsonrpc.Error{Code: jsonrpc.CodeInternalError, Message: fmt.Sprintf("upstream %s failed", up.cfg.Name)}
}

func (g *Gateway) readResource(ctx context.Context, c *caller, p *mcp.ReadResourceParams) (mcp.Result, error) {
	if p == nil || p.URI == "" {
		return nil, &jsonrpc.Error{Code: jsonrpc.CodeInvalidParams, Message: "missing uri"}
	}
	var rule *Rule
	var vars map[string]string
	for _, r := range g.uris {
		if v, ok := r.matchURI(p.URI); ok {
			rule, vars = r, v
			break
		}
	}
	if rule == nil {
		g.metrics.requests.WithLabelValues(c.method, "refused").Inc()
		return nil, &jsonrpc.Error{Code: jsonrpc.CodeInvalidParams, Message: fmt.Sprintf("resource %q is not readable through this gateway: no rule matches it (default: deny)", p.URI)}
	}
	resource, err := rule.template.Expand(func(name string) (string, error) { return vars[name], nil })
	if err != nil {
		g.metrics.requests.WithLabelValues(c.method, "refused").Inc()
		return nil, &jsonrpc.Error{Code: jsonrpc.CodeInvalidParams, Message: fmt.Sprintf("resource %q: cannot name the resource %s: %v", p.URI, rule.Resource, err)}
	}
	d, err := g.check(ctx, c, rule.Permission, resource, c.correlation(p.Meta), c.reason(p.URI, nil, p.Meta))
	if err != nil {
		return nil, g.checkError(c, "resource "+p.URI, err)
	}
	if !d.Allowed {
		msg, data := g.denial(ctx, c, "resource "+p.URI, rule.Permission, resource, d)
		raw, _ := json.Marshal(data)
		return nil, &jsonrpc.Error{Code: jsonrpc.CodeInvalidParams, Message: msg, Data: raw}
	}
	up := g.byName[rule.Upstream]
	cs, err := up.session(ctx)
	if err != nil {
		return g.upstreamError(c, up, err)
	}
	uctx, cancel := context.WithTimeout(ctx, g.cfg.UpstreamTimeout)
	defer cancel()
	res, err := cs.ReadResource(uctx, &mcp.ReadResourceParams{Meta: p.Meta, URI: p.URI})
	if err != nil {
		return g.upstreamError(c, up, err)
	}
	delete(res.Meta, serverInfoKey)
	g.metrics.requests.WithLabelValues(c.method, "allowed").Inc()
	return res, nil
}

func (g *Gateway) getPrompt(ctx context.Context, c *caller, p *mcp.GetPromptParams) (mcp.Result, error) {
	if p == nil {
		return nil, &jsonrpc.Error{Code: jsonrpc.CodeInvalidParams, Message: "missing params"}
	}
	up, local, ok := g.split(p.Name)
	rule := g.prompts[p.Name]
	if !ok || rule == nil {
		g.metrics.requests.WithLabelValues(c.method, "refused").Inc()
		return nil, &jsonrpc.Error{Code: jsonrpc.CodeInvalidParams, Message: fmt.Sprintf("prompt %q is not available through this gateway: no rule names it (default: deny)", p.Name)}
	}
	args := map[string]any{}
	for k, v := range p.Arguments {
		args[k] = v
	}
	resource, err := expand(rule, args)
	if err != nil {
		g.metrics.requests.WithLabelValues(c.method, "refused").Inc()
		return nil, &jsonrpc.Error{Code: jsonrpc.CodeInvalidParams, Message: fmt.Sprintf("prompt %q: cannot name the resource %s: %v", p.Name, rule.Resource, err)}
	}
	canonical, _ := json.Marshal(p.Arguments)
	d, err := g.check(ctx, c, rule.Permission, resource, c.correlation(p.Meta), c.reason(p.Name, canonical, p.Meta))
	if err != nil {
		return nil, g.checkError(c, "prompt "+p.Name, err)
	}
	if !d.Allowed {
		msg, data := g.denial(ctx, c, "prompt "+p.Name, rule.Permission, resource, d)
		raw, _ := json.Marshal(data)
		return nil, &jsonrpc.Error{Code: jsonrpc.CodeInvalidParams, Message: msg, Data: raw}
	}
	cs, err := up.session(ctx)
	if err != nil {
		return g.upstreamError(c, up, err)
	}
	uctx, cancel := context.WithTimeout(ctx, g.cfg.UpstreamTimeout)
	defer cancel()
	res, err := cs.GetPrompt(uctx, &mcp.GetPromptParams{Meta: p.Meta, Name: local, Arguments: p.Arguments})
	if err != nil {
		return g.upstreamError(c, up, err)
	}
	delete(res.Meta, serverInfoKey)
	g.metrics.requests.WithLabelValues(c.method, "allowed").Inc()
	return res, nil
}
