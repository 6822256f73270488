// Package oauth serves mandate's OAuth 2.0 endpoints: RFC 8693 token
// exchange, RFC 7662 introspection, RFC 7009 revocation, the JWKS and the
// RFC 8414 metadata. Tokens are never logged, echoed or audited; audit
// records keep their jti.
package oauth

import (
	"context"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"errors"
	"log/slog"
	"mime"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/go-jose/go-jose/v4/jwt"

	"github.com/mandate-dev/mandate/credential"
	"github.com/mandate-dev/mandate/engine"
	"github.com/mandate-dev/mandate/engine/audit"
	"github.com/mandate-dev/mandate/internal/peercert"
	"github.com/mandate-dev/mandate/internal/requestid"
)

// Paths served.
const (
	PathToken      = "/oauth2/token"
	PathIntrospect = "/oauth2/introspect"
	PathRevoke     = "/oauth2/revoke"
	PathJWKS       = "/.well-known/jwks.json"
	PathMetadata   = "/.well-known/oauth-authorization-server"
)

// Client is the key that called, as the keys file names it.
type Client struct {
	Name string
	// Role is checker, operator, reviewer or admin.
	Role string
}

// Graph is what the endpoints need of the engine.
type Graph interface {
	StartTask(ctx context.Context, in engine.StartTaskInput) (*engine.Task, *engine.Agent, []*engine.Grant, string, error)
	Delegate(ctx context.Context, in engine.DelegateInput) (*engine.Agent, []*engine.Grant, string, error)
	AgentActive(ctx context.Context, agentID string) (bool, error)
	AgentChain(ctx context.Context, id string) ([]engine.Ref, engine.Ref, engine.Ref, error)
	AgentExpiry(ctx context.Context, id string) (time.Time, error)
	RevokeAgent(ctx context.Context, id string) ([]engine.Ref, string, error)
	// CheckWorkload refuses (PermissionDenied, WORKLOAD_MISMATCH) a caller
	// connected as workload acting for an agent bound to another one.
	CheckWorkload(ctx context.Context, field, agentID, workload string) error
	// AgentWorkload is the SPIFFE ID the agent recorded, or "".
	AgentWorkload(ctx context.Context, agentID string) (string, error)
}

// Auditor records changes.
type Auditor interface {
	Record(ctx context.Context, r audit.Record, durable bool) error
}

// Config configures the endpoints.
type Config struct {
	// PublicURL is the server's one public base URL; the metadata's issuer
	// and every endpoint in it derive from it, never from the Host header.
	PublicURL string
	// Tokens issues and verifies mandate's tokens. Never nil.
	Tokens *credential.Tokens
	// Humans verifies humans' OIDC tokens; nil when no issuer is configured,
	// and then no task can be started by exchange.
	Humans *credential.Humans
	// Graph is the engine. Never nil.
	Graph Graph
	// Authenticate finds the key for a presented secret. Never nil.
	Authenticate func(secret string) (Client, bool)
	// AuthenticateCert finds the key for a client certificate that TLS
	// verified against --client-ca, for a caller that sends no
	// Authorization header (RFC 8705 §2 tls_client_auth). Nil accepts keys only.
	AuthenticateCert func(leaf *x509.Certificate) (Client, bool)
	// Audit records token.issue, token.renew, token.refused and token.revoke; nil records nothing.
	Audit Auditor
	// MaxBodyBytes bounds form bodies. Default 64 KiB.
	MaxBodyBytes int64
	// Log is the logger. Default slog.Default().
	Log *slog.Logger
}

// Handler serves the endpoints.
type Handler struct {
	cfg Config
}

// New builds the handler.
func New(cfg Config) (*Handler, error) {
	if cfg.Tokens == nil || cfg.Graph == nil || cfg.Authenticate == nil {
		return nil, errors.New("oauth: Tokens, Graph and Authenticate are required")
	}
	if cfg.PublicURL == "" {
		return nil, errors.New("oauth: PublicURL is required")
	}
	cfg.PublicURL = strings.TrimSuffix(cfg.PublicURL, "/")
	if cfg.MaxBodyBytes == 0 {
		cfg.MaxBodyBytes = 64 << 10
	}
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	return &Handler{cfg: cfg}, nil
}

