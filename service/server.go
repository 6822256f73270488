package service

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/authzed/authzed-go/v1"
	"github.com/authzed/grpcutil"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/test/bufconn"

	"github.com/mandate-dev/mandate/engine"
	"github.com/mandate-dev/mandate/engine/audit"
	"github.com/mandate-dev/mandate/engine/bounds"
	"github.com/mandate-dev/mandate/engine/cache"
	"github.com/mandate-dev/mandate/engine/embedded"
	"github.com/mandate-dev/mandate/engine/tracing"
	"github.com/mandate-dev/mandate/gateway"
	"github.com/mandate-dev/mandate/gateway/authzen"
	mandatev1 "github.com/mandate-dev/mandate/proto/mandate/v1"
)

// Config is everything `mandate serve` needs. Zero values take the defaults noted.
type Config struct {
	// GRPCAddr is the gRPC listen address. Default 127.0.0.1:50051.
	GRPCAddr string
	// HTTPAddr is the REST listen address. Default 127.0.0.1:8080.
	HTTPAddr string
	// KeysFile lists the accepted keys. Empty means development mode: one key
	// per role is generated and printed once to DevKeysOut.
	KeysFile string
	// DevKeysOut receives development-mode keys. Default io.Discard.
	DevKeysOut io.Writer

	// Embedded configures the in-process SpiceDB; ignored with SpiceDBEndpoint.
	Embedded embedded.Config
	// SpiceDBEndpoint, when set, uses a remote SpiceDB instead of the embedded one.
	SpiceDBEndpoint string
	// SpiceDBToken is the remote SpiceDB's preshared key.
	SpiceDBToken string
	// SpiceDBInsecure talks to the remote SpiceDB without TLS.
	SpiceDBInsecure bool

	// Engine configures decisions and lifetimes.
	Engine engine.Config
	// Cache configures the decision cache.
	Cache cache.Config
	// DisableCache answers every check from SpiceDB.
	DisableCache bool
	// BusDSN is a Postgres that replicas share to tell each other about writes
	// at once (LISTEN/NOTIFY), ahead of SpiceDB's Watch. Default: the embedded
	// datastore's URI when it is Postgres; "off" disables it.
	BusDSN string
	// MaxBodyBytes bounds REST request bodies. Default 1 MiB.
	MaxBodyBytes int64
	// Audit configures the audit trail.
	Audit AuditConfig
	// Bounds configures agents' behavioural bounds and the alert webhook.
	Bounds BoundsConfig
	// Log is the logger. Default slog.Default().
	Log *slog.Logger
	// TracerProvider, when set, traces with it; otherwise the OTEL_*
	// environment variables decide (tracing is off unless they ask for it).
	TracerProvider trace.TracerProvider
}

// AuditConfig configures where decisions and changes are recorded.
type AuditConfig struct {
	// Mode is "batched" (default), "strict" (a check waits until its record
	// is durable) or "off".
	Mode string
	// DSN is the Postgres or CockroachDB that keeps the records. Default: the
	// embedded datastore's when it is Postgres or CockroachDB; otherwise the
	// records stay in memory.
	DSN string
	// SpoolPath is where records wait while the database is unreachable.
	// Default: a file in the system temp directory, named after the gRPC port.
	SpoolPath string
	// MemoryRecords bounds the in-memory store. Default 100000.
	MemoryRecords int
	// File, when set, also appends every record as JSON lines ("-": stdout).
	File string
	// OCSF, when set, also appends every record as an OCSF API Activity event ("-": stdout).
	OCSF string
}

// BoundsConfig configures behavioural bounds.
type BoundsConfig struct {
	// Defaults apply to every agent whose task or own bounds leave one unset.
	Defaults bounds.Limits
	// DSN is the Postgres or CockroachDB that keeps the counts, shared by
	// every replica. Default: the embedded datastore's when it is Postgres or
	// CockroachDB; otherwise the counts live in this process. "memory" forces
	// in-process counts.
	DSN string
	// Webhook receives an alert, as JSON, for each automatic suspension.
	Webhook string
	// WebhookSecret signs each alert (X-Mandate-Signature, HMAC-SHA256).
	WebhookSecret string
	// WebhookAttempts is the deliveries tried per alert. Default 6.
	WebhookAttempts int
	// WebhookBackoff is the first retry's delay; it doubles. Default 500ms.
	WebhookBackoff time.Duration
}

