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
	"github.com/mandate-dev/mandate/engine/embedded"
)

// BenchmarkUncachedAgentCheck measures what one uncached agent check costs
// the process (mandate and the embedded SpiceDB together): CPU time and
// SpiceDB calls per check, which a loaded machine disturbs far less than
// wall-clock latency. The bench in bench/ measures latency; this tells
// where a change moved the work.
//
//	go test ./engine -run '^$' -bench UncachedAgentCheck -benchtime 2000x
func BenchmarkUncachedAgentCheck(b *testing.B) {
	// SpiceDB's own spans name every datastore query and dispatch: counting
	// them says, without a clock, how much work a check asks of SpiceDB (on
	// Postgres, each QueryRelationships and HeadRevision is one SQL statement).
	spans := &spanCounter{}
	prev := otel.GetTracerProvider()
	otel.SetTracerProvider(sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(spans)))
	b.Cleanup(func() { otel.SetTracerProvider(prev) })
	for _, depth := range []int{1, 2} {
		b.Run(fmt.Sprintf("chain=%d", depth), func(b *testing.B) {
			var calls atomic.Int64
			count := grpc.WithChainUnaryInterceptor(func(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
				calls.Add(1)
				return invoker(ctx, method, req, reply, cc, opts...)
			})
			countStreams := grpc.WithChainStreamInterceptor(func(ctx context.Context, desc *grpc.StreamDesc, cc *grpc.ClientConn, method string, streamer grpc.Streamer, opts ...grpc.CallOption) (grpc.ClientStream, error) {
				calls.Add(1)
				return streamer(ctx, desc, cc, method, opts...)
			})
			e, _ := startEngineB(b, embedded.Config{Engine: "memory"}, count, countStreams)
			w := &world{t: b, e: e}
			w.admin("repo:acme/api#reader@user:alice")
			task := w.task("user:alice", "1h")
			var a *engine.Agent
			for i := 0; i < depth; i++ {
				a = w.agent(task, a, "1h")
				w.mustGrant(ag(a), "read", "repo:acme/api", "30m")
			}
			q, err := e.ValidateQuery(context.Background(), ag(a), "read", "repo:acme/api", nil)
			if err != nil {
				b.Fatal(err)
			}
			calls.Store(0)
			spans.reset()
			cpu0 := cpuTime()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				d, err := e.Decide(context.Background(), q)
				if err != nil || !d.Allowed {
					b.Fatalf("%v %v", d.Reason, err)
				}
			}
			b.StopTimer()
			b.ReportMetric(float64(cpuTime()-cpu0)/float64(b.N)/1e3, "cpu-µs/op")
			b.ReportMetric(float64(calls.Load())/float64(b.N), "spicedb-calls/op")
			b.ReportMetric(float64(spans.count("QueryRelationships"))/float64(b.N), "datastore-queries/op")
			b.ReportMetric(float64(spans.count("HeadRevision"))/float64(b.N), "head-revisions/op")
			b.ReportMetric(float64(spans.prefix("DispatchCheck"))/float64(b.N), "dispatches/op")
		})
	}
}

func cpuTime() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// startEngineB is startEngine for a benchmark.
func startEngineB(b *testing.B, cfg embedded.Config, opts ...grpc.DialOption) (*engine.Engine, *embedded.Server) {
	b.Helper()
	ctx := context.Background()
	srv, err := embedded.Start(ctx, cfg)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = srv.Close() })
	conn, err := srv.Dial(opts...)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = conn.Close() })
	e, err := engine.New(ctx, engine.Config{}, engine.NewClient(conn), nil)
	if err != nil {
		b.Fatal(err)
	}
	return e, srv
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
