// Command mandate-bench runs mandate's benchmark scenarios side by side in
// one invocation, so that ratios are measured on the same machine at the
// same time, and prints a table and JSON.
//
//	go run ./bench/cmd/mandate-bench -duration 5s [-postgres DSN] [-json out.json]
package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"flag"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"sort"
	"strings"
	"sync"
	"time"

	v1 "github.com/authzed/authzed-go/proto/authzed/api/v1"
	"github.com/authzed/grpcutil"
	"github.com/jackc/pgx/v5"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/mandate-dev/mandate/bench"
	"github.com/mandate-dev/mandate/engine"
	"github.com/mandate-dev/mandate/engine/embedded"
	mandatev1 "github.com/mandate-dev/mandate/proto/mandate/v1"
	"github.com/mandate-dev/mandate/server"
)

const (
	checkerKey  = "bench-checker"
	operatorKey = "bench-operator"
	adminKey    = "bench-admin"
	gatewayKey  = "bench-gateway"
	spicedbKey  = "bench-spicedb"
	// unseenToken makes a check bypass the cache: the cache has never seen it.
	unseenToken = "GhUKEzE3OTU3Nzc1OTc2ODc1NDE3Njg="
	hotSet      = 100
)

// heapProfile, when set, is where the soak writes a heap profile before it
// stops its server.
var heapProfile string

