package decider

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/mandate-dev/mandate/engine"
	"github.com/mandate-dev/mandate/engine/alert"
	"github.com/mandate-dev/mandate/engine/audit"
	"github.com/mandate-dev/mandate/engine/bounds"
)

// answer is a Decider that always gives the same answer.
type answer struct {
	d   engine.Decision
	err error
}

func (a answer) Decide(context.Context, engine.Query) (engine.Decision, error) { return a.d, a.err }

var (
	allow       = engine.Decision{Allowed: true, Reason: engine.ReasonAllowed, Grants: []string{"grt_1"}}
	noGrant     = engine.Decision{Reason: engine.ReasonNoGrant}
	suspended   = engine.Decision{Reason: engine.ReasonAgentSuspended}
	errSpiceDB  = &engine.Error{Kind: engine.KindUnavailable, Msg: "authorization backend unavailable", Err: engine.ErrUnavailable}
	errCounting = errors.New("the counts table is gone")
)

func ref(t *testing.T, s string) engine.Ref {
	t.Helper()
	r, err := engine.ParseRef("ref", s)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func query(t *testing.T, subject string) engine.Query {
	return engine.Query{Subject: ref(t, subject), Permission: "read", Resource: ref(t, "repo:acme/api"),
		DecisionID: audit.NewID("dec"), RequestID: "req_1", Caller: "ci", CorrelationID: "deploy-42", StatedReason: "pull", CountsForBounds: true}
}

func recorder(t *testing.T, mode string) (*audit.Recorder, *audit.MemoryStore) {
	t.Helper()
	store := audit.NewMemoryStore(100, 0)
	rec, err := audit.NewRecorder(audit.Config{Store: store, Mode: mode})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { rec.Run(context.Background()); close(done) }()
	t.Cleanup(func() { rec.Close(); <-done })
	return rec, store
}

func stored(t *testing.T, rec *audit.Recorder, store *audit.MemoryStore) []audit.Record {
	t.Helper()
	if err := rec.Sync(context.Background()); err != nil {
		t.Fatal(err)
	}
	rs, err := store.Query(context.Background(), audit.Filter{PageSize: 100})
	if err != nil {
		t.Fatal(err)
	}
	return rs
}

func TestAuditRecordsEveryDecision(t *testing.T) {
	for _, tc := range []struct {
		name     string
		next     answer
		decision string
	}{
		{"allow", answer{d: allow}, audit.DecisionAllow},
		{"deny", answer{d: noGrant}, audit.DecisionDeny},
		// A check that errors leaves a record of decision "error", and the
		// error, never an allow, goes back.
		{"error", answer{err: errSpiceDB}, audit.DecisionError},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rec, store := recorder(t, audit.ModeBatched)
			q := query(t, "agent:agt_1")
			d, err := NewAudit(tc.next, rec).Decide(context.Background(), q)
			if !errors.Is(err, tc.next.err) || d.Allowed != tc.next.d.Allowed {
				t.Fatalf("got %+v, %v; want what the next decider said", d, err)
			}
			rs := stored(t, rec, store)
			if len(rs) != 1 {
				t.Fatalf("%d records, want 1", len(rs))
			}
			r := rs[0]
			if r.Decision != tc.decision || r.ID != q.DecisionID || r.RequestID != "req_1" || r.Caller != "ci" ||
				r.CorrelationID != "deploy-42" || r.Reason != "pull" || r.Subject != "agent:agt_1" || r.Kind != audit.KindCheck {
				t.Fatalf("record %+v", r)
			}
		})
	}
}

// brokenAudit cannot store anything.
type brokenAudit struct{ audit.Store }

func (brokenAudit) Write(context.Context, []audit.Record) error {
	return errors.New("the audit database is gone")
}

func TestStrictAuditFailsTheCheck(t *testing.T) {
	// A store that cannot write, and no spool: nothing can be made durable.
	rec, err := audit.NewRecorder(audit.Config{Store: brokenAudit{audit.NewMemoryStore(10, 0)}, Mode: audit.ModeStrict})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { rec.Run(context.Background()); close(done) }()
	t.Cleanup(func() { rec.Close(); <-done })
	d, err := NewAudit(answer{d: allow}, rec).Decide(context.Background(), query(t, "agent:agt_1"))
	var ee *engine.Error
	if !errors.As(err, &ee) || ee.Kind != engine.KindUnavailable || d.Allowed {
		t.Fatalf("got %+v, %v; want Unavailable and no allow", d, err)
	}
}

// observations counts what it observes.
type observations struct{ n atomic.Int32 }

