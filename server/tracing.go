package server

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"strings"
	"time"

	"go.opentelemetry.io/contrib/instrumentation/google.golang.org/grpc/otelgrpc"
	"go.opentelemetry.io/contrib/instrumentation/google.golang.org/grpc/otelgrpc/filters"
	"go.opentelemetry.io/contrib/instrumentation/net/http/otelhttp"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracegrpc"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	metricnoop "go.opentelemetry.io/otel/metric/noop"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc"

	"github.com/mandate-dev/mandate/engine/audit"
	"github.com/mandate-dev/mandate/engine/tracing"
)

// tracerProviderFromEnv builds an OTLP tracer provider from the standard
// OTEL_* environment variables, or returns nil when they do not ask for
// traces: tracing is off unless OTEL_TRACES_EXPORTER=otlp or an OTLP
// endpoint (OTEL_EXPORTER_OTLP_ENDPOINT, OTEL_EXPORTER_OTLP_TRACES_ENDPOINT)
// is set, and OTEL_SDK_DISABLED=true or OTEL_TRACES_EXPORTER=none turn it
// off. The protocol is OTEL_EXPORTER_OTLP_TRACES_PROTOCOL or
// OTEL_EXPORTER_OTLP_PROTOCOL (http/protobuf by default, or grpc); the
// exporter reads the endpoint, headers and TLS settings, and the SDK the
// sampler (OTEL_TRACES_SAMPLER), batching and limits, from the same
// variables. OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES name the service.
func tracerProviderFromEnv(ctx context.Context) (*sdktrace.TracerProvider, error) {
	if strings.EqualFold(os.Getenv("OTEL_SDK_DISABLED"), "true") {
		return nil, nil
	}
	switch exp := strings.TrimSpace(os.Getenv("OTEL_TRACES_EXPORTER")); exp {
	case "none":
		return nil, nil
	case "":
		if os.Getenv("OTEL_EXPORTER_OTLP_ENDPOINT") == "" && os.Getenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") == "" {
			return nil, nil
		}
	case "otlp":
	default:
		return nil, fmt.Errorf("OTEL_TRACES_EXPORTER=%q: mandate exports traces over OTLP only (otlp or none)", exp)
	}
	protocol := os.Getenv("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
	if protocol == "" {
		protocol = os.Getenv("OTEL_EXPORTER_OTLP_PROTOCOL")
	}
	var (
		exporter sdktrace.SpanExporter
		err      error
	)
	switch protocol {
	case "", "http/protobuf":
		exporter, err = otlptracehttp.New(ctx)
	case "grpc":
		exporter, err = otlptracegrpc.New(ctx)
	default:
		return nil, fmt.Errorf("OTEL_EXPORTER_OTLP_PROTOCOL=%q: use http/protobuf or grpc", protocol)
	}
	if err != nil {
		return nil, fmt.Errorf("OTLP trace exporter: %w", err)
	}
	res, err := resource.New(ctx,
		resource.WithAttributes(attribute.String("service.name", "mandate"), attribute.String("service.version", audit.ProductVersion)),
		resource.WithFromEnv(), resource.WithTelemetrySDK())
	if err != nil && !errors.Is(err, resource.ErrPartialResource) {
		return nil, fmt.Errorf("OTEL_RESOURCE_ATTRIBUTES: %w", err)
	}
	return sdktrace.NewTracerProvider(sdktrace.WithBatcher(tracing.Redact(exporter)), sdktrace.WithResource(res)), nil
}

// propagator reads and writes W3C traceparent, and nothing else: baggage
// could carry personal data into every span.
var propagator = propagation.TraceContext{}

