package service

import (
	"context"
	"strings"

	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"

	"github.com/mandate-dev/mandate/internal/peercert"
)

// callerAddr is the caller's network address for the audit trail: the gRPC
// peer ("ip:port"), or, for a call the gateway (REST, AuthZEN) made in
// process, the client address the gateway saw ("ip"), which it appends last
// to x-forwarded-for. x-forwarded-for is believed only for in-process calls,
// which have no peer: every call over the network has one, and a network
// client could write anything in the header.
func callerAddr(ctx context.Context) string {
	if p, ok := peer.FromContext(ctx); ok && p.Addr != nil {
		return p.Addr.String()
	}
	md, _ := metadata.FromIncomingContext(ctx)
	xff := md.Get("x-forwarded-for")
	if len(xff) == 0 {
		return ""
	}
	hops := strings.Split(xff[len(xff)-1], ",")
	return strings.TrimSpace(hops[len(hops)-1])
}

// CallerWorkload is the SPIFFE ID of the X.509-SVID the caller presented
// and TLS verified against --client-ca, or "" when it presented none (or a
// certificate that is not an SVID). It names the workload on the other end
// of the connection whether the call authenticated with that certificate or
// with a key: the key decides what the caller may do, the certificate which
// workload is asking. Agents created by the call record it.
func CallerWorkload(ctx context.Context) string {
	return peercert.SPIFFEID(verifiedLeaf(ctx))
}