func (o *observations) Observe(float64) { o.n.Add(1) }

func TestMetricsObserveByResult(t *testing.T) {
	var allowed, denied, errored observations
	for _, next := range []answer{{d: allow}, {d: noGrant}, {d: noGrant}, {err: errSpiceDB}} {
		_, _ = NewMetrics(next, &allowed, &denied, &errored).Decide(context.Background(), query(t, "agent:agt_1"))
	}
	if allowed.n.Load() != 1 || denied.n.Load() != 2 || errored.n.Load() != 1 {
		t.Fatalf("allowed %d, denied %d, error %d; want 1, 2, 1", allowed.n.Load(), denied.n.Load(), errored.n.Load())
	}
}

// agents fakes the engine's side of bounds.
type agents struct {
	limits     bounds.Limits
	limitsErr  error
	suspends   atomic.Int32
	suspendErr error
	// failFirst fails that many suspensions with errSpiceDB, then succeeds.
	failFirst int32
}

func (a *agents) AgentBounds(context.Context, string) (bounds.Limits, error) {
	return a.limits, a.limitsErr
}
func (a *agents) SuspendAgent(context.Context, string) (*engine.Agent, string, error) {
	if n := a.suspends.Add(1); n <= a.failFirst {
		return nil, "", errSpiceDB
	}
	return &engine.Agent{}, "", a.suspendErr
}
func (a *agents) Descendants(context.Context, string) ([]engine.Ref, error) { return nil, nil }

// failingStore cannot count.
type failingStore struct{ bounds.Store }

func (failingStore) Record(context.Context, bounds.Event, bounds.Limits) (bounds.Counts, error) {
	return bounds.Counts{}, errCounting
}

func newBounds(t *testing.T, next engine.Decider, ag *agents, store bounds.Store, rec *audit.Recorder) *Bounds {
	t.Helper()
	b, err := NewBounds(next, BoundsConfig{Agents: ag, Store: store, Audit: rec, Alerter: &alert.Alerter{}, Metrics: NewBoundsMetrics(prometheus.NewRegistry())})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestBoundsCrossing(t *testing.T) {
	ag := &agents{limits: bounds.Limits{ChecksPerMinute: 3}}
	rec, store := recorder(t, audit.ModeBatched)
	b := newBounds(t, answer{d: allow}, ag, bounds.NewMemoryStore(), rec)
	for i := 1; i <= 5; i++ {
		d, err := b.Decide(context.Background(), query(t, "agent:agt_1"))
		if err != nil {
			t.Fatal(err)
		}
		over := i > 3
		if d.Allowed == over || (d.Reason == engine.ReasonBoundExceeded) != over {
			t.Fatalf("check %d: %+v", i, d)
		}
		if over && (d.Bound != bounds.ChecksPerMinute || len(d.Grants) != 0) {
			t.Fatalf("check %d: %+v", i, d)
		}
	}
	if n := ag.suspends.Load(); n != 1 {
		t.Fatalf("%d suspensions, want 1 (only the check that crossed)", n)
	}
	var changes int
	for _, r := range stored(t, rec, store) {
		if r.Action == "agent.auto_suspend" {
			changes++
		}
	}
	if changes != 1 {
		t.Fatalf("%d agent.auto_suspend records, want 1", changes)
	}
}

func TestBoundsConcurrentBurstSuspendsOnce(t *testing.T) {
	ag := &agents{limits: bounds.Limits{ChecksPerMinute: 4}}
	b := newBounds(t, answer{d: allow}, ag, bounds.NewMemoryStore(), nil)
	var wg sync.WaitGroup
	var exceeded atomic.Int32
	for i := 0; i < 12; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			d, err := b.Decide(context.Background(), query(t, "agent:agt_1"))
			if err == nil && d.Reason == engine.ReasonBoundExceeded {
				exceeded.Add(1)
			}
		}()
	}
	wg.Wait()
	if exceeded.Load() != 8 || ag.suspends.Load() != 1 {
		t.Fatalf("%d exceeded (want 8), %d suspensions (want 1)", exceeded.Load(), ag.suspends.Load())
	}
}

func TestBoundsFailClosed(t *testing.T) {
	for _, tc := range []struct {
		name  string
		ag    *agents
		store bounds.Store
	}{
		{"the count cannot be recorded", &agents{limits: bounds.Limits{ChecksPerMinute: 100}}, failingStore{}},
		{"the agent's bounds cannot be read", &agents{limitsErr: errSpiceDB}, bounds.NewMemoryStore()},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d, err := newBounds(t, answer{d: allow}, tc.ag, tc.store, nil).Decide(context.Background(), query(t, "agent:agt_1"))
			var ee *engine.Error
			if !errors.As(err, &ee) || ee.Kind != engine.KindUnavailable || d.Allowed {
				t.Fatalf("got %+v, %v; want Unavailable and no allow", d, err)
			}
		})
	}
}

