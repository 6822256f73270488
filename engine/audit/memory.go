package audit

import (
	"context"
	"encoding/json"
	"sort"
	"sync"
)

// MemoryStore keeps the most recent records in memory, bounded by count and
// by bytes: a caller that sends long values cannot grow the process without
// limit. It is the store when no database is configured.
type MemoryStore struct {
	mu       sync.RWMutex
	max      int
	maxBytes int64
	recs     []*Record // guarded by mu; oldest first, at most max
	bytes    int64     // guarded by mu; the estimated size of recs
	index    map[string]bool
}

// NewMemoryStore keeps at most maxRecords records (default 100000) of at
// most maxBytes in all (default 128 MiB), forgetting the oldest first.
func NewMemoryStore(maxRecords int, maxBytes int64) *MemoryStore {
	if maxRecords <= 0 {
		maxRecords = 100_000
	}
	if maxBytes <= 0 {
		maxBytes = 128 << 20
	}
	return &MemoryStore{max: maxRecords, maxBytes: maxBytes, index: map[string]bool{}}
}

// recordOverhead is the memory a record takes besides its strings' bytes:
// the struct, its slice and map headers, and the index entry.
const recordOverhead = 512

// size estimates the memory r holds.
func size(r *Record) int64 {
	n := recordOverhead + len(r.ID) + len(r.Kind) + len(r.Decision) + len(r.ReasonCode) + len(r.FailedLeg) +
		len(r.Subject) + len(r.Principal) + len(r.Task) + len(r.Permission) + len(r.Resource) + len(r.Reason) +
		len(r.CorrelationID) + len(r.RequestID) + len(r.Caller) + len(r.ConsistencyToken) + len(r.SourceAddr) +
		len(r.TraceID) + len(r.Workload) + len(r.Action) + len(r.Target)
	for _, s := range r.Chain {
		n += len(s) + 16
	}
	for _, s := range r.Grants {
		n += len(s) + 16
	}
	if len(r.Details) > 0 {
		b, _ := json.Marshal(r.Details)
		n += 2 * len(b) // maps and interfaces take more than their JSON
	}
	return int64(n)
}

// Write implements Store. Past max records or maxBytes, the oldest are forgotten.
func (m *MemoryStore) Write(_ context.Context, rs []Record) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	for i := range rs {
		r := &rs[i] // the batch is not reused after a write
		if m.index[r.ID] {
			continue
		}
		m.recs = append(m.recs, r)
		m.index[r.ID] = true
		m.bytes += size(r)
	}
	drop := 0
	for len(m.recs)-drop > m.max || (m.bytes > m.maxBytes && len(m.recs)-drop > 1) {
		old := m.recs[drop]
		m.bytes -= size(old)
		delete(m.index, old.ID)
		m.recs[drop] = nil
		drop++
	}
	if drop > 0 {
		m.recs = m.recs[drop:]
	}
	// Reslicing from the front never frees the array; copy to a fresh one
	// once most of its capacity is behind us.
	if cap(m.recs) > 2*len(m.recs)+1024 {
		m.recs = append(make([]*Record, 0, len(m.recs)+len(m.recs)/4), m.recs...)
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
		ra, rb := m.recs[idx[a]], m.recs[idx[b]]
		if !ra.Time.Equal(rb.Time) {
			return ra.Time.After(rb.Time)
		}
		return ra.ID > rb.ID
	})
	var out []Record
	for _, i := range idx {
		r := m.recs[i]
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
