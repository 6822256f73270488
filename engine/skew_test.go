package engine_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/mandate-dev/mandate/engine"
	"github.com/mandate-dev/mandate/engine/embedded"
)

// TestClockSkewBetweenReplicas: three replicas on one SpiceDB whose clocks
// are 2 s behind, exact and 2 s ahead, injected as a clock offset (Go ignores
// libfaketime). Every decision carries its replica's own "now" into SpiceDB,
// so a grant's end is as exact as the clock of the replica asked: 2 s late on
// the one behind, 2 s early on the one ahead; nothing else differs. The fault
// table in bench/RESULTS.md quotes this.
func TestClockSkewBetweenReplicas(t *testing.T) {
	srv := startEmbedded(t, embedded.Config{Engine: "memory"})
	truth := &clockAt{t: time.Now()}
	skewed := func(off time.Duration) func() time.Time { return func() time.Time { return truth.now().Add(off) } }
	replicas := []struct {
		name string
		off  time.Duration
		e    *engine.Engine
	}{{name: "behind", off: -2 * time.Second}, {name: "exact"}, {name: "ahead", off: 2 * time.Second}}
	for i := range replicas {
		replicas[i].e = engineOn(t, srv, engine.Config{Now: skewed(replicas[i].off)})
	}
	exact := &world{t: t, e: replicas[1].e}
	exact.admin("repo:acme/api#reader@user:alice")
	a := exact.agent(exact.task("user:alice", "1h"), nil, "1h")
	g := exact.mustGrant(ag(a), "read", "repo:acme/api", "15m")
	end := g.ExpiresAt

	for _, c := range []struct {
		at   time.Duration // true time relative to the grant's end
		want []bool        // behind, exact, ahead
	}{
		{-3 * time.Second, []bool{true, true, true}},
		{-1 * time.Second, []bool{true, true, false}},
		{+1 * time.Second, []bool{true, false, false}},
		{+3 * time.Second, []bool{false, false, false}},
	} {
		truth.t = end.Add(c.at)
		var got []string
		for i, r := range replicas {
			d := (&world{t: t, e: r.e}).check(ag(a), "read", "repo:acme/api")
			got = append(got, fmt.Sprintf("%s=%v", r.name, d.Allowed))
			if d.Allowed != c.want[i] {
				t.Errorf("%v from the grant's end: the replica %s allowed=%v (%s), want %v", c.at, r.name, d.Allowed, d.Reason, c.want[i])
			}
		}
		t.Logf("%+v from the grant's end: %v", c.at, got)
	}
}
