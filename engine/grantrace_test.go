package engine_test

import (
	"context"
	"errors"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	v1 "github.com/authzed/authzed-go/proto/authzed/api/v1"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/mandate-dev/mandate/engine"
)

// TestConcurrentGrantReplacement: 20 racing creations of one grant (same
// holder, permission and resource), half through a second engine on the
// same SpiceDB (another replica, which the first one's turn-taking cannot
// see), all succeed and leave exactly one grant that reads as active; every
// other id reads as not found, with no orphan record. On Postgres
// (MANDATE_TEST_POSTGRES_DSN) run it repeatedly: go test ./engine -run
// TestConcurrentGrantReplacement -count=20.
func TestConcurrentGrantReplacement(t *testing.T) {
	for _, b := range backends() {
		t.Run(b.name, func(t *testing.T) {
			// The racers queue behind one another on each engine, and the
			// two engines' writes conflict on Postgres: give the last of them
			// room on a busy machine. Latency is the bench's to measure.
			cfg := engine.Config{CallTimeout: 15 * time.Second}
			e, srv := b.engine(t, cfg)
			w := &world{t: t, e: e}
			conn, err := srv.Dial()
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = conn.Close() })
			replica, err := engine.New(context.Background(), cfg, engine.NewClient(conn), nil)
			if err != nil {
				t.Fatal(err)
			}
			worlds := []*world{w, {t: t, e: replica}}
			w.admin("repo:acme/api#reader@user:alice")
			a := w.agent(w.task("user:alice", "1h"), nil, "1h")
			const racers = 20
			ids := make([]string, racers)
			var wg sync.WaitGroup
			var slowest atomic.Int64
			for i := range ids {
				wg.Add(1)
				go func(i int) {
					defer wg.Done()
					start := time.Now()
					g, err := worlds[i%2].grant(ag(a), "read", "repo:acme/api", "15m")
					if d := int64(time.Since(start)); d > slowest.Load() {
						slowest.Store(d)
					}
					if err != nil {
						t.Errorf("racer %d: %v (%v)", i, err, errors.Unwrap(err))
						return
					}
					ids[i] = g.ID
				}(i)
			}
			wg.Wait()
			t.Logf("slowest racer: %v", time.Duration(slowest.Load()))
			if t.Failed() {
				return
			}
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

// TestDeadlineInsideSpiceDBIsUnavailable: a deadline that passes inside
// SpiceDB and comes back as Internal (its consistency middleware says
// "context deadline exceeded") is a 503, never a 500.
func TestDeadlineInsideSpiceDBIsUnavailable(t *testing.T) {
	slow := func(ctx context.Context, desc *grpc.StreamDesc, cc *grpc.ClientConn, method string, streamer grpc.Streamer, opts ...grpc.CallOption) (grpc.ClientStream, error) {
		if strings.HasSuffix(method, "/ReadRelationships") {
			<-ctx.Done()
			return nil, status.Error(codes.Internal, "unexpected consistency middleware error: context deadline exceeded")
		}
		return streamer(ctx, desc, cc, method, opts...)
	}
	setup, srv := backends()[0].engine(t, engine.Config{})
	w := &world{t: t, e: setup}
	w.admin("repo:acme/api#reader@user:alice")
	a := w.agent(w.task("user:alice", "1h"), nil, "1h")
	g := w.mustGrant(ag(a), "read", "repo:acme/api", "15m")
	conn, err := srv.Dial(grpc.WithChainStreamInterceptor(slow))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	e, err := engine.New(context.Background(), engine.Config{CallTimeout: 100 * time.Millisecond}, engine.NewClient(conn), nil)
	if err != nil {
		t.Fatal(err)
	}
	for name, call := range map[string]func() error{
		"GetGrant": func() error { _, _, err := e.GetGrant(context.Background(), g.ID); return err },
		"CreateGrant": func() error {
			_, _, err := e.CreateGrant(context.Background(), engine.CreateGrantInput{Holder: ag(a), Permission: "read", Resource: "repo:acme/api", TTL: "15m"})
			return err
		},
		"GetAgent": func() error { _, _, err := e.GetAgent(context.Background(), a.ID); return err },
	} {
		var ee *engine.Error
		if err := call(); !asError(err, &ee) || ee.Kind != engine.KindUnavailable {
			t.Errorf("%s with SpiceDB past its deadline: %v, want unavailable", name, err)
		}
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

// TestGrantWriteRefusedWithoutChange: grant writes refused by SpiceDB as a
// race would refuse them (a precondition failure, a serialization failure,
// a colliding TOUCH), while the slot reads unchanged and the holder is
// fine, are retried until the grant is written; they are never reported as
// the holder being gone, nor as an internal error. A holder that really is
// gone is still reported as such.
func TestGrantWriteRefusedWithoutChange(t *testing.T) {
	refusals := []error{
		preconditionRefusal(t),
		status.Error(codes.Aborted, "unable to write relationships due to a serialization error"),
		status.Error(codes.AlreadyExists, "could not CREATE relationship, as it already existed"),
		preconditionRefusal(t),
		preconditionRefusal(t),
	}
	var pending atomic.Int32
	var onRefuse func()
	refuse := func(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
		if strings.HasSuffix(method, "/WriteRelationships") {
			if n := pending.Add(-1); n >= 0 {
				if onRefuse != nil {
					onRefuse()
				}
				return refusals[len(refusals)-1-int(n)]
			}
		}
		return invoker(ctx, method, req, reply, cc, opts...)
	}
	setup, srv := backends()[0].engine(t, engine.Config{})
	w := &world{t: t, e: setup}
	w.admin("repo:acme/api#reader@user:alice")
	a := w.agent(w.task("user:alice", "1h"), nil, "1h")
	conn, err := srv.Dial(grpc.WithChainUnaryInterceptor(refuse))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	e, err := engine.New(context.Background(), engine.Config{}, engine.NewClient(conn), nil)
	if err != nil {
		t.Fatal(err)
	}
	grant := func() (*engine.Grant, error) {
		g, _, err := e.CreateGrant(context.Background(), engine.CreateGrantInput{Holder: ag(a), Permission: "read", Resource: "repo:acme/api", TTL: "15m"})
		return g, err
	}
	pending.Store(int32(len(refusals)))
	g, err := grant()
	if err != nil {
		t.Fatalf("a grant refused %d times by races that changed nothing: %v, want it written", len(refusals), err)
	}
	if got, _, err := setup.GetGrant(context.Background(), g.ID); err != nil || got.Status != engine.StatusActive {
		t.Fatalf("the grant after the refusals: %+v %v", got, err)
	}

	// The agent is revoked while its grant is being written: the refusal
	// is the holder's precondition, and says so.
	onRefuse = func() {
		if _, _, err := setup.RevokeAgent(context.Background(), a.ID); err != nil {
			t.Error(err)
		}
	}
	pending.Store(1)
	var ee *engine.Error
	if _, err := grant(); !asError(err, &ee) || ee.Kind != engine.KindFailedPrecondition || ee.Field != "holder" {
		t.Fatalf("a grant to a revoked agent: %v, want a failed precondition on holder", err)
	}
}

// preconditionRefusal is SpiceDB's refusal of a write by its preconditions.
func preconditionRefusal(t *testing.T) error {
	st, err := status.New(codes.FailedPrecondition, "unable to satisfy write precondition").WithDetails(&errdetails.ErrorInfo{
		Reason: v1.ErrorReason_ERROR_REASON_WRITE_OR_DELETE_PRECONDITION_FAILURE.String(), Domain: "authzed.com"})
	if err != nil {
		t.Fatal(err)
	}
	return st.Err()
}
