package service

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/mandate-dev/mandate/engine"
	"github.com/mandate-dev/mandate/internal/requestid"
)

// TestToStatusShowsOnlyWhatIsPublic: every error reaches the caller through
// toStatus, with a standard code and a message meant for the caller; what
// went wrong inside stays in the log.
func TestToStatusShowsOnlyWhatIsPublic(t *testing.T) {
	ctx := requestid.NewContext(context.Background(), "req_42")
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	secret := "dial tcp 10.0.0.7:5432: password authentication failed for user mandate"
	for _, tc := range []struct {
		name string
		err  error
		code codes.Code
		msg  string
	}{
		{"bad input names the field", &engine.Error{Kind: engine.KindInvalidArgument, Field: "ttl", Msg: "must be positive"}, codes.InvalidArgument, "ttl: must be positive"},
		{"unavailable hides the driver", &engine.Error{Kind: engine.KindUnavailable, Msg: "authorization backend unavailable", Err: errors.New(secret)}, codes.Unavailable, "authorization backend unavailable"},
		{"internal shows the request id", errors.New(secret), codes.Internal, "internal error, see request id req_42"},
		{"a foreign status is internal", status.Error(codes.InvalidArgument, secret), codes.Internal, "internal error, see request id req_42"},
		{"an unknown key", unauthenticated("unknown key"), codes.Unauthenticated, "unknown key"},
		{"a role too small", forbidden("key %q has role %s", "ci", RoleChecker), codes.PermissionDenied, `key "ci" has role checker`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := toStatus(ctx, log, tc.err)
			st := status.Convert(err)
			if st.Code() != tc.code || st.Message() != tc.msg || strings.Contains(st.Message(), "password") {
				t.Fatalf("got %v %q, want %v %q", st.Code(), st.Message(), tc.code, tc.msg)
			}
			// Mapping twice changes nothing: handlers may pass on a mapped error.
			if again := status.Convert(toStatus(ctx, log, err)); again.Code() != st.Code() || again.Message() != st.Message() {
				t.Fatalf("mapped twice: %v %q", again.Code(), again.Message())
			}
		})
	}
}
