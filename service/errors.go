package service

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"unicode/utf8"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/protoadapt"

	"github.com/mandate-dev/mandate/engine"
	"github.com/mandate-dev/mandate/internal/requestid"
)

// errorDomain is the ErrorInfo domain of mandate's errors.
const errorDomain = "mandate.dev"

// toStatus is the one place engine errors become gRPC statuses. Internal
// errors are logged in full; the caller only sees the request id.
func toStatus(ctx context.Context, log *slog.Logger, err error) error {
	if err == nil {
		return nil
	}
	var ae *authError
	if errors.As(err, &ae) {
		reason := "UNAUTHENTICATED"
		if ae.code == codes.PermissionDenied {
			reason = "PERMISSION_DENIED"
		}
		return withInfo(status.New(ae.code, ae.msg), &errdetails.ErrorInfo{Reason: reason, Domain: errorDomain})
	}
	// An engine error may wrap a SpiceDB status; the engine's own
	// classification wins, so its message never leaks SpiceDB's. A status
	// this function made already passes through; any other status (from a
	// library, from SpiceDB unwrapped) is internal, logged and not shown.
	var ee *engine.Error
	if !errors.As(err, &ee) && isMandates(err) {
		return err
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
		if log != nil {
			log.WarnContext(ctx, "authorization backend unavailable", "request_id", requestID(ctx), "error", e.Err)
		}
		code, reason = codes.Unavailable, "BACKEND_UNAVAILABLE"
	default:
		if log != nil {
			log.ErrorContext(ctx, "internal error", "request_id", requestID(ctx), "error", err)
		}
		return withInfo(status.Newf(codes.Internal, "internal error, see request id %s", requestID(ctx)),
			&errdetails.ErrorInfo{Reason: "INTERNAL", Domain: errorDomain})
	}
	// Messages echo the caller's input (ids, names, context keys); a 1 MB id
	// must not come back, several times over, in the answer.
	clipped := *e
	clipped.Field, clipped.Msg = clip(e.Field, maxEchoField), clip(e.Msg, maxEchoMsg)
	e = &clipped
	st := status.New(code, e.Error())
	info := &errdetails.ErrorInfo{Reason: reason, Domain: errorDomain}
	if e.Field != "" {
		info.Metadata = map[string]string{"field": e.Field}
	}
	if code == codes.InvalidArgument && e.Field != "" {
		return withInfo(st, info, &errdetails.BadRequest{FieldViolations: []*errdetails.BadRequest_FieldViolation{{Field: e.Field, Description: e.Msg}}})
	}
	return withInfo(st, info)
}

// The longest field name and message an error answer carries.
const (
	maxEchoField = 128
	maxEchoMsg   = 512
)

// clip cuts s to at most n bytes, on a rune boundary, marking the cut.
func clip(s string, n int) string {
	if len(s) <= n {
		return s
	}
	cut := n - len("…")
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + "…"
}

// isMandates reports whether err is a status toStatus made: it carries an
// ErrorInfo of mandate's domain.
func isMandates(err error) bool {
	st, ok := status.FromError(err)
	if !ok {
		return false
	}
	for _, d := range st.Details() {
		if info, ok := d.(*errdetails.ErrorInfo); ok && info.GetDomain() == errorDomain {
			return true
		}
	}
	return false
}

// withInfo is st with details, or st alone if they cannot be attached.
func withInfo(st *status.Status, details ...protoadapt.MessageV1) error {
	if withD, err := st.WithDetails(details...); err == nil {
		return withD.Err()
	}
	return st.Err()
}

func orDefault(s, d string) string {
	if s == "" {
		return d
	}
	return s
}

// RequestIDHeader carries a request id in and out.
const RequestIDHeader = "x-request-id"

func requestID(ctx context.Context) string { return requestid.FromContext(ctx) }

// RequestIDInterceptor takes the caller's x-request-id or makes one, and
// sends it back in the response header.
func RequestIDInterceptor(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	callers := ""
	if md, ok := metadata.FromIncomingContext(ctx); ok {
		if v := md.Get(RequestIDHeader); len(v) > 0 {
			callers = v[0]
		}
	}
	id := requestid.Accept(callers)
	// In process (REST, AuthZEN) the HTTP layer already echoes the id, and
	// there may be no transport stream to carry a header: nothing to do.
	_ = grpc.SetHeader(ctx, metadata.Pairs(RequestIDHeader, id))
	return handler(requestid.NewContext(ctx, id), req)
}

// Interceptor is the one unary interceptor chain of every call, over gRPC
// and in process alike: the request id first, then the caller's key and role.
func Interceptor(keys *Keys) grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		return RequestIDInterceptor(ctx, req, info, func(ctx context.Context, req any) (any, error) {
			return keys.UnaryInterceptor(ctx, req, info, handler)
		})
	}
}

// authError is a refused caller: no key, an unknown key, or a role too small.
type authError struct {
	code codes.Code
	msg  string
}

func (e *authError) Error() string { return e.msg }

func unauthenticated(msg string) error { return &authError{code: codes.Unauthenticated, msg: msg} }

func forbidden(format string, args ...any) error {
	return &authError{code: codes.PermissionDenied, msg: fmt.Sprintf(format, args...)}
}