// Validate reports whether the config is usable.
func (c *Config) Validate() error {
	if field, err := c.Bounds.Defaults.Validate("--bound-"); err != nil {
		return fmt.Errorf("%s: %w", strings.ReplaceAll(field, "_", "-"), err)
	}
	if c.SpiceDBEndpoint == "" {
		if err := c.Embedded.Validate(); err != nil {
			return err
		}
	} else if c.Embedded.Engine != "" && c.Embedded.Engine != "memory" || c.Embedded.URI != "" {
		return errors.New("--datastore-engine and --datastore-uri configure the embedded SpiceDB; they cannot be used with --spicedb-endpoint")
	}
	return c.Engine.Validate()
}

// Server is a configured, not yet running, mandate server.
type Server struct {
	cfg      Config
	log      *slog.Logger
	engine   *engine.Engine
	embedded *embedded.Server // nil with a remote SpiceDB
	closers  []func() error

	grpcServer *grpc.Server
	grpcLis    net.Listener
	httpServer *http.Server
	httpLis    net.Listener
	health     *health.Server
	cache      *cache.Cache    // nil when disabled
	watcher    *cache.Watcher  // nil when the cache is disabled
	bus        *cache.Bus      // nil without a shared Postgres
	recorder   *audit.Recorder // nil when audit is off
	auditDone  chan struct{}   // closed when the recorder has flushed everything
}

