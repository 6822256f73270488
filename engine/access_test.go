package engine_test

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"

	"github.com/mandate-dev/mandate/engine"
	"github.com/mandate-dev/mandate/engine/embedded"
)

func (w *world) file(agent, perm, res, ttl string) (*engine.AccessRequest, error) {
	r, _, err := w.e.FileAccessRequest(context.Background(), engine.FileAccessRequestInput{
		Agent: agent, Permission: perm, Resource: res, TTL: ttl, Reason: "the deploy failed without it", FiledBy: "runtime",
	})
	return r, err
}

func (w *world) mustFile(agent, perm, res, ttl string) *engine.AccessRequest {
	w.t.Helper()
	r, err := w.file(agent, perm, res, ttl)
	if err != nil {
		w.t.Fatalf("filing %s %s on %s: %v", agent, perm, res, err)
	}
	return r
}

func (w *world) request(id string) *engine.AccessRequest {
	w.t.Helper()
	r, _, _, err := w.e.GetAccessRequest(context.Background(), id)
	if err != nil {
		w.t.Fatalf("reading %s: %v", id, err)
	}
	return r
}

var byAdmin = engine.Answer{By: "root", As: "admin", Reason: "fine"}

// wantErr fails unless err is an engine error of kind, naming field (when
// not empty) and with reason (when not empty).
func wantErr(t *testing.T, what string, err error, kind engine.Kind, field, reason string) {
	t.Helper()
	var ee *engine.Error
	if !errors.As(err, &ee) || ee.Kind != kind || field != "" && ee.Field != field || reason != "" && ee.Reason != reason {
		t.Fatalf("%s: %v (%+v), want kind %d field %q reason %q", what, err, ee, kind, field, reason)
	}
}

// TestAccessRequestFilingChecks: a request is refused when filed if the
// grant it asks for would be: the human lacks the permission, a sub-agent's
// parent lacks it, the ttl is above the grant maximum, the agent is not
// active; and bad input names its field.
func TestAccessRequestFilingChecks(t *testing.T) {
	e, _ := backends()[0].engine(t, engine.Config{MaxGrantTTL: time.Hour})
	w := &world{t: t, e: e}
	w.admin("repo:acme/api#reader@user:alice", "repo:acme/api#writer@user:alice")
	task := w.task("user:alice", "2h")
	parent := w.agent(task, nil, "1h")
	child := w.agent(task, parent, "1h")

	_, err := w.file(ag(parent), "deploy", "environment:prod", "10m")
	wantErr(t, "human lacks deploy", err, engine.KindPermissionDenied, "", engine.ReasonEscalation)
	_, err = w.file(ag(child), "read", "repo:acme/api", "10m")
	wantErr(t, "parent lacks read", err, engine.KindPermissionDenied, "", engine.ReasonEscalation)
	_, err = w.file(ag(parent), "read", "repo:acme/api", "2h")
	wantErr(t, "ttl above the grant maximum", err, engine.KindInvalidArgument, "ttl", "")

	// Once the parent holds it, the child may ask.
	w.mustGrant(ag(parent), "read", "repo:acme/api", "30m")
	r := w.mustFile(ag(child), "read", "repo:acme/api", "10m")
	if r.State != engine.RequestPending || r.Human.String() != "user:alice" || r.Task.ID != task.ID || len(r.Chain) != 3 || r.FiledBy != "runtime" {
		t.Fatalf("filed request: %+v", r)
	}
	if got := w.request(r.ID); got.State != engine.RequestPending || got.Reason != "the deploy failed without it" || got.TTL != "10m" ||
		got.Resource.String() != "repo:acme/api" || got.Permission != "read" || !got.ExpiresAt.Equal(r.ExpiresAt) {
		t.Fatalf("read back: %+v", got)
	}

	bad := []struct {
		in    engine.FileAccessRequestInput
		field string
		kind  engine.Kind
	}{
		{engine.FileAccessRequestInput{Permission: "read", Resource: "repo:acme/api", TTL: "1m", Reason: "x"}, "agent", engine.KindInvalidArgument},
		{engine.FileAccessRequestInput{Agent: "task:" + task.ID, Permission: "read", Resource: "repo:acme/api", TTL: "1m", Reason: "x"}, "agent", engine.KindInvalidArgument},
		{engine.FileAccessRequestInput{Agent: "agent:agt_nobody", Permission: "read", Resource: "repo:acme/api", TTL: "1m", Reason: "x"}, "agent", engine.KindInvalidArgument},
		{engine.FileAccessRequestInput{Agent: ag(parent), Resource: "repo:acme/api", TTL: "1m", Reason: "x"}, "permission", engine.KindInvalidArgument},
		{engine.FileAccessRequestInput{Agent: ag(parent), Permission: "read", Resource: "repo", TTL: "1m", Reason: "x"}, "resource", engine.KindInvalidArgument},
		{engine.FileAccessRequestInput{Agent: ag(parent), Permission: "read", Resource: "nosuchtype:x", TTL: "1m", Reason: "x"}, "resource", engine.KindInvalidArgument},
		{engine.FileAccessRequestInput{Agent: ag(parent), Permission: "fly", Resource: "repo:acme/api", TTL: "1m", Reason: "x"}, "permission", engine.KindInvalidArgument},
		{engine.FileAccessRequestInput{Agent: ag(parent), Permission: "read", Resource: "repo:acme/api", TTL: "soon", Reason: "x"}, "ttl", engine.KindInvalidArgument},
		{engine.FileAccessRequestInput{Agent: ag(parent), Permission: "read", Resource: "repo:acme/api", TTL: "1m"}, "reason", engine.KindInvalidArgument},
		{engine.FileAccessRequestInput{Agent: ag(parent), Permission: "read", Resource: "agent:" + child.ID, TTL: "1m", Reason: "x"}, "resource", engine.KindInvalidArgument},
	}
	for _, b := range bad {
		_, _, err := e.FileAccessRequest(context.Background(), b.in)
		wantErr(t, "filing "+b.field+" "+b.in.Agent+" "+b.in.Resource, err, b.kind, b.field, "")
	}

	// A suspended agent cannot ask.
	if _, _, err := e.SuspendAgent(context.Background(), parent.ID); err != nil {
		t.Fatal(err)
	}
	_, err = w.file(ag(parent), "read", "repo:acme/api", "10m")
	wantErr(t, "suspended agent", err, engine.KindFailedPrecondition, "agent", "")
}

