// Package devidp is a DEVELOPMENT-ONLY OpenID Connect provider: anyone who
// can reach it signs in as any user they name. `mandate serve --dev-idp`
// mounts it under /dev-idp so that the token walkthrough works without a
// real identity provider. Never enable it in production.
package devidp

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/json"
	"errors"
	"html/template"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
)

// Prefix is where the provider is mounted; its issuer is the public URL plus Prefix.
const Prefix = "/dev-idp"

// Config configures the provider.
type Config struct {
	// Issuer is the provider's issuer URL: mandate's public URL + Prefix.
	Issuer string
	// Audience is the aud of its ID tokens (mandate's --oidc-audience).
	Audience string
	// Users are offered by the sign-in page's picker; any other name may be typed.
	Users []string
	// Authorize reports whether an Authorization header carries a mandate
	// operator or admin key: `mandate dev login` needs one.
	Authorize func(authorization string) bool
	// Now is the clock. Default time.Now.
	Now func() time.Time
}

// Provider is the development OIDC provider.
type Provider struct {
	cfg    Config
	key    *ecdsa.PrivateKey
	kid    string
	signer jose.Signer
	mu     sync.Mutex
	codes  map[string]grant // pending authorization codes; guarded by mu
}

type grant struct {
	user, clientID, redirect, challenge, nonce string
	expires                                    time.Time
}

// New makes a provider with a fresh in-memory key.
func New(cfg Config) (*Provider, error) {
	if cfg.Issuer == "" || cfg.Audience == "" || cfg.Authorize == nil {
		return nil, errors.New("devidp: Issuer, Audience and Authorize are required")
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if len(cfg.Users) == 0 {
		cfg.Users = []string{"alice", "bob"}
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	kid := "dev-idp-1"
	signer, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.ES256, Key: jose.JSONWebKey{Key: key, KeyID: kid}}, (&jose.SignerOptions{}).WithType("JWT"))
	if err != nil {
		return nil, err
	}
	return &Provider{cfg: cfg, key: key, kid: kid, signer: signer, codes: map[string]grant{}}, nil
}

// Routes returns the handlers by ServeMux pattern.
func (p *Provider) Routes() map[string]http.Handler {
	return map[string]http.Handler{
		"GET " + Prefix + "/.well-known/openid-configuration": http.HandlerFunc(p.discovery),
		"GET " + Prefix + "/jwks":                             http.HandlerFunc(p.jwks),
		"GET " + Prefix + "/authorize":                        http.HandlerFunc(p.authorizePage),
		"POST " + Prefix + "/authorize":                       http.HandlerFunc(p.authorize),
		"POST " + Prefix + "/token":                           http.HandlerFunc(p.token),
		"POST " + Prefix + "/login":                           http.HandlerFunc(p.login),
	}
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

func oauthError(w http.ResponseWriter, code, desc string) {
	writeJSON(w, http.StatusBadRequest, map[string]string{"error": code, "error_description": desc})
}

func (p *Provider) discovery(w http.ResponseWriter, _ *http.Request) {
	iss := p.cfg.Issuer
	writeJSON(w, http.StatusOK, map[string]any{
		"issuer": iss, "authorization_endpoint": iss + "/authorize", "token_endpoint": iss + "/token", "jwks_uri": iss + "/jwks",
		"response_types_supported": []string{"code"}, "subject_types_supported": []string{"public"},
		"id_token_signing_alg_values_supported": []string{"ES256"}, "code_challenge_methods_supported": []string{"S256"},
		"grant_types_supported": []string{"authorization_code"}, "token_endpoint_auth_methods_supported": []string{"none"},
		"scopes_supported": []string{"openid"}, "mandate_development_only": true,
	})
}

func (p *Provider) jwks(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, jose.JSONWebKeySet{Keys: []jose.JSONWebKey{{Key: &p.key.PublicKey, KeyID: p.kid, Algorithm: "ES256", Use: "sig"}}})
}

// IDToken signs an ID token for user, valid for ten minutes.
func (p *Provider) IDToken(user, nonce string) (string, error) {
	if !validUser(user) {
		return "", errors.New("user: 1 to 64 letters, digits, '.', '_', '-' or '@'")
	}
	now := p.cfg.Now()
	claims := map[string]any{"iss": p.cfg.Issuer, "sub": user, "aud": p.cfg.Audience, "iat": now.Unix(), "exp": now.Add(10 * time.Minute).Unix(),
		"name": user, "dev_idp": "development only"}
	if nonce != "" {
		claims["nonce"] = nonce
	}
	return jwt.Signed(p.signer).Claims(claims).Serialize()
}

func validUser(u string) bool {
	if u == "" || len(u) > 64 {
		return false
	}
	for _, c := range u {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.ContainsRune("._-@", c)) {
			return false
		}
	}
	return true
}

// login serves `mandate dev login USER`: an ID token for a named user, to
// any operator or admin key.
func (p *Provider) login(w http.ResponseWriter, r *http.Request) {
	if !p.cfg.Authorize(r.Header.Get("Authorization")) {
		writeJSON(w, http.StatusUnauthorized, map[string]string{"error": "invalid_client", "error_description": "authorization: an operator or admin key is required"})
		return
	}
	if err := r.ParseForm(); err != nil {
		oauthError(w, "invalid_request", "body: not a form")
		return
	}
	tok, err := p.IDToken(r.PostForm.Get("user"), "")
	if err != nil {
		oauthError(w, "invalid_request", err.Error())
		return
	}
	writeJSON(w, http.StatusOK, map[string]string{"id_token": tok, "token_type": "Bearer", "warning": "development identity provider: anyone can sign in as anyone"})
}

