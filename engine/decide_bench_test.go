package engine_test

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"go.opentelemetry.io/otel"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"google.golang.org/grpc"

	"github.com/mandate-dev/mandate/engine"
)

// BenchmarkUncachedAgentCheck measures what one uncached agent check costs
// (mandate and the embedded SpiceDB together), for the current decision path
// and for the one it replaced (ReferenceDecide), side by side on the same
// data: SpiceDB calls, datastore queries and head-revision lookups (counted
// from SpiceDB's own spans; on Postgres each is one SQL statement) and
// process CPU time per check. Every check asks about another agent, so
// neither mandate's nor SpiceDB's caches answer. Counts do not depend on how
// busy the machine is; the bench in bench/ measures latency.
//
//	go test ./engine -run '^$' -bench UncachedAgentCheck -benchtime 200x
func BenchmarkUncachedAgentCheck(b *testing.B) {
	spans := &spanCounter{}
	prev := otel.GetTracerProvider()
	otel.SetTracerProvider(sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(spans)))
	b.Cleanup(func() { otel.SetTracerProvider(prev) })
	for _, be := range backends() {
		for _, depth := range []int{1, 2} {
			for _, path := range []string{"current", "reference"} {
				b.Run(fmt.Sprintf("%s/chain=%d/%s", be.name, depth, path), func(b *testing.B) {
					benchUncached(b, be, depth, path == "reference", spans)
				})
			}
		}
	}
}

func benchUncached(b *testing.B, be backend, depth int, reference bool, spans *spanCounter) {
	var calls atomic.Int64
	count := grpc.WithChainUnaryInterceptor(func(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
		calls.Add(1)
		return invoker(ctx, method, req, reply, cc, opts...)
	})
	countStreams := grpc.WithChainStreamInterceptor(func(ctx context.Context, desc *grpc.StreamDesc, cc *grpc.ClientConn, method string, streamer grpc.Streamer, opts ...grpc.CallOption) (grpc.ClientStream, error) {
		calls.Add(1)
		return streamer(ctx, desc, cc, method, opts...)
	})
	e, _ := be.engine(b, engine.Config{}, count, countStreams)
	w := &world{t: b, e: e}
	w.admin("repo:acme/api#reader@user:alice")
	// One leaf per check: a fresh task and chain each, granted read.
	queries := make([]engine.Query, b.N)
	for i := range queries {
		task := w.task("user:alice", "1h")
		var a *engine.Agent
		for d := 0; d < depth; d++ {
			a = w.agent(task, a, "1h")
			w.mustGrant(ag(a), "read", "repo:acme/api", "30m")
		}
		q, err := e.ValidateQuery(context.Background(), ag(a), "read", "repo:acme/api", nil)
		if err != nil {
			b.Fatal(err)
		}
		queries[i] = q
	}
	decide := e.Decide
	if reference {
		decide = func(ctx context.Context, q engine.Query) (engine.Decision, error) {
			return engine.ReferenceDecide(e, ctx, q)
		}
	}
	calls.Store(0)
	spans.reset()
	cpu0 := cpuTime()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		d, err := decide(context.Background(), queries[i])
		if err != nil || !d.Allowed {
			b.Fatalf("%v %v", d.Reason, err)
		}
	}
	b.StopTimer()
	n := float64(b.N)
	b.ReportMetric(float64(cpuTime()-cpu0)/n/1e3, "cpu-µs/op")
	b.ReportMetric(float64(calls.Load())/n, "spicedb-calls/op")
	b.ReportMetric(float64(spans.count("QueryRelationships"))/n, "datastore-queries/op")
	b.ReportMetric(float64(spans.count("HeadRevision"))/n, "head-revisions/op")
	b.ReportMetric(float64(spans.prefix("DispatchCheck"))/n, "dispatches/op")
}

func cpuTime() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// spanCounter counts ended spans by name.
type spanCounter struct {
	mu sync.Mutex
	n  map[string]int
}

func (c *spanCounter) OnStart(context.Context, sdktrace.ReadWriteSpan) {}
func (c *spanCounter) OnEnd(s sdktrace.ReadOnlySpan) {
	c.mu.Lock()
	if c.n == nil {
		c.n = map[string]int{}
	}
	c.n[s.Name()]++
	c.mu.Unlock()
}
func (c *spanCounter) Shutdown(context.Context) error   { return nil }
func (c *spanCounter) ForceFlush(context.Context) error { return nil }
func (c *spanCounter) reset()                           { c.mu.Lock(); c.n = nil; c.mu.Unlock() }
func (c *spanCounter) count(name string) int            { c.mu.Lock(); defer c.mu.Unlock(); return c.n[name] }
func (c *spanCounter) prefix(p string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	t := 0
	for k, v := range c.n {
		if strings.HasPrefix(k, p) {
			t += v
		}
	}
	return t
}
