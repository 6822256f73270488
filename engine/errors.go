package engine

import (
	"errors"
	"fmt"
)

// Kind classifies an engine error. The service maps each kind to one gRPC code.
type Kind int

const (
	// KindInternal is a bug or an unexpected failure; details are logged, not returned.
	KindInternal Kind = iota
	// KindInvalidArgument is bad input; Field names it.
	KindInvalidArgument
	// KindNotFound is a reference to something that does not exist.
	KindNotFound
	// KindPermissionDenied is a refused delegation; Reason says why (ESCALATION).
	KindPermissionDenied
	// KindFailedPrecondition is a request that cannot apply to the current state.
	KindFailedPrecondition
	// KindUnavailable is SpiceDB unreachable or too slow. Never an allow.
	KindUnavailable
)

// ReasonEscalation is the reason of a grant refused because a delegator lacks the permission.
const ReasonEscalation = "ESCALATION"

// Error is a typed engine error.
type Error struct {
	Kind Kind
	// Field is the request field at fault, for KindInvalidArgument and friends.
	Field string
	// Reason is a machine-readable reason, such as ESCALATION.
	Reason string
	// Msg is safe to show to the caller.
	Msg string
	// Err is the underlying error; it is logged, never shown.
	Err error
}

func (e *Error) Error() string {
	msg := e.Msg
	if e.Field != "" {
		msg = e.Field + ": " + msg
	}
	if e.Err != nil && e.Kind == KindInternal {
		return msg + ": " + e.Err.Error()
	}
	return msg
}

func (e *Error) Unwrap() error { return e.Err }

func invalid(field, format string, args ...any) error {
	return &Error{Kind: KindInvalidArgument, Field: field, Msg: fmt.Sprintf(format, args...)}
}

func notFound(field, format string, args ...any) error {
	return &Error{Kind: KindNotFound, Field: field, Msg: fmt.Sprintf(format, args...)}
}

func precondition(field, format string, args ...any) error {
	return &Error{Kind: KindFailedPrecondition, Field: field, Msg: fmt.Sprintf(format, args...)}
}

func escalation(format string, args ...any) error {
	return &Error{Kind: KindPermissionDenied, Reason: ReasonEscalation, Msg: fmt.Sprintf(format, args...)}
}

// ReasonWorkloadMismatch is the reason of a renewal or delegation refused
// because the caller is not connected as the workload the agent is bound to.
const ReasonWorkloadMismatch = "WORKLOAD_MISMATCH"

// ErrUnavailable is wrapped by every error that means SpiceDB could not answer.
var ErrUnavailable = errors.New("authorization backend unavailable")

// AsError returns err as an *Error, wrapping unknown errors as internal.
func AsError(err error) *Error {
	var e *Error
	if errors.As(err, &e) {
		return e
	}
	return &Error{Kind: KindInternal, Msg: "internal error", Err: err}
}
