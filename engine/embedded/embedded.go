// Package embedded runs SpiceDB inside the mandate process, on the memory,
// Postgres or CockroachDB datastore, and hands out gRPC connections to it.
package embedded

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net/url"
	"time"

	"github.com/authzed/grpcutil"
	datastorecfg "github.com/authzed/spicedb/pkg/cmd/datastore"
	"github.com/authzed/spicedb/pkg/cmd/server"
	"github.com/authzed/spicedb/pkg/cmd/util"
	"github.com/authzed/spicedb/pkg/datastore/migration"
	"github.com/authzed/spicedb/pkg/migrate"
	"github.com/jackc/pgx/v5"
	"github.com/rs/zerolog"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
)

// Engines lists the datastore engines mandate supports for the embedded SpiceDB.
var Engines = []string{datastorecfg.MemoryEngine, datastorecfg.PostgresEngine, datastorecfg.CockroachEngine}

// Config configures the embedded SpiceDB.
type Config struct {
	// Engine is the datastore engine: memory, postgres or cockroachdb. Default memory.
	Engine string
	// URI is the datastore connection string; required for postgres and cockroachdb.
	URI string
	// APIAddr, when set, also serves SpiceDB's own v1 API on this TCP address,
	// behind APIKey, so admins can keep using zed and other SpiceDB tools.
	APIAddr string
	// APIKey is the preshared key for APIAddr. Required with APIAddr.
	APIKey string
	// Migrate runs the datastore migrations to head before starting.
	Migrate bool
	// MaxConns bounds the SQL datastore's read connections; writes get half
	// as many. Few are opened until needed. Default 16.
	MaxConns int
}

// Validate reports whether the config is usable.
func (c *Config) Validate() error {
	switch c.Engine {
	case "", datastorecfg.MemoryEngine:
		if c.URI != "" {
			return errors.New("--datastore-uri is not used by the memory engine")
		}
	case datastorecfg.PostgresEngine, datastorecfg.CockroachEngine:
		if c.URI == "" {
			return fmt.Errorf("--datastore-uri is required for the %s engine", c.Engine)
		}
	default:
		return fmt.Errorf("--datastore-engine %q is not one of %v", c.Engine, Engines)
	}
	if c.APIAddr != "" && c.APIKey == "" {
		return errors.New("--spicedb-api-addr needs an admin key to protect it")
	}
	return nil
}

// Server is a started embedded SpiceDB.
type Server struct {
	rs     server.RunnableServer
	key    string
	cancel context.CancelFunc
	done   chan error
}

// Migrate runs SpiceDB's datastore migrations to head for a SQL engine.
func Migrate(ctx context.Context, engine, uri string) error {
	if engine == "" || engine == datastorecfg.MemoryEngine {
		return nil
	}
	return migration.Run(ctx, &migration.Config{
		DatastoreEngine: engine,
		DatastoreURI:    uri,
		Timeout:         10 * time.Minute,
		BatchSize:       1000,
		ExtraConfig:     map[string]string{},
	}, migrate.Head)
}

