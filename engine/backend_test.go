package engine_test

import (
	"context"
	"log/slog"
	"os"
	"testing"

	"google.golang.org/grpc"

	"github.com/mandate-dev/mandate/engine"
	"github.com/mandate-dev/mandate/engine/embedded"
)

// PostgresEnv names the environment variable holding a Postgres DSN for the
// durable-backend tests. .ci/run sets it; without it those tests skip.
const PostgresEnv = "MANDATE_TEST_POSTGRES_DSN"

// backend is one datastore the conformance suite runs against.
type backend struct {
	name  string
	start func(t testing.TB) embedded.Config
}

func backends() []backend {
	return []backend{
		{name: "memory", start: func(t testing.TB) embedded.Config { return embedded.Config{Engine: "memory"} }},
		{name: "postgres", start: func(t testing.TB) embedded.Config {
			return embedded.Config{Engine: "postgres", URI: freshPostgres(t), Migrate: true}
		}},
	}
}

// freshPostgres creates an empty database for one test and drops it afterwards.
func freshPostgres(t testing.TB) string {
	t.Helper()
	dsn := os.Getenv(PostgresEnv)
	if dsn == "" {
		t.Skipf("%s is not set; skipping the Postgres backend", PostgresEnv)
	}
	uri, drop, err := embedded.CreateDatabase(context.Background(), dsn, "mandate_test")
	if err != nil {
		t.Fatalf("creating a database on %s: %v", PostgresEnv, err)
	}
	t.Cleanup(drop)
	return uri
}

// startEngine runs an embedded SpiceDB and an engine on it. Extra dial options
// (fault injectors) apply to the engine's connection.
func startEngine(t *testing.T, cfg embedded.Config, ecfg engine.Config, opts ...grpc.DialOption) (*engine.Engine, *embedded.Server) {
	t.Helper()
	ctx := context.Background()
	srv, err := embedded.Start(ctx, cfg)
	if err != nil {
		t.Fatalf("starting embedded SpiceDB: %v", err)
	}
	t.Cleanup(func() { _ = srv.Close() })
	conn, err := srv.Dial(opts...)
	if err != nil {
		t.Fatalf("dialing embedded SpiceDB: %v", err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	e, err := engine.New(ctx, ecfg, engine.NewClient(conn), slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})))
	if err != nil {
		t.Fatalf("starting engine: %v", err)
	}
	return e, srv
}

func must[T any](t testing.TB) func(T, string, error) T {
	return func(v T, _ string, err error) T {
		t.Helper()
		if err != nil {
			t.Fatalf("unexpected error: %v", err)
		}
		return v
	}
}
