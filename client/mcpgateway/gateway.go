// Package mcpgateway is an MCP gateway that checks every tool call, resource
// read and prompt with mandate before forwarding it to the upstream MCP
// server, and shows each agent only the tools some rule could allow it.
// Agents authenticate with their own mandate agent token, exchanged for this
// gateway's resource (<public-url>/mcp). It caches no decision: every call
// asks mandate with the token, so a revocation stops the very next call,
// even on a connection that is already open.
package mcpgateway

import (
	"context"
	"crypto/subtle"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/modelcontextprotocol/go-sdk/auth"
	"github.com/modelcontextprotocol/go-sdk/mcp"
	"github.com/modelcontextprotocol/go-sdk/oauthex"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/mandate-dev/mandate/client"
	"github.com/mandate-dev/mandate/credential"
)

// Config is everything a gateway needs. Zero values take the defaults noted.
type Config struct {
	// File holds the upstreams and rules (LoadFile). Required.
	File *File
	// Client asks mandate. Its key needs the gateway role (Check, CheckBulk,
	// ListAgentAccess, Explain), or admin. Required. With a checker key,
	// templated tools are left out of the lists (they stay callable when a
	// check allows) and denies carry no explanation.
	Client *client.Client
	// Listen is the address to serve on. Default 127.0.0.1:8787.
	Listen string
	// PublicURL is the gateway's base URL as agents reach it; the protected
	// resource, which agents' tokens must be issued for (their aud), is
	// PublicURL + "/mcp". Default "http://" + the listen address.
	PublicURL string
	// Issuer is mandate's issuer, its --public-url: the iss of the agent
	// tokens, and the authorization server named in the protected-resource
	// metadata. Required.
	Issuer string
	// JWKSURL is where mandate publishes its signing keys. Default
	// Issuer + "/.well-known/jwks.json".
	JWKSURL string
	// HTTPClient fetches the JWKS. Default: a client with a 5s timeout.
	HTTPClient *http.Client
	// UpstreamTimeout bounds each forwarded request. Default 60s.
	UpstreamTimeout time.Duration
	// ConnectTimeout bounds connecting to each upstream. Default 10s.
	ConnectTimeout time.Duration
	// Log is the logger. Default slog.Default().
	Log *slog.Logger
}

// Validate reports whether the config is usable.
func (c *Config) Validate() error {
	switch {
	case c.File == nil:
		return errors.New("mcp-gateway: a config file is required")
	case c.Client == nil:
		return errors.New("mcp-gateway: a mandate client (a gateway key) is required")
	case c.Issuer == "":
		return errors.New("mcp-gateway: mandate's issuer (its --public-url) is required to verify agent tokens")
	}
	for name, v := range map[string]string{"issuer": c.Issuer, "jwks url": c.JWKSURL, "public url": c.PublicURL} {
		if v == "" {
			continue
		}
		if u, err := url.Parse(v); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.RawQuery != "" || u.Fragment != "" {
			return fmt.Errorf("mcp-gateway: %s %q must be an absolute http(s) URL without query or fragment", name, v)
		}
	}
	return nil
}

// Gateway serves MCP at /mcp. Build it with Config.Complete.
type Gateway struct {
	cfg       Config // defaults filled
	lis       net.Listener
	srv       *http.Server
	upstreams []*upstream          // in config order
	byName    map[string]*upstream // never modified after Complete
	tools     map[string]*Rule     // "<upstream>.<tool>" → rule
	prompts   map[string]*Rule
	uris      []*Rule // in config order; the first match wins
	metrics   *metrics
	reg       *prometheus.Registry
	wg        sync.WaitGroup // session watchers
	tokens    *verifier
	// noReview is set once mandate refuses the key ListAgentAccess or
	// Explain (a checker key): templated items are then hidden and denies
	// unexplained, without asking again.
	noReview atomic.Bool
}

