package bounds

import (
	"context"
	"sync"
	"time"
)

// MemoryStore keeps counts in this process. It is exact for one replica and
// forgets everything on restart.
type MemoryStore struct {
	mu     sync.Mutex
	agents map[string]*agentCounts
}

type agentCounts struct {
	mu        sync.Mutex
	checks    []time.Time
	denials   []time.Time
	resources map[string]time.Time // last touch
}

// NewMemoryStore returns an empty store.
func NewMemoryStore() *MemoryStore { return &MemoryStore{agents: map[string]*agentCounts{}} }

func (s *MemoryStore) agent(id string) *agentCounts {
	s.mu.Lock()
	defer s.mu.Unlock()
	a, ok := s.agents[id]
	if !ok {
		a = &agentCounts{resources: map[string]time.Time{}}
		s.agents[id] = a
	}
	return a
}

// trim drops times at or before cutoff from a sorted slice.
func trim(ts []time.Time, cutoff time.Time) []time.Time {
	i := 0
	for i < len(ts) && !ts[i].After(cutoff) {
		i++
	}
	return ts[i:]
}

// Record implements Store.
func (s *MemoryStore) Record(_ context.Context, ev Event, l Limits) (Counts, error) {
	a := s.agent(ev.Agent)
	a.mu.Lock()
	defer a.mu.Unlock()
	var c Counts
	if l.ChecksPerMinute > 0 {
		a.checks = append(trim(a.checks, ev.At.Add(-CheckWindow)), ev.At)
		c.Checks = len(a.checks)
	}
	if l.MaxDenials > 0 {
		a.denials = trim(a.denials, ev.At.Add(-l.Window()))
		if ev.Denied {
			a.denials = append(a.denials, ev.At)
		}
		c.Denials = len(a.denials)
	}
	if l.ResourcesPerHour > 0 {
		a.resources[ev.Resource] = ev.At
		cutoff := ev.At.Add(-ResourceWindow)
		for r, t := range a.resources {
			if !t.After(cutoff) {
				delete(a.resources, r)
			}
		}
		c.Resources = len(a.resources)
	}
	return c, nil
}

// Reset implements Store.
func (s *MemoryStore) Reset(_ context.Context, agent string) error {
	s.mu.Lock()
	delete(s.agents, agent)
	s.mu.Unlock()
	return nil
}

// Prune implements Store: it forgets agents with nothing left in any window.
func (s *MemoryStore) Prune(_ context.Context, now time.Time) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	for id, a := range s.agents {
		a.mu.Lock()
		a.checks = trim(a.checks, now.Add(-CheckWindow))
		a.denials = trim(a.denials, now.Add(-MaxDenialWindow))
		for r, t := range a.resources {
			if !t.After(now.Add(-ResourceWindow)) {
				delete(a.resources, r)
			}
		}
		empty := len(a.checks) == 0 && len(a.denials) == 0 && len(a.resources) == 0
		a.mu.Unlock()
		if empty {
			delete(s.agents, id)
		}
	}
	return nil
}
