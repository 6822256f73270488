package engine_test

import (
	"context"
	"reflect"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/structpb"

	"github.com/mandate-dev/mandate/engine"
	"github.com/mandate-dev/mandate/engine/embedded"
)

func (w *world) checkCtx(subject, perm, res string, qctx map[string]any) engine.Decision {
	w.t.Helper()
	var s *structpb.Struct
	if qctx != nil {
		var err error
		if s, err = structpb.NewStruct(qctx); err != nil {
			w.t.Fatal(err)
		}
	}
	q, err := w.e.ValidateQuery(context.Background(), subject, perm, res, s)
	if err != nil {
		w.t.Fatalf("validating query: %v", err)
	}
	d, err := w.e.Decide(context.Background(), q)
	if err != nil {
		w.t.Fatalf("check %s %s %s: %v", subject, perm, res, err)
	}
	return d
}

func (w *world) expectCtx(subject, perm, res string, qctx map[string]any, reason engine.Reason) engine.Decision {
	w.t.Helper()
	d := w.checkCtx(subject, perm, res, qctx)
	if d.Reason != reason || d.Allowed != (reason == engine.ReasonAllowed) {
		w.t.Fatalf("check %s %s %s with %v: got allowed=%v reason=%s condition=%q missing=%v, want %s",
			subject, perm, res, qctx, d.Allowed, d.Reason, d.Condition, d.MissingContext, reason)
	}
	return d
}

func (w *world) condGrant(holder, perm, res string, c *engine.Condition) (*engine.Grant, error) {
	g, _, err := w.e.CreateGrant(context.Background(), engine.CreateGrantInput{Holder: holder, Permission: perm, Resource: res, TTL: "20h", Condition: c})
	return g, err
}

// clockAt is a settable clock for the engine.
type clockAt struct{ t time.Time }

func (c *clockAt) now() time.Time { return c.t }