// TestAccessRequestApproveAndDecline: an approval creates the grant, cut to
// the agent's life, and the agent's next check allows at once; a declined
// request grants nothing; neither can be answered again.
func TestAccessRequestApproveAndDecline(t *testing.T) {
	for _, b := range backends() {
		t.Run(b.name, func(t *testing.T) {
			e, _ := b.engine(t, engine.Config{MaxGrantTTL: time.Hour})
			w := &world{t: t, e: e}
			w.admin("repo:acme/api#writer@user:alice")
			a := w.agent(w.task("user:alice", "2h"), nil, "20m")
			w.expect(ag(a), "write", "repo:acme/api", engine.ReasonNoGrant)

			r := w.mustFile(ag(a), "write", "repo:acme/api", "1h")
			refused := byAdmin
			refused.Allow = func(*engine.AccessRequest) error { return errors.New("not you") }
			if _, _, _, err := e.ApproveAccessRequest(context.Background(), r.ID, refused); err == nil || err.Error() != "not you" {
				t.Fatalf("an approval its rule refuses: %v", err)
			}
			if got := w.request(r.ID); got.State != engine.RequestPending {
				t.Fatalf("after a refused approval: %s, want pending", got.State)
			}
			got, g, _, err := e.ApproveAccessRequest(context.Background(), r.ID, byAdmin)
			if err != nil {
				t.Fatal(err)
			}
			if got.State != engine.RequestApproved || got.Grant != g.ID || got.DecidedBy != "root" || got.DecidedAs != "admin" || got.DecisionReason != "fine" {
				t.Fatalf("approved: %+v", got)
			}
			if !g.ExpiresAt.Equal(a.ExpiresAt) {
				t.Errorf("grant expires %s, want the agent's expiry %s (1h asked, 20m left)", g.ExpiresAt, a.ExpiresAt)
			}
			w.expect(ag(a), "write", "repo:acme/api", engine.ReasonAllowed)
			if rb := w.request(r.ID); rb.State != engine.RequestApproved || rb.Grant != g.ID || rb.DecidedAt.IsZero() {
				t.Fatalf("read back: %+v", rb)
			}
			_, _, _, err = e.ApproveAccessRequest(context.Background(), r.ID, byAdmin)
			wantErr(t, "approving twice", err, engine.KindFailedPrecondition, "id", engine.ReasonConflict)

			w.admin("repo:acme/web#reader@user:alice")
			d := w.mustFile(ag(a), "read", "repo:acme/web", "10m")
			got, _, err = e.DeclineAccessRequest(context.Background(), d.ID, engine.Answer{By: "root", As: "admin", Reason: "not this week"})
			if err != nil || got.State != engine.RequestDeclined || got.DecisionReason != "not this week" {
				t.Fatalf("declined: %+v %v", got, err)
			}
			w.expect(ag(a), "read", "repo:acme/web", engine.ReasonNoGrant)
			_, _, _, err = e.ApproveAccessRequest(context.Background(), d.ID, byAdmin)
			wantErr(t, "approving a declined request", err, engine.KindFailedPrecondition, "id", engine.ReasonConflict)
			_, _, err = e.DeclineAccessRequest(context.Background(), r.ID, byAdmin)
			wantErr(t, "declining an approved request", err, engine.KindFailedPrecondition, "id", engine.ReasonConflict)
			_, _, _, err = e.ApproveAccessRequest(context.Background(), "acr_nothere", byAdmin)
			wantErr(t, "approving an unknown request", err, engine.KindNotFound, "id", "")
		})
	}
}

