package mcpgateway

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
	lru "github.com/hashicorp/golang-lru/v2"
	"github.com/modelcontextprotocol/go-sdk/auth"

	"github.com/mandate-dev/mandate/credential"
)

// The gateway verifies mandate's agent tokens itself, against mandate's
// JWKS, before a request reaches MCP: the signature (ES256 or EdDSA, by a
// key mandate publishes), typ at+jwt, iss (mandate's issuer), aud (this
// gateway's resource, <public-url>/mcp, so a token issued for another
// resource opens nothing here), nbf and exp. That answers who the agent is,
// which tools/list needs, without a round trip; it never answers what the
// agent may do. Every tools/call, resources/read and prompts/get is then
// checked by mandate with the token itself as subject_token, so mandate
// verifies it again and requires its agent, its task and its chain to be
// live and the graph's on every call: a revocation stops the next call even
// on a connection that is already open.

// errKeysUnavailable is mandate's JWKS not being reachable: the request is
// refused with 503, and the token is not called invalid.
var errKeysUnavailable = errors.New("mandate's signing keys cannot be fetched")

// maxTokenLen bounds a bearer token.
const maxTokenLen = 16 << 10

// jwksRefresh is the shortest time between two JWKS fetches caused by
// tokens naming a key the gateway does not know, so forged tokens cannot
// turn the gateway into a load on mandate. A token signed with a new key
// (mandate rotated) fetches the keys again unless a fetch happened within
// this time.
const jwksRefresh = 5 * time.Second

// keysMaxAge is how long fetched keys are used before they are fetched
// again, so a key mandate withdrew stops opening the gateway.
const keysMaxAge = 5 * time.Minute

// agentToken is a verified token: the claims, and the token as sent.
type agentToken struct {
	claims *credential.Claims
	raw    string
}

// verifier checks mandate's agent tokens for one resource.
type verifier struct {
	issuer, resource string
	keys             *keySet
	now              func() time.Time
	// verified maps the SHA-256 of a whole token to its claims, so a token's
	// signature is checked once; entries are used only until exp.
	verified *lru.Cache[[32]byte, *credential.Claims]
}

func newVerifier(issuer, resource, jwksURL string, hc *http.Client) (*verifier, error) {
	c, err := lru.New[[32]byte, *credential.Claims](100_000)
	if err != nil {
		return nil, err
	}
	return &verifier{issuer: issuer, resource: resource, keys: &keySet{url: jwksURL, http: hc, minRefresh: jwksRefresh}, now: time.Now, verified: c}, nil
}

func invalid(format string, args ...any) error {
	return fmt.Errorf("%w: %s", auth.ErrInvalidToken, fmt.Sprintf(format, args...))
}

// verify returns the token's claims, an error wrapping auth.ErrInvalidToken
// for a token this gateway must refuse, or errKeysUnavailable.
func (v *verifier) verify(ctx context.Context, raw string) (*credential.Claims, error) {
	now := v.now()
	sum := sha256.Sum256([]byte(raw))
	if c, ok := v.verified.Get(sum); ok {
		if now.Before(c.Expiry.Time()) {
			return c, nil
		}
		v.verified.Remove(sum)
		return nil, invalid("the token has expired")
	}
	if len(raw) > maxTokenLen || strings.Count(raw, ".") != 2 {
		return nil, invalid("not a mandate agent token (a compact JWS)")
	}
	jws, err := jose.ParseSigned(raw, []jose.SignatureAlgorithm{jose.ES256, jose.EdDSA})
	if err != nil {
		return nil, invalid("malformed, or signed with an algorithm mandate does not use: %v", err)
	}
	if len(jws.Signatures) != 1 {
		return nil, invalid("want exactly one signature")
	}
	h := jws.Signatures[0].Header
	if typ, _ := h.ExtraHeaders[jose.HeaderType].(string); !strings.EqualFold(typ, credential.TokenType) && !strings.EqualFold(typ, "application/"+credential.TokenType) {
		return nil, invalid("typ %q is not %s: not an access token", typ, credential.TokenType)
	}
	key, err := v.keys.key(ctx, h.KeyID)
	if err != nil {
		return nil, err
	}
	if key.Algorithm != "" && key.Algorithm != h.Algorithm {
		return nil, invalid("alg %s does not match key %q", h.Algorithm, h.KeyID)
	}
	payload, err := jws.Verify(key)
	if err != nil {
		return nil, invalid("bad signature")
	}
	var c credential.Claims
	if err := json.Unmarshal(payload, &c); err != nil {
		return nil, invalid("malformed claims")
	}
	if c.Expiry == nil || c.NotBefore == nil || c.ID == "" || c.Act == nil || c.Task == "" || !strings.HasPrefix(c.Agent(), "agent:") {
		return nil, invalid("missing exp, nbf, jti, act or task")
	}
	// A little leeway for nbf and iat, whose issuer's clock may run ahead;
	// none for exp.
	if err := c.Claims.ValidateWithLeeway(jwt.Expected{Issuer: v.issuer, AnyAudience: jwt.Audience{v.resource}, Time: now}, 30*time.Second); err != nil {
		if errors.Is(err, jwt.ErrInvalidAudience) {
			return nil, invalid("issued for another resource (aud %q), not %q: exchange with resource=%s", []string(c.Audience), v.resource, v.resource)
		}
		return nil, invalid("%v", err)
	}
	if !now.Before(c.Expiry.Time()) {
		return nil, invalid("the token has expired")
	}
	v.verified.Add(sum, &c)
	return &c, nil
}

