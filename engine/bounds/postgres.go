package bounds

import (
	"context"
	"fmt"
	"strings"
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
	return &PostgresStore{pool: pool, asyncCommit: !strings.Contains(version, "CockroachDB")}, nil
}

// Close releases the connections.
func (s *PostgresStore) Close() { s.pool.Close() }

// Record implements Store in one round trip: a pgx batch runs as one
// implicit transaction, which locks the agent's row, adds the event and
// counts every window. crdb.ExecuteCtx retries it whole on a retryable
// (serialization) error.
func (s *PostgresStore) Record(ctx context.Context, ev Event, l Limits) (Counts, error) {
	var c Counts
	err := crdb.ExecuteCtx(ctx, func(ctx context.Context, _ ...any) error {
		c = Counts{}
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
			ON CONFLICT (agent_id) DO UPDATE SET touched_at = excluded.touched_at`, ev.Agent, ev.At)
		sec := ev.At.Unix()
		count := func(kind int, window time.Duration, into *int) {
			// The window is the last window/1s seconds, this one included.
			b.Queue(`SELECT coalesce(sum(n), 0) FROM mandate_bound_counts WHERE agent_id = $1 AND kind = $2 AND second > $3`,
				ev.Agent, kind, sec-int64(window/time.Second)).QueryRow(func(r pgx.Row) error { return r.Scan(into) })
		}
		bump := func(kind int) {
			b.Queue(`INSERT INTO mandate_bound_counts (agent_id, kind, second, n) VALUES ($1, $2, $3, 1)
				ON CONFLICT (agent_id, kind, second) DO UPDATE SET n = mandate_bound_counts.n + 1`, ev.Agent, kind, sec)
		}
		if l.ChecksPerMinute > 0 {
			bump(kindCheck)
			count(kindCheck, CheckWindow, &c.Checks)
		}
		if l.MaxDenials > 0 {
			if ev.Denied {
				bump(kindDenial)
			}
			count(kindDenial, l.Window(), &c.Denials)
		}
		if l.ResourcesPerHour > 0 {
			b.Queue(`INSERT INTO mandate_bound_resources (agent_id, resource, seen_at) VALUES ($1, $2, $3)
				ON CONFLICT (agent_id, resource) DO UPDATE SET seen_at = excluded.seen_at`, ev.Agent, ev.Resource, ev.At)
			b.Queue(`SELECT count(*) FROM mandate_bound_resources WHERE agent_id = $1 AND seen_at > $2`,
				ev.Agent, ev.At.Add(-ResourceWindow)).QueryRow(func(r pgx.Row) error { return r.Scan(&c.Resources) })
		}
		return s.pool.SendBatch(ctx, b).Close()
	})
	if err != nil {
		return Counts{}, fmt.Errorf("recording a check against the agent's bounds: %w", err)
	}
	return c, nil
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