// Routes returns the handlers by ServeMux pattern.
func (h *Handler) Routes() map[string]http.Handler {
	return map[string]http.Handler{
		"POST " + PathToken:      http.HandlerFunc(h.token),
		"POST " + PathIntrospect: http.HandlerFunc(h.introspect),
		"POST " + PathRevoke:     http.HandlerFunc(h.revoke),
		"GET " + PathJWKS:        http.HandlerFunc(h.jwks),
		"GET " + PathMetadata:    http.HandlerFunc(h.metadata),
	}
}

// ---- client authentication -------------------------------------------------

// authenticate reads the client's key from HTTP Basic (RFC 6749 §2.3.1: the
// key's name and the key, each form-encoded) or a Bearer key, never both.
func (h *Handler) authenticate(r *http.Request) (Client, *Error) {
	vals := r.Header.Values("Authorization")
	if leaf := peercert.FromContext(r.Context()); len(vals) == 0 && leaf != nil && h.cfg.AuthenticateCert != nil {
		// No key sent: the client certificate, verified by TLS, is the credential.
		c, ok := h.cfg.AuthenticateCert(leaf)
		if !ok {
			return Client{}, errorf(ErrInvalidClient, "authorization", "the client certificate maps to no entry of the keys file")
		}
		return c, nil
	}
	if len(vals) != 1 {
		return Client{}, errorf(ErrInvalidClient, "authorization", "authenticate with HTTP Basic (key name and key) or `authorization: Bearer <key>`")
	}
	scheme, cred, _ := strings.Cut(vals[0], " ")
	cred = strings.TrimSpace(cred)
	switch {
	case strings.EqualFold(scheme, "bearer") && cred != "":
		c, ok := h.cfg.Authenticate(cred)
		if !ok {
			return Client{}, errorf(ErrInvalidClient, "authorization", "unknown key")
		}
		return c, nil
	case strings.EqualFold(scheme, "basic") && cred != "":
		raw, err := base64.StdEncoding.DecodeString(cred)
		if err != nil {
			return Client{}, errorf(ErrInvalidClient, "authorization", "malformed Basic credentials")
		}
		id, secret, ok := strings.Cut(string(raw), ":")
		if !ok {
			return Client{}, errorf(ErrInvalidClient, "authorization", "malformed Basic credentials")
		}
		id, err1 := url.QueryUnescape(id)
		secret, err2 := url.QueryUnescape(secret)
		if err1 != nil || err2 != nil {
			return Client{}, errorf(ErrInvalidClient, "authorization", "malformed Basic credentials")
		}
		c, ok := h.cfg.Authenticate(secret)
		if !ok || c.Name != id {
			return Client{}, errorf(ErrInvalidClient, "authorization", "unknown client or key")
		}
		return c, nil
	}
	return Client{}, errorf(ErrInvalidClient, "authorization", "authenticate with HTTP Basic (key name and key) or `authorization: Bearer <key>`")
}

func (h *Handler) readForm(w http.ResponseWriter, r *http.Request) (url.Values, *Error) {
	mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type"))
	if err != nil || mt != "application/x-www-form-urlencoded" {
		return nil, errorf(ErrInvalidRequest, "content-type", "must be application/x-www-form-urlencoded")
	}
	r.Body = http.MaxBytesReader(w, r.Body, h.cfg.MaxBodyBytes)
	if err := r.ParseForm(); err != nil {
		return nil, errorf(ErrInvalidRequest, "body", "is not a valid form of at most %d bytes", h.cfg.MaxBodyBytes)
	}
	if len(r.URL.RawQuery) > 0 {
		return nil, errorf(ErrInvalidRequest, "query", "parameters belong in the body")
	}
	return r.PostForm, nil
}

// ---- discovery ---------------------------------------------------------------

func (h *Handler) jwks(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "application/jwk-set+json")
	w.Header().Set("Cache-Control", "public, max-age=300")
	b, err := json.Marshal(h.cfg.Tokens.Keys().JWKS())
	if err != nil {
		http.Error(w, "internal error", http.StatusInternalServerError)
		return
	}
	_, _ = w.Write(b)
}

