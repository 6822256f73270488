package tracing

import (
	"context"
	"strings"

	"go.opentelemetry.io/otel/attribute"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
)

// keptAttributes are the attribute key prefixes a span keeps on its way out.
// Everything else is dropped: the embedded SpiceDB's own spans, which join
// mandate's traces, name the objects and subjects they dispatch (agent,
// task and user ids), and error texts can quote ids too.
var keptAttributes = []string{
	"mandate.", "rpc.", "http.", "network.", "server.", "client.", "url.scheme", "url.path", "user_agent.",
	"error.type", "otel.", "grpc.", "db.system", "db.operation",
}

func kept(k attribute.Key) bool {
	for _, p := range keptAttributes {
		if strings.HasPrefix(string(k), p) {
			return true
		}
	}
	return false
}

// Redact wraps an exporter so that every span it sees keeps only the
// attributes mandate knows to carry no ids or context values (see
// keptAttributes), its events only their names, and its status only its
// code. mandate's own attributes are safe by construction; this catches
// the libraries' (SpiceDB's dispatch spans name subjects and resources).
func Redact(next sdktrace.SpanExporter) sdktrace.SpanExporter { return redacting{next} }

type redacting struct{ next sdktrace.SpanExporter }

func (r redacting) ExportSpans(ctx context.Context, spans []sdktrace.ReadOnlySpan) error {
	out := make([]sdktrace.ReadOnlySpan, len(spans))
	for i, s := range spans {
		out[i] = redactedSpan{s}
	}
	return r.next.ExportSpans(ctx, out)
}

func (r redacting) Shutdown(ctx context.Context) error { return r.next.Shutdown(ctx) }

type redactedSpan struct{ sdktrace.ReadOnlySpan }

func (s redactedSpan) Attributes() []attribute.KeyValue {
	in := s.ReadOnlySpan.Attributes()
	out := make([]attribute.KeyValue, 0, len(in))
	for _, kv := range in {
		if kept(kv.Key) {
			out = append(out, kv)
		}
	}
	return out
}

func (s redactedSpan) Events() []sdktrace.Event {
	in := s.ReadOnlySpan.Events()
	out := make([]sdktrace.Event, len(in))
	for i, e := range in {
		out[i] = sdktrace.Event{Name: e.Name, Time: e.Time}
	}
	return out
}

func (s redactedSpan) Status() sdktrace.Status {
	return sdktrace.Status{Code: s.ReadOnlySpan.Status().Code}
}