// Complete builds everything Run needs: SpiceDB, the engine, listeners.
func (c Config) Complete(ctx context.Context) (s *Server, err error) {
	if c.GRPCAddr == "" {
		c.GRPCAddr = "127.0.0.1:50051"
	}
	if c.HTTPAddr == "" {
		c.HTTPAddr = "127.0.0.1:8080"
	}
	if c.Log == nil {
		c.Log = slog.Default()
	}
	if c.DevKeysOut == nil {
		c.DevKeysOut = io.Discard
	}
	if err := c.Validate(); err != nil {
		return nil, err
	}
	s = &Server{cfg: c, log: c.Log}
	defer func() {
		if err != nil {
			s.Close()
		}
	}()

	tp, err := s.setupTracing(ctx, c)
	if err != nil {
		return nil, err
	}

	var keys *Keys
	if c.KeysFile != "" {
		if keys, err = LoadKeys(c.KeysFile); err != nil {
			return nil, err
		}
	} else {
		var plain map[Role]string
		keys, plain = DevKeys()
		c.Log.Warn("no --keys-file: running in development mode with generated keys, printed once to stderr")
		fmt.Fprintln(c.DevKeysOut, "mandate development keys (shown once; use --keys-file in production):")
		for _, r := range Roles {
			fmt.Fprintf(c.DevKeysOut, "  %-8s %s\n", r, plain[r])
		}
		if c.Embedded.APIAddr != "" && c.Embedded.APIKey == "" {
			c.Embedded.APIKey = plain[RoleAdmin]
		}
	}

	var sdb *engine.Client
	if c.SpiceDBEndpoint != "" {
		opts := grpcClientTracing(tp)
		if c.SpiceDBInsecure {
			opts = append(opts, grpc.WithTransportCredentials(insecure.NewCredentials()), grpcutil.WithInsecureBearerToken(c.SpiceDBToken))
		} else {
			certs, err := grpcutil.WithSystemCerts(grpcutil.VerifyCA)
			if err != nil {
				return nil, err
			}
			opts = append(opts, certs, grpcutil.WithBearerToken(c.SpiceDBToken))
		}
		client, err := authzed.NewClient(c.SpiceDBEndpoint, opts...)
		if err != nil {
			return nil, fmt.Errorf("connecting to SpiceDB at %s: %w", c.SpiceDBEndpoint, err)
		}
		s.closers = append(s.closers, client.Close)
		sdb = &engine.Client{Permissions: client.PermissionsServiceClient, Schema: client.SchemaServiceClient, Watch: client.WatchServiceClient}
	} else {
		emb, err := embedded.Start(ctx, c.Embedded)
		if err != nil {
			return nil, err
		}
		s.embedded = emb
		s.closers = append(s.closers, emb.Close)
		conn, err := emb.Dial(grpcClientTracing(tp)...)
		if err != nil {
			return nil, err
		}
		s.closers = append([]func() error{conn.Close}, s.closers...)
		sdb = engine.NewClient(conn)
	}

	startCtx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if s.engine, err = waitForEngine(startCtx, c.Engine, sdb, c.Log); err != nil {
		return nil, err
	}

	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	metrics := cache.NewMetrics(reg)
	h := &Handlers{Engine: s.engine, Decider: s.engine, Log: c.Log, Metrics: metrics}
	if !c.DisableCache {
		c.Cache.Metrics = metrics
		// Only the memory datastore's watch stays silent while idle.
		c.Cache.HeartbeatExpected = c.SpiceDBEndpoint != "" || (c.Embedded.Engine != "" && c.Embedded.Engine != "memory")
		if s.cache, err = cache.New(s.engine, c.Cache); err != nil {
			return nil, err
		}
		s.engine.SetInvalidator(s.cache)
		busDSN := c.BusDSN
		if busDSN == "" && c.SpiceDBEndpoint == "" && c.Embedded.Engine == "postgres" {
			busDSN = c.Embedded.URI
		}
		if busDSN != "" && busDSN != "off" {
			s.bus = cache.NewBus(busDSN, s.cache, c.Log)
			s.cache.SetPublisher(s.bus.Publish)
		}
		s.watcher = &cache.Watcher{Cache: s.cache, Client: sdb.Watch, Schema: sdb.Schema, Log: c.Log, OnSchemaChange: s.engine.RefreshSchema}
		h.Decider = s.cache
	}
	if tp != nil {
		h.Decider = tracing.NewDecider(h.Decider, tp)
	}
	s.grpcServer = grpc.NewServer(append(grpcServerTracing(tp),
		grpc.ChainUnaryInterceptor(RequestIDInterceptor, keys.UnaryInterceptor),
		grpc.ChainStreamInterceptor(keys.StreamInterceptor),
	)...)
	mandatev1.RegisterTaskServiceServer(s.grpcServer, h)
	mandatev1.RegisterAgentServiceServer(s.grpcServer, h)
	mandatev1.RegisterGrantServiceServer(s.grpcServer, h)
	mandatev1.RegisterCheckServiceServer(s.grpcServer, h)
	mandatev1.RegisterSchemaServiceServer(s.grpcServer, h)
	mandatev1.RegisterRelationshipServiceServer(s.grpcServer, h)
	mandatev1.RegisterAuditServiceServer(s.grpcServer, h)
	mandatev1.RegisterReviewServiceServer(s.grpcServer, h)
	mandatev1.RegisterSearchServiceServer(s.grpcServer, &SearchHandlers{Handlers: h})
	s.health = health.NewServer()
	healthpb.RegisterHealthServer(s.grpcServer, s.health)

	if s.grpcLis, err = net.Listen("tcp", c.GRPCAddr); err != nil {
		return nil, fmt.Errorf("--grpc-addr: %w", err)
	}
	if s.httpLis, err = net.Listen("tcp", c.HTTPAddr); err != nil {
		return nil, fmt.Errorf("--http-addr: %w", err)
	}
	if err := s.setupAudit(ctx, c, h, reg); err != nil {
		return nil, err
	}
	if err := s.setupBounds(ctx, c, h, reg); err != nil {
		return nil, err
	}

	// The gateway reaches the gRPC server in-process, through the same interceptors.
	inproc := bufconn.Listen(1 << 20)
	go func() { _ = s.grpcServer.Serve(inproc) }()
	gwConn, err := grpc.NewClient("passthrough:///mandate", append(grpcClientTracing(tp),
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) { return inproc.DialContext(ctx) }),
		grpc.WithTransportCredentials(insecure.NewCredentials()))...)
	if err != nil {
		return nil, err
	}
	s.closers = append([]func() error{gwConn.Close}, s.closers...)
	extra := map[string]http.Handler{"GET /metrics": promhttp.HandlerFor(reg, promhttp.HandlerOpts{})}
	// AuthZEN asks the same gRPC services, so keys, cache, audit and metrics apply.
	az, err := authzen.New(authzen.Config{Conn: gwConn, Authorize: keys.AuthorizeHeader, Log: c.Log})
	if err != nil {
		return nil, err
	}
	for pattern, h := range az.Routes() {
		extra[pattern] = h
	}
	handler, err := gateway.New(ctx, gwConn, gateway.Config{
		MaxBodyBytes: c.MaxBodyBytes,
		Health:       s.healthz,
		Extra:        extra,
	})
	if err != nil {
		return nil, err
	}
	s.httpServer = &http.Server{Handler: httpTracing(tp, handler), ReadHeaderTimeout: 10 * time.Second}
	return s, nil
}