// Metadata is the RFC 8414 document, built from the public URL alone.
func (h *Handler) Metadata() map[string]any {
	base := h.cfg.PublicURL
	algs := []string{}
	for _, a := range h.cfg.Tokens.Keys().Algorithms() {
		algs = append(algs, string(a))
	}
	auth := []string{"client_secret_basic"}
	if h.cfg.AuthenticateCert != nil {
		auth = append(auth, "tls_client_auth")
	}
	return map[string]any{
		"issuer":                                base,
		"token_endpoint":                        base + PathToken,
		"introspection_endpoint":                base + PathIntrospect,
		"revocation_endpoint":                   base + PathRevoke,
		"jwks_uri":                              base + PathJWKS,
		"grant_types_supported":                 []string{GrantTokenExchange},
		"response_types_supported":              []string{},
		"token_endpoint_auth_methods_supported": auth,
		"introspection_endpoint_auth_methods_supported": auth,
		"revocation_endpoint_auth_methods_supported":    auth,
		"access_token_signing_alg_values_supported":     algs,
		// Tokens exchanged over a connection with a client certificate are
		// bound to it (cnf.x5t#S256).
		"tls_client_certificate_bound_access_tokens": true,
	}
}

func (h *Handler) metadata(w http.ResponseWriter, _ *http.Request) {
	m := h.Metadata()
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "public, max-age=300")
	writeJSONCached(w, m)
}

// ---- token exchange ------------------------------------------------------------

// TokenResponse is RFC 8693 §2.2.1's answer, with the task and agent.
type TokenResponse struct {
	AccessToken     string `json:"access_token"`
	IssuedTokenType string `json:"issued_token_type"`
	TokenType       string `json:"token_type"`
	ExpiresIn       int64  `json:"expires_in"`
	Scope           string `json:"scope,omitempty"`
	Task            string `json:"task"`
	Agent           string `json:"agent"`
}

func (h *Handler) token(w http.ResponseWriter, r *http.Request) {
	ctx := requestid.NewContext(r.Context(), r.Header.Get(requestid.Header))
	client, oerr := h.authenticate(r)
	if oerr != nil {
		writeError(w, oerr)
		return
	}
	resp, details, oerr := h.exchange(ctx, w, r, client)
	if oerr != nil {
		details["error"], details["field"] = oerr.Code, oerr.Field
		h.record(ctx, client, "token.refused", "", details)
		writeError(w, oerr)
		return
	}
	writeJSON(w, http.StatusOK, resp)
}

func (h *Handler) exchange(ctx context.Context, w http.ResponseWriter, r *http.Request, client Client) (*TokenResponse, map[string]any, *Error) {
	details := map[string]any{"client": client.Name}
	if client.Role != "operator" && client.Role != "admin" {
		return nil, details, errorf(ErrUnauthorizedClient, "authorization", "key %q has role %s; token exchange needs an operator or admin key", client.Name, client.Role)
	}
	form, oerr := h.readForm(w, r)
	if oerr != nil {
		return nil, details, oerr
	}
	req, oerr := ParseExchange(form)
	if oerr != nil {
		return nil, details, oerr
	}
	details["scope"] = req.ScopeRaw
	if req.ClientID != "" && req.ClientID != client.Name {
		return nil, details, errorf(ErrInvalidClient, "client_id", "does not name the authenticated key")
	}
	if req.SubjectTokenType == TokenTypeJWT && h.isOwn(req.SubjectToken) {
		return h.fromAgent(ctx, client, req, details)
	}
	return h.fromHuman(ctx, client, req, details)
}

// isOwn reports whether a token claims to be mandate's own; its verification decides.
func (h *Handler) isOwn(raw string) bool {
	tok, err := jwt.ParseSigned(raw, h.cfg.Tokens.Keys().Algorithms())
	if err != nil {
		return false
	}
	var c jwt.Claims
	return tok.UnsafeClaimsWithoutVerification(&c) == nil && c.Issuer == h.cfg.Tokens.Issuer()
}

