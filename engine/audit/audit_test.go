package audit_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/mandate-dev/mandate/engine/audit"
	"github.com/mandate-dev/mandate/engine/embedded"
	"github.com/mandate-dev/mandate/engine/tcpproxy"
)

var t0 = time.Date(2026, 11, 1, 12, 0, 0, 0, time.UTC)

// scene makes 30 records: three agents, two principals, a correlation id on
// every third, allows and denies, one a minute; two share a timestamp.
func scene() []audit.Record {
	var rs []audit.Record
	for i := 0; i < 30; i++ {
		r := audit.Record{
			ID: fmt.Sprintf("dec_%03d", i), Time: t0.Add(time.Duration(i) * time.Minute), Kind: audit.KindCheck,
			Subject: fmt.Sprintf("agent:agt_%d", i%3), Principal: fmt.Sprintf("user:u%d", i%2),
			Task: "task:tsk_1", Permission: "read", Resource: fmt.Sprintf("repo:r%d", i%5), Decision: audit.DecisionAllow,
		}
		if i%4 == 0 {
			r.Decision = audit.DecisionDeny
		}
		if i%3 == 0 {
			r.CorrelationID = "corr-1"
		}
		rs = append(rs, r)
	}
	rs[11].Time = rs[10].Time // a tie, ordered by id
	rs = append(rs, audit.Record{ID: "chg_001", Time: t0.Add(40 * time.Minute), Kind: audit.KindChange, Action: "agent.revoke", Target: "agent:agt_1"})
	return rs
}

// expected filters and orders the scene the way every store must.
func expected(rs []audit.Record, f audit.Filter) []string {
	var out []audit.Record
	for _, r := range rs {
		if f.Matches(&r) {
			out = append(out, r)
		}
	}
	// newest first, ties by id descending
	for i := 0; i < len(out); i++ {
		for j := i + 1; j < len(out); j++ {
			a, b := out[i], out[j]
			if b.Time.After(a.Time) || (b.Time.Equal(a.Time) && b.ID > a.ID) {
				out[i], out[j] = out[j], out[i]
			}
		}
	}
	ids := make([]string, len(out))
	for i, r := range out {
		ids[i] = r.ID
	}
	return ids
}

// listAll pages through a store with the given page size.
func listAll(t *testing.T, s audit.Store, f audit.Filter, pageSize int) []string {
	t.Helper()
	f.PageSize = pageSize
	var ids []string
	for pages := 0; pages < 100; pages++ {
		recs, err := s.Query(context.Background(), f)
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range recs {
			ids = append(ids, r.ID)
		}
		if len(recs) < pageSize {
			return ids
		}
		c, err := audit.DecodeToken(audit.EncodeToken(&recs[len(recs)-1]))
		if err != nil {
			t.Fatal(err)
		}
		f.After = c
	}
	t.Fatal("pagination did not end")
	return nil
}

func stores(t *testing.T) map[string]audit.Store {
	out := map[string]audit.Store{"memory": audit.NewMemoryStore(1000, 0)}
	if dsn := os.Getenv("MANDATE_TEST_POSTGRES_DSN"); dsn != "" {
		uri, drop, err := embedded.CreateDatabase(context.Background(), dsn, "mandate_audit")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(drop)
		pg, err := audit.OpenPostgres(context.Background(), uri)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(pg.Close)
		out["postgres"] = pg
	}
	return out
}

