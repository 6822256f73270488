//go:build cluster && unix

package server_test

import (
	"context"
	"errors"
	"net/http"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mandate-dev/mandate/internal/testenv"
	"github.com/mandate-dev/mandate/server"
	"github.com/mandate-dev/mandate/service"
)

// remote is a server config for a mandate replica on a standalone SpiceDB
// node, over plaintext TCP, as `--spicedb-endpoint ADDR --spicedb-insecure`.
func remote(n *testenv.SpiceDBNode) server.Config {
	return server.Config{SpiceDBEndpoint: n.Addr, SpiceDBToken: n.Key, SpiceDBInsecure: true}
}

// provision makes a task, an agent and a read grant on repo:acme/api on r,
// and returns the check that the grant allows.
func provision(r *testenv.Server) (agent, grant string, check map[string]any) {
	r.T.Helper()
	task := r.OK("POST", "/v1/tasks", service.RoleOperator, map[string]any{"principal": "user:alice", "ttl": "1h"})["task"].(map[string]any)["id"].(string)
	agent = r.OK("POST", "/v1/agents", service.RoleOperator, map[string]any{"task": "task:" + task, "name": "a", "ttl": "1h"})["agent"].(map[string]any)["id"].(string)
	grant = r.OK("POST", "/v1/grants", service.RoleOperator, map[string]any{"holder": "agent:" + agent, "permission": "read", "resource": "repo:acme/api", "ttl": "30m"})["grant"].(map[string]any)["id"].(string)
	return agent, grant, map[string]any{"subject": "agent:" + agent, "permission": "read", "resource": "repo:acme/api"}
}

// waitCached asks r's decision cache until it answers allowed from its
// entries (the answer does not say; the cache in the process does).
func waitCached(t *testing.T, r *testenv.Server, check map[string]any) {
	t.Helper()
	ctx := context.Background()
	q, err := r.Srv.Engine().ValidateQuery(ctx, check["subject"].(string), check["permission"].(string), check["resource"].(string), nil)
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		if d, err := r.Srv.Cache().Decide(ctx, q); err == nil && d.Allowed && d.Cached {
			return
		}
		time.Sleep(5 * time.Millisecond)
	}
	_, health := r.Do("GET", "/healthz", "", nil)
	t.Fatalf("%s never served %v from its cache (health %v)", r.Base, check, health)
}

