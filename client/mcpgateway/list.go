package mcpgateway

import (
	"context"
	"errors"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/mandate-dev/mandate/client"
)

// Lists are private to the agent and never cached: what an agent may call
// changes with every grant and revocation.
var private = mcp.Cacheable{TTLMs: 0, CacheScope: "private"}

// candidate is one listed item and how to decide whether to show it: a
// concrete resource is checked (in bulk); a templated one is shown when the
// agent holds any live grant of the permission on that resource type.
type candidate struct {
	permission string
	resource   string // set for a concrete resource
	typ        string // set for a template
}

// bulkChunk bounds one CheckBulk.
const bulkChunk = 100

// visible decides every candidate. Any error from mandate fails the whole
// list: a list is never shown unfiltered. The concrete items are checked
// first, with the agent's token, and if mandate refuses the token nothing is
// shown; only then is the agent's access listed for the templated ones.
func (g *Gateway) visible(ctx context.Context, c *caller, cands []candidate) ([]bool, error) {
	start := time.Now()
	defer func() { g.metrics.check.WithLabelValues(c.method).Observe(time.Since(start).Seconds()) }()
	out := make([]bool, len(cands))
	var reqs []client.Request
	var idx []int
	corr := c.correlation(nil)
	for i, cd := range cands {
		if cd.resource != "" {
			reqs = append(reqs, client.Request{SubjectToken: c.token, Permission: cd.permission, Resource: cd.resource, CorrelationID: corr, Reason: c.reason("(listing)", nil, nil)})
			idx = append(idx, i)
		}
	}
	for lo := 0; lo < len(reqs); lo += bulkChunk {
		hi := min(lo+bulkChunk, len(reqs))
		ds, err := g.cfg.Client.CheckBulk(ctx, reqs[lo:hi])
		if client.IsInvalid(err) {
			// One item mandate refuses fails the batch: ask one by one, and
			// hide only what is refused.
			ds, err = make([]client.Decision, hi-lo), nil
			for j, r := range reqs[lo:hi] {
				d, cerr := g.cfg.Client.Check(ctx, r)
				if client.IsInvalidToken(cerr) {
					d = client.Decision{ReasonCode: client.InvalidToken}
				} else if cerr != nil && !client.IsInvalid(cerr) {
					return nil, cerr
				}
				ds[j] = d
			}
		}
		if err != nil {
			return nil, err
		}
		for j, d := range ds {
			if d.ReasonCode == client.InvalidToken {
				g.tokenRefused(c, errors.New("INVALID_TOKEN in a listing"))
				return make([]bool, len(cands)), nil
			}
			out[idx[lo+j]] = d.Allowed
		}
	}
	held := map[[2]string]bool{}
	for i, cd := range cands {
		if cd.resource != "" || g.noReview.Load() {
			continue // without ListAgentAccess a templated item cannot be told: hidden, never shown by default
		}
		key := [2]string{cd.typ, cd.permission}
		v, seen := held[key]
		if !seen {
			var err error
			// The agent is the verified token's; its grants are live ones.
			v, err = g.cfg.Client.HasAccess(ctx, c.subject, cd.typ, cd.permission)
			if g.reviewRefused(err) {
				v, err = false, nil
			}
			if client.IsInvalid(err) {
				// A rule naming what the schema lacks hides its tools, not the whole list.
				g.cfg.Log.Warn("mcp-gateway: mandate refused a rule's permission or type; its tools are hidden", "type", cd.typ, "permission", cd.permission, "err", err)
				v, err = false, nil
			}
			if err != nil {
				return nil, err
			}
			held[key] = v
		}
		out[i] = v
	}
	return out, nil
}

func ruleCandidate(r *Rule) candidate {
	if r.template.Fixed() {
		res, _ := r.template.Expand(nil)
		return candidate{permission: r.Permission, resource: res}
	}
	return candidate{permission: r.Permission, typ: r.template.Type()}
}

func (g *Gateway) listTools(ctx context.Context, c *caller) (mcp.Result, error) {
	var tools []*mcp.Tool
	var cands []candidate
	for _, up := range g.upstreams {
		cs, err := up.session(ctx)
		if err != nil {
			g.cfg.Log.Warn("mcp-gateway: upstream unreachable; its tools are not listed", "upstream", up.cfg.Name, "err", err)
			continue
		}
		for t, err := range cs.Tools(ctx, nil) {
			if err != nil {
				g.cfg.Log.Warn("mcp-gateway: listing tools failed", "upstream", up.cfg.Name, "err", err)
				break
			}
			name := up.cfg.Name + "." + t.Name
			r := g.tools[name]
			if r == nil {
				continue // default: deny
			}
			cp := *t
			cp.Name = name
			tools = append(tools, &cp)
			cands = append(cands, ruleCandidate(r))
		}
	}
	show, err := g.visible(ctx, c, cands)
	if err != nil {
		return nil, g.errUnavailable(c, err)
	}
	res := &mcp.ListToolsResult{Cacheable: private, Tools: []*mcp.Tool{}}
	for i, t := range tools {
		if show[i] {
			res.Tools = append(res.Tools, t)
		}
	}
	g.metrics.requests.WithLabelValues(c.method, "listed").Inc()
	return res, nil
}

