// Command mandate is the mandate server and its command-line client.
package main

import (
	"bytes"
	"context"
	"encoding/csv"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/authzed/grpcutil"
	"github.com/spf13/cobra"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/mandate-dev/mandate/engine/embedded"
	mandatev1 "github.com/mandate-dev/mandate/proto/mandate/v1"
	"github.com/mandate-dev/mandate/service"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := rootCmd().ExecuteContext(ctx); err != nil {
		fmt.Fprintln(os.Stderr, "error:", err)
		os.Exit(1)
	}
}

func rootCmd() *cobra.Command {
	root := &cobra.Command{
		Use:           "mandate",
		Short:         "mandate is a policy decision point for AI agents, on SpiceDB",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.AddCommand(serveCmd(), migrateCmd(), schemaCmd(), checkCmd(), auditCmd(), agentsCmd(), principalsCmd(), explainCmd(), reviewCmd(), mcpGatewayCmd())
	return root
}

func serveCmd() *cobra.Command {
	var cfg service.Config
	var logLevel string
	cmd := &cobra.Command{
		Use:   "serve",
		Short: "Run the mandate server with an embedded SpiceDB (memory by default) or a remote one",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var lvl slog.Level
			if err := lvl.UnmarshalText([]byte(logLevel)); err != nil {
				return fmt.Errorf("--log-level: %w", err)
			}
			cfg.Log = slog.New(slog.NewJSONHandler(os.Stderr, &slog.HandlerOptions{Level: lvl}))
			cfg.DevKeysOut = os.Stderr
			if cfg.Embedded.APIKey == "" {
				cfg.Embedded.APIKey = os.Getenv("MANDATE_SPICEDB_API_KEY")
			}
			if cfg.SpiceDBToken == "" {
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
	f := cmd.Flags()
	f.StringVar(&cfg.GRPCAddr, "grpc-addr", "127.0.0.1:50051", "gRPC listen address")
	f.StringVar(&cfg.HTTPAddr, "http-addr", "127.0.0.1:8080", "REST listen address")
	f.StringVar(&cfg.KeysFile, "keys-file", "", "YAML file of accepted keys (name, role, sha256); without it, development keys are generated and printed once")
	f.StringVar(&cfg.Embedded.Engine, "datastore-engine", "memory", "embedded SpiceDB datastore: memory, postgres or cockroachdb")
	f.StringVar(&cfg.Embedded.URI, "datastore-uri", "", "datastore connection string for postgres or cockroachdb")
	f.BoolVar(&cfg.Embedded.Migrate, "datastore-migrate", false, "run SpiceDB's datastore migrations to head before serving")
	f.IntVar(&cfg.Embedded.MaxConns, "datastore-max-conns", 16, "most read connections to a postgres or cockroachdb datastore (writes get half as many)")
	f.StringVar(&cfg.Embedded.APIAddr, "spicedb-api-addr", "", "also serve the embedded SpiceDB's v1 API on this address, behind --spicedb-api-key (or the development admin key)")
	f.StringVar(&cfg.Embedded.APIKey, "spicedb-api-key", "", "preshared key for --spicedb-api-addr (or MANDATE_SPICEDB_API_KEY)")
	f.StringVar(&cfg.SpiceDBEndpoint, "spicedb-endpoint", "", "use a remote SpiceDB at this address instead of the embedded one")
	f.StringVar(&cfg.SpiceDBToken, "spicedb-token", "", "preshared key of the remote SpiceDB (or MANDATE_SPICEDB_TOKEN)")
	f.BoolVar(&cfg.SpiceDBInsecure, "spicedb-insecure", false, "talk to the remote SpiceDB without TLS")
	f.DurationVar(&cfg.Engine.MaxTaskTTL, "max-task-ttl", 24*time.Hour, "longest task lifetime")
	f.DurationVar(&cfg.Engine.MaxAgentTTL, "max-agent-ttl", 0, "longest agent lifetime; 0 means bounded only by its task and parent")
	f.DurationVar(&cfg.Engine.MaxGrantTTL, "max-grant-ttl", time.Hour, "longest grant lifetime")
	f.IntVar(&cfg.Engine.MaxChainDepth, "max-chain-depth", 8, "most agents in one delegation chain")
	f.DurationVar(&cfg.Engine.CallTimeout, "check-timeout", 2*time.Second, "deadline for each call into SpiceDB; past it the answer is 503, never an allow")
	f.IntVar(&cfg.Cache.Size, "cache-size", 100_000, "decisions kept in the decision cache")
	f.DurationVar(&cfg.Cache.MaxAge, "cache-max-age", 5*time.Minute, "longest any cached decision is served, as a safety net")
	f.DurationVar(&cfg.Cache.LagBound, "watch-lag-bound", time.Second, "bypass the cache while the SpiceDB watch has been silent this long (must exceed SpiceDB's watch heartbeat)")
	f.BoolVar(&cfg.DisableCache, "disable-cache", false, "answer every check from SpiceDB")
	f.StringVar(&cfg.BusDSN, "invalidation-bus-dsn", "", "Postgres shared by the replicas to announce writes to each other at once (default: the postgres datastore; \"off\" disables)")
	f.StringVar(&cfg.Audit.Mode, "audit-mode", "batched", "batched, strict (a check waits until its record is durable) or off")
	f.StringVar(&cfg.Audit.DSN, "audit-dsn", "", "Postgres or CockroachDB for the audit trail (default: the postgres/cockroachdb datastore; otherwise in memory)")
	f.StringVar(&cfg.Audit.SpoolPath, "audit-spool", "", "file where audit records wait while the audit database is unreachable (default: in the temp directory)")
	f.IntVar(&cfg.Audit.MemoryRecords, "audit-memory-records", 100_000, "records kept by the in-memory audit store")
	f.StringVar(&cfg.Audit.File, "audit-file", "", "also append every audit record as JSON lines to this file (\"-\" for stdout)")
	f.StringVar(&cfg.Audit.OCSF, "audit-ocsf", "", "also append every audit record as an OCSF API Activity (6003) event to this file (\"-\" for stdout)")
	f.IntVar(&cfg.Bounds.Defaults.ChecksPerMinute, "bound-checks-per-minute", 0, "default behavioural bound: most checks per agent in any sliding minute (0: unbounded)")
	f.IntVar(&cfg.Bounds.Defaults.MaxDenials, "bound-max-denials", 0, "default behavioural bound: most denied checks per agent in any sliding --bound-denial-window (0: unbounded)")
	f.DurationVar(&cfg.Bounds.Defaults.DenialWindow, "bound-denial-window", 5*time.Minute, "window of --bound-max-denials")
	f.IntVar(&cfg.Bounds.Defaults.ResourcesPerHour, "bound-resources-per-hour", 0, "default behavioural bound: most distinct resources per agent in any sliding hour (0: unbounded)")
	f.StringVar(&cfg.Bounds.DSN, "bounds-dsn", "", "Postgres or CockroachDB that keeps bound counts, shared by replicas (default: the postgres/cockroachdb datastore; otherwise in memory; \"memory\" forces in-process)")
	f.StringVar(&cfg.Bounds.WebhookSecret, "alert-webhook-secret", "", "signs each alert with HMAC-SHA256 in X-Mandate-Signature (or MANDATE_ALERT_WEBHOOK_SECRET)")
	f.StringVar(&cfg.Bounds.Webhook, "alert-webhook", "", "URL that receives a JSON alert, with retries, whenever an agent is suspended for crossing a bound")
	f.Int64Var(&cfg.MaxBodyBytes, "max-body-bytes", 1<<20, "largest REST request body")
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

// clientFlags are shared by the client commands.
type clientFlags struct {
	addr string
	key  string
}

func (c *clientFlags) register(cmd *cobra.Command) {
	cmd.Flags().StringVar(&c.addr, "addr", "127.0.0.1:50051", "mandate gRPC address")
	cmd.Flags().StringVar(&c.key, "key", "", "API key (or MANDATE_KEY)")
}

func (c *clientFlags) dial() (*grpc.ClientConn, error) {
	key := c.key
	if key == "" {
		key = os.Getenv("MANDATE_KEY")
	}
	if key == "" {
		return nil, fmt.Errorf("--key or MANDATE_KEY is required")
	}
	return grpc.NewClient(c.addr, grpc.WithTransportCredentials(insecure.NewCredentials()), grpcutil.WithInsecureBearerToken(key))
}

func printJSON(cmd *cobra.Command, m proto.Message) error {
	b, err := protojson.MarshalOptions{UseProtoNames: true}.Marshal(m)
	if err != nil {
		return err
	}
	// protojson varies its whitespace on purpose; scripts get stable output.
	var out bytes.Buffer
	if err := json.Indent(&out, b, "", "  "); err != nil {
		return err
	}
	fmt.Fprintln(cmd.OutOrStdout(), out.String())
	return nil
}

func schemaCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "schema", Short: "Read or replace the schema"}
	var cf clientFlags
	apply := &cobra.Command{
		Use:   "apply FILE",
		Short: "Validate and write a schema file",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			src, err := os.ReadFile(args[0])
			if err != nil {
				return err
			}
			conn, err := cf.dial()
			if err != nil {
				return err
			}
			defer conn.Close()
			resp, err := mandatev1.NewSchemaServiceClient(conn).WriteSchema(cmd.Context(), &mandatev1.WriteSchemaRequest{Schema: string(src)})
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "schema written (consistency_token %s)\n", resp.GetConsistencyToken())
			return nil
		},
	}
	cf.register(apply)
	var rf clientFlags
	read := &cobra.Command{
		Use:   "read",
		Short: "Print the current schema",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			conn, err := rf.dial()
			if err != nil {
				return err
			}
			defer conn.Close()
			resp, err := mandatev1.NewSchemaServiceClient(conn).ReadSchema(cmd.Context(), &mandatev1.ReadSchemaRequest{})
			if err != nil {
				return err
			}
			fmt.Fprint(cmd.OutOrStdout(), resp.GetSchema())
			return nil
		},
	}
	rf.register(read)
	cmd.AddCommand(apply, read)
	return cmd
}

