package bounds

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/cockroachdb/cockroach-go/v2/crdb"
	crdbpgx "github.com/cockroachdb/cockroach-go/v2/crdb/crdbpgxv5"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// PostgresStore keeps counts in Postgres or CockroachDB, shared by every
// replica that points at the same database. Checks and denials are counted
// in one-second buckets: a window of W seconds is the current second and
// the W-1 before it. Distinct resources keep their last-seen time exactly. Record locks the agent's row
// for the length of one transaction, so concurrent checks of one agent on
// different replicas are counted one after the other: the budget is shared
// exactly, never granted once per replica.
type PostgresStore struct {
	pool *pgxpool.Pool
	// queues holds, per agent, the events waiting for the transaction in flight.
	mu     sync.Mutex
	queues map[string]*agentQueue
	// asyncCommit: on Postgres, counting transactions do not wait for their
	// commit to reach disk (synchronous_commit = off). CockroachDB has no
	// such setting.
	asyncCommit bool
}

const (
	kindCheck  = 1
	kindDenial = 2
)

var migrations = []string{
	`CREATE TABLE IF NOT EXISTS mandate_bound_agents (
		agent_id TEXT PRIMARY KEY,
		touched_at TIMESTAMPTZ NOT NULL
	)`,
	// Checks and denials are counted per agent and per second: a window's
	// count is the sum of its buckets, at most one row a second, however many
	// checks the agent makes.
	`CREATE TABLE IF NOT EXISTS mandate_bound_counts (
		agent_id TEXT NOT NULL,
		kind SMALLINT NOT NULL,
		second BIGINT NOT NULL,
		n BIGINT NOT NULL,
		PRIMARY KEY (agent_id, kind, second)
	)`,
	`CREATE INDEX IF NOT EXISTS mandate_bound_counts_second ON mandate_bound_counts (second)`,
	`CREATE TABLE IF NOT EXISTS mandate_bound_resources (
		agent_id TEXT NOT NULL,
		resource TEXT NOT NULL,
		seen_at TIMESTAMPTZ NOT NULL,
		PRIMARY KEY (agent_id, resource)
	)`,
	`CREATE INDEX IF NOT EXISTS mandate_bound_resources_seen ON mandate_bound_resources (seen_at)`,
}

// OpenPostgres connects and creates the tables if they are missing.
func OpenPostgres(ctx context.Context, dsn string) (*PostgresStore, error) {
	cfg, err := pgxpool.ParseConfig(dsn)
	if err != nil {
		return nil, fmt.Errorf("bounds database: %w", err)
	}
	cfg.MaxConns = 8
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("bounds database: %w", err)
	}
	for _, m := range migrations {
		if _, err := pool.Exec(ctx, m); err != nil {
			pool.Close()
			return nil, fmt.Errorf("bounds migration: %w", err)
		}
	}
	var version string
	if err := pool.QueryRow(ctx, "SELECT version()").Scan(&version); err != nil {
		pool.Close()
		return nil, fmt.Errorf("bounds database: %w", err)
	}
	return &PostgresStore{pool: pool, queues: map[string]*agentQueue{}, asyncCommit: !strings.Contains(version, "CockroachDB")}, nil
}

// Close releases the connections.
func (s *PostgresStore) Close() { s.pool.Close() }

// Record implements Store. Concurrent events of one agent on this replica
// are combined: one caller records everything that queued while the last
// transaction ran, in one transaction, and each event still gets its own
// counts, in arrival order. Across replicas, the agent's row lock orders the
// transactions.
func (s *PostgresStore) Record(ctx context.Context, ev Event, l Limits) (Counts, error) {
	p := &pendingEvent{ev: ev, l: l, done: make(chan recorded, 1)}
	s.mu.Lock()
	q := s.queues[ev.Agent]
	if q == nil {
		q = &agentQueue{}
		s.queues[ev.Agent] = q
	}
	q.waiting = append(q.waiting, p)
	leader := !q.busy
	q.busy = true
	s.mu.Unlock()
	if leader {
		s.drain(ev.Agent, q)
	}
	select {
	case r := <-p.done:
		return r.c, r.err
	case <-ctx.Done():
		return Counts{}, ctx.Err()
	}
}