func main() {
	var (
		duration    = flag.Duration("duration", 5*time.Second, "measured time per scenario")
		warmup      = flag.Duration("warmup", time.Second, "warmup per closed-loop scenario")
		scenarios   = flag.String("scenarios", "a,b,b2,c,d,e,rest,authzen,open,audit,access,console,bounds,tracing,tokens,f,g,mcp,middleware", "scenarios to run")
		pgDSN       = flag.String("postgres", os.Getenv("MANDATE_TEST_POSTGRES_DSN"), "Postgres DSN for (f) and (g); empty skips them")
		jsonOut     = flag.String("json", "", "write results as JSON to this file")
		propRounds  = flag.Int("propagation-rounds", 100, "revocations measured in (f)")
		soakFor     = flag.Duration("soak-duration", 5*time.Minute, "measured time of the soak scenario (run it with -scenarios soak)")
		soakWarmup  = flag.Duration("soak-warmup", 30*time.Second, "warm-up of the soak scenario")
		soakRate    = flag.Float64("soak-rate", 5000, "requests per second the soak offers")
		soakPG      = flag.Bool("soak-postgres", false, "run the soak's SpiceDB on the Postgres datastore (-postgres) instead of memory; the memory datastore keeps every revision in the process, so its heap grows with every write")
		soakSpiceDB = flag.String("soak-spicedb", "embedded", "where the soak's SpiceDB runs: embedded (in mandate's process) or standalone (a `spicedb serve` process of its own, built once per machine at go.mod's version, reached over TCP as a SpiceDB cluster is)")
		soakAudit   = flag.Int("soak-audit-records", 0, "the soak server's --audit-memory-records (0: the default, 100000); lower it so the in-memory audit store reaches its bound within the warm-up at a low rate")
		memEntries  = flag.Int("memory-entries", 0, "instead of the scenarios, fill a decision cache with this many decisions and report resident memory")
		cpuProfile  = flag.String("cpuprofile", "", "write a CPU profile of the whole run (server and load generator share the process)")
	)
	flag.StringVar(&heapProfile, "memprofile", "", "write a heap profile at the end of the soak, while its server still runs")
	flag.Parse()
	if *cpuProfile != "" {
		f, err := os.Create(*cpuProfile)
		must(err)
		must(pprof.StartCPUProfile(f))
		defer pprof.StopCPUProfile()
	}
	if *memEntries > 0 {
		memoryReport(*memEntries)
		return
	}
	want := map[string]bool{}
	for _, s := range strings.Split(*scenarios, ",") {
		want[strings.TrimSpace(s)] = true
	}
	ctx := context.Background()
	var results []bench.Result
	var restRatio string
	var soakLines []string
	add := func(desc string, r bench.Result) {
		r.Description = desc
		results = append(results, r)
		fmt.Fprintf(os.Stderr, "%-28s %-6s %4d %8.0f/s p50 %.3fms p99 %.3fms errors %d\n", r.Scenario, r.Mode, r.InFlight, r.Throughput, r.P50ms, r.P99ms, r.Errors)
	}

	keys := keysFile()
	if *soakSpiceDB != "embedded" && *soakSpiceDB != "standalone" {
		fmt.Fprintf(os.Stderr, "-soak-spicedb must be embedded or standalone, not %q\n", *soakSpiceDB)
		os.Exit(2)
	}
	soakOpts := func() soakOptions {
		return soakOptions{d: *soakFor, warmup: *soakWarmup, rate: *soakRate, auditRecords: *soakAudit,
			pgDSN: soakDSN(*soakPG, *pgDSN), standalone: *soakSpiceDB == "standalone"}
	}
	if len(want) == 1 && want["soak"] {
		// The soak alone: no other server idles in the process it measures.
		minutes, lines := soak(ctx, keys, soakOpts())
		for _, r := range minutes {
			add(r.Description, r)
		}
		report(results, lines, *jsonOut, *soakFor)
		return
	}
	spicedbAddr := freeAddr()
	srv, stop := start(ctx, server.Config{KeysFile: keys, Embedded: embedded.Config{Engine: "memory", APIAddr: spicedbAddr, APIKey: spicedbKey}})
	defer stop()
	conn := dial(srv.GRPCAddr(), checkerKey)
	opConn := dial(srv.GRPCAddr(), operatorKey)
	sdbConn := dial(spicedbAddr, spicedbKey)
	agent := seedHotSet(ctx, srv, opConn)

	health := healthpb.NewHealthClient(conn)
	checks := mandatev1.NewCheckServiceClient(conn)
	sdb := v1.NewPermissionsServiceClient(sdbConn)
	hot := func(i int) string { return fmt.Sprintf("repo:bench/hot%d", i%hotSet) }
	ops := map[string]bench.Op{
		"a": func(ctx context.Context, _, _ int) error {
			_, err := health.Check(ctx, &healthpb.HealthCheckRequest{})
			return err
		},
		"b": func(ctx context.Context, w, i int) error {
			resp, err := sdb.CheckPermission(ctx, &v1.CheckPermissionRequest{
				Resource: &v1.ObjectReference{ObjectType: "repo", ObjectId: fmt.Sprintf("bench/hot%d", (w*7919+i)%hotSet)}, Permission: "read",
				Subject: &v1.SubjectReference{Object: &v1.ObjectReference{ObjectType: "user", ObjectId: "alice"}},
			})
			if err == nil && resp.GetPermissionship() != v1.CheckPermissionResponse_PERMISSIONSHIP_HAS_PERMISSION {
				err = fmt.Errorf("denied")
			}
			return err
		},
		"b2": func(ctx context.Context, w, i int) error {
			resp, err := sdb.CheckPermission(ctx, &v1.CheckPermissionRequest{
				Consistency: &v1.Consistency{Requirement: &v1.Consistency_FullyConsistent{FullyConsistent: true}},
				Resource:    &v1.ObjectReference{ObjectType: "repo", ObjectId: fmt.Sprintf("bench/hot%d", (w*7919+i)%hotSet)}, Permission: "read",
				Subject: &v1.SubjectReference{Object: &v1.ObjectReference{ObjectType: "user", ObjectId: "alice"}},
			})
			if err == nil && resp.GetPermissionship() != v1.CheckPermissionResponse_PERMISSIONSHIP_HAS_PERMISSION {
				err = fmt.Errorf("denied")
			}
			return err
		},
		"c": func(ctx context.Context, w, i int) error {
			return allowed(checks.Check(ctx, &mandatev1.CheckRequest{Subject: agent, Permission: "read", Resource: hot(w*7919 + i), ConsistencyToken: unseenToken}))
		},
		"d": func(ctx context.Context, w, i int) error {
			return allowed(checks.Check(ctx, &mandatev1.CheckRequest{Subject: agent, Permission: "read", Resource: hot(w*7919 + i)}))
		},
	}
	httpClient := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64}}

	ops["e"] = func(ctx context.Context, w, i int) error {
		body := fmt.Sprintf(`{"subject":%q,"permission":"read","resource":%q}`, agent, hot(w*7919+i))
		req, _ := http.NewRequestWithContext(ctx, "POST", "http://"+srv.HTTPAddr()+"/v1/check", strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+checkerKey)
		resp, err := httpClient.Do(req)
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		var out struct{ Allowed bool }
		if err := json.NewDecoder(resp.Body).Decode(&out); err != nil || !out.Allowed {
			return fmt.Errorf("status %d allowed %v %v", resp.StatusCode, out.Allowed, err)
		}
		return nil
	}
	desc := map[string]string{
		"a":  "(a) empty gRPC call to mandate (grpc.health.v1 Check): the floor",
		"b":  "(b) SpiceDB CheckPermission, direct, same embedded instance (memory, minimize_latency)",
		"b2": "(b2) SpiceDB CheckPermission, direct, at fully_consistent (what every mandate decision reads at)",
		"c":  "(c) mandate agent Check, uncached (four legs, fully consistent)",
		"d":  "(d) mandate agent Check, cached, hot set of 100 resources",
		"e":  "(e) mandate agent Check over REST, cached, hot set",
	}
	for _, s := range []string{"a", "b", "b2", "c", "d", "e"} {
		if !want[s] {
			continue
		}
		for _, n := range []int{1, 8} {
			add(desc[s], bench.Closed(ctx, s, n, *warmup, *duration, ops[s]))
		}
	}
	if want["rest"] {
		// (e)/(d) at 8 in flight sits inside the noise of a shared machine
		// when the two run minutes apart: run them back to back, five
		// times, and take the median of the five ratios.
		var ratios []float64
		for rep := 1; rep <= 5; rep++ {
			d := bench.Closed(ctx, "d-pair", 8, *warmup/2, *duration/2, ops["d"])
			e := bench.Closed(ctx, "e-pair", 8, *warmup/2, *duration/2, ops["e"])
			add(fmt.Sprintf("(d) cached gRPC check, back to back with (e), repetition %d", rep), d)
			add(fmt.Sprintf("(e) cached REST check, back to back with (d), repetition %d", rep), e)
			if d.Throughput > 0 {
				ratios = append(ratios, e.Throughput/d.Throughput)
			}
		}
		sort.Float64s(ratios)
		if len(ratios) == 5 {
			restRatio = fmt.Sprintf("6: (e)/(d) throughput at 8 in flight, median of 5 back-to-back pairs = %.2f (%.2f–%.2f) (target >= 0.7)", ratios[2], ratios[0], ratios[4])
		}
	}
	if want["authzen"] {
		// The same cached question, native REST against AuthZEN, on the same
		// server and HTTP client, back to back.
		agentID := strings.TrimPrefix(agent, "agent:")
		ops["authzen"] = func(ctx context.Context, w, i int) error {
			body := fmt.Sprintf(`{"subject":{"type":"agent","id":%q},"action":{"name":"read"},"resource":{"type":"repo","id":%q}}`,
				agentID, strings.TrimPrefix(hot(w*7919+i), "repo:"))
			req, _ := http.NewRequestWithContext(ctx, "POST", "http://"+srv.HTTPAddr()+"/access/v1/evaluation", strings.NewReader(body))
			req.Header.Set("Authorization", "Bearer "+checkerKey)
			req.Header.Set("Content-Type", "application/json")
			resp, err := httpClient.Do(req)
			if err != nil {
				return err
			}
			defer resp.Body.Close()
			var out struct{ Decision bool }
			if err := json.NewDecoder(resp.Body).Decode(&out); err != nil || !out.Decision {
				return fmt.Errorf("status %d decision %v %v", resp.StatusCode, out.Decision, err)
			}
			return nil
		}
		for _, n := range []int{1, 8} {
			native, az := interleaved(ctx, "authzen-native", "authzen", n, *warmup, *duration, ops["e"], ops["authzen"])
			add("(e) native POST /v1/check, cached, hot set (AuthZEN's baseline), interleaved with the next", native)
			add("AuthZEN POST /access/v1/evaluation, the same question, interleaved with the previous", az)
		}
	}
	if want["open"] {
		add("(d) open loop at a fixed rate: latency from when each request was due", bench.Open(ctx, "d-open", 5000, *duration, 10_000, ops["d"]))
		add("(c) open loop at a fixed rate", bench.Open(ctx, "c-open", 1000, *duration, 10_000, ops["c"]))
	}
	if want["audit"] {
		// The same cached check on a server with audit off, back to back with
		// the default server (audit batched, in memory).
		off, stopOff := start(ctx, server.Config{KeysFile: keys, Embedded: embedded.Config{Engine: "memory"}, Audit: server.AuditConfig{Mode: "off"}})
		offAgent := seedHotSet(ctx, off, dial(off.GRPCAddr(), operatorKey))
		offChecks := mandatev1.NewCheckServiceClient(dial(off.GRPCAddr(), checkerKey))
		opOff := func(ctx context.Context, w, i int) error {
			return allowed(offChecks.Check(ctx, &mandatev1.CheckRequest{Subject: offAgent, Permission: "read", Resource: hot(w*7919 + i)}))
		}
		add("(d) with audit batched (the default, memory store)", bench.Closed(ctx, "d-audit-on", 8, *warmup, *duration, ops["d"]))
		add("(d) with audit off", bench.Closed(ctx, "d-audit-off", 8, *warmup, *duration, opOff))
		stopOff()
	}
	if want["access"] {
		add("listing the access of an agent that reaches 10k resources, memory datastore", accessListing(ctx, keys, "memory", "", 10_000))
		if *pgDSN != "" {
			uri, drop := freshDB(ctx, *pgDSN)
			must(embedded.Migrate(ctx, "postgres", uri))
			add("listing the access of an agent that reaches 10k resources, Postgres", accessListing(ctx, keys, "postgres", uri, 10_000))
			drop()
		}
	}
	if want["console"] {
		for _, r := range consolePages(ctx, keys, 1000) {
			add(r.Description, r)
		}
	}
	if want["mcp"] || want["middleware"] {
		// Both enforcement points run in token mode: the agent's own token,
		// from token exchange, on a server that trusts an OIDC issuer.
		idp := startIdP()
		tsrv, stopT := tokenServer(ctx, keys, idp, "memory", "")
		seedHotSet(ctx, tsrv, dial(tsrv.GRPCAddr(), operatorKey))
		if want["mcp"] {
			for _, r := range gatewayOverhead(ctx, tsrv, idp, *warmup, *duration) {
				add(r.Description, r)
			}
		}
		if want["middleware"] {
			for _, r := range middlewareOverhead(ctx, tsrv, idp, *warmup, *duration) {
				add(r.Description, r)
			}
		}
		stopT()
		idp.stop()
	}
	if *pgDSN != "" && want["f"] {
		add("(f) revocation on replica A until B and C both deny, 3 replicas on Postgres", propagation(ctx, *pgDSN, keys, *propRounds))
	}
	if want["bounds"] {
		for _, r := range boundsCost(ctx, *pgDSN, keys, *warmup, *duration) {
			add(r.Description, r)
		}
	}
	if want["tokens"] {
		for _, r := range tokenCost(ctx, *pgDSN, keys, *warmup, *duration) {
			add(r.Description, r)
		}
	}
	if want["tracing"] {
		for _, r := range tracingCost(ctx, keys, *warmup, *duration) {
			add(r.Description, r)
		}
	}
	if want["soak"] {
		minutes, lines := soak(ctx, keys, soakOpts())
		for _, r := range minutes {
			add(r.Description, r)
		}
		soakLines = lines
	}
	if *pgDSN != "" && want["g"] {
		for _, r := range million(ctx, *pgDSN, keys, *warmup, *duration) {
			add(r.Description, r)
		}
	}

	ratios := append(append(targetRatios(results), overheadLines(results)...), tokenRatio(results)...)
	if restRatio != "" {
		ratios = append(ratios, restRatio)
	}
	report(results, append(ratios, soakLines...), *jsonOut, *duration)
}