// TestAccessRequestApprovalRechecksEscalation: a human who lost the
// permission after the request was filed cannot approve it into a grant.
func TestAccessRequestApprovalRechecksEscalation(t *testing.T) {
	e, _ := backends()[0].engine(t, engine.Config{})
	w := &world{t: t, e: e}
	w.admin("repo:acme/api#writer@user:alice")
	a := w.agent(w.task("user:alice", "2h"), nil, "1h")
	r := w.mustFile(ag(a), "write", "repo:acme/api", "10m")
	w.write("DELETE", "repo:acme/api#writer@user:alice")
	_, _, _, err := e.ApproveAccessRequest(context.Background(), r.ID, byAdmin)
	wantErr(t, "approving what the human no longer holds", err, engine.KindPermissionDenied, "", engine.ReasonEscalation)
	if got := w.request(r.ID); got.State != engine.RequestPending {
		t.Fatalf("after a refused approval: %s, want pending", got.State)
	}
	w.expect(ag(a), "write", "repo:acme/api", engine.ReasonNoGrant)
}

// TestAccessRequestExpiry: unanswered past --access-request-ttl, a request
// reads as expired by the engine's clock, is marked so once, and can no
// longer be approved or declined.
func TestAccessRequestExpiry(t *testing.T) {
	clk := &clockAt{t: time.Date(2026, 12, 1, 9, 0, 0, 0, time.UTC)}
	e, _ := backends()[0].engine(t, engine.Config{Now: clk.now, AccessRequestTTL: 15 * time.Minute})
	w := &world{t: t, e: e}
	w.admin("repo:acme/api#writer@user:alice")
	a := w.agent(w.task("user:alice", "2h"), nil, "1h")
	r := w.mustFile(ag(a), "write", "repo:acme/api", "10m")
	if want := clk.t.Add(15 * time.Minute); !r.ExpiresAt.Equal(want) {
		t.Fatalf("expires_at %s, want %s", r.ExpiresAt, want)
	}
	clk.t = clk.t.Add(14 * time.Minute)
	if got := w.request(r.ID); got.State != engine.RequestPending {
		t.Fatalf("a minute before expiry: %s", got.State)
	}
	clk.t = clk.t.Add(time.Minute)
	got, _, expiredNow, err := e.GetAccessRequest(context.Background(), r.ID)
	if err != nil || got.State != engine.RequestExpired || !expiredNow {
		t.Fatalf("at expiry: %+v expiredNow=%v %v, want expired, marked now", got, expiredNow, err)
	}
	if _, _, again, _ := e.GetAccessRequest(context.Background(), r.ID); again {
		t.Fatal("the expiry was marked twice")
	}
	_, _, _, err = e.ApproveAccessRequest(context.Background(), r.ID, byAdmin)
	wantErr(t, "approving an expired request", err, engine.KindFailedPrecondition, "id", engine.ReasonConflict)
	_, _, err = e.DeclineAccessRequest(context.Background(), r.ID, byAdmin)
	wantErr(t, "declining an expired request", err, engine.KindFailedPrecondition, "id", engine.ReasonConflict)
	w.expect(ag(a), "write", "repo:acme/api", engine.ReasonNoGrant)

	// Expired but never read: the approval refuses it all the same.
	r2 := w.mustFile(ag(a), "write", "repo:acme/api", "10m")
	clk.t = clk.t.Add(16 * time.Minute)
	_, _, _, err = e.ApproveAccessRequest(context.Background(), r2.ID, byAdmin)
	wantErr(t, "approving a request whose time is up", err, engine.KindFailedPrecondition, "id", engine.ReasonConflict)
	w.expect(ag(a), "write", "repo:acme/api", engine.ReasonNoGrant)
}