type pendingEvent struct {
	ev   Event
	l    Limits
	done chan recorded
}

type recorded struct {
	c   Counts
	err error
}

type agentQueue struct {
	waiting []*pendingEvent
	busy    bool
}

// drain records batches for one agent until nothing is waiting.
func (s *PostgresStore) drain(agent string, q *agentQueue) {
	for {
		s.mu.Lock()
		batch := q.waiting
		q.waiting = nil
		if len(batch) == 0 {
			q.busy = false
			delete(s.queues, agent)
			s.mu.Unlock()
			return
		}
		s.mu.Unlock()
		// The batch belongs to every caller in it: no one caller's
		// cancellation may fail the others.
		ctx, cancel := context.WithTimeout(context.Background(), batchTimeout)
		counts, err := s.recordBatch(ctx, batch)
		cancel()
		for i, p := range batch {
			if err != nil {
				p.done <- recorded{err: err}
			} else {
				p.done <- recorded{c: counts[i]}
			}
		}
	}
}

const batchTimeout = 5 * time.Second

// recordBatch records one agent's events in one round trip: a pgx batch
// runs as one implicit transaction, which locks the agent's row, adds the
// events and reads the totals. crdb.ExecuteCtx retries it whole on a
// retryable (serialization) error. Each event's counts are the totals less
// what came after it in the batch.
func (s *PostgresStore) recordBatch(ctx context.Context, batch []*pendingEvent) ([]Counts, error) {
	agent, l := batch[0].ev.Agent, batch[0].l
	last := batch[0].ev.At
	checksPerSec, deniedPerSec := map[int64]int{}, map[int64]int{}
	var resources []string
	seenRes := map[string]bool{}
	for _, p := range batch {
		if p.ev.At.After(last) {
			last = p.ev.At
		}
		checksPerSec[p.ev.At.Unix()]++
		if p.ev.Denied {
			deniedPerSec[p.ev.At.Unix()]++
		}
		if !seenRes[p.ev.Resource] {
			seenRes[p.ev.Resource] = true
			resources = append(resources, p.ev.Resource)
		}
	}
	var total Counts
	existing := map[string]bool{}
	err := crdb.ExecuteCtx(ctx, func(ctx context.Context, _ ...any) error {
		total = Counts{}
		clear(existing)
		b := &pgx.Batch{}
		if s.asyncCommit {
			// A count is worth a round trip, not an fsync: a Postgres crash
			// may forget the last moments of events (about three times
			// wal_writer_delay), which only ever undercounts.
			b.Queue(`SELECT set_config('synchronous_commit', 'off', true)`)
		}
		// The upsert takes the row lock that serialises this agent's events
		// until the batch commits.
		b.Queue(`INSERT INTO mandate_bound_agents (agent_id, touched_at) VALUES ($1, $2)
			ON CONFLICT (agent_id) DO UPDATE SET touched_at = excluded.touched_at`, agent, last)
		sec := last.Unix()
		bump := func(kind int, perSec map[int64]int) {
			for at, n := range perSec {
				b.Queue(`INSERT INTO mandate_bound_counts (agent_id, kind, second, n) VALUES ($1, $2, $3, $4)
					ON CONFLICT (agent_id, kind, second) DO UPDATE SET n = mandate_bound_counts.n + excluded.n`, agent, kind, at, n)
			}
		}
		count := func(kind int, window time.Duration, into *int) {
			// The window is the last window/1s seconds, this one included.
			b.Queue(`SELECT coalesce(sum(n), 0) FROM mandate_bound_counts WHERE agent_id = $1 AND kind = $2 AND second > $3`,
				agent, kind, sec-int64(window/time.Second)).QueryRow(func(r pgx.Row) error { return r.Scan(into) })
		}
		if l.ChecksPerMinute > 0 {
			bump(kindCheck, checksPerSec)
			count(kindCheck, CheckWindow, &total.Checks)
		}
		if l.MaxDenials > 0 {
			bump(kindDenial, deniedPerSec)
			count(kindDenial, l.Window(), &total.Denials)
		}
		if l.ResourcesPerHour > 0 {
			cutoff := last.Add(-ResourceWindow)
			b.Queue(`SELECT resource FROM mandate_bound_resources WHERE agent_id = $1 AND resource = ANY($2) AND seen_at > $3`,
				agent, resources, cutoff).Query(func(rows pgx.Rows) error {
				for rows.Next() {
					var r string
					if err := rows.Scan(&r); err != nil {
						return err
					}
					existing[r] = true
				}
				return rows.Err()
			})
			b.Queue(`INSERT INTO mandate_bound_resources (agent_id, resource, seen_at) SELECT $1, r, $3 FROM unnest($2::text[]) AS r
				ON CONFLICT (agent_id, resource) DO UPDATE SET seen_at = excluded.seen_at`, agent, resources, last)
			b.Queue(`SELECT count(*) FROM mandate_bound_resources WHERE agent_id = $1 AND seen_at > $2`,
				agent, cutoff).QueryRow(func(r pgx.Row) error { return r.Scan(&total.Resources) })
		}
		return s.pool.SendBatch(ctx, b).Close()
	})
	if err != nil {
		return nil, fmt.Errorf("recording a check against the agent's bounds: %w", err)
	}
	// Walk back from the totals: event i counts everything up to itself.
	out := make([]Counts, len(batch))
	c := total
	newRes := map[string]int{} // resource -> index of its first event in the batch
	for i, p := range batch {
		if _, ok := newRes[p.ev.Resource]; !ok && !existing[p.ev.Resource] {
			newRes[p.ev.Resource] = i
		}
	}
	for i := len(batch) - 1; i >= 0; i-- {
		out[i] = c
		c.Checks--
		if batch[i].ev.Denied {
			c.Denials--
		}
		if first, ok := newRes[batch[i].ev.Resource]; ok && first == i {
			c.Resources--
		}
	}
	for i := range out {
		if l.ChecksPerMinute == 0 {
			out[i].Checks = 0
		}
		if l.MaxDenials == 0 {
			out[i].Denials = 0
		}
		if l.ResourcesPerHour == 0 {
			out[i].Resources = 0
		}
	}
	return out, nil
}

