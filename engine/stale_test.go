package engine_test

import (
	"context"
	"sync"
	"testing"

	v1 "github.com/authzed/authzed-go/proto/authzed/api/v1"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"

	"github.com/mandate-dev/mandate/engine"
)

// staleHead makes the next n CheckBulkPermissions calls read at an exact,
// older snapshot: what a fully consistent call gets from SpiceDB when it
// joins a call for the head revision that started before a write committed
// (SpiceDB shares one such call among concurrent requests).
type staleHead struct {
	mu    sync.Mutex
	token string
	n     int
}

func (s *staleHead) arm(token string, n int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.token, s.n = token, n
}

func (s *staleHead) unary(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
	s.mu.Lock()
	if s.n > 0 {
		at := &v1.Consistency{Requirement: &v1.Consistency_AtExactSnapshot{AtExactSnapshot: &v1.ZedToken{Token: s.token}}}
		switch r := req.(type) {
		case *v1.CheckBulkPermissionsRequest:
			r = proto.Clone(r).(*v1.CheckBulkPermissionsRequest)
			r.Consistency, req = at, r
			s.n--
		case *v1.CheckPermissionRequest:
			r = proto.Clone(r).(*v1.CheckPermissionRequest)
			r.Consistency, req = at, r
			s.n--
		}
	}
	s.mu.Unlock()
	return invoker(ctx, method, req, reply, cc, opts...)
}

// A decision never reflects a revision before a write the engine has
// acknowledged: a revoked grant is not allowed again because SpiceDB
// answered from before the revocation. The stale answer is asked again; if
// SpiceDB answers from before it again, the decision is an error.
func TestDecisionSeesAcknowledgedWrites(t *testing.T) {
	for _, b := range backends() {
		t.Run(b.name, func(t *testing.T) {
			stale := &staleHead{}
			e, d := b.engine(t, engine.Config{}, grpc.WithChainUnaryInterceptor(stale.unary))
			w := &world{t: t, e: e}
			w.admin("repo:acme/api#reader@user:alice")
			a := w.agent(w.task("user:alice", "1h"), nil, "1h")
			g := w.mustGrant(ag(a), "read", "repo:acme/api", "15m")
			before := w.expect(ag(a), "read", "repo:acme/api", engine.ReasonAllowed)
			if _, err := e.DeleteGrant(context.Background(), g.ID); err != nil {
				t.Fatal(err)
			}

			stale.arm(before.Token, 1)
			w.expect(ag(a), "read", "repo:acme/api", engine.ReasonNoGrant)
			if n := e.StaleReads(); n != 1 {
				t.Fatalf("stale reads counted %d, want 1", n)
			}

			stale.arm(before.Token, 2)
			q, err := e.ValidateQuery(context.Background(), ag(a), "read", "repo:acme/api", nil)
			if err != nil {
				t.Fatal(err)
			}
			dec, err := e.Decide(context.Background(), q)
			if dec.Allowed || kindOf(err) != engine.KindUnavailable {
				t.Fatalf("SpiceDB answered twice from before the revocation: allowed=%v err=%v, want an Unavailable error", dec.Allowed, err)
			}

			// Another replica's revocation counts once the watch delivers
			// it (the server passes the watch's revisions to NoteWrite).
			other := engineOn(t, d, engine.Config{})
			g2 := w.mustGrant(ag(a), "read", "repo:acme/api", "15m")
			before = w.expect(ag(a), "read", "repo:acme/api", engine.ReasonAllowed)
			tok, err := other.DeleteGrant(context.Background(), g2.ID)
			if err != nil {
				t.Fatal(err)
			}
			e.NoteWrite(tok)
			stale.arm(before.Token, 1)
			w.expect(ag(a), "read", "repo:acme/api", engine.ReasonNoGrant)

			// A person's own check (and the escalation checks of grants,
			// which ask the same way) after a relationship is removed.
			w.admin("repo:acme/doc#reader@user:alice")
			before = w.expect("user:alice", "read", "repo:acme/doc", engine.ReasonAllowed)
			w.write("DELETE", "repo:acme/doc#reader@user:alice")
			stale.arm(before.Token, 1)
			w.expect("user:alice", "read", "repo:acme/doc", engine.ReasonNoPermission)
		})
	}
}
