package service

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"log/slog"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/mandate-dev/mandate/engine"
)

// errorDomain is the ErrorInfo domain of mandate's errors.
const errorDomain = "mandate.dev"

// toStatus is the one place engine errors become gRPC statuses. Internal
// errors are logged in full; the caller only sees the request id.
func toStatus(ctx context.Context, log *slog.Logger, err error) error {
	if err == nil {
		return nil
	}
	// An engine error may wrap a SpiceDB status; the engine's own
	// classification wins, so its message never leaks SpiceDB's.
	var ee *engine.Error
	if !errors.As(err, &ee) {
		if _, ok := status.FromError(err); ok {
			return err
		}
	}
	e := engine.AsError(err)
	var code codes.Code
	reason := e.Reason
	switch e.Kind {
	case engine.KindInvalidArgument:
		code, reason = codes.InvalidArgument, orDefault(reason, "INVALID_ARGUMENT")
	case engine.KindNotFound:
		code, reason = codes.NotFound, orDefault(reason, "NOT_FOUND")
	case engine.KindPermissionDenied:
		code, reason = codes.PermissionDenied, orDefault(reason, "PERMISSION_DENIED")
	case engine.KindFailedPrecondition:
		code, reason = codes.FailedPrecondition, orDefault(reason, "FAILED_PRECONDITION")
	case engine.KindUnavailable:
		log.WarnContext(ctx, "authorization backend unavailable", "request_id", requestID(ctx), "error", e.Err)
		code, reason = codes.Unavailable, "BACKEND_UNAVAILABLE"
	default:
		log.ErrorContext(ctx, "internal error", "request_id", requestID(ctx), "error", err)
		return status.Errorf(codes.Internal, "internal error, see request id %s", requestID(ctx))
	}
	st := status.New(code, e.Error())
	info := &errdetails.ErrorInfo{Reason: reason, Domain: errorDomain}
	if e.Field != "" {
		info.Metadata = map[string]string{"field": e.Field}
	}
	withD, derr := st.WithDetails(info)
	if code == codes.InvalidArgument && e.Field != "" {
		withD, derr = st.WithDetails(info, &errdetails.BadRequest{FieldViolations: []*errdetails.BadRequest_FieldViolation{{Field: e.Field, Description: e.Msg}}})
	}
	if derr == nil {
		st = withD
	}
	return st.Err()
}

func orDefault(s, d string) string {
	if s == "" {
		return d
	}
	return s
}

type requestIDKey struct{}

// RequestIDHeader carries a request id in and out.
const RequestIDHeader = "x-request-id"

func requestID(ctx context.Context) string {
	id, _ := ctx.Value(requestIDKey{}).(string)
	return id
}

// RequestIDInterceptor takes the caller's x-request-id or makes one, and
// sends it back in the response header.
func RequestIDInterceptor(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	id := ""
	if md, ok := metadata.FromIncomingContext(ctx); ok {
		if v := md.Get(RequestIDHeader); len(v) > 0 && len(v[0]) <= 128 {
			id = v[0]
		}
	}
	if id == "" {
		b := make([]byte, 12)
		_, _ = rand.Read(b)
		id = "req_" + hex.EncodeToString(b)
	}
	_ = grpc.SetHeader(ctx, metadata.Pairs(RequestIDHeader, id))
	return handler(context.WithValue(ctx, requestIDKey{}, id), req)
}
