package decider

import (
	"context"
	"errors"
	"log/slog"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/mandate-dev/mandate/engine"
	"github.com/mandate-dev/mandate/engine/alert"
	"github.com/mandate-dev/mandate/engine/audit"
	"github.com/mandate-dev/mandate/engine/bounds"
	"github.com/mandate-dev/mandate/engine/tracing"
	"github.com/mandate-dev/mandate/schema"
)

// Agents is what the bounds decorator needs from the engine: an agent's own
// bounds, and the suspension a crossed bound triggers.
type Agents interface {
	// AgentBounds is the agent's bounds as recorded when it was created.
	AgentBounds(ctx context.Context, id string) (bounds.Limits, error)
	// SuspendAgent suspends the agent, and so every agent below it.
	SuspendAgent(ctx context.Context, id string) (*engine.Agent, string, error)
	// Descendants lists the agents below it.
	Descendants(ctx context.Context, id string) ([]engine.Ref, error)
}

// BoundsConfig configures the bounds decorator.
type BoundsConfig struct {
	// Agents reads bounds and suspends agents; the engine. Never nil.
	Agents Agents
	// Store keeps the counts. Never nil.
	Store bounds.Store
	// Defaults apply to every bound an agent and its task leave unset.
	Defaults bounds.Limits
	// Alerter is told of every automatic suspension. Default: one that only logs.
	Alerter *alert.Alerter
	// Audit records every automatic suspension; nil records none.
	Audit *audit.Recorder
	// Metrics counts crossings and counting failures; nil counts nothing.
	Metrics *BoundsMetrics
	// Log is the logger. Default slog.Default().
	Log *slog.Logger
	// Now is the clock. Default time.Now.
	Now func() time.Time
}

// Validate reports whether the config is usable.
func (c *BoundsConfig) Validate() error {
	if c.Agents == nil || c.Store == nil {
		return errors.New("decider: bounds need Agents and Store")
	}
	if _, err := c.Defaults.Validate(""); err != nil {
		return err
	}
	return nil
}

// BoundsMetrics are the bounds decorator's counters.
type BoundsMetrics struct {
	// Crossed counts checks that crossed a bound, by bound.
	Crossed *prometheus.CounterVec
	// CountErrors counts checks that failed closed because they could not be counted.
	CountErrors prometheus.Counter
}

// NewBoundsMetrics registers the bounds counters on reg.
func NewBoundsMetrics(reg prometheus.Registerer) *BoundsMetrics {
	m := &BoundsMetrics{
		Crossed: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "mandate_bounds_crossed_total",
			Help: "Agent checks that crossed a behavioural bound and suspended the agent, by bound."}, []string{"bound"}),
		CountErrors: prometheus.NewCounter(prometheus.CounterOpts{Name: "mandate_bounds_count_errors_total",
			Help: "Agent checks that failed closed because their count could not be recorded."}),
	}
	reg.MustRegister(m.Crossed, m.CountErrors)
	return m
}

// Bounds counts every agent check against the agent's behavioural bounds.
// The check that takes the agent over a bound is denied with BOUND_EXCEEDED
// and suspends the agent, with the same write as :suspend, so every agent
// below it is denied too. A check that cannot be counted fails closed.
type Bounds struct {
	next engine.Decider
	cfg  BoundsConfig
}

