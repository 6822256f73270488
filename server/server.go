// Package server wires one mandate server: Config → Complete → Run. It
// builds SpiceDB (embedded or remote), the engine and its decider chain, the
// gRPC services and the HTTP gateway, and owns their lifecycle. The layout
// is cmd → server → {gateway, service, engine}.
package server

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/authzed/authzed-go/v1"
	"github.com/authzed/grpcutil"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	"github.com/mandate-dev/mandate/console"
	"github.com/mandate-dev/mandate/engine"
	"github.com/mandate-dev/mandate/engine/alert"
	"github.com/mandate-dev/mandate/engine/audit"
	"github.com/mandate-dev/mandate/engine/bounds"
	"github.com/mandate-dev/mandate/engine/cache"
	"github.com/mandate-dev/mandate/engine/decider"
	"github.com/mandate-dev/mandate/engine/embedded"
	"github.com/mandate-dev/mandate/engine/tracing"
	"github.com/mandate-dev/mandate/gateway"
	"github.com/mandate-dev/mandate/gateway/authzen"
	mandatev1 "github.com/mandate-dev/mandate/proto/mandate/v1"
	"github.com/mandate-dev/mandate/service"
)

// Config is everything `mandate serve` needs. Zero values take the defaults
// noted, filled by Complete and nowhere else; the components (engine, cache,
// embedded SpiceDB, audit recorder) fill their own.
type Config struct {
	// GRPCAddr is the gRPC listen address. Default 127.0.0.1:50051.
	GRPCAddr string
	// HTTPAddr is the REST listen address. Default 127.0.0.1:8080.
	HTTPAddr string
	// PublicURL is the one base URL of every absolute URL mandate publishes:
	// the tokens' iss, the OAuth and AuthZEN metadata. Never derived from the
	// Host header. Default: http:// and the REST listen address (https:// with TLS).
	PublicURL string
	// Credentials configures agent tokens and the humans' OIDC sign-in.
	Credentials CredentialsConfig
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
	// SpiceDBCAFile is the PEM file of CAs the remote SpiceDB's certificate
	// must chain to. Default: the system's.
	SpiceDBCAFile string
	// StartTimeout bounds the wait for SpiceDB to answer at startup. Default 30s.
	StartTimeout time.Duration

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
	// Conn bounds what one client connection may hold: slow bodies, idle
	// keep-alives, concurrent requests.
	Conn ConnLimits
	// TLS serves both ports over TLS, and accepts client certificates.
	TLS TLSConfig
	// Audit configures the audit trail.
	Audit AuditConfig
	// Bounds configures agents' behavioural bounds and the alert webhook.
	Bounds BoundsConfig
	// DisableUI turns the web console at /ui/ off (--ui=false).
	DisableUI bool
	// Log is the logger. Default slog.Default().
	Log *slog.Logger
	// TracerProvider, when set, traces with it; otherwise the OTEL_*
	// environment variables decide, and tracing is off unless they ask for it.
	TracerProvider trace.TracerProvider
	// tp is the tracer provider in use; nil when tracing is off. Set by Complete.
	tp trace.TracerProvider
}

// ConnLimits bound how long, and how much, one client connection may hold
// the server, so clients that send slowly cannot tie it up.
type ConnLimits struct {
	// ReadTimeout bounds reading one REST request, headers and body. Default 30s.
	ReadTimeout time.Duration
	// WriteTimeout bounds a REST request from the end of its headers to the
	// end of its answer. A handler that must take longer (a long poll, an
	// export) extends its own deadline with http.ResponseController.
	// Default 60s.
	WriteTimeout time.Duration
	// IdleTimeout closes a keep-alive connection idle this long. Default 120s.
	IdleTimeout time.Duration
	// MaxConcurrentStreams bounds the requests in flight on one HTTP/2 or
	// gRPC connection. Default 100.
	MaxConcurrentStreams uint32
}

