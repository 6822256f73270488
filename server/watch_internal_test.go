package server

import (
	"context"
	"errors"
	"os"
	"strings"
	"testing"
)

// TestCommitTimestampsNeeded: without track_commit_timestamp, the refusal is
// one line naming the setting, the fix and --disable-cache.
func TestCommitTimestampsNeeded(t *testing.T) {
	if err := commitTimestampsNeeded("on"); err != nil {
		t.Fatalf("on: %v", err)
	}
	err := commitTimestampsNeeded("off")
	if err == nil || strings.Contains(err.Error(), "\n") {
		t.Fatalf("off: %v, want one line", err)
	}
	for _, want := range []string{"--datastore-uri", "track_commit_timestamp = off", "ALTER SYSTEM SET track_commit_timestamp = on", "--disable-cache"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("%q does not say %q", err, want)
		}
	}
}

// TestRequireWatch: the check reads the real setting, is skipped with
// --disable-cache, and refuses with a configuration error (exit status 2)
// when the setting is off.
func TestRequireWatch(t *testing.T) {
	dsn := os.Getenv("MANDATE_TEST_POSTGRES_DSN")
	if dsn == "" {
		t.Skip("MANDATE_TEST_POSTGRES_DSN is not set")
	}
	s := &Server{cfg: Config{StartTimeout: 10e9}}
	s.cfg.Embedded.Engine, s.cfg.Embedded.URI = "postgres", dsn
	// CI's Postgres has it on (.ci/run sets it).
	if err := s.requireWatch(context.Background()); err != nil {
		t.Fatalf("on the test Postgres: %v", err)
	}
	s.cfg.Embedded.URI = "postgres://nobody@127.0.0.1:1/none?sslmode=disable&connect_timeout=1"
	if err := s.requireWatch(context.Background()); err == nil {
		t.Fatal("an unreachable Postgres passed the check")
	}
	s.cfg.DisableCache = true
	if err := s.requireWatch(context.Background()); err != nil {
		t.Fatalf("with --disable-cache nothing is read: %v", err)
	}
	var ce *ConfigError
	if !errors.As(configErr(commitTimestampsNeeded("off")), &ce) {
		t.Fatal("the refusal is not a configuration error")
	}
}
