package main

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"runtime"
	"runtime/pprof"
	"sort"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	v1 "github.com/authzed/authzed-go/proto/authzed/api/v1"
	"google.golang.org/grpc"

	"github.com/mandate-dev/mandate/bench"
	"github.com/mandate-dev/mandate/engine"
	"github.com/mandate-dev/mandate/engine/embedded"
	mandatev1 "github.com/mandate-dev/mandate/proto/mandate/v1"
	"github.com/mandate-dev/mandate/server"
)

// The soak: one mandate (embedded SpiceDB, memory datastore, audit batched
// in memory, the decision cache on) under an open loop of checks at a fixed
// rate for minutes, with the mix 90% cacheable checks, 9% uncached checks
// (a consistency token the cache has not seen), 1% writes (grants created
// with short TTLs, and deleted: revocations). Every answer about a churned
// pair is compared with the harness's own model of the grants; one request
// in soakSampleEvery also records SpiceDB's head revision (a ZedToken) and
// the time before it is sent, and is decided again afterwards by a second
// engine reading at exactly that snapshot with its clock at exactly that
// time: an allow the server gave where that decision denies is a wrong allow.

const (
	soakChurnAgents    = 8
	soakChurnResources = 25
	soakSampleEvery    = 100
	// soakLateWrite is how long after its failure a write is taken to be
	// able to land: many times mandate's 2 s deadline for a call into SpiceDB.
	soakLateWrite = 30 * time.Second
)

// soakPair is one churned (agent, resource) pair and the harness's model of
// its grant. seq is a seqlock: odd while a write to the pair is in flight.
type soakPair struct {
	agent, resource string
	seq             atomic.Uint64
	mu              sync.Mutex // guards the fields below; writers only
	grantID         string
	expiresAt       time.Time
	granted         atomic.Bool
	expiresNanos    atomic.Int64
	// unknown: a write failed, and may or may not have happened. A failed
	// write is an outcome unknown, and may still land later than its answer
	// (its deadline inside SpiceDB starts when its request arrives there,
	// which a congested connection delays): the next successful grant
	// (which replaces any) makes the pair known again only if it started
	// soakLateWrite after the failure.
	unknown  atomic.Bool
	failedAt time.Time // guarded by mu
	// last says what the last successful write was, when it returned, and
	// its consistency token: a wrong allow prints it.
	last atomic.Pointer[string]
}

// noteWrite records the pair's last successful write.
func (p *soakPair) noteWrite(what, token string) {
	s := fmt.Sprintf("%s at %s, token %s", what, time.Now().Format(time.RFC3339Nano), token)
	p.last.Store(&s)
}

type soakSample struct {
	subject, resource string
	token             string
	before            time.Time
	allowed           bool
}

type soakStats struct {
	checks, writes, errors           atomic.Int64
	wrongAllowsModel, wrongDenies    atomic.Int64
	indeterminate                    atomic.Int64
	sampled, verified, wrongAllowsAt atomic.Int64
	stricterAt, unverifiable         atomic.Int64
	firstError                       atomic.Value // string
}

// soakOptions are the soak's flags.
type soakOptions struct {
	d, warmup    time.Duration
	rate         float64
	auditRecords int
	// pgDSN, when set, puts SpiceDB's datastore on Postgres (a fresh
	// database); otherwise it is the memory datastore.
	pgDSN string
	// standalone runs SpiceDB as a `spicedb serve` process of its own,
	// reached over TCP, instead of embedded in mandate's process.
	standalone bool
}