// waitForEngine retries until SpiceDB answers: a freshly started embedded
// datastore or a remote cluster may need a moment.
func waitForEngine(ctx context.Context, cfg engine.Config, sdb *engine.Client, log *slog.Logger) (*engine.Engine, error) {
	var lastErr error
	for {
		e, err := engine.New(ctx, cfg, sdb, log)
		if err == nil {
			return e, nil
		}
		lastErr = err
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("SpiceDB did not become ready: %w", lastErr)
		case <-time.After(200 * time.Millisecond):
		}
	}
}

func (s *Server) setupAudit(ctx context.Context, c Config, h *Handlers, reg prometheus.Registerer) error {
	a := c.Audit
	if a.Mode == "off" {
		return nil
	}
	dsn := a.DSN
	if dsn == "" && c.SpiceDBEndpoint == "" && (c.Embedded.Engine == "postgres" || c.Embedded.Engine == "cockroachdb") {
		dsn = c.Embedded.URI
	}
	var store audit.Store
	spool := ""
	if dsn != "" {
		pg, err := audit.OpenPostgres(ctx, dsn)
		if err != nil {
			return err
		}
		s.closers = append(s.closers, func() error { pg.Close(); return nil })
		store = pg
		spool = a.SpoolPath
		if spool == "" {
			_, port, _ := net.SplitHostPort(s.GRPCAddr())
			spool = filepath.Join(os.TempDir(), "mandate-audit-"+port+".spool")
		}
	} else {
		store = audit.NewMemoryStore(a.MemoryRecords)
	}
	var sinks []audit.Sink
	for _, sk := range []struct {
		path string
		ocsf bool
	}{{a.File, false}, {a.OCSF, true}} {
		if sk.path == "" {
			continue
		}
		ls, err := audit.OpenLineSink(sk.path, sk.ocsf)
		if err != nil {
			return fmt.Errorf("audit sink %s: %w", sk.path, err)
		}
		s.closers = append(s.closers, ls.Close)
		sinks = append(sinks, ls)
	}
	rec, err := audit.NewRecorder(audit.Config{Store: store, Mode: a.Mode, SpoolPath: spool, Sinks: sinks, Log: c.Log, Metrics: audit.NewMetrics(reg)})
	if err != nil {
		return err
	}
	s.recorder, s.auditDone = rec, make(chan struct{})
	h.Audit, h.AuditStore = rec, store
	go func() { rec.Run(context.Background()); close(s.auditDone) }()
	return nil
}

