package tracing_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/mandate-dev/mandate/engine/bounds"
	"github.com/mandate-dev/mandate/engine/tracing"
	"github.com/mandate-dev/mandate/internal/testenv"
	"github.com/mandate-dev/mandate/server"
	"github.com/mandate-dev/mandate/service"
)

type client struct {
	t    *testing.T
	base string
	keys map[service.Role]string
}

func (c *client) ok(method, path string, role service.Role, body any, header ...string) map[string]any {
	c.t.Helper()
	if body == nil {
		body = map[string]any{}
	}
	b, _ := json.Marshal(body)
	req, _ := http.NewRequest(method, c.base+path, bytes.NewReader(b))
	req.Header.Set("Authorization", "Bearer "+c.keys[role])
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		c.t.Fatal(err)
	}
	defer resp.Body.Close()
	var out map[string]any
	_ = json.NewDecoder(resp.Body).Decode(&out)
	if resp.StatusCode != 200 {
		c.t.Fatalf("%s %s: %d %v", method, path, resp.StatusCode, out)
	}
	return out
}

// TestTraceOfAnUncachedCheck follows one uncached agent check, sent over
// REST with the caller's traceparent, through mandate: every span joins the
// caller's trace, the layers nest as they run, SpiceDB's own spans join,
// no attribute carries an id or a context value, and the audit record (and
// its OCSF event) names the trace.
func TestTraceOfAnUncachedCheck(t *testing.T) {
	exp := tracetest.NewInMemoryExporter()
	// As mandate builds it from OTEL_*, with the in-memory exporter instead of OTLP.
	tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(tracing.Redact(exp)))
	ocsf := filepath.Join(t.TempDir(), "ocsf.jsonl")
	m := testenv.Start(t, server.Config{
		TracerProvider: tp,
		Audit:          server.AuditConfig{OCSF: ocsf},
		Bounds:         server.BoundsConfig{Defaults: bounds.Limits{ChecksPerMinute: 1000}},
	})
	c := &client{t: t, base: m.Base, keys: testenv.Keys}

	c.ok("POST", "/v1/relationships:write", service.RoleAdmin, map[string]any{"updates": []map[string]string{
		{"operation": "TOUCH", "relationship": "repo:acme/api#writer@user:alice"}}})
	task := c.ok("POST", "/v1/tasks", service.RoleOperator, map[string]any{"principal": "user:alice", "ttl": "1h"})["task"].(map[string]any)["id"].(string)
	agent := c.ok("POST", "/v1/agents", service.RoleOperator, map[string]any{"task": "task:" + task, "name": "a", "ttl": "30m"})["agent"].(map[string]any)["id"].(string)
	c.ok("POST", "/v1/grants", service.RoleOperator, map[string]any{"holder": "agent:" + agent, "permission": "write", "resource": "repo:acme/api", "ttl": "10m",
		"condition": map[string]any{"source_network": map[string]any{"cidrs": []string{"10.0.0.0/8"}}}})
	c.ok("POST", "/v1/agents/"+agent+":suspend", service.RoleOperator, nil)
	c.ok("POST", "/v1/agents/"+agent+":resume", service.RoleOperator, nil)
	exp.Reset()

	const traceID = "4bf92f3577b34da6a3ce929d0e0e4736"
	out := c.ok("POST", "/v1/check", service.RoleChecker, map[string]any{
		"subject": "agent:" + agent, "permission": "write", "resource": "repo:acme/api", "context": map[string]any{"source_ip": "10.99.88.77"},
	}, "traceparent", "00-"+traceID+"-00f067aa0ba902b7-01")
	if out["reason_code"] != "ALLOWED" {
		t.Fatalf("check: %v", out)
	}
	var spans tracetest.SpanStubs
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		spans = exp.GetSpans()
		if hasSpan(spans, "POST /v1/check") || time.Now().After(deadline) {
			break
		}
	}
	names := map[string]tracetest.SpanStub{}
	for _, s := range spans {
		if s.SpanContext.TraceID().String() != traceID {
			// Background work (the cache's watch reconnecting on a busy
			// machine) makes traces of its own; the check's spans must all
			// be in the caller's.
			if strings.HasPrefix(s.Name, "POST /v1/check") || strings.HasPrefix(s.Name, "mandate.") {
				t.Errorf("span %q is in trace %s, not the caller's", s.Name, s.SpanContext.TraceID())
			}
			continue
		}
		names[s.Name+kindSuffix(s)] = s
		for _, kv := range s.Attributes {
			v := kv.Value.Emit()
			if strings.Contains(v, agent) || strings.Contains(v, task) || strings.Contains(v, "10.99.88.77") || strings.Contains(v, "alice") {
				t.Errorf("span %q attribute %s carries an id or a context value: %s", s.Name, kv.Key, v)
			}
		}
		if strings.Contains(s.Name, agent) {
			t.Errorf("span name %q carries an id", s.Name)
		}
	}
	parentOf := func(child, parent string) {
		t.Helper()
		c, p := names[child], names[parent]
		if c.Name == "" || p.Name == "" || c.Parent.SpanID() != p.SpanContext.SpanID() {
			t.Errorf("%q is not a child of %q", child, parent)
		}
	}
	// REST calls the service in process: the decision span sits right under
	// the HTTP server span, and the decorators' spans under the decision's.
	parentOf(tracing.SpanDecide, "POST /v1/check (server)")
	parentOf(tracing.SpanCacheLookup, tracing.SpanDecide)
	parentOf(tracing.SpanBounds, tracing.SpanDecide)
	parentOf(tracing.SpanAudit, tracing.SpanDecide)
	var spicedbClient, spicedbServer int
	for _, s := range spans {
		if strings.HasPrefix(s.Name, "authzed.api.v1.") {
			if s.SpanKind.String() == "client" {
				spicedbClient++
				if p := byID(spans, s.Parent.SpanID().String()); p == nil || !within(p, names[tracing.SpanDecide], spans) {
					t.Errorf("SpiceDB call %q is not under the decision", s.Name)
				}
			} else {
				spicedbServer++
			}
		}
	}
	if spicedbClient == 0 || spicedbServer == 0 {
		t.Errorf("SpiceDB spans: %d client, %d from SpiceDB itself; want both", spicedbClient, spicedbServer)
	}
	d := attrMap(names[tracing.SpanDecide])
	if d["mandate.reason_code"] != "ALLOWED" || d["mandate.cached"] != "false" || d["mandate.subject_type"] != "agent" {
		t.Errorf("decision span attributes: %v", d)
	}
	t.Logf("one uncached agent check:\n%s", render(spans))

	// The audit record names the caller's trace, in OCSF's trace object.
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		raw, _ := os.ReadFile(ocsf)
		if bytes.Contains(raw, []byte(`"trace":{"uid":"`+traceID+`"}`)) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no OCSF event with trace.uid %s", traceID)
		}
	}
}

