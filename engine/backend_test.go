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

// backend is one SpiceDB the conformance suite runs against.
type backend struct {
	name string
	// open starts a fresh SpiceDB of this kind for one test.
	open func(t testing.TB) dialer
}

// dialer is a running SpiceDB: the embedded one, or a standalone process
// reached over TCP (backend_cluster_test.go, behind the cluster build tag).
type dialer interface {
	Dial(opts ...grpc.DialOption) (*grpc.ClientConn, error)
}

// extraBackends are added by files behind build tags.
var extraBackends []backend

func backends() []backend {
	return append([]backend{
		embeddedBackend("memory", func(t testing.TB) embedded.Config { return embedded.Config{Engine: "memory"} }),
		embeddedBackend("postgres", func(t testing.TB) embedded.Config {
			return embedded.Config{Engine: "postgres", URI: freshPostgres(t), Migrate: true}
		}),
	}, extraBackends...)
}

func embeddedBackend(name string, cfg func(t testing.TB) embedded.Config) backend {
	return backend{name: name, open: func(t testing.TB) dialer { return startEmbedded(t, cfg(t)) }}
}

// engine starts this backend's SpiceDB and an engine on it. Extra dial
// options (fault injectors, counters) apply to the engine's connection.
func (b backend) engine(t testing.TB, ecfg engine.Config, opts ...grpc.DialOption) (*engine.Engine, dialer) {
	t.Helper()
	d := b.open(t)
	return engineOn(t, d, ecfg, opts...), d
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
func startEngine(t testing.TB, cfg embedded.Config, ecfg engine.Config, opts ...grpc.DialOption) (*engine.Engine, dialer) {
	t.Helper()
	srv := startEmbedded(t, cfg)
	return engineOn(t, srv, ecfg, opts...), srv
}

func startEmbedded(t testing.TB, cfg embedded.Config) *embedded.Server {
	t.Helper()
	srv, err := embedded.Start(context.Background(), cfg)
	if err != nil {
		t.Fatalf("starting embedded SpiceDB: %v", err)
	}
	t.Cleanup(func() { _ = srv.Close() })
	return srv
}

// engineOn starts an engine on a running SpiceDB.
func engineOn(t testing.TB, d dialer, ecfg engine.Config, opts ...grpc.DialOption) *engine.Engine {
	t.Helper()
	conn, err := d.Dial(opts...)
	if err != nil {
		t.Fatalf("dialing SpiceDB: %v", err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	e, err := engine.New(context.Background(), ecfg, engine.NewClient(conn), slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})))
	if err != nil {
		t.Fatalf("starting engine: %v", err)
	}
	return e
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
