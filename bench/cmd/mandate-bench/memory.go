package main

import (
	"context"
	"fmt"
	"os"
	"runtime"
	"runtime/debug"
	"strings"
	"sync"
	"time"

	"github.com/mandate-dev/mandate/engine"
	"github.com/mandate-dev/mandate/engine/cache"
)

type engineUpdate = engine.RelationshipUpdate

// shaped is a Decider that answers at once with a decision shaped like a real
// agent allow, so the cache's own footprint can be measured at 1M entries
// without 1M SpiceDB checks. As in the engine, everything about an agent's
// chain (its refs, task, principal) is shared by all of its decisions, while
// grant ids and tokens are per decision.
type shaped struct {
	mu     sync.Mutex
	chains map[string]engine.Decision
}

func (s *shaped) Decide(_ context.Context, q engine.Query) (engine.Decision, error) {
	s.mu.Lock()
	d, ok := s.chains[q.Subject.ID]
	if !ok {
		d = engine.Decision{
			Allowed: true, Reason: engine.ReasonAllowed,
			Principal: engine.Ref{Type: "user", ID: "u" + q.Subject.ID[len(q.Subject.ID)-4:]},
			Task:      engine.Ref{Type: "task", ID: engine.NewID(engine.PrefixTask)},
		}
		d.Chain = []engine.Ref{q.Subject, {Type: "agent", ID: engine.NewID(engine.PrefixAgent)}, d.Principal}
		s.chains[q.Subject.ID] = d
	}
	s.mu.Unlock()
	d.ValidUntil = time.Now().Add(time.Hour)
	d.Grants = []string{engine.NewID(engine.PrefixGrant)}
	d.Token = strings.Clone("GiAKHjE3OTU3NzgxNDM1NzM0MDIxNjQSCDQyYjNiM2Q3")
	return d, nil
}

// memoryReport fills a decision cache with n distinct decisions and reports
// the process's resident memory.
func memoryReport(n int) {
	c, err := cache.New(&shaped{chains: map[string]engine.Decision{}}, cache.Config{Size: n})
	must(err)
	c.MarkWatchEvent("")
	before := status("VmRSS:")
	agents := make([]string, 100_000)
	for i := range agents {
		agents[i] = engine.NewID(engine.PrefixAgent)
	}
	start := time.Now()
	for i := 0; i < n; i++ {
		q := engine.Query{Subject: engine.Ref{Type: "agent", ID: agents[i%len(agents)]}, Permission: "read",
			Resource: engine.Ref{Type: "repo", ID: fmt.Sprintf("org%d/repo%d", i%100, i/len(agents))}}
		if _, err := c.Decide(context.Background(), q); err != nil {
			must(err)
		}
	}
	fmt.Printf("cached decisions: %d (filled in %v)\n", c.Len(), time.Since(start).Round(time.Millisecond))
	fmt.Printf("resident memory right after filling: %.0f MiB (peak %.0f MiB; before filling: %.0f MiB)\n", status("VmRSS:"), status("VmHWM:"), before)
	runtime.GC()
	debug.FreeOSMemory()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	fmt.Printf("resident memory after a GC returns free pages: %.0f MiB\n", status("VmRSS:"))
	fmt.Printf("go heap in use: %.0f MiB (%.0f bytes per cached decision, the synthetic decider's own per-agent data included)\n",
		float64(ms.HeapInuse)/(1<<20), float64(ms.HeapInuse)/float64(c.Len()))
}

// status reads a memory line of /proc/self/status, in MiB.
func status(field string) float64 { return statusOf(os.Getpid(), field) }