func TestGrantConditions(t *testing.T) {
	for _, b := range backends() {
		t.Run(b.name, func(t *testing.T) {
			// 10:30 UTC is 11:30 in Berlin in winter.
			clk := &clockAt{t: time.Date(2026, 11, 27, 10, 30, 0, 0, time.UTC)}
			e, _ := b.engine(t, engine.Config{Now: clk.now, MaxTaskTTL: 48 * time.Hour, MaxGrantTTL: 48 * time.Hour})
			w := &world{t: t, e: e}
			w.admin("environment:prod#deployer@user:alice", "repo:acme/api#writer@user:alice")
			task := w.task("user:alice", "40h")
			a := w.agent(task, nil, "30h")
			sub := w.agent(task, a, "30h")

			type ctx = map[string]any
			cases := []struct {
				name        string
				holder      string
				perm        string
				res         string
				cond        *engine.Condition
				allowed     []ctx
				denied      []ctx
				missing     []ctx
				wantMissing []string
			}{
				{
					name: "source network", holder: ag(a), perm: "deploy", res: "environment:prod",
					cond:        &engine.Condition{Name: engine.ConditionSourceNetwork, CIDRs: []string{"10.0.0.0/8", "2001:db8::/32"}},
					allowed:     []ctx{{"source_ip": "10.1.2.3"}, {"source_ip": "2001:db8::1"}},
					denied:      []ctx{{"source_ip": "192.168.1.1"}, {"source_ip": "11.0.0.1"}},
					missing:     []ctx{nil, {"risk_score": 0.1}},
					wantMissing: []string{"source_ip"},
				},
				{
					name: "max risk", holder: ag(a), perm: "write", res: "repo:acme/api",
					cond:        &engine.Condition{Name: engine.ConditionMaxRisk, MaxRisk: 0.5},
					allowed:     []ctx{{"risk_score": 0.5}, {"risk_score": 0}},
					denied:      []ctx{{"risk_score": 0.51}, {"risk_score": 7}},
					missing:     []ctx{nil, {"environment": "ci"}},
					wantMissing: []string{"risk_score"},
				},
				{
					name: "environment label", holder: "task:" + task.ID, perm: "deploy", res: "environment:staging-eu",
					cond:        &engine.Condition{Name: engine.ConditionEnvironment, Environment: "prod-change-window"},
					allowed:     []ctx{{"environment": "prod-change-window"}},
					denied:      []ctx{{"environment": "ci"}, {"environment": "PROD-CHANGE-WINDOW"}},
					missing:     []ctx{nil},
					wantMissing: []string{"environment"},
				},
			}
			w.admin("environment:staging-eu#deployer@user:alice")
			for _, c := range cases {
				t.Run(c.name, func(t *testing.T) {
					w := &world{t: t, e: e}
					g, err := w.condGrant(c.holder, c.perm, c.res, c.cond)
					if err != nil {
						t.Fatalf("granting: %v", err)
					}
					read := must[*engine.Grant](t)(e.GetGrant(context.Background(), g.ID))
					if !reflect.DeepEqual(read.Condition, g.Condition) {
						t.Errorf("grant read back with condition %+v, want %+v", read.Condition, g.Condition)
					}
					for _, x := range c.allowed {
						d := w.expectCtx(ag(a), c.perm, c.res, x, engine.ReasonAllowed)
						if len(d.Grants) != 1 || d.Grants[0] != g.ID {
							t.Errorf("allow relied on %v, want [%s]", d.Grants, g.ID)
						}
					}
					for _, x := range c.denied {
						d := w.expectCtx(ag(a), c.perm, c.res, x, engine.ReasonConditionFailed)
						if d.Condition != c.cond.Name {
							t.Errorf("condition = %q, want %q", d.Condition, c.cond.Name)
						}
					}
					for _, x := range c.missing {
						d := w.expectCtx(ag(a), c.perm, c.res, x, engine.ReasonMissingContext)
						if !reflect.DeepEqual(d.MissingContext, c.wantMissing) || d.Condition != c.cond.Name {
							t.Errorf("missing = %v condition %q, want %v %q", d.MissingContext, d.Condition, c.wantMissing, c.cond.Name)
						}
					}
				})
			}

			t.Run("hours in a time zone", func(t *testing.T) {
				w := &world{t: t, e: e}
				w.admin("repo:acme/web#writer@user:alice")
				// 09:00-17:00 Berlin. The clock reads 11:30 Berlin.
				g, err := w.condGrant(ag(a), "write", "repo:acme/web", &engine.Condition{Name: engine.ConditionHours, TimeZone: "Europe/Berlin", Start: "09:00", End: "17:00"})
				if err != nil {
					t.Fatal(err)
				}
				d := w.expectCtx(ag(a), "write", "repo:acme/web", nil, engine.ReasonAllowed)
				// The answer may be cached only until the window closes at 17:00 Berlin.
				if want := time.Date(2026, 11, 27, 16, 0, 0, 0, time.UTC); !d.ValidUntil.Equal(want) {
					t.Errorf("valid_until = %v, want %v", d.ValidUntil, want)
				}
				clk.t = time.Date(2026, 11, 27, 16, 0, 0, 0, time.UTC) // 17:00 Berlin: closed
				d = w.expectCtx(ag(a), "write", "repo:acme/web", nil, engine.ReasonConditionFailed)
				if d.Condition != engine.ConditionHours {
					t.Errorf("condition = %q", d.Condition)
				}
				if want := time.Date(2026, 11, 28, 8, 0, 0, 0, time.UTC); !d.ValidUntil.Equal(want) {
					t.Errorf("a deny outside the window is good until it opens: %v, want %v", d.ValidUntil, want)
				}
				clk.t = time.Date(2026, 11, 27, 7, 59, 0, 0, time.UTC) // 08:59 Berlin
				w.expectCtx(ag(a), "write", "repo:acme/web", nil, engine.ReasonConditionFailed)
				clk.t = time.Date(2026, 11, 27, 8, 0, 0, 0, time.UTC) // 09:00 Berlin
				w.expectCtx(ag(a), "write", "repo:acme/web", nil, engine.ReasonAllowed)

				// A window across midnight: 22:00-06:00 UTC.
				g2, err := w.condGrant(ag(a), "write", "repo:acme/web", &engine.Condition{Name: engine.ConditionHours, TimeZone: "UTC", Start: "22:00", End: "06:00"})
				if err != nil {
					t.Fatal(err)
				}
				if g2.ID == g.ID {
					t.Fatal("re-grant kept the id")
				}
				for hm, want := range map[[2]int]engine.Reason{{23, 0}: engine.ReasonAllowed, {5, 59}: engine.ReasonAllowed, {6, 0}: engine.ReasonConditionFailed, {21, 59}: engine.ReasonConditionFailed} {
					clk.t = time.Date(2026, 11, 27, hm[0], hm[1], 0, 0, time.UTC)
					w.expectCtx(ag(a), "write", "repo:acme/web", nil, want)
				}
				clk.t = time.Date(2026, 11, 27, 10, 30, 0, 0, time.UTC)
			})

			t.Run("a delegator's condition applies to the sub-agent", func(t *testing.T) {
				w := &world{t: t, e: e}
				w.admin("environment:dev#deployer@user:alice")
				if _, err := w.condGrant(ag(a), "deploy", "environment:dev", &engine.Condition{Name: engine.ConditionMaxRisk, MaxRisk: 0.3}); err != nil {
					t.Fatal(err)
				}
				// The parent's grant is conditioned; delegating it is still allowed.
				w.mustGrant(ag(sub), "deploy", "environment:dev", "10m")
				w.expectCtx(ag(sub), "deploy", "environment:dev", map[string]any{"risk_score": 0.1}, engine.ReasonAllowed)
				d := w.expectCtx(ag(sub), "deploy", "environment:dev", map[string]any{"risk_score": 0.9}, engine.ReasonConditionFailed)
				if d.Condition != engine.ConditionMaxRisk {
					t.Errorf("condition = %q", d.Condition)
				}
				w.expectCtx(ag(sub), "deploy", "environment:dev", nil, engine.ReasonMissingContext)
			})

			t.Run("refused conditions", func(t *testing.T) {
				w := &world{t: t, e: e}
				w.admin("pipeline:ci#runner@user:alice")
				for _, c := range []struct {
					perm, res string
					cond      *engine.Condition
					field     string
				}{
					// pipeline#execute_grant lists no conditions in the default schema.
					{"execute", "pipeline:ci", &engine.Condition{Name: engine.ConditionMaxRisk, MaxRisk: 1}, "condition"},
					{"deploy", "environment:prod", &engine.Condition{Name: "moon_phase"}, "condition"},
					{"deploy", "environment:prod", &engine.Condition{}, "condition"},
					{"deploy", "environment:prod", &engine.Condition{Name: engine.ConditionSourceNetwork}, "condition.source_network.cidrs"},
					{"deploy", "environment:prod", &engine.Condition{Name: engine.ConditionSourceNetwork, CIDRs: []string{"10.0.0.0/8", "10.0.0.300/8"}}, "condition.source_network.cidrs[1]"},
					{"deploy", "environment:prod", &engine.Condition{Name: engine.ConditionHours, TimeZone: "Mars/Olympus", Start: "09:00", End: "10:00"}, "condition.hours.time_zone"},
					// Names the host's zoneinfo may hold that are not canonical zones.
					{"deploy", "environment:prod", &engine.Condition{Name: engine.ConditionHours, TimeZone: "Local", Start: "09:00", End: "10:00"}, "condition.hours.time_zone"},
					{"deploy", "environment:prod", &engine.Condition{Name: engine.ConditionHours, TimeZone: "localtime", Start: "09:00", End: "10:00"}, "condition.hours.time_zone"},
					{"deploy", "environment:prod", &engine.Condition{Name: engine.ConditionHours, TimeZone: "posixrules", Start: "09:00", End: "10:00"}, "condition.hours.time_zone"},
					{"deploy", "environment:prod", &engine.Condition{Name: engine.ConditionHours, TimeZone: "Factory", Start: "09:00", End: "10:00"}, "condition.hours.time_zone"},
					{"deploy", "environment:prod", &engine.Condition{Name: engine.ConditionHours, TimeZone: "right/Europe/Berlin", Start: "09:00", End: "10:00"}, "condition.hours.time_zone"},
					{"deploy", "environment:prod", &engine.Condition{Name: engine.ConditionHours, TimeZone: "posix/Europe/Berlin", Start: "09:00", End: "10:00"}, "condition.hours.time_zone"},
					{"deploy", "environment:prod", &engine.Condition{Name: engine.ConditionHours, TimeZone: "Europe/../Europe/Berlin", Start: "09:00", End: "10:00"}, "condition.hours.time_zone"},
					{"deploy", "environment:prod", &engine.Condition{Name: engine.ConditionHours, TimeZone: "US/Pacific", Start: "09:00", End: "10:00"}, "condition.hours.time_zone"},
					{"deploy", "environment:prod", &engine.Condition{Name: engine.ConditionHours, TimeZone: "UTC", Start: "9:00", End: "10:00"}, "condition.hours.start"},
					{"deploy", "environment:prod", &engine.Condition{Name: engine.ConditionHours, TimeZone: "UTC", Start: "09:00", End: "24:01"}, "condition.hours.end"},
					{"deploy", "environment:prod", &engine.Condition{Name: engine.ConditionHours, TimeZone: "UTC", Start: "09:00", End: "09:00"}, "condition.hours.end"},
					{"deploy", "environment:prod", &engine.Condition{Name: engine.ConditionEnvironment, Environment: "no spaces"}, "condition.environment.label"},
				} {
					_, err := w.condGrant(ag(a), c.perm, c.res, c.cond)
					var ee *engine.Error
					if !asError(err, &ee) || ee.Kind != engine.KindInvalidArgument || ee.Field != c.field {
						t.Errorf("%+v: got %v, want InvalidArgument on %s", c.cond, err, c.field)
					}
				}
			})

			t.Run("malformed context", func(t *testing.T) {
				for _, c := range []struct {
					ctx   map[string]any
					field string
				}{
					{map[string]any{"source_ip": "10.0.0"}, "context.source_ip"},
					{map[string]any{"source_ip": 10}, "context.source_ip"},
					{map[string]any{"risk_score": "high"}, "context.risk_score"},
					// Strings SpiceDB would coerce into a number (and that
					// satisfied max_risk before): a number must be a number.
					{map[string]any{"risk_score": "-inf"}, "context.risk_score"},
					{map[string]any{"risk_score": "0.1"}, "context.risk_score"},
					{map[string]any{"risk_score": "1e-999"}, "context.risk_score"},
					{map[string]any{"risk_score": true}, "context.risk_score"},
					{map[string]any{"source_ip": []any{"10.0.0.1"}}, "context.source_ip"},
					{map[string]any{"environment": true}, "context.environment"},
					{map[string]any{"max_risk": 1.0}, "context.max_risk"},
					{map[string]any{"allowed_cidrs": []any{"0.0.0.0/0"}}, "context.allowed_cidrs"},
				} {
					s, _ := structpb.NewStruct(c.ctx)
					_, err := e.ValidateQuery(context.Background(), ag(a), "deploy", "environment:prod", s)
					var ee *engine.Error
					if !asError(err, &ee) || ee.Kind != engine.KindInvalidArgument || ee.Field != c.field {
						t.Errorf("%v: got %v, want InvalidArgument on %s", c.ctx, err, c.field)
					}
				}
			})
		})
	}
}