func (l *ConnLimits) complete() {
	if l.ReadTimeout == 0 {
		l.ReadTimeout = 30 * time.Second
	}
	if l.WriteTimeout == 0 {
		l.WriteTimeout = 60 * time.Second
	}
	if l.IdleTimeout == 0 {
		l.IdleTimeout = 120 * time.Second
	}
	if l.MaxConcurrentStreams == 0 {
		l.MaxConcurrentStreams = 100
	}
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
	// MemoryRecords bounds the in-memory store's records. Default 100000.
	MemoryRecords int
	// MemoryBytes bounds the in-memory store's estimated size. Default 128 MiB.
	MemoryBytes int64
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
	// AlertSpool is where alerts wait for delivery, so they survive a
	// restart. Default: a file in the system temp directory, named after the
	// gRPC port, when Webhook is set.
	AlertSpool string
}

// ConfigError is a mistake in the flags or the files they name, found while
// starting: `mandate serve` prints it as one line and exits with status 2.
type ConfigError struct{ Err error }

func (e *ConfigError) Error() string { return e.Err.Error() }
func (e *ConfigError) Unwrap() error { return e.Err }

// configErr marks err, when there is one, as a configuration mistake.
func configErr(err error) error {
	if err == nil {
		return nil
	}
	return &ConfigError{Err: err}
}

// Validate reports whether the config is usable. Errors name the flag.
func (c *Config) Validate() error {
	if field, err := c.Bounds.Defaults.Validate("--bound-"); err != nil {
		return fmt.Errorf("%s: %w", strings.ReplaceAll(field, "_", "-"), err)
	}
	switch c.Audit.Mode {
	case "", audit.ModeBatched, audit.ModeStrict, "off":
	default:
		return fmt.Errorf("--audit-mode: %q is not batched, strict or off", c.Audit.Mode)
	}
	if c.MaxBodyBytes < 0 {
		return errors.New("--max-body-bytes must not be negative")
	}
	if err := validatePublicURL(c.PublicURL); err != nil {
		return err
	}
	if err := c.Credentials.Validate(); err != nil {
		return err
	}
	if err := c.TLS.Validate(); err != nil {
		return err
	}
	if t := c.Engine.AccessRequestTTL; t < 0 || t > 0 && t < time.Second {
		return errors.New("--access-request-ttl must be at least 1s")
	}
	if c.Engine.BindAgentsToWorkload && c.TLS.ClientCAFile == "" {
		return errors.New("--bind-agents-to-workload needs --client-ca: without client certificates no caller has a workload identity")
	}
	if c.Conn.ReadTimeout < 0 || c.Conn.WriteTimeout < 0 || c.Conn.IdleTimeout < 0 {
		return errors.New("connection timeouts must not be negative")
	}
	if c.SpiceDBEndpoint == "" {
		if err := c.Embedded.Validate(); err != nil {
			return err
		}
	} else {
		if c.Embedded.Engine != "" && c.Embedded.Engine != "memory" || c.Embedded.URI != "" {
			return errors.New("--datastore-engine and --datastore-uri configure the embedded SpiceDB; they cannot be used with --spicedb-endpoint")
		}
		// SpiceDB always requires a preshared key (or a proxy that adds one).
		if c.SpiceDBToken == "" {
			return errors.New("--spicedb-token (or MANDATE_SPICEDB_TOKEN) is required with --spicedb-endpoint: SpiceDB refuses calls without its preshared key")
		}
		if c.SpiceDBInsecure && c.SpiceDBCAFile != "" {
			return errors.New("--spicedb-ca verifies a TLS connection; it cannot be used with --spicedb-insecure")
		}
	}
	if c.SpiceDBEndpoint == "" && (c.SpiceDBToken != "" || c.SpiceDBInsecure || c.SpiceDBCAFile != "") {
		return errors.New("--spicedb-token, --spicedb-insecure and --spicedb-ca configure a remote SpiceDB: they need --spicedb-endpoint")
	}
	return c.Engine.Validate()
}

