package middleware_test

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/mandate-dev/mandate/client"
	"github.com/mandate-dev/mandate/client/middleware"
	"github.com/mandate-dev/mandate/credential"
	"github.com/mandate-dev/mandate/internal/testenv"
)

// bindingFixture: a CA, the agent's certificate and another one, and agent
// tokens issued by mandate's own token code, one bound to the agent's
// certificate and one unbound. The Checker points nowhere: a request that
// gets past the binding check asks mandate and is answered 503 /
// Unavailable, so a 401 / Unauthenticated proves mandate was never asked.
type bindingFixture struct {
	ca                   *testenv.CA
	server, agent, other testenv.Leaf
	bound, unbound       string
	checker              *client.Client
}

func newBindingFixture(t *testing.T) *bindingFixture {
	ca := testenv.NewCA(t, "mesh")
	f := &bindingFixture{ca: ca, server: ca.Issue(t, "repo-service", true, nil),
		agent: ca.Issue(t, "agent-runtime", false, nil, "spiffe://acme.internal/ns/agents/sa/runner"),
		other: ca.Issue(t, "other-runtime", false, nil, "spiffe://acme.internal/ns/agents/sa/other")}
	key, err := credential.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	ks, err := credential.NewKeySet(key)
	if err != nil {
		t.Fatal(err)
	}
	tokens, err := credential.NewTokens(credential.TokensConfig{Issuer: "https://mandate.test", Keys: ks})
	if err != nil {
		t.Fatal(err)
	}
	in := credential.IssueInput{Subject: "user:alice", Agents: []string{"agent:agt_1"}, Task: "task:tsk_1", ClientID: "runtime"}
	if f.unbound, _, err = tokens.Issue(in); err != nil {
		t.Fatal(err)
	}
	in.CertThumbprint = credential.CertThumbprint(f.agent.Der())
	if f.bound, _, err = tokens.Issue(in); err != nil {
		t.Fatal(err)
	}
	if f.checker, err = client.New(client.Config{Addr: "127.0.0.1:1", Key: "k", Plaintext: true, Attempts: 1}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = f.checker.Close() })
	return f
}

// TestHTTPCertificateBoundToken: a bearer token bound to a certificate
// (cnf.x5t#S256) is refused with 401 invalid_token, without asking mandate,
// when the request's TLS connection presents no client certificate or
// another one; with the right certificate, or for an unbound token, the
// request goes on to mandate.
func TestHTTPCertificateBoundToken(t *testing.T) {
	f := newBindingFixture(t)
	mw, err := middleware.HTTP(middleware.HTTPOptions{Checker: f.checker, Identify: middleware.TrustedHeader("X-Mandate-Agent"),
		Resolve: func(*http.Request) (middleware.Target, error) {
			return middleware.Target{Permission: "read", Resource: "repo:acme/api"}, nil
		}})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewUnstartedServer(mw(http.HandlerFunc(func(http.ResponseWriter, *http.Request) {
		t.Error("the handler ran")
	})))
	srv.TLS = &tls.Config{Certificates: []tls.Certificate{f.server.TLS}, ClientAuth: tls.RequestClientCert}
	srv.StartTLS()
	defer srv.Close()

	for _, c := range []struct {
		name    string
		cert    *testenv.Leaf
		token   string
		want    int
		invalid bool
	}{
		{"bound token, no client certificate", nil, f.bound, 401, true},
		{"bound token, another certificate", &f.other, f.bound, 401, true},
		{"bound token, its certificate", &f.agent, f.bound, 503, false},
		{"unbound token, no certificate", nil, f.unbound, 503, false},
		{"no token", nil, "", 503, false},
		{"not a JWS", nil, "opaque-token", 503, false},
	} {
		req, _ := http.NewRequest("GET", srv.URL+"/repos/acme/api", nil)
		req.Header.Set("X-Mandate-Agent", "agt_1")
		if c.token != "" {
			req.Header.Set("Authorization", "Bearer "+c.token)
		}
		resp, err := testenv.MTLSClient(f.ca, c.cert).Do(req)
		if err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		var body map[string]any
		_ = json.NewDecoder(resp.Body).Decode(&body)
		resp.Body.Close()
		if resp.StatusCode != c.want {
			t.Errorf("%s: %d %v, want %d", c.name, resp.StatusCode, body, c.want)
			continue
		}
		if c.invalid && (body["error"] != "invalid_token" || !strings.Contains(resp.Header.Get("WWW-Authenticate"), `error="invalid_token"`)) {
			t.Errorf("%s: body %v, WWW-Authenticate %q, want invalid_token", c.name, body, resp.Header.Get("WWW-Authenticate"))
		}
	}
}

// TestGRPCCertificateBoundToken: the same over gRPC: Unauthenticated
// without the token's certificate, and mandate is asked (Unavailable here)
// with it.
func TestGRPCCertificateBoundToken(t *testing.T) {
	f := newBindingFixture(t)
	icpt, err := middleware.UnaryServerInterceptor(middleware.GRPCOptions{Checker: f.checker, Identify: middleware.TrustedMetadata("x-mandate-agent"),
		Resolve: func(context.Context, string, any) (middleware.Target, error) {
			return middleware.Target{Permission: "read", Resource: "repo:acme/api"}, nil
		}})
	if err != nil {
		t.Fatal(err)
	}
	gs := grpc.NewServer(grpc.Creds(credentials.NewTLS(&tls.Config{Certificates: []tls.Certificate{f.server.TLS}, ClientAuth: tls.RequestClientCert})),
		grpc.UnaryInterceptor(icpt))
	healthpb.RegisterHealthServer(gs, health.NewServer())
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = gs.Serve(lis) }()
	defer gs.Stop()

	call := func(cert *testenv.Leaf, token string) codes.Code {
		cfg := &tls.Config{RootCAs: f.ca.Pool()}
		if cert != nil {
			cfg.Certificates = []tls.Certificate{cert.TLS}
		}
		conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(credentials.NewTLS(cfg)))
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		ctx := metadata.AppendToOutgoingContext(context.Background(), "x-mandate-agent", "agt_1", "authorization", "Bearer "+token)
		_, err = healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{})
		return status.Code(err)
	}
	for _, c := range []struct {
		name  string
		cert  *testenv.Leaf
		token string
		want  codes.Code
	}{
		{"bound token, no client certificate", nil, f.bound, codes.Unauthenticated},
		{"bound token, another certificate", &f.other, f.bound, codes.Unauthenticated},
		{"bound token, its certificate", &f.agent, f.bound, codes.Unavailable},
		{"unbound token", nil, f.unbound, codes.Unavailable},
	} {
		if got := call(c.cert, c.token); got != c.want {
			t.Errorf("%s: %v, want %v", c.name, got, c.want)
		}
	}
}
