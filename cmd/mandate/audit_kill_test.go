package main

import (
	"bytes"
	"github.com/mandate-dev/mandate/internal/testenv"
	"net/url"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"
)

// TestStrictAuditSurvivesKill9: in strict mode a check is acknowledged only
// once its record is durable. Kill -9 the server during a steady stream of
// checks; after a restart every acknowledged check has its record.
func TestStrictAuditSurvivesKill9(t *testing.T) {
	dsn := testenv.Postgres(t, false)
	if testing.Short() {
		t.Skip("builds and runs the server")
	}
	bin, keys := buildBinary(t)
	auditDB := freshDatabase(t, dsn)
	spool := filepath.Join(t.TempDir(), "audit.spool")
	args := func() []string {
		return []string{"serve", "--keys-file", keys, "--audit-mode", "strict", "--audit-dsn", auditDB, "--audit-spool", spool,
			"--grpc-addr", freeAddr(t), "--http-addr", freeAddr(t)}
	}
	first := &replica{name: "first", logs: &bytes.Buffer{}}
	first.start(t, bin, args())
	waitServing(t, first)

	post(t, first, "/v1/relationships:write", adminKey, map[string]any{"updates": []map[string]string{
		{"operation": "TOUCH", "relationship": "repo:acme/api#reader@user:alice"},
	}})
	_, agent, _ := provision(t, first, "15m")
	corr := "kill9-" + agent

	var mu sync.Mutex
	var acked []string
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for w := 0; w < 4; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				out, ok := tryPost(first, "/v1/check", checkerKey, map[string]string{
					"subject": "agent:" + agent, "permission": "read", "resource": "repo:acme/api", "correlation_id": corr,
				})
				if !ok {
					return // the server is gone
				}
				mu.Lock()
				acked = append(acked, out["decision_id"].(string))
				mu.Unlock()
			}
		}()
	}
	time.Sleep(1500 * time.Millisecond)
	if err := first.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_ = first.cmd.Wait()
	close(stop)
	wg.Wait()
	if len(acked) < 50 {
		t.Fatalf("only %d checks were acknowledged before the kill", len(acked))
	}

	second := &replica{name: "second", logs: &bytes.Buffer{}}
	second.start(t, bin, args())
	waitServing(t, second)
	stored := map[string]bool{}
	token := ""
	for {
		out := do(t, second, "GET", "/v1/audit?page_size=1000&correlation_id="+url.QueryEscape(corr)+"&page_token="+url.QueryEscape(token), adminKey, nil)
		recs, _ := out["records"].([]any)
		for _, r := range recs {
			stored[r.(map[string]any)["id"].(string)] = true
		}
		token, _ = out["next_page_token"].(string)
		if token == "" {
			break
		}
	}
	missing := 0
	for _, id := range acked {
		if !stored[id] {
			missing++
		}
	}
	if missing > 0 {
		t.Fatalf("%d of %d acknowledged checks have no audit record after kill -9", missing, len(acked))
	}
	t.Logf("%d acknowledged checks, all recorded (%d records stored)", len(acked), len(stored))
}

// TestGracefulShutdownFlushesAudit: in batched mode a check is acknowledged
// before its record is written; a graceful shutdown writes every one.
func TestGracefulShutdownFlushesAudit(t *testing.T) {
	dsn := testenv.Postgres(t, false)
	if testing.Short() {
		t.Skip("builds and runs the server")
	}
	bin, keys := buildBinary(t)
	auditDB := freshDatabase(t, dsn)
	args := func() []string {
		return []string{"serve", "--keys-file", keys, "--audit-mode", "batched", "--audit-dsn", auditDB,
			"--audit-spool", filepath.Join(t.TempDir(), "spool"), "--grpc-addr", freeAddr(t), "--http-addr", freeAddr(t)}
	}
	first := &replica{name: "first", logs: &bytes.Buffer{}}
	first.start(t, bin, args())
	waitServing(t, first)
	post(t, first, "/v1/relationships:write", adminKey, map[string]any{"updates": []map[string]string{
		{"operation": "TOUCH", "relationship": "repo:acme/api#reader@user:alice"},
	}})
	const n = 300
	for i := 0; i < n; i++ {
		post(t, first, "/v1/check", checkerKey, map[string]string{"subject": "user:alice", "permission": "read", "resource": "repo:acme/api", "correlation_id": "graceful"})
	}
	if err := first.cmd.Process.Signal(os.Interrupt); err != nil {
		t.Fatal(err)
	}
	if err := first.cmd.Wait(); err != nil {
		t.Fatalf("graceful shutdown: %v\n%s", err, first.logs.String())
	}
	second := &replica{name: "second", logs: &bytes.Buffer{}}
	second.start(t, bin, args())
	waitServing(t, second)
	out := do(t, second, "GET", "/v1/audit?page_size=1000&correlation_id=graceful", adminKey, nil)
	if recs, _ := out["records"].([]any); len(recs) != n {
		t.Fatalf("%d of %d acknowledged checks recorded after a graceful shutdown", len(recs), n)
	}
}
