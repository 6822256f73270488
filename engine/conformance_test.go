package engine_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/mandate-dev/mandate/engine"
)

// TestConformance runs the same suite against every backend.
func TestConformance(t *testing.T) {
	for _, b := range backends() {
		t.Run(b.name, func(t *testing.T) {
			e, _ := b.engine(t, engine.Config{})
			w := &world{t: t, e: e}
			w.admin(
				"repo:acme/api#reader@user:alice",
				"repo:acme/api#writer@user:bob",
				"pipeline:acme/build#runner@user:alice",
				"registry:acme/images#pusher@user:alice",
				"environment:staging#deployer@user:alice",
			)
			for _, c := range conformanceCases {
				t.Run(c.name, func(t *testing.T) {
					w := &world{t: t, e: e}
					c.run(w)
				})
			}
		})
	}
}

type world struct {
	t testing.TB
	e *engine.Engine
}

func (w *world) admin(rels ...string) string {
	w.t.Helper()
	return w.write("TOUCH", rels...)
}

func (w *world) write(op string, rels ...string) string {
	w.t.Helper()
	var ups []engine.RelationshipUpdate
	for _, r := range rels {
		ups = append(ups, engine.RelationshipUpdate{Operation: op, Relationship: r})
	}
	tok, err := w.e.WriteRelationships(context.Background(), ups)
	if err != nil {
		w.t.Fatalf("writing %v: %v", rels, err)
	}
	return tok
}

func (w *world) task(principal, ttl string) *engine.Task {
	w.t.Helper()
	return must[*engine.Task](w.t)(w.e.CreateTask(context.Background(), engine.CreateTaskInput{Principal: principal, Description: "fix the flaky test", TTL: ttl}))
}

func (w *world) agent(task *engine.Task, parent *engine.Agent, ttl string) *engine.Agent {
	w.t.Helper()
	in := engine.CreateAgentInput{Task: "task:" + task.ID, Name: "worker", TTL: ttl}
	if parent != nil {
		in.Parent = "agent:" + parent.ID
	}
	return must[*engine.Agent](w.t)(w.e.CreateAgent(context.Background(), in))
}

func (w *world) grant(holder, perm, res, ttl string) (*engine.Grant, error) {
	g, _, err := w.e.CreateGrant(context.Background(), engine.CreateGrantInput{Holder: holder, Permission: perm, Resource: res, TTL: ttl})
	return g, err
}

func (w *world) mustGrant(holder, perm, res, ttl string) *engine.Grant {
	w.t.Helper()
	g, err := w.grant(holder, perm, res, ttl)
	if err != nil {
		w.t.Fatalf("granting %s %s on %s: %v", holder, perm, res, err)
	}
	return g
}

func (w *world) check(subject, perm, res string) engine.Decision {
	w.t.Helper()
	return w.checkCtx(subject, perm, res, nil)
}

func (w *world) expect(subject, perm, res string, reason engine.Reason) engine.Decision {
	w.t.Helper()
	d := w.check(subject, perm, res)
	if d.Reason != reason || d.Allowed != (reason == engine.ReasonAllowed) {
		w.t.Fatalf("check %s %s %s: got allowed=%v reason=%s, want %s", subject, perm, res, d.Allowed, d.Reason, reason)
	}
	return d
}

func ag(a *engine.Agent) string { return "agent:" + a.ID }

func kindOf(err error) engine.Kind {
	var e *engine.Error
	if errors.As(err, &e) {
		return e.Kind
	}
	return -1
}

