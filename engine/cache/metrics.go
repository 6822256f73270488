package cache

import (
	"github.com/prometheus/client_golang/prometheus"
)

// Metrics are the cache's and the check path's Prometheus metrics, in the
// mandate_ namespace. A nil *Metrics records nothing.
type Metrics struct {
	CheckDuration *prometheus.HistogramVec
	// CheckAllowed, CheckDenied and CheckError are CheckDuration's three
	// series, resolved once: the check path does not look labels up.
	CheckAllowed, CheckDenied, CheckError prometheus.Observer

	hits          prometheus.Counter
	misses        prometheus.Counter
	evictions     prometheus.Counter
	bypasses      *prometheus.CounterVec
	invalidations *prometheus.CounterVec
	collapses     prometheus.Counter
	watchLag      prometheus.Gauge
	failsafe      prometheus.Gauge
	watchRestarts prometheus.Counter
}

// NewMetrics creates the metrics and registers them on reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	const ns = "mandate"
	m := &Metrics{
		CheckDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: ns, Name: "check_duration_seconds",
			Help:    "Latency of each Check decision, by result (allowed, denied or error).",
			Buckets: []float64{.00005, .0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5},
		}, []string{"result"}),
		hits:      prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Name: "cache_hits_total", Help: "Check decisions answered from the decision cache."}),
		misses:    prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Name: "cache_misses_total", Help: "Check decisions the cache could not answer and computed."}),
		evictions: prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Name: "cache_evictions_total", Help: "Decisions evicted from the cache to keep it within its size."}),
		bypasses: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Name: "cache_bypasses_total",
			Help: "Checks that skipped the cache, by reason (failsafe: the watch is down or lagging; consistency_token: the caller asked for a revision the cache has not seen)."}, []string{"reason"}),
		invalidations: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Name: "cache_invalidations_total",
			Help: "Dependency keys invalidated, by source (local: this replica's writes; watch: SpiceDB's Watch; notify: another replica, through Postgres NOTIFY)."}, []string{"source"}),
		collapses:     prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Name: "cache_singleflight_collapsed_total", Help: "Concurrent identical cache misses that shared another's SpiceDB call."}),
		watchLag:      prometheus.NewGauge(prometheus.GaugeOpts{Namespace: ns, Name: "watch_lag_seconds", Help: "Time since the SpiceDB watch last delivered a change or checkpoint."}),
		failsafe:      prometheus.NewGauge(prometheus.GaugeOpts{Namespace: ns, Name: "cache_failsafe", Help: "1 while the cache is bypassed because the watch is down or lagging, else 0."}),
		watchRestarts: prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Name: "watch_restarts_total", Help: "Times the SpiceDB watch stream broke and was restarted."}),
	}
	m.CheckAllowed = m.CheckDuration.WithLabelValues("allowed")
	m.CheckDenied = m.CheckDuration.WithLabelValues("denied")
	m.CheckError = m.CheckDuration.WithLabelValues("error")
	reg.MustRegister(m.CheckDuration, m.hits, m.misses, m.evictions, m.bypasses, m.invalidations, m.collapses, m.watchLag, m.failsafe, m.watchRestarts)
	return m
}

func (m *Metrics) hit() {
	if m != nil {
		m.hits.Inc()
	}
}

func (m *Metrics) miss() {
	if m != nil {
		m.misses.Inc()
	}
}

func (m *Metrics) evicted() {
	if m != nil {
		m.evictions.Inc()
	}
}

func (m *Metrics) bypassed(reason string) {
	if m != nil {
		m.bypasses.WithLabelValues(reason).Inc()
	}
}

func (m *Metrics) invalidated(source string, n int) {
	if m != nil {
		m.invalidations.WithLabelValues(source).Add(float64(n))
	}
}

func (m *Metrics) collapsed() {
	if m != nil {
		m.collapses.Inc()
	}
}

func (m *Metrics) setLag(s float64) {
	if m != nil {
		m.watchLag.Set(s)
	}
}

func (m *Metrics) setFailsafe(on bool) {
	if m != nil {
		v := 0.0
		if on {
			v = 1
		}
		m.failsafe.Set(v)
	}
}

func (m *Metrics) watchRestarted() {
	if m != nil {
		m.watchRestarts.Inc()
	}
}
