// Package console is mandate's web console, served at /ui/ on the HTTP port:
// server-rendered pages for the people who own agents. It decides nothing:
// every page reads, and every action writes, through the same in-process
// services as REST and gRPC (service.InProcess), as the signed-in person, so
// the role table, the ownership rules and the audit trail apply unchanged.
package console

import (
	"bytes"
	"context"
	"embed"
	"errors"
	"fmt"
	"html/template"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"

	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/mandate-dev/mandate/internal/requestid"
	mandatev1 "github.com/mandate-dev/mandate/proto/mandate/v1"
	"github.com/mandate-dev/mandate/service"
)

// Prefix is where the console is mounted.
const Prefix = "/ui/"

//go:embed templates/*.html
var templateFS embed.FS

//go:embed static
var staticFS embed.FS

// Services are the mandate services the console calls: service.InProcess.
type Services interface {
	mandatev1.TaskServiceServer
	mandatev1.AgentServiceServer
	mandatev1.GrantServiceServer
	mandatev1.AuditServiceServer
	mandatev1.ReviewServiceServer
	mandatev1.AccessRequestServiceServer
}

// Config configures the console.
type Config struct {
	// Services are called for every read and action. Never nil.
	Services Services
	// Lookup finds the key of a secret typed at sign-in (service.Keys.Lookup). Never nil.
	Lookup func(secret string) (service.Key, bool)
	// OIDC, when set, offers sign-in through the humans' OIDC issuer.
	OIDC *OIDCConfig
	// Secure marks the cookie Secure: set when the HTTP port serves TLS.
	Secure bool
	// SessionTTL is how long a sign-in lasts. Default 8h.
	SessionTTL time.Duration
	// Now is the clock. Default time.Now.
	Now func() time.Time
	// Log is the logger. Default slog.Default().
	Log *slog.Logger
}

// Console serves the pages.
type Console struct {
	cfg      Config
	sessions *sessions
	logins   *limiter
	pages    map[string]*template.Template
	mux      *http.ServeMux
	oidc     *oidcClient
}

const (
	cookieName    = "mandate_console"
	preCookieName = "mandate_console_pre"
)

// New builds the console.
func New(ctx context.Context, cfg Config) (*Console, error) {
	if cfg.Services == nil || cfg.Lookup == nil {
		return nil, errors.New("console: Services and Lookup are required")
	}
	if cfg.SessionTTL == 0 {
		cfg.SessionTTL = 8 * time.Hour
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	c := &Console{cfg: cfg, sessions: newSessions(cfg.SessionTTL, cfg.Now), logins: newLimiter(10, time.Minute, cfg.Now)}
	if err := c.parse(); err != nil {
		return nil, err
	}
	if cfg.OIDC != nil {
		o, err := newOIDC(ctx, *cfg.OIDC)
		if err != nil {
			return nil, err
		}
		c.oidc = o
	}
	c.routes()
	return c, nil
}

var pageNames = []string{"login", "overview", "people", "agent", "audit", "review", "actions", "confirm", "requests", "error"}

func (c *Console) parse() error {
	c.pages = map[string]*template.Template{}
	for _, p := range pageNames {
		t, err := template.New(p).Funcs(funcs(c.cfg.Now)).ParseFS(templateFS, "templates/layout.html", "templates/"+p+".html")
		if err != nil {
			return fmt.Errorf("console: template %s: %w", p, err)
		}
		c.pages[p] = t
	}
	return nil
}

func (c *Console) routes() {
	m := http.NewServeMux()
	static, _ := fs.Sub(staticFS, "static")
	m.Handle("GET /ui/static/", http.StripPrefix("/ui/static/", http.FileServerFS(static)))
	m.HandleFunc("GET /ui/login", c.loginPage)
	m.HandleFunc("POST /ui/login", c.loginKey)
	m.HandleFunc("GET /ui/login/oidc", c.loginOIDC)
	m.HandleFunc("GET /ui/callback", c.callback)
	m.HandleFunc("POST /ui/logout", c.signedIn(c.logout))
	m.HandleFunc("GET /ui/{$}", c.signedIn(c.overview))
	m.HandleFunc("GET /ui/people", c.signedIn(c.people))
	m.HandleFunc("GET /ui/agents/{id}", c.signedIn(c.agent))
	m.HandleFunc("POST /ui/agents/{id}/explain", c.signedIn(c.agent))
	m.HandleFunc("GET /ui/audit", c.signedIn(c.auditPage))
	m.HandleFunc("GET /ui/review", c.signedIn(c.review))
	m.HandleFunc("GET /ui/review.csv", c.signedIn(c.reviewCSV))
	m.HandleFunc("GET /ui/review.json", c.signedIn(c.reviewJSON))
	m.HandleFunc("GET /ui/actions", c.signedIn(c.actions))
	m.HandleFunc("GET /ui/confirm", c.signedIn(c.confirm))
	m.HandleFunc("POST /ui/act", c.signedIn(c.act))
	m.HandleFunc("GET /ui/requests", c.signedIn(c.requests))
	m.HandleFunc("/ui/", func(w http.ResponseWriter, r *http.Request) {
		c.fail(w, r, nil, http.StatusNotFound, "no such page")
	})
	c.mux = m
}

// ServeHTTP serves every /ui/ path, each response with the security headers.
func (c *Console) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h := w.Header()
	h.Set("Content-Security-Policy", "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'")
	h.Set("X-Frame-Options", "DENY")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Referrer-Policy", "no-referrer")
	h.Set("Cache-Control", "no-store")
	h.Set("Cross-Origin-Opener-Policy", "same-origin")
	if c.cfg.Secure {
		h.Set("Strict-Transport-Security", "max-age=31536000")
	}
	c.mux.ServeHTTP(w, r)
}

