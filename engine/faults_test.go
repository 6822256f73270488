package engine_test

import (
	"context"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/mandate-dev/mandate/engine"
	"github.com/mandate-dev/mandate/engine/embedded"
)

// faults injects failures into the engine's real connection to SpiceDB.
// Nothing is mocked: calls that are not failed reach the embedded SpiceDB.
type faults struct {
	method atomic.Value // string: the method suffix to fail, "" for none
	mode   atomic.Value // "error" or "delay"
}

func (f *faults) set(method, mode string) { f.method.Store(method); f.mode.Store(mode) }

func (f *faults) hit(ctx context.Context, method string) error {
	m, _ := f.method.Load().(string)
	if m == "" || !strings.HasSuffix(method, m) {
		return nil
	}
	if f.mode.Load() == "delay" {
		<-ctx.Done()
		return ctx.Err()
	}
	return status.Error(codes.Unavailable, "injected fault")
}

func (f *faults) unary(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
	if err := f.hit(ctx, method); err != nil {
		return err
	}
	return invoker(ctx, method, req, reply, cc, opts...)
}

func (f *faults) stream(ctx context.Context, desc *grpc.StreamDesc, cc *grpc.ClientConn, method string, streamer grpc.Streamer, opts ...grpc.CallOption) (grpc.ClientStream, error) {
	if err := f.hit(ctx, method); err != nil {
		return nil, err
	}
	return streamer(ctx, desc, cc, method, opts...)
}

// TestFailClosed: whatever part of the decision path fails, the answer is an
// Unavailable error and never an allow.
func TestFailClosed(t *testing.T) {
	f := &faults{}
	f.set("", "")
	faulty := []grpc.DialOption{grpc.WithChainUnaryInterceptor(f.unary), grpc.WithChainStreamInterceptor(f.stream)}
	// The world is built with the default call timeout, so a busy machine
	// cannot fail the setup; the checks under fault use a short one, on a
	// second engine over the same faulty connection, so a delay is cut
	// quickly. Nothing here depends on how fast the machine is.
	setup, srv := startEngine(t, embedded.Config{Engine: "memory"}, engine.Config{}, faulty...)
	w := &world{t: t, e: setup}
	conn, err := srv.Dial(faulty...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	e, err := engine.New(context.Background(), engine.Config{CallTimeout: 300 * time.Millisecond}, engine.NewClient(conn), nil)
	if err != nil {
		t.Fatalf("starting the engine under test: %v", err)
	}
	w.admin("repo:acme/api#reader@user:alice", "repo:acme/other#reader@user:alice")
	task := w.task("user:alice", "1h")
	a := w.agent(task, nil, "1h")
	sub := w.agent(task, a, "1h")
	w.mustGrant(ag(a), "read", "repo:acme/api", "15m")
	w.mustGrant(ag(sub), "read", "repo:acme/api", "15m")
	w.expect(ag(sub), "read", "repo:acme/api", engine.ReasonAllowed)

	for _, c := range []struct {
		method, mode string
		subjects     []string // the checks that use this method
	}{
		{"/CheckBulkPermissions", "error", []string{ag(a), ag(sub)}},
		{"/CheckBulkPermissions", "delay", []string{ag(a), ag(sub)}},
		{"/ReadRelationships", "error", []string{ag(a), ag(sub)}},
		{"/ReadRelationships", "delay", []string{ag(a), ag(sub)}},
		{"/CheckPermission", "error", []string{"user:alice"}},
		{"/CheckPermission", "delay", []string{"user:alice"}},
	} {
		t.Run(c.method+"/"+c.mode, func(t *testing.T) {
			f.set(c.method, c.mode)
			defer f.set("", "")
			for _, subj := range c.subjects {
				q, err := e.ValidateQuery(context.Background(), subj, "read", "repo:acme/api", nil)
				if err != nil {
					t.Fatal(err)
				}
				start := time.Now()
				d, err := e.Decide(context.Background(), q)
				if d.Allowed || err == nil {
					t.Fatalf("%s: allowed=%v err=%v while %s fails (%s); want an error and no allow", subj, d.Allowed, err, c.method, c.mode)
				}
				var ee *engine.Error
				if ok := asError(err, &ee); !ok || ee.Kind != engine.KindUnavailable {
					t.Fatalf("%s: error %v, want KindUnavailable", subj, err)
				}
				if time.Since(start) > 2*time.Second {
					t.Fatalf("the call timeout did not bound the check: %v", time.Since(start))
				}
			}
		})
	}
	// Mutations fail whole, too: a grant refused half-way leaves nothing behind.
	f.set("/WriteRelationships", "error")
	if _, err := w.grant(ag(a), "read", "repo:acme/other", "5m"); kindOf(err) != engine.KindUnavailable {
		t.Fatalf("grant while writes fail: %v", err)
	}
	f.set("", "")
	w.expect(ag(a), "read", "repo:acme/other", engine.ReasonNoGrant)
	w.expect(ag(sub), "read", "repo:acme/api", engine.ReasonAllowed)
}

func asError(err error, target **engine.Error) bool {
	e, ok := err.(*engine.Error)
	if ok {
		*target = e
	}
	return ok
}
