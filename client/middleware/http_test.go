package middleware_test

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/mandate-dev/mandate/client"
	"github.com/mandate-dev/mandate/client/mandatetest"
	"github.com/mandate-dev/mandate/client/middleware"
	"github.com/mandate-dev/mandate/server"
	"github.com/mandate-dev/mandate/service"
)

func TestCorrelation(t *testing.T) {
	for _, tc := range []struct{ corr, tp, want string }{
		{"deploy-42", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", "deploy-42"},
		{"", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", "4bf92f3577b34da6a3ce929d0e0e4736"},
		{"", "00-00000000000000000000000000000000-00f067aa0ba902b7-01", ""},
		{"", "garbage", ""},
	} {
		h := map[string]string{"x-correlation-id": tc.corr, "traceparent": tc.tp}
		if got := middleware.Correlation(func(n string) string { return h[n] }); got != tc.want {
			t.Errorf("%v: %q, want %q", h, got, tc.want)
		}
	}
}

// TestHTTPNoIdentityByDefault: with no Identify option, no header is
// trusted and every request is 401, before mandate is even asked (the
// client here points nowhere).
func TestHTTPNoIdentityByDefault(t *testing.T) {
	c, err := client.New(client.Config{Addr: "127.0.0.1:1", Key: "k", Plaintext: true})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	mw, err := middleware.HTTP(middleware.HTTPOptions{Checker: c, Resolve: middleware.PathTemplate("read", "repo:{owner}/{name}")})
	if err != nil {
		t.Fatal(err)
	}
	called := false
	h := mw(http.HandlerFunc(func(http.ResponseWriter, *http.Request) { called = true }))
	req := httptest.NewRequest("GET", "/repos/acme/api", nil)
	req.Header.Set("X-Mandate-Agent", "agt_1")
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	if rec.Code != 401 || rec.Header().Get("WWW-Authenticate") != `Bearer realm="mandate"` || called {
		t.Fatalf("%d %v called=%v", rec.Code, rec.Header(), called)
	}
	// With an identity but mandate unreachable: 503, never the handler.
	mw, _ = middleware.HTTP(middleware.HTTPOptions{Checker: c, Resolve: func(*http.Request) (middleware.Target, error) {
		return middleware.Target{Permission: "read", Resource: "repo:acme/api"}, nil
	}, Identify: middleware.TrustedHeader("X-Mandate-Agent")})
	rec = httptest.NewRecorder()
	mw(http.HandlerFunc(func(http.ResponseWriter, *http.Request) { called = true })).ServeHTTP(rec, req)
	if rec.Code != 503 || called {
		t.Fatalf("mandate unreachable: %d called=%v", rec.Code, called)
	}
}

// TestHTTPInvalidIsADeny: a check mandate refuses as invalid (a permission
// the schema lacks) is a 403, not an outage and never a pass-through.
func TestHTTPInvalidIsADeny(t *testing.T) {
	m := mandatetest.New(t, server.Config{})
	c, err := client.New(client.Config{Addr: m.GRPCAddr, Key: mandatetest.Keys[service.RoleChecker], Plaintext: true})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	mw, err := middleware.HTTP(middleware.HTTPOptions{Checker: c, Resolve: middleware.PathTemplate("fly", "repo:{owner}/{name}"), Identify: middleware.TrustedHeader("X-Mandate-Agent")})
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	called := false
	mux.Handle("GET /repos/{owner}/{name}", mw(http.HandlerFunc(func(http.ResponseWriter, *http.Request) { called = true })))
	req := httptest.NewRequest("GET", "/repos/acme/api", nil)
	req.Header.Set("X-Mandate-Agent", "agt_1")
	rec := httptest.NewRecorder()
	mux.ServeHTTP(rec, req)
	if rec.Code != 403 || !strings.Contains(rec.Body.String(), "INVALID_REQUEST") || called {
		t.Fatalf("%d %s called=%v", rec.Code, rec.Body, called)
	}
}
