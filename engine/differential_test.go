package engine_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"slices"
	"strconv"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/structpb"

	"github.com/mandate-dev/mandate/engine"
)

// TestDifferentialDecide compares the decision path with the one it
// replaced (engine.ReferenceDecide, the pre-evaluator path kept as a test
// oracle) over many randomly generated agent states: chains up to three
// deep, agent- and task-held grants with and without conditions, every kind
// of revocation, the kill switches, lost human permissions and lapsed
// lifetimes. Both paths must give the same answer, reason, condition,
// missing context and, for an allow, the same grants and validity.
func TestDifferentialDecide(t *testing.T) {
	for _, b := range backends() {
		t.Run(b.name, func(t *testing.T) {
			seed := uint64(time.Now().UnixNano())
			if v, err := strconv.ParseUint(os.Getenv("MANDATE_DIFF_SEED"), 10, 64); err == nil {
				seed = v // replay a failure
			}
			t.Logf("seed %d", seed)
			rng := rand.New(rand.NewPCG(seed, 7))
			clk := &clockAt{t: time.Date(2026, 11, 27, 10, 30, 0, 0, time.UTC)}
			e, _ := b.engine(t, engine.Config{Now: clk.now, MaxTaskTTL: 48 * time.Hour, MaxGrantTTL: 48 * time.Hour})
			w := &world{t: t, e: e}
			ctx := context.Background()

			humans := []string{"user:alice", "user:bob"}
			resources := []struct{ perm, res, rel string }{
				{"read", "repo:acme/api", "reader"},
				{"write", "repo:acme/api", "writer"},
				{"write", "repo:acme/web", "writer"},
				{"deploy", "environment:prod", "deployer"},
			}
			// Both humans start with every permission; some are taken away later.
			for _, h := range humans {
				for _, r := range resources {
					w.admin(fmt.Sprintf("%s#%s@%s", r.res, r.rel, h))
				}
			}
			conditions := []*engine.Condition{
				nil, nil,
				{Name: engine.ConditionSourceNetwork, CIDRs: []string{"10.0.0.0/8"}},
				{Name: engine.ConditionMaxRisk, MaxRisk: 0.5},
				{Name: engine.ConditionEnvironment, Environment: "change-window"},
				{Name: engine.ConditionHours, TimeZone: "Europe/Berlin", Start: "09:00", End: "17:00"},
				{Name: engine.ConditionHours, TimeZone: "UTC", Start: "22:00", End: "06:00"},
			}
			contexts := []map[string]any{
				nil,
				{"source_ip": "10.1.2.3", "risk_score": 0.2, "environment": "change-window"},
				{"source_ip": "192.0.2.1", "risk_score": 0.9, "environment": "prod"},
				{"source_ip": "10.9.9.9"},
			}
			var agents []*engine.Agent
			var tasks []*engine.Task
			var grants []*engine.Grant
			compared, allowed := 0, 0
			reasons := map[engine.Reason]int{}

			for round := 0; round < 12; round++ {
				// A freeze lasts at most the round it was set in, or it would
				// deny everything after it.
				if _, _, err := e.UnfreezeAgents(ctx); err != nil {
					t.Fatal(err)
				}
				// Build: a few tasks, agents and grants.
				for i := 0; i < 2; i++ {
					task := w.task(humans[rng.IntN(len(humans))], []string{"2h", "30m", "20h"}[rng.IntN(3)])
					tasks = append(tasks, task)
					top := w.agent(task, nil, []string{"1h", "10m", "40m"}[rng.IntN(3)])
					agents = append(agents, top)
					parent := top
					for depth := rng.IntN(3); depth > 0; depth-- {
						child := w.agent(task, parent, []string{"1h", "5m", "20m"}[rng.IntN(3)])
						agents = append(agents, child)
						parent = child
					}
				}
				for i := 0; i < 8; i++ {
					r := resources[rng.IntN(len(resources))]
					holder := "agent:" + agents[rng.IntN(len(agents))].ID
					if rng.IntN(4) == 0 {
						holder = "task:" + tasks[rng.IntN(len(tasks))].ID
					}
					var cond *engine.Condition
					if r.perm != "read" {
						cond = conditions[rng.IntN(len(conditions))]
					}
					ttl := []string{"15m", "3m", "45m"}[rng.IntN(3)]
					g, _, err := e.CreateGrant(ctx, engine.CreateGrantInput{Holder: holder, Permission: r.perm, Resource: r.res, TTL: ttl, Condition: cond})
					if err == nil {
						grants = append(grants, g)
					}
					// Refusals (escalation, a dead holder) are part of the state space.
				}
				// Disturb: at most two changes a round.
				for i := rng.IntN(3); i > 0; i-- {
					switch rng.IntN(9) {
					case 0:
						_, _, _ = e.SuspendAgent(ctx, agents[rng.IntN(len(agents))].ID)
					case 1:
						_, _, _ = e.ResumeAgent(ctx, agents[rng.IntN(len(agents))].ID)
					case 2:
						_, _, _ = e.RevokeAgent(ctx, agents[rng.IntN(len(agents))].ID)
					case 3:
						_, _, _ = e.CompleteTask(ctx, tasks[rng.IntN(len(tasks))].ID)
					case 4:
						if len(grants) > 0 {
							_, _ = e.DeleteGrant(ctx, grants[rng.IntN(len(grants))].ID)
						}
					case 5:
						h := humans[rng.IntN(len(humans))]
						if rng.IntN(2) == 0 {
							_, _, _, _ = e.SuspendPrincipalAgents(ctx, h[len("user:"):])
						} else {
							_, _, _, _ = e.ResumePrincipalAgents(ctx, h[len("user:"):])
						}
					case 6:
						if rng.IntN(3) == 0 {
							_, _, _ = e.FreezeAgents(ctx)
						} else {
							_, _, _ = e.UnfreezeAgents(ctx)
						}
					case 7:
						r := resources[rng.IntN(len(resources))]
						rel := fmt.Sprintf("%s#%s@%s", r.res, r.rel, humans[rng.IntN(len(humans))])
						if rng.IntN(2) == 0 {
							w.write("DELETE", rel)
						} else {
							w.admin(rel)
						}
					case 8:
						// Time passes: grants, agents and windows lapse.
						clk.t = clk.t.Add(time.Duration(rng.IntN(12)) * time.Minute)
					}
				}
				// Compare, for every agent, a few questions.
				for _, a := range agents {
					for k := 0; k < 3; k++ {
						r := resources[rng.IntN(len(resources))]
						qctx := contexts[rng.IntN(len(contexts))]
						var s *structpb.Struct
						if qctx != nil {
							s, _ = structpb.NewStruct(qctx)
						}
						q, err := e.ValidateQuery(ctx, "agent:"+a.ID, r.perm, r.res, s)
						if err != nil {
							t.Fatal(err)
						}
						got, err := e.Decide(ctx, q)
						if err != nil {
							t.Fatalf("decide: %v", err)
						}
						want, err := engine.ReferenceDecide(e, ctx, q)
						if err != nil {
							t.Fatalf("reference: %v", err)
						}
						compared++
						reasons[got.Reason]++
						if got.Allowed {
							allowed++
						}
						if diff := decisionDiff(got, want); diff != "" {
							t.Fatalf("round %d, agent:%s %s %s context %v at %s (seed %d): %s",
								round, a.ID, r.perm, r.res, qctx, clk.t.Format(time.RFC3339), seed, diff)
						}
					}
				}
			}
			// The comparison means something only if both answers occurred.
			if allowed == 0 || allowed == compared {
				t.Fatalf("%d of %d comparisons allowed: the generated states are too uniform (%v)", allowed, compared, reasons)
			}
			t.Logf("%d decisions compared, %d allowed", compared, allowed)
		})
	}
}

