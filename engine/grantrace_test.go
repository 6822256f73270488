package engine_test

import (
	"context"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"google.golang.org/grpc"

	"github.com/mandate-dev/mandate/engine"
)

// TestConcurrentGrantReplacement: 20 racing creations of one grant (same
// holder, permission and resource) leave exactly one grant that reads as
// active; every other id reads as not found, with no orphan record.
func TestConcurrentGrantReplacement(t *testing.T) {
	for _, b := range backends() {
		t.Run(b.name, func(t *testing.T) {
			e, _ := b.engine(t, engine.Config{})
			w := &world{t: t, e: e}
			w.admin("repo:acme/api#reader@user:alice")
			a := w.agent(w.task("user:alice", "1h"), nil, "1h")
			const racers = 20
			ids := make([]string, racers)
			var wg sync.WaitGroup
			for i := range ids {
				wg.Add(1)
				go func(i int) {
					defer wg.Done()
					g, err := w.grant(ag(a), "read", "repo:acme/api", "15m")
					if err != nil {
						t.Errorf("racer %d: %v", i, err)
						return
					}
					ids[i] = g.ID
				}(i)
			}
			wg.Wait()
			active := 0
			for _, id := range ids {
				g, _, err := e.GetGrant(context.Background(), id)
				var ee *engine.Error
				switch {
				case err == nil && g.Status == engine.StatusActive:
					active++
				case asError(err, &ee) && ee.Kind == engine.KindNotFound:
				default:
					t.Errorf("grant %s: %+v %v, want active or not found", id, g, err)
				}
			}
			if active != 1 {
				t.Fatalf("%d of %d racing grants read as active, want exactly 1", active, racers)
			}
			w.expect(ag(a), "read", "repo:acme/api", engine.ReasonAllowed)
		})
	}
}

// TestDeleteGrantSparesItsReplacement: a replacement that lands between
// DeleteGrant's read and its write is not deleted in the old grant's name.
func TestDeleteGrantSparesItsReplacement(t *testing.T) {
	var armed atomic.Bool
	var hook func()
	between := func(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
		if strings.HasSuffix(method, "/WriteRelationships") && armed.CompareAndSwap(true, false) {
			hook()
		}
		return invoker(ctx, method, req, reply, cc, opts...)
	}
	b := backends()[0]
	setup, srv := b.engine(t, engine.Config{})
	w := &world{t: t, e: setup}
	w.admin("repo:acme/api#reader@user:alice")
	a := w.agent(w.task("user:alice", "1h"), nil, "1h")
	old := w.mustGrant(ag(a), "read", "repo:acme/api", "15m")

	conn, err := srv.Dial(grpc.WithChainUnaryInterceptor(between))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	deleter, err := engine.New(context.Background(), engine.Config{}, engine.NewClient(conn), nil)
	if err != nil {
		t.Fatal(err)
	}
	var replacement *engine.Grant
	hook = func() { replacement = w.mustGrant(ag(a), "read", "repo:acme/api", "15m") }
	armed.Store(true)
	_, err = deleter.DeleteGrant(context.Background(), old.ID)
	var ee *engine.Error
	if !asError(err, &ee) || ee.Kind != engine.KindNotFound {
		t.Fatalf("deleting a grant replaced meanwhile: %v, want not found", err)
	}
	if replacement == nil {
		t.Fatal("the replacement was never written")
	}
	if g, _, err := setup.GetGrant(context.Background(), replacement.ID); err != nil || g.Status != engine.StatusActive {
		t.Fatalf("the replacement after the old grant's delete: %+v %v, want active", g, err)
	}
	w.expect(ag(a), "read", "repo:acme/api", engine.ReasonAllowed)
}
