package testenv

import (
	"os"
	"strings"
	"testing"
)

func TestCommitTimestampsSaysWhatToSet(t *testing.T) {
	if err := commitTimestampsSetting("on"); err != nil {
		t.Fatal(err)
	}
	err := commitTimestampsSetting("off")
	if err == nil || strings.Contains(err.Error(), "\n") || !strings.Contains(err.Error(), "track_commit_timestamp = on") {
		t.Fatalf("%v: want one line naming track_commit_timestamp = on", err)
	}
	if err := CommitTimestamps("postgres://nobody@127.0.0.1:1/none?sslmode=disable&connect_timeout=2"); err == nil || strings.Contains(err.Error(), "\n") {
		t.Fatalf("an unreachable Postgres: %v, want an error of one line", err)
	}
	// The CI Postgres is set up for the watch.
	if dsn := os.Getenv(PostgresEnv); dsn != "" {
		if err := CommitTimestamps(dsn); err != nil {
			t.Fatal(err)
		}
	}
}