// TestAccessRequestRacingApprovals: 20 racing approvals (and declines) of
// one request, half through a second engine on the same SpiceDB (another
// replica), make exactly one answer and at most one grant; every other
// gets the conflict. On memory and on Postgres.
func TestAccessRequestRacingApprovals(t *testing.T) {
	for _, b := range backends() {
		t.Run(b.name, func(t *testing.T) {
			// Room for the last racer on a busy machine; latency is the bench's to measure.
			cfg := engine.Config{CallTimeout: 15 * time.Second}
			e, srv := b.engine(t, cfg)
			conn, err := srv.Dial()
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = conn.Close() })
			replica, err := engine.New(context.Background(), cfg, engine.NewClient(conn), nil)
			if err != nil {
				t.Fatal(err)
			}
			engines := []*engine.Engine{e, replica}
			w := &world{t: t, e: e}
			w.admin("repo:acme/api#writer@user:alice")
			a := w.agent(w.task("user:alice", "2h"), nil, "1h")
			r := w.mustFile(ag(a), "write", "repo:acme/api", "10m")
			const racers = 20
			var wg sync.WaitGroup
			var mu sync.Mutex
			var grants []string
			conflicts := 0
			start := make(chan struct{})
			for i := 0; i < racers; i++ {
				wg.Add(1)
				go func(i int) {
					defer wg.Done()
					<-start
					var err error
					on := engines[i%2]
					if i%5 == 4 {
						_, _, err = on.DeclineAccessRequest(context.Background(), r.ID, byAdmin)
					} else {
						var g *engine.Grant
						_, g, _, err = on.ApproveAccessRequest(context.Background(), r.ID, byAdmin)
						if err == nil {
							mu.Lock()
							grants = append(grants, g.ID)
							mu.Unlock()
						}
					}
					var ee *engine.Error
					if err != nil {
						if !errors.As(err, &ee) || ee.Reason != engine.ReasonConflict {
							t.Errorf("racer %d: %v, want an answer or the conflict", i, err)
							return
						}
						mu.Lock()
						conflicts++
						mu.Unlock()
					}
				}(i)
			}
			close(start)
			wg.Wait()
			if conflicts != racers-1 {
				t.Fatalf("%d conflicts of %d racers, want %d: exactly one answer", conflicts, racers, racers-1)
			}
			got := w.request(r.ID)
			held, err := e.GrantsHeldBy(context.Background(), []engine.Ref{{Type: "agent", ID: a.ID}})
			if err != nil {
				t.Fatal(err)
			}
			switch got.State {
			case engine.RequestApproved:
				if len(grants) != 1 || got.Grant != grants[0] || len(held) != 1 || held[0].ID != grants[0] {
					t.Fatalf("approved once, but grants %v, request's grant %s, held %d", grants, got.Grant, len(held))
				}
				w.expect(ag(a), "write", "repo:acme/api", engine.ReasonAllowed)
			case engine.RequestDeclined:
				if len(grants) != 0 || len(held) != 0 {
					t.Fatalf("declined, yet grants %v held %d", grants, len(held))
				}
			default:
				t.Fatalf("after the race: %s", got.State)
			}
		})
	}
}

