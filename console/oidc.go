package console

import (
	"context"
	"errors"
	"html/template"
	"net/http"
	"sync"
	"time"

	"github.com/coreos/go-oidc/v3/oidc"
	"golang.org/x/oauth2"

	"github.com/mandate-dev/mandate/service"
)

// OIDCConfig configures sign-in through the humans' OIDC issuer: the
// authorization-code flow with PKCE (S256), state and nonce.
type OIDCConfig struct {
	// Issuer is the issuer people sign in with: one of --oidc-issuer.
	Issuer string
	// ClientID is the console's client id at the issuer; its ID tokens'
	// aud (--oidc-audience).
	ClientID string
	// ClientSecret, when the issuer wants one for the code exchange.
	ClientSecret string
	// RedirectURL is the public URL of /ui/callback.
	RedirectURL string
	// UserID verifies an ID token as a human token exactly as token exchange
	// does (credential.Humans) and returns the user's id in the graph, so a
	// person signed in here is the same user:<id> their agents act for.
	UserID func(ctx context.Context, rawIDToken string) (string, error)
	// HTTPClient talks to the issuer. Default http.DefaultClient.
	HTTPClient *http.Client
}

type oidcClient struct {
	cfg OIDCConfig

	mu       sync.Mutex
	provider *oidc.Provider           // discovered on first use; guarded by mu
	pending  map[string]pendingSignIn // by state; guarded by mu
}

type pendingSignIn struct {
	verifier, nonce, next, binding string
	expires                        time.Time
}

const (
	oidcCookieName = "mandate_console_oidc"
	signInWindow   = 10 * time.Minute
)

func newOIDC(_ context.Context, cfg OIDCConfig) (*oidcClient, error) {
	if cfg.Issuer == "" || cfg.ClientID == "" || cfg.RedirectURL == "" || cfg.UserID == nil {
		return nil, errors.New("console: OIDC sign-in needs an issuer, a client id, a redirect URL and a user mapping")
	}
	if cfg.HTTPClient == nil {
		cfg.HTTPClient = http.DefaultClient
	}
	return &oidcClient{cfg: cfg, pending: map[string]pendingSignIn{}}, nil
}

// discover finds the issuer's endpoints, once it answers. The issuer may be
// this very server (--dev-idp), which is not listening when the console is built.
func (o *oidcClient) discover(ctx context.Context) (*oidc.Provider, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.provider != nil {
		return o.provider, nil
	}
	ctx, cancel := context.WithTimeout(oidc.ClientContext(ctx, o.cfg.HTTPClient), 10*time.Second)
	defer cancel()
	p, err := oidc.NewProvider(ctx, o.cfg.Issuer)
	if err != nil {
		return nil, err
	}
	o.provider = p
	return p, nil
}

func (o *oidcClient) oauth(p *oidc.Provider) *oauth2.Config {
	ep := p.Endpoint()
	if o.cfg.ClientSecret == "" {
		// A public client (PKCE, no secret) names itself in the form.
		ep.AuthStyle = oauth2.AuthStyleInParams
	}
	return &oauth2.Config{ClientID: o.cfg.ClientID, ClientSecret: o.cfg.ClientSecret, RedirectURL: o.cfg.RedirectURL,
		Endpoint: ep, Scopes: []string{oidc.ScopeOpenID}}
}

// loginOIDC starts the authorization-code flow: a fresh state, nonce and
// PKCE verifier, kept on the server and bound to this browser by a cookie.
func (c *Console) loginOIDC(w http.ResponseWriter, r *http.Request) {
	if c.oidc == nil {
		c.fail(w, r, nil, http.StatusNotFound, "no OIDC issuer is configured: sign in with a key")
		return
	}
	// Each start keeps a pending sign-in on the server until it expires: an
	// unauthenticated caller may start as few as it may try keys, so nobody
	// can fill the pending table and lock everyone else out of the issuer.
	if !c.logins.allow(r) {
		c.fail(w, r, nil, http.StatusTooManyRequests, "too many sign-in attempts from your address: wait a minute")
		return
	}
	p, err := c.oidc.discover(r.Context())
	if err != nil {
		c.cfg.Log.Warn("console: OIDC discovery failed", "issuer", c.oidc.cfg.Issuer, "error", err)
		c.fail(w, r, nil, http.StatusServiceUnavailable, "the identity provider cannot be reached")
		return
	}
	state, nonce, binding, verifier := randomToken(), randomToken(), randomToken(), oauth2.GenerateVerifier()
	now := c.cfg.Now()
	c.oidc.mu.Lock()
	for k, v := range c.oidc.pending {
		if now.After(v.expires) {
			delete(c.oidc.pending, k)
		}
	}
	if len(c.oidc.pending) > 10000 {
		c.oidc.mu.Unlock()
		c.fail(w, r, nil, http.StatusServiceUnavailable, "too many sign-ins in progress: try again shortly")
		return
	}
	c.oidc.pending[state] = pendingSignIn{verifier: verifier, nonce: nonce, next: safeNext(r.URL.Query().Get("next")), binding: binding, expires: now.Add(signInWindow)}
	c.oidc.mu.Unlock()
	// Lax, not Strict: the issuer's redirect back is a cross-site navigation,
	// which a Strict cookie would not accompany.
	http.SetCookie(w, &http.Cookie{Name: oidcCookieName, Value: binding, Path: "/ui/callback", MaxAge: int(signInWindow.Seconds()),
		HttpOnly: true, Secure: c.cfg.Secure, SameSite: http.SameSiteLaxMode})
	http.Redirect(w, r, c.oidc.oauth(p).AuthCodeURL(state, oidc.Nonce(nonce), oauth2.S256ChallengeOption(verifier)), http.StatusFound)
}