func TestBoundsCountOnlyTheAgentsBehaviour(t *testing.T) {
	for _, tc := range []struct {
		name    string
		subject string
		next    answer
	}{
		{"a user check", "user:alice", answer{d: allow}},
		{"an agent that cannot act", "agent:agt_1", answer{d: suspended}},
		{"an error, passed on", "agent:agt_1", answer{err: errSpiceDB}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			// A store that fails proves nothing was counted.
			b := newBounds(t, tc.next, &agents{limits: bounds.Limits{ChecksPerMinute: 1}}, failingStore{}, nil)
			d, err := b.Decide(context.Background(), query(t, tc.subject))
			if !errors.Is(err, tc.next.err) || d.Reason != tc.next.d.Reason {
				t.Fatalf("got %+v, %v; want the next decider's answer untouched", d, err)
			}
		})
	}
}

func TestBoundsDenialsAndReset(t *testing.T) {
	ag := &agents{limits: bounds.Limits{MaxDenials: 1, DenialWindow: time.Minute}}
	store := bounds.NewMemoryStore()
	b := newBounds(t, answer{d: noGrant}, ag, store, nil)
	q := query(t, "agent:agt_1")
	if d, _ := b.Decide(context.Background(), q); d.Reason != engine.ReasonNoGrant {
		t.Fatalf("first denial: %+v", d)
	}
	if d, _ := b.Decide(context.Background(), q); d.Reason != engine.ReasonBoundExceeded || d.Bound != bounds.DeniedChecks {
		t.Fatalf("second denial: %+v", d)
	}
	if err := b.Reset(context.Background(), "agt_1"); err != nil {
		t.Fatal(err)
	}
	if d, _ := b.Decide(context.Background(), q); d.Reason != engine.ReasonNoGrant {
		t.Fatalf("after a reset: %+v", d)
	}
}

// flakyAudit fails its first fail writes, then stores.
type flakyAudit struct {
	*audit.MemoryStore
	fail atomic.Int32
}

func (f *flakyAudit) Write(ctx context.Context, rs []audit.Record) error {
	if f.fail.Add(-1) >= 0 {
		return errors.New("the audit database is briefly gone")
	}
	return f.MemoryStore.Write(ctx, rs)
}

// TestFailedSuspensionIsRetried: a suspension that fails (SpiceDB down) is
// retried until it lands, and then recorded; the audit record of the
// crossing, refused by the audit store at first, is retried until stored.
func TestFailedSuspensionIsRetried(t *testing.T) {
	ag := &agents{limits: bounds.Limits{ChecksPerMinute: 1}, failFirst: 3}
	mem := audit.NewMemoryStore(100, 0)
	store := &flakyAudit{MemoryStore: mem}
	store.fail.Store(2)
	rec, err := audit.NewRecorder(audit.Config{Store: store, Mode: audit.ModeStrict})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { rec.Run(context.Background()); close(done) }()
	t.Cleanup(func() { rec.Close(); <-done })
	b, err := NewBounds(answer{d: allow}, BoundsConfig{Agents: ag, Store: bounds.NewMemoryStore(), Audit: rec, Alerter: &alert.Alerter{}, RetryBackoff: 5 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	for i := 0; i < 2; i++ {
		if _, err := b.Decide(context.Background(), query(t, "agent:agt_1")); err != nil {
			t.Fatal(err)
		}
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		var first, landed *audit.Record
		rs, _ := mem.Query(context.Background(), audit.Filter{PageSize: 100})
		for i := range rs {
			if rs[i].Action != "agent.auto_suspend" {
				continue
			}
			if rs[i].Details["suspend_error"] != nil {
				first = &rs[i]
			} else {
				landed = &rs[i]
			}
		}
		if first != nil && landed != nil {
			if n := ag.suspends.Load(); n != 4 {
				t.Fatalf("%d suspension attempts, want 4 (3 failures, then success)", n)
			}
			if fmt.Sprint(landed.Details["attempts"]) != "4" {
				t.Fatalf("the landed suspension's record says %v attempts, want 4", landed.Details["attempts"])
			}
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("after 10 s: failed-attempt record %v, landed record %v, %d attempts", first, landed, ag.suspends.Load())
		}
		time.Sleep(10 * time.Millisecond)
	}
}
