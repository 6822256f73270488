package bounds

import (
	"context"
	"fmt"
	"time"

	crdbpgx "github.com/cockroachdb/cockroach-go/v2/crdb/crdbpgxv5"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// PostgresStore keeps counts in Postgres or CockroachDB, shared by every
// replica that points at the same database. Record locks the agent's row
// for the length of one transaction, so concurrent checks of one agent on
// different replicas are counted one after the other: the budget is shared
// exactly, never granted once per replica.
type PostgresStore struct {
	pool *pgxpool.Pool
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
	`CREATE TABLE IF NOT EXISTS mandate_bound_events (
		agent_id TEXT NOT NULL,
		kind SMALLINT NOT NULL,
		at TIMESTAMPTZ NOT NULL
	)`,
	`CREATE INDEX IF NOT EXISTS mandate_bound_events_agent ON mandate_bound_events (agent_id, kind, at)`,
	`CREATE INDEX IF NOT EXISTS mandate_bound_events_at ON mandate_bound_events (at)`,
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
	return &PostgresStore{pool: pool}, nil
}

// Close releases the connections.
func (s *PostgresStore) Close() { s.pool.Close() }

// Record implements Store in one transaction: lock the agent's row, add the
// event, and count every window, all in one round trip after BEGIN.
func (s *PostgresStore) Record(ctx context.Context, ev Event, l Limits) (Counts, error) {
	var c Counts
	err := crdbpgx.ExecuteTx(ctx, s.pool, pgx.TxOptions{}, func(tx pgx.Tx) error {
		c = Counts{}
		b := &pgx.Batch{}
		// The upsert takes the row lock that serialises this agent's events.
		b.Queue(`INSERT INTO mandate_bound_agents (agent_id, touched_at) VALUES ($1, $2)
			ON CONFLICT (agent_id) DO UPDATE SET touched_at = excluded.touched_at`, ev.Agent, ev.At)
		if l.ChecksPerMinute > 0 {
			b.Queue(`INSERT INTO mandate_bound_events (agent_id, kind, at) VALUES ($1, $2, $3)`, ev.Agent, kindCheck, ev.At)
			b.Queue(`SELECT count(*) FROM mandate_bound_events WHERE agent_id = $1 AND kind = $2 AND at > $3`,
				ev.Agent, kindCheck, ev.At.Add(-CheckWindow)).QueryRow(func(r pgx.Row) error { return r.Scan(&c.Checks) })
		}
		if l.MaxDenials > 0 {
			if ev.Denied {
				b.Queue(`INSERT INTO mandate_bound_events (agent_id, kind, at) VALUES ($1, $2, $3)`, ev.Agent, kindDenial, ev.At)
			}
			b.Queue(`SELECT count(*) FROM mandate_bound_events WHERE agent_id = $1 AND kind = $2 AND at > $3`,
				ev.Agent, kindDenial, ev.At.Add(-l.Window())).QueryRow(func(r pgx.Row) error { return r.Scan(&c.Denials) })
		}
		if l.ResourcesPerHour > 0 {
			b.Queue(`INSERT INTO mandate_bound_resources (agent_id, resource, seen_at) VALUES ($1, $2, $3)
				ON CONFLICT (agent_id, resource) DO UPDATE SET seen_at = excluded.seen_at`, ev.Agent, ev.Resource, ev.At)
			b.Queue(`SELECT count(*) FROM mandate_bound_resources WHERE agent_id = $1 AND seen_at > $2`,
				ev.Agent, ev.At.Add(-ResourceWindow)).QueryRow(func(r pgx.Row) error { return r.Scan(&c.Resources) })
		}
		return tx.SendBatch(ctx, b).Close()
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
		b.Queue(`DELETE FROM mandate_bound_events WHERE agent_id = $1`, agent)
		b.Queue(`DELETE FROM mandate_bound_resources WHERE agent_id = $1`, agent)
		b.Queue(`DELETE FROM mandate_bound_agents WHERE agent_id = $1`, agent)
		return tx.SendBatch(ctx, b).Close()
	})
}

// Prune implements Store. Every replica may run it; it is idempotent.
func (s *PostgresStore) Prune(ctx context.Context, now time.Time) error {
	b := &pgx.Batch{}
	b.Queue(`DELETE FROM mandate_bound_events WHERE kind = $1 AND at <= $2`, kindCheck, now.Add(-CheckWindow))
	b.Queue(`DELETE FROM mandate_bound_events WHERE at <= $1`, now.Add(-MaxDenialWindow))
	b.Queue(`DELETE FROM mandate_bound_resources WHERE seen_at <= $1`, now.Add(-ResourceWindow))
	b.Queue(`DELETE FROM mandate_bound_agents WHERE touched_at <= $1`, now.Add(-MaxDenialWindow))
	return s.pool.SendBatch(ctx, b).Close()
}