func (h *Handler) fromHuman(ctx context.Context, client Client, req *ExchangeRequest, details map[string]any) (*TokenResponse, map[string]any, *Error) {
	if h.cfg.Humans == nil {
		return nil, details, errorf(ErrInvalidGrant, "subject_token", "no OIDC issuer is configured (--oidc-issuer), so no human token is accepted")
	}
	human, err := h.cfg.Humans.Verify(ctx, req.SubjectToken)
	if err != nil {
		if errors.Is(err, credential.ErrIssuerUnavailable) {
			h.cfg.Log.Warn("OIDC issuer unavailable", "error", err)
			return nil, details, &Error{Code: ErrUnavailable, Field: "subject_token", Description: "subject_token: its issuer cannot be reached; try again", Status: http.StatusServiceUnavailable}
		}
		return nil, details, errorf(ErrInvalidGrant, "subject_token", "%v", err)
	}
	details["human_iss"], details["human_sub"] = human.Issuer, human.Subject
	if len(req.Scope) == 0 {
		return nil, details, errorf(ErrInvalidScope, "scope", "is required to start a task: space-separated permission:type:id items")
	}
	principal := engine.Ref{Type: "user", ID: human.UserID}
	task, agent, _, _, err := h.cfg.Graph.StartTask(ctx, engine.StartTaskInput{Principal: principal, Description: req.TaskDescription,
		TaskTTL: req.TaskTTL, AgentName: req.AgentName, GrantTTL: req.GrantTTL, Scope: scoped(req.Scope), Workload: callerWorkload(ctx)})
	if err != nil {
		return nil, details, h.engineError(err)
	}
	agentRef := engine.Ref{Type: "agent", ID: agent.ID}
	return h.issue(ctx, client, "token.issue", details, credential.IssueInput{
		Subject: principal.String(), Agents: []string{agentRef.String()}, Task: "task:" + task.ID, Scope: credential.FormatScope(req.Scope),
		ClientID: client.Name, HumanIssuer: human.Issuer, Audience: req.Resource, TTL: req.TokenTTL, NotAfter: agent.ExpiresAt,
	})
}

func (h *Handler) fromAgent(ctx context.Context, client Client, req *ExchangeRequest, details map[string]any) (*TokenResponse, map[string]any, *Error) {
	c, err := h.cfg.Tokens.Verify(req.SubjectToken)
	if err != nil {
		return nil, details, errorf(ErrInvalidGrant, "subject_token", "%v", err)
	}
	details["subject_jti"], details["human_iss"], details["human_sub"] = c.ID, c.HumanIssuer, c.Subject
	if c.ClientID != client.Name && client.Role != "admin" {
		return nil, details, errorf(ErrInvalidGrant, "subject_token", "was issued to another client")
	}
	agentID, ok := strings.CutPrefix(c.Agent(), "agent:")
	if !ok {
		return nil, details, errorf(ErrInvalidGrant, "subject_token", "names no agent")
	}
	// With --bind-agents-to-workload, renewals and delegations come only
	// from the workload the agent recorded (403 unauthorized_client); the
	// engine checks a delegation again, against the parent it writes under.
	if err := h.cfg.Graph.CheckWorkload(ctx, "subject_token", agentID, callerWorkload(ctx)); err != nil {
		return nil, details, h.engineError(err)
	}
	if oerr := h.proofOfPossession(ctx, c, agentID); oerr != nil {
		return nil, details, oerr
	}
	// Renewal and delegation alike start from a live chain that matches the token.
	if oerr := h.live(ctx, c, agentID); oerr != nil {
		return nil, details, oerr
	}
	if len(req.Scope) == 0 {
		exp, err := h.cfg.Graph.AgentExpiry(ctx, agentID)
		if err != nil {
			return nil, details, h.engineError(err)
		}
		aud := req.Resource
		if aud == "" && len(c.Audience) == 1 {
			aud = c.Audience[0]
		}
		return h.issue(ctx, client, "token.renew", details, credential.IssueInput{
			Subject: c.Subject, Agents: c.Act.Agents(), Task: c.Task, Scope: c.Scope, ClientID: client.Name,
			HumanIssuer: c.HumanIssuer, Audience: aud, TTL: req.TokenTTL, NotAfter: exp,
		})
	}
	if req.TaskTTL != "" || req.TaskDescription != "" {
		field := "task_ttl"
		if req.TaskDescription != "" {
			field = "task_description"
		}
		return nil, details, errorf(ErrInvalidRequest, field, "applies only when a human starts a task")
	}
	child, _, _, err := h.cfg.Graph.Delegate(ctx, engine.DelegateInput{Parent: agentID, AgentName: req.AgentName, GrantTTL: req.GrantTTL,
		Scope: scoped(req.Scope), Workload: callerWorkload(ctx)})
	if err != nil {
		return nil, details, h.engineError(err)
	}
	exp, err := h.cfg.Graph.AgentExpiry(ctx, child.ID)
	if err != nil {
		return nil, details, h.engineError(err)
	}
	return h.issue(ctx, client, "token.issue", details, credential.IssueInput{
		Subject: c.Subject, Agents: append([]string{"agent:" + child.ID}, c.Act.Agents()...), Task: c.Task,
		Scope: credential.FormatScope(req.Scope), ClientID: client.Name, HumanIssuer: c.HumanIssuer, Audience: req.Resource,
		TTL: req.TokenTTL, NotAfter: exp,
	})
}

