package audit_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/url"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/mandate-dev/mandate/engine/audit"
	"github.com/mandate-dev/mandate/engine/embedded"
	"github.com/mandate-dev/mandate/engine/tcpproxy"
)

// TestSpoolOnFullDisk: the audit database is away and the spool's disk is
// full: the spool path becomes a link to /dev/full, which answers every
// write with ENOSPC. A strict check learns
// its record could not be kept (the service answers it 503), so nothing
// acknowledged in strict mode is lost; a batched check was answered before
// its record was written, and its record is dropped and counted in
// mandate_audit_dropped_total, the loss window the README documents. Once
// the database is back, records are stored again. The fault table in
// bench/RESULTS.md quotes this.
func TestSpoolOnFullDisk(t *testing.T) {
	dsn := os.Getenv("MANDATE_TEST_POSTGRES_DSN")
	if dsn == "" {
		t.Skip("MANDATE_TEST_POSTGRES_DSN is not set")
	}
	if _, err := os.Stat("/dev/full"); err != nil {
		t.Skip("no /dev/full to stand for a full disk")
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
	spool := filepath.Join(t.TempDir(), "audit.spool")
	rec, err := audit.NewRecorder(audit.Config{
		Store: viaProxy, SpoolPath: spool, FlushInterval: 10 * time.Millisecond,
		Log: slog.New(slog.NewTextHandler(io.Discard, nil)), Metrics: audit.NewMetrics(reg),
	})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { rec.Run(context.Background()); close(done) }()
	record := func(i int, wait bool) error {
		r := audit.Record{ID: fmt.Sprintf("dec_%05d", i), Time: time.Now().UTC().Truncate(time.Microsecond), Kind: audit.KindCheck, Decision: audit.DecisionAllow}
		return rec.Record(context.Background(), r, wait)
	}

	for i := 0; i < 100; i++ {
		if err := record(i, i == 99); err != nil {
			t.Fatalf("record %d with the database up: %v", i, err)
		}
	}
	// The disk fills up, then the database goes away.
	if err := os.Symlink("/dev/full", spool); err != nil {
		t.Fatal(err)
	}
	p.Down()
	if err := record(100, true); err == nil {
		t.Fatal("a strict record was acknowledged with the database away and the spool disk full")
	}
	for i := 101; i < 300; i++ {
		if err := record(i, false); err != nil {
			t.Fatalf("batched record %d: %v (a batched check is answered before its record is written)", i, err)
		}
	}
	deadline := time.Now().Add(10 * time.Second)
	for metric(t, reg, "mandate_audit_dropped_total") < 200 {
		if time.Now().After(deadline) {
			t.Fatalf("dropped %v records, want the 200 written during the outage", metric(t, reg, "mandate_audit_dropped_total"))
		}
		time.Sleep(10 * time.Millisecond)
	}
	if err := p.Up(); err != nil {
		t.Fatal(err)
	}
	deadline = time.Now().Add(20 * time.Second)
	for record(300, true) != nil {
		if time.Now().After(deadline) {
			t.Fatal("records are not stored again after the database came back")
		}
		time.Sleep(100 * time.Millisecond)
	}
	rec.Close()
	<-done
	c, err := direct.Count(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	dropped := metric(t, reg, "mandate_audit_dropped_total")
	t.Logf("spool disk full during a 200-record outage: strict record refused; %v batched records dropped and counted; %d stored in all (100 before, the rest after)", dropped, c)
	if c < 101 || c > 102 {
		t.Fatalf("%d records stored, want the 100 before the outage and the one after", c)
	}
}
