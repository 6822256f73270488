package cache_test

import (
	"context"
	"io"
	"log/slog"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	v1 "github.com/authzed/authzed-go/proto/authzed/api/v1"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/mandate-dev/mandate/engine"
	"github.com/mandate-dev/mandate/engine/cache"
	"github.com/mandate-dev/mandate/engine/embedded"
)

// counting wraps the real engine and counts the calls that reach it.
type counting struct {
	inner engine.Decider
	calls atomic.Int64
	delay time.Duration
}

func (c *counting) Decide(ctx context.Context, q engine.Query) (engine.Decision, error) {
	c.calls.Add(1)
	if c.delay > 0 {
		time.Sleep(c.delay)
	}
	return c.inner.Decide(ctx, q)
}

// watchBreaker kills or stalls Watch streams on demand, on the real connection.
type watchBreaker struct {
	broken  atomic.Bool
	stalled atomic.Bool // while set, received watch messages are held back
	mu      sync.Mutex
	cancels []context.CancelFunc
}

// stallable holds back each received message while the breaker is stalled:
// the stream stays open but the watch falls behind.
type stallable struct {
	grpc.ClientStream
	b *watchBreaker
}

func (s *stallable) RecvMsg(m any) error {
	err := s.ClientStream.RecvMsg(m)
	for s.b.stalled.Load() {
		time.Sleep(5 * time.Millisecond)
	}
	return err
}

func (b *watchBreaker) stream(ctx context.Context, desc *grpc.StreamDesc, cc *grpc.ClientConn, method string, streamer grpc.Streamer, opts ...grpc.CallOption) (grpc.ClientStream, error) {
	if method != "/authzed.api.v1.WatchService/Watch" {
		return streamer(ctx, desc, cc, method, opts...)
	}
	if b.broken.Load() {
		return nil, status.Error(codes.Unavailable, "injected watch outage")
	}
	ctx, cancel := context.WithCancel(ctx)
	b.mu.Lock()
	b.cancels = append(b.cancels, cancel)
	b.mu.Unlock()
	st, err := streamer(ctx, desc, cc, method, opts...)
	if err != nil {
		return nil, err
	}
	return &stallable{ClientStream: st, b: b}, nil
}

// breakNow fails every open watch stream and every new one until heal.
func (b *watchBreaker) breakNow() {
	b.broken.Store(true)
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, c := range b.cancels {
		c()
	}
	b.cancels = nil
}

func (b *watchBreaker) heal() { b.broken.Store(false) }

type rig struct {
	t       *testing.T
	e       *engine.Engine
	c       *cache.Cache
	inner   *counting
	raw     *engine.Client // straight to SpiceDB, as an outside writer (zed) would
	breaker *watchBreaker
	metrics *cache.Metrics
	reg     *prometheus.Registry
}