// live reports, as an invalid_grant, why a token's agent cannot act now or
// its chain is not the graph's.
func (h *Handler) live(ctx context.Context, c *credential.Claims, agentID string) *Error {
	st, err := h.State(ctx, c)
	if err != nil {
		return h.engineError(err)
	}
	switch st {
	case StateActive:
		return nil
	case StateChainMismatch:
		return errorf(ErrInvalidGrant, "subject_token", "its delegation chain is not the graph's")
	}
	return errorf(ErrInvalidGrant, "subject_token", "its agent can no longer act (revoked, suspended, expired, frozen, or its task ended)")
}

// State is what the graph says of a verified token now.
type State int

// States of a token.
const (
	StateActive State = iota
	StateInactive
	StateChainMismatch
)

// State reads from the graph whether a verified token's agent can act now
// (the engine's one evaluator of the freeze, identity and task legs) and
// whether its sub, act chain and task are the graph's.
func (h *Handler) State(ctx context.Context, c *credential.Claims) (State, error) {
	return TokenState(ctx, h.cfg.Graph, c)
}

// TokenState is State for any graph: Check by token uses it too.
func TokenState(ctx context.Context, g Graph, c *credential.Claims) (State, error) {
	agentID, ok := strings.CutPrefix(c.Agent(), "agent:")
	if !ok {
		return StateChainMismatch, nil
	}
	agents, principal, task, err := g.AgentChain(ctx, agentID)
	if err != nil {
		if e := engine.AsError(err); e != nil && (e.Kind == engine.KindNotFound || e.Kind == engine.KindInvalidArgument) {
			return StateInactive, nil
		}
		return 0, err
	}
	want := c.Act.Agents()
	if len(want) != len(agents) || principal.String() != c.Subject || task.String() != c.Task {
		return StateChainMismatch, nil
	}
	for i, a := range agents {
		if a.String() != want[i] {
			return StateChainMismatch, nil
		}
	}
	active, err := g.AgentActive(ctx, agentID)
	if err != nil {
		return 0, err
	}
	if !active {
		return StateInactive, nil
	}
	return StateActive, nil
}

func (h *Handler) issue(ctx context.Context, client Client, action string, details map[string]any, in credential.IssueInput) (*TokenResponse, map[string]any, *Error) {
	// RFC 8705 §3: a token issued over a connection with a client
	// certificate is bound to that certificate.
	if leaf := peercert.FromContext(ctx); leaf != nil {
		in.CertThumbprint = credential.CertThumbprint(leaf.Raw)
	}
	raw, c, err := h.cfg.Tokens.Issue(in)
	if err != nil {
		return nil, details, errorf(ErrInvalidGrant, "subject_token", "%v", err)
	}
	details["jti"], details["scope"], details["task"], details["exp"] = c.ID, c.Scope, c.Task, c.Expiry.Time().UTC().Format(time.RFC3339)
	details["act"] = c.Act.Agents()
	if c.BoundTo() != "" {
		details["cnf_x5t_s256"] = c.BoundTo()
	}
	if err := h.record(ctx, client, action, c.Agent(), details); err != nil {
		return nil, details, &Error{Code: ErrUnavailable, Description: "the token's audit record could not be made durable; no token was issued", Status: http.StatusServiceUnavailable}
	}
	return &TokenResponse{AccessToken: raw, IssuedTokenType: TokenTypeJWT, TokenType: "Bearer",
		ExpiresIn: int64(time.Until(c.Expiry.Time()).Round(time.Second) / time.Second), Scope: c.Scope, Task: c.Task, Agent: c.Agent()}, details, nil
}