// TestSpiceDBCluster: three standalone SpiceDB nodes on one Postgres, three
// mandate replicas, each on its own node, with no dispatch between the nodes.
// A revocation on one replica reaches the others' caches through their
// nodes' Watch; a killed node's replica fails closed while the others keep
// answering; the node back, its replica recovers without a restart.
func TestSpiceDBCluster(t *testing.T) {
	uri := testenv.SpiceDBDatabase(t)
	var nodes []*testenv.SpiceDBNode
	var rs []*testenv.Server
	for i := 0; i < 3; i++ {
		nodes = append(nodes, testenv.StartSpiceDB(t, uri))
		// One at a time: the first writes mandate's schema.
		rs = append(rs, testenv.Start(t, remote(nodes[i])))
	}
	a, b, c := rs[0], rs[1], rs[2]
	a.OK("POST", "/v1/relationships:write", service.RoleAdmin, map[string]any{"updates": []map[string]string{
		{"operation": "TOUCH", "relationship": "repo:acme/api#reader@user:alice"},
	}})

	// Propagation, measured as the bench's (f): from the start of the
	// revocation on A until B and C both deny, their caches warm before.
	const rounds = 20
	var took []time.Duration
	for i := 0; i < rounds; i++ {
		agent, _, check := provision(a)
		waitCached(t, b, check)
		waitCached(t, c, check)
		t0 := time.Now()
		var wg sync.WaitGroup
		var worst atomic.Int64
		for _, r := range []*testenv.Server{b, c} {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for time.Since(t0) < 10*time.Second {
					code, out := r.Do("POST", "/v1/check", service.RoleChecker, check)
					if code == http.StatusOK && out["allowed"] == false {
						break
					}
					time.Sleep(time.Millisecond)
				}
				d := int64(time.Since(t0))
				for {
					w := worst.Load()
					if d <= w || worst.CompareAndSwap(w, d) {
						break
					}
				}
			}()
		}
		a.OK("POST", "/v1/agents/"+agent+":suspend", service.RoleOperator, nil)
		wg.Wait()
		if d := time.Duration(worst.Load()); d >= 10*time.Second {
			t.Fatalf("round %d: a suspension on A was still allowed on B or C after %v", i, d)
		}
		took = append(took, time.Duration(worst.Load()))
	}
	sort.Slice(took, func(i, j int) bool { return took[i] < took[j] })
	t.Logf("propagation through the nodes' Watch, %d rounds: p50 %v, p90 %v, max %v", rounds,
		took[rounds/2].Round(time.Millisecond), took[rounds*9/10].Round(time.Millisecond), took[rounds-1].Round(time.Millisecond))

	// Two agents: one stays granted, one is revoked while node B is down.
	_, _, keep := provision(a)
	revokedAgent, _, revoked := provision(a)
	for _, r := range rs {
		waitCached(t, r, keep)
		waitCached(t, r, revoked)
	}

	nodes[1].Kill()
	killedAt := time.Now()
	a.OK("POST", "/v1/agents/"+revokedAgent+":suspend", service.RoleOperator, nil)
	revokedAt := time.Now()

	// B: no allow of the revoked agent past the watch-lag bound (1 s, the
	// longest any replica's cache may trail a write, node down or not); the
	// kept one is an error (503) once B has noticed, never a deny. A and C
	// keep answering.
	var bAllowsRevoked, bAllowsRevokedInBound, bErrors, bAllowsKept int
	var firstError time.Duration
	for time.Since(revokedAt) < 3*time.Second {
		code, out := b.Do("POST", "/v1/check", service.RoleChecker, revoked)
		if code == http.StatusOK && out["allowed"] == true {
			if time.Since(revokedAt) > time.Second {
				bAllowsRevoked++
			} else {
				bAllowsRevokedInBound++
			}
		}
		code, out = b.Do("POST", "/v1/check", service.RoleChecker, keep)
		switch {
		case code == http.StatusServiceUnavailable:
			if bErrors == 0 {
				firstError = time.Since(killedAt)
			}
			bErrors++
		case code == http.StatusOK && out["allowed"] == true:
			bAllowsKept++
		default:
			t.Fatalf("B answered %d %v for a kept grant while its node is down; want 503", code, out)
		}
		for _, r := range []*testenv.Server{a, c} {
			if out := r.Check(keep["subject"].(string), "read", "repo:acme/api", nil); out["allowed"] != true {
				t.Fatalf("%s denied the kept grant while node B was down: %v", r.Base, out)
			}
			// A at once; C once the revocation has come through its watch.
			if r == a || time.Since(revokedAt) > time.Second {
				if out := r.Check(revoked["subject"].(string), "read", "repo:acme/api", nil); out["allowed"] != false {
					t.Fatalf("%s allowed the revoked agent while node B was down: %v", r.Base, out)
				}
			}
		}
	}
	if bAllowsRevoked > 0 {
		t.Fatalf("B allowed the agent revoked on A %d times while its SpiceDB node was down", bAllowsRevoked)
	}
	if bErrors == 0 {
		t.Fatalf("B never failed while its SpiceDB node was down (%d allows of the kept grant)", bAllowsKept)
	}
	code, health := b.Do("GET", "/healthz", "", nil)
	if code != http.StatusServiceUnavailable {
		t.Fatalf("B's /healthz answered %d %v while its node was down", code, health)
	}
	t.Logf("node B killed: B's first 503 %v after the kill, %d cached allows of the kept grant before it noticed, %d errors, %d allows of the revoked agent within the 1 s bound and 0 after",
		firstError.Round(time.Millisecond), bAllowsKept, bErrors, bAllowsRevokedInBound)

	// The node back on the same address: B recovers with no restart.
	nodes[1].Start()
	restartedAt := time.Now()
	deadline := time.Now().Add(30 * time.Second)
	for {
		code, out := b.Do("POST", "/v1/check", service.RoleChecker, keep)
		if code == http.StatusOK && out["allowed"] == true {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("B did not recover within 30s of its node's restart: %d %v", code, out)
		}
		time.Sleep(20 * time.Millisecond)
	}
	answering := time.Since(restartedAt)
	if out := b.Check(revoked["subject"].(string), "read", "repo:acme/api", nil); out["allowed"] != false || out["reason_code"] != "AGENT_SUSPENDED" {
		t.Fatalf("B after recovery: %v, want AGENT_SUSPENDED", out)
	}
	waitCached(t, b, keep)
	t.Logf("node B restarted: B answering %v later, its cache serving again %v later", answering.Round(time.Millisecond), time.Since(restartedAt).Round(time.Millisecond))
	// And its watch follows the others' writes again.
	agent, _, check := provision(a)
	waitCached(t, b, check)
	c.OK("POST", "/v1/agents/"+agent+":suspend", service.RoleOperator, nil)
	deadline = time.Now().Add(10 * time.Second)
	for {
		if out := b.Check(check["subject"].(string), "read", "repo:acme/api", nil); out["allowed"] == false {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("after its node's restart, B's cache kept an allow revoked on C")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestRemoteSpiceDBConnection: a remote SpiceDB over TLS verified with
// --spicedb-ca works; a wrong key, or a CA the node's certificate does not
// chain to, ends startup with a configuration error naming the flag.
func TestRemoteSpiceDBConnection(t *testing.T) {
	uri := testenv.SpiceDBDatabase(t)
	ca := testenv.NewCA(t, "spicedb")
	node := testenv.StartSpiceDB(t, uri, ca.Issue(t, "spicedb", true, []string{"localhost"}))
	cfg := server.Config{SpiceDBEndpoint: node.Addr, SpiceDBToken: node.Key, SpiceDBCAFile: ca.File}
	r := testenv.Start(t, cfg)
	r.OK("POST", "/v1/relationships:write", service.RoleAdmin, map[string]any{"updates": []map[string]string{
		{"operation": "TOUCH", "relationship": "repo:acme/api#reader@user:alice"},
	}})
	if out := r.Check("user:alice", "read", "repo:acme/api", nil); out["allowed"] != true {
		t.Fatalf("over TLS: %v", out)
	}

	for _, tc := range []struct {
		name string
		cfg  server.Config
		want string
	}{
		{"wrong key", server.Config{SpiceDBEndpoint: node.Addr, SpiceDBToken: "not-the-key", SpiceDBCAFile: ca.File}, "--spicedb-token"},
		{"another CA", server.Config{SpiceDBEndpoint: node.Addr, SpiceDBToken: node.Key, SpiceDBCAFile: testenv.NewCA(t, "other").File, StartTimeout: 3 * time.Second}, "certificate"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.cfg.KeysFile = testenv.KeysFile(t)
			tc.cfg.GRPCAddr, tc.cfg.HTTPAddr = "127.0.0.1:0", "127.0.0.1:0"
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			srv, err := tc.cfg.Complete(ctx)
			if err == nil {
				srv.Close()
				t.Fatal("started")
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %q does not mention %s", err, tc.want)
			}
			var ce *server.ConfigError
			if tc.want == "--spicedb-token" && !errors.As(err, &ce) {
				t.Fatalf("a refused key is not a configuration error (exit status 2): %v", err)
			}
			t.Log(err)
		})
	}
}
