// Command reposervice is an example resource service: a tiny repository API
// whose every route is checked with mandate by client/middleware.
//
//	go run ./examples/reposervice --mandate-addr 127.0.0.1:50051 --key $CHECKER --agent-header X-Mandate-Agent
//
// The agent is read from a header set by a trusted proxy (transitional, until
// agents carry mandate-issued credentials); without --agent-header every
// request gets 401.
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
	agentHeader := flag.String("agent-header", "", "header a trusted proxy sets to the agent id (off when empty)")
	flag.Parse()
	if *key == "" {
		*key = os.Getenv("MANDATE_KEY")
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, *addr, *key, *listen, *agentHeader); err != nil {
		fmt.Fprintln(os.Stderr, "error:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, addr, key, listen, agentHeader string) error {
	c, err := client.New(client.Config{Addr: addr, Key: key, Plaintext: true})
	if err != nil {
		return err
	}
	defer c.Close()
	h, err := newHandler(c, agentHeader)
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
func newHandler(c middleware.Checker, agentHeader string) (http.Handler, error) {
	var identify middleware.Identity
	if agentHeader != "" {
		identify = middleware.TrustedHeader(agentHeader)
	}
	guard := func(permission, tmpl string, h http.HandlerFunc) (http.Handler, error) {
		mw, err := middleware.HTTP(middleware.HTTPOptions{Checker: c, Resolve: middleware.PathTemplate(permission, tmpl), Identify: identify})
		if err != nil {
			return nil, err
		}
		return mw(h), nil
	}
	mux := http.NewServeMux()
	read, err := guard("read", "repo:{owner}/{name}", func(w http.ResponseWriter, r *http.Request) {
		d, _ := middleware.DecisionFrom(r.Context())
		writeJSON(w, map[string]any{"repo": r.PathValue("owner") + "/" + r.PathValue("name"), "default_branch": "main", "on_behalf_of": d.Principal})
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
