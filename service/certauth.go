package service

import (
	"context"
	"crypto/x509"
	"fmt"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"

	"github.com/mandate-dev/mandate/internal/peercert"
)

// Certificate identities in the keys file: an entry with spiffe_id or
// dns_name instead of sha256 authenticates callers whose client certificate,
// verified by TLS against --client-ca, carries that identity.

// identityKey indexes a certificate identity.
func spiffeKey(id string) string { return "spiffe:" + id }
func dnsKey(name string) string  { return "dns:" + name }
func hasCertIdentity(k Key) bool { return k.SPIFFEID != "" || k.DNSName != "" }
func certIdentityOf(k Key) string {
	return map[bool]string{true: spiffeKey(k.SPIFFEID), false: dnsKey(k.DNSName)}[k.SPIFFEID != ""]
}

// validateCertIdentity checks a keys-file entry's certificate identity.
func validateCertIdentity(k Key) error {
	if k.SPIFFEID != "" && k.DNSName != "" {
		return fmt.Errorf("set spiffe_id or dns_name, not both")
	}
	if k.SPIFFEID != "" {
		id, err := spiffeid.FromString(k.SPIFFEID)
		if err != nil {
			return fmt.Errorf("spiffe_id %q: %w", k.SPIFFEID, err)
		}
		if id.String() != k.SPIFFEID {
			return fmt.Errorf("spiffe_id %q: write it as %q", k.SPIFFEID, id.String())
		}
	}
	if k.DNSName != "" && (len(k.DNSName) > 253 || !validDNSName(k.DNSName)) {
		return fmt.Errorf("dns_name %q is not a DNS name", k.DNSName)
	}
	return nil
}

func validDNSName(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' || c == '.') {
			return false
		}
	}
	return s[0] != '.' && s[len(s)-1] != '.'
}

// verifiedLeaf is the caller's client certificate, verified by TLS against
// the client CAs: from gRPC's peer, or from the gateway for REST and AuthZEN.
func verifiedLeaf(ctx context.Context) *x509.Certificate {
	if p, ok := peer.FromContext(ctx); ok {
		if info, ok := p.AuthInfo.(credentials.TLSInfo); ok && len(info.State.VerifiedChains) > 0 && len(info.State.VerifiedChains[0]) > 0 {
			return info.State.VerifiedChains[0][0]
		}
		return nil
	}
	return peercert.FromContext(ctx)
}

// LookupCert finds the key for a client certificate that TLS verified
// against --client-ca, as the interceptors do for a caller that sends no key.
func (k *Keys) LookupCert(leaf *x509.Certificate) (Key, bool) {
	if leaf == nil {
		return Key{}, false
	}
	return k.certKey(leaf)
}

// certKey maps a verified client certificate to its keys-file entry: by its
// SPIFFE ID when it is an X.509-SVID (one spiffe:// URI SAN, parsed and
// validated by go-spiffe), else by any of its DNS names.
func (k *Keys) certKey(leaf *x509.Certificate) (Key, bool) {
	if len(leaf.URIs) > 0 {
		id, err := x509svid.IDFromCert(leaf)
		if err != nil {
			return Key{}, false
		}
		key, ok := k.byIdentity[spiffeKey(id.String())]
		return key, ok
	}
	for _, name := range leaf.DNSNames {
		if key, ok := k.byIdentity[dnsKey(name)]; ok {
			return key, true
		}
	}
	return Key{}, false
}
