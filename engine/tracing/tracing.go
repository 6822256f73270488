// Package tracing puts OpenTelemetry spans on the decision path: a decorator
// for engine.Decider, and child spans for the layers around it (cache
// lookup, bounds, audit). Attributes say how a decision went, never whom it
// was about: ids and context values are personal data.
package tracing

import (
	"context"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"

	"github.com/mandate-dev/mandate/engine"
)

// ScopeName is the instrumentation scope of mandate's own spans.
const ScopeName = "github.com/mandate-dev/mandate"

// Span names.
const (
	SpanDecide      = "mandate.decide"
	SpanCacheLookup = "mandate.cache.lookup"
	SpanBounds      = "mandate.bounds"
	SpanAudit       = "mandate.audit"
)

// Attribute keys. Each is a category, never an id or a context value.
const (
	AttrSubjectType  = attribute.Key("mandate.subject_type")  // "agent" or "user"
	AttrPermission   = attribute.Key("mandate.permission")    // a schema name, such as "read"
	AttrResourceType = attribute.Key("mandate.resource_type") // a schema name, such as "repo"
	AttrAllowed      = attribute.Key("mandate.allowed")
	AttrReason       = attribute.Key("mandate.reason_code")
	AttrLeg          = attribute.Key("mandate.failed_leg")
	AttrCached       = attribute.Key("mandate.cached")
	AttrCacheHit     = attribute.Key("mandate.cache.hit")
)

// Decider is an engine.Decider that puts each decision in a span.
type Decider struct {
	next   engine.Decider
	tracer trace.Tracer
}

// NewDecider wraps next. tp must not be nil.
func NewDecider(next engine.Decider, tp trace.TracerProvider) *Decider {
	return &Decider{next: next, tracer: tp.Tracer(ScopeName)}
}

// Decide implements engine.Decider.
func (d *Decider) Decide(ctx context.Context, q engine.Query) (engine.Decision, error) {
	if sc := trace.SpanContextFromContext(ctx); sc.IsValid() && !sc.IsSampled() {
		// The request is not sampled, so neither is its decision: skip
		// starting a span that would record nothing. Cached checks are
		// hot, and starting one costs more than the cache lookup.
		return d.next.Decide(ctx, q)
	}
	ctx, span := d.tracer.Start(ctx, SpanDecide, trace.WithSpanKind(trace.SpanKindInternal))
	defer span.End()
	dec, err := d.next.Decide(ctx, q)
	if span.IsRecording() {
		// Attributes cost only on sampled spans.
		span.SetAttributes(
			AttrSubjectType.String(q.Subject.Type), AttrPermission.String(q.Permission), AttrResourceType.String(q.Resource.Type),
			AttrCached.Bool(dec.Cached),
		)
		if err != nil {
			span.SetStatus(codes.Error, "decision failed")
		} else {
			span.SetAttributes(AttrAllowed.Bool(dec.Allowed), AttrReason.String(string(dec.Reason)))
			if leg := dec.Reason.Leg(); leg != "" {
				span.SetAttributes(AttrLeg.String(leg))
			}
		}
	}
	return dec, err
}

// noSpan is what Start returns when there is nothing to trace; ending it
// does nothing.
var noSpan = trace.SpanFromContext(context.Background())

// Start starts a child span of the recording span in ctx, with the provider
// that made it, for the layers around the decision (the cache lookup, bounds,
// audit). Without a recording span (tracing off, or this trace not sampled)
// it returns ctx unchanged and a span whose End does nothing, at the cost
// of one context lookup.
func Start(ctx context.Context, name string, attrs ...attribute.KeyValue) (context.Context, trace.Span) {
	parent := trace.SpanFromContext(ctx)
	if !parent.IsRecording() {
		return ctx, noSpan
	}
	return parent.TracerProvider().Tracer(ScopeName).Start(ctx, name, trace.WithAttributes(attrs...))
}

// TraceID is the W3C trace id of the span in ctx (32 hex digits), or ""
// when there is none. Unsampled traces have one too, so the audit record
// names the caller's trace whether or not mandate recorded it.
func TraceID(ctx context.Context) string {
	sc := trace.SpanContextFromContext(ctx)
	if !sc.HasTraceID() {
		return ""
	}
	return sc.TraceID().String()
}