// complete fills the server's own defaults and resolves, once, which
// databases the bus, the audit trail and the bound counts use.
func (c *Config) complete() {
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
	if c.StartTimeout == 0 {
		c.StartTimeout = 30 * time.Second
	}
	if c.MaxBodyBytes == 0 {
		c.MaxBodyBytes = 1 << 20
	}
	c.Conn.complete()
	// The embedded datastore's database, when it is a SQL one, is where
	// everything else that must be shared between replicas lives too.
	shared := ""
	if c.SpiceDBEndpoint == "" && (c.Embedded.Engine == "postgres" || c.Embedded.Engine == "cockroachdb") {
		shared = c.Embedded.URI
	}
	if c.Audit.DSN == "" {
		c.Audit.DSN = shared
	}
	if c.Bounds.DSN == "" {
		c.Bounds.DSN = shared
	}
	// LISTEN/NOTIFY is Postgres only.
	if c.BusDSN == "" && c.Embedded.Engine == "postgres" {
		c.BusDSN = shared
	}
}

// Server is a configured, not yet running, mandate server.
type Server struct {
	cfg      Config
	log      *slog.Logger
	engine   *engine.Engine
	embedded *embedded.Server // nil with a remote SpiceDB
	closers  []func() error   // run in order by Close

	grpcServer *grpc.Server
	grpcLis    net.Listener
	httpServer *http.Server
	httpLis    net.Listener
	health     *health.Server
	cache      *cache.Cache     // nil when disabled
	watcher    *cache.Watcher   // nil when the cache is disabled
	bus        *cache.Bus       // nil without a shared Postgres
	recorder   *audit.Recorder  // nil when audit is off
	auditDone  chan struct{}    // closed when the recorder has flushed everything
	console    *console.Console // nil with --ui=false
}