// keySet is mandate's published signing keys, fetched from its JWKS and
// fetched again when a token names a key not yet seen (a rotation).
type keySet struct {
	url        string
	http       *http.Client
	minRefresh time.Duration

	mu      sync.RWMutex
	keys    map[string]*jose.JSONWebKey // by kid; guarded by mu
	fetched time.Time                   // guarded by mu

	fetch sync.Mutex // one fetch at a time
}

func (k *keySet) lookup(kid string) (*jose.JSONWebKey, time.Time) {
	k.mu.RLock()
	defer k.mu.RUnlock()
	return k.keys[kid], k.fetched
}

func (k *keySet) key(ctx context.Context, kid string) (*jose.JSONWebKey, error) {
	if kid == "" {
		return nil, invalid("no kid")
	}
	if key, fetched := k.lookup(kid); key != nil {
		if time.Since(fetched) > keysMaxAge {
			// A key mandate withdrew stops verifying here within keysMaxAge.
			k.fetch.Lock()
			if _, again := k.lookup(kid); !again.After(fetched) {
				if err := k.refresh(ctx); err != nil {
					k.fetch.Unlock()
					return nil, fmt.Errorf("%w: %v", errKeysUnavailable, err)
				}
			}
			k.fetch.Unlock()
			if key, _ = k.lookup(kid); key == nil {
				return nil, invalid("signed with a key mandate no longer publishes (kid %q)", kid)
			}
		}
		return key, nil
	}
	k.fetch.Lock()
	defer k.fetch.Unlock()
	key, fetched := k.lookup(kid)
	if key != nil {
		return key, nil
	}
	if !fetched.IsZero() && time.Since(fetched) < k.minRefresh {
		return nil, invalid("signed with a key mandate does not publish (kid %q)", kid)
	}
	if err := k.refresh(ctx); err != nil {
		return nil, fmt.Errorf("%w: %v", errKeysUnavailable, err)
	}
	if key, _ = k.lookup(kid); key == nil {
		return nil, invalid("signed with a key mandate does not publish (kid %q)", kid)
	}
	return key, nil
}

func (k *keySet) refresh(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, k.url, nil)
	if err != nil {
		return err
	}
	req.Close = true // fetches are rare: hold no idle connection to mandate
	resp, err := k.http.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: HTTP %d", k.url, resp.StatusCode)
	}
	var set jose.JSONWebKeySet
	if err := json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(&set); err != nil {
		return fmt.Errorf("GET %s: %v", k.url, err)
	}
	keys := map[string]*jose.JSONWebKey{}
	for i := range set.Keys {
		key := &set.Keys[i]
		if key.KeyID == "" || !key.Valid() || !key.IsPublic() || (key.Use != "" && key.Use != "sig") {
			continue
		}
		keys[key.KeyID] = key
	}
	k.mu.Lock()
	k.keys, k.fetched = keys, time.Now()
	k.mu.Unlock()
	return nil
}
