package bounds_test

import (
	"context"
	"fmt"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mandate-dev/mandate/engine/bounds"
	"github.com/mandate-dev/mandate/engine/embedded"
)

const postgresEnv = "MANDATE_TEST_POSTGRES_DSN"

func freshDSN(t *testing.T) string {
	t.Helper()
	dsn := os.Getenv(postgresEnv)
	if dsn == "" {
		t.Skipf("%s is not set; skipping the Postgres store", postgresEnv)
	}
	uri, drop, err := embedded.CreateDatabase(context.Background(), dsn, "mandate_bounds")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(drop)
	return uri
}

type store struct {
	name string
	open func(t *testing.T) bounds.Store
}

func stores() []store {
	return []store{
		{"memory", func(*testing.T) bounds.Store { return bounds.NewMemoryStore() }},
		{"postgres", func(t *testing.T) bounds.Store {
			s, err := bounds.OpenPostgres(context.Background(), freshDSN(t))
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(s.Close)
			return s
		}},
	}
}

var t0 = time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC)

func record(t *testing.T, s bounds.Store, l bounds.Limits, ev bounds.Event) []bounds.Crossing {
	t.Helper()
	c, err := s.Record(context.Background(), ev, l)
	if err != nil {
		t.Fatal(err)
	}
	return bounds.Crossed(l, c)
}

func TestBoundsTripAtThreshold(t *testing.T) {
	for _, st := range stores() {
		t.Run(st.name, func(t *testing.T) {
			s := st.open(t)
			t.Run("checks per minute", func(t *testing.T) {
				l := bounds.Limits{ChecksPerMinute: 5}
				for i := 0; i < 5; i++ {
					if x := record(t, s, l, bounds.Event{Agent: "a1", Resource: "repo:x", At: t0.Add(time.Duration(i) * time.Second)}); len(x) > 0 {
						t.Fatalf("check %d crossed %v", i+1, x)
					}
				}
				x := record(t, s, l, bounds.Event{Agent: "a1", Resource: "repo:x", At: t0.Add(5 * time.Second)})
				if len(x) != 1 || x[0].Bound != bounds.ChecksPerMinute || x[0].Observed != 6 || x[0].Limit != 5 {
					t.Fatalf("sixth check: %v", x)
				}
				// The window slides: a minute after the first check, it no longer counts.
				if err := s.Reset(context.Background(), "a1"); err != nil {
					t.Fatal(err)
				}
				for i := 0; i < 5; i++ {
					record(t, s, l, bounds.Event{Agent: "a1", Resource: "repo:x", At: t0.Add(time.Duration(i) * time.Second)})
				}
				if x := record(t, s, l, bounds.Event{Agent: "a1", Resource: "repo:x", At: t0.Add(time.Minute)}); len(x) > 0 {
					t.Fatalf("the first check should have left the window: %v", x)
				}
				// Other agents have their own budget.
				if x := record(t, s, l, bounds.Event{Agent: "a2", Resource: "repo:x", At: t0}); len(x) > 0 {
					t.Fatalf("another agent crossed: %v", x)
				}
			})
			t.Run("denials in a sliding window", func(t *testing.T) {
				l := bounds.Limits{MaxDenials: 3, DenialWindow: 10 * time.Second}
				at := func(s int) time.Time { return t0.Add(time.Duration(s) * time.Second) }
				for i, ev := range []bounds.Event{
					{Denied: true, At: at(0)}, {Denied: false, At: at(1)}, {Denied: true, At: at(2)}, {Denied: true, At: at(3)},
					{Denied: false, At: at(4)},
				} {
					ev.Agent, ev.Resource = "d1", "repo:x"
					if x := record(t, s, l, ev); len(x) > 0 {
						t.Fatalf("event %d crossed %v", i, x)
					}
				}
				// At 10s the first denial has left the window: three remain with this one.
				if x := record(t, s, l, bounds.Event{Agent: "d1", Resource: "repo:x", Denied: true, At: at(10)}); len(x) > 0 {
					t.Fatalf("crossed with the first denial out of the window: %v", x)
				}
				x := record(t, s, l, bounds.Event{Agent: "d1", Resource: "repo:x", Denied: true, At: at(11)})
				if len(x) != 1 || x[0].Bound != bounds.DeniedChecks || x[0].Observed != 4 || x[0].Window != 10*time.Second {
					t.Fatalf("fourth denial in the window: %v", x)
				}
			})
			t.Run("distinct resources per hour", func(t *testing.T) {
				l := bounds.Limits{ResourcesPerHour: 3}
				for i, r := range []string{"repo:a", "repo:b", "repo:a", "repo:c", "repo:c", "repo:b"} {
					if x := record(t, s, l, bounds.Event{Agent: "r1", Resource: r, At: t0.Add(time.Duration(i) * time.Minute)}); len(x) > 0 {
						t.Fatalf("touch %d (%s) crossed %v", i, r, x)
					}
				}
				x := record(t, s, l, bounds.Event{Agent: "r1", Resource: "repo:d", At: t0.Add(10 * time.Minute)})
				if len(x) != 1 || x[0].Bound != bounds.ResourcesPerHour || x[0].Observed != 4 {
					t.Fatalf("fourth resource: %v", x)
				}
			})
		})
	}
}