func (g *Gateway) listPrompts(ctx context.Context, c *caller) (mcp.Result, error) {
	var prompts []*mcp.Prompt
	var cands []candidate
	for _, up := range g.upstreams {
		cs, err := up.session(ctx)
		if err != nil || cs.InitializeResult() == nil || cs.InitializeResult().Capabilities.Prompts == nil {
			continue
		}
		for p, err := range cs.Prompts(ctx, nil) {
			if err != nil {
				g.cfg.Log.Warn("mcp-gateway: listing prompts failed", "upstream", up.cfg.Name, "err", err)
				break
			}
			name := up.cfg.Name + "." + p.Name
			r := g.prompts[name]
			if r == nil {
				continue
			}
			cp := *p
			cp.Name = name
			prompts = append(prompts, &cp)
			cands = append(cands, ruleCandidate(r))
		}
	}
	show, err := g.visible(ctx, c, cands)
	if err != nil {
		return nil, g.errUnavailable(c, err)
	}
	res := &mcp.ListPromptsResult{Cacheable: private, Prompts: []*mcp.Prompt{}}
	for i, p := range prompts {
		if show[i] {
			res.Prompts = append(res.Prompts, p)
		}
	}
	g.metrics.requests.WithLabelValues(c.method, "listed").Inc()
	return res, nil
}

func (g *Gateway) listResources(ctx context.Context, c *caller) (mcp.Result, error) {
	var resources []*mcp.Resource
	var cands []candidate
	for _, up := range g.upstreams {
		cs, err := up.session(ctx)
		if err != nil || cs.InitializeResult() == nil || cs.InitializeResult().Capabilities.Resources == nil {
			continue
		}
		for r, err := range cs.Resources(ctx, nil) {
			if err != nil {
				g.cfg.Log.Warn("mcp-gateway: listing resources failed", "upstream", up.cfg.Name, "err", err)
				break
			}
			for _, rule := range g.uris {
				if rule.Upstream != up.cfg.Name {
					continue
				}
				vars, ok := rule.matchURI(r.URI)
				if !ok {
					continue
				}
				res, err := rule.template.Expand(func(n string) (string, error) { return vars[n], nil })
				if err == nil {
					resources = append(resources, r)
					cands = append(cands, candidate{permission: rule.Permission, resource: res})
				}
				break
			}
		}
	}
	show, err := g.visible(ctx, c, cands)
	if err != nil {
		return nil, g.errUnavailable(c, err)
	}
	res := &mcp.ListResourcesResult{Cacheable: private, Resources: []*mcp.Resource{}}
	for i, r := range resources {
		if show[i] {
			res.Resources = append(res.Resources, r)
		}
	}
	g.metrics.requests.WithLabelValues(c.method, "listed").Inc()
	return res, nil
}

func (g *Gateway) listResourceTemplates(ctx context.Context, c *caller) (mcp.Result, error) {
	var templates []*mcp.ResourceTemplate
	var cands []candidate
	for _, up := range g.upstreams {
		cs, err := up.session(ctx)
		if err != nil || cs.InitializeResult() == nil || cs.InitializeResult().Capabilities.Resources == nil {
			continue
		}
		for t, err := range cs.ResourceTemplates(ctx, nil) {
			if err != nil {
				g.cfg.Log.Warn("mcp-gateway: listing resource templates failed", "upstream", up.cfg.Name, "err", err)
				break
			}
			for _, rule := range g.uris {
				if rule.Upstream == up.cfg.Name && rule.URI == t.URITemplate {
					templates = append(templates, t)
					cands = append(cands, ruleCandidate(rule))
					break
				}
			}
		}
	}
	show, err := g.visible(ctx, c, cands)
	if err != nil {
		return nil, g.errUnavailable(c, err)
	}
	res := &mcp.ListResourceTemplatesResult{Cacheable: private, ResourceTemplates: []*mcp.ResourceTemplate{}}
	for i, t := range templates {
		if show[i] {
			res.ResourceTemplates = append(res.ResourceTemplates, t)
		}
	}
	g.metrics.requests.WithLabelValues(c.method, "listed").Inc()
	return res, nil
}