func soak(ctx context.Context, keys string, o soakOptions) ([]bench.Result, []string) {
	d, warmup, rate := o.d, o.warmup, o.rate
	spicedbAddr := freeAddr()
	cfg := server.Config{KeysFile: keys, Audit: server.AuditConfig{MemoryRecords: o.auditRecords}}
	var uri string
	if o.pgDSN != "" {
		var drop func()
		uri, drop = freshDB(ctx, o.pgDSN)
		defer drop()
	}
	where := "embedded in mandate's process"
	sdbPid := 0
	if o.standalone {
		addr, pid, stopSpiceDB := standaloneSpiceDB(ctx, uri)
		defer stopSpiceDB()
		spicedbAddr, sdbPid = addr, pid
		cfg.SpiceDBEndpoint, cfg.SpiceDBToken, cfg.SpiceDBInsecure = addr, spicedbKey, true
		where = "a standalone `spicedb serve` process"
	} else {
		cfg.Embedded = embedded.Config{Engine: "memory", APIAddr: spicedbAddr, APIKey: spicedbKey}
		if uri != "" {
			must(embedded.Migrate(ctx, "postgres", uri))
			cfg.Embedded.Engine, cfg.Embedded.URI = "postgres", uri
		}
	}
	datastore := "memory"
	if uri != "" {
		datastore = "Postgres"
	}
	fmt.Fprintf(os.Stderr, "soak: SpiceDB is %s, on the %s datastore\n", where, datastore)
	srv, stop := start(ctx, cfg)
	defer stop()
	opConn := dial(srv.GRPCAddr(), operatorKey)
	hotAgent := seedHotSet(ctx, srv, opConn)
	checks := mandatev1.NewCheckServiceClient(dial(srv.GRPCAddr(), checkerKey))
	grants := mandatev1.NewGrantServiceClient(opConn)
	sdbConn := dial(spicedbAddr, spicedbKey)
	sdb := v1.NewPermissionsServiceClient(sdbConn)

	// The churned pairs: agents of one task, resources alice reads.
	var rels []string
	for i := 0; i < soakChurnResources; i++ {
		rels = append(rels, fmt.Sprintf("repo:bench/churn%d#reader@user:alice", i))
	}
	writeRels(ctx, srv, rels)
	task, err := mandatev1.NewTaskServiceClient(opConn).CreateTask(ctx, &mandatev1.CreateTaskRequest{Principal: "user:alice", Description: "soak", Ttl: "2h"})
	must(err)
	var pairs []*soakPair
	for a := 0; a < soakChurnAgents; a++ {
		ag, err := mandatev1.NewAgentServiceClient(opConn).CreateAgent(ctx, &mandatev1.CreateAgentRequest{Task: "task:" + task.GetTask().GetId(), Name: fmt.Sprintf("churn%d", a), Ttl: "2h"})
		must(err)
		for r := 0; r < soakChurnResources; r++ {
			pairs = append(pairs, &soakPair{agent: "agent:" + ag.GetAgent().GetId(), resource: fmt.Sprintf("repo:bench/churn%d", r)})
		}
	}

	// The verifying engine: its own connection to the same SpiceDB, every
	// read at the sample's snapshot, its clock at the sample's time.
	verifier, verifyAt := newSnapshotEngine(ctx, spicedbAddr)

	st := &soakStats{}
	fail := func(err error) {
		st.errors.Add(1)
		st.firstError.CompareAndSwap(nil, err.Error())
	}
	samples := make(chan soakSample, 4096)
	verifyDone := make(chan struct{})
	go func() {
		defer close(verifyDone)
		for s := range samples {
			q, err := verifier.ValidateQuery(ctx, s.subject, "read", s.resource, nil)
			if err != nil {
				st.unverifiable.Add(1)
				continue
			}
			dec, err := verifyAt(ctx, s.token, s.before, q)
			if err != nil {
				st.unverifiable.Add(1)
				fmt.Fprintln(os.Stderr, "soak: verifying a sample:", err)
				continue
			}
			st.verified.Add(1)
			if s.allowed && !dec.Allowed {
				st.wrongAllowsAt.Add(1)
				fmt.Fprintf(os.Stderr, "soak: WRONG ALLOW %s read %s: allowed, but denied (%s) at %s, %s\n", s.subject, s.resource, dec.Reason, s.token, s.before.Format(time.RFC3339Nano))
			}
			if !s.allowed && dec.Allowed {
				st.stricterAt.Add(1)
			}
		}
	}()

	// headToken is SpiceDB's current revision: a fully consistent check
	// answers at the head.
	headToken := func(ctx context.Context) (string, error) {
		r, err := sdb.CheckPermission(ctx, &v1.CheckPermissionRequest{
			Consistency: &v1.Consistency{Requirement: &v1.Consistency_FullyConsistent{FullyConsistent: true}},
			Resource:    &v1.ObjectReference{ObjectType: "repo", ObjectId: "bench/hot0"}, Permission: "read",
			Subject: &v1.SubjectReference{Object: &v1.ObjectReference{ObjectType: "user", ObjectId: "alice"}},
		})
		return r.GetCheckedAt().GetToken(), err
	}

	hotResources := make([]string, hotSet)
	for i := range hotResources {
		hotResources[i] = fmt.Sprintf("repo:bench/hot%d", i)
	}
	check := func(ctx context.Context, i int) {
		st.checks.Add(1)
		req := &mandatev1.CheckRequest{Permission: "read"}
		var p *soakPair
		x := rand.IntN(99)
		uncached := x >= 90
		if x%9 == 0 { // one check in nine asks about a churned pair
			p = pairs[rand.IntN(len(pairs))]
			req.Subject, req.Resource = p.agent, p.resource
		} else {
			req.Subject, req.Resource = hotAgent, hotResources[rand.IntN(hotSet)]
		}
		if uncached {
			req.ConsistencyToken = unseenToken
		}
		// The pair's state is read before SpiceDB's head: a write that
		// lands between the two then shows as a change of seq, and the
		// answer is not judged, where reading it after the head would
		// take a grant made after the head for one that existed at it.
		var s1 uint64
		var expected, granted, unknown bool
		var expiresAt time.Time
		if p != nil {
			s1 = p.seq.Load()
			granted, expiresAt, unknown = p.granted.Load(), time.Unix(0, p.expiresNanos.Load()), p.unknown.Load()
		}
		var sample *soakSample
		if i%soakSampleEvery == 0 {
			tok, err := headToken(ctx)
			if err != nil {
				fail(fmt.Errorf("reading SpiceDB's head: %w", err))
				return
			}
			sample = &soakSample{subject: req.Subject, resource: req.Resource, token: tok, before: time.Now()}
		}
		before := time.Now()
		resp, err := checks.Check(ctx, req)
		after := time.Now()
		if err != nil {
			fail(err)
			return
		}
		allowed := resp.GetAllowed()
		// A write to the pair in flight, or an expiry within a second of
		// the request: either answer is right, and neither is verified.
		if p != nil && (s1%2 == 1 || p.seq.Load() != s1 || unknown ||
			granted && before.Before(expiresAt.Add(time.Second)) && after.After(expiresAt.Add(-time.Second))) {
			st.indeterminate.Add(1)
			return
		}
		if sample != nil {
			sample.allowed = allowed
			st.sampled.Add(1)
			select {
			case samples <- *sample:
			default:
				st.unverifiable.Add(1)
			}
		}
		if p == nil {
			if !allowed {
				st.wrongDenies.Add(1)
			}
			return
		}
		expected = granted && after.Before(expiresAt)
		switch {
		case allowed && !expected:
			st.wrongAllowsModel.Add(1)
			last := ""
			if l := p.last.Load(); l != nil {
				last = *l
			}
			// What mandate says now, bypassing its cache, tells a stale
			// answer (the cache, or a stale read) from a grant that is
			// still there.
			again, err := checks.Check(ctx, &mandatev1.CheckRequest{Subject: p.agent, Permission: "read", Resource: p.resource, ConsistencyToken: unseenToken})
			fmt.Fprintf(os.Stderr, "soak: WRONG ALLOW (model) %s read %s, uncached %v, granted %v, expires %s, sent %s, answered %s, answer %v; the pair's last write: %s; asked again uncached: allowed %v %s (err %v)\n",
				p.agent, p.resource, uncached, granted, expiresAt.Format(time.RFC3339Nano), before.Format(time.RFC3339Nano), after.Format(time.RFC3339Nano), resp,
				last, again.GetAllowed(), again.GetConsistencyToken(), err)
		case !allowed && expected:
			st.wrongDenies.Add(1)
		}
	}

	// writeFailed counts a failed write and says which pair and when: a
	// wrong allow on that pair afterwards can then be told from a write
	// that landed late.
	var writeFailures atomic.Int64
	writeFailed := func(p *soakPair, what string, err error) {
		fail(fmt.Errorf("%s: %w", what, err))
		if writeFailures.Add(1) <= 20 {
			fmt.Fprintf(os.Stderr, "soak: %s %s read %s failed at %s: %v\n", what, p.agent, p.resource, time.Now().Format(time.RFC3339Nano), err)
		}
	}
	write := func(ctx context.Context) {
		p := pairs[rand.IntN(len(pairs))]
		if !p.mu.TryLock() {
			return // another write to this pair is in flight
		}
		defer p.mu.Unlock()
		st.writes.Add(1)
		p.seq.Add(1)
		defer p.seq.Add(1)
		if p.granted.Load() && !p.unknown.Load() && time.Now().Before(p.expiresAt) {
			resp, err := grants.DeleteGrant(ctx, &mandatev1.DeleteGrantRequest{Id: p.grantID})
			if err != nil {
				p.unknown.Store(true)
				p.failedAt = time.Now()
				writeFailed(p, "revoking", err)
				return
			}
			p.granted.Store(false)
			p.noteWrite("revoked "+p.grantID, resp.GetConsistencyToken())
			return
		}
		// Short lifetimes, so grants also end by expiry during the run.
		ttl := []string{"5s", "20s", "1m", "10m"}[rand.IntN(4)]
		started := time.Now()
		resp, err := grants.CreateGrant(ctx, &mandatev1.CreateGrantRequest{Holder: p.agent, Permission: "read", Resource: p.resource, Ttl: ttl})
		if err != nil {
			p.unknown.Store(true)
			p.failedAt = time.Now()
			writeFailed(p, "granting", err)
			return
		}
		if p.failedAt.IsZero() || started.After(p.failedAt.Add(soakLateWrite)) {
			p.unknown.Store(false)
		}
		p.grantID, p.expiresAt = resp.GetGrant().GetId(), resp.GetGrant().GetExpiresAt().AsTime()
		p.expiresNanos.Store(p.expiresAt.UnixNano())
		p.granted.Store(true)
		p.noteWrite("granted "+p.grantID, resp.GetConsistencyToken())
	}

	// The open loop, with latencies kept per minute (and dropped once
	// summarised, so the harness's own memory stays flat) and resident
	// memory sampled every 10 s.
	type minute struct {
		lat  []time.Duration
		errs int64
	}
	var mu sync.Mutex
	cur := &minute{}
	var minutesMu sync.Mutex
	var summarising sync.WaitGroup
	var minutes []bench.Result
	var rss []float64
	var heap, heapMemdb, heapRest, sdbRSS []float64
	startErrs := int64(0)
	// closeMinute starts the next minute, and summarises the last one in
	// the background so the sender is not held up.
	minuteStart := time.Time{}
	closeMinute := func(n int) {
		secs := time.Since(minuteStart).Seconds()
		minuteStart = time.Now()
		mu.Lock()
		m := cur
		cur = &minute{lat: make([]time.Duration, 0, len(m.lat))}
		mu.Unlock()
		errsNow := st.errors.Load()
		m.errs, startErrs = errsNow-startErrs, errsNow
		summarising.Add(1)
		go func() {
			defer summarising.Done()
			r := bench.Distribution(fmt.Sprintf("soak-minute-%d", n), "", m.lat)
			r.Errors, r.Mode, r.Rate = int(m.errs), "open", rate
			r.Seconds, r.Throughput = secs, float64(r.Requests)/secs
			minutesMu.Lock()
			minutes = append(minutes, r)
			minutesMu.Unlock()
			fmt.Fprintf(os.Stderr, "soak minute %d: %d requests, p50 %.2fms p99 %.2fms, errors %d, RSS %.0f MiB\n", n, r.Requests, r.P50ms, r.P99ms, r.Errors, status("VmRSS:"))
		}()
	}

	runCtx, cancel := context.WithTimeout(ctx, warmup+d)
	defer cancel()
	var outstanding atomic.Int64
	var wg sync.WaitGroup
	interval := time.Duration(float64(time.Second) / rate)
	t0 := time.Now()
	measureFrom := t0.Add(warmup)
	minuteStart = measureFrom
	cpu0 := processCPU()
	var sdbCPU0 time.Duration
	if sdbPid != 0 {
		sdbCPU0 = processCPUOf(sdbPid)
	}
	nextMinute, minuteN := measureFrom.Add(time.Minute), 1
	// Memory is sampled every 10 s by its own goroutine, so reading the
	// heap profile does not hold up the sender. Go's heap in use is split
	// into what SpiceDB's memory datastore allocated (it keeps every
	// revision) and the rest: mandate, the embedded SpiceDB's other parts
	// and the load generator.
	var memMu sync.Mutex
	sampleMem := func() {
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		m, r, err := heapShares()
		if err != nil {
			fmt.Fprintln(os.Stderr, "soak: reading the heap profile:", err)
		}
		memMu.Lock()
		defer memMu.Unlock()
		rss = append(rss, status("VmRSS:"))
		if sdbPid != 0 {
			sdbRSS = append(sdbRSS, statusOf(sdbPid, "VmRSS:"))
		}
		heap = append(heap, float64(ms.HeapInuse)/(1<<20))
		heapMemdb = append(heapMemdb, m/(1<<20))
		heapRest = append(heapRest, r/(1<<20))
	}
	samplerDone := make(chan struct{})
	go func() {
		defer close(samplerDone)
		tick := time.NewTicker(10 * time.Second)
		defer tick.Stop()
		sampleMem()
		for {
			select {
			case <-runCtx.Done():
				return
			case <-tick.C:
				sampleMem()
			}
		}
	}()
	var dropped atomic.Int64
	for i := 0; runCtx.Err() == nil; i++ {
		due := t0.Add(time.Duration(i) * interval)
		if wait := time.Until(due); wait > 0 {
			time.Sleep(wait)
		}
		now := time.Now()
		if now.After(measureFrom) && !now.Before(nextMinute) {
			closeMinute(minuteN)
			minuteN++
			nextMinute = nextMinute.Add(time.Minute)
		}
		if outstanding.Load() >= 10_000 {
			dropped.Add(1)
			fail(fmt.Errorf("more than 10000 requests outstanding"))
			continue
		}
		outstanding.Add(1)
		wg.Add(1)
		go func(i int, due time.Time) {
			defer wg.Done()
			defer outstanding.Add(-1)
			// The requests outlive the sending loop's deadline.
			if rand.IntN(100) == 0 {
				write(ctx)
			} else {
				check(ctx, i)
			}
			if due.After(measureFrom) {
				el := time.Since(due)
				mu.Lock()
				cur.lat = append(cur.lat, el)
				mu.Unlock()
			}
		}(i, due)
	}
	wg.Wait()
	<-samplerDone
	if len(cur.lat) > 0 {
		closeMinute(minuteN)
	}
	summarising.Wait()
	if heapProfile != "" {
		runtime.GC()
		f, err := os.Create(heapProfile)
		must(err)
		must(pprof.WriteHeapProfile(f))
		must(f.Close())
	}
	sort.Slice(minutes, func(i, j int) bool {
		return len(minutes[i].Scenario) < len(minutes[j].Scenario) || minutes[i].Scenario < minutes[j].Scenario
	})
	close(samples)
	<-verifyDone
	elapsed := time.Since(measureFrom)
	cpuShare := (processCPU() - cpu0).Seconds() / time.Since(t0).Seconds()
	sdbShare := 0.0
	if sdbPid != 0 {
		sdbShare = (processCPUOf(sdbPid) - sdbCPU0).Seconds() / time.Since(t0).Seconds()
	}

	// Memory: the samples after warm-up (and one more minute for the
	// audit store and the cache to fill to their bounds).
	settled := int((warmup + time.Minute) / (10 * time.Second))
	var lines []string
	if settled < len(rss) {
		after := append([]float64(nil), rss[settled:]...)
		sort.Float64s(after)
		lo, hi := after[0], after[len(after)-1]
		lines = append(lines, fmt.Sprintf("soak: resident memory every 10 s, MiB: %s", fmtFloats(rss)))
		lines = append(lines, fmt.Sprintf("soak: Go heap in use every 10 s, MiB: %s", fmtFloats(heap)))
		lines = append(lines, fmt.Sprintf("soak: SpiceDB is %s, on the %s datastore", where, datastore))
		lines = append(lines, fmt.Sprintf("soak: RSS after warm-up %.0f–%.0f MiB, spread %.1f%% (target <= 10%%)", lo, hi, 100*(hi-lo)/lo))
		if len(sdbRSS) > settled {
			after := append([]float64(nil), sdbRSS[settled:]...)
			sort.Float64s(after)
			lines = append(lines, fmt.Sprintf("soak: the spicedb process's resident memory every 10 s, MiB: %s", fmtFloats(sdbRSS)))
			lines = append(lines, fmt.Sprintf("soak: the spicedb process's RSS after warm-up %.0f–%.0f MiB, spread %.1f%%", after[0], after[len(after)-1], 100*(after[len(after)-1]-after[0])/after[0]))
		}
		lines = append(lines, fmt.Sprintf("soak: of the heap in use, allocated by SpiceDB's memory datastore (kept for every revision), MiB: %s", fmtFloats(heapMemdb)))
		lines = append(lines, fmt.Sprintf("soak: of the heap in use, everything else (mandate, the rest of SpiceDB, the load generator), MiB: %s", fmtFloats(heapRest)))
		rest := append([]float64(nil), heapRest[settled:]...)
		sort.Float64s(rest)
		lines = append(lines, fmt.Sprintf("soak: heap outside the memory datastore after warm-up %.0f–%.0f MiB, spread %.1f%%", rest[0], rest[len(rest)-1], 100*(rest[len(rest)-1]-rest[0])/rest[0]))
	}
	var total int
	var p99s []string
	for _, m := range minutes {
		total += m.Requests
		p99s = append(p99s, fmt.Sprintf("%.2f", m.P99ms))
	}
	first, _ := st.firstError.Load().(string)
	lines = append(lines,
		fmt.Sprintf("soak: %.0f requests/s offered, %.0f/s answered over %v after %v warm-up (%d checks, %d writes in all)", rate, float64(total)/elapsed.Seconds(), elapsed.Round(time.Second), warmup, st.checks.Load(), st.writes.Load()),
		fmt.Sprintf("soak: p99 per minute, ms: %v", p99s),
		fmt.Sprintf("soak: the process (mandate and the load generator%s) used %.2f of the machine's %d cores on average%s", map[bool]string{true: "", false: " and SpiceDB"}[sdbPid != 0], cpuShare, runtime.NumCPU(),
			map[bool]string{true: fmt.Sprintf(", the spicedb process %.2f", sdbShare), false: ""}[sdbPid != 0]),
		fmt.Sprintf("soak: SpiceDB answers from before a write mandate had acknowledged, asked again: %d", srv.Engine().StaleReads()),
		fmt.Sprintf("soak: writes that failed %d (each leaves its pair unjudged until a later grant that starts %v after it)", writeFailures.Load(), soakLateWrite),
		fmt.Sprintf("soak: errors %d (target 0)%s", st.errors.Load(), map[bool]string{true: ", first: " + first, false: ""}[first != ""]),
		fmt.Sprintf("soak: wrong allows against the model %d, wrong denies %d, indeterminate (write or expiry in flight) %d", st.wrongAllowsModel.Load(), st.wrongDenies.Load(), st.indeterminate.Load()),
		fmt.Sprintf("soak: sampled %d, re-checked at their exact ZedToken and time %d, wrong allows %d (target 0), stricter answers %d, not re-checked %d",
			st.sampled.Load(), st.verified.Load(), st.wrongAllowsAt.Load(), st.stricterAt.Load(), st.unverifiable.Load()),
	)
	for i := range minutes {
		minutes[i].Description = fmt.Sprintf("soak minute %d: open loop at %.0f/s, 90%% cacheable checks, 9%% uncached, 1%% grant writes and revocations", i+1, rate)
	}
	return minutes, lines
}

