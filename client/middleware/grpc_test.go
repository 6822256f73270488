package middleware_test

import (
	"context"
	"net"
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
	"github.com/mandate-dev/mandate/client/mandatetest"
	"github.com/mandate-dev/mandate/client/middleware"
	"github.com/mandate-dev/mandate/server"
	"github.com/mandate-dev/mandate/service"
)

// TestGRPCInterceptors protects a real gRPC service (the health service,
// standing in for a resource service) with the interceptors, against a
// real mandate: the health "service" name is the repo to read.
func TestGRPCInterceptors(t *testing.T) {
	m := mandatetest.New(t, server.Config{})
	s := &mandatetest.Setup{M: m}
	s.Relate("repo:acme/api#reader@user:alice", "repo:acme/web#reader@user:alice")
	agent, _ := s.Agent("user:alice", "read code", "reader")
	s.Grant(agent, "read", "repo:acme/api")
	if s.Err != nil {
		t.Fatal(s.Err)
	}
	c, err := client.New(client.Config{Addr: m.GRPCAddr, Key: mandatetest.Keys[service.RoleChecker], Plaintext: true})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	repo := client.MustParseTemplate("repo:{owner}/{name}")
	opts := middleware.GRPCOptions{
		Checker:  c,
		Identify: middleware.TrustedMetadata("x-mandate-agent"),
		Resolve: func(ctx context.Context, method string, req any) (middleware.Target, error) {
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
		},
	}
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
	hs.SetServingStatus("web", healthpb.HealthCheckResponse_SERVING)
	healthpb.RegisterHealthServer(srv, hs)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = srv.Serve(lis) }()
	defer srv.Stop()
	conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	hc := healthpb.NewHealthClient(conn)
	as := metadata.AppendToOutgoingContext(context.Background(), "x-mandate-agent", agent, "x-correlation-id", "grpc-1")

	if _, err := hc.Check(as, &healthpb.HealthCheckRequest{Service: "api"}); err != nil {
		t.Fatalf("allowed: %v", err)
	}
	_, err = hc.Check(as, &healthpb.HealthCheckRequest{Service: "web"})
	if st := status.Convert(err); st.Code() != codes.PermissionDenied || reasonOf(st) != "NO_GRANT" {
		t.Fatalf("denied: %v", err)
	}
	_, err = hc.Check(as, &healthpb.HealthCheckRequest{Service: "a/b"})
	if st := status.Convert(err); st.Code() != codes.PermissionDenied || reasonOf(st) != "INVALID_REQUEST" {
		t.Fatalf("a shifted id: %v", err)
	}
	if _, err := hc.Check(context.Background(), &healthpb.HealthCheckRequest{Service: "api"}); status.Code(err) != codes.Unauthenticated {
		t.Fatalf("no agent: %v", err)
	}
	// A stream is checked when it opens (req is nil: the default repo).
	w, err := hc.Watch(as, &healthpb.HealthCheckRequest{Service: "api"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Recv(); err != nil {
		t.Fatalf("allowed stream: %v", err)
	}
	m.Must(t, "POST", "/v1/agents/"+agent+":suspend", service.RoleOperator, map[string]any{})
	w2, err := hc.Watch(as, &healthpb.HealthCheckRequest{Service: "api"})
	if err == nil {
		_, err = w2.Recv()
	}
	if st := status.Convert(err); st.Code() != codes.PermissionDenied || reasonOf(st) != "AGENT_SUSPENDED" {
		t.Fatalf("stream after suspension: %v", err)
	}
	m.Stop()
	if _, err := hc.Check(as, &healthpb.HealthCheckRequest{Service: "api"}); status.Code(err) != codes.Unavailable {
		t.Fatalf("mandate stopped: %v", err)
	}
}

func reasonOf(st *status.Status) string {
	for _, d := range st.Details() {
		if info, ok := d.(*errdetails.ErrorInfo); ok {
			return info.GetReason()
		}
	}
	return ""
}