// Start builds and runs SpiceDB in the background. Stop it with Close.
func Start(ctx context.Context, cfg Config) (*Server, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.Engine == "" {
		cfg.Engine = datastorecfg.MemoryEngine
	}
	// SpiceDB logs through zerolog; mandate logs through slog. Keep SpiceDB quiet
	// unless something is wrong.
	zerolog.SetGlobalLevel(zerolog.WarnLevel)

	if cfg.Migrate {
		if err := Migrate(ctx, cfg.Engine, cfg.URI); err != nil {
			return nil, fmt.Errorf("migrating the %s datastore: %w", cfg.Engine, err)
		}
	}

	key := cfg.APIKey
	grpcCfg := util.GRPCServerConfig{Network: util.BufferedNetwork, Enabled: true}
	if cfg.APIAddr != "" {
		grpcCfg = util.GRPCServerConfig{Network: "tcp", Address: cfg.APIAddr, Enabled: true}
	} else {
		key = randomKey()
	}

	dsOpts := []datastorecfg.ConfigOption{
		datastorecfg.WithEngine(cfg.Engine),
		datastorecfg.WithURI(cfg.URI),
		// mandate checks expiry itself and reads at full consistency on the
		// decision path, so quantization only affects SpiceDB's own callers.
		datastorecfg.WithRevisionQuantization(100 * time.Millisecond),
		datastorecfg.WithGCWindow(24 * time.Hour),
		datastorecfg.WithRequestHedgingEnabled(false),
		datastorecfg.WithEnableDatastoreMetrics(false),
	}
	dsConfig := datastorecfg.DefaultDatastoreConfig()
	for _, o := range dsOpts {
		o(dsConfig)
	}
	// SpiceDB opens all its connections up front by default (20 + 10). Several
	// replicas on one Postgres would then exhaust its max_connections.
	maxConns := cfg.MaxConns
	if maxConns <= 0 {
		maxConns = 16
	}
	dsConfig.ReadConnPool.MaxOpenConns, dsConfig.ReadConnPool.MinOpenConns = maxConns, 1
	dsConfig.WriteConnPool.MaxOpenConns, dsConfig.WriteConnPool.MinOpenConns = max(1, maxConns/2), 1

	sc := server.NewConfigWithOptionsAndDefaults(
		server.WithPresharedSecureKey(key),
		server.WithGRPCServer(grpcCfg),
		server.WithDatastoreConfig(*dsConfig),
		server.WithDispatchServer(util.GRPCServerConfig{Enabled: false}),
		server.WithHTTPGateway(util.HTTPServerConfig{HTTPEnabled: false}),
		server.WithMetricsAPI(util.HTTPServerConfig{HTTPEnabled: false}),
		server.WithDispatchCacheConfig(server.CacheConfig{Enabled: true, Metrics: false, MaxCost: "10%"}),
		server.WithNamespaceCacheConfig(server.CacheConfig{Enabled: true, Metrics: false, MaxCost: "16MiB"}),
		server.WithClusterDispatchCacheConfig(server.CacheConfig{Enabled: false}),
		server.WithEnableMemoryProtectionMiddleware(false),
		server.WithSilentlyDisableTelemetry(true),
		server.WithTelemetryEndpoint(""),
		server.WithDisableVersionResponse(true),
		server.WithEnableRelationshipExpiration(true),
		server.WithDispatchClientMetricsEnabled(false),
		server.WithDispatchClusterMetricsEnabled(false),
		server.WithDisableGRPCLatencyHistogram(true),
		// Frequent checkpoints let mandate's watcher notice a stalled watch quickly.
		server.WithWatchHeartbeat(100*time.Millisecond),
		server.WithShutdownGracePeriod(time.Second),
	)
	rs, err := sc.Complete(ctx)
	if err != nil {
		return nil, fmt.Errorf("configuring embedded SpiceDB: %w", err)
	}
	runCtx, cancel := context.WithCancel(context.Background())
	s := &Server{rs: rs, key: key, cancel: cancel, done: make(chan error, 1)}
	go func() { s.done <- rs.Run(runCtx) }()
	return s, nil
}

// Dial returns a new connection to the embedded SpiceDB, authenticated with
// its key. Extra options, such as interceptors, are appended.
func (s *Server) Dial(opts ...grpc.DialOption) (*grpc.ClientConn, error) {
	base := []grpc.DialOption{
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpcutil.WithInsecureBearerToken(s.key),
	}
	return s.rs.NewClient(append(base, opts...)...)
}

// Close stops the server and waits for it.
func (s *Server) Close() error {
	s.cancel()
	select {
	case err := <-s.done:
		if err != nil && !errors.Is(err, context.Canceled) {
			return err
		}
	case <-time.After(10 * time.Second):
		return errors.New("embedded SpiceDB did not stop within 10s")
	}
	return nil
}

func randomKey() string {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		panic(err)
	}
	return hex.EncodeToString(b)
}

// CreateDatabase makes an empty Postgres database with a random name next to
// the one dsn names, for tests and benchmarks, and returns its URI and a
// function that drops it.
func CreateDatabase(ctx context.Context, dsn, prefix string) (string, func(), error) {
	u, err := url.Parse(dsn)
	if err != nil {
		return "", nil, fmt.Errorf("parsing the Postgres DSN: %w", err)
	}
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		return "", nil, err
	}
	defer conn.Close(ctx)
	b := make([]byte, 6)
	_, _ = rand.Read(b)
	name := prefix + "_" + hex.EncodeToString(b)
	if _, err := conn.Exec(ctx, "CREATE DATABASE "+pgx.Identifier{name}.Sanitize()); err != nil {
		return "", nil, err
	}
	drop := func() {
		c, err := pgx.Connect(context.Background(), dsn)
		if err != nil {
			return
		}
		defer c.Close(context.Background())
		_, _ = c.Exec(context.Background(), "DROP DATABASE IF EXISTS "+pgx.Identifier{name}.Sanitize()+" WITH (FORCE)")
	}
	u.Path = "/" + name
	return u.String(), drop, nil
}

// CommitTimestamps reads Postgres's track_commit_timestamp setting at uri:
// SpiceDB's Watch API on Postgres needs it "on".
func CommitTimestamps(ctx context.Context, uri string) (string, error) {
	conn, err := pgx.Connect(ctx, uri)
	if err != nil {
		return "", err
	}
	defer conn.Close(context.Background())
	var setting string
	if err := conn.QueryRow(ctx, "SHOW track_commit_timestamp").Scan(&setting); err != nil {
		return "", err
	}
	return setting, nil
}
