package credential

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"strings"
	"testing"
	"time"
)

// TestEd25519Keys: an Ed25519 PEM key signs EdDSA tokens that verify, and
// its kid is the same however often the key is loaded.
func TestEd25519Keys(t *testing.T) {
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.MarshalPKCS8PrivateKey(priv)
	if err != nil {
		t.Fatal(err)
	}
	p := pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})
	k1, err := ParseKeyPEM(p)
	if err != nil {
		t.Fatal(err)
	}
	k2, _ := ParseKeyPEM(p)
	if k1.KID() != k2.KID() || k1.Alg() != "EdDSA" {
		t.Fatalf("kid %s / %s, alg %s", k1.KID(), k2.KID(), k1.Alg())
	}
	ks, err := NewKeySet(k1)
	if err != nil {
		t.Fatal(err)
	}
	tokens, err := NewTokens(TokensConfig{Issuer: "https://mandate.example", Keys: ks})
	if err != nil {
		t.Fatal(err)
	}
	raw, c, err := tokens.Issue(IssueInput{Subject: "user:alice", Agents: []string{"agent:b", "agent:a"}, Task: "task:t", NotAfter: time.Now().Add(5 * time.Minute)})
	if err != nil {
		t.Fatal(err)
	}
	if c.Expiry.Time().After(time.Now().Add(5 * time.Minute)) {
		t.Errorf("exp %v past NotAfter", c.Expiry.Time())
	}
	got, err := tokens.Verify(raw)
	if err != nil || strings.Join(got.Act.Agents(), ",") != "agent:b,agent:a" {
		t.Fatalf("verify: %v %v", got, err)
	}
	// Flip one bit of the signature's first byte: replacing its last two
	// characters could leave the bytes unchanged (1 run in 256), since the
	// last base64url character carries only 2 bits of the 64-byte signature.
	dot := strings.LastIndexByte(raw, '.')
	sig, err := base64.RawURLEncoding.DecodeString(raw[dot+1:])
	if err != nil {
		t.Fatal(err)
	}
	sig[0] ^= 1
	if _, err := tokens.Verify(raw[:dot+1] + base64.RawURLEncoding.EncodeToString(sig)); err == nil {
		t.Fatal("a tampered token verifies")
	}
}

// TestTokenLifetime: the default TTL, the maximum, and an agent that
// expires first.
func TestTokenLifetime(t *testing.T) {
	k, _ := GenerateKey()
	ks, _ := NewKeySet(k)
	now := time.Now().Truncate(time.Second)
	tokens, err := NewTokens(TokensConfig{Issuer: "https://m", Keys: ks, Now: func() time.Time { return now }})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		ttl      time.Duration
		notAfter time.Time
		want     time.Duration
	}{
		{0, time.Time{}, 15 * time.Minute},
		{2 * time.Hour, time.Time{}, time.Hour},
		{0, now.Add(time.Minute), time.Minute},
	} {
		_, c, err := tokens.Issue(IssueInput{Subject: "user:a", Agents: []string{"agent:a"}, Task: "task:t", TTL: tc.ttl, NotAfter: tc.notAfter})
		if err != nil {
			t.Fatal(err)
		}
		if got := c.Expiry.Time().Sub(now); got != tc.want {
			t.Errorf("ttl %s notAfter %v: lifetime %s, want %s", tc.ttl, tc.notAfter, got, tc.want)
		}
	}
	if _, _, err := tokens.Issue(IssueInput{Subject: "user:a", Agents: []string{"agent:a"}, Task: "task:t", NotAfter: now.Add(-time.Second)}); err == nil {
		t.Error("a token for an expired agent was issued")
	}
	if _, err := NewTokens(TokensConfig{Issuer: "https://m", Keys: ks, TTL: 2 * time.Hour}); err == nil {
		t.Error("--token-ttl above --max-token-ttl was accepted")
	}
}