// kindSuffix tells apart the gateway's client span and the server's span of
// one gRPC method; internal spans keep their bare name.
func kindSuffix(s tracetest.SpanStub) string {
	if k := s.SpanKind.String(); k == "client" || k == "server" {
		return " (" + k + ")"
	}
	return ""
}

func hasSpan(spans tracetest.SpanStubs, name string) bool {
	for _, s := range spans {
		if s.Name == name {
			return true
		}
	}
	return false
}

func byID(spans tracetest.SpanStubs, id string) *tracetest.SpanStub {
	for i := range spans {
		if spans[i].SpanContext.SpanID().String() == id {
			return &spans[i]
		}
	}
	return nil
}

// within reports whether s is anc or one of its descendants.
func within(s *tracetest.SpanStub, anc tracetest.SpanStub, spans tracetest.SpanStubs) bool {
	for s != nil {
		if s.SpanContext.SpanID() == anc.SpanContext.SpanID() {
			return true
		}
		s = byID(spans, s.Parent.SpanID().String())
	}
	return false
}

func attrMap(s tracetest.SpanStub) map[string]string {
	m := map[string]string{}
	for _, kv := range s.Attributes {
		m[string(kv.Key)] = kv.Value.Emit()
	}
	return m
}

// render draws a trace as an indented tree: start offset, duration, name,
// and mandate's own attributes.
func render(spans tracetest.SpanStubs) string {
	children := map[string][]tracetest.SpanStub{}
	var start time.Time
	for _, s := range spans {
		p := s.Parent.SpanID().String()
		if byID(spans, p) == nil {
			p = ""
		}
		children[p] = append(children[p], s)
		if start.IsZero() || s.StartTime.Before(start) {
			start = s.StartTime
		}
	}
	var b strings.Builder
	var walk func(parent string, depth int)
	walk = func(parent string, depth int) {
		kids := children[parent]
		sort.Slice(kids, func(i, j int) bool { return kids[i].StartTime.Before(kids[j].StartTime) })
		for _, s := range kids {
			var extra []string
			for _, kv := range s.Attributes {
				if strings.HasPrefix(string(kv.Key), "mandate.") {
					extra = append(extra, fmt.Sprintf("%s=%s", strings.TrimPrefix(string(kv.Key), "mandate."), kv.Value.Emit()))
				}
			}
			sort.Strings(extra)
			fmt.Fprintf(&b, "%8.3fms %8.3fms  %s%s %s\n", float64(s.StartTime.Sub(start).Microseconds())/1000,
				float64(s.EndTime.Sub(s.StartTime).Microseconds())/1000, strings.Repeat("  ", depth), s.Name+kindSuffix(s), strings.Join(extra, " "))
			walk(s.SpanContext.SpanID().String(), depth+1)
		}
	}
	walk("", 0)
	return b.String()
}
