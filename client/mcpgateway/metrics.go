package mcpgateway

import (
	"encoding/json"
	"net/http"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

type metrics struct {
	requests   *prometheus.CounterVec
	check      *prometheus.HistogramVec
	upstream   *prometheus.HistogramVec
	upstreamUp *prometheus.GaugeVec
}

func newMetrics(reg *prometheus.Registry) *metrics {
	m := &metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "mandate", Subsystem: "mcp_gateway", Name: "requests_total",
			Help: "MCP requests by method and outcome: allowed, denied (by mandate), refused (no rule or bad arguments), unavailable (mandate could not answer), upstream_error, listed, unauthenticated."},
			[]string{"method", "outcome"}),
		check: prometheus.NewHistogramVec(prometheus.HistogramOpts{Namespace: "mandate", Subsystem: "mcp_gateway", Name: "check_duration_seconds",
			Help: "Time spent asking mandate, per MCP method.", Buckets: []float64{.0002, .0005, .001, .002, .005, .01, .025, .05, .1, .25, 1}},
			[]string{"method"}),
		upstream: prometheus.NewHistogramVec(prometheus.HistogramOpts{Namespace: "mandate", Subsystem: "mcp_gateway", Name: "upstream_duration_seconds",
			Help: "Time the upstream MCP server took to answer a forwarded request.", Buckets: prometheus.DefBuckets},
			[]string{"upstream"}),
		upstreamUp: prometheus.NewGaugeVec(prometheus.GaugeOpts{Namespace: "mandate", Subsystem: "mcp_gateway", Name: "upstream_up",
			Help: "1 while the gateway holds a live session with the upstream."}, []string{"upstream"}),
	}
	reg.MustRegister(m.requests, m.check, m.upstream, m.upstreamUp, collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}