func TestStoresQueryAndPaginate(t *testing.T) {
	rs := scene()
	filters := map[string]audit.Filter{
		"all":         {},
		"agent":       {Agent: "agent:agt_1"},
		"principal":   {Principal: "user:u0"},
		"correlation": {CorrelationID: "corr-1"},
		"decision":    {Decision: audit.DecisionDeny},
		"resource":    {Resource: "repo:r2", Agent: "agent:agt_2"},
		"window":      {Since: t0.Add(5 * time.Minute), Until: t0.Add(12 * time.Minute)},
		"task":        {Task: "task:tsk_1", Since: t0.Add(25 * time.Minute)},
		"nothing":     {Agent: "agent:nobody"},
	}
	for name, s := range stores(t) {
		t.Run(name, func(t *testing.T) {
			// Written twice: a replay stores nothing new.
			if err := s.Write(context.Background(), rs[:20]); err != nil {
				t.Fatal(err)
			}
			if err := s.Write(context.Background(), rs); err != nil {
				t.Fatal(err)
			}
			for fname, f := range filters {
				want := expected(rs, f)
				for _, ps := range []int{1, 3, 7, len(want), len(want) + 1, 1000} {
					if ps == 0 {
						continue
					}
					got := listAll(t, s, f, ps)
					if fmt.Sprint(got) != fmt.Sprint(want) {
						t.Fatalf("%s, page size %d:\n got %v\nwant %v", fname, ps, got, want)
					}
				}
			}
			// The change is found by the agent it acted on.
			got := listAll(t, s, audit.Filter{Agent: "agent:agt_1", Since: t0.Add(39 * time.Minute)}, 10)
			if len(got) != 1 || got[0] != "chg_001" {
				t.Fatalf("change by agent: %v", got)
			}
		})
	}
}

func TestMemoryStoreIsBounded(t *testing.T) {
	s := audit.NewMemoryStore(10, 0)
	rs := scene()
	if err := s.Write(context.Background(), rs); err != nil {
		t.Fatal(err)
	}
	if s.Len() != 10 {
		t.Fatalf("kept %d records, want 10", s.Len())
	}
	got := listAll(t, s, audit.Filter{}, 100)
	if got[0] != "chg_001" || len(got) != 10 {
		t.Fatalf("kept %v, want the 10 newest", got)
	}
}

// TestMemoryStoreIsBoundedByBytes: long reasons cannot grow the store past
// its byte budget, however few records that leaves; the newest stay.
func TestMemoryStoreIsBoundedByBytes(t *testing.T) {
	const budget = 1 << 20
	s := audit.NewMemoryStore(100000, budget)
	long := strings.Repeat("r", 4096)
	for i := 0; i < 1000; i++ {
		r := audit.Record{ID: fmt.Sprintf("dec_%04d", i), Time: t0.Add(time.Duration(i) * time.Millisecond), Kind: "check", Reason: long, CorrelationID: long[:256]}
		if err := s.Write(context.Background(), []audit.Record{r}); err != nil {
			t.Fatal(err)
		}
	}
	if n := s.Len(); n*(4096+256) > budget || n < 100 {
		t.Fatalf("kept %d records of over 4 KiB each, want as many as fit in %d bytes", n, budget)
	}
	if got, err := s.Query(context.Background(), audit.Filter{PageSize: 1}); err != nil || len(got) != 1 || got[0].ID != "dec_0999" {
		t.Fatalf("newest kept: %v %v, want dec_0999", got, err)
	}
}

func TestTokens(t *testing.T) {
	r := audit.Record{ID: "dec_abc", Time: t0.Add(123456 * time.Microsecond)}
	c, err := audit.DecodeToken(audit.EncodeToken(&r))
	if err != nil || !c.Time.Equal(r.Time) || c.ID != r.ID {
		t.Fatalf("round trip: %v %v", c, err)
	}
	for _, bad := range []string{"x", "!!!", "e30", "eyJ2IjoyLCJ0IjoxLCJpIjoiYSJ9", "eyJ2IjoxLCJ0IjotMSwiaSI6ImEifQ", string(make([]byte, 600))} {
		if _, err := audit.DecodeToken(bad); err == nil {
			t.Errorf("DecodeToken(%q) accepted", bad)
		}
	}
}

