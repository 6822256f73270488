//go:build cluster && unix

package main

import (
	"bytes"
	"net/url"
	"path/filepath"
	"sort"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/mandate-dev/mandate/internal/testenv"
)

// TestBatchedAuditKill9: in batched mode (the default) a check is answered
// before its record is written, in batches every 50 ms. Kill -9 under a
// steady stream of checks and task creations, on a Postgres datastore with
// the audit trail on it, and measure what was lost: acknowledged changes,
// none (a change is acknowledged only once its record is durable, and the
// task itself is in Postgres); acknowledged checks, only those answered in
// the last moments before the kill, which the README documents as batched
// mode's loss window. The fault table in bench/RESULTS.md quotes this.
func TestBatchedAuditKill9(t *testing.T) {
	dsn := testenv.Postgres(t, true)
	bin, keys := buildBinary(t)
	uri := freshDatabase(t, dsn)
	spool := filepath.Join(t.TempDir(), "audit.spool")
	args := func(migrate bool) []string {
		a := []string{"serve", "--keys-file", keys, "--datastore-engine", "postgres", "--datastore-uri", uri,
			"--audit-spool", spool, "--grpc-addr", freeAddr(t), "--http-addr", freeAddr(t)}
		if migrate {
			a = append(a, "--datastore-migrate")
		}
		return a
	}
	first := &replica{name: "first", logs: &bytes.Buffer{}}
	first.start(t, bin, args(true))
	waitServing(t, first)
	post(t, first, "/v1/relationships:write", adminKey, map[string]any{"updates": []map[string]string{
		{"operation": "TOUCH", "relationship": "repo:acme/api#reader@user:alice"},
	}})
	_, agent, _ := provision(t, first, "15m")
	corr := "kill9-batched-" + agent

	type ack struct {
		id string
		at time.Time
	}
	var mu sync.Mutex
	var checks, tasks []ack
	stop := make(chan struct{})
	var wg sync.WaitGroup
	loop := func(f func() bool) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				if !f() {
					return // the server is gone
				}
			}
		}()
	}
	for w := 0; w < 4; w++ {
		loop(func() bool {
			out, ok := tryPost(first, "/v1/check", checkerKey, map[string]string{
				"subject": "agent:" + agent, "permission": "read", "resource": "repo:acme/api", "correlation_id": corr,
			})
			if ok {
				mu.Lock()
				checks = append(checks, ack{out["decision_id"].(string), time.Now()})
				mu.Unlock()
			}
			return ok
		})
	}
	loop(func() bool {
		out, ok := tryPost(first, "/v1/tasks", operatorKey, map[string]string{"principal": "user:alice", "ttl": "1h"})
		if ok {
			mu.Lock()
			tasks = append(tasks, ack{out["task"].(map[string]any)["id"].(string), time.Now()})
			mu.Unlock()
		}
		return ok
	})
	time.Sleep(2 * time.Second)
	if err := first.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	killedAt := time.Now()
	_ = first.cmd.Wait()
	close(stop)
	wg.Wait()

	second := &replica{name: "second", logs: &bytes.Buffer{}}
	second.start(t, bin, args(false))
	waitServing(t, second)
	stored := map[string]bool{}
	token := ""
	for {
		out := do(t, second, "GET", "/v1/audit?page_size=1000&correlation_id="+url.QueryEscape(corr)+"&page_token="+url.QueryEscape(token), adminKey, nil)
		recs, _ := out["records"].([]any)
		for _, r := range recs {
			stored[r.(map[string]any)["id"].(string)] = true
		}
		if token, _ = out["next_page_token"].(string); token == "" {
			break
		}
	}
	var lostAges []time.Duration
	for _, c := range checks {
		if !stored[c.id] {
			lostAges = append(lostAges, killedAt.Sub(c.at))
		}
	}
	sort.Slice(lostAges, func(i, j int) bool { return lostAges[i] > lostAges[j] })
	// Every acknowledged change survives: the task, and its record.
	for _, tk := range tasks {
		do(t, second, "GET", "/v1/tasks/"+tk.id, operatorKey, nil)
		out := do(t, second, "GET", "/v1/audit?task="+url.QueryEscape("task:"+tk.id), adminKey, nil)
		found := false
		for _, r := range out["records"].([]any) {
			if r.(map[string]any)["action"] == "task.create" {
				found = true
			}
		}
		if !found {
			t.Fatalf("task %s was acknowledged before the kill, but its task.create record is gone", tk.id)
		}
	}
	if len(checks) < 50 || len(tasks) < 3 {
		t.Fatalf("only %d checks and %d task creations were acknowledged before the kill", len(checks), len(tasks))
	}
	// The loss window: only checks answered just before the kill. One
	// second is the 50 ms flush interval with room for a loaded machine.
	if len(lostAges) > 0 && lostAges[0] > time.Second {
		t.Fatalf("a check acknowledged %v before the kill has no record: batched mode lost more than its window", lostAges[0])
	}
	oldest := time.Duration(0)
	if len(lostAges) > 0 {
		oldest = lostAges[0]
	}
	t.Logf("kill -9 in batched mode: %d of %d acknowledged checks lost (all answered within %v before the kill); %d of %d acknowledged task creations and their records kept",
		len(lostAges), len(checks), oldest.Round(time.Millisecond), len(tasks), len(tasks))
}
