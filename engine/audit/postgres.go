package audit

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"time"

	crdbpgx "github.com/cockroachdb/cockroach-go/v2/crdb/crdbpgxv5"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// migrations create mandate's audit table and the indexes behind the review
// questions: by agent, by correlation id across systems, by principal, by
// task, and by time. Plain SQL that Postgres and CockroachDB both accept.
var migrations = []string{
	`CREATE TABLE IF NOT EXISTS mandate_audit (
		id             TEXT PRIMARY KEY,
		at             TIMESTAMPTZ NOT NULL,
		kind           TEXT NOT NULL,
		agent          TEXT NOT NULL DEFAULT '',
		principal      TEXT NOT NULL DEFAULT '',
		task           TEXT NOT NULL DEFAULT '',
		correlation_id TEXT NOT NULL DEFAULT '',
		decision       TEXT NOT NULL DEFAULT '',
		resource       TEXT NOT NULL DEFAULT '',
		record         JSONB NOT NULL
	)`,
	`CREATE INDEX IF NOT EXISTS mandate_audit_at ON mandate_audit (at DESC, id DESC)`,
	`CREATE INDEX IF NOT EXISTS mandate_audit_agent ON mandate_audit (agent, at DESC, id DESC)`,
	`CREATE INDEX IF NOT EXISTS mandate_audit_correlation ON mandate_audit (correlation_id, at DESC, id DESC)`,
	`CREATE INDEX IF NOT EXISTS mandate_audit_principal ON mandate_audit (principal, at DESC, id DESC)`,
	`CREATE INDEX IF NOT EXISTS mandate_audit_task ON mandate_audit (task, at DESC, id DESC)`,
}

// PostgresStore keeps records in Postgres or CockroachDB.
type PostgresStore struct {
	pool *pgxpool.Pool
}

// OpenPostgres connects and runs the migrations.
func OpenPostgres(ctx context.Context, dsn string) (*PostgresStore, error) {
	cfg, err := pgxpool.ParseConfig(dsn)
	if err != nil {
		return nil, fmt.Errorf("audit database: %w", err)
	}
	cfg.MaxConns = 4
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("audit database: %w", err)
	}
	s := &PostgresStore{pool: pool}
	if err := s.Migrate(ctx); err != nil {
		pool.Close()
		return nil, err
	}
	return s, nil
}

// Migrate creates the table and indexes if they are missing.
func (s *PostgresStore) Migrate(ctx context.Context) error {
	for _, m := range migrations {
		if _, err := s.pool.Exec(ctx, m); err != nil {
			return fmt.Errorf("audit migration: %w", err)
		}
	}
	return nil
}

// Close releases the connections.
func (s *PostgresStore) Close() { s.pool.Close() }

// Write implements Store: one multi-row insert in a transaction that
// crdb.ExecuteTx retries on serialization conflicts.
func (s *PostgresStore) Write(ctx context.Context, rs []Record) error {
	if len(rs) == 0 {
		return nil
	}
	var sb strings.Builder
	sb.WriteString(`INSERT INTO mandate_audit (id, at, kind, agent, principal, task, correlation_id, decision, resource, record) VALUES `)
	args := make([]any, 0, len(rs)*10)
	for i := range rs {
		r := &rs[i]
		raw, err := json.Marshal(r)
		if err != nil {
			return err
		}
		if i > 0 {
			sb.WriteByte(',')
		}
		n := len(args)
		fmt.Fprintf(&sb, "($%d,$%d,$%d,$%d,$%d,$%d,$%d,$%d,$%d,$%d)", n+1, n+2, n+3, n+4, n+5, n+6, n+7, n+8, n+9, n+10)
		args = append(args, r.ID, r.Time, r.Kind, r.Agent(), r.Principal, r.Task, r.CorrelationID, r.Decision, r.Resource, raw)
	}
	sb.WriteString(` ON CONFLICT (id) DO NOTHING`)
	q := sb.String()
	return crdbpgx.ExecuteTx(ctx, s.pool, pgx.TxOptions{}, func(tx pgx.Tx) error {
		_, err := tx.Exec(ctx, q, args...)
		return err
	})
}

// Query implements Store.
func (s *PostgresStore) Query(ctx context.Context, f Filter) ([]Record, error) {
	var where []string
	var args []any
	add := func(cond string, v any) {
		args = append(args, v)
		where = append(where, fmt.Sprintf(cond, len(args)))
	}
	if f.Agent != "" {
		add("agent = $%d", f.Agent)
	}
	if f.Principal != "" {
		add("principal = $%d", f.Principal)
	}
	if f.Task != "" {
		add("task = $%d", f.Task)
	}
	if f.CorrelationID != "" {
		add("correlation_id = $%d", f.CorrelationID)
	}
	if f.Decision != "" {
		add("decision = $%d", f.Decision)
	}
	if f.Resource != "" {
		add("resource = $%d", f.Resource)
	}
	if !f.Since.IsZero() {
		add("at >= $%d", f.Since)
	}
	if !f.Until.IsZero() {
		add("at < $%d", f.Until)
	}
	if f.After != nil {
		args = append(args, f.After.Time, f.After.ID)
		where = append(where, fmt.Sprintf("(at, id) < ($%d, $%d)", len(args)-1, len(args)))
	}
	q := "SELECT record FROM mandate_audit"
	if len(where) > 0 {
		q += " WHERE " + strings.Join(where, " AND ")
	}
	args = append(args, f.PageSize)
	q += fmt.Sprintf(" ORDER BY at DESC, id DESC LIMIT $%d", len(args))
	rows, err := s.pool.Query(ctx, q, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []Record
	for rows.Next() {
		var raw []byte
		if err := rows.Scan(&raw); err != nil {
			return nil, err
		}
		var r Record
		if err := json.Unmarshal(raw, &r); err != nil {
			return nil, err
		}
		r.Time = r.Time.UTC()
		out = append(out, r)
	}
	return out, rows.Err()
}

// Count returns how many records are stored, for tests and operators.
func (s *PostgresStore) Count(ctx context.Context) (int, error) {
	var n int
	err := s.pool.QueryRow(ctx, "SELECT count(*) FROM mandate_audit").Scan(&n)
	return n, err
}

// Ping reports whether the database answers.
func (s *PostgresStore) Ping(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	return s.pool.Ping(ctx)
}