func FuzzDecodeToken(f *testing.F) {
	r := audit.Record{ID: "dec_1", Time: t0}
	f.Add(audit.EncodeToken(&r))
	f.Add("")
	f.Add("eyJ2IjoxfQ")
	f.Add("eyJ2IjoxLCJ0IjoxLCJpIjoiYSIsIngiOjF9")
	f.Fuzz(func(t *testing.T, s string) {
		c, err := audit.DecodeToken(s)
		if err != nil {
			return
		}
		// Whatever decodes re-encodes to a token that decodes the same.
		again, err := audit.DecodeToken(audit.EncodeToken(&audit.Record{ID: c.ID, Time: c.Time}))
		if err != nil || !again.Time.Equal(c.Time) || again.ID != c.ID {
			t.Fatalf("%q decoded to %v but does not round-trip: %v %v", s, c, again, err)
		}
	})
}

func TestParseTime(t *testing.T) {
	now := t0
	cases := map[string]time.Time{
		"":                     {},
		"30d":                  now.Add(-30 * 24 * time.Hour),
		"12h":                  now.Add(-12 * time.Hour),
		"2026-10-01T00:00:00Z": time.Date(2026, 10, 1, 0, 0, 0, 0, time.UTC),
	}
	for in, want := range cases {
		got, err := audit.ParseTime(in, now)
		if err != nil || !got.Equal(want) {
			t.Errorf("ParseTime(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	for _, bad := range []string{"yesterday", "-5h", "30x", "2026-13-01", "-3d", "99999999d"} {
		if _, err := audit.ParseTime(bad, now); err == nil {
			t.Errorf("ParseTime(%q) accepted", bad)
		}
	}
}

// TestOutageSpoolsAndReplays: the database goes away mid-stream and comes
// back; every record ends up stored exactly once, and none is dropped.
func TestOutageSpoolsAndReplays(t *testing.T) {
	dsn := os.Getenv("MANDATE_TEST_POSTGRES_DSN")
	if dsn == "" {
		t.Skip("MANDATE_TEST_POSTGRES_DSN is not set")
	}
	uri, drop, err := embedded.CreateDatabase(context.Background(), dsn, "mandate_audit")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(drop)
	direct, err := audit.OpenPostgres(context.Background(), uri)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(direct.Close)
	u, _ := url.Parse(uri)
	p, err := tcpproxy.New(u.Host)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Down)
	u.Host = p.Addr
	q := u.Query()
	q.Set("connect_timeout", "1")
	u.RawQuery = q.Encode()
	viaProxy, err := audit.OpenPostgres(context.Background(), u.String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(viaProxy.Close)

	reg := prometheus.NewRegistry()
	rec, err := audit.NewRecorder(audit.Config{
		Store: viaProxy, SpoolPath: filepath.Join(t.TempDir(), "audit.spool"), FlushInterval: 10 * time.Millisecond,
		Log: slog.New(slog.NewTextHandler(io.Discard, nil)), Metrics: audit.NewMetrics(reg),
	})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { rec.Run(context.Background()); close(done) }()

	const n = 600
	write := func(from, to int, wait bool) {
		for i := from; i < to; i++ {
			r := audit.Record{ID: fmt.Sprintf("dec_%05d", i), Time: time.Now().UTC().Truncate(time.Microsecond), Kind: audit.KindCheck, Decision: audit.DecisionAllow}
			if err := rec.Record(context.Background(), r, wait); err != nil {
				t.Fatalf("record %d: %v", i, err)
			}
		}
	}
	write(0, 200, false)
	write(200, 201, true) // everything before is flushed
	p.Down()
	write(201, 400, false)
	write(400, 401, true) // acknowledged while the database is away: spooled
	if metric(t, reg, "mandate_audit_spooled_total") == 0 {
		t.Fatal("nothing was spooled during the outage")
	}
	if err := p.Up(); err != nil {
		t.Fatal(err)
	}
	write(401, n, false)
	rec.Close()
	<-done

	deadline := time.Now().Add(10 * time.Second)
	for {
		c, err := direct.Count(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		if c == n {
			break
		}
		if c > n {
			t.Fatalf("%d records stored for %d written", c, n)
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d records stored after the outage", c, n)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if metric(t, reg, "mandate_audit_replayed_total") == 0 {
		t.Fatal("nothing was replayed")
	}
	if d := metric(t, reg, "mandate_audit_dropped_total"); d != 0 {
		t.Fatalf("%v records dropped", d)
	}
}

func metric(t *testing.T, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name {
			sum := 0.0
			for _, m := range mf.GetMetric() {
				sum += m.GetCounter().GetValue()
			}
			return sum
		}
	}
	return 0
}

func TestLineSinksAndOCSF(t *testing.T) {
	dir := t.TempDir()
	native, err := audit.OpenLineSink(filepath.Join(dir, "audit.jsonl"), false)
	if err != nil {
		t.Fatal(err)
	}
	ocsf, err := audit.OpenLineSink(filepath.Join(dir, "ocsf.jsonl"), true)
	if err != nil {
		t.Fatal(err)
	}
	recs := []audit.Record{
		{ID: "dec_1", Time: t0, Kind: audit.KindCheck, Decision: audit.DecisionDeny, ReasonCode: "NO_GRANT", FailedLeg: "grant",
			Subject: "agent:agt_1", Principal: "user:alice", Task: "task:tsk_1", Permission: "deploy", Resource: "environment:production",
			Reason: "ship it", CorrelationID: "deploy-42", RequestID: "req_1", Caller: "ci-runner"},
		{ID: "chg_1", Time: t0, Kind: audit.KindChange, Action: "agent.revoke", Target: "agent:agt_1", Caller: "ops"},
	}
	for _, s := range []*audit.LineSink{native, ocsf} {
		if err := s.Emit(recs); err != nil {
			t.Fatal(err)
		}
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
	}
	lines := func(name string) []map[string]any {
		b, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		var out []map[string]any
		for _, l := range strings.Split(strings.TrimSpace(string(b)), "\n") {
			var m map[string]any
			if err := json.Unmarshal([]byte(l), &m); err != nil {
				t.Fatalf("%s: %v", name, err)
			}
			out = append(out, m)
		}
		return out
	}
	if n := lines("audit.jsonl"); len(n) != 2 || n[0]["correlation_id"] != "deploy-42" || n[1]["action"] != "agent.revoke" {
		t.Fatalf("native lines: %v", n)
	}
	o := lines("ocsf.jsonl")
	check, change := o[0], o[1]
	if check["class_uid"] != 6003.0 || check["activity_id"] != 2.0 || check["type_uid"] != 600302.0 || check["status_id"] != 2.0 || check["message"] != "ship it" {
		t.Fatalf("OCSF check event: %v", check)
	}
	actor := check["actor"].(map[string]any)
	if actor["user"].(map[string]any)["uid"] != "user:alice" || actor["session"].(map[string]any)["uid"] != "agent:agt_1" || actor["app_name"] != "ci-runner" {
		t.Fatalf("OCSF actor: %v", actor)
	}
	if md := check["metadata"].(map[string]any); md["correlation_uid"] != "deploy-42" || md["uid"] != "dec_1" {
		t.Fatalf("OCSF metadata: %v", md)
	}
	if res := check["resources"].([]any)[0].(map[string]any); res["uid"] != "environment:production" || res["type"] != "environment" {
		t.Fatalf("OCSF resources: %v", res)
	}
	if change["activity_id"] != 4.0 || change["status_id"] != 1.0 || change["api"].(map[string]any)["operation"] != "agent.revoke" {
		t.Fatalf("OCSF change event: %v", change)
	}
}

// FuzzParseTime: an audit filter's since/until is a time at or before now,
// or an error; it never panics.
func FuzzParseTime(f *testing.F) {
	for _, s := range []string{"", "30d", "12h", "90m", "2026-01-02T03:04:05Z", "-5m", "36501d", "1e9h", "9223372036854775807ns"} {
		f.Add(s)
	}
	now := t0
	f.Fuzz(func(t *testing.T, s string) {
		got, err := audit.ParseTime(s, now)
		if err != nil || s == "" {
			return
		}
		if _, rfc := time.Parse(time.RFC3339Nano, s); rfc != nil && got.After(now) {
			t.Fatalf("ParseTime(%q) = %v, after now %v", s, got, now)
		}
	})
}