// TestAccessRequestWaitWakes: a long poll returns as soon as the request is
// answered, and a long poll on a pending request returns it pending when
// its wait is over.
func TestAccessRequestWaitWakes(t *testing.T) {
	e, _ := backends()[0].engine(t, engine.Config{})
	w := &world{t: t, e: e}
	w.admin("repo:acme/api#writer@user:alice")
	a := w.agent(w.task("user:alice", "2h"), nil, "1h")
	r := w.mustFile(ag(a), "write", "repo:acme/api", "10m")

	got, _, _, err := e.WaitAccessRequest(context.Background(), r.ID, 100*time.Millisecond)
	if err != nil || got.State != engine.RequestPending {
		t.Fatalf("short wait: %+v %v", got, err)
	}
	done := make(chan *engine.AccessRequest, 1)
	go func() {
		got, _, _, err := e.WaitAccessRequest(context.Background(), r.ID, 50*time.Second)
		if err != nil {
			t.Error(err)
		}
		done <- got
	}()
	if _, _, _, err := e.ApproveAccessRequest(context.Background(), r.ID, byAdmin); err != nil {
		t.Fatal(err)
	}
	select {
	case got := <-done:
		if got == nil || got.State != engine.RequestApproved {
			t.Fatalf("the long poll returned %+v", got)
		}
	case <-time.After(45 * time.Second):
		t.Fatal("the long poll did not return after the approval")
	}
	for _, bad := range []time.Duration{-time.Second, engine.MaxAccessRequestWait + time.Second} {
		_, _, _, err := e.WaitAccessRequest(context.Background(), r.ID, bad)
		wantErr(t, "wait "+bad.String(), err, engine.KindInvalidArgument, "wait", "")
	}
}

// TestListAccessRequests: filters by human, agent and state, newest first,
// page by page.
func TestListAccessRequests(t *testing.T) {
	clk := &clockAt{t: time.Date(2026, 12, 1, 9, 0, 0, 0, time.UTC)}
	e, _ := backends()[0].engine(t, engine.Config{Now: clk.now})
	w := &world{t: t, e: e}
	w.admin("repo:acme/api#writer@user:alice", "repo:acme/api#reader@user:alice", "repo:acme/api#reader@user:bob")
	a := w.agent(w.task("user:alice", "2h"), nil, "1h")
	b := w.agent(w.task("user:bob", "2h"), nil, "1h")
	var ids []string
	for _, x := range []struct{ agent, perm, ttl string }{{ag(a), "read", "5m"}, {ag(a), "write", "5m"}, {ag(b), "read", "5m"}, {ag(a), "read", "6m"}} {
		clk.t = clk.t.Add(time.Second)
		ids = append(ids, w.mustFile(x.agent, x.perm, "repo:acme/api", x.ttl).ID)
	}
	if _, _, err := e.DeclineAccessRequest(context.Background(), ids[0], byAdmin); err != nil {
		t.Fatal(err)
	}
	list := func(f engine.AccessRequestFilter, size int) []string {
		t.Helper()
		var out []string
		after := ""
		for {
			page, next, _, err := e.ListAccessRequests(context.Background(), f, after, size)
			if err != nil {
				t.Fatal(err)
			}
			for _, r := range page {
				out = append(out, r.ID)
			}
			if next == "" {
				return out
			}
			after = next
		}
	}
	eq := func(what string, got, want []string) {
		t.Helper()
		if len(got) != len(want) {
			t.Fatalf("%s: %v, want %v", what, got, want)
		}
		for i := range got {
			if got[i] != want[i] {
				t.Fatalf("%s: %v, want %v", what, got, want)
			}
		}
	}
	eq("all, newest first", list(engine.AccessRequestFilter{}, 1), []string{ids[3], ids[2], ids[1], ids[0]})
	eq("alice's", list(engine.AccessRequestFilter{Human: "user:alice"}, 2), []string{ids[3], ids[1], ids[0]})
	eq("bob's agent", list(engine.AccessRequestFilter{Agent: ag(b)}, 10), []string{ids[2]})
	eq("alice's pending", list(engine.AccessRequestFilter{Human: "user:alice", State: engine.RequestPending}, 1), []string{ids[3], ids[1]})
	eq("declined", list(engine.AccessRequestFilter{State: engine.RequestDeclined}, 10), []string{ids[0]})
	clk.t = clk.t.Add(time.Hour)
	_, _, expired, err := e.ListAccessRequests(context.Background(), engine.AccessRequestFilter{}, "", 10)
	if err != nil || len(expired) != 3 {
		t.Fatalf("listing after an hour marked %d expired (%v), want 3", len(expired), err)
	}
	eq("expired", list(engine.AccessRequestFilter{State: engine.RequestExpired}, 10), []string{ids[3], ids[2], ids[1]})
	for _, bad := range []struct {
		f     engine.AccessRequestFilter
		after string
		field string
	}{
		{engine.AccessRequestFilter{Human: "agent:x"}, "", "human"},
		{engine.AccessRequestFilter{Agent: "user:x"}, "", "agent"},
		{engine.AccessRequestFilter{State: "open"}, "", "state"},
		{engine.AccessRequestFilter{}, "garbage", "page_token"},
	} {
		_, _, _, err := e.ListAccessRequests(context.Background(), bad.f, bad.after, 10)
		wantErr(t, "listing with a bad "+bad.field, err, engine.KindInvalidArgument, bad.field, "")
	}
}