// report prints the results table and the summary lines, and writes both
// as JSON when asked.
func report(results []bench.Result, lines []string, jsonOut string, duration time.Duration) {
	bench.WriteTable(os.Stdout, results)
	fmt.Println()
	for _, l := range lines {
		fmt.Println(l)
	}
	if jsonOut != "" {
		f, err := os.Create(jsonOut)
		must(err)
		defer f.Close()
		must(bench.WriteJSON(f, map[string]any{
			"date": time.Now().UTC().Format(time.RFC3339), "cores": runtime.NumCPU(), "go": runtime.Version(),
			"cpu": cpuModel(), "duration": duration.String(), "results": results, "ratios": lines,
		}))
	}
}

// interleaved runs two ops in one closed loop, every worker alternating
// between them, so that both meet the same machine at the same moments: on a
// shared, noisy machine, two loops run one after the other differ by more
// than the thing measured. It returns one result per op.
func interleaved(ctx context.Context, nameA, nameB string, inFlight int, warmup, d time.Duration, a, b bench.Op) (bench.Result, bench.Result) {
	var mu sync.Mutex
	var latA, latB []time.Duration
	var errA, errB int
	record := false
	op := func(ctx context.Context, w, i int) error {
		which, lat, errs := a, &latA, &errA
		if i%2 == 1 {
			which, lat, errs = b, &latB, &errB
		}
		t0 := time.Now()
		err := which(ctx, w, i/2)
		el := time.Since(t0)
		mu.Lock()
		if record {
			*lat = append(*lat, el)
			if err != nil {
				*errs++
			}
		}
		mu.Unlock()
		return err
	}
	bench.Closed(ctx, "warmup", inFlight, 0, warmup, op)
	mu.Lock()
	record = true
	mu.Unlock()
	bench.Closed(ctx, "interleaved", inFlight, 0, d, op)
	mu.Lock()
	defer mu.Unlock()
	out := func(name string, lat []time.Duration, errs int) bench.Result {
		r := bench.Distribution(name, "", lat)
		r.Mode, r.InFlight, r.Errors = "closed", inFlight, errs
		r.Seconds, r.Throughput = d.Seconds(), float64(len(lat)-errs)/d.Seconds()
		return r
	}
	return out(nameA, latA, errA), out(nameB, latB, errB)
}

