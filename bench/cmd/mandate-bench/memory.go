package main

import (
	"context"
	"fmt"
	"os"
	"runtime"
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
	before := rss()
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
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	fmt.Printf("cached decisions: %d (filled in %v)\n", c.Len(), time.Since(start).Round(time.Millisecond))
	fmt.Printf("resident memory: %.0f MiB (before filling: %.0f MiB)\n", rss(), before)
	fmt.Printf("go heap in use: %.0f MiB\n", float64(ms.HeapInuse)/(1<<20))
}

// rss is the process's resident set in MiB.
func rss() float64 {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	for _, l := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(l, "VmRSS:") {
			var kb float64
			fmt.Sscanf(strings.TrimSpace(strings.TrimPrefix(l, "VmRSS:")), "%f", &kb)
			return kb / 1024
		}
	}
	return 0
}
