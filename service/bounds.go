package service

import (
	"context"
	"fmt"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/mandate-dev/mandate/engine"
	"github.com/mandate-dev/mandate/engine/bounds"
	"github.com/mandate-dev/mandate/engine/tracing"
	"github.com/mandate-dev/mandate/schema"
)

// Bounds enforces behavioural bounds on agent checks.
type Bounds struct {
	Store bounds.Store
	// Defaults apply to every bound an agent and its task leave unset.
	Defaults bounds.Limits
	Alerter  *Alerter
	// Now is the clock. Default time.Now.
	Now func() time.Time

	crossed     *prometheus.CounterVec // by bound; nil counts nothing
	countErrors prometheus.Counter
}

type boundsMetrics struct {
	crossed     *prometheus.CounterVec
	countErrors prometheus.Counter
	alerts      *prometheus.CounterVec
}

func newBoundsMetrics(reg prometheus.Registerer) boundsMetrics {
	m := boundsMetrics{
		crossed: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "mandate_bounds_crossed_total",
			Help: "Agent checks that crossed a behavioural bound and suspended the agent, by bound."}, []string{"bound"}),
		countErrors: prometheus.NewCounter(prometheus.CounterOpts{Name: "mandate_bounds_count_errors_total",
			Help: "Agent checks that failed closed because their count could not be recorded."}),
		alerts: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "mandate_alert_deliveries_total",
			Help: "Alert webhook deliveries, by result: delivered, retried (a failed attempt) or dropped (all attempts failed, or the queue was full)."}, []string{"result"}),
	}
	reg.MustRegister(m.crossed, m.countErrors, m.alerts)
	return m
}

// countedReasons are the answers that count as an agent's checks. Checks
// denied because the agent cannot act at all (suspended, revoked, expired,
// frozen, unknown) do not count: they are not the agent's behaviour, and
// counting them would trip a suspended agent again and again.
var countedReasons = map[string]bool{
	engine.ReasonAllowed: true, engine.ReasonNoGrant: true, engine.ReasonConditionFailed: true,
	engine.ReasonPrincipalLacksPermission: true, engine.ReasonDelegatorLacksPermission: true, engine.ReasonMissingContext: true,
}

// deniedReasons are the attempts outside the agent's grants.
var deniedReasons = map[string]bool{
	engine.ReasonNoGrant: true, engine.ReasonConditionFailed: true,
	engine.ReasonPrincipalLacksPermission: true, engine.ReasonDelegatorLacksPermission: true,
}

func (b *Bounds) now() time.Time {
	if b.Now != nil {
		return b.Now()
	}
	return time.Now()
}

// enforceBounds counts an agent's check. When the check takes the agent over
// a bound, the check is denied with BOUND_EXCEEDED and the agent is suspended,
// with the same write as :suspend, so every agent below it is denied too.
// A failure to count fails the check: an unknown count is not an allow.
func (h *Handlers) enforceBounds(ctx context.Context, q engine.Query, d engine.Decision, decisionID string) (engine.Decision, error) {
	if h.Bounds == nil || q.Subject.Type != schema.TypeAgent || !countedReasons[d.Reason] {
		return d, nil
	}
	ctx, span := tracing.Start(ctx, tracing.SpanBounds)
	defer span.End()
	own, err := h.Engine.AgentBounds(ctx, q.Subject.ID)
	if err != nil {
		return d, err
	}
	limits := own.Or(h.Bounds.Defaults)
	if limits.IsZero() {
		return d, nil
	}
	counts, err := h.Bounds.Store.Record(ctx, bounds.Event{
		Agent: q.Subject.ID, Resource: q.Resource.String(), Denied: deniedReasons[d.Reason], At: h.Bounds.now(),
	}, limits)
	if err != nil {
		h.Log.Error("counting a check against the agent's bounds failed; the check fails closed", "agent", q.Subject.ID, "error", err)
		if h.Bounds.countErrors != nil {
			h.Bounds.countErrors.Inc()
		}
		return d, status.Error(codes.Unavailable, "the check could not be counted against the agent's behavioural bounds")
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
			if h.Bounds.crossed != nil {
				h.Bounds.crossed.WithLabelValues(x.Bound).Inc()
			}
			h.autoSuspend(ctx, q, d, decisionID, x)
			break
		}
	}
	return d, nil
}

// autoSuspend suspends an agent that crossed a bound, audits it and alerts.
// The check that crossed is denied whatever happens here.
func (h *Handlers) autoSuspend(ctx context.Context, q engine.Query, d engine.Decision, decisionID string, x bounds.Crossing) {
	// The suspension must happen even if the caller hangs up.
	ctx = context.WithoutCancel(ctx)
	agentRef := q.Subject.String()
	ev := AlertEvent{
		Type: "mandate.agent.auto_suspended", ID: newChangeID(), Time: time.Now().UTC(),
		Agent: agentRef, Principal: refString(d.Principal), Task: refString(d.Task),
		Bound: x.Bound, Limit: x.Limit, Observed: x.Observed, Window: x.Window.String(),
		DecisionID: decisionID, Permission: q.Permission, Resource: q.Resource.String(),
		Suspended: []string{agentRef},
	}
	if _, _, err := h.Engine.SuspendAgent(ctx, q.Subject.ID); err != nil {
		ev.SuspendError = err.Error()
		h.Log.Error("automatic suspension failed", "agent", agentRef, "error", err)
	} else if below, err := h.Engine.Descendants(ctx, q.Subject.ID); err == nil {
		ev.Suspended = append(ev.Suspended, refStrings(below)...)
	}
	details := map[string]any{
		"principal": ev.Principal, "task": ev.Task, "bound": x.Bound, "limit": x.Limit, "observed": x.Observed,
		"window": ev.Window, "decision_ids": []any{decisionID}, "permission": q.Permission, "resource": ev.Resource,
		"suspended": toAny(ev.Suspended), "alert_id": ev.ID,
	}
	if ev.SuspendError != "" {
		details["suspend_error"] = ev.SuspendError
	}
	if err := h.recordChange(ctx, "agent.auto_suspend", agentRef, details); err != nil {
		h.Log.Error("the automatic suspension's audit record failed", "agent", agentRef, "error", err)
	}
	if h.Bounds.Alerter != nil {
		h.Bounds.Alerter.Send(ev)
	}
}

func toAny(ss []string) []any {
	out := make([]any, len(ss))
	for i, s := range ss {
		out[i] = s
	}
	return out
}

// boundsFromPB converts API bounds, naming bad fields under prefix.
func boundsFromPB(prefix string, b interface {
	GetChecksPerMinute() int32
	GetMaxDenials() int32
	GetDenialWindow() string
	GetResourcesPerHour() int32
}) (bounds.Limits, error) {
	l := bounds.Limits{ChecksPerMinute: int(b.GetChecksPerMinute()), MaxDenials: int(b.GetMaxDenials()), ResourcesPerHour: int(b.GetResourcesPerHour())}
	if w := b.GetDenialWindow(); w != "" {
		d, err := time.ParseDuration(w)
		if err != nil {
			return l, &engine.Error{Kind: engine.KindInvalidArgument, Field: prefix + "denial_window", Msg: fmt.Sprintf("%q is not a duration such as \"5m\"", w)}
		}
		l.DenialWindow = d
	}
	return l, nil
}