// decisionDiff says how two decisions differ in what a caller can see.
func decisionDiff(got, want engine.Decision) string {
	sorted := func(s []string) []string { s = slices.Clone(s); slices.Sort(s); return s }
	switch {
	case got.Allowed != want.Allowed || got.Reason != want.Reason:
		return fmt.Sprintf("got allowed=%v %s, reference allowed=%v %s", got.Allowed, got.Reason, want.Allowed, want.Reason)
	case got.Condition != want.Condition:
		return fmt.Sprintf("condition %q, reference %q", got.Condition, want.Condition)
	case !slices.Equal(sorted(got.MissingContext), sorted(want.MissingContext)):
		return fmt.Sprintf("missing context %v, reference %v", got.MissingContext, want.MissingContext)
	case !slices.Equal(got.Chain, want.Chain) || got.Principal != want.Principal || got.Task != want.Task:
		return fmt.Sprintf("chain %v/%v/%v, reference %v/%v/%v", got.Chain, got.Principal, got.Task, want.Chain, want.Principal, want.Task)
	case got.Allowed && !slices.Equal(sorted(got.Grants), sorted(want.Grants)):
		return fmt.Sprintf("grants %v, reference %v", got.Grants, want.Grants)
	case got.Allowed && !got.ValidUntil.Equal(want.ValidUntil):
		return fmt.Sprintf("valid until %s, reference %s", got.ValidUntil, want.ValidUntil)
	}
	return ""
}
