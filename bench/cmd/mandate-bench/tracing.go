package main

import (
	"context"
	"fmt"
	"sort"
	"time"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/mandate-dev/mandate/bench"
	"github.com/mandate-dev/mandate/engine/embedded"
	"github.com/mandate-dev/mandate/engine/tracing"
	mandatev1 "github.com/mandate-dev/mandate/proto/mandate/v1"
	"github.com/mandate-dev/mandate/service"
)

// tracingRounds is how many times each side runs; the medians compare.
const tracingRounds = 5

// tracingCost measures what tracing adds to a cached agent check when it is
// on but the request is not sampled (the usual production setting: a low
// sampling ratio): one server with tracing off, one with an OTLP-style
// pipeline whose sampler never samples, the same cached check at 8 in
// flight, run alternately off, on, off, on… tracingRounds times each, so
// machine noise hits both sides alike. It returns every run, then the
// median of each side (scenarios trace-off and trace-on-unsampled).
func tracingCost(ctx context.Context, keys string, warmup, d time.Duration) []bench.Result {
	tp := sdktrace.NewTracerProvider(
		sdktrace.WithSampler(sdktrace.ParentBased(sdktrace.NeverSample())),
		sdktrace.WithBatcher(tracing.Redact(tracetest.NewNoopExporter())))
	defer func() { _ = tp.Shutdown(context.Background()) }()
	var ops [2]bench.Op
	for i, provider := range []*sdktrace.TracerProvider{nil, tp} {
		cfg := service.Config{KeysFile: keys, Embedded: embedded.Config{Engine: "memory"}}
		if provider != nil {
			cfg.TracerProvider = provider
		}
		srv, stop := start(ctx, cfg)
		defer stop()
		agent := seedHotSet(ctx, srv, dial(srv.GRPCAddr(), operatorKey))
		checks := mandatev1.NewCheckServiceClient(dial(srv.GRPCAddr(), checkerKey))
		ops[i] = func(ctx context.Context, w, n int) error {
			return allowed(checks.Check(ctx, &mandatev1.CheckRequest{Subject: agent, Permission: "read", Resource: fmt.Sprintf("repo:bench/hot%d", (w*7919+n)%hotSet)}))
		}
	}
	names := [2]string{"trace-off", "trace-on-unsampled"}
	var out []bench.Result
	var runs [2][]bench.Result
	for round := 1; round <= tracingRounds; round++ {
		for i := range ops {
			r := bench.Closed(ctx, fmt.Sprintf("%s-%d", names[i], round), 8, warmup, d/2, ops[i])
			r.Description = fmt.Sprintf("(d) cached agent Check, tracing %s (round %d of %d)",
				map[int]string{0: "off", 1: "on, not sampled"}[i], round, tracingRounds)
			runs[i] = append(runs[i], r)
			out = append(out, r)
		}
	}
	for i := range runs {
		sort.Slice(runs[i], func(a, b int) bool { return runs[i][a].Throughput < runs[i][b].Throughput })
		m := runs[i][len(runs[i])/2]
		m.Scenario = names[i]
		m.Description = fmt.Sprintf("(d) cached agent Check, tracing %s: the median of %d interleaved runs by throughput",
			map[int]string{0: "off", 1: "on, not sampled"}[i], tracingRounds)
		out = append(out, m)
	}
	return out
}
