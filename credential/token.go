package credential

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/go-jose/go-jose/v4/jwt"
	lru "github.com/hashicorp/golang-lru/v2"
)

// TokenType is the JOSE typ of mandate's access tokens (RFC 9068).
const TokenType = "at+jwt"

// ErrInvalidToken is wrapped by every refusal of a token: forged, expired,
// not yet valid, foreign, or malformed.
var ErrInvalidToken = errors.New("invalid token")

func invalidToken(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrInvalidToken, fmt.Sprintf(format, args...))
}

// Actor is one link of an RFC 8693 act chain: the acting agent, and nested
// in it the agent that delegated to it, up to the first agent.
type Actor struct {
	Sub string `json:"sub"`
	Act *Actor `json:"act,omitempty"`
}

// ActChain nests agents, current actor first, into an act claim.
func ActChain(agents []string) *Actor {
	var act *Actor
	for i := len(agents) - 1; i >= 0; i-- {
		act = &Actor{Sub: agents[i], Act: act}
	}
	return act
}

// Agents flattens the chain, current actor first.
func (a *Actor) Agents() []string {
	var out []string
	for x := a; x != nil; x = x.Act {
		out = append(out, x.Sub)
	}
	return out
}

// Claims are a mandate token's claims.
type Claims struct {
	jwt.Claims
	// Act is the chain of agents, current actor first.
	Act *Actor `json:"act"`
	// Task is the task the agents work on ("task:<id>").
	Task string `json:"task"`
	// Scope is the space-separated scope the token was issued for.
	Scope string `json:"scope,omitempty"`
	// ClientID is the name of the key that asked for the token.
	ClientID string `json:"client_id"`
	// HumanIssuer is the OIDC issuer that vouched for the human.
	HumanIssuer string `json:"human_iss,omitempty"`
	// Confirmation binds the token to the client certificate of the
	// connection it was issued over (RFC 8705 §3.1); nil for an unbound token.
	Confirmation *Confirmation `json:"cnf,omitempty"`
}

// Confirmation is RFC 7800's cnf claim, holding RFC 8705's certificate
// thumbprint.
type Confirmation struct {
	// X5tS256 is the unpadded base64url SHA-256 of the certificate's DER.
	X5tS256 string `json:"x5t#S256"`
}

// CertThumbprint is RFC 8705's x5t#S256 of a certificate's DER encoding.
func CertThumbprint(der []byte) string {
	sum := sha256.Sum256(der)
	return base64.RawURLEncoding.EncodeToString(sum[:])
}

// BoundTo is the certificate thumbprint the token is bound to, or "".
func (c *Claims) BoundTo() string {
	if c.Confirmation == nil {
		return ""
	}
	return c.Confirmation.X5tS256
}

// Agent is the acting agent ("agent:<id>").
func (c *Claims) Agent() string {
	if c.Act == nil {
		return ""
	}
	return c.Act.Sub
}

// TokensConfig configures token issuing and verification.
type TokensConfig struct {
	// Issuer is the iss of every token: the server's public URL. Required.
	Issuer string
	// Keys sign and verify. Required.
	Keys *KeySet
	// Audience is the aud of a token issued without a resource. Default: Issuer.
	Audience string
	// TTL is a token's lifetime when none is asked for. Default 15m.
	TTL time.Duration
	// MaxTTL bounds a token's lifetime. Default 1h.
	MaxTTL time.Duration
	// CacheSize is the number of verified tokens remembered. Default 100000.
	CacheSize int
	// Now is the clock. Default time.Now.
	Now func() time.Time
}

// Validate reports whether the config is usable. Errors name the flag.
func (c *TokensConfig) Validate() error {
	if c.Issuer == "" {
		return errors.New("--public-url is required to issue tokens")
	}
	if c.Keys == nil {
		return errors.New("no signing keys")
	}
	if c.TTL < 0 || c.MaxTTL < 0 {
		return errors.New("--token-ttl and --max-token-ttl must not be negative")
	}
	if c.TTL > c.MaxTTL && c.MaxTTL > 0 {
		return fmt.Errorf("--token-ttl %s is longer than --max-token-ttl %s", c.TTL, c.MaxTTL)
	}
	return nil
}

func (c *TokensConfig) setDefaults() {
	if c.Audience == "" {
		c.Audience = c.Issuer
	}
	if c.TTL == 0 {
		c.TTL = 15 * time.Minute
	}
	if c.MaxTTL == 0 {
		c.MaxTTL = time.Hour
	}
	if c.CacheSize == 0 {
		c.CacheSize = 100_000
	}
	if c.Now == nil {
		c.Now = time.Now
	}
}

// Tokens issues mandate's tokens and verifies them. It is safe for
// concurrent use.
type Tokens struct {
	cfg TokensConfig
	// verified maps the SHA-256 of a whole token to its claims, so a
	// token's signature is checked once; entries are used only until exp.
	verified *lru.Cache[[32]byte, *Claims]
}

