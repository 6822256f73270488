package service

import (
	"context"

	"github.com/mandate-dev/mandate/engine"
	"github.com/mandate-dev/mandate/engine/bounds"
	mandatev1 "github.com/mandate-dev/mandate/proto/mandate/v1"
)

const maxSwitchReason = 4096

func switchReason(r string) error {
	if len(r) > maxSwitchReason {
		return &engine.Error{Kind: engine.KindInvalidArgument, Field: "reason", Msg: "must be at most 4096 bytes"}
	}
	return nil
}

func (h *Handlers) SuspendPrincipalAgents(ctx context.Context, r *mandatev1.SuspendPrincipalAgentsRequest) (*mandatev1.SuspendPrincipalAgentsResponse, error) {
	if err := switchReason(r.GetReason()); err != nil {
		return nil, h.err(ctx, err)
	}
	p, was, tok, err := h.Engine.SuspendPrincipalAgents(ctx, r.GetId())
	if err != nil {
		return nil, h.err(ctx, err)
	}
	if err := h.recordChange(ctx, "principal.suspend_agents", p.String(), map[string]any{
		"principal": p.String(), "already_suspended": was, "why": r.GetReason(),
	}); err != nil {
		return nil, err
	}
	return &mandatev1.SuspendPrincipalAgentsResponse{Principal: p.String(), AlreadySuspended: was, ConsistencyToken: tok}, nil
}

func (h *Handlers) ResumePrincipalAgents(ctx context.Context, r *mandatev1.ResumePrincipalAgentsRequest) (*mandatev1.ResumePrincipalAgentsResponse, error) {
	if err := switchReason(r.GetReason()); err != nil {
		return nil, h.err(ctx, err)
	}
	p, was, tok, err := h.Engine.ResumePrincipalAgents(ctx, r.GetId())
	if err != nil {
		return nil, h.err(ctx, err)
	}
	if err := h.recordChange(ctx, "principal.resume_agents", p.String(), map[string]any{
		"principal": p.String(), "was_suspended": was, "why": r.GetReason(),
	}); err != nil {
		return nil, err
	}
	return &mandatev1.ResumePrincipalAgentsResponse{Principal: p.String(), WasSuspended: was, ConsistencyToken: tok}, nil
}

func (h *Handlers) FreezeAllAgents(ctx context.Context, r *mandatev1.FreezeAllAgentsRequest) (*mandatev1.FreezeAllAgentsResponse, error) {
	if err := switchReason(r.GetReason()); err != nil {
		return nil, h.err(ctx, err)
	}
	was, tok, err := h.Engine.FreezeAgents(ctx)
	if err != nil {
		return nil, h.err(ctx, err)
	}
	if err := h.recordChange(ctx, "agents.freeze_all", engine.MandateObject.String(), map[string]any{"already_frozen": was, "why": r.GetReason()}); err != nil {
		return nil, err
	}
	return &mandatev1.FreezeAllAgentsResponse{AlreadyFrozen: was, ConsistencyToken: tok}, nil
}

func (h *Handlers) UnfreezeAllAgents(ctx context.Context, r *mandatev1.UnfreezeAllAgentsRequest) (*mandatev1.UnfreezeAllAgentsResponse, error) {
	if err := switchReason(r.GetReason()); err != nil {
		return nil, h.err(ctx, err)
	}
	was, tok, err := h.Engine.UnfreezeAgents(ctx)
	if err != nil {
		return nil, h.err(ctx, err)
	}
	if err := h.recordChange(ctx, "agents.unfreeze_all", engine.MandateObject.String(), map[string]any{"was_frozen": was, "why": r.GetReason()}); err != nil {
		return nil, err
	}
	return &mandatev1.UnfreezeAllAgentsResponse{WasFrozen: was, ConsistencyToken: tok}, nil
}

// ---- conversions ----

func boundsPB(l bounds.Limits) *mandatev1.Bounds {
	if l.IsZero() && l.DenialWindow == 0 {
		return nil
	}
	b := &mandatev1.Bounds{ChecksPerMinute: int32(l.ChecksPerMinute), MaxDenials: int32(l.MaxDenials), ResourcesPerHour: int32(l.ResourcesPerHour)}
	if l.DenialWindow != 0 {
		b.DenialWindow = l.DenialWindow.String()
	}
	return b
}

func boundsDetails(l bounds.Limits) map[string]any {
	if l.IsZero() {
		return nil
	}
	return map[string]any{"checks_per_minute": l.ChecksPerMinute, "max_denials": l.MaxDenials, "denial_window": l.Window().String(), "resources_per_hour": l.ResourcesPerHour}
}

func conditionFromPB(c *mandatev1.GrantCondition) (*engine.Condition, error) {
	if c == nil {
		return nil, nil
	}
	switch k := c.GetKind().(type) {
	case *mandatev1.GrantCondition_SourceNetwork:
		return &engine.Condition{Name: engine.ConditionSourceNetwork, CIDRs: k.SourceNetwork.GetCidrs()}, nil
	case *mandatev1.GrantCondition_Hours:
		return &engine.Condition{Name: engine.ConditionHours, TimeZone: k.Hours.GetTimeZone(), Start: k.Hours.GetStart(), End: k.Hours.GetEnd()}, nil
	case *mandatev1.GrantCondition_MaxRisk:
		return &engine.Condition{Name: engine.ConditionMaxRisk, MaxRisk: k.MaxRisk.GetMax()}, nil
	case *mandatev1.GrantCondition_Environment:
		return &engine.Condition{Name: engine.ConditionEnvironment, Environment: k.Environment.GetLabel()}, nil
	}
	return nil, &engine.Error{Kind: engine.KindInvalidArgument, Field: "condition", Msg: "names no condition: set one of source_network, hours, max_risk or environment"}
}

func conditionPB(c *engine.Condition) *mandatev1.GrantCondition {
	if c == nil {
		return nil
	}
	switch c.Name {
	case engine.ConditionSourceNetwork:
		return &mandatev1.GrantCondition{Kind: &mandatev1.GrantCondition_SourceNetwork{SourceNetwork: &mandatev1.SourceNetworkCondition{Cidrs: c.CIDRs}}}
	case engine.ConditionHours:
		return &mandatev1.GrantCondition{Kind: &mandatev1.GrantCondition_Hours{Hours: &mandatev1.HoursCondition{TimeZone: c.TimeZone, Start: c.Start, End: c.End}}}
	case engine.ConditionMaxRisk:
		return &mandatev1.GrantCondition{Kind: &mandatev1.GrantCondition_MaxRisk{MaxRisk: &mandatev1.MaxRiskCondition{Max: c.MaxRisk}}}
	case engine.ConditionEnvironment:
		return &mandatev1.GrantCondition{Kind: &mandatev1.GrantCondition_Environment{Environment: &mandatev1.EnvironmentCondition{Label: c.Environment}}}
	}
	return nil
}

func conditionDetails(c *engine.Condition) map[string]any {
	if c == nil {
		return nil
	}
	m := map[string]any{"name": c.Name}
	switch c.Name {
	case engine.ConditionSourceNetwork:
		m["cidrs"] = toAny(c.CIDRs)
	case engine.ConditionHours:
		m["time_zone"], m["start"], m["end"] = c.TimeZone, c.Start, c.End
	case engine.ConditionMaxRisk:
		m["max"] = c.MaxRisk
	case engine.ConditionEnvironment:
		m["label"] = c.Environment
	}
	return m
}

func toAny(ss []string) []any {
	out := make([]any, len(ss))
	for i, s := range ss {
		out[i] = s
	}
	return out
}
