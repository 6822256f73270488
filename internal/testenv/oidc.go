package testenv

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"

	"github.com/mandate-dev/mandate/credential"
	"github.com/mandate-dev/mandate/server"
	"github.com/mandate-dev/mandate/service"
)

// Audience is the OIDC audience the test IdP's tokens carry by default.
const Audience = "mandate-test"

// IdP is an OIDC issuer started inside the test, with its own RSA keys: the
// humans' identity provider of every token-exchange test.
type IdP struct {
	T   testing.TB
	URL string
	mu  sync.Mutex
	// keys are published in the JWKS, newest first; keys[0] signs. Guarded by mu.
	keys []idpKey
	// fetches counts JWKS requests. Guarded by mu.
	fetches int
}

type idpKey struct {
	kid  string
	priv *rsa.PrivateKey
}

// StartIdP starts an issuer until the test ends.
func StartIdP(t testing.TB) *IdP {
	t.Helper()
	p := &IdP{T: t}
	p.Rotate()
	mux := http.NewServeMux()
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	p.URL = srv.URL
	mux.HandleFunc("GET /.well-known/openid-configuration", func(w http.ResponseWriter, _ *http.Request) {
		_ = json.NewEncoder(w).Encode(map[string]any{"issuer": p.URL, "jwks_uri": p.URL + "/jwks",
			"authorization_endpoint": p.URL + "/authorize", "token_endpoint": p.URL + "/token",
			"id_token_signing_alg_values_supported": []string{"RS256"}, "response_types_supported": []string{"code"},
			"subject_types_supported": []string{"public"}})
	})
	mux.HandleFunc("GET /jwks", func(w http.ResponseWriter, _ *http.Request) {
		p.mu.Lock()
		defer p.mu.Unlock()
		p.fetches++
		set := jose.JSONWebKeySet{}
		for _, k := range p.keys {
			set.Keys = append(set.Keys, jose.JSONWebKey{Key: k.priv.Public(), KeyID: k.kid, Algorithm: "RS256", Use: "sig"})
		}
		_ = json.NewEncoder(w).Encode(set)
	})
	return p
}

// JWKSFetches is the number of JWKS requests so far.
func (p *IdP) JWKSFetches() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.fetches
}

// Rotate makes a new signing key and publishes it beside the old ones.
func (p *IdP) Rotate() {
	priv, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		p.T.Fatal(err)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.keys = append([]idpKey{{kid: fmt.Sprintf("k%d", len(p.keys)+1), priv: priv}}, p.keys...)
}

// Claims are a valid ID token's claims for sub: this issuer, Audience, ten minutes.
func (p *IdP) Claims(sub string) map[string]any {
	now := time.Now()
	return map[string]any{"iss": p.URL, "sub": sub, "aud": Audience, "iat": now.Unix(), "exp": now.Add(10 * time.Minute).Unix()}
}

// Token signs claims with the current key (RS256).
func (p *IdP) Token(claims map[string]any) string {
	p.mu.Lock()
	k := p.keys[0]
	p.mu.Unlock()
	return SignRS256(p.T, k.priv, k.kid, claims)
}

// Login is a valid ID token for sub.
func (p *IdP) Login(sub string) string { return p.Token(p.Claims(sub)) }

// PublicKeyPEM is the current key's public half, PEM-encoded: the "secret"
// of a key-confusion (HS256) forgery.
func (p *IdP) PublicKeyPEM() []byte {
	p.mu.Lock()
	defer p.mu.Unlock()
	der, err := x509.MarshalPKIXPublicKey(p.keys[0].priv.Public())
	if err != nil {
		p.T.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})
}

// KID is the current key's id.
func (p *IdP) KID() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.keys[0].kid
}

// SignRS256 signs claims with an RSA key under kid.
func SignRS256(t testing.TB, priv *rsa.PrivateKey, kid string, claims map[string]any) string {
	t.Helper()
	return sign(t, jose.SigningKey{Algorithm: jose.RS256, Key: jose.JSONWebKey{Key: priv, KeyID: kid}}, claims)
}

// SignHS256 signs claims with an HMAC secret under kid: a forgery when the
// secret is a public key.
func SignHS256(t testing.TB, secret []byte, kid string, claims map[string]any) string {
	t.Helper()
	return sign(t, jose.SigningKey{Algorithm: jose.HS256, Key: jose.JSONWebKey{Key: secret, KeyID: kid}}, claims)
}

func sign(t testing.TB, key jose.SigningKey, claims map[string]any) string {
	s, err := jose.NewSigner(key, (&jose.SignerOptions{}).WithType("JWT"))
	if err != nil {
		t.Fatal(err)
	}
	raw, err := jwt.Signed(s).Claims(claims).Serialize()
	if err != nil {
		t.Fatal(err)
	}
	return raw
}

