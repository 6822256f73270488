package credential

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"fmt"
	"os"

	"github.com/go-jose/go-jose/v4"
)

// SigningKey is one private key mandate signs with, named by its RFC 7638
// thumbprint so that every replica holding it names it the same way.
type SigningKey struct {
	kid  string
	alg  jose.SignatureAlgorithm
	priv crypto.Signer
}

// KID is the key's RFC 7638 thumbprint (SHA-256, base64url).
func (k *SigningKey) KID() string { return k.kid }

// Alg is the JWS algorithm the key signs with: ES256 or EdDSA.
func (k *SigningKey) Alg() jose.SignatureAlgorithm { return k.alg }

// Public is the key's public half as a JWK.
func (k *SigningKey) Public() jose.JSONWebKey {
	return jose.JSONWebKey{Key: k.priv.Public(), KeyID: k.kid, Algorithm: string(k.alg), Use: "sig"}
}

// NewSigningKey wraps a P-256 ECDSA or Ed25519 private key.
func NewSigningKey(priv crypto.Signer) (*SigningKey, error) {
	var alg jose.SignatureAlgorithm
	switch p := priv.(type) {
	case *ecdsa.PrivateKey:
		if p.Curve != elliptic.P256() {
			return nil, errors.New("an ECDSA signing key must be on P-256 (ES256)")
		}
		alg = jose.ES256
	case ed25519.PrivateKey:
		alg = jose.EdDSA
	default:
		return nil, fmt.Errorf("signing keys must be P-256 ECDSA or Ed25519, got %T", priv)
	}
	jwk := jose.JSONWebKey{Key: priv.Public()}
	tp, err := jwk.Thumbprint(crypto.SHA256)
	if err != nil {
		return nil, err
	}
	return &SigningKey{kid: base64.RawURLEncoding.EncodeToString(tp), alg: alg, priv: priv}, nil
}

// GenerateKey makes a new P-256 key, for development mode and tests. It
// lives only in memory: tokens it signed die with the process.
func GenerateKey() (*SigningKey, error) {
	priv, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	return NewSigningKey(priv)
}

// LoadKeyFile reads one PEM private key (PKCS #8, or SEC 1 "EC PRIVATE KEY").
func LoadKeyFile(path string) (*SigningKey, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	return ParseKeyPEM(b)
}

// ParseKeyPEM parses one PEM private key (PKCS #8, or SEC 1 "EC PRIVATE KEY").
func ParseKeyPEM(b []byte) (*SigningKey, error) {
	block, _ := pem.Decode(b)
	if block == nil {
		return nil, errors.New("no PEM block found")
	}
	var key any
	var err error
	switch block.Type {
	case "PRIVATE KEY":
		key, err = x509.ParsePKCS8PrivateKey(block.Bytes)
	case "EC PRIVATE KEY":
		key, err = x509.ParseECPrivateKey(block.Bytes)
	default:
		return nil, fmt.Errorf("PEM block %q is not a private key (want PRIVATE KEY or EC PRIVATE KEY)", block.Type)
	}
	if err != nil {
		return nil, err
	}
	signer, ok := key.(crypto.Signer)
	if !ok {
		return nil, fmt.Errorf("unsupported key type %T", key)
	}
	return NewSigningKey(signer)
}

// KeySet is mandate's signing keys: the first signs, every one verifies and
// is published, so keys rotate without breaking unexpired tokens. It is
// immutable once built.
type KeySet struct {
	keys  []*SigningKey // never empty
	byKID map[string]*SigningKey
}

// NewKeySet builds a key set; keys[0] signs.
func NewKeySet(keys ...*SigningKey) (*KeySet, error) {
	if len(keys) == 0 {
		return nil, errors.New("no signing keys")
	}
	ks := &KeySet{keys: keys, byKID: map[string]*SigningKey{}}
	for _, k := range keys {
		if _, dup := ks.byKID[k.kid]; dup {
			return nil, fmt.Errorf("signing key %s is listed twice", k.kid)
		}
		ks.byKID[k.kid] = k
	}
	return ks, nil
}

// JWKS is the public key set, as served at /.well-known/jwks.json.
func (ks *KeySet) JWKS() jose.JSONWebKeySet {
	out := jose.JSONWebKeySet{}
	for _, k := range ks.keys {
		out.Keys = append(out.Keys, k.Public())
	}
	return out
}

// Algorithms lists the algorithms the keys sign with, without repeats.
func (ks *KeySet) Algorithms() []jose.SignatureAlgorithm {
	var out []jose.SignatureAlgorithm
	seen := map[jose.SignatureAlgorithm]bool{}
	for _, k := range ks.keys {
		if !seen[k.alg] {
			seen[k.alg] = true
			out = append(out, k.alg)
		}
	}
	return out
}

// sign makes a compact JWS of payload with the first key and the given typ.
func (ks *KeySet) sign(typ string, payload []byte) (string, error) {
	k := ks.keys[0]
	signer, err := jose.NewSigner(jose.SigningKey{Algorithm: k.alg, Key: jose.JSONWebKey{Key: k.priv, KeyID: k.kid}},
		(&jose.SignerOptions{}).WithType(jose.ContentType(typ)))
	if err != nil {
		return "", err
	}
	jws, err := signer.Sign(payload)
	if err != nil {
		return "", err
	}
	return jws.CompactSerialize()
}

// verify checks a compact JWS against the key its kid names and that its
// typ is want. It returns the payload.
func (ks *KeySet) verify(raw, want string) ([]byte, error) {
	jws, err := jose.ParseSignedCompact(raw, ks.Algorithms())
	if err != nil {
		return nil, fmt.Errorf("malformed or unsupported: %w", err)
	}
	if len(jws.Signatures) != 1 {
		return nil, errors.New("must carry exactly one signature")
	}
	h := jws.Signatures[0].Protected
	if typ, _ := h.ExtraHeaders[jose.HeaderType].(string); typ != want {
		return nil, fmt.Errorf("typ must be %s", want)
	}
	k, ok := ks.byKID[h.KeyID]
	if !ok {
		return nil, errors.New("signed by an unknown key")
	}
	if jose.SignatureAlgorithm(h.Algorithm) != k.alg {
		return nil, errors.New("alg does not match the key")
	}
	payload, err := jws.Verify(k.priv.Public())
	if err != nil {
		return nil, errors.New("bad signature")
	}
	return payload, nil
}