// Complete validates the config, connects to every upstream and listens.
// An upstream that cannot be reached fails startup.
func (c Config) Complete(ctx context.Context) (*Gateway, error) {
	if err := c.Validate(); err != nil {
		return nil, err
	}
	if c.Listen == "" {
		c.Listen = "127.0.0.1:8787"
	}
	if c.UpstreamTimeout == 0 {
		c.UpstreamTimeout = 60 * time.Second
	}
	if c.ConnectTimeout == 0 {
		c.ConnectTimeout = 10 * time.Second
	}
	if c.Log == nil {
		c.Log = slog.Default()
	}
	c.Issuer = strings.TrimSuffix(c.Issuer, "/")
	if c.JWKSURL == "" {
		c.JWKSURL = c.Issuer + "/.well-known/jwks.json"
	}
	if c.HTTPClient == nil {
		c.HTTPClient = &http.Client{Timeout: 5 * time.Second}
	}
	c.PublicURL = strings.TrimSuffix(c.PublicURL, "/")
	g := &Gateway{cfg: c, byName: map[string]*upstream{}, tools: map[string]*Rule{}, prompts: map[string]*Rule{}, reg: prometheus.NewRegistry()}
	g.metrics = newMetrics(g.reg)
	for i := range c.File.Rules {
		r := &c.File.Rules[i]
		switch {
		case r.Tool != "":
			g.tools[r.Tool] = r
		case r.Prompt != "":
			g.prompts[r.Prompt] = r
		default:
			g.uris = append(g.uris, r)
		}
	}
	for _, u := range c.File.Upstreams {
		up := &upstream{cfg: u, g: g}
		g.upstreams = append(g.upstreams, up)
		g.byName[u.Name] = up
	}
	for _, up := range g.upstreams {
		cctx, cancel := context.WithTimeout(ctx, c.ConnectTimeout)
		_, err := up.session(cctx)
		cancel()
		if err != nil {
			g.Close()
			return nil, fmt.Errorf("mcp-gateway: upstream %s: %w", up.cfg.Name, err)
		}
	}
	lis, err := net.Listen("tcp", c.Listen)
	if err != nil {
		g.Close()
		return nil, err
	}
	g.lis = lis
	if g.cfg.PublicURL == "" {
		g.cfg.PublicURL = "http://" + lis.Addr().String()
	}
	if g.tokens, err = newVerifier(g.cfg.Issuer, g.Resource(), g.cfg.JWKSURL, g.cfg.HTTPClient); err != nil {
		g.Close()
		return nil, err
	}
	g.srv = &http.Server{Handler: g.Handler(), ReadHeaderTimeout: 10 * time.Second}
	return g, nil
}

// Addr is the address the gateway listens on.
func (g *Gateway) Addr() string { return g.lis.Addr().String() }

// Resource is the protected resource, PublicURL + "/mcp": agents exchange
// for tokens with resource=<this>, and only tokens whose aud names it open
// the gateway.
func (g *Gateway) Resource() string { return g.cfg.PublicURL + "/mcp" }

// Handler serves /mcp (behind bearer authentication), the protected-resource
// metadata, /healthz and /metrics.
func (g *Gateway) Handler() http.Handler {
	server := mcp.NewServer(&mcp.Implementation{Name: "mandate-mcp-gateway", Version: "v1"}, &mcp.ServerOptions{
		Capabilities: &mcp.ServerCapabilities{Tools: &mcp.ToolCapabilities{}, Resources: &mcp.ResourceCapabilities{}, Prompts: &mcp.PromptCapabilities{}},
		Logger:       g.cfg.Log,
	})
	server.AddReceivingMiddleware(g.intercept)
	streamable := mcp.NewStreamableHTTPHandler(func(*http.Request) *mcp.Server { return server }, &mcp.StreamableHTTPOptions{
		Stateless: true, JSONResponse: true, Logger: g.cfg.Log, PropagateRequestCancellation: true,
	})
	meta := &oauthex.ProtectedResourceMetadata{
		Resource:               g.Resource(),
		AuthorizationServers:   []string{g.cfg.Issuer},
		BearerMethodsSupported: []string{"header"},
		ResourceName:           "mandate MCP gateway",
	}
	mux := http.NewServeMux()
	mux.Handle("/mcp", g.bearer(streamable))
	mux.Handle("/.well-known/oauth-protected-resource", auth.ProtectedResourceMetadataHandler(meta))
	mux.Handle("/.well-known/oauth-protected-resource/mcp", auth.ProtectedResourceMetadataHandler(meta))
	mux.HandleFunc("GET /healthz", g.health)
	mux.Handle("GET /metrics", promhttp.HandlerFor(g.reg, promhttp.HandlerOpts{}))
	return mux
}

type verifiedKey struct{}

