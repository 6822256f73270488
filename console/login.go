package console

import (
	"net/http"
	"strings"

	"github.com/mandate-dev/mandate/service"
)

type loginData struct {
	Next     string
	PreCSRF  string
	OIDC     bool
	Problem  string
	Issuer   string
	Accepted []string
}

func (c *Console) cookie(name, value string, maxAge int) *http.Cookie {
	return &http.Cookie{Name: name, Value: value, Path: "/ui/", MaxAge: maxAge, HttpOnly: true, Secure: c.cfg.Secure, SameSite: http.SameSiteStrictMode}
}

// loginPage offers sign-in with a key and, when configured, through the
// issuer. Its form carries a token that must match a cookie set with it
// (the sign-in form's CSRF check, before any session exists).
func (c *Console) loginPage(w http.ResponseWriter, r *http.Request) {
	c.showLogin(w, r, http.StatusOK, "")
}

func (c *Console) showLogin(w http.ResponseWriter, r *http.Request, code int, problem string) {
	pre := randomToken()
	http.SetCookie(w, c.cookie(preCookieName, pre, 900))
	d := loginData{Next: safeNext(r.FormValue("next")), PreCSRF: pre, OIDC: c.oidc != nil, Problem: problem,
		Accepted: []string{string(service.RoleReviewer), string(service.RoleOperator), string(service.RoleAdmin)}}
	if c.oidc != nil {
		d.Issuer = c.oidc.cfg.Issuer
	}
	c.render(w, r, nil, code, "login", "login", "Sign in", d)
}

// loginKey signs in with a mandate key: reviewer, operator or admin. The
// session keeps the key's name and role, never the key.
func (c *Console) loginKey(w http.ResponseWriter, r *http.Request) {
	r.Body = http.MaxBytesReader(w, r.Body, 16<<10)
	if err := r.ParseForm(); err != nil {
		c.showLogin(w, r, http.StatusBadRequest, "the form could not be read")
		return
	}
	pre, err := r.Cookie(preCookieName)
	if err != nil || !sameToken(r.PostForm.Get("csrf"), pre.Value) {
		c.showLogin(w, r, http.StatusForbidden, "the sign-in form expired or its CSRF token is wrong: try again")
		return
	}
	if !c.logins.allow(r) {
		c.showLogin(w, r, http.StatusTooManyRequests, "too many sign-in attempts from your address: wait a minute")
		return
	}
	key, ok := c.cfg.Lookup(strings.TrimSpace(r.PostForm.Get("key")))
	if !ok {
		c.showLogin(w, r, http.StatusUnauthorized, "unknown key")
		return
	}
	switch key.Role {
	case service.RoleReviewer, service.RoleOperator, service.RoleAdmin:
	default:
		c.cfg.Log.Warn("console: sign-in refused for the key's role", "key", key.Name, "role", key.Role)
		c.showLogin(w, r, http.StatusForbidden, "a "+string(key.Role)+" key cannot sign in to the console: use a reviewer, operator or admin key")
		return
	}
	c.start(w, r, service.Key{Name: key.Name, Role: key.Role}, r.PostForm.Get("next"))
}

// start opens a session for caller and goes on to next.
func (c *Console) start(w http.ResponseWriter, r *http.Request, caller service.Key, next string) {
	s := c.sessions.create(caller)
	http.SetCookie(w, c.cookie(cookieName, s.id, int(c.cfg.SessionTTL.Seconds())))
	http.SetCookie(w, c.cookie(preCookieName, "", -1))
	c.cfg.Log.Info("console: signed in", "caller", caller.Name, "role", caller.Role)
	http.Redirect(w, r, safeNext(next), http.StatusSeeOther)
}

func (c *Console) logout(w http.ResponseWriter, r *http.Request, s *session) {
	c.sessions.delete(s.id)
	http.SetCookie(w, c.cookie(cookieName, "", -1))
	http.Redirect(w, r, "/ui/login", http.StatusSeeOther)
}