// Complete builds everything Run needs: SpiceDB, the engine, the decider
// chain, the services and the listeners.
func (c Config) Complete(ctx context.Context) (_ *Server, err error) {
	c.complete()
	if err := c.Validate(); err != nil {
		return nil, configErr(err)
	}
	s := &Server{cfg: c, log: c.Log}
	// On any failure, release what was acquired so far. (The server is held
	// here, not in the result, which is nil by then.)
	defer func() {
		if err != nil {
			s.Close()
		}
	}()
	if s.cfg.tp, err = s.setupTracing(ctx, c); err != nil {
		return nil, err
	}
	tp := s.cfg.tp
	keys, err := s.keys()
	if err != nil {
		return nil, configErr(err)
	}
	if err := s.requireWatch(ctx); err != nil {
		return nil, err
	}
	sdb, err := s.spiceDB(ctx)
	if err != nil {
		return nil, err
	}
	if s.engine, err = waitForEngine(ctx, c.StartTimeout, c.Engine, sdb, c.Log); err != nil {
		return nil, err
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{
		Name: "mandate_stale_reads_total",
		Help: "Fully consistent SpiceDB answers that came from a revision before a write this replica had acknowledged, and were asked again.",
	}, func() float64 { return float64(s.engine.StaleReads()) }))
	metrics := cache.NewMetrics(reg)
	h := &service.Handlers{Engine: s.engine, Log: c.Log, RequireHumanToken: c.Credentials.requireHumanToken()}
	if h.Lookup, err = s.decisionCache(sdb, metrics); err != nil {
		return nil, err
	}
	var tlsCfg *tls.Config
	if c.TLS.Enabled() {
		r, err := newReloadingTLS(c.TLS, c.Log)
		if err != nil {
			return nil, configErr(err)
		}
		tlsCfg = r.serverConfig()
	}
	if s.grpcLis, err = net.Listen("tcp", c.GRPCAddr); err != nil {
		return nil, configErr(fmt.Errorf("--grpc-addr: %w", err))
	}
	if s.httpLis, err = net.Listen("tcp", c.HTTPAddr); err != nil {
		return nil, configErr(fmt.Errorf("--http-addr: %w", err))
	}
	if tlsCfg != nil {
		s.httpLis = tls.NewListener(s.httpLis, tlsCfg)
	}
	if err := s.setupAudit(ctx, h, reg); err != nil {
		return nil, err
	}
	if err := s.setupBounds(ctx, h, reg); err != nil {
		return nil, err
	}
	// The check path: metrics → audit → bounds → cache → engine.
	d := h.Lookup
	if h.Bounds != nil {
		d = h.Bounds
	}
	if s.recorder != nil {
		d = decider.NewAudit(d, s.recorder)
	}
	h.Decider = decider.NewMetrics(d, metrics.CheckAllowed, metrics.CheckDenied, metrics.CheckError)
	if tp != nil {
		// Outermost: the decision span covers audit, bounds, cache and SpiceDB.
		h.Decider = tracing.NewDecider(h.Decider, tp)
	}

	keys.ObserveAuthFailures(service.NewAuthFailures(reg, c.Log))
	interceptor := service.Interceptor(keys)
	search := &service.SearchHandlers{Handlers: h}
	grpcOpts := append(grpcServerTracing(tp), grpc.UnaryInterceptor(interceptor), grpc.StreamInterceptor(keys.StreamInterceptor),
		grpc.MaxConcurrentStreams(c.Conn.MaxConcurrentStreams), grpc.ConnectionTimeout(c.Conn.ReadTimeout))
	if tlsCfg != nil {
		grpcOpts = append(grpcOpts, grpc.Creds(credentials.NewTLS(tlsCfg)))
	}
	s.grpcServer = grpc.NewServer(grpcOpts...)
	mandatev1.RegisterTaskServiceServer(s.grpcServer, h)
	mandatev1.RegisterAgentServiceServer(s.grpcServer, h)
	mandatev1.RegisterGrantServiceServer(s.grpcServer, h)
	mandatev1.RegisterCheckServiceServer(s.grpcServer, h)
	mandatev1.RegisterSchemaServiceServer(s.grpcServer, h)
	mandatev1.RegisterRelationshipServiceServer(s.grpcServer, h)
	mandatev1.RegisterAuditServiceServer(s.grpcServer, h)
	mandatev1.RegisterReviewServiceServer(s.grpcServer, h)
	mandatev1.RegisterSearchServiceServer(s.grpcServer, search)
	mandatev1.RegisterAccessRequestServiceServer(s.grpcServer, &service.AccessHandlers{Handlers: h})
	s.health = health.NewServer()
	healthpb.RegisterHealthServer(s.grpcServer, s.health)

	// REST and AuthZEN call the same services in process, through the same
	// interceptors: no loopback connection.
	inproc := service.NewInProcess(h, search, interceptor)
	extra := map[string]http.Handler{"GET /metrics": promhttp.HandlerFor(reg, promhttp.HandlerOpts{})}
	az, err := authzen.New(authzen.Config{Check: inproc, Search: inproc, Authorize: keys.AuthorizeHeader, BaseURL: s.publicURL(), Log: c.Log})
	if err != nil {
		return nil, err
	}
	for pattern, h := range az.Routes() {
		extra[pattern] = h
	}
	oa, tokens, humans, err := s.setupCredentials(keys, extra)
	if err != nil {
		return nil, err
	}
	h.Tokens = tokens
	if humans != nil && len(humans.Issuers()) > 0 {
		// Humans answer their agents' access requests with their own token.
		h.OIDCConfigured = true
		keys.AcceptHumanTokens(func(ctx context.Context, raw string) (string, error) {
			hu, err := humans.Verify(ctx, raw)
			if err != nil {
				return "", err
			}
			return "user:" + hu.UserID, nil
		})
	}
	for pattern, h := range oa.Routes() {
		extra[pattern] = h
	}
	keys.SetPersonEngine(s.engine)
	if !c.DisableUI {
		if s.console, err = s.setupConsole(ctx, inproc, keys, humans); err != nil {
			return nil, err
		}
		extra[console.Prefix] = s.console
		extra["GET /ui"] = http.RedirectHandler(console.Prefix, http.StatusMovedPermanently)
	}
	handler, err := gateway.New(ctx, inproc, gateway.Config{MaxBodyBytes: c.MaxBodyBytes, Health: s.healthz, Extra: extra})
	if err != nil {
		return nil, err
	}
	s.httpServer = &http.Server{
		Handler:           httpTracing(tp, handler),
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       c.Conn.ReadTimeout,
		WriteTimeout:      c.Conn.WriteTimeout,
		IdleTimeout:       c.Conn.IdleTimeout,
		HTTP2:             &http.HTTP2Config{MaxConcurrentStreams: int(c.Conn.MaxConcurrentStreams)},
	}
	return s, nil
}