// NewBounds wraps next.
func NewBounds(next engine.Decider, cfg BoundsConfig) (*Bounds, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	if cfg.Alerter == nil {
		cfg.Alerter = &alert.Alerter{Log: cfg.Log}
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	return &Bounds{next: next, cfg: cfg}, nil
}

// Reset starts an agent's counts afresh, as a resume does: otherwise its next
// check would find it still over the bound that suspended it.
func (b *Bounds) Reset(ctx context.Context, agent string) error {
	if err := b.cfg.Store.Reset(ctx, agent); err != nil {
		return &engine.Error{Kind: engine.KindUnavailable,
			Msg: "agent " + agent + " was resumed, but its bound counts could not be reset; retry the resume",
			Err: errors.Join(engine.ErrUnavailable, err)}
	}
	return nil
}

// Decide asks the next decider, then counts the check when it comes from a
// caller trusted for bounds (Query.CountsForBounds); anyone else's checks
// could otherwise push an agent into suspension.
func (b *Bounds) Decide(ctx context.Context, q engine.Query) (engine.Decision, error) {
	d, err := b.next.Decide(ctx, q)
	if err != nil || !q.CountsForBounds || q.Subject.Type != schema.TypeAgent || !d.Reason.CountsForBounds() {
		return d, err
	}
	ctx, span := tracing.Start(ctx, tracing.SpanBounds)
	defer span.End()
	own, err := b.cfg.Agents.AgentBounds(ctx, q.Subject.ID)
	if err != nil {
		return engine.Decision{}, err
	}
	limits := own.Or(b.cfg.Defaults)
	if limits.IsZero() {
		return d, nil
	}
	counts, err := b.cfg.Store.Record(ctx, bounds.Event{
		Agent: q.Subject.ID, Resource: q.Resource.String(), Denied: d.Reason.IsDenial(), At: b.cfg.Now(),
	}, limits)
	if err != nil {
		if b.cfg.Metrics != nil {
			b.cfg.Metrics.CountErrors.Inc()
		}
		// An unknown count is not an allow.
		return engine.Decision{}, &engine.Error{Kind: engine.KindUnavailable,
			Msg: "the check could not be counted against the agent's behavioural bounds",
			Err: errors.Join(engine.ErrUnavailable, err)}
	}
	crossed := bounds.Crossed(limits, counts)
	if len(crossed) == 0 {
		return d, nil
	}
	d.Allowed, d.Reason, d.Bound, d.Grants = false, engine.ReasonBoundExceeded, crossed[0].Bound, nil
	// Every check over a bound is denied, but only the one that took the
	// count just past it suspends and alerts: checks already in flight when
	// the suspension lands see higher counts, and must not repeat it. Each
	// event gets its own count (the store orders one agent's events), so
	// exactly one check per crossing does this, across replicas too.
	for _, x := range crossed {
		if x.Observed == x.Limit+1 {
			d.Bound = x.Bound
			if b.cfg.Metrics != nil {
				b.cfg.Metrics.Crossed.WithLabelValues(x.Bound).Inc()
			}
			b.autoSuspend(ctx, q, d, x)
			break
		}
	}
	return d, nil
}

// autoSuspend suspends an agent that crossed a bound, audits it and alerts.
// The check that crossed is denied whatever happens here.
func (b *Bounds) autoSuspend(ctx context.Context, q engine.Query, d engine.Decision, x bounds.Crossing) {
	// The suspension must happen even if the caller hangs up.
	ctx = context.WithoutCancel(ctx)
	agentRef := q.Subject.String()
	ev := alert.Event{
		Type: "mandate.agent.auto_suspended", ID: audit.NewID("chg"), Time: time.Now().UTC(),
		Agent: agentRef, Principal: refString(d.Principal), Task: refString(d.Task),
		Bound: x.Bound, Limit: x.Limit, Observed: x.Observed, Window: x.Window.String(),
		DecisionID: q.DecisionID, Permission: q.Permission, Resource: q.Resource.String(),
		Suspended: []string{agentRef},
	}
	if _, _, err := b.cfg.Agents.SuspendAgent(ctx, q.Subject.ID); err != nil {
		ev.SuspendError = err.Error()
		b.cfg.Log.Error("automatic suspension failed", "agent", agentRef, "error", err)
	} else if below, err := b.cfg.Agents.Descendants(ctx, q.Subject.ID); err == nil {
		ev.Suspended = append(ev.Suspended, refStrings(below)...)
	}
	if b.cfg.Audit != nil {
		details := map[string]any{
			"principal": ev.Principal, "task": ev.Task, "bound": x.Bound, "limit": x.Limit, "observed": x.Observed,
			"window": ev.Window, "decision_ids": []any{q.DecisionID}, "permission": q.Permission, "resource": ev.Resource,
			"suspended": toAny(ev.Suspended), "alert_id": ev.ID,
		}
		if ev.SuspendError != "" {
			details["suspend_error"] = ev.SuspendError
		}
		r := audit.NewChange(q.RequestID, q.Caller, "agent.auto_suspend", agentRef, details)
		r.TraceID = tracing.TraceID(ctx)
		if err := b.cfg.Audit.Record(ctx, r, true); err != nil {
			b.cfg.Log.Error("the automatic suspension's audit record failed", "agent", agentRef, "error", err)
		}
	}
	b.cfg.Alerter.Send(ev)
}
