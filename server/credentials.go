package server

import (
	"crypto/x509"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/mandate-dev/mandate/credential"
	"github.com/mandate-dev/mandate/engine/audit"
	"github.com/mandate-dev/mandate/gateway/devidp"
	"github.com/mandate-dev/mandate/gateway/oauth"
	"github.com/mandate-dev/mandate/service"
)

// CredentialsConfig configures agent tokens and the humans' sign-in.
type CredentialsConfig struct {
	// OIDCIssuers are the identity providers whose human tokens are accepted
	// (--oidc-issuer, repeatable).
	OIDCIssuers []string
	// OIDCAudience is the aud every human token must carry (--oidc-audience).
	OIDCAudience string
	// OIDCUserClaim is the claim that names the user (--oidc-user-claim). Default "sub".
	OIDCUserClaim string
	// SigningKeyFiles are PEM private keys (P-256 or Ed25519); the first
	// signs, all are published (--signing-key-file). Empty: a key is made in
	// memory, for development.
	SigningKeyFiles []string
	// TokenTTL is a token's default lifetime (--token-ttl). Default 15m.
	TokenTTL time.Duration
	// MaxTokenTTL bounds a token's lifetime (--max-token-ttl). Default 1h.
	MaxTokenTTL time.Duration
	// RequireHumanToken is "on", "off" or "" (auto: on whenever an OIDC
	// issuer is configured). On, POST /v1/tasks with a bare principal and
	// POST /v1/grants to an agent are refused (--require-human-token).
	RequireHumanToken string
	// DevIdP also serves a DEVELOPMENT-ONLY OIDC provider under /dev-idp and
	// trusts it (--dev-idp): anyone can sign in there as anyone.
	DevIdP bool
	// HTTPClient fetches the issuers' discovery documents and JWKS. Default http.DefaultClient.
	HTTPClient *http.Client
}

// Validate reports whether the config is usable. Errors name the flag.
func (c *CredentialsConfig) Validate() error {
	switch c.RequireHumanToken {
	case "", "on", "off", "true", "false":
	default:
		return fmt.Errorf("--require-human-token: %q is not on or off", c.RequireHumanToken)
	}
	if c.TokenTTL < 0 || c.MaxTokenTTL < 0 {
		return errors.New("--token-ttl and --max-token-ttl must not be negative")
	}
	hc := credential.HumansConfig{Issuers: c.OIDCIssuers, Audience: c.OIDCAudience}
	return hc.Validate()
}

// requireHumanToken reports whether tasks and agent grants must come from a verified human token.
func (c *CredentialsConfig) requireHumanToken() bool {
	switch c.RequireHumanToken {
	case "on", "true":
		return true
	case "off", "false":
		return false
	}
	return len(c.OIDCIssuers) > 0 || c.DevIdP
}

// validatePublicURL checks --public-url: an absolute http(s) URL without
// query or fragment.
func validatePublicURL(s string) error {
	if s == "" {
		return nil
	}
	u, err := url.Parse(s)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.RawQuery != "" || u.Fragment != "" || u.User != nil {
		return fmt.Errorf("--public-url %q must be an absolute http(s) URL without credentials, query or fragment", s)
	}
	return nil
}

// publicURL is --public-url, or in its absence the REST listener's own URL:
// https when mandate serves TLS, so the tokens' iss and the metadata never
// name a plaintext URL that nobody serves.
func (s *Server) publicURL() string {
	if s.cfg.PublicURL != "" {
		return strings.TrimSuffix(s.cfg.PublicURL, "/")
	}
	if s.cfg.TLS.CertFile != "" {
		return "https://" + s.HTTPAddr()
	}
	return "http://" + s.HTTPAddr()
}

// setupCredentials builds the token issuer, the OIDC verifier and the OAuth endpoints.
func (s *Server) setupCredentials(keys *service.Keys, extra map[string]http.Handler) (*oauth.Handler, *credential.Tokens, *credential.Humans, error) {
	c := s.cfg.Credentials
	if c.DevIdP {
		if c.OIDCAudience == "" {
			c.OIDCAudience = "mandate-dev"
		}
		idp, err := devidp.New(devidp.Config{Issuer: s.publicURL() + devidp.Prefix, Audience: c.OIDCAudience,
			Authorize: func(authorization string) bool {
				scheme, key, _ := strings.Cut(authorization, " ")
				k, ok := keys.Lookup(strings.TrimSpace(key))
				return ok && strings.EqualFold(scheme, "bearer") && (k.Role == service.RoleOperator || k.Role == service.RoleAdmin)
			}})
		if err != nil {
			return nil, nil, nil, err
		}
		for pattern, h := range idp.Routes() {
			extra[pattern] = h
		}
		c.OIDCIssuers = append(append([]string(nil), c.OIDCIssuers...), s.publicURL()+devidp.Prefix)
		s.log.Warn("--dev-idp: serving a DEVELOPMENT-ONLY identity provider at " + s.publicURL() + devidp.Prefix + " where anyone signs in as anyone; never use it in production")
	}
	var signing []*credential.SigningKey
	for _, f := range c.SigningKeyFiles {
		k, err := credential.LoadKeyFile(f)
		if err != nil {
			return nil, nil, nil, fmt.Errorf("--signing-key-file %s: %w", f, err)
		}
		signing = append(signing, k)
	}
	if len(signing) == 0 {
		k, err := credential.GenerateKey()
		if err != nil {
			return nil, nil, nil, err
		}
		s.log.Warn("no --signing-key-file: signing tokens with a key made in memory; its tokens die with this process and other replicas cannot verify them")
		signing = append(signing, k)
	}
	ks, err := credential.NewKeySet(signing...)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("--signing-key-file: %w", err)
	}
	tokens, err := credential.NewTokens(credential.TokensConfig{Issuer: s.publicURL(), Keys: ks, TTL: c.TokenTTL, MaxTTL: c.MaxTokenTTL, Now: s.cfg.Engine.Now})
	if err != nil {
		return nil, nil, nil, err
	}
	humans, err := credential.NewHumans(credential.HumansConfig{Issuers: c.OIDCIssuers, Audience: c.OIDCAudience,
		UserClaim: c.OIDCUserClaim, HTTPClient: c.HTTPClient, Now: s.cfg.Engine.Now})
	if err != nil {
		return nil, nil, nil, err
	}
	var auditor oauth.Auditor
	if s.recorder != nil {
		auditor = s.recorder
	}
	h, err := oauth.New(oauth.Config{PublicURL: s.publicURL(), Tokens: tokens, Humans: humans, Graph: s.engine, Audit: auditor, Log: s.log,
		Authenticate: func(secret string) (oauth.Client, bool) {
			k, ok := keys.Lookup(secret)
			return oauth.Client{Name: k.Name, Role: string(k.Role)}, ok
		},
		AuthenticateCert: func(leaf *x509.Certificate) (oauth.Client, bool) {
			k, ok := keys.LookupCert(leaf)
			return oauth.Client{Name: k.Name, Role: string(k.Role)}, ok
		}})
	if err != nil {
		return nil, nil, nil, err
	}
	return h, tokens, humans, nil
}

var _ oauth.Auditor = (*audit.Recorder)(nil)