func allowed(resp *mandatev1.CheckResponse, err error) error {
	if err != nil {
		return err
	}
	if !resp.GetAllowed() {
		return fmt.Errorf("denied: %s", resp.GetReasonCode())
	}
	return nil
}

func find(rs []bench.Result, name string, inFlight int) *bench.Result {
	for i := range rs {
		if rs[i].Scenario == name && rs[i].InFlight == inFlight && rs[i].Mode == "closed" {
			return &rs[i]
		}
	}
	return nil
}

func targetRatios(rs []bench.Result) []string {
	var out []string
	ratio := func(label string, num, den *bench.Result, f func(*bench.Result) float64, target string) {
		if num == nil || den == nil || f(den) == 0 {
			return
		}
		out = append(out, fmt.Sprintf("%s = %.2f (target %s)", label, f(num)/f(den), target))
	}
	tp := func(r *bench.Result) float64 { return r.Throughput }
	p50 := func(r *bench.Result) float64 { return r.P50ms }
	ratio("6: (e)/(d) throughput at 8 in flight, one run each", find(rs, "e", 8), find(rs, "d", 8), tp, ">= 0.7")
	ratio("1: (d)/(a) throughput at 8 in flight", find(rs, "d", 8), find(rs, "a", 8), tp, ">= 0.8")
	ratio("2a: (d)/(b) throughput at 8 in flight", find(rs, "d", 8), find(rs, "b", 8), tp, ">= 1.25")
	ratio("2b: (d)/(b) p50 at 1 in flight", find(rs, "d", 1), find(rs, "b", 1), p50, "<= 0.7")
	ratio("3: (c)/(b) p50 at 1 in flight", find(rs, "c", 1), find(rs, "b", 1), p50, "<= 3")
	ratio("3: (c)/(b2) p50 at 1 in flight", find(rs, "c", 1), find(rs, "b2", 1), p50, "<= 2")
	ratio("authzen: AuthZEN / native REST check, p50 at 1 in flight", find(rs, "authzen", 1), find(rs, "authzen-native", 1), p50, "<= 1.2")
	ratio("authzen: AuthZEN / native REST check, p50 at 8 in flight", find(rs, "authzen", 8), find(rs, "authzen-native", 8), p50, "<= 1.2")
	ratio("audit: (d) audit batched / audit off, throughput at 8 in flight", find(rs, "d-audit-on", 8), find(rs, "d-audit-off", 8), tp, ">= 0.9")
	ratio("tracing: (d) tracing on, not sampled / off, median throughput of 5 interleaved runs at 8 in flight",
		find(rs, "trace-on-unsampled", 8), find(rs, "trace-off", 8), tp, ">= 0.95")
	ratio("tracing: the same, alternating request by request (8 / mean latency)",
		find(rs, "trace-on-unsampled-alt", 8), find(rs, "trace-off-alt", 8), tp, ">= 0.95")
	for _, r := range rs {
		if r.Scenario == "f" {
			out = append(out, fmt.Sprintf("4: (f) p99 = %.1f ms (target <= 50 ms)", r.P99ms))
		}
		if r.Scenario == "g" && r.InFlight == 1 {
			out = append(out, fmt.Sprintf("5: (g) p99 = %.2f ms at 1 in flight (target <= 10 ms)", r.P99ms))
		}
		if r.Scenario == "g" && r.InFlight == 8 {
			out = append(out, fmt.Sprintf("5: (g) %.0f checks/s at 8 in flight (target >= 600)", r.Throughput))
		}
		if r.Scenario == "g-sql" {
			out = append(out, "5: "+r.Note)
		}
	}
	return out
}