func fmtFloats(xs []float64) string {
	s := ""
	for i, x := range xs {
		if i > 0 {
			s += " "
		}
		s += fmt.Sprintf("%.0f", x)
	}
	return s
}

// snapshotKey carries the ZedToken a verifying call must read at.
type snapshotKey struct{}

// newSnapshotEngine starts an engine on its own connection to SpiceDB
// whose every read is rewritten to at_exact_snapshot of the token in the
// call's context, and whose clock is set per decision. It returns the engine
// (for validating queries) and a function deciding one query at a token and
// a time; decisions are serialised, since the clock is the engine's.
func newSnapshotEngine(ctx context.Context, spicedbAddr string) (*engine.Engine, func(context.Context, string, time.Time, engine.Query) (engine.Decision, error)) {
	var clockMu sync.Mutex
	var at time.Time
	setConsistency := func(ctx context.Context, req any) {
		tok, _ := ctx.Value(snapshotKey{}).(string)
		if tok == "" {
			return
		}
		c := &v1.Consistency{Requirement: &v1.Consistency_AtExactSnapshot{AtExactSnapshot: &v1.ZedToken{Token: tok}}}
		switch r := req.(type) {
		case *v1.CheckPermissionRequest:
			r.Consistency = c
		case *v1.CheckBulkPermissionsRequest:
			r.Consistency = c
		case *v1.ReadRelationshipsRequest:
			r.Consistency = c
		case *v1.LookupResourcesRequest:
			r.Consistency = c
		case *v1.LookupSubjectsRequest:
			r.Consistency = c
		}
	}
	unary := func(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
		setConsistency(ctx, req)
		return invoker(ctx, method, req, reply, cc, opts...)
	}
	stream := func(ctx context.Context, desc *grpc.StreamDesc, cc *grpc.ClientConn, method string, streamer grpc.Streamer, opts ...grpc.CallOption) (grpc.ClientStream, error) {
		s, err := streamer(ctx, desc, cc, method, opts...)
		if err != nil {
			return nil, err
		}
		return &snapshotStream{ClientStream: s, set: func(m any) { setConsistency(ctx, m) }}, nil
	}
	conn, err := grpc.NewClient(spicedbAddr, append(dialOpts(spicedbKey), grpc.WithChainUnaryInterceptor(unary), grpc.WithChainStreamInterceptor(stream))...)
	must(err)
	e, err := engine.New(ctx, engine.Config{Now: func() time.Time { return at }}, engine.NewClient(conn), nil)
	must(err)
	return e, func(ctx context.Context, token string, now time.Time, q engine.Query) (engine.Decision, error) {
		clockMu.Lock()
		defer clockMu.Unlock()
		at = now
		return e.Decide(context.WithValue(ctx, snapshotKey{}, token), q)
	}
}

type snapshotStream struct {
	grpc.ClientStream
	set func(any)
}

func (s *snapshotStream) SendMsg(m any) error {
	s.set(m)
	return s.ClientStream.SendMsg(m)
}

// processCPU is the CPU time the process has used, user and system.
func processCPU() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