// Reset implements Store.
func (s *PostgresStore) Reset(ctx context.Context, agent string) error {
	return crdbpgx.ExecuteTx(ctx, s.pool, pgx.TxOptions{}, func(tx pgx.Tx) error {
		b := &pgx.Batch{}
		b.Queue(`DELETE FROM mandate_bound_counts WHERE agent_id = $1`, agent)
		b.Queue(`DELETE FROM mandate_bound_resources WHERE agent_id = $1`, agent)
		b.Queue(`DELETE FROM mandate_bound_agents WHERE agent_id = $1`, agent)
		return tx.SendBatch(ctx, b).Close()
	})
}

// Prune implements Store. Every replica may run it; it is idempotent.
func (s *PostgresStore) Prune(ctx context.Context, now time.Time) error {
	b := &pgx.Batch{}
	b.Queue(`DELETE FROM mandate_bound_counts WHERE kind = $1 AND second <= $2`, kindCheck, now.Add(-CheckWindow).Unix())
	b.Queue(`DELETE FROM mandate_bound_counts WHERE second <= $1`, now.Add(-MaxDenialWindow).Unix())
	b.Queue(`DELETE FROM mandate_bound_resources WHERE seen_at <= $1`, now.Add(-ResourceWindow))
	b.Queue(`DELETE FROM mandate_bound_agents WHERE touched_at <= $1`, now.Add(-MaxDenialWindow))
	return s.pool.SendBatch(ctx, b).Close()
}