func checkCmd() *cobra.Command {
	var cf clientFlags
	var reqCtx, correlationID, reason, output string
	cmd := &cobra.Command{
		Use:   "check SUBJECT PERMISSION RESOURCE",
		Short: "Ask whether SUBJECT may PERMISSION on RESOURCE; exits 0 on allow, 3 on deny",
		Args:  cobra.ExactArgs(3),
		RunE: func(cmd *cobra.Command, args []string) error {
			req := &mandatev1.CheckRequest{Subject: args[0], Permission: args[1], Resource: args[2], CorrelationId: correlationID, Reason: reason}
			if reqCtx != "" {
				var m map[string]any
				if err := json.Unmarshal([]byte(reqCtx), &m); err != nil {
					return fmt.Errorf("--context must be a JSON object: %w", err)
				}
				s, err := structpb.NewStruct(m)
				if err != nil {
					return fmt.Errorf("--context: %w", err)
				}
				req.Context = s
			}
			conn, err := cf.dial()
			if err != nil {
				return err
			}
			defer conn.Close()
			resp, err := mandatev1.NewCheckServiceClient(conn).Check(cmd.Context(), req)
			if err != nil {
				return err
			}
			if output == "json" {
				if err := printJSON(cmd, resp); err != nil {
					return err
				}
			} else {
				verdict := "DENY"
				if resp.GetAllowed() {
					verdict = "ALLOW"
				}
				fmt.Fprintf(cmd.OutOrStdout(), "%s %s (decision %s)\n", verdict, resp.GetReasonCode(), resp.GetDecisionId())
				if len(resp.GetChain()) > 0 {
					fmt.Fprintf(cmd.OutOrStdout(), "chain: %v\n", resp.GetChain())
				}
			}
			if !resp.GetAllowed() {
				os.Exit(3)
			}
			return nil
		},
	}
	cf.register(cmd)
	cmd.Flags().StringVar(&reqCtx, "context", "", "caveat context as a JSON object")
	cmd.Flags().StringVar(&correlationID, "correlation-id", "", "correlation id linking related actions")
	cmd.Flags().StringVar(&reason, "reason", "", "the agent's stated reasoning")
	cmd.Flags().StringVarP(&output, "output", "o", "text", "text or json")
	return cmd
}