// requireWatch refuses to start on a Postgres datastore without
// track_commit_timestamp, unless the cache is off: the decision cache
// follows SpiceDB's Watch, which Postgres cannot serve without it, and the
// cache would otherwise be bypassed for the life of the process.
func (s *Server) requireWatch(ctx context.Context) error {
	c := s.cfg
	if c.SpiceDBEndpoint != "" || c.Embedded.Engine != "postgres" || c.DisableCache {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, c.StartTimeout)
	defer cancel()
	setting, err := embedded.CommitTimestamps(ctx, c.Embedded.URI)
	if err != nil {
		return fmt.Errorf("--datastore-uri: reading track_commit_timestamp: %w", err)
	}
	return configErr(commitTimestampsNeeded(setting))
}

// commitTimestampsNeeded is the one-line instruction for a Postgres whose
// track_commit_timestamp is setting, or nil when it is on.
func commitTimestampsNeeded(setting string) error {
	if setting == "on" {
		return nil
	}
	return fmt.Errorf("--datastore-uri: Postgres has track_commit_timestamp = %s, and the decision cache needs SpiceDB's Watch, which needs it on: run ALTER SYSTEM SET track_commit_timestamp = on and restart Postgres, or start with --disable-cache", setting)
}

// keys loads the keys file, or makes and prints development keys.
func (s *Server) keys() (*service.Keys, error) {
	c := &s.cfg
	if c.KeysFile != "" {
		return service.LoadKeys(c.KeysFile)
	}
	keys, plain := service.DevKeys()
	c.Log.Warn("no --keys-file: running in development mode with generated keys, printed once to stderr")
	fmt.Fprintln(c.DevKeysOut, "mandate development keys (shown once; use --keys-file in production):")
	for _, r := range service.Roles {
		fmt.Fprintf(c.DevKeysOut, "  %-8s %s\n", r, plain[r])
	}
	if c.Embedded.APIAddr != "" && c.Embedded.APIKey == "" {
		c.Embedded.APIKey = plain[service.RoleAdmin]
	}
	return keys, nil
}

