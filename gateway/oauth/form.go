package oauth

import (
	"net/url"
	"time"

	"github.com/mandate-dev/mandate/credential"
)

// Token types and the grant type of RFC 8693.
const (
	GrantTokenExchange = "urn:ietf:params:oauth:grant-type:token-exchange"
	TokenTypeJWT       = "urn:ietf:params:oauth:token-type:jwt"
	TokenTypeIDToken   = "urn:ietf:params:oauth:token-type:id_token"
	TokenTypeAccess    = "urn:ietf:params:oauth:token-type:access_token"
)

// ExchangeRequest is a parsed token-exchange request.
type ExchangeRequest struct {
	SubjectToken     string
	SubjectTokenType string
	Scope            []credential.ScopeItem
	ScopeRaw         string
	TaskDescription  string
	TaskTTL          string
	AgentName        string
	GrantTTL         string
	TokenTTL         time.Duration // 0: the default
	Resource         string
	ClientID         string // the form's client_id, when sent
}

// exchangeParams are the parameters a token-exchange request may carry;
// anything else is ignored, as RFC 6749 §3.2 asks.
var exchangeParams = []string{"grant_type", "subject_token", "subject_token_type", "actor_token", "actor_token_type",
	"requested_token_type", "scope", "task_description", "task_ttl", "agent_name", "grant_ttl", "requested_token_ttl",
	"resource", "audience", "client_id"}

// ParseExchange parses a token-exchange form. Every refusal is an *Error
// whose description names the parameter.
func ParseExchange(form url.Values) (*ExchangeRequest, *Error) {
	// RFC 6749 §3.2: a parameter must not repeat; one sent without a value is omitted.
	for _, p := range exchangeParams {
		if len(form[p]) > 1 {
			code := ErrInvalidRequest
			if p == "resource" {
				code = ErrInvalidTarget
			}
			return nil, errorf(code, p, "must be sent at most once")
		}
	}
	get := form.Get
	switch gt := get("grant_type"); gt {
	case "":
		return nil, errorf(ErrInvalidRequest, "grant_type", "is required")
	case GrantTokenExchange:
	default:
		return nil, errorf(ErrUnsupportedGrantType, "grant_type", "must be %s", GrantTokenExchange)
	}
	if get("actor_token") != "" || get("actor_token_type") != "" {
		return nil, errorf(ErrInvalidRequest, "actor_token", "is not supported: the acting agent is the subject_token's")
	}
	if rt := get("requested_token_type"); rt != "" && rt != TokenTypeJWT && rt != TokenTypeAccess {
		return nil, errorf(ErrInvalidRequest, "requested_token_type", "must be %s", TokenTypeJWT)
	}
	if get("audience") != "" {
		return nil, errorf(ErrInvalidTarget, "audience", "is not supported; send resource (RFC 8707)")
	}
	r := &ExchangeRequest{SubjectToken: get("subject_token"), SubjectTokenType: get("subject_token_type"),
		ScopeRaw: get("scope"), TaskDescription: get("task_description"), TaskTTL: get("task_ttl"),
		AgentName: get("agent_name"), GrantTTL: get("grant_ttl"), Resource: get("resource"), ClientID: get("client_id")}
	if r.SubjectToken == "" {
		return nil, errorf(ErrInvalidRequest, "subject_token", "is required")
	}
	switch r.SubjectTokenType {
	case "":
		return nil, errorf(ErrInvalidRequest, "subject_token_type", "is required")
	case TokenTypeJWT, TokenTypeIDToken:
	default:
		return nil, errorf(ErrInvalidRequest, "subject_token_type", "must be %s or %s", TokenTypeIDToken, TokenTypeJWT)
	}
	scope, err := credential.ParseScope(r.ScopeRaw)
	if err != nil {
		return nil, errorf(ErrInvalidScope, "scope", "%v", err)
	}
	r.Scope = scope
	if s := get("requested_token_ttl"); s != "" {
		d, err := time.ParseDuration(s)
		if err != nil || d < time.Second {
			return nil, errorf(ErrInvalidRequest, "requested_token_ttl", "must be a duration of at least 1s, such as \"10m\"")
		}
		r.TokenTTL = d
	}
	if r.Resource != "" {
		u, err := url.Parse(r.Resource)
		if err != nil || !u.IsAbs() || u.Fragment != "" || u.Host == "" {
			return nil, errorf(ErrInvalidTarget, "resource", "must be an absolute URI without a fragment (RFC 8707)")
		}
	}
	return r, nil
}