// NewTokens builds the token issuer.
func NewTokens(cfg TokensConfig) (*Tokens, error) {
	cfg.setDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	c, err := lru.New[[32]byte, *Claims](cfg.CacheSize)
	if err != nil {
		return nil, err
	}
	return &Tokens{cfg: cfg, verified: c}, nil
}

// Issuer is the iss of mandate's tokens.
func (t *Tokens) Issuer() string { return t.cfg.Issuer }

// Keys are the signing keys.
func (t *Tokens) Keys() *KeySet { return t.cfg.Keys }

// IssueInput describes a token to issue.
type IssueInput struct {
	Subject     string   // the human, "user:<id>"
	Agents      []string // the chain, current actor first
	Task        string
	Scope       string
	ClientID    string
	HumanIssuer string
	// Audience is the RFC 8707 resource; empty means the configured default.
	Audience string
	// TTL is the requested lifetime; 0 means the default. It is cut to the
	// maximum and to NotAfter.
	TTL time.Duration
	// NotAfter is the earliest expiry of the agents and the task.
	NotAfter time.Time
	// CertThumbprint, when set, binds the token to that client certificate
	// (CertThumbprint of its DER): the token carries cnf.x5t#S256.
	CertThumbprint string
}

// Issue signs a new token. It fails when NotAfter has passed.
func (t *Tokens) Issue(in IssueInput) (string, *Claims, error) {
	now := t.cfg.Now().Truncate(time.Second)
	ttl := in.TTL
	if ttl == 0 {
		ttl = t.cfg.TTL
	}
	ttl = min(ttl, t.cfg.MaxTTL)
	exp := now.Add(ttl)
	if !in.NotAfter.IsZero() && in.NotAfter.Before(exp) {
		exp = in.NotAfter.Truncate(time.Second)
	}
	if !exp.After(now) {
		return "", nil, errors.New("the agent or its task expires before a token could be used")
	}
	aud := in.Audience
	if aud == "" {
		aud = t.cfg.Audience
	}
	jti := make([]byte, 16)
	if _, err := rand.Read(jti); err != nil {
		return "", nil, err
	}
	c := &Claims{
		Claims: jwt.Claims{Issuer: t.cfg.Issuer, Subject: in.Subject, Audience: jwt.Audience{aud},
			IssuedAt: jwt.NewNumericDate(now), NotBefore: jwt.NewNumericDate(now), Expiry: jwt.NewNumericDate(exp),
			ID: base64.RawURLEncoding.EncodeToString(jti)},
		Act: ActChain(in.Agents), Task: in.Task, Scope: in.Scope, ClientID: in.ClientID, HumanIssuer: in.HumanIssuer,
	}
	if in.CertThumbprint != "" {
		c.Confirmation = &Confirmation{X5tS256: in.CertThumbprint}
	}
	payload, err := json.Marshal(c)
	if err != nil {
		return "", nil, err
	}
	raw, err := t.cfg.Keys.sign(TokenType, payload)
	if err != nil {
		return "", nil, err
	}
	return raw, c, nil
}

// Verify checks a mandate token: a signature by one of the keys, typ
// at+jwt, iss, and that it is within nbf and exp now. It says nothing about
// whether the agent may still act; that is the graph's to say. Verified
// tokens are remembered by the SHA-256 of the whole token until they expire.
func (t *Tokens) Verify(raw string) (*Claims, error) {
	now := t.cfg.Now()
	sum := sha256.Sum256([]byte(raw))
	if c, ok := t.verified.Get(sum); ok {
		if now.Before(c.Expiry.Time()) && !now.Before(c.NotBefore.Time()) {
			return c, nil
		}
		t.verified.Remove(sum)
		return nil, invalidToken("expired")
	}
	c, err := t.verify(raw, now)
	if err != nil {
		return nil, err
	}
	t.verified.Add(sum, c)
	return c, nil
}

func (t *Tokens) verify(raw string, now time.Time) (*Claims, error) {
	if strings.Count(raw, ".") != 2 {
		return nil, invalidToken("not a compact JWS")
	}
	payload, err := t.cfg.Keys.verify(raw, TokenType)
	if err != nil {
		return nil, invalidToken("%v", err)
	}
	var c Claims
	if err := json.Unmarshal(payload, &c); err != nil {
		return nil, invalidToken("malformed claims")
	}
	if c.Expiry == nil || c.NotBefore == nil || c.ID == "" || c.Act == nil || c.Task == "" {
		return nil, invalidToken("missing exp, nbf, jti, act or task")
	}
	if c.Confirmation != nil && c.Confirmation.X5tS256 == "" {
		return nil, invalidToken("cnf without x5t#S256")
	}
	if err := c.Claims.ValidateWithLeeway(jwt.Expected{Issuer: t.cfg.Issuer, Time: now}, 0); err != nil {
		return nil, invalidToken("%v", err)
	}
	if !now.Before(c.Expiry.Time()) {
		return nil, invalidToken("expired")
	}
	return &c, nil
}