var continuePage = template.Must(template.New("c").Parse(`<!doctype html><html><head><meta charset="utf-8">
<meta http-equiv="refresh" content="0;url={{.}}"><title>Signed in</title></head>
<body><p>Signed in. <a href="{{.}}">Continue</a></p></body></html>`))

// callback redeems the code with the PKCE verifier, verifies the ID token
// (issuer, audience, signature, expiry, nonce), maps it to the user, and
// signs the person in.
func (c *Console) callback(w http.ResponseWriter, r *http.Request) {
	if c.oidc == nil {
		c.fail(w, r, nil, http.StatusNotFound, "no OIDC issuer is configured")
		return
	}
	q := r.URL.Query()
	state := q.Get("state")
	c.oidc.mu.Lock()
	ps, ok := c.oidc.pending[state]
	delete(c.oidc.pending, state)
	c.oidc.mu.Unlock()
	bind, err := r.Cookie(oidcCookieName)
	http.SetCookie(w, &http.Cookie{Name: oidcCookieName, Value: "", Path: "/ui/callback", MaxAge: -1, HttpOnly: true, Secure: c.cfg.Secure, SameSite: http.SameSiteLaxMode})
	if state == "" || !ok || c.cfg.Now().After(ps.expires) || err != nil || !sameToken(bind.Value, ps.binding) {
		c.fail(w, r, nil, http.StatusBadRequest, "state: this sign-in was not started here, was used already or expired; sign in again")
		return
	}
	if e := q.Get("error"); e != "" {
		c.fail(w, r, nil, http.StatusUnauthorized, "the identity provider refused the sign-in: "+e)
		return
	}
	if iss := q.Get("iss"); iss != "" && iss != c.oidc.cfg.Issuer {
		c.fail(w, r, nil, http.StatusBadRequest, "iss: the answer came from another issuer")
		return
	}
	p, err := c.oidc.discover(r.Context())
	if err != nil {
		c.fail(w, r, nil, http.StatusServiceUnavailable, "the identity provider cannot be reached")
		return
	}
	ctx := oidc.ClientContext(r.Context(), c.oidc.cfg.HTTPClient)
	tok, err := c.oidc.oauth(p).Exchange(ctx, q.Get("code"), oauth2.VerifierOption(ps.verifier))
	if err != nil {
		c.cfg.Log.Warn("console: OIDC code exchange failed", "error", err)
		c.fail(w, r, nil, http.StatusUnauthorized, "code: the identity provider did not redeem it")
		return
	}
	raw, _ := tok.Extra("id_token").(string)
	if raw == "" {
		c.fail(w, r, nil, http.StatusUnauthorized, "id_token: the identity provider sent none")
		return
	}
	idt, err := p.Verifier(&oidc.Config{ClientID: c.oidc.cfg.ClientID, Now: c.cfg.Now}).Verify(ctx, raw)
	if err != nil {
		c.fail(w, r, nil, http.StatusUnauthorized, "id_token: "+err.Error())
		return
	}
	if !sameToken(idt.Nonce, ps.nonce) {
		c.fail(w, r, nil, http.StatusUnauthorized, "id_token: its nonce is not this sign-in's")
		return
	}
	user, err := c.oidc.cfg.UserID(r.Context(), raw)
	if err != nil {
		c.fail(w, r, nil, http.StatusUnauthorized, "id_token: "+err.Error())
		return
	}
	s := c.sessions.create(service.Person(user))
	http.SetCookie(w, c.cookie(cookieName, s.id, int(c.cfg.SessionTTL.Seconds())))
	c.cfg.Log.Info("console: person signed in", "user", user, "issuer", c.oidc.cfg.Issuer)
	// A page, not a redirect: the session cookie is SameSite=Strict, and a
	// redirect still belongs to the cross-site navigation from the issuer.
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	_ = continuePage.Execute(w, ps.next)
}