// TestPostgresSharedAndDurable: two stores on one database (two replicas)
// share one budget exactly, and a reopened store (a restart) keeps counting.
func TestPostgresSharedAndDurable(t *testing.T) {
	dsn := freshDSN(t)
	ctx := context.Background()
	open := func() *bounds.PostgresStore {
		s, err := bounds.OpenPostgres(ctx, dsn)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	r1, r2 := open(), open()
	defer r2.Close()
	l := bounds.Limits{ChecksPerMinute: 40, MaxDenials: 100, ResourcesPerHour: 100}
	var wg sync.WaitGroup
	seen := make(chan int, 40)
	var mu sync.Mutex
	denials := map[int]bool{}
	maxRes := 0
	for i := 0; i < 40; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			s := r1
			if i%2 == 1 {
				s = r2
			}
			denied := i%2 == 0
			c, err := s.Record(ctx, bounds.Event{Agent: "shared", Resource: fmt.Sprintf("repo:%d", i%10), Denied: denied, At: t0.Add(time.Duration(i) * time.Millisecond)}, l)
			if err != nil {
				t.Error(err)
				return
			}
			seen <- c.Checks
			mu.Lock()
			defer mu.Unlock()
			if denied {
				if denials[c.Denials] {
					t.Errorf("two denials saw the same count %d", c.Denials)
				}
				denials[c.Denials] = true
			}
			if c.Resources < 1 || c.Resources > 10 {
				t.Errorf("resources count %d outside 1..10", c.Resources)
			}
			maxRes = max(maxRes, c.Resources)
		}(i)
	}
	wg.Wait()
	close(seen)
	counts := map[int]bool{}
	for c := range seen {
		if counts[c] {
			t.Errorf("two replicas saw the same count %d: the budget was not shared", c)
		}
		counts[c] = true
	}
	if len(counts) != 40 || !counts[40] {
		t.Fatalf("counts %v, want 1..40 once each", counts)
	}
	if len(denials) != 20 || !denials[20] || maxRes != 10 {
		t.Fatalf("denial counts %v (want 1..20 once each), most resources %d (want 10)", denials, maxRes)
	}
	r1.Close()

	// A restart: a new store on the same database keeps the counts.
	r3 := open()
	defer r3.Close()
	c, err := r3.Record(ctx, bounds.Event{Agent: "shared", Resource: "repo:0", At: t0.Add(time.Second)}, l)
	if err != nil {
		t.Fatal(err)
	}
	if x := bounds.Crossed(l, c); len(x) != 1 || x[0].Observed != 41 || c.Resources != 10 || c.Denials != 20 {
		t.Fatalf("after a restart: counts %+v crossed %v", c, x)
	}
	if err := r3.Prune(ctx, t0.Add(2*time.Hour)); err != nil {
		t.Fatal(err)
	}
	c, _ = r3.Record(ctx, bounds.Event{Agent: "shared", Resource: "repo:x", At: t0.Add(2 * time.Hour)}, l)
	if c.Checks != 1 {
		t.Fatalf("after pruning, checks = %d, want 1", c.Checks)
	}
}