// spiceDB connects to the remote SpiceDB or starts the embedded one.
func (s *Server) spiceDB(ctx context.Context) (*engine.Client, error) {
	c := s.cfg
	if c.SpiceDBEndpoint != "" {
		opts := grpcClientTracing(c.tp)
		if c.SpiceDBInsecure {
			opts = append(opts, grpc.WithTransportCredentials(insecure.NewCredentials()), grpcutil.WithInsecureBearerToken(c.SpiceDBToken))
		} else {
			certs, err := grpcutil.WithSystemCerts(grpcutil.VerifyCA)
			if c.SpiceDBCAFile != "" {
				certs, err = grpcutil.WithCustomCerts(grpcutil.VerifyCA, c.SpiceDBCAFile)
				if err != nil {
					return nil, configErr(fmt.Errorf("--spicedb-ca %s: %w", c.SpiceDBCAFile, err))
				}
			}
			if err != nil {
				return nil, err
			}
			opts = append(opts, certs, grpcutil.WithBearerToken(c.SpiceDBToken))
		}
		// gRPC's reconnect backoff grows to two minutes by default: a node
		// that was down that long would leave this replica failing for up
		// to two more minutes after it is back. Retry every few seconds.
		opts = append(opts, grpc.WithConnectParams(grpc.ConnectParams{
			Backoff:           backoff.Config{BaseDelay: 100 * time.Millisecond, Multiplier: 1.6, Jitter: 0.2, MaxDelay: 3 * time.Second},
			MinConnectTimeout: 5 * time.Second,
		}))
		client, err := authzed.NewClient(c.SpiceDBEndpoint, opts...)
		if err != nil {
			return nil, fmt.Errorf("--spicedb-endpoint %s: %w", c.SpiceDBEndpoint, err)
		}
		s.closers = append(s.closers, client.Close)
		return &engine.Client{Permissions: client.PermissionsServiceClient, Schema: client.SchemaServiceClient, Watch: client.WatchServiceClient}, nil
	}
	emb, err := embedded.Start(ctx, c.Embedded)
	if err != nil {
		return nil, err
	}
	s.embedded = emb
	s.closers = append(s.closers, emb.Close)
	conn, err := emb.Dial(grpcClientTracing(c.tp)...)
	if err != nil {
		return nil, err
	}
	s.closers = append([]func() error{conn.Close}, s.closers...)
	return engine.NewClient(conn), nil
}

// decisionCache puts the cache, its watch and its bus around the engine; it
// returns the engine alone when the cache is disabled.
func (s *Server) decisionCache(sdb *engine.Client, metrics *cache.Metrics) (engine.Decider, error) {
	c := s.cfg
	if c.DisableCache {
		return s.engine, nil
	}
	c.Cache.Metrics = metrics
	// Only the memory datastore's watch stays silent while idle.
	c.Cache.HeartbeatExpected = c.SpiceDBEndpoint != "" || (c.Embedded.Engine != "" && c.Embedded.Engine != "memory")
	var err error
	if s.cache, err = cache.New(s.engine, c.Cache); err != nil {
		return nil, err
	}
	s.engine.SetInvalidator(s.cache)
	if c.BusDSN != "" && c.BusDSN != "off" {
		s.bus = cache.NewBus(c.BusDSN, s.cache, c.Log)
		s.cache.SetPublisher(s.bus.Publish)
	}
	s.watcher = &cache.Watcher{Cache: s.cache, Client: sdb.Watch, Schema: sdb.Schema, Log: c.Log, OnSchemaChange: s.engine.RefreshSchema,
		OnRelationships: s.engine.NotifyRelationships, OnWrite: s.engine.NoteWrite}
	// The cache serves only while the watch follows SpiceDB; then long polls
	// are woken by it and read again rarely.
	s.engine.SetWatching(func() bool { ok, _ := s.cache.Status(); return ok })
	return s.cache, nil
}

// waitForEngine retries until SpiceDB answers or timeout passes: a freshly
// started embedded datastore or a remote cluster may need a moment.
func waitForEngine(ctx context.Context, timeout time.Duration, cfg engine.Config, sdb *engine.Client, log *slog.Logger) (*engine.Engine, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var lastErr error
	for {
		e, err := engine.New(ctx, cfg, sdb, log)
		if err == nil {
			return e, nil
		}
		// A refused key does not get better with waiting.
		if code := status.Code(err); code == codes.Unauthenticated || code == codes.PermissionDenied {
			return nil, configErr(fmt.Errorf("--spicedb-token: SpiceDB refused the preshared key: %s", status.Convert(err).Message()))
		}
		lastErr = err
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("SpiceDB did not become ready: %w", lastErr)
		case <-time.After(200 * time.Millisecond):
		}
	}
}