func auditCmd() *cobra.Command {
	var cf clientFlags
	var req mandatev1.ListAuditRequest
	var output string
	var limit int
	cmd := &cobra.Command{
		Use:   "audit",
		Short: "List audit records, newest first: what an agent did, for whom, why",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			conn, err := cf.dial()
			if err != nil {
				return err
			}
			defer conn.Close()
			client := mandatev1.NewAuditServiceClient(conn)
			var all []*mandatev1.AuditRecord
			for {
				resp, err := client.ListAudit(cmd.Context(), &req)
				if err != nil {
					return err
				}
				all = append(all, resp.GetRecords()...)
				if resp.GetNextPageToken() == "" || (limit > 0 && len(all) >= limit) {
					break
				}
				req.PageToken = resp.GetNextPageToken()
			}
			if limit > 0 && len(all) > limit {
				all = all[:limit]
			}
			if output == "json" {
				return printJSON(cmd, &mandatev1.ListAuditResponse{Records: all})
			}
			w := cmd.OutOrStdout()
			fmt.Fprintf(w, "%-27s %-6s %-8s %-27s %-16s %-28s %-20s %s\n", "TIME", "KIND", "RESULT", "SUBJECT/TARGET", "PERMISSION/ACTION", "RESOURCE", "PRINCIPAL", "CORRELATION")
			for _, r := range all {
				who, what, result := r.GetSubject(), r.GetPermission(), r.GetDecision()
				if r.GetKind() == "change" {
					who, what, result = r.GetTarget(), r.GetAction(), "-"
				} else if r.GetReasonCode() != "" && r.GetDecision() != "allow" {
					result = r.GetDecision() + ":" + r.GetReasonCode()
				}
				fmt.Fprintf(w, "%-27s %-6s %-8s %-27s %-16s %-28s %-20s %s\n", r.GetTime().AsTime().Format("2006-01-02T15:04:05.000Z07:00"),
					r.GetKind(), result, who, what, r.GetResource(), r.GetPrincipal(), r.GetCorrelationId())
			}
			return nil
		},
	}
	cf.register(cmd)
	f := cmd.Flags()
	f.StringVar(&req.Agent, "agent", "", "agent:<id>")
	f.StringVar(&req.Principal, "principal", "", "user:<id>")
	f.StringVar(&req.Task, "task", "", "task:<id>")
	f.StringVar(&req.CorrelationId, "correlation-id", "", "correlation id")
	f.StringVar(&req.Decision, "decision", "", "allow, deny or error")
	f.StringVar(&req.Resource, "resource", "", "type:id")
	f.StringVar(&req.Since, "since", "", "RFC 3339 time or duration back from now (30d, 12h)")
	f.StringVar(&req.Until, "until", "", "RFC 3339 time or duration back from now")
	f.IntVar(&limit, "limit", 200, "most records to print (0: all)")
	f.StringVarP(&output, "output", "o", "table", "table or json")
	return cmd
}

func agentsCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "agents", Short: "Review agent instances, or freeze them all"}
	cmd.AddCommand(freezeCmds()...)
	var lf clientFlags
	var lreq mandatev1.ListAgentsRequest
	var lout string
	list := &cobra.Command{
		Use:   "list",
		Short: "List agents with their chain, task, expiry and status",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			conn, err := lf.dial()
			if err != nil {
				return err
			}
			defer conn.Close()
			client := mandatev1.NewReviewServiceClient(conn)
			all := &mandatev1.ListAgentsResponse{}
			for {
				resp, err := client.ListAgents(cmd.Context(), &lreq)
				if err != nil {
					return err
				}
				all.Agents = append(all.Agents, resp.GetAgents()...)
				if resp.GetNextPageToken() == "" {
					break
				}
				lreq.PageToken = resp.GetNextPageToken()
			}
			rows := [][]string{{"AGENT", "NAME", "STATUS", "EXPIRES", "TASK", "CHAIN"}}
			for _, a := range all.GetAgents() {
				rows = append(rows, []string{"agent:" + a.GetId(), a.GetName(), a.GetStatus(), a.GetExpiresAt().AsTime().Format(time.RFC3339), a.GetTask(), strings.Join(a.GetChain(), " > ")})
			}
			return emit(cmd, lout, all, rows)
		},
	}
	lf.register(list)
	list.Flags().StringVar(&lreq.Principal, "principal", "", "user:<id>")
	list.Flags().StringVar(&lreq.Task, "task", "", "task:<id>")
	list.Flags().StringVar(&lreq.Status, "status", "", "active, suspended, revoked or expired")
	list.Flags().StringVarP(&lout, "output", "o", "table", "table, json or csv")

	var af clientFlags
	var areq mandatev1.ListAgentAccessRequest
	var aout string
	access := &cobra.Command{
		Use:   "access ID",
		Short: "List every resource and permission an agent can reach now, and why",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			conn, err := af.dial()
			if err != nil {
				return err
			}
			defer conn.Close()
			areq.Id = strings.TrimPrefix(args[0], "agent:")
			client := mandatev1.NewReviewServiceClient(conn)
			all := &mandatev1.ListAgentAccessResponse{}
			for {
				resp, err := client.ListAgentAccess(cmd.Context(), &areq)
				if err != nil {
					return err
				}
				all.Agent, all.Chain, all.ConsistencyToken = resp.GetAgent(), resp.GetChain(), resp.GetConsistencyToken()
				all.Access = append(all.Access, resp.GetAccess()...)
				if resp.GetNextPageToken() == "" {
					break
				}
				areq.PageToken = resp.GetNextPageToken()
			}
			rows := [][]string{{"PERMISSION", "RESOURCE", "VALID UNTIL", "HOLDERS", "GRANTS"}}
			for _, x := range all.GetAccess() {
				rows = append(rows, []string{x.GetPermission(), x.GetResource(), x.GetValidUntil().AsTime().Format(time.RFC3339), strings.Join(x.GetHolders(), ","), strings.Join(x.GetGrants(), ",")})
			}
			return emit(cmd, aout, all, rows)
		},
	}
	af.register(access)
	access.Flags().StringVar(&areq.ResourceType, "resource-type", "", "only this resource type")
	access.Flags().StringVar(&areq.Permission, "permission", "", "only this permission")
	access.Flags().StringVarP(&aout, "output", "o", "table", "table, json or csv")
	cmd.AddCommand(list, access)
	return cmd
}