func scoped(items []credential.ScopeItem) []engine.ScopedGrant {
	out := make([]engine.ScopedGrant, len(items))
	for i, it := range items {
		out[i] = engine.ScopedGrant{Permission: it.Permission, Resource: it.Resource}
	}
	return out
}

// engineError maps the engine's refusals to RFC 6749 errors naming the field.
func (h *Handler) engineError(err error) *Error {
	e := engine.AsError(err)
	if e == nil {
		h.cfg.Log.Error("token endpoint", "error", err)
		return &Error{Code: ErrServerError, Description: "internal error", Status: http.StatusInternalServerError}
	}
	field := e.Field
	switch {
	case e.Kind == engine.KindPermissionDenied && e.Reason == engine.ReasonWorkloadMismatch:
		if field == "" {
			field = "subject_token"
		}
		d := errorf(ErrUnauthorizedClient, field, "%s", e.Msg)
		d.Status = http.StatusForbidden
		return d
	case e.Kind == engine.KindPermissionDenied:
		return errorf(ErrInvalidScope, "scope", "%s", e.Msg)
	case field == "scope":
		return errorf(ErrInvalidScope, "scope", "%s", e.Msg)
	case e.Kind == engine.KindInvalidArgument:
		return errorf(ErrInvalidRequest, field, "%s", e.Msg)
	case e.Kind == engine.KindNotFound, e.Kind == engine.KindFailedPrecondition:
		if field == "" {
			field = "subject_token"
		}
		return errorf(ErrInvalidGrant, field, "%s", e.Msg)
	case e.Kind == engine.KindUnavailable:
		return &Error{Code: ErrUnavailable, Description: "the decision backend is unavailable; try again", Status: http.StatusServiceUnavailable}
	}
	h.cfg.Log.Error("token endpoint", "error", err)
	return &Error{Code: ErrServerError, Description: "internal error", Status: http.StatusInternalServerError}
}

// record writes an audit record and waits until it is durable. It never
// carries a token, only its jti.
func (h *Handler) record(ctx context.Context, client Client, action, target string, details map[string]any) error {
	if h.cfg.Audit == nil {
		return nil
	}
	rec := audit.NewChange(requestid.FromContext(ctx), client.Name, action, target, details)
	rec.Workload = callerWorkload(ctx)
	return h.cfg.Audit.Record(ctx, rec, true)
}

// ---- introspection and revocation ---------------------------------------------

func (h *Handler) introspect(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	client, oerr := h.authenticate(r)
	if oerr != nil {
		writeError(w, oerr)
		return
	}
	if client.Role != "checker" && client.Role != "admin" {
		writeError(w, &Error{Code: ErrUnauthorizedClient, Description: "authorization: introspection needs a checker or admin key", Status: http.StatusForbidden})
		return
	}
	form, oerr := h.readForm(w, r)
	if oerr != nil {
		writeError(w, oerr)
		return
	}
	if len(form["token"]) != 1 || form.Get("token") == "" {
		writeError(w, errorf(ErrInvalidRequest, "token", "is required, once"))
		return
	}
	c, err := h.cfg.Tokens.Verify(form.Get("token"))
	if err != nil {
		writeJSON(w, http.StatusOK, map[string]any{"active": false})
		return
	}
	st, err := h.State(ctx, c)
	if err != nil {
		writeError(w, h.engineError(err))
		return
	}
	if st != StateActive {
		writeJSON(w, http.StatusOK, map[string]any{"active": false})
		return
	}
	out := map[string]any{
		"active": true, "sub": c.Subject, "act": c.Act, "task": c.Task, "scope": c.Scope, "client_id": c.ClientID,
		"exp": c.Expiry, "iat": c.IssuedAt, "nbf": c.NotBefore, "jti": c.ID, "iss": c.Issuer, "aud": c.Audience,
		"token_type": "Bearer",
	}
	if c.Confirmation != nil {
		// RFC 8705 §3.2: the resource service compares it with the
		// certificate the agent presented to it.
		out["cnf"] = c.Confirmation
	}
	writeJSON(w, http.StatusOK, out)
}

