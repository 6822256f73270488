// Package decider holds the decorators of the Check path. Each is an
// engine.Decider around the next one, composed in the server's wiring as
//
//	metrics → audit → bounds → cache → engine
//
// so a handler only validates, calls Decide and maps the answer. Nothing here
// imports gRPC: errors are engine errors, mapped to statuses by the service.
package decider

import (
	"context"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/mandate-dev/mandate/engine"
)

// Metrics observes every decision's latency by result: allowed, denied or
// error. It is the outermost layer, so the latency includes audit and bounds.
type Metrics struct {
	next                     engine.Decider
	allowed, denied, errored prometheus.Observer
}

// NewMetrics wraps next. The observers are mandate_check_duration_seconds'
// three series (engine/cache.Metrics); a nil observer observes nothing.
func NewMetrics(next engine.Decider, allowed, denied, errored prometheus.Observer) *Metrics {
	return &Metrics{next: next, allowed: allowed, denied: denied, errored: errored}
}

// Decide asks the next decider and records how long it took.
func (m *Metrics) Decide(ctx context.Context, q engine.Query) (engine.Decision, error) {
	start := time.Now()
	d, err := m.next.Decide(ctx, q)
	o := m.denied
	switch {
	case err != nil:
		o = m.errored
	case d.Allowed:
		o = m.allowed
	}
	if o != nil {
		o.Observe(time.Since(start).Seconds())
	}
	return d, err
}