func explainCmd() *cobra.Command {
	var cf clientFlags
	var out string
	cmd := &cobra.Command{
		Use:   "explain SUBJECT PERMISSION RESOURCE",
		Short: "Say, leg by leg, why a check is allowed or denied and what would change it",
		Args:  cobra.ExactArgs(3),
		RunE: func(cmd *cobra.Command, args []string) error {
			conn, err := cf.dial()
			if err != nil {
				return err
			}
			defer conn.Close()
			resp, err := mandatev1.NewReviewServiceClient(conn).Explain(cmd.Context(), &mandatev1.ExplainRequest{Subject: args[0], Permission: args[1], Resource: args[2]})
			if err != nil {
				return err
			}
			rows := [][]string{{"LEG", "PASSED", "DETAIL", "PATH"}}
			for _, l := range resp.GetLegs() {
				rows = append(rows, []string{l.GetName(), fmt.Sprint(l.GetPassed()), l.GetDetail(), strings.Join(l.GetPath(), "; ")})
			}
			if out == "table" {
				verdict := "DENY"
				if resp.GetAllowed() {
					verdict = "ALLOW"
				}
				fmt.Fprintf(cmd.OutOrStdout(), "%s %s\n\n", verdict, resp.GetReasonCode())
				if err := emit(cmd, out, resp, rows); err != nil {
					return err
				}
				fmt.Fprintln(cmd.OutOrStdout(), "\nwhat would change it:")
				for _, w := range resp.GetWouldChange() {
					fmt.Fprintln(cmd.OutOrStdout(), "  - "+w)
				}
				return nil
			}
			return emit(cmd, out, resp, rows)
		},
	}
	cf.register(cmd)
	cmd.Flags().StringVarP(&out, "output", "o", "table", "table, json or csv")
	return cmd
}

func reviewCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "review", Short: "Periodic access review"}
	var cf clientFlags
	var req mandatev1.GetReviewReportRequest
	var out string
	report := &cobra.Command{
		Use:   "report",
		Short: "One page per agent: identity and chain, what it can reach, what it used, what it never used, its denials",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			conn, err := cf.dial()
			if err != nil {
				return err
			}
			defer conn.Close()
			client := mandatev1.NewReviewServiceClient(conn)
			if out == "csv" {
				body, err := client.GetReviewReportCSV(cmd.Context(), &mandatev1.GetReviewReportCSVRequest{Principal: req.GetPrincipal(), Since: req.GetSince()})
				if err != nil {
					return err
				}
				_, err = cmd.OutOrStdout().Write(body.GetData())
				return err
			}
			resp, err := client.GetReviewReport(cmd.Context(), &req)
			if err != nil {
				return err
			}
			if out == "json" {
				return printJSON(cmd, resp)
			}
			w := cmd.OutOrStdout()
			for _, a := range resp.GetAgents() {
				ag := a.GetAgent()
				fmt.Fprintf(w, "agent:%s (%s) %s, task %s, chain %s\n", ag.GetId(), ag.GetName(), ag.GetStatus(), ag.GetTask(), strings.Join(ag.GetChain(), " > "))
				for _, x := range a.GetCanReach() {
					fmt.Fprintf(w, "  can reach   %s %s until %s\n", x.GetPermission(), x.GetResource(), x.GetValidUntil().AsTime().Format(time.RFC3339))
				}
				for _, u := range a.GetUsed() {
					fmt.Fprintf(w, "  used        %s\n", u)
				}
				for _, g := range a.GetUnusedGrants() {
					fmt.Fprintf(w, "  never used  %s %s (grant %s held by %s)\n", g.GetPermission(), g.GetResource(), g.GetId(), g.GetHolder())
				}
				for _, d := range a.GetDenials() {
					fmt.Fprintf(w, "  denied      %s %s: %s at %s\n", d.GetPermission(), d.GetResource(), d.GetReasonCode(), d.GetTime().AsTime().Format(time.RFC3339))
				}
			}
			return nil
		},
	}
	cf.register(report)
	report.Flags().StringVar(&req.Principal, "principal", "", "user:<id>; default every agent")
	report.Flags().StringVar(&req.Since, "since", "30d", "window: duration back from now or RFC 3339 time")
	report.Flags().StringVarP(&out, "output", "o", "table", "table, json or csv")
	cmd.AddCommand(report)
	return cmd
}

// emit prints m as JSON, rows as CSV, or rows as an aligned table.
func emit(cmd *cobra.Command, format string, m proto.Message, rows [][]string) error {
	switch format {
	case "json":
		return printJSON(cmd, m)
	case "csv":
		w := csv.NewWriter(cmd.OutOrStdout())
		if err := w.WriteAll(rows); err != nil {
			return err
		}
		return nil
	case "table":
		tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
		for _, r := range rows {
			fmt.Fprintln(tw, strings.Join(r, "\t"))
		}
		return tw.Flush()
	}
	return fmt.Errorf("-o must be table, json or csv, not %q", format)
}