func (s *Server) setupAudit(ctx context.Context, h *service.Handlers, reg prometheus.Registerer) error {
	a := s.cfg.Audit
	if a.Mode == "off" {
		return nil
	}
	var store audit.Store
	spool := ""
	if a.DSN != "" {
		pg, err := audit.OpenPostgres(ctx, a.DSN)
		if err != nil {
			return fmt.Errorf("--audit-dsn: %w", err)
		}
		s.closers = append(s.closers, func() error { pg.Close(); return nil })
		store = pg
		spool = a.SpoolPath
		if spool == "" {
			_, port, _ := net.SplitHostPort(s.GRPCAddr())
			spool = filepath.Join(os.TempDir(), "mandate-audit-"+port+".spool")
		}
	} else {
		store = audit.NewMemoryStore(a.MemoryRecords, a.MemoryBytes)
	}
	var sinks []audit.Sink
	for _, sk := range []struct {
		flag, path string
		ocsf       bool
	}{{"--audit-file", a.File, false}, {"--audit-ocsf", a.OCSF, true}} {
		if sk.path == "" {
			continue
		}
		ls, err := audit.OpenLineSink(sk.path, sk.ocsf)
		if err != nil {
			return configErr(fmt.Errorf("%s %s: %w", sk.flag, sk.path, err))
		}
		s.closers = append(s.closers, ls.Close)
		sinks = append(sinks, ls)
	}
	rec, err := audit.NewRecorder(audit.Config{Store: store, Mode: a.Mode, SpoolPath: spool, Sinks: sinks, Log: s.log, Metrics: audit.NewMetrics(reg)})
	if err != nil {
		return err
	}
	s.recorder, s.auditDone = rec, make(chan struct{})
	h.Audit, h.AuditStore = rec, store
	go func() { rec.Run(context.Background()); close(s.auditDone) }()
	return nil
}

func (s *Server) setupBounds(ctx context.Context, h *service.Handlers, reg prometheus.Registerer) error {
	b := s.cfg.Bounds
	var store bounds.Store
	if b.DSN != "" && b.DSN != "memory" {
		pg, err := bounds.OpenPostgres(ctx, b.DSN)
		if err != nil {
			return fmt.Errorf("--bounds-dsn: %w", err)
		}
		s.closers = append(s.closers, func() error { pg.Close(); return nil })
		store = pg
	} else {
		store = bounds.NewMemoryStore()
	}
	delivered := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "mandate_alert_deliveries_total",
		Help: "Alert webhook deliveries, by result: delivered, retried (a failed attempt) or dropped (all attempts failed, or the queue was full)."}, []string{"result"})
	reg.MustRegister(delivered)
	spool := b.AlertSpool
	if spool == "" && b.Webhook != "" {
		_, port, _ := net.SplitHostPort(s.GRPCAddr())
		spool = filepath.Join(os.TempDir(), "mandate-alerts-"+port+".spool")
	}
	alerter := &alert.Alerter{URL: b.Webhook, Secret: b.WebhookSecret, Attempts: b.WebhookAttempts, Backoff: b.WebhookBackoff, Log: s.log, Delivered: delivered, SpoolPath: spool}
	// Alerts a previous run left waiting go out now.
	alerter.Start()
	h.Alerter = alerter
	// Closers run in order: the alerter drains before the stores close.
	s.closers = append([]func() error{func() error { alerter.Close(); return nil }}, s.closers...)
	var err error
	h.Bounds, err = decider.NewBounds(h.Lookup, decider.BoundsConfig{
		Agents: s.engine, Store: store, Defaults: b.Defaults, Alerter: alerter, Audit: s.recorder,
		Metrics: decider.NewBoundsMetrics(reg), Log: s.log,
	})
	if err != nil {
		return err
	}
	// Retries of failed suspensions stop before the stores they write to close.
	s.closers = append([]func() error{func() error { h.Bounds.Close(); return nil }}, s.closers...)
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
					s.log.Warn("pruning bound counts", "error", err)
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

// Console returns the web console, nil when --ui=false.
func (s *Server) Console() *console.Console { return s.console }

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
