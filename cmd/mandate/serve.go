package main

import (
	"fmt"
	"log/slog"
	"os"

	"github.com/spf13/cobra"

	"github.com/mandate-dev/mandate/engine/embedded"
	"github.com/mandate-dev/mandate/server"
)

func serveCmd() *cobra.Command {
	var cfg server.Config
	var logLevel string
	var ui bool
	cmd := &cobra.Command{
		Use:   "serve",
		Short: "Run the mandate server with an embedded SpiceDB (memory by default) or a remote one",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var lvl slog.Level
			if err := lvl.UnmarshalText([]byte(logLevel)); err != nil {
				return &server.ConfigError{Err: fmt.Errorf("--log-level: %w", err)}
			}
			cfg.Log = slog.New(slog.NewJSONHandler(os.Stderr, &slog.HandlerOptions{Level: lvl}))
			cfg.DevKeysOut = os.Stderr
			cfg.DisableUI = !ui
			if cfg.Embedded.APIKey == "" {
				cfg.Embedded.APIKey = os.Getenv("MANDATE_SPICEDB_API_KEY")
			}
			if cfg.SpiceDBToken == "" && cfg.SpiceDBEndpoint != "" {
				cfg.SpiceDBToken = os.Getenv("MANDATE_SPICEDB_TOKEN")
			}
			if cfg.Bounds.WebhookSecret == "" {
				cfg.Bounds.WebhookSecret = os.Getenv("MANDATE_ALERT_WEBHOOK_SECRET")
			}
			srv, err := cfg.Complete(cmd.Context())
			if err != nil {
				return err
			}
			return srv.Run(cmd.Context())
		},
	}
	// Every default lives where its component is built (server, engine,
	// cache, embedded, audit, bounds); a flag left at its zero value takes
	// it, and the help text only repeats it.
	f := cmd.Flags()
	f.StringVar(&cfg.GRPCAddr, "grpc-addr", "", "gRPC listen address (default 127.0.0.1:50051)")
	f.StringVar(&cfg.HTTPAddr, "http-addr", "", "REST listen address (default 127.0.0.1:8080)")
	f.StringVar(&cfg.TLS.CertFile, "tls-cert", "", "serve both ports over TLS with this certificate chain (PEM); reloaded when the file changes")
	f.StringVar(&cfg.TLS.KeyFile, "tls-key", "", "the private key of --tls-cert (PEM); reloaded when the file changes")
	f.StringVar(&cfg.TLS.ClientCAFile, "client-ca", "", "CAs (PEM, e.g. the SPIFFE trust bundle) that client certificates must chain to; a caller with a verified certificate and no key is authenticated by the keys file's spiffe_id and dns_name entries")
	f.BoolVar(&cfg.Engine.BindAgentsToWorkload, "bind-agents-to-workload", false, "accept renewals and delegations of an agent that recorded a workload identity (the SPIFFE ID of its creator's X.509-SVID) only over a connection presenting the same SPIFFE ID; needs --client-ca")
	f.StringVar(&cfg.KeysFile, "keys-file", "", "YAML file of accepted keys (name, role, sha256); without it, development keys are generated and printed once")
	f.StringVar(&cfg.Embedded.Engine, "datastore-engine", "", "embedded SpiceDB datastore: memory, postgres or cockroachdb (default memory)")
	f.StringVar(&cfg.Embedded.URI, "datastore-uri", "", "datastore connection string for postgres or cockroachdb")
	f.BoolVar(&cfg.Embedded.Migrate, "datastore-migrate", false, "run SpiceDB's datastore migrations to head before serving")
	f.IntVar(&cfg.Embedded.MaxConns, "datastore-max-conns", 0, "most read connections to a postgres or cockroachdb datastore, writes get half as many (default 16)")
	f.StringVar(&cfg.Embedded.APIAddr, "spicedb-api-addr", "", "also serve the embedded SpiceDB's v1 API on this address, behind --spicedb-api-key (or the development admin key)")
	f.StringVar(&cfg.Embedded.APIKey, "spicedb-api-key", "", "preshared key for --spicedb-api-addr (or MANDATE_SPICEDB_API_KEY)")
	f.StringVar(&cfg.SpiceDBEndpoint, "spicedb-endpoint", "", "use a remote SpiceDB at this address instead of the embedded one")
	f.StringVar(&cfg.SpiceDBToken, "spicedb-token", "", "preshared key of the remote SpiceDB (or MANDATE_SPICEDB_TOKEN)")
	f.BoolVar(&cfg.SpiceDBInsecure, "spicedb-insecure", false, "talk to the remote SpiceDB without TLS")
	f.StringVar(&cfg.SpiceDBCAFile, "spicedb-ca", "", "PEM file of the CAs the remote SpiceDB's certificate must chain to (default: the system's)")
	f.DurationVar(&cfg.StartTimeout, "start-timeout", 0, "how long to wait for SpiceDB to answer at startup (default 30s)")
	f.DurationVar(&cfg.Engine.MaxTaskTTL, "max-task-ttl", 0, "longest task lifetime (default 24h)")
	f.DurationVar(&cfg.Engine.MaxAgentTTL, "max-agent-ttl", 0, "longest agent lifetime; 0 means bounded only by its task and parent")
	f.DurationVar(&cfg.Engine.MaxGrantTTL, "max-grant-ttl", 0, "longest grant lifetime (default 1h)")
	f.DurationVar(&cfg.Engine.AccessRequestTTL, "access-request-ttl", 0, "how long an access request waits for its human's answer before it expires (default 15m)")
	f.IntVar(&cfg.Engine.MaxChainDepth, "max-chain-depth", 0, "most agents in one delegation chain (default 8)")
	f.DurationVar(&cfg.Engine.CallTimeout, "check-timeout", 0, "deadline for each call into SpiceDB; past it the answer is 503, never an allow (default 2s)")
	f.IntVar(&cfg.Cache.Size, "cache-size", 0, "decisions kept in the decision cache (default 100000)")
	f.DurationVar(&cfg.Cache.MaxAge, "cache-max-age", 0, "longest any cached decision is served, as a safety net (default 5m)")
	f.DurationVar(&cfg.Cache.LagBound, "watch-lag-bound", 0, "bypass the cache while the SpiceDB watch has been silent this long; must exceed SpiceDB's watch heartbeat (default 1s)")
	f.BoolVar(&cfg.DisableCache, "disable-cache", false, "answer every check from SpiceDB")
	f.StringVar(&cfg.BusDSN, "invalidation-bus-dsn", "", "Postgres shared by the replicas to announce writes to each other at once (default: the postgres datastore; \"off\" disables)")
	f.StringVar(&cfg.Audit.Mode, "audit-mode", "", "batched, strict (a check waits until its record is durable) or off (default batched)")
	f.StringVar(&cfg.Audit.DSN, "audit-dsn", "", "Postgres or CockroachDB for the audit trail (default: the postgres/cockroachdb datastore; otherwise in memory)")
	f.StringVar(&cfg.Audit.SpoolPath, "audit-spool", "", "file where audit records wait while the audit database is unreachable (default: in the temp directory)")
	f.Int64Var(&cfg.Audit.MemoryBytes, "audit-memory-bytes", 0, "most bytes kept by the in-memory audit store, oldest records forgotten first (default 128 MiB)")
	f.IntVar(&cfg.Audit.MemoryRecords, "audit-memory-records", 0, "records kept by the in-memory audit store (default 100000)")
	f.StringVar(&cfg.Audit.File, "audit-file", "", "also append every audit record as JSON lines to this file (\"-\" for stdout)")
	f.StringVar(&cfg.Audit.OCSF, "audit-ocsf", "", "also append every audit record as an OCSF API Activity (6003) event to this file (\"-\" for stdout)")
	f.IntVar(&cfg.Bounds.Defaults.ChecksPerMinute, "bound-checks-per-minute", 0, "default behavioural bound: most checks per agent in any sliding minute (0: unbounded)")
	f.IntVar(&cfg.Bounds.Defaults.MaxDenials, "bound-max-denials", 0, "default behavioural bound: most denied checks per agent in any sliding --bound-denial-window (0: unbounded)")
	f.DurationVar(&cfg.Bounds.Defaults.DenialWindow, "bound-denial-window", 0, "window of --bound-max-denials (default 5m)")
	f.IntVar(&cfg.Bounds.Defaults.ResourcesPerHour, "bound-resources-per-hour", 0, "default behavioural bound: most distinct resources per agent in any sliding hour (0: unbounded)")
	f.StringVar(&cfg.Bounds.DSN, "bounds-dsn", "", "Postgres or CockroachDB that keeps bound counts, shared by replicas (default: the postgres/cockroachdb datastore; otherwise in memory; \"memory\" forces in-process)")
	f.StringVar(&cfg.Bounds.AlertSpool, "alert-spool", "", "file where alerts wait for delivery, so they survive a restart (default: in the temp directory); use a persistent path in production")
	f.StringVar(&cfg.Bounds.WebhookSecret, "alert-webhook-secret", "", "signs each alert with HMAC-SHA256 in X-Mandate-Signature (or MANDATE_ALERT_WEBHOOK_SECRET)")
	f.StringVar(&cfg.Bounds.Webhook, "alert-webhook", "", "URL that receives a JSON alert, with retries, whenever an agent is suspended for crossing a bound")
	f.Int64Var(&cfg.MaxBodyBytes, "max-body-bytes", 0, "largest REST request body (default 1 MiB)")
	f.StringVar(&cfg.PublicURL, "public-url", "", "the one public base URL of every absolute URL mandate publishes: the tokens' iss, the OAuth and AuthZEN metadata (default http:// and --http-addr, or https:// with --tls-cert)")
	f.StringArrayVar(&cfg.Credentials.OIDCIssuers, "oidc-issuer", nil, "OIDC issuer URL whose human tokens may start tasks (repeatable)")
	f.StringVar(&cfg.Credentials.OIDCAudience, "oidc-audience", "", "aud every human token must carry (required with --oidc-issuer)")
	f.StringVar(&cfg.Credentials.OIDCUserClaim, "oidc-user-claim", "", "claim that names the user: sub, email (only when email_verified) or another string claim (default sub)")
	f.StringArrayVar(&cfg.Credentials.SigningKeyFiles, "signing-key-file", nil, "PEM private key (P-256 or Ed25519) for agent tokens, repeatable: the first signs, all are published (default: a key made in memory)")
	f.DurationVar(&cfg.Credentials.TokenTTL, "token-ttl", 0, "agent token lifetime when none is asked for (default 15m)")
	f.DurationVar(&cfg.Credentials.MaxTokenTTL, "max-token-ttl", 0, "longest agent token lifetime (default 1h)")
	f.StringVar(&cfg.Credentials.RequireHumanToken, "require-human-token", "", "on or off: refuse POST /v1/tasks and POST /v1/grants to agents, so tasks come only from human tokens (default on with --oidc-issuer)")
	f.BoolVar(&cfg.Credentials.DevIdP, "dev-idp", false, "also serve a DEVELOPMENT-ONLY OIDC provider at <public-url>/dev-idp and trust it (`mandate dev login USER`); anyone can sign in there as anyone")
	f.BoolVar(&ui, "ui", true, "serve the web console at <public-url>/ui/ (--ui=false turns it off)")
	f.StringVar(&logLevel, "log-level", "info", "debug, info, warn or error")
	return cmd
}

func migrateCmd() *cobra.Command {
	var engineName, uri string
	cmd := &cobra.Command{
		Use:   "migrate",
		Short: "Run SpiceDB's datastore migrations to head (postgres or cockroachdb)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg := embedded.Config{Engine: engineName, URI: uri}
			if err := cfg.Validate(); err != nil {
				return err
			}
			if engineName == "memory" {
				return fmt.Errorf("the memory datastore needs no migrations")
			}
			if err := embedded.Migrate(cmd.Context(), engineName, uri); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "migrated the %s datastore to head\n", engineName)
			return nil
		},
	}
	cmd.Flags().StringVar(&engineName, "datastore-engine", "postgres", "postgres or cockroachdb")
	cmd.Flags().StringVar(&uri, "datastore-uri", "", "datastore connection string")
	return cmd
}