func (h *Handler) revoke(w http.ResponseWriter, r *http.Request) {
	ctx := requestid.NewContext(r.Context(), r.Header.Get(requestid.Header))
	client, oerr := h.authenticate(r)
	if oerr != nil {
		writeError(w, oerr)
		return
	}
	form, oerr := h.readForm(w, r)
	if oerr != nil {
		writeError(w, oerr)
		return
	}
	if len(form["token"]) != 1 || form.Get("token") == "" {
		writeError(w, errorf(ErrInvalidRequest, "token", "is required, once"))
		return
	}
	c, err := h.cfg.Tokens.Verify(form.Get("token"))
	if err != nil {
		// RFC 7009 §2.2: an invalid or unknown token is answered 200.
		w.WriteHeader(http.StatusOK)
		return
	}
	if c.ClientID != client.Name && client.Role != "admin" {
		writeError(w, errorf(ErrUnauthorizedClient, "token", "was issued to another client"))
		return
	}
	agentID, _ := strings.CutPrefix(c.Agent(), "agent:")
	revoked, _, err := h.cfg.Graph.RevokeAgent(ctx, agentID)
	if err != nil {
		if e := engine.AsError(err); e != nil && (e.Kind == engine.KindNotFound || e.Kind == engine.KindFailedPrecondition || e.Kind == engine.KindInvalidArgument) {
			w.WriteHeader(http.StatusOK)
			return
		}
		writeError(w, h.engineError(err))
		return
	}
	names := make([]string, len(revoked))
	for i, x := range revoked {
		names[i] = x.String()
	}
	if err := h.record(ctx, client, "token.revoke", c.Agent(), map[string]any{"jti": c.ID, "client": client.Name,
		"human_iss": c.HumanIssuer, "human_sub": c.Subject, "scope": c.Scope, "revoked": names}); err != nil {
		writeError(w, &Error{Code: ErrUnavailable, Description: "the agent was revoked, but the audit record could not be made durable", Status: http.StatusServiceUnavailable})
		return
	}
	w.WriteHeader(http.StatusOK)
}

// ---- workload identity and certificate-bound tokens ----------------------------

// callerWorkload is the SPIFFE ID of the X.509-SVID the caller presented,
// verified by TLS against --client-ca, or "". Whether the caller
// authenticated with that certificate or with a key, it names the workload
// on the other end of the connection.
func callerWorkload(ctx context.Context) string {
	return peercert.SPIFFEID(peercert.FromContext(ctx))
}

// proofOfPossession refuses a certificate-bound subject_token (cnf.x5t#S256)
// unless this connection presents that certificate, as any resource service
// would (RFC 8705 §3): a stolen bound token cannot be renewed or delegated,
// and so unbound, by a caller that does not hold the certificate's key. A
// workload's X.509-SVID rotates more often than an agent renews, so a
// certificate with the SPIFFE ID the agent recorded when it was created
// proves possession too.
func (h *Handler) proofOfPossession(ctx context.Context, c *credential.Claims, agentID string) *Error {
	want := c.BoundTo()
	if want == "" {
		return nil
	}
	leaf := peercert.FromContext(ctx)
	if leaf != nil && credential.CertThumbprint(leaf.Raw) == want {
		return nil
	}
	if w := peercert.SPIFFEID(leaf); w != "" {
		recorded, err := h.cfg.Graph.AgentWorkload(ctx, agentID)
		if err != nil {
			if e := engine.AsError(err); e != nil && e.Kind == engine.KindNotFound {
				return errorf(ErrInvalidGrant, "subject_token", "its agent does not exist")
			}
			return h.engineError(err)
		}
		if recorded == w {
			return nil
		}
	}
	return errorf(ErrInvalidGrant, "subject_token", "is bound to a client certificate (cnf x5t#S256) that this connection does not present")
}
