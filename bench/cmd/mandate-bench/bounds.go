package main

import (
	"context"
	"fmt"
	"time"

	"github.com/mandate-dev/mandate/bench"
	"github.com/mandate-dev/mandate/engine/bounds"
	"github.com/mandate-dev/mandate/engine/embedded"
	mandatev1 "github.com/mandate-dev/mandate/proto/mandate/v1"
	"github.com/mandate-dev/mandate/server"
)

// boundsCost measures what counting checks against behavioural bounds adds
// to a cached agent check: the same server setup with and without bounds,
// on the memory datastore (counts in process) and, given a DSN, on Postgres
// (counts shared through the database). The pairs run back to back,
// alternating, so machine noise hits both sides alike.
func boundsCost(ctx context.Context, dsn, keys string, warmup, d time.Duration) []bench.Result {
	// Limits too high to cross, so every check is counted and none is refused.
	on := bounds.Limits{ChecksPerMinute: 1 << 30, MaxDenials: 1 << 30, ResourcesPerHour: 1 << 30}
	type side struct {
		name string
		emb  func() (embedded.Config, func())
	}
	sides := []side{{"memory", func() (embedded.Config, func()) { return embedded.Config{Engine: "memory"}, func() {} }}}
	if dsn != "" {
		sides = append(sides, side{"postgres", func() (embedded.Config, func()) {
			uri, drop := freshDB(ctx, dsn)
			must(embedded.Migrate(ctx, "postgres", uri))
			return embedded.Config{Engine: "postgres", URI: uri}, drop
		}})
	}
	var out []bench.Result
	for _, s := range sides {
		var ops [2]bench.Op
		var stops []func()
		for i, limits := range []bounds.Limits{{}, on} {
			emb, drop := s.emb()
			srv, stop := start(ctx, server.Config{KeysFile: keys, Embedded: emb, Audit: server.AuditConfig{Mode: "off"}, Bounds: server.BoundsConfig{Defaults: limits}})
			stops = append(stops, stop, drop)
			agent := seedHotSet(ctx, srv, dial(srv.GRPCAddr(), operatorKey))
			checks := mandatev1.NewCheckServiceClient(dial(srv.GRPCAddr(), checkerKey))
			ops[i] = func(ctx context.Context, w, n int) error {
				return allowed(checks.Check(ctx, &mandatev1.CheckRequest{Subject: agent, Permission: "read", Resource: fmt.Sprintf("repo:bench/hot%d", (w*7919+n)%hotSet)}))
			}
		}
		for round := 0; round < 2; round++ {
			for i, name := range []string{"bounds-off-" + s.name, "bounds-on-" + s.name} {
				r := bench.Closed(ctx, name, 8, warmup, d/2, ops[i])
				r.Description = fmt.Sprintf("(d) cached agent Check, audit off, %s datastore, bounds %s (round %d)", s.name, map[int]string{0: "off", 1: "on: every check counted in all three windows"}[i], round+1)
				out = append(out, r)
			}
		}
		for i := len(stops) - 1; i >= 0; i-- {
			stops[i]()
		}
	}
	return out
}
