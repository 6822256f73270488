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
	recs  []Record // guarded by mu; oldest first, at most max
	index map[string]bool
}

// NewMemoryStore keeps at most max records (default 100000).
func NewMemoryStore(max int) *MemoryStore {
	if max <= 0 {
		max = 100_000
	}
	return &MemoryStore{max: max, index: map[string]bool{}}
}

// Write implements Store.
func (m *MemoryStore) Write(_ context.Context, rs []Record) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, r := range rs {
		if m.index[r.ID] {
			continue
		}
		m.index[r.ID] = true
		m.recs = append(m.recs, r)
	}
	if over := len(m.recs) - m.max; over > 0 {
		for _, r := range m.recs[:over] {
			delete(m.index, r.ID)
		}
		m.recs = append([]Record(nil), m.recs[over:]...)
	}
	return nil
}

// Query implements Store.
func (m *MemoryStore) Query(_ context.Context, f Filter) ([]Record, error) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	// Records arrive nearly in time order; sort a view to be exact.
	idx := make([]int, len(m.recs))
	for i := range idx {
		idx[i] = i
	}
	sort.SliceStable(idx, func(a, b int) bool {
		ra, rb := &m.recs[idx[a]], &m.recs[idx[b]]
		if !ra.Time.Equal(rb.Time) {
			return ra.Time.After(rb.Time)
		}
		return ra.ID > rb.ID
	})
	var out []Record
	for _, i := range idx {
		r := &m.recs[i]
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
	return len(m.recs)
}