// ExpireSessions ends every session now; for tests of expired sessions.
func (c *Console) ExpireSessions() { c.sessions.expireAll() }

type handler func(w http.ResponseWriter, r *http.Request, s *session)

// signedIn admits requests with a live session, and a POST only with the
// session's CSRF token; others go to sign-in (GET) or are refused (POST).
func (c *Console) signedIn(next handler) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		var s *session
		if ck, err := r.Cookie(cookieName); err == nil {
			s, _ = c.sessions.get(ck.Value)
		}
		if s == nil {
			if r.Method == http.MethodGet {
				http.Redirect(w, r, "/ui/login?next="+url.QueryEscape(r.URL.RequestURI()), http.StatusSeeOther)
				return
			}
			c.fail(w, r, nil, http.StatusUnauthorized, "your session has expired or you are signed out: sign in again")
			return
		}
		if r.Method == http.MethodPost {
			r.Body = http.MaxBytesReader(w, r.Body, 64<<10)
			if err := r.ParseForm(); err != nil {
				c.fail(w, r, s, http.StatusBadRequest, "the form could not be read")
				return
			}
			if !sameToken(r.PostForm.Get("csrf"), s.csrf) {
				c.fail(w, r, s, http.StatusForbidden, "the form's CSRF token is missing or wrong: reload the page and try again")
				return
			}
		}
		next(w, r, s)
	}
}

// as is the context of a call made for s: the services see its caller, and
// the audit trail the browser's address and the request id, as for REST.
func as(r *http.Request, s *session) context.Context {
	md := metadata.MD{}
	if host, _, err := net.SplitHostPort(r.RemoteAddr); err == nil {
		md.Set("x-forwarded-for", host)
	}
	if id := requestid.FromContext(r.Context()); id != "" {
		md.Set("x-request-id", id)
	}
	return service.AsCaller(metadata.NewIncomingContext(r.Context(), md), s.caller)
}

// page is what every template gets.
type page struct {
	Title   string
	Nav     string
	S       *session
	Role    string
	Name    string
	CSRF    string
	Can     can
	Now     time.Time
	Data    any
	Notice  string
	Problem string
}

// can says which controls the signed-in role may see. The server enforces
// each again, through the services' own authorization, on every action.
type can struct {
	ReadAll bool // reviewer, admin: every human's records
	Act     bool // operator, admin, person (own agents)
	Resume  bool // operator, admin
	Freeze  bool // admin
	Person  bool // a signed-in human: their own records only
}

func capabilities(k service.Key) can {
	switch k.Role {
	case service.RoleAdmin:
		return can{ReadAll: true, Act: true, Resume: true, Freeze: true}
	case service.RoleReviewer:
		return can{ReadAll: true}
	case service.RoleOperator:
		return can{Act: true, Resume: true}
	case service.RoleHuman:
		return can{Act: true, Person: true}
	}
	return can{}
}

// principalScope is the principal filter reads must carry: the person's own
// for a person, else what the viewer asked for.
func principalScope(s *session, asked string) string {
	if s != nil && s.caller.Role == service.RoleHuman {
		return s.caller.Name
	}
	return asked
}

func (c *Console) render(w http.ResponseWriter, r *http.Request, s *session, code int, name, nav, title string, data any) {
	p := page{Title: title, Nav: nav, S: s, Now: c.cfg.Now(), Data: data}
	if s != nil {
		p.Role, p.Name, p.CSRF, p.Can = string(s.caller.Role), s.caller.Name, s.csrf, capabilities(s.caller)
		// From the session, not the URL: a link cannot put words in the page.
		p.Notice = c.sessions.takeFlash(s)
	}
	var b bytes.Buffer
	if err := c.pages[name].ExecuteTemplate(&b, "layout", p); err != nil {
		c.cfg.Log.Error("console: rendering", "page", name, "error", err)
		http.Error(w, "the page could not be rendered", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.WriteHeader(code)
	_, _ = w.Write(b.Bytes())
}

// fail renders an error page with the API's own message.
func (c *Console) fail(w http.ResponseWriter, r *http.Request, s *session, code int, msg string) {
	c.render(w, r, s, code, "error", "", "Error", msg)
}

// failErr renders a service error with its HTTP status and message.
func (c *Console) failErr(w http.ResponseWriter, r *http.Request, s *session, err error) {
	code, msg := httpStatus(err)
	c.fail(w, r, s, code, msg)
}

func httpStatus(err error) (int, string) {
	st, ok := status.FromError(err)
	if !ok {
		return http.StatusInternalServerError, "internal error"
	}
	switch st.Code().String() {
	case "InvalidArgument", "FailedPrecondition", "OutOfRange":
		return http.StatusBadRequest, st.Message()
	case "Unauthenticated":
		return http.StatusUnauthorized, st.Message()
	case "PermissionDenied":
		return http.StatusForbidden, st.Message()
	case "NotFound":
		return http.StatusNotFound, st.Message()
	case "AlreadyExists", "Aborted":
		return http.StatusConflict, st.Message()
	case "Unavailable", "DeadlineExceeded":
		return http.StatusServiceUnavailable, st.Message()
	}
	return http.StatusInternalServerError, st.Message()
}

// errText is the message of a service error, for sections of a page.
func errText(err error) string {
	_, msg := httpStatus(err)
	return msg
}

// safeNext keeps a post-sign-in redirect on the console.
func safeNext(next string) string {
	if !strings.HasPrefix(next, "/ui/") || strings.HasPrefix(next, "//") || strings.ContainsAny(next, "\\\r\n") {
		return "/ui/"
	}
	return next
}