// TestAccessRequestsFailClosed: while SpiceDB cannot be read or written, no
// request is filed, no answer lands and no grant appears; the request is
// still pending afterwards and can be approved once SpiceDB is back.
func TestAccessRequestsFailClosed(t *testing.T) {
	f := &faults{}
	f.set("", "")
	faulty := []grpc.DialOption{grpc.WithChainUnaryInterceptor(f.unary), grpc.WithChainStreamInterceptor(f.stream)}
	e, _ := startEngine(t, embedded.Config{Engine: "memory"}, engine.Config{}, faulty...)
	w := &world{t: t, e: e}
	w.admin("repo:acme/api#writer@user:alice")
	a := w.agent(w.task("user:alice", "2h"), nil, "1h")
	r := w.mustFile(ag(a), "write", "repo:acme/api", "10m")
	for _, method := range []string{"/WriteRelationships", "/ReadRelationships", "/CheckPermission"} {
		f.set(method, "error")
		if _, err := w.file(ag(a), "write", "repo:acme/api", "11m"); kindOf(err) != engine.KindUnavailable {
			t.Errorf("filing while %s fails: %v, want unavailable", method, err)
		}
		if _, _, _, err := e.ApproveAccessRequest(context.Background(), r.ID, byAdmin); kindOf(err) != engine.KindUnavailable {
			t.Errorf("approving while %s fails: %v, want unavailable", method, err)
		}
		if method != "/CheckPermission" { // a decline checks no permission
			if _, _, err := e.DeclineAccessRequest(context.Background(), r.ID, byAdmin); kindOf(err) != engine.KindUnavailable {
				t.Errorf("declining while %s fails: %v, want unavailable", method, err)
			}
		}
		f.set("", "")
		if got := w.request(r.ID); got.State != engine.RequestPending {
			t.Fatalf("after answers failed on %s: %s, want pending", method, got.State)
		}
		w.expect(ag(a), "write", "repo:acme/api", engine.ReasonNoGrant)
	}
	if _, _, _, err := e.ApproveAccessRequest(context.Background(), r.ID, byAdmin); err != nil {
		t.Fatalf("approving once SpiceDB is back: %v", err)
	}
	w.expect(ag(a), "write", "repo:acme/api", engine.ReasonAllowed)
}

// TestAccessRequestRefiled: asking again for what is already pending (same
// agent, permission, resource and ttl) returns the pending request, so the
// human is asked once; once it is answered, asking again files a new one.
func TestAccessRequestRefiled(t *testing.T) {
	e, _ := backends()[0].engine(t, engine.Config{})
	w := &world{t: t, e: e}
	w.admin("repo:acme/api#writer@user:alice")
	a := w.agent(w.task("user:alice", "2h"), nil, "1h")
	first := w.mustFile(ag(a), "write", "repo:acme/api", "10m")
	again := w.mustFile(ag(a), "write", "repo:acme/api", "10m")
	if first.Refiled || !again.Refiled || again.ID != first.ID || again.State != engine.RequestPending {
		t.Fatalf("asking twice: %+v then %+v, want the first back", first, again)
	}
	if other := w.mustFile(ag(a), "write", "repo:acme/api", "20m"); other.Refiled || other.ID == first.ID {
		t.Fatalf("another ttl is another request: %+v", other)
	}
	if _, _, err := e.DeclineAccessRequest(context.Background(), first.ID, byAdmin); err != nil {
		t.Fatal(err)
	}
	if next := w.mustFile(ag(a), "write", "repo:acme/api", "10m"); next.Refiled || next.ID == first.ID {
		t.Fatalf("asking after a decline: %+v, want a new request", next)
	}
}