// ---- setup ----

func keysFile() string {
	dir, err := os.MkdirTemp("", "mandate-bench")
	must(err)
	var b strings.Builder
	b.WriteString("keys:\n")
	for role, k := range map[string]string{"checker": checkerKey, "operator": operatorKey, "admin": adminKey, "gateway": gatewayKey} {
		sum := sha256.Sum256([]byte(k))
		fmt.Fprintf(&b, "  - {name: bench-%s, role: %s, sha256: %s, counts_for_bounds: true}\n", role, role, hex.EncodeToString(sum[:]))
	}
	p := filepath.Join(dir, "keys.yaml")
	must(os.WriteFile(p, []byte(b.String()), 0o600))
	return p
}

func start(ctx context.Context, cfg server.Config) (*server.Server, func()) {
	cfg.GRPCAddr, cfg.HTTPAddr = "127.0.0.1:0", "127.0.0.1:0"
	cfg.Log = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelError}))
	runCtx, cancel := context.WithCancel(ctx)
	srv, err := cfg.Complete(runCtx)
	must(err)
	done := make(chan struct{})
	go func() { _ = srv.Run(runCtx); close(done) }()
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		if srv.Cache() == nil {
			break
		}
		if ok, _ := srv.Cache().Status(); ok {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	return srv, func() { cancel(); <-done }
}

func dial(addr, key string) *grpc.ClientConn {
	c, err := grpc.NewClient(addr, dialOpts(key)...)
	must(err)
	return c
}

