package peercert

import (
	"crypto/x509"

	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
)

// SPIFFEID is the SPIFFE ID of an X.509-SVID (exactly one spiffe:// URI SAN,
// parsed and validated by go-spiffe), or "" for nil, for a certificate that
// is not an SVID, or for one whose SPIFFE ID is malformed.
func SPIFFEID(leaf *x509.Certificate) string {
	if leaf == nil || len(leaf.URIs) == 0 {
		return ""
	}
	id, err := x509svid.IDFromCert(leaf)
	if err != nil {
		return ""
	}
	return id.String()
}