// bearer authenticates every request to /mcp with the agent's token, as the
// MCP authorization spec asks of a resource server (RFC 6750, RFC 9728):
//   - no token: 401, WWW-Authenticate: Bearer resource_metadata="…";
//   - a token refused (malformed, forged, expired, of another issuer or for
//     another resource): 401 with error="invalid_token" as well;
//   - mandate's signing keys unreachable: 503, never a pass-through.
//
// A verified token then passes through the SDK's own bearer middleware,
// which hands it to the MCP handlers as the request's TokenInfo.
func (g *Gateway) bearer(next http.Handler) http.Handler {
	challenge := fmt.Sprintf("Bearer resource_metadata=%q", g.cfg.PublicURL+"/.well-known/oauth-protected-resource/mcp")
	sdk := auth.RequireBearerToken(func(ctx context.Context, token string, _ *http.Request) (*auth.TokenInfo, error) {
		t, ok := ctx.Value(verifiedKey{}).(agentToken)
		if !ok || t.raw != token {
			return nil, auth.ErrInvalidToken // unreachable: only verified requests get here
		}
		return &auth.TokenInfo{UserID: t.claims.Agent(), Expiration: t.claims.Expiry.Time(), Extra: map[string]any{tokenExtra: t}}, nil
	}, nil)(next)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fail := func(code int, header, msg string) {
			g.metrics.requests.WithLabelValues("auth", map[int]string{401: "unauthenticated", 503: "unavailable"}[code]).Inc()
			if header != "" {
				w.Header().Set("WWW-Authenticate", header)
			}
			w.Header().Set("Cache-Control", "no-store")
			http.Error(w, msg, code)
		}
		vals := r.Header.Values("Authorization")
		scheme, token, _ := strings.Cut(strings.TrimSpace(strings.Join(vals, "")), " ")
		token = strings.TrimSpace(token)
		if len(vals) == 0 {
			fail(http.StatusUnauthorized, challenge, "a bearer token is required: an agent token from mandate's token exchange with resource="+g.Resource())
			return
		}
		if len(vals) != 1 || !strings.EqualFold(scheme, "bearer") || token == "" {
			fail(http.StatusUnauthorized, challenge+`, error="invalid_request", error_description="send exactly one Authorization: Bearer <token>"`, "send exactly one Authorization: Bearer <token>")
			return
		}
		claims, err := g.tokens.verify(r.Context(), token)
		if errors.Is(err, errKeysUnavailable) {
			g.cfg.Log.Error("mcp-gateway: cannot fetch mandate's signing keys; refusing", "jwks", g.cfg.JWKSURL, "err", err)
			fail(http.StatusServiceUnavailable, "", "authorization is unavailable: mandate's signing keys cannot be fetched")
			return
		}
		if err == nil {
			err = boundOK(claims, r)
		}
		if err != nil {
			g.cfg.Log.Info("mcp-gateway: token refused", "err", err)
			fail(http.StatusUnauthorized, challenge+fmt.Sprintf(`, error="invalid_token", error_description=%q`, description(err)), err.Error())
			return
		}
		sdk.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), verifiedKey{}, agentToken{claims: claims, raw: token})))
	})
}

// boundOK refuses a certificate-bound token (RFC 8705, cnf.x5t#S256) unless
// the request's own TLS connection presents that certificate. mandate cannot
// check this on a Check (only the gateway sees the agent's connection), and
// the gateway serves plain HTTP, so a bound token is refused here unless the
// gateway is served behind its own TLS listener (Handler): a stolen bound
// token opens nothing.
func boundOK(c *credential.Claims, r *http.Request) error {
	bound := c.BoundTo()
	if bound == "" {
		return nil
	}
	if r.TLS == nil || len(r.TLS.PeerCertificates) == 0 {
		return invalid("bound to a client certificate (cnf.x5t#S256), and this connection presents none")
	}
	if subtle.ConstantTimeCompare([]byte(credential.CertThumbprint(r.TLS.PeerCertificates[0].Raw)), []byte(bound)) != 1 {
		return invalid("bound to another client certificate than this connection presents")
	}
	return nil
}

// tokenExtra is where the verified token rides in TokenInfo.Extra.
const tokenExtra = "mandate_agent_token"

// description is an RFC 6750 error_description: printable ASCII without '"'
// or '\'.
func description(err error) string {
	b := []byte(truncate(err.Error(), 300))
	for i, c := range b {
		if c < 0x20 || c > 0x7e || c == '"' || c == '\\' {
			b[i] = '\''
		}
	}
	return string(b)
}

