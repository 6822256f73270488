package engine

import (
	"context"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// Workload identity: an agent records the SPIFFE ID of the workload that
// created it (the X.509-SVID its caller presented over mutual TLS), and with
// Config.BindAgentsToWorkload its renewals and delegations are accepted only
// from that workload. The service and the token endpoint read the caller's
// SPIFFE ID from the TLS connection; the engine stores and compares it.

// validWorkload reports whether s is a SPIFFE ID as go-spiffe writes it.
// Such an ID holds no ';', '=' or '@', so it fits in an agent's lineage.
func validWorkload(s string) error {
	id, err := spiffeid.FromString(s)
	if err != nil {
		return err
	}
	if id.String() != s {
		return errorf("write it as %q", id.String())
	}
	return nil
}

func checkWorkloadInput(field, s string) error {
	if s == "" {
		return nil
	}
	if err := validWorkload(s); err != nil {
		return invalid(field, "%q is not a SPIFFE ID: %v", s, err)
	}
	return nil
}

// bound refuses, with PermissionDenied naming field, a caller connected as
// caller (a SPIFFE ID, or "" without an X.509-SVID) acting for an agent
// bound to the workload want, when binding is on. The refusal does not say
// which workload the agent is bound to.
func (e *Engine) bound(field, agentID, want, caller string) error {
	if !e.cfg.BindAgentsToWorkload || want == "" || want == caller {
		return nil
	}
	presented := "no X.509-SVID"
	if caller != "" {
		presented = caller
	}
	return &Error{Kind: KindPermissionDenied, Field: field, Reason: ReasonWorkloadMismatch,
		Msg: "agent " + agentID + " is bound to the workload that created it, and this connection presents " + presented + " (--bind-agents-to-workload)"}
}

// CheckWorkload refuses, with PermissionDenied (reason WORKLOAD_MISMATCH,
// naming field), a caller connected as workload (its SPIFFE ID, or "")
// acting for an agent bound to another workload, when binding is on. The
// token endpoint calls it before renewing an agent's token.
func (e *Engine) CheckWorkload(ctx context.Context, field, agentID, workload string) error {
	if !e.cfg.BindAgentsToWorkload {
		return nil
	}
	if err := ValidateID(field, PrefixAgent, agentID); err != nil {
		return err
	}
	ctx, cancel := e.withTimeout(ctx)
	defer cancel()
	c, err := e.chainOf(ctx, agentID)
	if err != nil {
		return fieldNotFound(err, field)
	}
	return e.bound(field, agentID, c.workload, workload)
}

// AgentWorkload is the SPIFFE ID an agent recorded when it was created, or "".
func (e *Engine) AgentWorkload(ctx context.Context, agentID string) (string, error) {
	if err := ValidateID("id", PrefixAgent, agentID); err != nil {
		return "", err
	}
	ctx, cancel := e.withTimeout(ctx)
	defer cancel()
	c, err := e.chainOf(ctx, agentID)
	if err != nil {
		return "", err
	}
	return c.workload, nil
}