var conformanceCases = []struct {
	name string
	run  func(w *world)
}{
	{"grant then allow, with chain and valid_until", func(w *world) {
		task := w.task("user:alice", "2h")
		a := w.agent(task, nil, "1h")
		w.expect(ag(a), "read", "repo:acme/api", engine.ReasonNoGrant)
		g := w.mustGrant(ag(a), "read", "repo:acme/api", "15m")
		d := w.expect(ag(a), "read", "repo:acme/api", engine.ReasonAllowed)
		if d.Principal.String() != "user:alice" || d.Task.ID != task.ID {
			w.t.Fatalf("decision names principal %s task %s", d.Principal, d.Task)
		}
		if len(d.Chain) != 2 || d.Chain[0].String() != ag(a) || d.Chain[1].String() != "user:alice" {
			w.t.Fatalf("chain = %v", d.Chain)
		}
		if !d.ValidUntil.Equal(g.ExpiresAt) {
			w.t.Fatalf("valid_until %v, want the grant's expiry %v", d.ValidUntil, g.ExpiresAt)
		}
		if len(d.Grants) != 1 || d.Grants[0] != g.ID {
			w.t.Fatalf("grants = %v, want [%s]", d.Grants, g.ID)
		}
		// Exactly this permission on exactly this resource.
		w.expect(ag(a), "write", "repo:acme/api", engine.ReasonNoGrant)
		w.expect(ag(a), "read", "repo:acme/other", engine.ReasonNoGrant)
	}},
	{"escalation refused at grant time", func(w *world) {
		task := w.task("user:alice", "2h")
		a := w.agent(task, nil, "1h")
		_, err := w.grant(ag(a), "write", "repo:acme/api", "10m")
		var ee *engine.Error
		if !errors.As(err, &ee) || ee.Kind != engine.KindPermissionDenied || ee.Reason != engine.ReasonEscalation {
			w.t.Fatalf("granting write alice lacks: got %v, want PermissionDenied ESCALATION", err)
		}
		// A sub-agent cannot get what its parent does not hold.
		sub := w.agent(task, a, "30m")
		_, err = w.grant(ag(sub), "read", "repo:acme/api", "10m")
		if !errors.As(err, &ee) || ee.Reason != engine.ReasonEscalation {
			w.t.Fatalf("granting a sub-agent what its parent lacks: got %v, want ESCALATION", err)
		}
		w.mustGrant(ag(a), "read", "repo:acme/api", "10m")
		w.mustGrant(ag(sub), "read", "repo:acme/api", "10m")
		w.expect(ag(sub), "read", "repo:acme/api", engine.ReasonAllowed)
	}},
	{"principal loses access, agent loses it on the next check", func(w *world) {
		w.admin("repo:acme/lose#reader@user:alice")
		task := w.task("user:alice", "2h")
		a := w.agent(task, nil, "1h")
		w.mustGrant(ag(a), "read", "repo:acme/lose", "15m")
		w.expect(ag(a), "read", "repo:acme/lose", engine.ReasonAllowed)
		w.write("DELETE", "repo:acme/lose#reader@user:alice")
		w.expect(ag(a), "read", "repo:acme/lose", engine.ReasonPrincipalLacksPermission)
	}},
	{"depth 3 chain, middle agent revoked", func(w *world) {
		task := w.task("user:alice", "2h")
		top := w.agent(task, nil, "1h")
		mid := w.agent(task, top, "1h")
		leaf := w.agent(task, mid, "1h")
		for _, a := range []*engine.Agent{top, mid, leaf} {
			w.mustGrant(ag(a), "read", "repo:acme/api", "15m")
		}
		d := w.expect(ag(leaf), "read", "repo:acme/api", engine.ReasonAllowed)
		if len(d.Chain) != 4 || d.Chain[1].ID != mid.ID || d.Chain[2].ID != top.ID {
			w.t.Fatalf("chain = %v", d.Chain)
		}
		revoked, _, err := w.e.RevokeAgent(context.Background(), mid.ID)
		if err != nil {
			w.t.Fatal(err)
		}
		if len(revoked) != 2 {
			w.t.Fatalf("revoking mid revoked %v, want mid and leaf", revoked)
		}
		w.expect(ag(leaf), "read", "repo:acme/api", engine.ReasonAgentRevoked)
		w.expect(ag(mid), "read", "repo:acme/api", engine.ReasonAgentRevoked)
		w.expect(ag(top), "read", "repo:acme/api", engine.ReasonAllowed)
		// Revocation is final.
		if _, _, err := w.e.ResumeAgent(context.Background(), mid.ID); kindOf(err) != engine.KindFailedPrecondition {
			w.t.Fatalf("resuming a revoked agent: %v, want FailedPrecondition", err)
		}
	}},
	{"delegator lacks permission", func(w *world) {
		task := w.task("user:alice", "2h")
		top := w.agent(task, nil, "1h")
		sub := w.agent(task, top, "1h")
		tg := w.mustGrant(ag(top), "read", "repo:acme/api", "15m")
		w.mustGrant(ag(sub), "read", "repo:acme/api", "15m")
		w.expect(ag(sub), "read", "repo:acme/api", engine.ReasonAllowed)
		if _, err := w.e.DeleteGrant(context.Background(), tg.ID); err != nil {
			w.t.Fatal(err)
		}
		w.expect(ag(sub), "read", "repo:acme/api", engine.ReasonDelegatorLacksPermission)
		w.expect(ag(top), "read", "repo:acme/api", engine.ReasonNoGrant)
	}},
	{"suspend and resume, cascading to sub-agents", func(w *world) {
		task := w.task("user:alice", "2h")
		a := w.agent(task, nil, "1h")
		sub := w.agent(task, a, "1h")
		w.mustGrant(ag(a), "read", "repo:acme/api", "15m")
		w.mustGrant(ag(sub), "read", "repo:acme/api", "15m")
		if _, _, err := w.e.SuspendAgent(context.Background(), a.ID); err != nil {
			w.t.Fatal(err)
		}
		w.expect(ag(a), "read", "repo:acme/api", engine.ReasonAgentSuspended)
		w.expect(ag(sub), "read", "repo:acme/api", engine.ReasonAgentSuspended)
		got, _, err := w.e.ResumeAgent(context.Background(), a.ID)
		if err != nil || got.Status != engine.StatusActive {
			w.t.Fatalf("resume: %v %v", got, err)
		}
		w.expect(ag(a), "read", "repo:acme/api", engine.ReasonAllowed)
		w.expect(ag(sub), "read", "repo:acme/api", engine.ReasonAllowed)
	}},
	{"complete task denies every agent under it", func(w *world) {
		task := w.task("user:alice", "2h")
		a := w.agent(task, nil, "1h")
		sub := w.agent(task, a, "1h")
		w.mustGrant(ag(a), "read", "repo:acme/api", "15m")
		w.mustGrant(ag(sub), "read", "repo:acme/api", "15m")
		if _, _, err := w.e.CompleteTask(context.Background(), task.ID); err != nil {
			w.t.Fatal(err)
		}
		w.expect(ag(a), "read", "repo:acme/api", engine.ReasonTaskCompleted)
		w.expect(ag(sub), "read", "repo:acme/api", engine.ReasonTaskCompleted)
		if _, _, err := w.e.CreateAgent(context.Background(), engine.CreateAgentInput{Task: "task:" + task.ID, Name: "late", TTL: "1m"}); kindOf(err) != engine.KindFailedPrecondition {
			w.t.Fatalf("provisioning on a completed task: %v, want FailedPrecondition", err)
		}
	}},
	{"task-held grant reaches every agent of the task", func(w *world) {
		task := w.task("user:alice", "2h")
		a := w.agent(task, nil, "1h")
		sub := w.agent(task, a, "1h")
		w.mustGrant("task:"+task.ID, "execute", "pipeline:acme/build", "30m")
		w.expect(ag(a), "execute", "pipeline:acme/build", engine.ReasonAllowed)
		w.expect(ag(sub), "execute", "pipeline:acme/build", engine.ReasonAllowed)
		other := w.agent(w.task("user:alice", "1h"), nil, "1h")
		w.expect(ag(other), "execute", "pipeline:acme/build", engine.ReasonNoGrant)
	}},
	{"a new grant replaces the earlier one", func(w *world) {
		task := w.task("user:alice", "2h")
		a := w.agent(task, nil, "1h")
		g1 := w.mustGrant(ag(a), "read", "repo:acme/api", "5m")
		g2 := w.mustGrant(ag(a), "read", "repo:acme/api", "15m")
		if _, _, err := w.e.GetGrant(context.Background(), g1.ID); kindOf(err) != engine.KindNotFound {
			w.t.Fatalf("replaced grant still readable: %v", err)
		}
		d := w.expect(ag(a), "read", "repo:acme/api", engine.ReasonAllowed)
		if !d.ValidUntil.Equal(g2.ExpiresAt) {
			w.t.Fatalf("valid_until %v, want %v", d.ValidUntil, g2.ExpiresAt)
		}
	}},
	{"ttl of a child never outlives its parent", func(w *world) {
		task := w.task("user:alice", "1h")
		a := w.agent(task, nil, "10h")
		if !a.ExpiresAt.Equal(task.ExpiresAt) {
			w.t.Fatalf("agent expires %v, task %v", a.ExpiresAt, task.ExpiresAt)
		}
		sub := w.agent(task, w.agent(task, nil, "10m"), "1h")
		if sub.ExpiresAt.After(a.ExpiresAt) || sub.ExpiresAt.After(time.Now().Add(10*time.Minute)) {
			w.t.Fatalf("sub-agent outlives its parent: %v", sub.ExpiresAt)
		}
		// A grant never outlives its holder either.
		w.mustGrant(ag(a), "read", "repo:acme/api", "1h")
		g := w.mustGrant(ag(a), "read", "repo:acme/api", "1h")
		if g.ExpiresAt.After(a.ExpiresAt) {
			w.t.Fatalf("grant outlives its holder: %v > %v", g.ExpiresAt, a.ExpiresAt)
		}
	}},
	{"user checks are ordinary relationship checks", func(w *world) {
		w.expect("user:alice", "read", "repo:acme/api", engine.ReasonAllowed)
		w.expect("user:alice", "write", "repo:acme/api", engine.ReasonNoPermission)
		w.expect("user:bob", "read", "repo:acme/api", engine.ReasonAllowed)
	}},
	{"unknown agent", func(w *world) {
		w.expect("agent:agt_doesnotexist", "read", "repo:acme/api", engine.ReasonUnknownSubject)
	}},
	{"revocation takes effect at once, 100 times", func(w *world) {
		task := w.task("user:alice", "2h")
		for i := 0; i < 100; i++ {
			a := w.agent(task, nil, "1h")
			w.mustGrant(ag(a), "read", "repo:acme/api", "15m")
			w.expect(ag(a), "read", "repo:acme/api", engine.ReasonAllowed)
			switch i % 3 {
			case 0:
				_, _, err := w.e.RevokeAgent(context.Background(), a.ID)
				if err != nil {
					w.t.Fatal(err)
				}
				w.expect(ag(a), "read", "repo:acme/api", engine.ReasonAgentRevoked)
			case 1:
				_, _, err := w.e.SuspendAgent(context.Background(), a.ID)
				if err != nil {
					w.t.Fatal(err)
				}
				w.expect(ag(a), "read", "repo:acme/api", engine.ReasonAgentSuspended)
			case 2:
				t2 := w.task("user:alice", "1h")
				b := w.agent(t2, nil, "1h")
				w.mustGrant(ag(b), "read", "repo:acme/api", "15m")
				w.expect(ag(b), "read", "repo:acme/api", engine.ReasonAllowed)
				if _, _, err := w.e.CompleteTask(context.Background(), t2.ID); err != nil {
					w.t.Fatal(err)
				}
				w.expect(ag(b), "read", "repo:acme/api", engine.ReasonTaskCompleted)
			}
		}
	}},
	{"a 2s grant is denied within 100ms of expiry with no other writes", func(w *world) {
		task := w.task("user:alice", "2h")
		a := w.agent(task, nil, "1h")
		g := w.mustGrant(ag(a), "read", "repo:acme/api", "2s")
		w.expect(ag(a), "read", "repo:acme/api", engine.ReasonAllowed)
		waitExpiry(w, g.ExpiresAt, ag(a), engine.ReasonNoGrant)
	}},
	{"an agent expires with no other writes", func(w *world) {
		task := w.task("user:alice", "2h")
		a := w.agent(task, nil, "2s")
		w.mustGrant(ag(a), "read", "repo:acme/api", "15m")
		w.expect(ag(a), "read", "repo:acme/api", engine.ReasonAllowed)
		waitExpiry(w, a.ExpiresAt, ag(a), engine.ReasonAgentExpired)
	}},
	{"a task expires with no other writes", func(w *world) {
		task := w.task("user:alice", "2s")
		a := w.agent(task, nil, "1h")
		w.mustGrant(ag(a), "read", "repo:acme/api", "15m")
		waitExpiry(w, task.ExpiresAt, ag(a), engine.ReasonAgentExpired)
	}},
}

// waitExpiry checks until the deadline and then requires the first check that
// starts at or after it to deny, and to finish within 100ms of the deadline.
func waitExpiry(w *world, deadline time.Time, subject string, reason engine.Reason) {
	w.t.Helper()
	for time.Now().Before(deadline.Add(-50 * time.Millisecond)) {
		w.expect(subject, "read", "repo:acme/api", engine.ReasonAllowed)
		time.Sleep(20 * time.Millisecond)
	}
	for time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	w.expect(subject, "read", "repo:acme/api", reason)
	if late := time.Since(deadline); late > 100*time.Millisecond {
		w.t.Fatalf("denied %v after expiry, want within 100ms", late)
	}
}

var _ = fmt.Sprintf