func dialOpts(key string) []grpc.DialOption {
	return []grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials()), grpcutil.WithInsecureBearerToken(key)}
}

// seedHotSet gives alice 100 repos and one agent with a grant on each.
func seedHotSet(ctx context.Context, srv *server.Server, opConn *grpc.ClientConn) string {
	var ups []string
	for i := 0; i < hotSet; i++ {
		ups = append(ups, fmt.Sprintf("repo:bench/hot%d#reader@user:alice", i))
	}
	writeRels(ctx, srv, ups)
	tasks := mandatev1.NewTaskServiceClient(opConn)
	agents := mandatev1.NewAgentServiceClient(opConn)
	grants := mandatev1.NewGrantServiceClient(opConn)
	t, err := tasks.CreateTask(ctx, &mandatev1.CreateTaskRequest{Principal: "user:alice", Description: "bench", Ttl: "2h"})
	must(err)
	a, err := agents.CreateAgent(ctx, &mandatev1.CreateAgentRequest{Task: "task:" + t.GetTask().GetId(), Name: "bench", Ttl: "2h"})
	must(err)
	for i := 0; i < hotSet; i++ {
		_, err := grants.CreateGrant(ctx, &mandatev1.CreateGrantRequest{Holder: "agent:" + a.GetAgent().GetId(), Permission: "read", Resource: fmt.Sprintf("repo:bench/hot%d", i), Ttl: "1h"})
		must(err)
	}
	return "agent:" + a.GetAgent().GetId()
}

func writeRels(ctx context.Context, srv *server.Server, rels []string) {
	var ups []engineUpdate
	for _, r := range rels {
		ups = append(ups, engineUpdate{Operation: "TOUCH", Relationship: r})
	}
	_, err := srv.Engine().WriteRelationships(ctx, ups)
	must(err)
}

// ---- access review ----

// accessListing times GET-equivalent ListAgentAccess (paged by 1000) for an
// agent with n grants on n repos its human reads, loaded in bulk.
func accessListing(ctx context.Context, keys, engineName, uri string, n int) bench.Result {
	spicedbAddr := freeAddr()
	srv, stop := start(ctx, server.Config{KeysFile: keys, Embedded: embedded.Config{Engine: engineName, URI: uri, APIAddr: spicedbAddr, APIKey: spicedbKey}})
	defer stop()
	op := dial(srv.GRPCAddr(), operatorKey)
	t, err := mandatev1.NewTaskServiceClient(op).CreateTask(ctx, &mandatev1.CreateTaskRequest{Principal: "user:alice", Ttl: "2h"})
	must(err)
	a, err := mandatev1.NewAgentServiceClient(op).CreateAgent(ctx, &mandatev1.CreateAgentRequest{Task: "task:" + t.GetTask().GetId(), Name: "reviewed", Ttl: "2h"})
	must(err)
	agentID := a.GetAgent().GetId()
	var rels []*v1.Relationship
	exp := time.Now().Add(time.Hour)
	for i := 0; i < n; i++ {
		res := engine.Ref{Type: "repo", ID: fmt.Sprintf("review/r%d", i)}
		rels = append(rels, &v1.Relationship{Resource: &v1.ObjectReference{ObjectType: "repo", ObjectId: res.ID}, Relation: "reader",
			Subject: &v1.SubjectReference{Object: &v1.ObjectReference{ObjectType: "user", ObjectId: "alice"}}})
		rels = append(rels, engine.GrantRelationships(engine.Grant{ID: engine.NewID(engine.PrefixGrant), Holder: engine.Ref{Type: "agent", ID: agentID},
			Permission: "read", Resource: res, CreatedAt: time.Now(), ExpiresAt: exp})...)
	}
	must(bench.Import(ctx, v1.NewPermissionsServiceClient(dial(spicedbAddr, spicedbKey)), rels))
	review := mandatev1.NewReviewServiceClient(dial(srv.GRPCAddr(), adminKey))
	var samples []time.Duration
	for round := 0; round < 5; round++ {
		t0 := time.Now()
		total := 0
		req := &mandatev1.ListAgentAccessRequest{Id: agentID, PageSize: 1000}
		for {
			resp, err := review.ListAgentAccess(ctx, req)
			must(err)
			total += len(resp.GetAccess())
			if resp.GetNextPageToken() == "" {
				break
			}
			req.PageToken = resp.GetNextPageToken()
		}
		if total != n {
			must(fmt.Errorf("listed %d entries, want %d", total, n))
		}
		samples = append(samples, time.Since(t0))
	}
	return bench.Distribution("access-"+engineName, "", samples)
}

// ---- (f) propagation ----

