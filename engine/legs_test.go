package engine_test

import (
	"context"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/mandate-dev/mandate/engine"
	"github.com/mandate-dev/mandate/engine/embedded"
	"github.com/mandate-dev/mandate/schema"
)

// TestListingAgreesWithCheckUnderFreeze: the access listing once ignored the
// freeze and listed what Check denied with AGENTS_FROZEN.
func TestListingAgreesWithCheckUnderFreeze(t *testing.T) {
	for _, b := range backends() {
		t.Run(b.name, func(t *testing.T) {
			e, _ := b.engine(t, engine.Config{})
			w := &world{t: t, e: e}
			ctx := context.Background()
			w.admin("repo:acme/api#reader@user:alice")
			a := w.agent(w.task("user:alice", "1h"), nil, "1h")
			w.mustGrant(ag(a), "read", "repo:acme/api", "15m")
			listed := func() int {
				access, _, _, err := e.AgentAccess(ctx, a.ID, "", "")
				if err != nil {
					t.Fatal(err)
				}
				return len(access)
			}
			if n := listed(); n != 1 {
				t.Fatalf("listing before the freeze has %d entries, want 1", n)
			}
			if _, _, err := e.FreezeAgents(ctx); err != nil {
				t.Fatal(err)
			}
			w.expect(ag(a), "read", "repo:acme/api", engine.ReasonAgentsFrozen)
			if n := listed(); n != 0 {
				t.Fatalf("listing under the freeze has %d entries; Check denies them all", n)
			}
			if ok, err := e.AgentActive(ctx, a.ID); err != nil || ok {
				t.Fatalf("AgentActive under the freeze = %v, %v; want false", ok, err)
			}
			x, err := e.Explain(ctx, mustQuery(t, e, ag(a), "read", "repo:acme/api", nil))
			if err != nil {
				t.Fatal(err)
			}
			if x.Decision.Reason != engine.ReasonAgentsFrozen || x.Legs[0].Name != engine.LegFreeze || x.Legs[0].Passed {
				t.Fatalf("explain under the freeze: %s, legs %+v", x.Decision.Reason, x.Legs)
			}
			if _, _, err := e.UnfreezeAgents(ctx); err != nil {
				t.Fatal(err)
			}
			if n := listed(); n != 1 {
				t.Fatalf("listing after the freeze has %d entries, want 1", n)
			}
		})
	}
}

// principalCaveatSchema adds a resource type whose human relation is
// caveated: the human holds the permission only in some contexts.
const principalCaveatSchema = `
caveat principal_environment(environment string, required_env string) {
	environment == required_env
}

definition document {
	relation viewer: user | user with principal_environment
	relation read_grant: agent with grant_lifetime | task#member with grant_lifetime

	permission read = viewer
}
`

// TestConditionalPrincipal: when the human's own permission is only
// conditional, SpiceDB's CONDITIONAL answer on the attenuation leg is never
// an allow. Without the context it needs the check answers MISSING_CONTEXT;
// with the wrong context PRINCIPAL_LACKS_PERMISSION.
func TestConditionalPrincipal(t *testing.T) {
	for _, b := range backends() {
		t.Run(b.name, func(t *testing.T) {
			e, _ := b.engine(t, engine.Config{})
			ctx := context.Background()
			if _, err := e.WriteSchema(ctx, schema.Default+principalCaveatSchema); err != nil {
				t.Fatal(err)
			}
			w := &world{t: t, e: e}
			w.admin("document:plan#viewer@user:alice")
			a := w.agent(w.task("user:alice", "1h"), nil, "1h")
			sub := w.agent(w.task("user:alice", "1h"), nil, "1h")
			w.mustGrant(ag(a), "read", "document:plan", "15m")
			w.mustGrant(ag(sub), "read", "document:plan", "15m")
			w.expect(ag(a), "read", "document:plan", engine.ReasonAllowed)
			// Now alice holds it only in production.
			w.write("DELETE", "document:plan#viewer@user:alice")
			w.admin(`document:plan#viewer@user:alice[principal_environment:{"required_env":"prod"}]`)
			for _, agent := range []*engine.Agent{a, sub} {
				d := w.expectCtx(ag(agent), "read", "document:plan", nil, engine.ReasonMissingContext)
				if len(d.MissingContext) != 1 || d.MissingContext[0] != "environment" {
					t.Fatalf("missing context %v, want [environment]", d.MissingContext)
				}
				w.expectCtx(ag(agent), "read", "document:plan", map[string]any{"environment": "dev"}, engine.ReasonPrincipalLacksPermission)
				w.expectCtx(ag(agent), "read", "document:plan", map[string]any{"environment": "prod"}, engine.ReasonAllowed)
			}
		})
	}
}

