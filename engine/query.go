package engine

import (
	"context"
	"time"

	v1 "github.com/authzed/authzed-go/proto/authzed/api/v1"
	"github.com/authzed/spicedb/pkg/zedtoken"

	"google.golang.org/protobuf/types/known/structpb"
)

// Query is one access question.
type Query struct {
	Subject    Ref
	Permission string
	Resource   Ref
	// Context is caveat context from the caller. "now" is reserved.
	Context *structpb.Struct
	// ConsistencyToken is a ZedToken the answer must be at least as fresh as.
	ConsistencyToken string
	// TokenChain, for a check by subject_token, is the chain the verified
	// token names, as Decision.Chain spells it: the agents, current actor
	// first, then the human. With TokenTask, a chain that is not the graph's
	// is denied with CHAIN_MISMATCH. The cache keys on it.
	TokenChain []Ref
	// TokenTask is the task the token names; set with TokenChain.
	TokenTask Ref
	// CountsForBounds says the check may count against the agent's
	// behavioural bounds: it comes from a caller trusted to report what the
	// agent did. The engine ignores it; the bounds decorator reads it.
	CountsForBounds bool

	// The fields below describe the request for the audit trail and alerts.
	// They never change the answer, and the cache does not key on them.

	// DecisionID names this decision in the answer, its audit record and any
	// alert it raises. The service makes one per check.
	DecisionID string
	// StatedReason is the agent's stated reasoning, as the caller sent it.
	StatedReason string
	// CorrelationID links the checks of one piece of work across systems.
	CorrelationID string
	// RequestID is the id of the request that asked.
	RequestID string
	// Caller is the name of the key that asked.
	Caller string
	// SourceAddr is the caller's network address, for the audit trail.
	SourceAddr string
	// CallerWorkload is the SPIFFE ID of the X.509-SVID the caller (the
	// resource service) presented over mutual TLS, for the audit trail.
	CallerWorkload string
	// TokenID is the jti of the subject_token that named the subject, for
	// the audit trail; never the token itself.
	TokenID string
}

// Decision is the answer to a Query.
type Decision struct {
	Allowed   bool
	Reason    Reason
	Principal Ref
	Task      Ref
	Chain     []Ref
	// ValidUntil is the earliest expiry among the task, agents and grants an
	// allow relied on. Zero for a deny or a user check.
	ValidUntil time.Time
	// Grants are the ids of the grants an allow relied on.
	Grants []string
	// MissingContext names caveat parameters the caller did not supply.
	MissingContext []string
	// Condition names the grant condition that failed or lacked context.
	Condition string
	// Bound names the behavioural bound the check crossed (BOUND_EXCEEDED).
	// The bounds decorator (engine/decider) sets it; the engine does not
	// count checks.
	Bound string
	// Token is the ZedToken the decision was made at.
	Token string
	// Cached says the answer came from the decision cache.
	Cached bool
}

// Decider answers queries. The engine implements it against SpiceDB;
// decorators wrap it: the cache (engine/cache), and bounds, audit and
// metrics (engine/decider).
type Decider interface {
	Decide(ctx context.Context, q Query) (Decision, error)
}

// maxConsistencyToken bounds a ZedToken's length; SpiceDB's are well under 100 bytes.
const maxConsistencyToken = 1024

// ValidateConsistencyToken reports an error naming field unless token is
// empty or a ZedToken SpiceDB could have issued. A token SpiceDB cannot read
// would otherwise be dropped silently and the check made at a fresher
// revision than the caller asked for, or fail deep in SpiceDB.
func ValidateConsistencyToken(field, token string) error {
	if token == "" {
		return nil
	}
	if len(token) > maxConsistencyToken {
		return invalid(field, "must be at most %d bytes: a consistency_token from an earlier response", maxConsistencyToken)
	}
	d, err := zedtoken.Decode(&v1.ZedToken{Token: token})
	if err != nil || d.GetVersionOneof() == nil {
		return invalid(field, "is not a consistency_token mandate issued; send one from an earlier response, or none")
	}
	return nil
}