var page = template.Must(template.New("p").Parse(`<!doctype html>
<html><head><meta charset="utf-8"><title>mandate development sign-in</title></head>
<body style="font-family: sans-serif; max-width: 36em; margin: 3em auto">
<p style="background:#fdd; padding:1em; border:2px solid #c00"><strong>DEVELOPMENT IDENTITY PROVIDER.</strong>
Anyone who can reach this page signs in as anyone. Never use it in production.</p>
<h1>Sign in as</h1>
<form method="post">
{{range $k, $v := .Params}}<input type="hidden" name="{{$k}}" value="{{$v}}">{{end}}
{{range .Users}}<p><button name="user" value="{{.}}">{{.}}</button></p>{{end}}
<p><input name="other" placeholder="another user"> <button name="user" value="">Sign in</button></p>
</form></body></html>`))

// authParams checks an authorization request and returns its parameters.
func (p *Provider) authParams(q url.Values) (map[string]string, error) {
	params := map[string]string{}
	for _, k := range []string{"response_type", "client_id", "redirect_uri", "state", "code_challenge", "code_challenge_method", "nonce", "scope"} {
		params[k] = q.Get(k)
	}
	if params["response_type"] != "code" {
		return nil, errors.New("response_type: must be code")
	}
	if params["client_id"] == "" {
		return nil, errors.New("client_id: is required")
	}
	if params["code_challenge_method"] != "S256" || len(params["code_challenge"]) < 43 {
		return nil, errors.New("code_challenge: PKCE with S256 is required")
	}
	u, err := url.Parse(params["redirect_uri"])
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Fragment != "" {
		return nil, errors.New("redirect_uri: must be an http(s) URL without a fragment")
	}
	// Only this machine or mandate itself: the provider is no open redirector.
	host := u.Hostname()
	ip := net.ParseIP(host)
	if host != "localhost" && (ip == nil || !ip.IsLoopback()) && !strings.HasPrefix(params["redirect_uri"], strings.TrimSuffix(p.cfg.Issuer, Prefix)+"/") {
		return nil, errors.New("redirect_uri: must be on localhost or under mandate's public URL")
	}
	return params, nil
}

func (p *Provider) authorizePage(w http.ResponseWriter, r *http.Request) {
	params, err := p.authParams(r.URL.Query())
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Content-Security-Policy", "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'")
	_ = page.Execute(w, map[string]any{"Params": params, "Users": p.cfg.Users})
}

func (p *Provider) authorize(w http.ResponseWriter, r *http.Request) {
	if err := r.ParseForm(); err != nil {
		http.Error(w, "body: not a form", http.StatusBadRequest)
		return
	}
	params, err := p.authParams(r.PostForm)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	user := r.PostForm.Get("user")
	if user == "" {
		user = r.PostForm.Get("other")
	}
	if !validUser(user) {
		http.Error(w, "user: 1 to 64 letters, digits, '.', '_', '-' or '@'", http.StatusBadRequest)
		return
	}
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		http.Error(w, "internal error", http.StatusInternalServerError)
		return
	}
	code := base64.RawURLEncoding.EncodeToString(b)
	p.mu.Lock()
	now := p.cfg.Now()
	for c, g := range p.codes {
		if now.After(g.expires) {
			delete(p.codes, c)
		}
	}
	p.codes[code] = grant{user: user, clientID: params["client_id"], redirect: params["redirect_uri"], challenge: params["code_challenge"],
		nonce: params["nonce"], expires: now.Add(time.Minute)}
	p.mu.Unlock()
	u, _ := url.Parse(params["redirect_uri"])
	q := u.Query()
	q.Set("code", code)
	if s := params["state"]; s != "" {
		q.Set("state", s)
	}
	q.Set("iss", p.cfg.Issuer)
	u.RawQuery = q.Encode()
	http.Redirect(w, r, u.String(), http.StatusFound)
}

// token redeems an authorization code once, for the client and redirect it
// was issued to, with the PKCE verifier.
func (p *Provider) token(w http.ResponseWriter, r *http.Request) {
	if err := r.ParseForm(); err != nil {
		oauthError(w, "invalid_request", "body: not a form")
		return
	}
	f := r.PostForm
	if f.Get("grant_type") != "authorization_code" {
		oauthError(w, "unsupported_grant_type", "grant_type: must be authorization_code")
		return
	}
	p.mu.Lock()
	g, ok := p.codes[f.Get("code")]
	delete(p.codes, f.Get("code"))
	p.mu.Unlock()
	if !ok || p.cfg.Now().After(g.expires) {
		oauthError(w, "invalid_grant", "code: unknown, used or expired")
		return
	}
	sum := sha256.Sum256([]byte(f.Get("code_verifier")))
	if subtle.ConstantTimeCompare([]byte(base64.RawURLEncoding.EncodeToString(sum[:])), []byte(g.challenge)) != 1 {
		oauthError(w, "invalid_grant", "code_verifier: does not match the code_challenge")
		return
	}
	if f.Get("client_id") != g.clientID || f.Get("redirect_uri") != g.redirect {
		oauthError(w, "invalid_grant", "client_id, redirect_uri: not those the code was issued to")
		return
	}
	tok, err := p.IDToken(g.user, g.nonce)
	if err != nil {
		oauthError(w, "invalid_request", err.Error())
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"id_token": tok, "access_token": tok, "token_type": "Bearer", "expires_in": 600})
}