// TestSubAgentListingAfterParentGrantExpires: a sub-agent's listing drops
// what its parent's expired grant no longer covers, as Check does.
func TestSubAgentListingAfterParentGrantExpires(t *testing.T) {
	for _, b := range backends() {
		t.Run(b.name, func(t *testing.T) {
			clk := &clockAt{t: time.Date(2026, 11, 27, 10, 30, 0, 0, time.UTC)}
			e, _ := b.engine(t, engine.Config{Now: clk.now})
			w := &world{t: t, e: e}
			ctx := context.Background()
			w.admin("repo:acme/api#reader@user:alice", "repo:acme/web#reader@user:alice")
			task := w.task("user:alice", "2h")
			parent := w.agent(task, nil, "2h")
			child := w.agent(task, parent, "2h")
			w.mustGrant(ag(parent), "read", "repo:acme/api", "10m")
			w.mustGrant(ag(parent), "read", "repo:acme/web", "50m")
			// A child's grant is bounded by the child's life, not by its
			// parent's grant: it can outlive what the parent holds.
			w.mustGrant(ag(child), "read", "repo:acme/api", "50m")
			w.mustGrant(ag(child), "read", "repo:acme/web", "50m")
			list := func() []string {
				access, _, _, err := e.AgentAccess(ctx, child.ID, "", "")
				if err != nil {
					t.Fatal(err)
				}
				var out []string
				for _, a := range access {
					out = append(out, a.Resource.String())
				}
				return out
			}
			if got := list(); len(got) != 2 {
				t.Fatalf("listing before expiry: %v", got)
			}
			clk.t = clk.t.Add(20 * time.Minute)
			// The parent's api grant expired; the child's own is live.
			w.expect(ag(child), "read", "repo:acme/api", engine.ReasonDelegatorLacksPermission)
			w.expect(ag(child), "read", "repo:acme/web", engine.ReasonAllowed)
			if got := list(); len(got) != 1 || got[0] != "repo:acme/web" {
				t.Fatalf("listing after the parent's api grant expired: %v, want [repo:acme/web]", got)
			}
			// A task-held grant covers every level again.
			w.mustGrant("task:"+task.ID, "read", "repo:acme/api", "20m")
			w.expect(ag(child), "read", "repo:acme/api", engine.ReasonAllowed)
			if got := list(); len(got) != 2 {
				t.Fatalf("listing with the task's grant: %v", got)
			}
			clk.t = clk.t.Add(40 * time.Minute)
			// Now every grant has lapsed: nothing is listed, Check denies.
			w.expect(ag(child), "read", "repo:acme/web", engine.ReasonNoGrant)
			if got := list(); len(got) != 0 {
				t.Fatalf("listing after every grant expired: %v", got)
			}
		})
	}
}

// TestConditionNamingFailsClosed: a SpiceDB fault while the failed condition
// of a grant is being read answers Unavailable, never a NO_GRANT (which the
// cache would keep and bounds would count).
func TestConditionNamingFailsClosed(t *testing.T) {
	f := &faults{}
	f.set("", "")
	faulty := []grpc.DialOption{grpc.WithChainUnaryInterceptor(f.unary), grpc.WithChainStreamInterceptor(f.stream)}
	e, _ := startEngine(t, embedded.Config{Engine: "memory"}, engine.Config{MaxGrantTTL: 24 * time.Hour}, faulty...)
	w := &world{t: t, e: e}
	w.admin("repo:acme/api#writer@user:alice")
	a := w.agent(w.task("user:alice", "1h"), nil, "1h")
	if _, err := w.condGrant(ag(a), "write", "repo:acme/api", &engine.Condition{Name: engine.ConditionSourceNetwork, CIDRs: []string{"10.0.0.0/8"}}); err != nil {
		t.Fatal(err)
	}
	outside := map[string]any{"source_ip": "192.0.2.1"}
	d := w.expectCtx(ag(a), "write", "repo:acme/api", outside, engine.ReasonConditionFailed)
	if d.Condition != engine.ConditionSourceNetwork {
		t.Fatalf("condition %q", d.Condition)
	}
	f.set("/ReadRelationships", "error")
	defer f.set("", "")
	q := mustQuery(t, e, ag(a), "write", "repo:acme/api", outside)
	d, err := e.Decide(context.Background(), q)
	if err == nil || d.Allowed || engine.AsError(err).Kind != engine.KindUnavailable {
		t.Fatalf("decide while the condition cannot be read: %+v, %v; want Unavailable", d, err)
	}
}

func mustQuery(t *testing.T, e *engine.Engine, subject, perm, res string, qctx map[string]any) engine.Query {
	t.Helper()
	var s *structpb.Struct
	if qctx != nil {
		var err error
		if s, err = structpb.NewStruct(qctx); err != nil {
			t.Fatal(err)
		}
	}
	q, err := e.ValidateQuery(context.Background(), subject, perm, res, s)
	if err != nil {
		t.Fatal(err)
	}
	return q
}
