package service

import (
	"context"
	"net"
	"strings"

	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
)

// callerAddr is the caller's network address for the audit trail: the gRPC
// peer ("ip:port"), or, for a call the gateway (REST, AuthZEN) made over the
// in-process connection, the client address the gateway saw ("ip"), which it
// appends last to x-forwarded-for. x-forwarded-for is believed only from the
// in-process connection: a network client could write anything there.
func callerAddr(ctx context.Context) string {
	p, ok := peer.FromContext(ctx)
	if !ok || p.Addr == nil {
		return ""
	}
	if _, tcp := p.Addr.(*net.TCPAddr); tcp {
		return p.Addr.String()
	}
	if p.Addr.Network() != "bufconn" {
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