func propagation(ctx context.Context, dsn, keys string, rounds int) bench.Result {
	uri, drop := freshDB(ctx, dsn)
	defer drop()
	must(embedded.Migrate(ctx, "postgres", uri))
	var srvs []*server.Server
	for i := 0; i < 3; i++ {
		s, stop := start(ctx, server.Config{KeysFile: keys, Embedded: embedded.Config{Engine: "postgres", URI: uri}})
		defer stop()
		srvs = append(srvs, s)
	}
	a := srvs[0]
	writeRels(ctx, a, []string{"repo:bench/prop#reader@user:alice"})
	opA := dial(a.GRPCAddr(), operatorKey)
	checkers := []mandatev1.CheckServiceClient{mandatev1.NewCheckServiceClient(dial(srvs[1].GRPCAddr(), checkerKey)), mandatev1.NewCheckServiceClient(dial(srvs[2].GRPCAddr(), checkerKey))}
	tasks, agents, grants := mandatev1.NewTaskServiceClient(opA), mandatev1.NewAgentServiceClient(opA), mandatev1.NewGrantServiceClient(opA)
	var samples []time.Duration
	for i := 0; i < rounds; i++ {
		t, err := tasks.CreateTask(ctx, &mandatev1.CreateTaskRequest{Principal: "user:alice", Ttl: "1h"})
		must(err)
		ag, err := agents.CreateAgent(ctx, &mandatev1.CreateAgentRequest{Task: "task:" + t.GetTask().GetId(), Name: "p", Ttl: "1h"})
		must(err)
		_, err = grants.CreateGrant(ctx, &mandatev1.CreateGrantRequest{Holder: "agent:" + ag.GetAgent().GetId(), Permission: "read", Resource: "repo:bench/prop", Ttl: "1h"})
		must(err)
		req := &mandatev1.CheckRequest{Subject: "agent:" + ag.GetAgent().GetId(), Permission: "read", Resource: "repo:bench/prop"}
		// Warm B's and C's caches with the allow; wait until both serve it.
		for _, c := range checkers {
			for {
				r, err := c.Check(ctx, req)
				must(err)
				if r.GetAllowed() {
					break
				}
			}
			_, _ = c.Check(ctx, req)
		}
		// B and C poll from the moment the revocation is sent, so the time
		// counts from its start and not from when A finished answering.
		t0 := time.Now()
		var wg sync.WaitGroup
		var mu sync.Mutex
		var worst time.Duration
		for _, c := range checkers {
			wg.Add(1)
			go func(c mandatev1.CheckServiceClient) {
				defer wg.Done()
				for time.Since(t0) < 10*time.Second {
					r, err := c.Check(ctx, req)
					if err == nil && !r.GetAllowed() {
						break
					}
					time.Sleep(500 * time.Microsecond)
				}
				mu.Lock()
				worst = max(worst, time.Since(t0))
				mu.Unlock()
			}(c)
		}
		_, err = agents.SuspendAgent(ctx, &mandatev1.SuspendAgentRequest{Id: ag.GetAgent().GetId()})
		must(err)
		wg.Wait()
		samples = append(samples, worst)
	}
	return bench.Distribution("f", "", samples)
}

// ---- (g) 1M relationships on Postgres ----

func million(ctx context.Context, dsn, keys string, warmup, d time.Duration) []bench.Result {
	uri, drop := freshDB(ctx, dsn)
	defer drop()
	must(embedded.Migrate(ctx, "postgres", uri))
	spicedbAddr := freeAddr()
	srv, stop := start(ctx, server.Config{KeysFile: keys, Embedded: embedded.Config{Engine: "postgres", URI: uri, APIAddr: spicedbAddr, APIKey: spicedbKey}})
	defer stop()
	t0 := time.Now()
	ds := bench.Generate(bench.Million)
	fmt.Fprintf(os.Stderr, "generated %d relationships, %d allowed pairs in %v\n", len(ds.Relationships), len(ds.Allowed), time.Since(t0))
	t0 = time.Now()
	must(bench.Import(ctx, v1.NewPermissionsServiceClient(dial(spicedbAddr, spicedbKey)), ds.Relationships))
	fmt.Fprintf(os.Stderr, "imported into Postgres in %v\n", time.Since(t0))
	// A production database has statistics; a freshly bulk-loaded one does not yet.
	analyze(ctx, uri)
	checks := mandatev1.NewCheckServiceClient(dial(srv.GRPCAddr(), checkerKey))
	op := func(ctx context.Context, w, i int) error {
		p := ds.Allowed[rand.IntN(len(ds.Allowed))]
		return allowed(checks.Check(ctx, &mandatev1.CheckRequest{Subject: p.Agent, Permission: "read", Resource: p.Resource, ConsistencyToken: unseenToken}))
	}
	var out []bench.Result
	for _, n := range []int{1, 8} {
		r := bench.Closed(ctx, "g", n, warmup, d, op)
		r.Description = fmt.Sprintf("(g) mandate agent Check, uncached, random agent and resource among %d allowed pairs, %d relationships on Postgres; most agents' chains not yet seen by this replica", len(ds.Allowed), len(ds.Relationships))
		out = append(out, r)
	}
	// The same with a working set whose chains this replica has resolved
	// before, as for agents it provisioned or already checked.
	warm := ds.Allowed[:1000]
	for _, p := range warm {
		_ = allowed(checks.Check(ctx, &mandatev1.CheckRequest{Subject: p.Agent, Permission: "read", Resource: p.Resource, ConsistencyToken: unseenToken}))
	}
	warmOp := func(ctx context.Context, w, i int) error {
		p := warm[rand.IntN(len(warm))]
		return allowed(checks.Check(ctx, &mandatev1.CheckRequest{Subject: p.Agent, Permission: "read", Resource: p.Resource, ConsistencyToken: unseenToken}))
	}
	for _, n := range []int{1, 8} {
		r := bench.Closed(ctx, "g-warm-chains", n, warmup, d, warmOp)
		r.Description = "(g) the same, uncached decisions, 1000 agents whose chains this replica has already resolved"
		out = append(out, r)
	}
	out = append(out, sqlPerCheck(ctx, uri, warmOp))
	return out
}

