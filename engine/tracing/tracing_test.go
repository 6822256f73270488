package tracing_test

import (
	"context"
	"errors"
	"testing"

	"go.opentelemetry.io/otel/attribute"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/mandate-dev/mandate/engine"
	"github.com/mandate-dev/mandate/engine/tracing"
)

type fakeDecider struct {
	d   engine.Decision
	err error
	// sawSpan reports whether the inner decider ran inside the decision span.
	sawSpan bool
}

func (f *fakeDecider) Decide(ctx context.Context, q engine.Query) (engine.Decision, error) {
	_, child := tracing.Start(ctx, tracing.SpanCacheLookup)
	f.sawSpan = child.IsRecording()
	child.End()
	return f.d, f.err
}

func attrs(s sdktrace.ReadOnlySpan) map[attribute.Key]attribute.Value {
	m := map[attribute.Key]attribute.Value{}
	for _, kv := range s.Attributes() {
		m[kv.Key] = kv.Value
	}
	return m
}

func TestDeciderSpan(t *testing.T) {
	q := engine.Query{Subject: engine.Ref{Type: "agent", ID: "agt_secret"}, Permission: "write", Resource: engine.Ref{Type: "repo", ID: "acme/private"}}
	cases := []struct {
		name string
		d    engine.Decision
		err  error
		want map[attribute.Key]string
	}{
		{"allowed from the cache", engine.Decision{Allowed: true, Reason: "ALLOWED", Cached: true}, nil, map[attribute.Key]string{
			tracing.AttrAllowed: "true", tracing.AttrReason: "ALLOWED", tracing.AttrCached: "true", tracing.AttrSubjectType: "agent",
			tracing.AttrPermission: "write", tracing.AttrResourceType: "repo", tracing.AttrLeg: "",
		}},
		{"denied at the grant leg", engine.Decision{Reason: "CONDITION_FAILED"}, nil, map[attribute.Key]string{
			tracing.AttrAllowed: "false", tracing.AttrReason: "CONDITION_FAILED", tracing.AttrLeg: "grant", tracing.AttrCached: "false",
		}},
		{"error", engine.Decision{}, errors.New("spicedb down: agent agt_secret"), map[attribute.Key]string{
			tracing.AttrAllowed: "", tracing.AttrReason: "",
		}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			exp := tracetest.NewInMemoryExporter()
			tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(exp))
			inner := &fakeDecider{d: c.d, err: c.err}
			if _, err := tracing.NewDecider(inner, tp).Decide(context.Background(), q); !errors.Is(err, c.err) {
				t.Fatalf("error %v, want %v", err, c.err)
			}
			spans := exp.GetSpans().Snapshots()
			if len(spans) != 2 || spans[1].Name() != tracing.SpanDecide || spans[0].Name() != tracing.SpanCacheLookup || !inner.sawSpan {
				t.Fatalf("spans: %v", spans)
			}
			if spans[0].Parent().SpanID() != spans[1].SpanContext().SpanID() {
				t.Fatal("the cache lookup is not a child of the decision")
			}
			got := attrs(spans[1])
			for k, want := range c.want {
				if v, ok := got[k]; (want == "") == ok || ok && v.Emit() != want {
					t.Errorf("%s = %v (present %v), want %q", k, v.Emit(), ok, want)
				}
			}
			for _, s := range spans {
				for _, kv := range s.Attributes() {
					if v := kv.Value.Emit(); v == "agt_secret" || v == "acme/private" {
						t.Errorf("attribute %s carries an id: %s", kv.Key, v)
					}
				}
				if s.Status().Description != "" && c.err != nil && s.Status().Description == c.err.Error() {
					t.Error("the span status carries the error text, which can name ids")
				}
			}
		})
	}
}

// TestStartWithoutTracing: with no recording span, Start changes nothing and
// its span is inert; and an unsampled trace still has its id.
func TestStartWithoutTracing(t *testing.T) {
	ctx := context.Background()
	got, span := tracing.Start(ctx, tracing.SpanAudit)
	if got != ctx || span.IsRecording() || span.SpanContext().IsValid() {
		t.Fatal("Start without a parent made a span")
	}
	span.End()
	if tracing.TraceID(ctx) != "" {
		t.Fatal("a trace id without a trace")
	}
	tp := sdktrace.NewTracerProvider(sdktrace.WithSampler(sdktrace.NeverSample()))
	ctx, root := tp.Tracer("t").Start(ctx, "root")
	defer root.End()
	if _, child := tracing.Start(ctx, tracing.SpanAudit); child.IsRecording() {
		t.Fatal("a child of an unsampled span records")
	}
	if id := tracing.TraceID(ctx); len(id) != 32 || id != root.SpanContext().TraceID().String() {
		t.Fatalf("trace id %q of an unsampled trace", id)
	}
}