func TestKillSwitches(t *testing.T) {
	e, _ := startEngine(t, embedded.Config{Engine: "memory"}, engine.Config{})
	w := &world{t: t, e: e}
	ctx := context.Background()
	w.admin("repo:acme/api#reader@user:alice", "repo:acme/api#reader@user:bob")
	at := w.task("user:alice", "1h")
	a := w.agent(at, nil, "50m")
	asub := w.agent(at, a, "50m")
	bt := w.task("user:bob", "1h")
	b := w.agent(bt, nil, "50m")
	w.mustGrant("task:"+at.ID, "read", "repo:acme/api", "30m")
	w.mustGrant("task:"+bt.ID, "read", "repo:acme/api", "30m")

	t.Run("principal-wide suspension", func(t *testing.T) {
		p, was, _, err := e.SuspendPrincipalAgents(ctx, "alice")
		if err != nil || was || p.String() != "user:alice" {
			t.Fatalf("suspend: %v %v %v", p, was, err)
		}
		w.expect(ag(a), "read", "repo:acme/api", engine.ReasonPrincipalSuspended)
		w.expect(ag(asub), "read", "repo:acme/api", engine.ReasonPrincipalSuspended)
		w.expect(ag(b), "read", "repo:acme/api", engine.ReasonAllowed)
		w.expect("user:alice", "read", "repo:acme/api", engine.ReasonAllowed)
		// An agent created while suspended is suspended too.
		late := w.agent(at, nil, "50m")
		w.expect(ag(late), "read", "repo:acme/api", engine.ReasonPrincipalSuspended)
		if _, was, _, _ := e.SuspendPrincipalAgents(ctx, "alice"); !was {
			t.Error("a second suspend should report it was already on")
		}
		if _, _, _, err := e.ResumePrincipalAgents(ctx, "alice"); err != nil {
			t.Fatal(err)
		}
		w.expect(ag(a), "read", "repo:acme/api", engine.ReasonAllowed)
		w.expect(ag(asub), "read", "repo:acme/api", engine.ReasonAllowed)
		w.expect(ag(late), "read", "repo:acme/api", engine.ReasonAllowed)
		if _, _, _, err := e.SuspendPrincipalAgents(ctx, "no spaces allowed"); kindOf(err) != engine.KindInvalidArgument {
			t.Errorf("bad principal id: %v", err)
		}
	})

	t.Run("freeze all", func(t *testing.T) {
		if was, _, err := e.FreezeAgents(ctx); err != nil || was {
			t.Fatalf("freeze: %v %v", was, err)
		}
		for _, x := range []*engine.Agent{a, asub, b} {
			w.expect(ag(x), "read", "repo:acme/api", engine.ReasonAgentsFrozen)
		}
		w.expect("user:alice", "read", "repo:acme/api", engine.ReasonAllowed)
		if on, _ := e.AgentsFrozen(ctx); !on {
			t.Error("AgentsFrozen = false")
		}
		if was, _, err := e.UnfreezeAgents(ctx); err != nil || !was {
			t.Fatalf("unfreeze: %v %v", was, err)
		}
		w.expect(ag(b), "read", "repo:acme/api", engine.ReasonAllowed)
	})
}
