// Package requestid makes, accepts and carries the request id that every
// answer echoes and every audit record and log line names, on gRPC, REST and
// AuthZEN alike.
package requestid

import (
	"context"
	"crypto/rand"
	"encoding/hex"
)

// Header carries a request id in and out: X-Request-Id on HTTP, x-request-id
// in gRPC metadata.
const Header = "X-Request-Id"

// maxLen bounds a caller's id; a longer one is replaced.
const maxLen = 128

// New makes a request id.
func New() string {
	b := make([]byte, 12)
	_, _ = rand.Read(b)
	return "req_" + hex.EncodeToString(b)
}

// Accept returns the caller's id when it is usable (1 to maxLen printable
// ASCII characters), else a new one.
func Accept(callers string) string {
	if callers == "" || len(callers) > maxLen {
		return New()
	}
	for i := 0; i < len(callers); i++ {
		if callers[i] < 0x21 || callers[i] > 0x7e {
			return New()
		}
	}
	return callers
}

type key struct{}

// NewContext returns ctx carrying id.
func NewContext(ctx context.Context, id string) context.Context {
	return context.WithValue(ctx, key{}, id)
}

// FromContext is the request id ctx carries, or "".
func FromContext(ctx context.Context) string {
	id, _ := ctx.Value(key{}).(string)
	return id
}
