package decider

import (
	"context"
	"errors"
	"log/slog"
	"sync"
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
	// RetryBackoff is the first delay before retrying a failed automatic
	// suspension or its audit record; it doubles up to a minute, and the
	// retries never give up. Default 200ms.
	RetryBackoff time.Duration
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
	// stop ends the retries of failed suspensions and audit records at
	// Close; retrying is the set of them still running.
	stop     context.Context
	cancel   context.CancelFunc
	retrying sync.WaitGroup
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
	if cfg.RetryBackoff == 0 {
		cfg.RetryBackoff = 200 * time.Millisecond
	}
	stop, cancel := context.WithCancel(context.Background())
	return &Bounds{next: next, cfg: cfg, stop: stop, cancel: cancel}, nil
}

// Close stops retrying failed suspensions and audit records and waits for
// the retries to return. (Until the process ends, a crossed bound keeps
// denying the agent's checks whether or not the suspension landed: its
// counts stay over the bound.)
func (b *Bounds) Close() {
	b.cancel()
	b.retrying.Wait()
}

// retry calls f until it succeeds or Close, with exponential backoff from
// RetryBackoff up to a minute; it reports whether f succeeded.
func (b *Bounds) retry(what, agent string, f func() error) bool {
	delay := b.cfg.RetryBackoff
	for attempt := 2; ; attempt++ {
		select {
		case <-b.stop.Done():
			b.cfg.Log.Error(what+" abandoned at shutdown", "agent", agent)
			return false
		case <-time.After(delay):
		}
		err := f()
		if err == nil {
			b.cfg.Log.Warn(what+" succeeded on retry", "agent", agent, "attempt", attempt)
			return true
		}
		b.cfg.Log.Error(what+" failed; retrying", "agent", agent, "attempt", attempt, "error", err)
		delay = min(2*delay, time.Minute)
	}
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
		Type: alert.TypeAutoSuspended, ID: audit.NewID("chg"), Time: time.Now().UTC(),
		Agent: agentRef, Principal: d.Principal.OrEmpty(), Task: d.Task.OrEmpty(),
		Bound: x.Bound, Limit: x.Limit, Observed: x.Observed, Window: x.Window.String(),
		DecisionID: q.DecisionID, Permission: q.Permission, Resource: q.Resource.String(),
		Suspended: []string{agentRef},
	}
	suspend := func() error {
		_, _, err := b.cfg.Agents.SuspendAgent(ctx, q.Subject.ID)
		return err
	}
	if err := suspend(); err != nil {
		ev.SuspendError = err.Error()
		b.cfg.Log.Error("automatic suspension failed; retrying until it succeeds", "agent", agentRef, "error", err)
	} else if below, err := b.cfg.Agents.Descendants(ctx, q.Subject.ID); err == nil {
		ev.Suspended = append(ev.Suspended, engine.RefStrings(below)...)
	}
	b.record(ctx, q, x, ev, nil)
	b.cfg.Alerter.Send(ev)
	if ev.SuspendError == "" {
		return
	}
	// The suspension failed (SpiceDB unreachable, say). Until it lands the
	// agent's checks are still denied, since its counts stay over the bound,
	// but only the suspension stops its sub-agents and survives the window
	// sliding past: retry it, and record when it lands.
	b.retrying.Add(1)
	go func() {
		defer b.retrying.Done()
		attempts := 1
		if !b.retry("automatic suspension", agentRef, func() error { attempts++; return suspend() }) {
			return
		}
		done := ev
		done.SuspendError, done.Suspended = "", []string{agentRef}
		if below, err := b.cfg.Agents.Descendants(ctx, q.Subject.ID); err == nil {
			done.Suspended = append(done.Suspended, engine.RefStrings(below)...)
		}
		b.record(ctx, q, x, done, map[string]any{"attempts": attempts, "first_error": ev.SuspendError})
	}()
}

// record writes an automatic suspension's audit record, retrying in the
// background until the audit trail takes it.
func (b *Bounds) record(ctx context.Context, q engine.Query, x bounds.Crossing, ev alert.Event, extra map[string]any) {
	if b.cfg.Audit == nil {
		return
	}
	details := map[string]any{
		"principal": ev.Principal, "task": ev.Task, "bound": x.Bound, "limit": x.Limit, "observed": x.Observed,
		"window": ev.Window, "decision_ids": []any{q.DecisionID}, "permission": q.Permission, "resource": ev.Resource,
		"suspended": toAny(ev.Suspended), "alert_id": ev.ID,
	}
	if ev.SuspendError != "" {
		details["suspend_error"] = ev.SuspendError
	}
	for k, v := range extra {
		details[k] = v
	}
	r := audit.NewChange(q.RequestID, q.Caller, "agent.auto_suspend", ev.Agent, details)
	r.TraceID = tracing.TraceID(ctx)
	write := func() error { return b.cfg.Audit.Record(ctx, r, true) }
	if err := write(); err != nil {
		b.cfg.Log.Error("the automatic suspension's audit record failed; retrying until it succeeds", "agent", ev.Agent, "error", err)
		b.retrying.Add(1)
		go func() {
			defer b.retrying.Done()
			b.retry("the automatic suspension's audit record", ev.Agent, write)
		}()
	}
}
