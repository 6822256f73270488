//go:build cluster && unix

package server_test

import (
	"context"
	"net/http"
	"net/url"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mandate-dev/mandate/engine"
	"github.com/mandate-dev/mandate/engine/embedded"
	"github.com/mandate-dev/mandate/engine/tcpproxy"
	"github.com/mandate-dev/mandate/internal/testenv"
	"github.com/mandate-dev/mandate/server"
	"github.com/mandate-dev/mandate/service"
)

// answers tallies what callers saw from a stream of checks of a grant that
// stays valid throughout.
type answers struct {
	mu                         sync.Mutex
	allowed, denied, busy, odd int
	acked                      []string // decision ids of the answered checks
}

func (a *answers) add(code int, out map[string]any) {
	a.mu.Lock()
	defer a.mu.Unlock()
	switch {
	case code == http.StatusOK && out["allowed"] == true:
		a.allowed++
		a.acked = append(a.acked, out["decision_id"].(string))
	case code == http.StatusOK:
		a.denied++
		a.acked = append(a.acked, out["decision_id"].(string))
	case code == http.StatusServiceUnavailable:
		a.busy++
	default:
		a.odd++
	}
}

// TestPostgresStoppedAndRestarted: mandate on a Postgres datastore (its own
// Postgres, so the shared one is not touched), the audit trail and bound
// counts on it too. Postgres is stopped under a stream of checks and
// started again: callers see 503s, never a wrong answer; writes are
// refused; mandate recovers without a restart, and every acknowledged check
// has its audit record once the spool is replayed.
func TestPostgresStoppedAndRestarted(t *testing.T) {
	pg := testenv.StartPrivatePostgres(t)
	uri, drop, err := embedded.CreateDatabase(context.Background(), pg.DSN, "mandate_fault")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(drop)
	r := testenv.Start(t, server.Config{
		Embedded: embedded.Config{Engine: "postgres", URI: uri, Migrate: true},
		Engine:   engine.Config{CallTimeout: 500 * time.Millisecond},
		Audit:    server.AuditConfig{SpoolPath: filepath.Join(t.TempDir(), "audit.spool")},
	})
	r.OK("POST", "/v1/relationships:write", service.RoleAdmin, map[string]any{"updates": []map[string]string{
		{"operation": "TOUCH", "relationship": "repo:acme/api#reader@user:alice"},
	}})
	_, _, keep := provision(r)
	keep["correlation_id"] = "pg-fault"

	var seen answers
	stop := make(chan struct{})
	var stopOnce sync.Once
	var wg sync.WaitGroup
	halt := func() { stopOnce.Do(func() { close(stop) }); wg.Wait() }
	t.Cleanup(halt)
	for w := 0; w < 2; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				seen.add(r.Do("POST", "/v1/check", service.RoleChecker, keep))
			}
		}()
	}
	time.Sleep(time.Second)
	pg.Stop()
	stoppedAt := time.Now()
	time.Sleep(time.Second)
	code, out := r.Do("POST", "/v1/tasks", service.RoleOperator, map[string]any{"principal": "user:alice", "ttl": "1h"})
	if code != http.StatusServiceUnavailable {
		t.Fatalf("creating a task with Postgres stopped: %d %v, want 503", code, out)
	}
	if code, _ := r.Do("GET", "/healthz", "", nil); code != http.StatusServiceUnavailable {
		t.Fatalf("/healthz answered %d with Postgres stopped", code)
	}
	time.Sleep(2 * time.Second)
	pg.Start()
	restartedAt := time.Now()
	outage := restartedAt.Sub(stoppedAt)
	deadline := time.Now().Add(60 * time.Second)
	for {
		code, out := r.Do("POST", "/v1/tasks", service.RoleOperator, map[string]any{"principal": "user:alice", "ttl": "1h"})
		if code == http.StatusOK {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("writes did not recover within 60s of Postgres's restart: %d %v", code, out)
		}
		time.Sleep(50 * time.Millisecond)
	}
	recovered := time.Since(restartedAt)
	time.Sleep(time.Second)
	halt()

	if seen.denied > 0 || seen.odd > 0 {
		t.Fatalf("a valid grant was answered %d denies and %d other errors (want only allows and 503s)", seen.denied, seen.odd)
	}
	if seen.busy == 0 {
		t.Fatal("no check failed while Postgres was stopped")
	}
	// Every acknowledged check is in the audit trail, once the spool is
	// replayed into the restarted Postgres.
	want := map[string]bool{}
	for _, id := range seen.acked {
		want[id] = true
	}
	stored := 0
	deadline = time.Now().Add(60 * time.Second)
	for {
		stored = 0
		token := ""
		for {
			out := r.OK("GET", "/v1/audit?page_size=1000&correlation_id=pg-fault&page_token="+url.QueryEscape(token), service.RoleAdmin, nil)
			recs, _ := out["records"].([]any)
			for _, rec := range recs {
				if want[rec.(map[string]any)["id"].(string)] {
					stored++
				}
			}
			if token, _ = out["next_page_token"].(string); token == "" {
				break
			}
		}
		if stored == len(want) || time.Now().After(deadline) {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	if stored != len(want) {
		_, _, metrics := r.Call("GET", "/metrics", "", nil)
		var audit []string
		for _, l := range strings.Split(string(metrics), "\n") {
			if strings.HasPrefix(l, "mandate_audit_") {
				audit = append(audit, l)
			}
		}
		t.Fatalf("%d of %d acknowledged checks have no audit record after Postgres came back; %s", len(want)-stored, len(want), strings.Join(audit, "; "))
	}
	t.Logf("Postgres stopped for %v: %d checks allowed, %d answered 503, 0 denied; writes answered 503; writes served again %v after the restart; all %d acknowledged checks recorded",
		outage.Round(time.Millisecond), seen.allowed, seen.busy, recovered.Round(time.Millisecond), len(want))
}

// TestWatchCut: every connection between a replica and its SpiceDB node is
// cut (through a TCP proxy) while another replica revokes; the cut replica
// never serves the revoked allow from its cache, and its cache serves again
// once the watch is back.
func TestWatchCut(t *testing.T) {
	node := testenv.StartSpiceDB(t, testenv.SpiceDBDatabase(t))
	a := testenv.Start(t, remote(node))
	p, err := tcpproxy.New(node.Addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Down)
	cfg := remote(node)
	cfg.SpiceDBEndpoint = p.Addr
	b := testenv.Start(t, cfg)
	a.OK("POST", "/v1/relationships:write", service.RoleAdmin, map[string]any{"updates": []map[string]string{
		{"operation": "TOUCH", "relationship": "repo:acme/api#reader@user:alice"},
	}})
	_, _, keep := provision(a)
	revokedAgent, _, revoked := provision(a)
	waitCached(t, b, keep)
	waitCached(t, b, revoked)

	// Cut while the revocation is made, so B's watch cannot deliver it.
	p.Down()
	cutAt := time.Now()
	a.OK("POST", "/v1/agents/"+revokedAgent+":suspend", service.RoleOperator, nil)
	var during answers
	var revokedAllowed int
	for time.Since(cutAt) < 2*time.Second {
		if code, out := b.Do("POST", "/v1/check", service.RoleChecker, revoked); code == http.StatusOK && out["allowed"] == true {
			revokedAllowed++
		}
		during.add(b.Do("POST", "/v1/check", service.RoleChecker, keep))
	}
	if err := p.Up(); err != nil {
		t.Fatal(err)
	}
	upAt := time.Now()
	if revokedAllowed > 0 {
		t.Fatalf("B allowed the revoked agent %d times while its connections were cut", revokedAllowed)
	}
	if during.denied > 0 || during.odd > 0 {
		t.Fatalf("during the cut B answered the kept grant with %d denies and %d other errors", during.denied, during.odd)
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		code, out := b.Do("POST", "/v1/check", service.RoleChecker, revoked)
		if code == http.StatusOK && out["allowed"] == true {
			t.Fatal("B allowed the revoked agent after the cut")
		}
		if code == http.StatusOK {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("B did not answer within 30s of the cut's end: %d %v", code, out)
		}
		time.Sleep(20 * time.Millisecond)
	}
	answering := time.Since(upAt)
	waitCached(t, b, keep)
	t.Logf("cut for 2s: B answered the kept grant %d allows (cached, before it noticed) and %d 503s, the revoked agent 0 allows; answering %v and caching %v after the cut ended",
		during.allowed, during.busy, answering.Round(time.Millisecond), time.Since(upAt).Round(time.Millisecond))
}