// sqlPerCheck counts the Postgres transactions an uncached check costs, from
// the database's own statistics: every statement SpiceDB and mandate send
// outside an explicit transaction is one. The idle background (the watch's
// polling, audit flushes) over the same time is measured first and taken off.
func sqlPerCheck(ctx context.Context, uri string, op bench.Op) bench.Result {
	conn, err := pgx.Connect(ctx, uri)
	must(err)
	defer conn.Close(ctx)
	count := func() (xacts, tuples int64) {
		// Backends publish their counts when idle, at most every 10 s in
		// Postgres 15: wait them out.
		time.Sleep(11 * time.Second)
		must(conn.QueryRow(ctx, `SELECT xact_commit + xact_rollback, tup_returned + tup_fetched FROM pg_stat_database WHERE datname = current_database()`).Scan(&xacts, &tuples))
		return xacts, tuples
	}
	const n = 500
	x0, _ := count()
	start := time.Now()
	time.Sleep(2 * time.Second)
	idle := time.Since(start)
	x1, t1 := count()
	start = time.Now()
	for i := 0; i < n; i++ {
		if err := op(ctx, 0, i); err != nil {
			must(err)
		}
	}
	busy := time.Since(start)
	x2, t2 := count()
	// The idle rate covers the 2 s idle window plus one 11 s wait.
	idleRate := float64(x1-x0) / (idle + 11*time.Second).Seconds()
	perCheck := (float64(x2-x1) - idleRate*(busy+11*time.Second).Seconds()) / n
	r := bench.Result{Scenario: "g-sql", Mode: "count", Requests: n,
		Description: "(g) Postgres transactions (statements outside explicit transactions) per uncached check, warm chains, sequential"}
	r.Note = fmt.Sprintf("(g) %.1f Postgres transactions and %.0f tuples read per uncached check (idle background %.1f/s taken off)",
		perCheck, float64(t2-t1)/n, idleRate)
	fmt.Fprintln(os.Stderr, r.Note)
	return r
}

// soakDSN is the Postgres DSN the soak runs on, or "" for memory.
func soakDSN(on bool, dsn string) string {
	if !on {
		return ""
	}
	if dsn == "" {
		fmt.Fprintln(os.Stderr, "-soak-postgres needs -postgres or MANDATE_TEST_POSTGRES_DSN")
		os.Exit(2)
	}
	return dsn
}

func freshDB(ctx context.Context, dsn string) (string, func()) {
	uri, drop, err := embedded.CreateDatabase(ctx, dsn, "mandate_bench")
	must(err)
	return uri, drop
}

func analyze(ctx context.Context, uri string) {
	conn, err := pgx.Connect(ctx, uri)
	must(err)
	defer conn.Close(ctx)
	_, err = conn.Exec(ctx, "ANALYZE")
	must(err)
}

func freeAddr() string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	must(err)
	defer l.Close()
	return l.Addr().String()
}

func cpuModel() string {
	b, err := os.ReadFile("/proc/cpuinfo")
	if err != nil {
		return runtime.GOARCH
	}
	for _, l := range bytes.Split(b, []byte("\n")) {
		if k, v, ok := strings.Cut(string(l), ":"); ok && strings.TrimSpace(k) == "model name" {
			return strings.TrimSpace(v)
		}
	}
	return runtime.GOARCH
}

func must(err error) {
	if err != nil {
		fmt.Fprintln(os.Stderr, "mandate-bench:", err)
		os.Exit(1)
	}
}
