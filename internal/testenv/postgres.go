package testenv

import (
	"context"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/mandate-dev/mandate/engine/embedded"
)

// PostgresEnv names the Postgres the tests may create databases on.
const PostgresEnv = "MANDATE_TEST_POSTGRES_DSN"

// Postgres returns the test Postgres's DSN, and skips the test when
// PostgresEnv is unset. With watch, the test needs SpiceDB's Watch API on
// Postgres: when the server lacks track_commit_timestamp the test fails at
// once with one line saying what to set, instead of waiting for a cache that
// can never be invalidated and failing in a flood of logs.
func Postgres(t testing.TB, watch bool) string {
	t.Helper()
	dsn := os.Getenv(PostgresEnv)
	if dsn == "" {
		t.Skip(PostgresEnv + " is not set")
	}
	if watch {
		if err := CommitTimestamps(dsn); err != nil {
			t.Fatal(err)
		}
	}
	return dsn
}

// CommitTimestamps reports, as an error of one line, why the Postgres at dsn
// cannot serve SpiceDB's Watch API: it cannot be reached, or
// track_commit_timestamp is off.
func CommitTimestamps(dsn string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		return fmt.Errorf("%s: cannot connect: %s", PostgresEnv, oneLine(err))
	}
	defer conn.Close(context.Background())
	var setting string
	if err := conn.QueryRow(ctx, "SHOW track_commit_timestamp").Scan(&setting); err != nil {
		return fmt.Errorf("%s: reading track_commit_timestamp: %s", PostgresEnv, oneLine(err))
	}
	return commitTimestampsSetting(setting)
}

func commitTimestampsSetting(setting string) error {
	if setting != "on" {
		return fmt.Errorf("%s points at a Postgres with track_commit_timestamp = %s; SpiceDB's Watch needs track_commit_timestamp = on (ALTER SYSTEM SET track_commit_timestamp = on, then restart Postgres)", PostgresEnv, setting)
	}
	return nil
}

func oneLine(err error) string { return strings.Join(strings.Fields(err.Error()), " ") }

// PostgresDB creates a fresh database on the test Postgres for the test's
// server, dropped when the test ends, and returns its URI; it skips the test
// without PostgresEnv. name is the database's name prefix.
func PostgresDB(t testing.TB, name string) string {
	t.Helper()
	uri, drop, err := embedded.CreateDatabase(context.Background(), Postgres(t, true), name)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(drop)
	return uri
}
