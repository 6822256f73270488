package main

import (
	"context"
	"fmt"
	"sort"
	"sync"
	"time"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/mandate-dev/mandate/bench"
	"github.com/mandate-dev/mandate/engine/embedded"
	"github.com/mandate-dev/mandate/engine/tracing"
	mandatev1 "github.com/mandate-dev/mandate/proto/mandate/v1"
	"github.com/mandate-dev/mandate/server"
)

// tracingRounds is how many times each side runs; the medians compare.
const tracingRounds = 5

// tracingCost measures what tracing adds to a cached agent check when it is
// on but the request is not sampled (the usual production setting: a low
// sampling ratio): one server with tracing off, one with an OTLP-style
// pipeline whose sampler never samples, the same cached check at 8 in
// flight, run alternately (off, on, then on, off…) tracingRounds times
// each, so machine noise hits both sides alike. It returns every run, then the
// median of each side (scenarios trace-off and trace-on-unsampled), and a
// second estimate that alternates request by request (see alternating).
func tracingCost(ctx context.Context, keys string, warmup, d time.Duration) []bench.Result {
	tp := sdktrace.NewTracerProvider(
		sdktrace.WithSampler(sdktrace.ParentBased(sdktrace.NeverSample())),
		sdktrace.WithBatcher(tracing.Redact(tracetest.NewNoopExporter())))
	defer func() { _ = tp.Shutdown(context.Background()) }()
	var ops [2]bench.Op
	for i, provider := range []*sdktrace.TracerProvider{nil, tp} {
		cfg := server.Config{KeysFile: keys, Embedded: embedded.Config{Engine: "memory"}}
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
		// Off first in odd rounds, on first in even ones, so that neither
		// side always runs after the other (a drift or the garbage one side
		// leaves would otherwise always land on the same side).
		order := []int{0, 1}
		if round%2 == 0 {
			order = []int{1, 0}
		}
		for _, i := range order {
			r := bench.Closed(ctx, fmt.Sprintf("%s-%d", names[i], round), 8, warmup, d/2, ops[i])
			r.Description = fmt.Sprintf("(d) cached agent Check, tracing %s (round %d of %d)",
				map[int]string{0: "off", 1: "on, not sampled"}[i], round, tracingRounds)
			runs[i] = append(runs[i], r)
			out = append(out, r)
		}
	}
	out = append(out, alternating(ctx, names, warmup, d, ops)...)
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

// alternating runs both sides in one closed loop, every worker sending its
// requests alternately to each server, so both meet the machine at the same
// instants: noise that lasts longer than one request (another process's
// build, say) hits both alike. In a closed loop throughput is the number in
// flight over the mean latency, so each side's throughput alone is estimated
// as 8 / its mean latency here (scenarios <side>-alt).
func alternating(ctx context.Context, names [2]string, warmup, d time.Duration, ops [2]bench.Op) []bench.Result {
	const inFlight = 8
	var mu sync.Mutex
	var sum [2]time.Duration
	var count, errs [2]int
	record := false
	op := func(ctx context.Context, w, n int) error {
		side := n % 2
		t0 := time.Now()
		err := ops[side](ctx, w, n/2)
		el := time.Since(t0)
		mu.Lock()
		if record {
			sum[side] += el
			count[side]++
			if err != nil {
				errs[side]++
			}
		}
		mu.Unlock()
		return err
	}
	bench.Closed(ctx, "warmup", inFlight, 0, warmup, op)
	mu.Lock()
	record = true
	mu.Unlock()
	bench.Closed(ctx, "alternating", inFlight, 0, d, op)
	mu.Lock()
	defer mu.Unlock()
	var out []bench.Result
	for i := range names {
		mean := sum[i] / time.Duration(max(count[i], 1))
		out = append(out, bench.Result{
			Scenario: names[i] + "-alt", Mode: "closed", InFlight: inFlight, Requests: count[i], Errors: errs[i], Seconds: d.Seconds(),
			Throughput: inFlight / mean.Seconds(), P50ms: float64(mean.Microseconds()) / 1000,
			Description: fmt.Sprintf("(d) cached agent Check, tracing %s, alternating request by request with the other side: "+
				"throughput estimated as %d / mean latency; the p50 column holds the mean", map[int]string{0: "off", 1: "on, not sampled"}[i], inFlight),
			Note: fmt.Sprintf("mean latency %.3f ms", float64(mean.Microseconds())/1000),
		})
	}
	return out
}
