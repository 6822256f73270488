package server_test

import (
	"testing"
	"time"

	"github.com/mandate-dev/mandate/engine"
	"github.com/mandate-dev/mandate/internal/testenv"
	"github.com/mandate-dev/mandate/server"
)

// TestStartupWaitsForSpiceDB: starting does not race the per-call timeout.
// With a call timeout no SpiceDB call can meet, the server still starts
// (writing its schema waits for SpiceDB, however busy the machine), and
// then every check fails closed within that timeout.
func TestStartupWaitsForSpiceDB(t *testing.T) {
	srv := testenv.Start(t, server.Config{Engine: engine.Config{CallTimeout: time.Nanosecond}, DisableCache: true})
	code, out := srv.Do("POST", "/v1/check", "checker", map[string]string{"subject": "user:alice", "permission": "read", "resource": "repo:acme/api"})
	if code != 503 || out["allowed"] == true {
		t.Fatalf("a check that cannot meet its timeout: %d %v, want 503", code, out)
	}
}
