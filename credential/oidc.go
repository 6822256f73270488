package credential

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/coreos/go-oidc/v3/oidc"
	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
)

// humanAlgs are the algorithms a human's token may be signed with. HMAC is
// not among them, so a token "signed" with an issuer's public key as an
// HS256 secret is refused before any key is looked at, and so is alg none.
var humanAlgs = []jose.SignatureAlgorithm{jose.RS256, jose.RS384, jose.RS512, jose.PS256, jose.PS384, jose.PS512,
	jose.ES256, jose.ES384, jose.ES512, jose.EdDSA}

// HumansConfig configures OIDC sign-in of humans.
type HumansConfig struct {
	// Issuers are the OIDC issuers whose tokens are accepted (--oidc-issuer).
	Issuers []string
	// Audience is the aud every human token must carry (--oidc-audience).
	Audience string
	// UserClaim is the claim that names the user (--oidc-user-claim):
	// "sub" (default), "email" (only when email_verified is true), or
	// another string claim.
	UserClaim string
	// HTTPClient fetches discovery documents and JWKS. Default http.DefaultClient.
	HTTPClient *http.Client
	// Now is the clock. Default time.Now.
	Now func() time.Time
}

// Validate reports whether the config is usable. Errors name the flag.
func (c *HumansConfig) Validate() error {
	if len(c.Issuers) == 0 {
		return nil
	}
	if c.Audience == "" {
		return errors.New("--oidc-audience is required with --oidc-issuer")
	}
	seen := map[string]bool{}
	for _, iss := range c.Issuers {
		u, err := url.Parse(iss)
		if err != nil || u.Scheme != "https" && u.Scheme != "http" || u.Host == "" || u.RawQuery != "" || u.Fragment != "" {
			return fmt.Errorf("--oidc-issuer %q must be an http(s) URL without query or fragment", iss)
		}
		p := issuerPrefix(iss)
		if seen[p] {
			return fmt.Errorf("--oidc-issuer %q is listed twice or names the same host and path as another", iss)
		}
		seen[p] = true
	}
	return nil
}

// Human is a verified human.
type Human struct {
	// Issuer is the OIDC issuer that vouched for the human.
	Issuer string
	// Subject is the issuer's sub.
	Subject string
	// UserID is the user: id in the graph (see UserID).
	UserID string
}

// Humans verifies humans' OIDC tokens. Each issuer is discovered on first use
// and its JWKS is cached and refreshed when a token names an unknown key.
type Humans struct {
	cfg HumansConfig
	mu  sync.Mutex
	// verifiers by issuer; guarded by mu. Missing until discovery succeeds.
	verifiers map[string]*oidc.IDTokenVerifier
}

// NewHumans builds the verifier; nil when no issuer is configured.
func NewHumans(cfg HumansConfig) (*Humans, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if len(cfg.Issuers) == 0 {
		return nil, nil
	}
	if cfg.UserClaim == "" {
		cfg.UserClaim = "sub"
	}
	if cfg.HTTPClient == nil {
		cfg.HTTPClient = http.DefaultClient
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	return &Humans{cfg: cfg, verifiers: map[string]*oidc.IDTokenVerifier{}}, nil
}

// Issuers are the configured issuers.
func (h *Humans) Issuers() []string { return h.cfg.Issuers }

// ErrIssuerUnavailable means a configured issuer's discovery failed.
var ErrIssuerUnavailable = errors.New("OIDC issuer unavailable")

func (h *Humans) verifier(ctx context.Context, iss string) (*oidc.IDTokenVerifier, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if v, ok := h.verifiers[iss]; ok {
		return v, nil
	}
	dctx, cancel := context.WithTimeout(oidc.ClientContext(context.WithoutCancel(ctx), h.cfg.HTTPClient), 10*time.Second)
	defer cancel()
	p, err := oidc.NewProvider(dctx, iss)
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %v", ErrIssuerUnavailable, iss, err)
	}
	algs := make([]string, len(humanAlgs))
	for i, a := range humanAlgs {
		algs[i] = string(a)
	}
	v := p.Verifier(&oidc.Config{ClientID: h.cfg.Audience, SupportedSigningAlgs: algs, Now: h.cfg.Now})
	h.verifiers[iss] = v
	return v, nil
}

// Verify checks a human's ID token or JWT access token: signed by a key of
// its issuer, which must be configured, for the audience, within its
// lifetime. It returns ErrInvalidToken for every refusal and
// ErrIssuerUnavailable when the issuer cannot be reached.
func (h *Humans) Verify(ctx context.Context, raw string) (*Human, error) {
	// The unverified iss only picks the verifier; the verifier checks it.
	tok, err := jwt.ParseSigned(raw, humanAlgs)
	if err != nil {
		return nil, invalidToken("malformed, or signed with an algorithm that is not accepted")
	}
	var peek jwt.Claims
	if err := tok.UnsafeClaimsWithoutVerification(&peek); err != nil {
		return nil, invalidToken("malformed claims")
	}
	known := false
	for _, iss := range h.cfg.Issuers {
		known = known || iss == peek.Issuer
	}
	if !known {
		return nil, invalidToken("issued by an issuer this server does not trust")
	}
	v, err := h.verifier(ctx, peek.Issuer)
	if err != nil {
		return nil, err
	}
	idt, err := v.Verify(ctx, raw)
	if err != nil {
		return nil, invalidToken("%v", err)
	}
	if idt.IssuedAt.After(h.cfg.Now().Add(5 * time.Minute)) {
		return nil, invalidToken("issued in the future")
	}
	var claims map[string]any
	if err := idt.Claims(&claims); err != nil {
		return nil, invalidToken("malformed claims")
	}
	value, err := userValue(claims, h.cfg.UserClaim)
	if err != nil {
		return nil, err
	}
	id := Escape(value)
	if len(h.cfg.Issuers) > 1 {
		id = issuerPrefix(idt.Issuer) + "|" + id
	}
	if len(id) > 1024 {
		return nil, invalidToken("the %s claim is too long to be a user id", h.cfg.UserClaim)
	}
	return &Human{Issuer: idt.Issuer, Subject: idt.Subject, UserID: id}, nil
}

func userValue(claims map[string]any, claim string) (string, error) {
	v, _ := claims[claim].(string)
	if v == "" {
		return "", invalidToken("has no %s claim", claim)
	}
	if claim == "email" {
		if verified, _ := claims["email_verified"].(bool); !verified {
			return "", invalidToken("email is not verified (email_verified is not true)")
		}
	}
	return v, nil
}

// issuerPrefix is the stable prefix of user ids from an issuer when several
// are configured: the escaped host and path, e.g. "idp=2Eexample=2Ecom".
func issuerPrefix(iss string) string {
	u, err := url.Parse(iss)
	if err != nil {
		return Escape(iss)
	}
	return Escape(u.Host + strings.TrimSuffix(u.Path, "/"))
}

// Escape makes any string a valid SpiceDB object id, the same way
// everywhere: ASCII letters, digits, '_' and '-' stay, and every other byte
// becomes "=" and two upper-case hex digits. "alice@example.com" becomes
// "alice=40example=2Ecom". It is reversible, and an id that needs no
// escaping is unchanged.
func Escape(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '-' {
			b.WriteByte(c)
			continue
		}
		fmt.Fprintf(&b, "=%02X", c)
	}
	return b.String()
}
