package service

import (
	"context"
	"strings"

	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
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