// Run serves until ctx is done, then shuts down gracefully: in-flight
// requests finish (up to 10s), then the upstreams are closed.
func (g *Gateway) Run(ctx context.Context) error {
	errc := make(chan error, 1)
	go func() { errc <- g.srv.Serve(g.lis) }()
	g.cfg.Log.Info("mcp-gateway serving", "addr", g.Addr(), "mcp", g.cfg.PublicURL+"/mcp", "upstreams", len(g.upstreams))
	var err error
	select {
	case <-ctx.Done():
	case err = <-errc:
	}
	shut, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_ = g.srv.Shutdown(shut)
	g.Close()
	if errors.Is(err, http.ErrServerClosed) {
		err = nil
	}
	return err
}

// Close closes every upstream session and waits for their watchers.
func (g *Gateway) Close() {
	for _, up := range g.upstreams {
		up.close()
	}
	g.wg.Wait()
	if g.lis != nil {
		_ = g.lis.Close()
	}
}

func (g *Gateway) health(w http.ResponseWriter, r *http.Request) {
	status := map[string]string{}
	ok := true
	ctx, cancel := context.WithTimeout(r.Context(), time.Second)
	defer cancel()
	if resp, err := healthpb.NewHealthClient(g.cfg.Client.Conn()).Check(ctx, &healthpb.HealthCheckRequest{}); err != nil || resp.GetStatus() != healthpb.HealthCheckResponse_SERVING {
		ok = false
		status["mandate"] = fmt.Sprintf("unreachable: %v", err)
	} else {
		status["mandate"] = "ok"
	}
	for _, up := range g.upstreams {
		if up.live() {
			status["upstream:"+up.cfg.Name] = "ok"
		} else {
			ok = false
			status["upstream:"+up.cfg.Name] = "disconnected"
		}
	}
	code := http.StatusOK
	if !ok {
		code = http.StatusServiceUnavailable
	}
	writeJSON(w, code, status)
}

// upstream is one MCP server and the gateway's session with it.
type upstream struct {
	cfg Upstream
	g   *Gateway

	mu   sync.Mutex
	cs   *mcp.ClientSession // guarded by mu; nil when disconnected
	http *http.Client       // guarded by mu; for a URL upstream, its own connections
}

// session returns the live session, connecting when there is none.
func (u *upstream) session(ctx context.Context) (*mcp.ClientSession, error) {
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.cs != nil {
		return u.cs, nil
	}
	var t mcp.Transport
	if u.cfg.URL != "" {
		if u.http == nil {
			// Every agent's calls share this upstream's connections: keep
			// enough idle ones that concurrent calls do not dial afresh
			// (net/http keeps 2 per host by default).
			tr := http.DefaultTransport.(*http.Transport).Clone()
			tr.MaxIdleConnsPerHost = 64
			u.http = &http.Client{Transport: tr}
		}
		t = &mcp.StreamableClientTransport{Endpoint: u.cfg.URL, DisableStandaloneSSE: true, HTTPClient: u.http}
	} else {
		cmd := exec.Command(u.cfg.Command[0], u.cfg.Command[1:]...)
		cmd.Env = os.Environ()
		for k, v := range u.cfg.Env {
			cmd.Env = append(cmd.Env, k+"="+v)
		}
		cmd.Stderr = os.Stderr
		t = &mcp.CommandTransport{Command: cmd, TerminateDuration: 2 * time.Second}
	}
	c := mcp.NewClient(&mcp.Implementation{Name: "mandate-mcp-gateway", Version: "v1"}, nil)
	cs, err := c.Connect(ctx, t, nil)
	if err != nil {
		u.g.metrics.upstreamUp.WithLabelValues(u.cfg.Name).Set(0)
		return nil, err
	}
	u.cs = cs
	u.g.metrics.upstreamUp.WithLabelValues(u.cfg.Name).Set(1)
	u.g.wg.Add(1)
	go func() {
		defer u.g.wg.Done()
		err := cs.Wait()
		u.mu.Lock()
		defer u.mu.Unlock()
		if u.cs == cs {
			u.cs = nil
			u.g.metrics.upstreamUp.WithLabelValues(u.cfg.Name).Set(0)
			u.g.cfg.Log.Warn("mcp-gateway: upstream disconnected; reconnecting on the next request", "upstream", u.cfg.Name, "err", err)
		}
	}()
	return cs, nil
}

func (u *upstream) live() bool {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.cs != nil
}

func (u *upstream) close() {
	u.mu.Lock()
	cs, hc := u.cs, u.http
	u.cs = nil
	u.mu.Unlock()
	if cs != nil {
		_ = cs.Close()
	}
	if hc != nil {
		hc.CloseIdleConnections()
	}
}
