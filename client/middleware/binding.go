package middleware

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"crypto/x509"
	"encoding/base64"
	"errors"
	"fmt"
	"net/http"
	"strings"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
)

// Certificate-bound agent tokens (RFC 8705). An agent token that mandate
// issued over a connection with a client certificate carries
// cnf: {"x5t#S256": <SHA-256 of that certificate>}, and is worth nothing
// without the certificate's private key: a resource service that sees the
// agent's own TLS connection refuses it unless the agent presents that
// certificate. mandate cannot make this check on a Check: the resource
// service calls mandate over its own connection, and only the resource
// service sees the agent's.
//
// The middleware reads cnf from the token's payload without verifying the
// signature. That is safe only because the same token is then checked by
// mandate (as subject_token), which verifies its signature: a token whose
// cnf was removed or changed no longer matches its signature and mandate
// rejects it, so an attacker cannot get past this check by editing the
// payload. Used on its own, without mandate verifying the token, this check
// proves nothing.

// ErrCertificateBinding is wrapped by every refusal of a certificate-bound
// token: no client certificate, or another one than the token is bound to.
var ErrCertificateBinding = errors.New("the token is bound to a client certificate that this connection does not present")

// tokenAlgorithms are the signature algorithms a token may claim to be
// parsed here at all; mandate signs with ES256 or EdDSA.
var tokenAlgorithms = []jose.SignatureAlgorithm{jose.ES256, jose.EdDSA}

// VerifyCertificateBinding checks a bearer token's RFC 8705 binding against
// the client certificate of the connection it came over (nil: none). A token
// without cnf.x5t#S256, or one that is not a JWS at all, is not refused
// here: mandate decides on it. See the package comment on binding for why
// reading cnf unverified is safe only ahead of mandate's own check.
func VerifyCertificateBinding(token string, cert *x509.Certificate) error {
	tok, err := jwt.ParseSigned(token, tokenAlgorithms)
	if err != nil {
		return nil
	}
	var claims struct {
		Cnf *struct {
			X5tS256 *string `json:"x5t#S256"`
		} `json:"cnf"`
	}
	if err := tok.UnsafeClaimsWithoutVerification(&claims); err != nil {
		// Not a JSON payload we can read: mandate refuses it.
		return nil
	}
	if claims.Cnf == nil || claims.Cnf.X5tS256 == nil {
		return nil
	}
	if cert == nil {
		return fmt.Errorf("%w: no client certificate was presented", ErrCertificateBinding)
	}
	sum := sha256.Sum256(cert.Raw)
	got := base64.RawURLEncoding.EncodeToString(sum[:])
	if subtle.ConstantTimeCompare([]byte(got), []byte(*claims.Cnf.X5tS256)) != 1 {
		return fmt.Errorf("%w: the client certificate presented is another one", ErrCertificateBinding)
	}
	return nil
}

// bearerTokens are the bearer tokens of Authorization values.
func bearerTokens(values []string) []string {
	var out []string
	for _, v := range values {
		scheme, tok, ok := strings.Cut(strings.TrimSpace(v), " ")
		if ok && strings.EqualFold(scheme, "bearer") && strings.TrimSpace(tok) != "" {
			out = append(out, strings.TrimSpace(tok))
		}
	}
	return out
}

// httpBinding checks every bearer token of r against r's client certificate.
func httpBinding(r *http.Request) error {
	var cert *x509.Certificate
	if r.TLS != nil && len(r.TLS.PeerCertificates) > 0 {
		cert = r.TLS.PeerCertificates[0]
	}
	for _, tok := range bearerTokens(r.Header.Values("Authorization")) {
		if err := VerifyCertificateBinding(tok, cert); err != nil {
			return err
		}
	}
	return nil
}

// writeUnboundToken answers 401 invalid_token (RFC 6750 §3.1, RFC 8705 §3).
func writeUnboundToken(w http.ResponseWriter, realm string, err error) {
	w.Header().Set("WWW-Authenticate", fmt.Sprintf("Bearer realm=%q, error=\"invalid_token\", error_description=%q", realm, ErrCertificateBinding.Error()))
	writeJSON(w, http.StatusUnauthorized, map[string]string{"error": "invalid_token", "message": err.Error()})
}

// grpcBinding checks every bearer token of the call's authorization metadata
// against the client certificate of its TLS connection.
func grpcBinding(ctx context.Context) error {
	md, _ := metadata.FromIncomingContext(ctx)
	toks := bearerTokens(md.Get("authorization"))
	if len(toks) == 0 {
		return nil
	}
	var cert *x509.Certificate
	if p, ok := peer.FromContext(ctx); ok {
		if info, ok := p.AuthInfo.(credentials.TLSInfo); ok && len(info.State.PeerCertificates) > 0 {
			cert = info.State.PeerCertificates[0]
		}
	}
	for _, tok := range toks {
		if err := VerifyCertificateBinding(tok, cert); err != nil {
			return err
		}
	}
	return nil
}