// setupTracing picks the tracer provider (Config.TracerProvider, else the
// environment's) and returns nil when tracing is off. The embedded SpiceDB
// instruments itself with the global provider and propagator only, so they
// are set too: that is how its spans join mandate's traces.
func (s *Server) setupTracing(ctx context.Context, c Config) (trace.TracerProvider, error) {
	if c.TracerProvider != nil {
		otel.SetTracerProvider(c.TracerProvider)
		otel.SetTextMapPropagator(propagator)
		return c.TracerProvider, nil
	}
	tp, err := tracerProviderFromEnv(ctx)
	if err != nil || tp == nil {
		return nil, err
	}
	// Spans still buffered are exported before the process ends.
	s.closers = append(s.closers, func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		return tp.Shutdown(ctx)
	})
	otel.SetTracerProvider(tp)
	otel.SetTextMapPropagator(propagator)
	c.Log.Info("tracing: exporting spans over OTLP")
	return tp, nil
}

func otelgrpcOptions(tp trace.TracerProvider) []otelgrpc.Option {
	return []otelgrpc.Option{
		otelgrpc.WithTracerProvider(tp), otelgrpc.WithPropagators(propagator),
		otelgrpc.WithMeterProvider(metricnoop.NewMeterProvider()), // metrics are Prometheus's
		otelgrpc.WithFilter(filters.Not(filters.HealthCheck())),
	}
}

// grpcServerTracing is a span per gRPC call, joining the caller's trace.
func grpcServerTracing(tp trace.TracerProvider) []grpc.ServerOption {
	if tp == nil {
		return nil
	}
	return []grpc.ServerOption{grpc.StatsHandler(otelgrpc.NewServerHandler(otelgrpcOptions(tp)...))}
}

// grpcClientTracing is a span per call to SpiceDB (and from the gateway to
// mandate's gRPC server), carrying the trace on.
func grpcClientTracing(tp trace.TracerProvider) []grpc.DialOption {
	if tp == nil {
		return nil
	}
	return []grpc.DialOption{grpc.WithStatsHandler(otelgrpc.NewClientHandler(otelgrpcOptions(tp)...))}
}

// httpTracing is a span per REST or AuthZEN call, joining the caller's
// trace. Ids in paths are personal data, so the span sees the route with
// every id replaced by {id} (/v1/agents/{id}:suspend); the handler itself
// gets the request as it came.
func httpTracing(tp trace.TracerProvider, next http.Handler) http.Handler {
	if tp == nil {
		return next
	}
	type origURL struct{}
	inner := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r2, ok := r.Context().Value(origURL{}).(*http.Request); ok {
			r2 = r2.WithContext(r.Context())
			next.ServeHTTP(w, r2)
			return
		}
		next.ServeHTTP(w, r)
	})
	traced := otelhttp.NewHandler(inner, "mandate.http",
		otelhttp.WithTracerProvider(tp), otelhttp.WithPropagators(propagator),
		otelhttp.WithMeterProvider(metricnoop.NewMeterProvider()),
		otelhttp.WithSpanNameFormatter(func(_ string, r *http.Request) string { return r.Method + " " + r.URL.Path }),
		otelhttp.WithFilter(func(r *http.Request) bool { return r.URL.Path != "/healthz" && r.URL.Path != "/metrics" }))
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		route := redactIDs(r.URL.Path)
		if route == r.URL.Path {
			traced.ServeHTTP(w, r)
			return
		}
		shown := r.WithContext(context.WithValue(r.Context(), origURL{}, r))
		u := *r.URL
		u.Path, u.RawPath, u.RawQuery = route, "", ""
		shown.URL = &u
		traced.ServeHTTP(w, shown)
	})
}

// redactIDs replaces the id in /v1/<collection>/<id>[:verb][/…] by {id};
// /v1/review/… and /v1/search/… name reports and searches, not objects.
func redactIDs(path string) string {
	segs := strings.SplitN(path, "/", 5) // "", "v1", collection, id[:verb], rest
	if len(segs) < 4 || segs[1] != "v1" || segs[3] == "" || segs[2] == "review" || segs[2] == "search" {
		return path
	}
	_, verb, hasVerb := strings.Cut(segs[3], ":")
	segs[3] = "{id}"
	if hasVerb {
		segs[3] += ":" + verb
	}
	return strings.Join(segs, "/")
}