func (s *Server) setupBounds(ctx context.Context, c Config, h *Handlers, reg prometheus.Registerer) error {
	b := c.Bounds
	dsn := b.DSN
	if dsn == "" && c.SpiceDBEndpoint == "" && (c.Embedded.Engine == "postgres" || c.Embedded.Engine == "cockroachdb") {
		dsn = c.Embedded.URI
	}
	var store bounds.Store
	if dsn != "" && dsn != "memory" {
		pg, err := bounds.OpenPostgres(ctx, dsn)
		if err != nil {
			return err
		}
		s.closers = append(s.closers, func() error { pg.Close(); return nil })
		store = pg
	} else {
		store = bounds.NewMemoryStore()
	}
	m := newBoundsMetrics(reg)
	alerter := &Alerter{URL: b.Webhook, Secret: b.WebhookSecret, Attempts: b.WebhookAttempts, Backoff: b.WebhookBackoff, Log: c.Log, delivered: m.alerts}
	// Closers run in order: the alerter drains before the stores close.
	s.closers = append([]func() error{func() error { alerter.Close(); return nil }}, s.closers...)
	h.Bounds = &Bounds{Store: store, Defaults: b.Defaults, Alerter: alerter, crossed: m.crossed, countErrors: m.countErrors}
	pruneCtx, stop := context.WithCancel(context.Background())
	s.closers = append([]func() error{func() error { stop(); return nil }}, s.closers...)
	go func() {
		t := time.NewTicker(time.Minute)
		defer t.Stop()
		for {
			select {
			case <-pruneCtx.Done():
				return
			case now := <-t.C:
				if err := store.Prune(pruneCtx, now); err != nil && pruneCtx.Err() == nil {
					c.Log.Warn("pruning bound counts", "error", err)
				}
			}
		}
	}()
	return nil
}

// healthz reports SpiceDB reachability and the cache's state.
func (s *Server) healthz(ctx context.Context) (map[string]string, error) {
	out := map[string]string{"cache": "disabled"}
	if s.cache != nil {
		if ok, why := s.cache.Status(); ok {
			out["cache"] = "serving"
		} else {
			out["cache"] = "bypassed: " + why
		}
	}
	return out, s.engine.Ready(ctx)
}

// Cache returns the decision cache, nil when disabled.
func (s *Server) Cache() *cache.Cache { return s.cache }

// Engine returns the server's engine.
func (s *Server) Engine() *engine.Engine { return s.engine }

// GRPCAddr is the address the gRPC server listens on.
func (s *Server) GRPCAddr() string { return s.grpcLis.Addr().String() }

// HTTPAddr is the address the REST server listens on.
func (s *Server) HTTPAddr() string { return s.httpLis.Addr().String() }

// Run serves until ctx is done, then shuts down gracefully.
func (s *Server) Run(ctx context.Context) error {
	errc := make(chan error, 2)
	go func() { errc <- s.grpcServer.Serve(s.grpcLis) }()
	go func() {
		if err := s.httpServer.Serve(s.httpLis); !errors.Is(err, http.ErrServerClosed) {
			errc <- err
		}
	}()
	if s.watcher != nil {
		watchCtx, cancelWatch := context.WithCancel(ctx)
		defer cancelWatch()
		go s.watcher.Run(watchCtx)
		if s.bus != nil {
			go s.bus.Run(watchCtx)
		}
	}
	s.health.SetServingStatus("", healthpb.HealthCheckResponse_SERVING)
	s.log.Info("mandate serving", "grpc", s.GRPCAddr(), "http", s.HTTPAddr())

	var err error
	select {
	case <-ctx.Done():
	case err = <-errc:
	}
	s.health.Shutdown()
	shutCtx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_ = s.httpServer.Shutdown(shutCtx)
	stopped := make(chan struct{})
	go func() { s.grpcServer.GracefulStop(); close(stopped) }()
	select {
	case <-stopped:
	case <-shutCtx.Done():
		s.grpcServer.Stop()
	}
	// Every buffered audit record is written before the stores close.
	s.flushAudit()
	s.Close()
	return err
}

func (s *Server) flushAudit() {
	if s.recorder == nil {
		return
	}
	s.recorder.Close()
	<-s.auditDone
}

// Close releases everything Complete acquired. It is safe to call twice.
func (s *Server) Close() {
	s.flushAudit()
	for _, c := range s.closers {
		_ = c()
	}
	s.closers = nil
	if s.grpcLis != nil {
		_ = s.grpcLis.Close()
	}
	if s.httpLis != nil {
		_ = s.httpLis.Close()
	}
}

// methods lists the gRPC methods that have an access rule, for documentation and tests.
func methods() []string {
	out := make([]string, 0, len(methodRoles))
	for m := range methodRoles {
		out = append(out, m)
	}
	sort.Strings(out)
	return out
}
