package authzen

import (
	"encoding/json"
	"fmt"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	mandatev1 "github.com/mandate-dev/mandate/proto/mandate/v1"
	"github.com/mandate-dev/mandate/schema"
)

// decision is one AuthZEN answer. Context is present only when the caller
// asked for reasons.
type decision struct {
	Decision bool           `json:"decision"`
	Context  map[string]any `json:"context,omitempty"`
}

// checkRequest maps a complete tuple onto mandate's CheckRequest. It reports
// false when the tuple names something that cannot exist in mandate (a
// resource type no definition can have).
func checkRequest(t tuple) (*mandatev1.CheckRequest, bool, error) {
	resType, ok := ResourceType(t.Resource.Type)
	if !ok {
		return nil, false, nil
	}
	cctx, err := caveatContext(t.Context, t.Subject, t.Resource, t.Action)
	if err != nil {
		return nil, false, err
	}
	req := &mandatev1.CheckRequest{
		Permission: Permission(t.Action.Name),
		Resource:   resType + ":" + EncodeID(t.Resource.ID),
		Context:    cctx,
	}
	if t.Subject.Type == SubjectTypeAgentToken {
		req.SubjectToken = t.Subject.ID
	} else {
		req.Subject = t.Subject.Type + ":" + EncodeID(t.Subject.ID)
	}
	return req, true, nil
}

// SubjectTypeAgentToken is the reserved AuthZEN subject type whose id is an
// agent's mandate token: the check is by subject_token.
const SubjectTypeAgentToken = schema.ReservedAgentToken

// ask puts one question to mandate's Check.
func (h *Handler) ask(c *call, req *mandatev1.CheckRequest) (decision, error) {
	resp, err := h.check.Check(c.ctx, req)
	if err != nil {
		return decision{}, err
	}
	d := decision{Decision: resp.GetAllowed()}
	if c.reason {
		d.Context = map[string]any{"reason_code": resp.GetReasonCode(), "decision_id": resp.GetDecisionId()}
	}
	return d, nil
}

// Reason codes of denies the handler gives without asking the engine.
const (
	// reasonInvalidReference: the question names a type, action or id that
	// cannot exist in mandate.
	reasonInvalidReference = "INVALID_REFERENCE"
	// reasonInvalidRequest: a batch item lacks a field or carries context
	// mandate refuses.
	reasonInvalidRequest = "INVALID_REQUEST"
	// reasonInvalidToken: a batch item's agent_token does not verify.
	reasonInvalidToken = "INVALID_TOKEN"
)

// denied is a deny mandate decided without asking the engine, with why when
// the caller asked.
func (h *Handler) denied(c *call, code string, msg ...string) decision {
	d := decision{}
	if c.reason {
		d.Context = map[string]any{"reason_code": code}
		if len(msg) > 0 {
			d.Context["error"] = msg[0]
		}
	}
	return d
}

// evaluation serves POST /access/v1/evaluation.
func (h *Handler) evaluation(c *call, body object) (any, error) {
	t, err := parseTuple(body, "")
	if err != nil {
		return nil, err
	}
	return h.single(c, t)
}

// single answers one complete question. A question that names nothing
// mandate knows is a deny; a malformed one is a 400; every other error is
// returned, so that the caller sees a failure (never an allow) and can tell
// it from a deny.
func (h *Handler) single(c *call, t tuple) (any, error) {
	if f := t.missing(""); f != "" {
		return nil, bad(f, "is required")
	}
	req, ok, err := checkRequest(t)
	if err != nil {
		return nil, err
	}
	if !ok {
		return h.denied(c, reasonInvalidReference, "resource.type: names no resource type"), nil
	}
	d, err := h.ask(c, req)
	if err != nil && namesNothing(err) {
		return h.denied(c, reasonInvalidReference, status.Convert(err).Message()), nil
	}
	return d, err
}

// Batch semantics.
const (
	executeAll          = "execute_all"
	denyOnFirstDeny     = "deny_on_first_deny"
	permitOnFirstPermit = "permit_on_first_permit"
)

// evaluations serves POST /access/v1/evaluations. The top-level subject,
// action, resource and context are defaults that each item may replace. An
// item that is still incomplete is denied alone. Without items, the request
// is a single evaluation and gets a single answer.
func (h *Handler) evaluations(c *call, body object) (any, error) {
	defaults, err := parseTuple(body, "")
	if err != nil {
		return nil, err
	}
	semantic := executeAll
	if opts, ok, err := body.object("options", "options"); err != nil {
		return nil, err
	} else if ok {
		s, has, err := opts.str("options.evaluations_semantic", "evaluations_semantic")
		if err != nil {
			return nil, err
		}
		if has {
			switch s {
			case executeAll, denyOnFirstDeny, permitOnFirstPermit:
				semantic = s
			default:
				return nil, bad("options.evaluations_semantic", "%q is not one of %s, %s, %s", s, executeAll, denyOnFirstDeny, permitOnFirstPermit)
			}
		}
	}
	var items []json.RawMessage
	if raw, ok := body["evaluations"]; ok && !isNull(raw) {
		if err := json.Unmarshal(raw, &items); err != nil {
			return nil, bad("evaluations", "must be an array of objects")
		}
	}
	if len(items) == 0 {
		return h.single(c, defaults)
	}
	if len(items) > maxEvaluations {
		return nil, bad("evaluations", "has %d items; at most %d are allowed", len(items), maxEvaluations)
	}
	// Every item is parsed before any is decided: a malformed item is a bad
	// request, not a partial answer.
	tuples := make([]tuple, len(items))
	for i, raw := range items {
		prefix := fmt.Sprintf("evaluations[%d].", i)
		var o object
		if err := json.Unmarshal(raw, &o); err != nil || o == nil {
			return nil, bad(fmt.Sprintf("evaluations[%d]", i), "must be a JSON object")
		}
		item, err := parseTuple(o, prefix)
		if err != nil {
			return nil, err
		}
		tuples[i] = defaults.over(item)
	}
	out := make([]decision, 0, len(tuples))
	for i, t := range tuples {
		d, err := h.item(c, t, fmt.Sprintf("evaluations[%d].", i))
		if err != nil {
			return nil, err
		}
		out = append(out, d)
		if semantic == denyOnFirstDeny && !d.Decision || semantic == permitOnFirstPermit && d.Decision {
			break
		}
	}
	return map[string]any{"evaluations": out}, nil
}

// item answers one batch item. An item that is incomplete or that mandate
// refuses as invalid is denied alone; failures of mandate itself (the key,
// its role, the backend) fail the whole batch, so that no one reads them as
// denies.
func (h *Handler) item(c *call, t tuple, prefix string) (decision, error) {
	if f := t.missing(prefix); f != "" {
		return h.denied(c, reasonInvalidRequest, f+": is required"), nil
	}
	req, ok, err := checkRequest(t)
	if err != nil {
		return h.denied(c, reasonInvalidRequest, err.Error()), nil
	}
	if !ok {
		return h.denied(c, reasonInvalidReference, "resource.type: names no resource type"), nil
	}
	d, err := h.ask(c, req)
	switch st := status.Convert(err); {
	case err == nil:
	case namesNothing(err):
		return h.denied(c, reasonInvalidReference, st.Message()), nil
	case fieldOf(err) == "subject_token":
		return h.denied(c, reasonInvalidToken, st.Message()), nil
	case st.Code() == codes.InvalidArgument:
		return h.denied(c, reasonInvalidRequest, st.Message()), nil
	}
	return d, err
}
