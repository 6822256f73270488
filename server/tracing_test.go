package server

import (
	"context"
	"testing"
)

// TestTracingFromEnv: tracing is off unless the OTEL_* variables ask for it.
func TestTracingFromEnv(t *testing.T) {
	vars := []string{"OTEL_SDK_DISABLED", "OTEL_TRACES_EXPORTER", "OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
		"OTEL_EXPORTER_OTLP_PROTOCOL", "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL"}
	cases := []struct {
		name    string
		env     map[string]string
		on, err bool
	}{
		{"nothing set", nil, false, false},
		{"an endpoint", map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318"}, true, false},
		{"a traces endpoint over grpc", map[string]string{"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://127.0.0.1:4317", "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"}, true, false},
		{"exporter otlp", map[string]string{"OTEL_TRACES_EXPORTER": "otlp"}, true, false},
		{"exporter none wins", map[string]string{"OTEL_TRACES_EXPORTER": "none", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318"}, false, false},
		{"sdk disabled wins", map[string]string{"OTEL_SDK_DISABLED": "true", "OTEL_TRACES_EXPORTER": "otlp"}, false, false},
		{"an exporter mandate lacks", map[string]string{"OTEL_TRACES_EXPORTER": "zipkin"}, false, true},
		{"a protocol mandate lacks", map[string]string{"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_PROTOCOL": "http/json"}, false, true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			for _, v := range vars {
				t.Setenv(v, c.env[v])
			}
			tp, err := tracerProviderFromEnv(context.Background())
			if (err != nil) != c.err || (tp != nil) != c.on {
				t.Fatalf("provider %v, error %v; want on=%v error=%v", tp, err, c.on, c.err)
			}
			if tp != nil {
				_ = tp.Shutdown(context.Background())
			}
		})
	}
}

func TestRedactIDs(t *testing.T) {
	for in, want := range map[string]string{
		"/v1/check":                           "/v1/check",
		"/v1/agents:freeze-all":               "/v1/agents:freeze-all",
		"/v1/agents/agt_x:suspend":            "/v1/agents/{id}:suspend",
		"/v1/agents/agt_x":                    "/v1/agents/{id}",
		"/v1/agents/agt_x/access":             "/v1/agents/{id}/access",
		"/v1/principals/alice:suspend-agents": "/v1/principals/{id}:suspend-agents",
		"/v1/tasks/tsk_1:complete":            "/v1/tasks/{id}:complete",
		"/access/v1/evaluation":               "/access/v1/evaluation",
		"/v1/search/subjects":                 "/v1/search/subjects",
		"/v1/grants/grt_1":                    "/v1/grants/{id}",
		"/v1/review/unused-grants":            "/v1/review/unused-grants",
	} {
		if got := redactIDs(in); got != want {
			t.Errorf("redactIDs(%q) = %q, want %q", in, got, want)
		}
	}
}
