// Package peercert carries a caller's verified client certificate from the
// HTTP gateway, which terminates TLS for REST and AuthZEN, to the services'
// authentication, which reads gRPC's own peer for gRPC calls.
package peercert

import (
	"context"
	"crypto/x509"
)

type key struct{}

// NewContext returns ctx carrying the leaf of a client certificate chain
// that TLS verified against the configured client CAs.
func NewContext(ctx context.Context, leaf *x509.Certificate) context.Context {
	return context.WithValue(ctx, key{}, leaf)
}

// FromContext is the verified client certificate ctx carries, or nil.
func FromContext(ctx context.Context) *x509.Certificate {
	leaf, _ := ctx.Value(key{}).(*x509.Certificate)
	return leaf
}
