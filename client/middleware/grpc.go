package middleware

import (
	"context"
	"errors"
	"log/slog"
	"strings"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/mandate-dev/mandate/client"
)

// GRPCResolver maps a call to what it asks to do. For a stream, req is nil:
// the target must follow from the method (and metadata) alone, because the
// check happens before the handler reads any message. An error refuses the
// call with PermissionDenied.
type GRPCResolver func(ctx context.Context, fullMethod string, req any) (Target, error)

// GRPCIdentity establishes which agent makes the call.
type GRPCIdentity func(ctx context.Context) (Agent, error)

// BearerMetadata is the default gRPC identity: the agent's own mandate token
// from the "authorization: Bearer <token>" metadata, which mandate verifies
// on every check.
func BearerMetadata() GRPCIdentity {
	return func(ctx context.Context) (Agent, error) {
		md, _ := metadata.FromIncomingContext(ctx)
		t, err := bearerToken(md.Get("authorization"))
		return Agent{Token: t}, err
	}
}

// TrustedMetadata reads the agent id from incoming metadata set by a
// trusted proxy, for deployments whose agents carry no mandate token, with
// the same warning as TrustedHeader.
func TrustedMetadata(key string) GRPCIdentity {
	key = strings.ToLower(key)
	return func(ctx context.Context) (Agent, error) {
		md, _ := metadata.FromIncomingContext(ctx)
		vs := md.Get(key)
		if len(vs) != 1 {
			return Agent{}, ErrNoAgent
		}
		sub, err := AgentSubject(vs[0])
		return Agent{Subject: sub}, err
	}
}

// GRPCOptions configures the interceptors.
type GRPCOptions struct {
	// Checker asks mandate. Required.
	Checker Checker
	// Resolve maps each call to (permission, resource). Required.
	Resolve GRPCResolver
	// Identify says which agent acts. Default BearerMetadata().
	Identify GRPCIdentity
	// Audience, when set, refuses a token whose aud does not name it (see
	// HTTPOptions.Audience).
	Audience string
	// Log receives refusals and errors. Default slog.Default().
	Log *slog.Logger
}

// ErrorDomain is the ErrorInfo domain of a deny.
const ErrorDomain = "mandate.dev"

type grpcGuard struct{ GRPCOptions }

func newGRPCGuard(o GRPCOptions) (*grpcGuard, error) {
	if o.Checker == nil || o.Resolve == nil {
		return nil, errors.New("middleware: Checker and Resolve are required")
	}
	if o.Identify == nil {
		o.Identify = BearerMetadata()
	}
	if o.Log == nil {
		o.Log = slog.Default()
	}
	return &grpcGuard{o}, nil
}

// UnaryServerInterceptor checks every unary call: Unauthenticated when no
// agent can be established, PermissionDenied with an ErrorInfo whose reason
// is the reason code on a deny, Unavailable when mandate cannot answer.
func UnaryServerInterceptor(o GRPCOptions) (grpc.UnaryServerInterceptor, error) {
	g, err := newGRPCGuard(o)
	if err != nil {
		return nil, err
	}
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		ctx, err := g.authorize(ctx, info.FullMethod, req)
		if err != nil {
			return nil, err
		}
		return handler(ctx, req)
	}, nil
}

// StreamServerInterceptor checks every stream once, when it opens.
func StreamServerInterceptor(o GRPCOptions) (grpc.StreamServerInterceptor, error) {
	g, err := newGRPCGuard(o)
	if err != nil {
		return nil, err
	}
	return func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
		ctx, err := g.authorize(ss.Context(), info.FullMethod, nil)
		if err != nil {
			return err
		}
		return handler(srv, &decidedStream{ServerStream: ss, ctx: ctx})
	}, nil
}

type decidedStream struct {
	grpc.ServerStream
	ctx context.Context
}

func (s *decidedStream) Context() context.Context { return s.ctx }

func (g *grpcGuard) authorize(ctx context.Context, method string, req any) (context.Context, error) {
	if err := grpcBinding(ctx); err != nil { // RFC 8705: binding.go
		return nil, status.Error(codes.Unauthenticated, "invalid_token: "+err.Error())
	}
	who, err := g.Identify(ctx)
	if err == nil {
		err = audienceOK(who.Token, g.Audience)
	}
	if err != nil {
		return nil, unauthenticated(err)
	}
	target, err := g.Resolve(ctx, method, req)
	if err != nil {
		return nil, denied("INVALID_REQUEST", "", err.Error())
	}
	md, _ := metadata.FromIncomingContext(ctx)
	get := func(name string) string {
		if vs := md.Get(name); len(vs) > 0 {
			return vs[0]
		}
		return ""
	}
	d, err := g.Checker.Check(ctx, who.request(client.Request{
		Permission: target.Permission, Resource: target.Resource, Context: target.Context,
		CorrelationID: Correlation(get), Reason: truncate(strings.TrimSpace(get("x-agent-reason")), MaxReasonLen),
	}))
	switch {
	case client.IsInvalidToken(err):
		return nil, unauthenticated(err)
	case client.IsInvalid(err):
		return nil, denied("INVALID_REQUEST", "", "mandate refused the request as invalid")
	case err != nil:
		g.Log.Error("mandate: check failed; refusing", "agent", actor(who, d), "method", method, "err", err)
		return nil, status.Error(codes.Unavailable, "authorization is unavailable; the call was not performed")
	case d.ReasonCode == client.InvalidToken:
		return nil, unauthenticated(ErrInvalidToken)
	}
	if !d.Allowed {
		return nil, denied(string(d.ReasonCode), d.DecisionID, "denied by mandate: "+string(d.ReasonCode))
	}
	return withDecision(ctx, d), nil
}

// unauthenticated is Unauthenticated, with ErrorInfo reason INVALID_TOKEN
// when a token was refused.
func unauthenticated(err error) error {
	if errors.Is(err, ErrInvalidToken) || client.IsInvalidToken(err) {
		st := status.New(codes.Unauthenticated, "invalid agent token: "+err.Error())
		if withInfo, e := st.WithDetails(&errdetails.ErrorInfo{Reason: "INVALID_TOKEN", Domain: ErrorDomain}); e == nil {
			st = withInfo
		}
		return st.Err()
	}
	return status.Error(codes.Unauthenticated, "no agent could be established for this call: send `authorization: Bearer <agent token>`")
}

func denied(reason, decisionID, msg string) error {
	st := status.New(codes.PermissionDenied, msg)
	info := &errdetails.ErrorInfo{Reason: reason, Domain: ErrorDomain}
	if decisionID != "" {
		info.Metadata = map[string]string{"decision_id": decisionID}
	}
	if withInfo, err := st.WithDetails(info); err == nil {
		st = withInfo
	}
	return st.Err()
}