func newRig(t *testing.T) *rig {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	srv, err := embedded.Start(ctx, embedded.Config{Engine: "memory"})
	if err != nil {
		t.Fatal(err)
	}
	b := &watchBreaker{}
	conn, err := srv.Dial(grpc.WithChainStreamInterceptor(b.stream))
	if err != nil {
		t.Fatal(err)
	}
	rawConn, err := srv.Dial()
	if err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	e, err := engine.New(ctx, engine.Config{}, engine.NewClient(conn), log)
	if err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	m := cache.NewMetrics(reg)
	inner := &counting{inner: e}
	c, err := cache.New(inner, cache.Config{Metrics: m, LagBound: 500 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	e.SetInvalidator(c)
	w := &cache.Watcher{Cache: c, Client: engine.NewClient(conn).Watch, Schema: engine.NewClient(conn).Schema, Log: log, OnSchemaChange: e.RefreshSchema}
	done := make(chan struct{})
	go func() { w.Run(ctx); close(done) }()
	t.Cleanup(func() {
		cancel()
		<-done
		_ = conn.Close()
		_ = rawConn.Close()
		_ = srv.Close()
	})
	r := &rig{t: t, e: e, c: c, inner: inner, raw: engine.NewClient(rawConn), breaker: b, metrics: m, reg: reg}
	r.waitServing()
	if _, err := e.WriteRelationships(ctx, []engine.RelationshipUpdate{{Operation: "TOUCH", Relationship: "repo:acme/api#reader@user:alice"}}); err != nil {
		t.Fatal(err)
	}
	return r
}

func (r *rig) waitServing() {
	r.t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		if ok, _ := r.c.Status(); ok {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	_, why := r.c.Status()
	r.t.Fatalf("cache never started serving: %s", why)
}

func (r *rig) agentWithGrant(ttl string) (*engine.Task, *engine.Agent, *engine.Grant) {
	r.t.Helper()
	ctx := context.Background()
	task, _, err := r.e.CreateTask(ctx, engine.CreateTaskInput{Principal: "user:alice", TTL: "1h"})
	if err != nil {
		r.t.Fatal(err)
	}
	a, _, err := r.e.CreateAgent(ctx, engine.CreateAgentInput{Task: "task:" + task.ID, Name: "a", TTL: "1h"})
	if err != nil {
		r.t.Fatal(err)
	}
	g, _, err := r.e.CreateGrant(ctx, engine.CreateGrantInput{Holder: "agent:" + a.ID, Permission: "read", Resource: "repo:acme/api", TTL: ttl})
	if err != nil {
		r.t.Fatal(err)
	}
	return task, a, g
}

func (r *rig) query(subject string) engine.Query {
	q, err := r.e.ValidateQuery(context.Background(), subject, "read", "repo:acme/api", nil)
	if err != nil {
		r.t.Fatal(err)
	}
	return q
}

func (r *rig) decide(q engine.Query) engine.Decision {
	r.t.Helper()
	d, err := r.c.Decide(context.Background(), q)
	if err != nil {
		r.t.Fatal(err)
	}
	return d
}

// cachedAllow checks until an identical check is answered from the cache.
// The watch may redeliver this replica's own recent writes and invalidate
// once more (harmless), so a hit can take a few tries.
func (r *rig) cachedAllow(q engine.Query) {
	r.t.Helper()
	for try := 0; try < 50; try++ {
		if d := r.decide(q); !d.Allowed {
			r.t.Fatalf("expected allow, got %s", d.Reason)
		}
		before := r.inner.calls.Load()
		d := r.decide(q)
		if !d.Allowed {
			r.t.Fatalf("expected cached allow, got %s", d.Reason)
		}
		if r.inner.calls.Load() == before {
			if !d.Cached {
				r.t.Fatal("a cache hit is not marked cached")
			}
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	r.t.Fatal("identical checks were never served from the cache")
}

// Rule 1: after a revoking write returns, no later check answers from a stale entry.
func TestSameReplicaRevocation(t *testing.T) {
	r := newRig(t)
	ctx := context.Background()
	revokes := []struct {
		name   string
		reason engine.Reason
		revoke func(task *engine.Task, a *engine.Agent, g *engine.Grant) error
	}{
		{"complete", engine.ReasonTaskCompleted, func(task *engine.Task, _ *engine.Agent, _ *engine.Grant) error {
			_, _, err := r.e.CompleteTask(ctx, task.ID)
			return err
		}},
		{"delete agent", engine.ReasonAgentRevoked, func(_ *engine.Task, a *engine.Agent, _ *engine.Grant) error {
			_, _, err := r.e.RevokeAgent(ctx, a.ID)
			return err
		}},
		{"suspend", engine.ReasonAgentSuspended, func(_ *engine.Task, a *engine.Agent, _ *engine.Grant) error {
			_, _, err := r.e.SuspendAgent(ctx, a.ID)
			return err
		}},
		{"delete grant", engine.ReasonNoGrant, func(_ *engine.Task, _ *engine.Agent, g *engine.Grant) error {
			_, err := r.e.DeleteGrant(ctx, g.ID)
			return err
		}},
	}
	for i := 0; i < 100; i++ {
		c := revokes[i%len(revokes)]
		task, a, g := r.agentWithGrant("15m")
		q := r.query("agent:" + a.ID)
		r.cachedAllow(q)
		if err := c.revoke(task, a, g); err != nil {
			t.Fatal(err)
		}
		if d := r.decide(q); d.Allowed || d.Reason != c.reason {
			t.Fatalf("%s (iteration %d): got allowed=%v %s, want %s", c.name, i, d.Allowed, d.Reason, c.reason)
		}
	}
	// A relationship write by an admin: the principal loses access.
	_, a, _ := r.agentWithGrant("15m")
	q := r.query("agent:" + a.ID)
	r.cachedAllow(q)
	uq := r.query("user:alice")
	r.cachedAllow(uq)
	if _, err := r.e.WriteRelationships(ctx, []engine.RelationshipUpdate{{Operation: "DELETE", Relationship: "repo:acme/api#reader@user:alice"}}); err != nil {
		t.Fatal(err)
	}
	if d := r.decide(q); d.Allowed || d.Reason != engine.ReasonPrincipalLacksPermission {
		t.Fatalf("after the principal lost access: %v %s", d.Allowed, d.Reason)
	}
	if d := r.decide(uq); d.Allowed {
		t.Fatal("user check served a stale allow")
	}
	if got := metricValue(t, r.reg, "mandate_cache_hits_total"); got == 0 {
		t.Fatal("no cache hits recorded")
	}
}

// Rule 2: writes made straight to SpiceDB (as zed would) reach the cache through the watch.
func TestOutsideWriterThroughWatch(t *testing.T) {
	r := newRig(t)
	_, a, _ := r.agentWithGrant("15m")
	q := r.query("agent:" + a.ID)
	r.cachedAllow(q)
	_, err := r.raw.Permissions.WriteRelationships(context.Background(), &v1.WriteRelationshipsRequest{Updates: []*v1.RelationshipUpdate{{
		Operation: v1.RelationshipUpdate_OPERATION_TOUCH,
		Relationship: &v1.Relationship{
			Resource: &v1.ObjectReference{ObjectType: "agent", ObjectId: a.ID}, Relation: "suspended",
			Subject: &v1.SubjectReference{Object: &v1.ObjectReference{ObjectType: "agent", ObjectId: "*"}},
		},
	}}})
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	for {
		d := r.decide(q)
		if !d.Allowed {
			if d.Reason != engine.ReasonAgentSuspended {
				t.Fatalf("denied with %s", d.Reason)
			}
			break
		}
		if time.Since(start) > time.Second {
			t.Fatal("the cache kept serving an allow one second after an outside write")
		}
		time.Sleep(5 * time.Millisecond)
	}
	t.Logf("outside write reached the cache in %v", time.Since(start))
}

// Rule 3: a cached allow never outlives the earliest expiry it relied on.
func TestCachedAllowExpires(t *testing.T) {
	r := newRig(t)
	_, a, g := r.agentWithGrant("2s")
	q := r.query("agent:" + a.ID)
	r.cachedAllow(q)
	for time.Now().Before(g.ExpiresAt.Add(-30 * time.Millisecond)) {
		if d := r.decide(q); !d.Allowed {
			t.Fatalf("denied before expiry: %s", d.Reason)
		}
		time.Sleep(10 * time.Millisecond)
	}
	for time.Now().Before(g.ExpiresAt) {
		time.Sleep(time.Millisecond)
	}
	if d := r.decide(q); d.Allowed {
		t.Fatal("cached allow served after the grant expired")
	}
	if late := time.Since(g.ExpiresAt); late > 100*time.Millisecond {
		t.Fatalf("deny came %v after expiry", late)
	}
}

// Rule 4: a broken watch stops the cache from serving until it recovers.
func TestFailSafe(t *testing.T) {
	r := newRig(t)
	_, a, _ := r.agentWithGrant("15m")
	q := r.query("agent:" + a.ID)
	r.cachedAllow(q)
	r.breaker.breakNow()
	deadline := time.Now().Add(2 * time.Second)
	for {
		if ok, _ := r.c.Status(); !ok {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the cache kept serving with the watch broken")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if got := metricValue(t, r.reg, "mandate_cache_failsafe"); got != 1 {
		t.Fatalf("failsafe gauge = %v, want 1", got)
	}
	before := r.inner.calls.Load()
	for i := 0; i < 3; i++ {
		if d := r.decide(q); !d.Allowed {
			t.Fatal("uncached answer wrong")
		}
	}
	if r.inner.calls.Load()-before != 3 {
		t.Fatal("checks were served from the cache while the watch was down")
	}
	r.breaker.heal()
	r.waitServing()
	if got := metricValue(t, r.reg, "mandate_cache_failsafe"); got != 0 {
		t.Fatalf("failsafe gauge = %v after recovery, want 0", got)
	}
	r.cachedAllow(q)
}

// Rule 4, lag: a watch that stays open but falls behind (a write of this
// replica's not seen back within the lag bound) stops the cache too.
func TestFailSafeOnLag(t *testing.T) {
	r := newRig(t)
	_, a, _ := r.agentWithGrant("15m")
	q := r.query("agent:" + a.ID)
	r.cachedAllow(q)
	r.breaker.stalled.Store(true)
	// A write the watch will not deliver in time.
	if _, err := r.e.WriteRelationships(context.Background(), []engine.RelationshipUpdate{{Operation: "TOUCH", Relationship: "repo:acme/other#reader@user:bob"}}); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(3 * time.Second)
	for {
		if ok, why := r.c.Status(); !ok {
			t.Logf("bypassed: %s", why)
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the cache kept serving while the watch lagged")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if lag := metricValue(t, r.reg, "mandate_watch_lag_seconds"); lag < 0.5 {
		t.Fatalf("watch lag gauge = %v, want at least the 0.5s bound", lag)
	}
	before := r.inner.calls.Load()
	r.decide(q)
	r.decide(q)
	if r.inner.calls.Load()-before != 2 {
		t.Fatal("checks were served from the cache while the watch lagged")
	}
	r.breaker.stalled.Store(false)
	r.waitServing()
	r.cachedAllow(q)
}

// Concurrent identical misses collapse into one call to SpiceDB.
func TestSingleflight(t *testing.T) {
	r := newRig(t)
	_, a, _ := r.agentWithGrant("15m")
	q := r.query("agent:" + a.ID)
	r.inner.delay = 50 * time.Millisecond
	before := r.inner.calls.Load()
	var wg sync.WaitGroup
	for i := 0; i < 8; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if d, err := r.c.Decide(context.Background(), q); err != nil || !d.Allowed {
				t.Errorf("%v %v", d, err)
			}
		}()
	}
	wg.Wait()
	if n := r.inner.calls.Load() - before; n != 1 {
		t.Fatalf("8 concurrent identical misses made %d calls, want 1", n)
	}
}

// A consistency token the cache has not seen bypasses it; one it has seen does not.
func TestConsistencyTokenBypass(t *testing.T) {
	r := newRig(t)
	_, a, _ := r.agentWithGrant("15m")
	q := r.query("agent:" + a.ID)
	r.cachedAllow(q)
	q.ConsistencyToken = "GhUKEzE3OTU3Nzc1OTc2ODc1NDE3Njg="
	before := r.inner.calls.Load()
	r.decide(q)
	if r.inner.calls.Load() == before {
		t.Fatal("an unseen consistency token was answered from the cache")
	}
	_, tok, err := r.e.SuspendAgent(context.Background(), a.ID)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := r.e.ResumeAgent(context.Background(), a.ID); err != nil {
		t.Fatal(err)
	}
	q.ConsistencyToken = tok
	r.decide(q)
	before = r.inner.calls.Load()
	r.decide(q)
	if r.inner.calls.Load() != before {
		t.Fatal("a token from this replica's own write bypassed the cache")
	}
}

// metricValue sums every sample of a metric family.
func metricValue(t *testing.T, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	sum := 0.0
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			sum += m.GetCounter().GetValue() + m.GetGauge().GetValue()
		}
	}
	return sum
}

// TestAncestorRevocationEndsCachedAllow: a sub-agent's cached allow depends
// on every agent above it. Suspending, revoking or expiring the parent
// (or the grandparent) must end it at once, on the same replica.
func TestAncestorRevocationEndsCachedAllow(t *testing.T) {
	r := newRig(t)
	ctx := context.Background()
	for _, c := range []struct {
		name   string
		revoke func(top, mid *engine.Agent) error
		want   engine.Reason
	}{
		{"suspend parent", func(_, mid *engine.Agent) error { _, _, err := r.e.SuspendAgent(ctx, mid.ID); return err }, engine.ReasonAgentSuspended},
		{"suspend grandparent", func(top, _ *engine.Agent) error { _, _, err := r.e.SuspendAgent(ctx, top.ID); return err }, engine.ReasonAgentSuspended},
		{"revoke grandparent", func(top, _ *engine.Agent) error { _, _, err := r.e.RevokeAgent(ctx, top.ID); return err }, engine.ReasonAgentRevoked},
	} {
		t.Run(c.name, func(t *testing.T) {
			task, top, _ := r.agentWithGrant("30m")
			mid, _, err := r.e.CreateAgent(ctx, engine.CreateAgentInput{Task: "task:" + task.ID, Parent: "agent:" + top.ID, Name: "mid", TTL: "1h"})
			if err != nil {
				t.Fatal(err)
			}
			leaf, _, err := r.e.CreateAgent(ctx, engine.CreateAgentInput{Task: "task:" + task.ID, Parent: "agent:" + mid.ID, Name: "leaf", TTL: "1h"})
			if err != nil {
				t.Fatal(err)
			}
			for _, a := range []*engine.Agent{mid, leaf} {
				if _, _, err := r.e.CreateGrant(ctx, engine.CreateGrantInput{Holder: "agent:" + a.ID, Permission: "read", Resource: "repo:acme/api", TTL: "20m"}); err != nil {
					t.Fatal(err)
				}
			}
			q := r.query("agent:" + leaf.ID)
			r.cachedAllow(q)
			if err := c.revoke(top, mid); err != nil {
				t.Fatal(err)
			}
			if d := r.decide(q); d.Allowed || d.Reason != c.want {
				t.Fatalf("after %s the leaf's check answers allowed=%v %s (cached=%v), want %s", c.name, d.Allowed, d.Reason, d.Cached, c.want)
			}
		})
	}
}