func TestLimits(t *testing.T) {
	l := bounds.Limits{MaxDenials: 2}.Or(bounds.Limits{ChecksPerMinute: 9, MaxDenials: 5, DenialWindow: time.Minute, ResourcesPerHour: 4})
	if l != (bounds.Limits{ChecksPerMinute: 9, MaxDenials: 2, DenialWindow: time.Minute, ResourcesPerHour: 4}) {
		t.Fatalf("Or = %+v", l)
	}
	for _, c := range []struct {
		l     bounds.Limits
		field string
	}{
		{bounds.Limits{ChecksPerMinute: -1}, "bounds.checks_per_minute"},
		{bounds.Limits{MaxDenials: -1}, "bounds.max_denials"},
		{bounds.Limits{ResourcesPerHour: -1}, "bounds.resources_per_hour"},
		{bounds.Limits{DenialWindow: 25 * time.Hour}, "bounds.denial_window"},
		{bounds.Limits{DenialWindow: time.Millisecond}, "bounds.denial_window"},
	} {
		if f, err := c.l.Validate("bounds."); err == nil || f != c.field {
			t.Errorf("%+v: field %q err %v, want %s", c.l, f, err, c.field)
		}
	}
}

func TestWithin(t *testing.T) {
	parent := bounds.Limits{ChecksPerMinute: 10, MaxDenials: 3, DenialWindow: 10 * time.Minute}
	for _, c := range []struct {
		name      string
		own, want bounds.Limits
	}{
		{"unset takes the outer bound", bounds.Limits{}, bounds.Limits{ChecksPerMinute: 10, MaxDenials: 3, DenialWindow: 10 * time.Minute}},
		{"higher is clamped", bounds.Limits{ChecksPerMinute: 100, MaxDenials: 50}, bounds.Limits{ChecksPerMinute: 10, MaxDenials: 3, DenialWindow: 10 * time.Minute}},
		{"lower stays", bounds.Limits{ChecksPerMinute: 5, MaxDenials: 1, DenialWindow: time.Hour}, bounds.Limits{ChecksPerMinute: 5, MaxDenials: 1, DenialWindow: time.Hour}},
		{"shorter window is widened", bounds.Limits{MaxDenials: 3, DenialWindow: time.Minute}, bounds.Limits{ChecksPerMinute: 10, MaxDenials: 3, DenialWindow: 10 * time.Minute}},
		{"a bound the parent lacks is kept", bounds.Limits{ResourcesPerHour: 7}, bounds.Limits{ChecksPerMinute: 10, MaxDenials: 3, DenialWindow: 10 * time.Minute, ResourcesPerHour: 7}},
	} {
		if got := c.own.Within(parent); got != c.want {
			t.Errorf("%s: got %+v, want %+v", c.name, got, c.want)
		}
	}
}

// TestPostgresWindowEdges: on Postgres a window of W seconds is the current
// second and the W−1 before it, exactly. Events in second S count until the
// clock reaches second S+W and not a moment longer: 1 ms either side of
// that edge decides.
func TestPostgresWindowEdges(t *testing.T) {
	s, err := bounds.OpenPostgres(context.Background(), freshDSN(t))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	l := bounds.Limits{ChecksPerMinute: 2}
	at := func(agent string, d time.Duration) []bounds.Crossing {
		return record(t, s, l, bounds.Event{Agent: agent, Resource: "repo:a", At: t0.Add(d)})
	}
	for _, c := range []struct {
		name  string
		third time.Duration // when the third check comes; the first two are in second 0
		cross bool
	}{
		{"last millisecond of the window", 59*time.Second + 999*time.Millisecond, true},
		{"first millisecond after it", 60 * time.Second, false},
	} {
		agent := strings.ReplaceAll(c.name, " ", "-")
		at(agent, 0)
		at(agent, 999*time.Millisecond)
		got := at(agent, c.third)
		if (len(got) > 0) != c.cross {
			t.Errorf("%s (%v): crossed %v, want %v", c.name, c.third, got, c.cross)
		}
	}
}