// WithIdP configures cfg to trust p.
func WithIdP(cfg server.Config, p *IdP) server.Config {
	cfg.Credentials.OIDCIssuers = append(cfg.Credentials.OIDCIssuers, p.URL)
	cfg.Credentials.OIDCAudience = Audience
	return cfg
}

// Form posts a form to path with an Authorization header as given and
// returns the status and the decoded JSON body.
func (s *Server) Form(path, authorization string, form url.Values) (int, map[string]any) {
	s.T.Helper()
	req, err := http.NewRequest("POST", s.Base+path, strings.NewReader(form.Encode()))
	if err != nil {
		s.T.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	if authorization != "" {
		req.Header.Set("Authorization", authorization)
	}
	resp, err := s.httpClient().Do(req)
	if err != nil {
		s.T.Fatalf("POST %s: %v", path, err)
	}
	defer resp.Body.Close()
	var out map[string]any
	_ = json.NewDecoder(resp.Body).Decode(&out)
	if out == nil {
		out = map[string]any{}
	}
	return resp.StatusCode, out
}

// ExchangeForm is a token-exchange form for subject_token of type typ ("id_token" or "jwt").
func ExchangeForm(subjectToken, typ, scope string) url.Values {
	return url.Values{"grant_type": {"urn:ietf:params:oauth:grant-type:token-exchange"}, "subject_token": {subjectToken},
		"subject_token_type": {"urn:ietf:params:oauth:token-type:" + typ}, "scope": {scope}}
}

// Exchange asks the token endpoint with the operator key and requires a
// token; it returns the whole answer (access_token, agent, task, …).
func (s *Server) Exchange(form url.Values) map[string]any {
	s.T.Helper()
	code, out := s.Form("/oauth2/token", "Bearer "+Keys[service.RoleOperator], form)
	if code != http.StatusOK {
		s.T.Fatalf("token exchange: %d %v", code, out)
	}
	return out
}

// AgentToken is a human starting a task: user signs in at p, and the ID
// token is exchanged for an agent token with scope ("read:repo:acme/api
// …"), plus any extra form fields (resource, agent_name, task_ttl, …). It
// returns the token and its agent and task ("agent:…", "task:…").
func (s *Server) AgentToken(p *IdP, user, scope string, extra url.Values) (token, agent, task string) {
	s.T.Helper()
	form := ExchangeForm(p.Login(user), "id_token", scope)
	for k, v := range extra {
		form[k] = v
	}
	out := s.Exchange(form)
	return out["access_token"].(string), out["agent"].(string), out["task"].(string)
}

// SubAgentToken is an agent delegating: parent's token is exchanged for a
// sub-agent's with a narrower scope, plus any extra form fields. It returns
// the sub-agent's token and id ("agent:…").
func (s *Server) SubAgentToken(parent, scope string, extra url.Values) (token, agent string) {
	s.T.Helper()
	form := ExchangeForm(parent, "jwt", scope)
	for k, v := range extra {
		form[k] = v
	}
	out := s.Exchange(form)
	return out["access_token"].(string), out["agent"].(string)
}

// Signer signs tokens exactly as a mandate started with WithSigningKey
// does, for the tokens a test cannot get from the token endpoint: expired
// ones, or ones for a chain the graph does not have.
type Signer struct {
	keys *credential.KeySet
}

// SigningKeyFile writes a fresh P-256 key as PEM (a --signing-key-file) and
// returns its path and the key.
func SigningKeyFile(t testing.TB) (string, *credential.SigningKey) {
	t.Helper()
	priv, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.MarshalPKCS8PrivateKey(priv)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "signing.pem")
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	key, err := credential.NewSigningKey(priv)
	if err != nil {
		t.Fatal(err)
	}
	return path, key
}

// WithSigningKey writes a fresh P-256 key as cfg's --signing-key-file and
// returns a Signer holding the same key.
func WithSigningKey(t testing.TB, cfg server.Config) (server.Config, *Signer) {
	t.Helper()
	path, key := SigningKeyFile(t)
	ks, err := credential.NewKeySet(key)
	if err != nil {
		t.Fatal(err)
	}
	cfg.Credentials.SigningKeyFiles = append(cfg.Credentials.SigningKeyFiles, path)
	return cfg, &Signer{keys: ks}
}

// Token signs a token of issuer (the server's Base) for in, as issued at
// issuedAt with in.TTL (default 15m).
func (s *Signer) Token(t testing.TB, issuer string, issuedAt time.Time, in credential.IssueInput) string {
	t.Helper()
	tokens, err := credential.NewTokens(credential.TokensConfig{Issuer: issuer, Keys: s.keys, Now: func() time.Time { return issuedAt }})
	if err != nil {
		t.Fatal(err)
	}
	raw, _, err := tokens.Issue(in)
	if err != nil {
		t.Fatal(err)
	}
	return raw
}

// JWKS is the Signer's public keys, as mandate publishes its own.
func (s *Signer) JWKS() jose.JSONWebKeySet { return s.keys.JWKS() }
