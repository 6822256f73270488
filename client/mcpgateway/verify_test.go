package mcpgateway

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
	"github.com/modelcontextprotocol/go-sdk/auth"

	"github.com/mandate-dev/mandate/credential"
)

const (
	testIssuer   = "https://mandate.example.test"
	testResource = "https://mcp.example.test/mcp"
)

// jwksServer publishes a key set that the test can change, counting fetches.
type jwksServer struct {
	mu      sync.Mutex
	set     jose.JSONWebKeySet
	fetches atomic.Int64
	down    atomic.Bool
	url     string
}

func newJWKS(t *testing.T, keys ...*credential.SigningKey) *jwksServer {
	j := &jwksServer{}
	j.publish(keys...)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		j.fetches.Add(1)
		if j.down.Load() {
			http.Error(w, "down", http.StatusServiceUnavailable)
			return
		}
		j.mu.Lock()
		defer j.mu.Unlock()
		_ = json.NewEncoder(w).Encode(j.set)
	}))
	t.Cleanup(srv.Close)
	j.url = srv.URL
	return j
}

func (j *jwksServer) publish(keys ...*credential.SigningKey) {
	j.mu.Lock()
	defer j.mu.Unlock()
	j.set = jose.JSONWebKeySet{}
	for _, k := range keys {
		j.set.Keys = append(j.set.Keys, k.Public())
	}
}

func issuer(t *testing.T, key *credential.SigningKey, iss string, now time.Time) *credential.Tokens {
	ks, err := credential.NewKeySet(key)
	if err != nil {
		t.Fatal(err)
	}
	tokens, err := credential.NewTokens(credential.TokensConfig{Issuer: iss, Keys: ks, Now: func() time.Time { return now }})
	if err != nil {
		t.Fatal(err)
	}
	return tokens
}

func newKey(t *testing.T) *credential.SigningKey {
	k, err := credential.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	return k
}

var agentInput = credential.IssueInput{Subject: "user:alice", Agents: []string{"agent:agt_1"}, Task: "task:tsk_1", Audience: testResource}

func issue(t *testing.T, tokens *credential.Tokens, in credential.IssueInput) string {
	raw, _, err := tokens.Issue(in)
	if err != nil {
		t.Fatal(err)
	}
	return raw
}

// TestVerifier: the gateway accepts exactly mandate's live agent tokens for
// its own resource, refuses everything else as an invalid token, follows a
// key rotation, and tells "keys unreachable" from "token invalid".
func TestVerifier(t *testing.T) {
	key := newKey(t)
	j := newJWKS(t, key)
	v, err := newVerifier(testIssuer, testResource, j.url, http.DefaultClient)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	now := time.Now()
	mandate := issuer(t, key, testIssuer, now)
	good := issue(t, mandate, agentInput)
	c, err := v.verify(ctx, good)
	if err != nil || c.Agent() != "agent:agt_1" || c.Task != "task:tsk_1" {
		t.Fatalf("a good token: %+v %v", c, err)
	}
	if _, err := v.verify(ctx, good); err != nil || j.fetches.Load() != 1 {
		t.Fatalf("a verified token is remembered: %v, %d fetches", err, j.fetches.Load())
	}

	sub := agentInput
	sub.Agents = []string{"agent:agt_2", "agent:agt_1"}
	if c, err := v.verify(ctx, issue(t, mandate, sub)); err != nil || c.Agent() != "agent:agt_2" {
		t.Fatalf("a sub-agent's token: %+v %v", c, err)
	}

	other := agentInput
	other.Audience = "https://other.example.test/mcp"
	noAud := agentInput
	noAud.Audience = ""
	user := agentInput
	user.Agents = []string{"user:alice"}
	receipt, err := mandate.SignReceipt(credential.Receipt{DecisionID: "dec_1", Allowed: true, Subject: "agent:agt_1"})
	if err != nil {
		t.Fatal(err)
	}
	parts := strings.Split(good, ".")
	header, _ := base64.RawURLEncoding.DecodeString(parts[0])
	none := base64.RawURLEncoding.EncodeToString([]byte(strings.Replace(string(header), `"ES256"`, `"none"`, 1))) + "." + parts[1] + "."
	hs, _ := jose.NewSigner(jose.SigningKey{Algorithm: jose.HS256, Key: []byte("0123456789abcdef0123456789abcdef")},
		(&jose.SignerOptions{}).WithType(credential.TokenType).WithHeader("kid", key.KID()))
	var claims map[string]any
	raw, _ := base64.RawURLEncoding.DecodeString(parts[1])
	_ = json.Unmarshal(raw, &claims)
	hmacToken, _ := jwt.Signed(hs).Claims(claims).Serialize()
	for name, tok := range map[string]string{
		"another audience":     issue(t, mandate, other),
		"mandate's own aud":    issue(t, mandate, noAud),
		"another issuer":       issue(t, issuer(t, key, "https://evil.example.test", now), agentInput),
		"expired":              issue(t, issuer(t, key, testIssuer, now.Add(-time.Hour)), agentInput),
		"not yet valid":        issue(t, issuer(t, key, testIssuer, now.Add(time.Hour)), agentInput),
		"a human as the actor": issue(t, mandate, user),
		"a decision receipt":   receipt,
		"alg none":             none,
		"HS256 under its kid":  hmacToken,
		"a forged signature":   parts[0] + "." + parts[1] + "." + strings.Repeat("A", len(parts[2])),
		"swapped claims":       parts[0] + "." + base64.RawURLEncoding.EncodeToString([]byte(strings.Replace(string(raw), "agt_1", "agt_9", 1))) + "." + parts[2],
		"not a JWT":            "mgw1.agt_1.abc",
		"an unpublished key":   issue(t, issuer(t, newKey(t), testIssuer, now), agentInput),
		"empty":                "",
		"far too long":         strings.Repeat("a.", maxTokenLen),
	} {
		if _, err := v.verify(ctx, tok); !errors.Is(err, auth.ErrInvalidToken) {
			t.Errorf("%s: %v, want an invalid token", name, err)
		}
	}
	t.Logf("%d JWKS fetches", j.fetches.Load())
	if n := j.fetches.Load(); n > 2 {
		t.Fatalf("tokens naming unknown keys fetched the JWKS %d times within %v", n, jwksRefresh)
	}

	// Rotation: mandate publishes a new key and signs with it.
	next := newKey(t)
	j.publish(next, key)
	v.keys.minRefresh = 0
	if _, err := v.verify(ctx, issue(t, issuer(t, next, testIssuer, now), agentInput)); err != nil {
		t.Fatalf("a token of the rotated key: %v", err)
	}
	// mandate's keys unreachable: not the token's fault, and no allow.
	j.down.Store(true)
	if _, err := v.verify(ctx, issue(t, issuer(t, newKey(t), testIssuer, now), agentInput)); !errors.Is(err, errKeysUnavailable) || errors.Is(err, auth.ErrInvalidToken) {
		t.Fatalf("JWKS down: %v", err)
	}
	// A cached token stops verifying at its exp.
	short := agentInput
	short.TTL = time.Second
	tok := issue(t, mandate, short)
	if _, err := v.verify(ctx, tok); err != nil {
		t.Fatal(err)
	}
	v.now = func() time.Time { return now.Add(2 * time.Second) }
	if _, err := v.verify(ctx, tok); !errors.Is(err, auth.ErrInvalidToken) {
		t.Fatalf("a remembered token past its exp: %v", err)
	}
}
