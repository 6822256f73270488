// Command reposervice is an example resource service: a tiny repository API
// whose every route is checked with mandate by client/middleware.
//
//	go run ./examples/reposervice --mandate-addr 127.0.0.1:50051 --key $CHECKER --audience https://repos.acme.internal
//
// Agents call it with their own mandate token ("Authorization: Bearer
// <token>"), exchanged with resource=<audience>; mandate verifies the token on
// every request. --agent-header instead trusts an agent id set by a proxy,
// for deployments whose agents carry no mandate token.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/mandate-dev/mandate/client"
	"github.com/mandate-dev/mandate/client/middleware"
)

func main() {
	addr := flag.String("mandate-addr", "127.0.0.1:50051", "mandate gRPC address")
	key := flag.String("key", "", "checker key (or MANDATE_KEY)")
	listen := flag.String("listen", "127.0.0.1:8090", "listen address")
	audience := flag.String("audience", "", "this service's resource identifier: tokens issued for another resource get 401 (off when empty)")
	agentHeader := flag.String("agent-header", "", "instead of agent tokens, trust this header, set by a proxy, to name the agent (off when empty)")
	flag.Parse()
	if *key == "" {
		*key = os.Getenv("MANDATE_KEY")
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, *addr, *key, *listen, *audience, *agentHeader); err != nil {
		fmt.Fprintln(os.Stderr, "error:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, addr, key, listen, audience, agentHeader string) error {
	c, err := client.New(client.Config{Addr: addr, Key: key, Plaintext: true})
	if err != nil {
		return err
	}
	defer c.Close()
	h, err := newHandler(c, audience, agentHeader)
	if err != nil {
		return err
	}
	srv := &http.Server{Addr: listen, Handler: h, ReadHeaderTimeout: 5 * time.Second}
	go func() {
		<-ctx.Done()
		shut, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(shut)
	}()
	slog.Info("reposervice listening", "addr", listen)
	if err := srv.ListenAndServe(); !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

// newHandler routes the repository API, each route behind its own check.
// The agent is its bearer token, unless agentHeader names a trusted header.
func newHandler(c middleware.Checker, audience, agentHeader string) (http.Handler, error) {
	var identify middleware.Identity // nil: the agent's own token
	if agentHeader != "" {
		identify = middleware.TrustedHeader(agentHeader)
	}
	guard := func(permission, tmpl string, h http.HandlerFunc) (http.Handler, error) {
		mw, err := middleware.HTTP(middleware.HTTPOptions{Checker: c, Resolve: middleware.PathTemplate(permission, tmpl), Identify: identify, Audience: audience})
		if err != nil {
			return nil, err
		}
		return mw(h), nil
	}
	mux := http.NewServeMux()
	read, err := guard("read", "repo:{owner}/{name}", func(w http.ResponseWriter, r *http.Request) {
		d, _ := middleware.DecisionFrom(r.Context())
		writeJSON(w, map[string]any{"repo": r.PathValue("owner") + "/" + r.PathValue("name"), "default_branch": "main", "agent": d.Chain[0], "on_behalf_of": d.Principal})
	})
	if err != nil {
		return nil, err
	}
	write, err := guard("write", "repo:{owner}/{name}", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, map[string]any{"repo": r.PathValue("owner") + "/" + r.PathValue("name"), "committed": true})
	})
	if err != nil {
		return nil, err
	}
	mux.Handle("GET /repos/{owner}/{name}", read)
	mux.Handle("POST /repos/{owner}/{name}/commits", write)
	return mux, nil
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(v)
}
