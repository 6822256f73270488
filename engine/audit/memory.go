package audit

import (
	"context"
	"sort"
	"sync"
)

// MemoryStore keeps the most recent records in memory, bounded. It is the
// store when no database is configured.
type MemoryStore struct {
	mu    sync.RWMutex
	max   int
	ring  []*Record // guarded by mu; a ring of at most max records
	next  int       // guarded by mu; where the next record goes
	full  bool      // guarded by mu; the ring has wrapped
	index map[string]bool
}

// NewMemoryStore keeps at most max records (default 100000).
func NewMemoryStore(max int) *MemoryStore {
	if max <= 0 {
		max = 100_000
	}
	return &MemoryStore{max: max, index: map[string]bool{}}
}

// Write implements Store. Past max records, the oldest are forgotten.
func (m *MemoryStore) Write(_ context.Context, rs []Record) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	for i := range rs {
		r := &rs[i] // the batch is not reused after a write
		if m.index[r.ID] {
			continue
		}
		if m.full {
			delete(m.index, m.ring[m.next].ID)
			m.ring[m.next] = r
		} else {
			m.ring = append(m.ring, r)
		}
		m.index[r.ID] = true
		m.next++
		if m.next == m.max {
			m.next, m.full = 0, true
		}
	}
	return nil
}

// Query implements Store.
func (m *MemoryStore) Query(_ context.Context, f Filter) ([]Record, error) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	// Records arrive nearly in time order; sort a view to be exact.
	idx := make([]int, len(m.ring))
	for i := range idx {
		idx[i] = i
	}
	sort.SliceStable(idx, func(a, b int) bool {
		ra, rb := m.ring[idx[a]], m.ring[idx[b]]
		if !ra.Time.Equal(rb.Time) {
			return ra.Time.After(rb.Time)
		}
		return ra.ID > rb.ID
	})
	var out []Record
	for _, i := range idx {
		r := m.ring[i]
		if f.After != nil && !f.After.Before(r) {
			continue
		}
		if !f.Matches(r) {
			continue
		}
		out = append(out, *r)
		if len(out) == f.PageSize {
			break
		}
	}
	return out, nil
}

// Len is the number of records kept.
func (m *MemoryStore) Len() int {
	m.mu.RLock()
	defer m.mu.RUnlock()
	return len(m.ring)
}
