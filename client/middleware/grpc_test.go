package middleware_test

import (
	"context"
	"net"
	"strings"
	"testing"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/mandate-dev/mandate/client"
	"github.com/mandate-dev/mandate/client/middleware"
	"github.com/mandate-dev/mandate/service"
)

// TestGRPCInterceptors protects a real gRPC service (the health service,
// standing in for a resource service) with the interceptors, against a
// real mandate: the health "service" name is the repo to read, and the
// agent sends its own token in the authorization metadata.
func TestGRPCInterceptors(t *testing.T) {
	w := newTokenWorld(t)
	repo := client.MustParseTemplate("repo:{owner}/{name}")
	resolve := func(ctx context.Context, method string, req any) (middleware.Target, error) {
		owner, name := "acme", "api"
		if r, ok := req.(*healthpb.HealthCheckRequest); ok {
			name = r.GetService()
		}
		res, err := repo.Expand(func(p string) (string, error) {
			if p == "owner" {
				return owner, nil
			}
			return name, nil
		})
		return middleware.Target{Permission: "read", Resource: res}, err
	}
	hc := healthService(t, middleware.GRPCOptions{Checker: w.client, Resolve: resolve, Audience: repoAudience})
	as := metadata.AppendToOutgoingContext(context.Background(), "authorization", "Bearer "+w.token, "x-correlation-id", "grpc-1")

	if _, err := hc.Check(as, &healthpb.HealthCheckRequest{Service: "api"}); err != nil {
		t.Fatalf("allowed: %v", err)
	}
	_, err := hc.Check(as, &healthpb.HealthCheckRequest{Service: "infra"})
	if st := status.Convert(err); st.Code() != codes.PermissionDenied || reasonOf(st) != "NO_GRANT" {
		t.Fatalf("denied: %v", err)
	}
	_, err = hc.Check(as, &healthpb.HealthCheckRequest{Service: "a/b"})
	if st := status.Convert(err); st.Code() != codes.PermissionDenied || reasonOf(st) != "INVALID_REQUEST" {
		t.Fatalf("a shifted id: %v", err)
	}
	if _, err := hc.Check(context.Background(), &healthpb.HealthCheckRequest{Service: "api"}); status.Code(err) != codes.Unauthenticated {
		t.Fatalf("no token: %v", err)
	}
	other, _, _ := w.m.AgentToken(w.idp, "alice", "read:repo:acme/api", nil)
	for name, tok := range map[string]string{"forged": forge(w.token), "expired": w.expired(t), "another audience": other} {
		ctx := metadata.AppendToOutgoingContext(context.Background(), "authorization", "Bearer "+tok)
		_, err := hc.Check(ctx, &healthpb.HealthCheckRequest{Service: "api"})
		if st := status.Convert(err); st.Code() != codes.Unauthenticated || reasonOf(st) != "INVALID_TOKEN" {
			t.Fatalf("%s token: %v", name, err)
		}
	}
	// A stream is checked when it opens (req is nil: the default repo).
	s, err := hc.Watch(as, &healthpb.HealthCheckRequest{Service: "api"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Recv(); err != nil {
		t.Fatalf("allowed stream: %v", err)
	}
	w.m.OK("DELETE", "/v1/agents/"+strings.TrimPrefix(w.agent, "agent:"), service.RoleOperator, nil)
	s2, err := hc.Watch(as, &healthpb.HealthCheckRequest{Service: "api"})
	if err == nil {
		_, err = s2.Recv()
	}
	if st := status.Convert(err); st.Code() != codes.PermissionDenied || reasonOf(st) != "AGENT_REVOKED" {
		t.Fatalf("stream after revocation: %v", err)
	}
	w.m.Stop()
	if _, err := hc.Check(as, &healthpb.HealthCheckRequest{Service: "api"}); status.Code(err) != codes.Unavailable {
		t.Fatalf("mandate stopped: %v", err)
	}
}

// TestGRPCTrustedMetadata: the trusted-proxy mode, chosen explicitly.
func TestGRPCTrustedMetadata(t *testing.T) {
	w := newTokenWorld(t)
	hc := healthService(t, middleware.GRPCOptions{Checker: w.client, Identify: middleware.TrustedMetadata("x-mandate-agent"),
		Resolve: func(context.Context, string, any) (middleware.Target, error) {
			return middleware.Target{Permission: "read", Resource: "repo:acme/api"}, nil
		}})
	ctx := metadata.AppendToOutgoingContext(context.Background(), "x-mandate-agent", w.agent)
	if _, err := hc.Check(ctx, &healthpb.HealthCheckRequest{Service: "api"}); err != nil {
		t.Fatalf("allowed: %v", err)
	}
	ctx = metadata.AppendToOutgoingContext(context.Background(), "authorization", "Bearer "+w.token)
	if _, err := hc.Check(ctx, &healthpb.HealthCheckRequest{Service: "api"}); status.Code(err) != codes.Unauthenticated {
		t.Fatalf("trusted-metadata mode reads no token: %v", err)
	}
}

// healthService serves the health service behind the interceptors and
// returns a client of it.
func healthService(t *testing.T, opts middleware.GRPCOptions) healthpb.HealthClient {
	t.Helper()
	unary, err := middleware.UnaryServerInterceptor(opts)
	if err != nil {
		t.Fatal(err)
	}
	stream, err := middleware.StreamServerInterceptor(opts)
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer(grpc.UnaryInterceptor(unary), grpc.StreamInterceptor(stream))
	hs := health.NewServer()
	hs.SetServingStatus("api", healthpb.HealthCheckResponse_SERVING)
	healthpb.RegisterHealthServer(srv, hs)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = srv.Serve(lis) }()
	t.Cleanup(srv.Stop)
	conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return healthpb.NewHealthClient(conn)
}

func reasonOf(st *status.Status) string {
	for _, d := range st.Details() {
		if info, ok := d.(*errdetails.ErrorInfo); ok {
			return info.GetReason()
		}
	}
	return ""
}
