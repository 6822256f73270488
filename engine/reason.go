package engine

// Reason is the code a decision gives. It owns the leg of the check that
// produced it and whether behavioural bounds count it, so no caller keeps a
// table of its own.
type Reason string

// Reason codes. A deny names the first leg that failed.
const (
	ReasonAllowed                  Reason = "ALLOWED"
	ReasonNoPermission             Reason = "NO_PERMISSION"
	ReasonNoGrant                  Reason = "NO_GRANT"
	ReasonPrincipalLacksPermission Reason = "PRINCIPAL_LACKS_PERMISSION"
	ReasonDelegatorLacksPermission Reason = "DELEGATOR_LACKS_PERMISSION"
	ReasonAgentExpired             Reason = "AGENT_EXPIRED"
	ReasonAgentRevoked             Reason = "AGENT_REVOKED"
	ReasonAgentSuspended           Reason = "AGENT_SUSPENDED"
	ReasonTaskCompleted            Reason = "TASK_COMPLETED"
	ReasonTaskExpired              Reason = "TASK_EXPIRED"
	ReasonUnknownSubject           Reason = "UNKNOWN_SUBJECT"
	ReasonMissingContext           Reason = "MISSING_CONTEXT"
	ReasonChainInactive            Reason = "CHAIN_INACTIVE"
	ReasonConditionFailed          Reason = "CONDITION_FAILED"
	ReasonAgentsFrozen             Reason = "AGENTS_FROZEN"
	ReasonPrincipalSuspended       Reason = "PRINCIPAL_AGENTS_SUSPENDED"
	ReasonBoundExceeded            Reason = "BOUND_EXCEEDED"
	// ReasonChainMismatch: a check by subject_token whose token names a
	// delegation chain (agents, human, task) that is not the graph's.
	ReasonChainMismatch Reason = "CHAIN_MISMATCH"
	// ReasonInvalidToken: one item of a bulk check or an AuthZEN batch whose
	// subject_token does not verify. A single check answers 400 instead.
	ReasonInvalidToken Reason = "INVALID_TOKEN"
)

// Legs of a check, in the order they are judged.
const (
	LegFreeze      = "freeze"
	LegIdentity    = "identity"
	LegTask        = "task"
	LegGrant       = "grant"
	LegAttenuation = "attenuation"
	LegBounds      = "bounds"
	// LegPermission is the one leg of a user check.
	LegPermission = "permission"
)

type reasonInfo struct {
	leg string
	// counted: the check counts as the agent's behaviour (checks_per_minute,
	// resources_per_hour). Checks denied because the agent cannot act at all
	// are not its behaviour, and counting them would trip a suspended agent
	// again and again.
	counted bool
	// denial: an attempt outside the agent's grants (max_denials).
	denial bool
}

var reasons = map[Reason]reasonInfo{
	ReasonAllowed:                  {leg: "", counted: true},
	ReasonNoPermission:             {leg: LegPermission},
	ReasonNoGrant:                  {leg: LegGrant, counted: true, denial: true},
	ReasonConditionFailed:          {leg: LegGrant, counted: true, denial: true},
	ReasonMissingContext:           {leg: LegGrant, counted: true},
	ReasonPrincipalLacksPermission: {leg: LegAttenuation, counted: true, denial: true},
	ReasonDelegatorLacksPermission: {leg: LegAttenuation, counted: true, denial: true},
	ReasonUnknownSubject:           {leg: LegIdentity},
	ReasonAgentExpired:             {leg: LegIdentity},
	ReasonAgentRevoked:             {leg: LegIdentity},
	ReasonAgentSuspended:           {leg: LegIdentity},
	ReasonChainInactive:            {leg: LegIdentity},
	ReasonChainMismatch:            {leg: LegIdentity},
	ReasonInvalidToken:             {leg: LegIdentity},
	ReasonTaskCompleted:            {leg: LegTask},
	ReasonTaskExpired:              {leg: LegTask},
	ReasonPrincipalSuspended:       {leg: LegTask},
	ReasonAgentsFrozen:             {leg: LegFreeze},
	ReasonBoundExceeded:            {leg: LegBounds},
}

// Leg names the leg that produced the reason; "" for ALLOWED.
func (r Reason) Leg() string { return reasons[r].leg }

// CountsForBounds reports whether an agent check with this answer counts
// toward its behavioural bounds.
func (r Reason) CountsForBounds() bool { return reasons[r].counted }

// IsDenial reports whether the answer counts toward max_denials: an attempt
// outside the agent's grants.
func (r Reason) IsDenial() bool { return reasons[r].denial }

// Known reports whether r is one of mandate's reason codes.
func (r Reason) Known() bool { _, ok := reasons[r]; return ok }
