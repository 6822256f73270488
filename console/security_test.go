package console_test

import (
	"crypto/tls"
	"fmt"
	"html"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"testing"

	"github.com/mandate-dev/mandate/internal/testenv"
	"github.com/mandate-dev/mandate/server"
	"github.com/mandate-dev/mandate/service"
)

// pages are every page of the console, for a scene.
func (s *scene) pages() []string {
	return []string{"/ui/", "/ui/people", "/ui/people?q=alice&status=active&tasks=all", "/ui/agents/" + s.top, "/ui/agents/" + s.sub,
		"/ui/audit", "/ui/audit?agent=agent:" + s.top + "&decision=allow", "/ui/review?principal=user:alice", "/ui/requests",
		"/ui/actions", "/ui/confirm?action=agent.suspend&target=" + s.sub}
}

func TestConsoleWithoutSessionRedirectsToSignIn(t *testing.T) {
	s := newScene(t, server.Config{})
	b := newBrowser(t, s.srv.Base)
	for _, p := range append(s.pages(), "/ui/review.csv?principal=user:alice", "/ui/review.json?principal=user:alice") {
		resp, _ := b.get(p)
		if resp.StatusCode != http.StatusSeeOther || !strings.HasPrefix(resp.Header.Get("Location"), "/ui/login?next=") {
			t.Errorf("GET %s without a session: %d %s, want a redirect to sign-in", p, resp.StatusCode, resp.Header.Get("Location"))
		}
	}
	resp, _ := b.do("POST", "/ui/act", url.Values{"action": {"agent.suspend"}, "target": {s.sub}, "reason": {"x"}})
	if resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("POST /ui/act without a session: %d, want 401", resp.StatusCode)
	}
	if ok, code := s.allowed(t, s.sub, "read", "repo:acme/api"); !ok {
		t.Fatalf("an action without a session changed something: %s", code)
	}
}

func TestConsoleSecurityHeadersOnEveryResponse(t *testing.T) {
	s := newScene(t, server.Config{})
	anon := newBrowser(t, s.srv.Base)
	rev := newBrowser(t, s.srv.Base)
	rev.signIn(testenv.Keys[service.RoleReviewer])
	check := func(who, path string, resp *http.Response) {
		t.Helper()
		h := resp.Header
		csp := h.Get("Content-Security-Policy")
		for _, want := range []string{"default-src 'self'", "script-src 'self'", "frame-ancestors 'none'", "object-src 'none'", "base-uri 'none'"} {
			if !strings.Contains(csp, want) {
				t.Errorf("%s %s: CSP %q lacks %q", who, path, csp, want)
			}
		}
		if strings.Contains(csp, "unsafe-inline") || strings.Contains(csp, "unsafe-eval") {
			t.Errorf("%s %s: CSP allows inline code: %q", who, path, csp)
		}
		if h.Get("X-Frame-Options") != "DENY" || h.Get("X-Content-Type-Options") != "nosniff" || h.Get("Referrer-Policy") != "no-referrer" {
			t.Errorf("%s %s: headers %v", who, path, h)
		}
	}
	extra := []string{"/ui/login", "/ui/static/console.css", "/ui/static/console.js", "/ui/nope", "/ui/agents/agt_00000000000000000000000000000000"}
	for _, p := range append(s.pages(), extra...) {
		resp, _ := anon.get(p)
		check("anonymous", p, resp)
		resp, _ = rev.get(p)
		check("reviewer", p, resp)
	}
	resp, _ := rev.do("POST", "/ui/act", url.Values{})
	check("reviewer", "POST /ui/act", resp)
}

func TestConsoleRefusesActionsWithoutCSRFWrongRoleOrExpiredSession(t *testing.T) {
	s := newScene(t, server.Config{})
	stillAllowed := func(why string) {
		t.Helper()
		if ok, code := s.allowed(t, s.sub, "read", "repo:acme/api"); !ok {
			t.Fatalf("%s: the sub-agent lost access (%s), so the refused action was applied", why, code)
		}
	}
	op := newBrowser(t, s.srv.Base)
	token := op.signIn(testenv.Keys[service.RoleOperator])
	suspend := url.Values{"action": {"agent.suspend"}, "target": {s.sub}, "reason": {"incident 7"}, "back": {"/ui/agents/" + s.sub}}

	noToken := url.Values{}
	for k, v := range suspend {
		noToken[k] = v
	}
	if resp, _ := op.do("POST", "/ui/act", noToken); resp.StatusCode != http.StatusForbidden {
		t.Errorf("action without a CSRF token: %d, want 403", resp.StatusCode)
	}
	stillAllowed("no CSRF token")
	wrong := []byte(token)
	wrong[len(wrong)-1] ^= 1 // another character of the same alphabet
	noToken.Set("csrf", string(wrong))
	if resp, _ := op.do("POST", "/ui/act", noToken); resp.StatusCode != http.StatusForbidden {
		t.Errorf("action with a wrong CSRF token: %d, want 403", resp.StatusCode)
	}
	stillAllowed("wrong CSRF token")

	// A token from another session is wrong too.
	other := newBrowser(t, s.srv.Base)
	otherToken := other.signIn(testenv.Keys[service.RoleOperator])
	noToken.Set("csrf", otherToken)
	if resp, _ := op.do("POST", "/ui/act", noToken); resp.StatusCode != http.StatusForbidden {
		t.Errorf("action with another session's CSRF token: %d, want 403", resp.StatusCode)
	}
	stillAllowed("another session's token")

	// No reason: refused, nothing changes.
	noReason := url.Values{"csrf": {token}, "action": {"agent.suspend"}, "target": {s.sub}, "reason": {"  "}}
	if resp, body := op.do("POST", "/ui/act", noReason); resp.StatusCode != http.StatusBadRequest || !strings.Contains(body, "reason") {
		t.Errorf("action without a reason: %d", resp.StatusCode)
	}
	stillAllowed("no reason")

	// The wrong role: a reviewer's session posts a valid form. The service refuses it.
	rev := newBrowser(t, s.srv.Base)
	revToken := rev.signIn(testenv.Keys[service.RoleReviewer])
	asRev := url.Values{"csrf": {revToken}, "action": {"agent.suspend"}, "target": {s.sub}, "reason": {"curious"}}
	if resp, body := rev.do("POST", "/ui/act", asRev); resp.StatusCode != http.StatusForbidden || !strings.Contains(body, "reviewer") {
		t.Errorf("a reviewer's suspend: %d\n%s", resp.StatusCode, body)
	}
	stillAllowed("a reviewer's action")
	// An operator may not freeze every agent: admins only.
	freeze := url.Values{"csrf": {token}, "action": {"agents.freeze_all"}, "reason": {"panic"}}
	if resp, _ := op.do("POST", "/ui/act", freeze); resp.StatusCode != http.StatusForbidden {
		t.Errorf("an operator's freeze: %d, want 403", resp.StatusCode)
	}
	stillAllowed("an operator's freeze")

	// An expired session: refused, and a GET goes to sign-in.
	s.srv.Srv.Console().ExpireSessions()
	suspend.Set("csrf", token)
	if resp, _ := op.do("POST", "/ui/act", suspend); resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("action with an expired session: %d, want 401", resp.StatusCode)
	}
	if resp, _ := op.get("/ui/people"); resp.StatusCode != http.StatusSeeOther {
		t.Errorf("a page with an expired session: %d, want a redirect", resp.StatusCode)
	}
	stillAllowed("an expired session")

	// Signed in again, with everything right, the action is applied and audited
	// with the key's name and the reason.
	token = op.signIn(testenv.Keys[service.RoleOperator])
	suspend.Set("csrf", token)
	if resp, body := op.do("POST", "/ui/act", suspend); resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("the operator's suspend: %d\n%s", resp.StatusCode, body)
	}
	if ok, code := s.allowed(t, s.sub, "read", "repo:acme/api"); ok || code != "AGENT_SUSPENDED" {
		t.Fatalf("after the suspend, Check says %v %s", ok, code)
	}
	recs := s.srv.OK("GET", "/v1/audit?agent=agent:"+s.sub, service.RoleReviewer, nil)["records"].([]any)
	found := false
	for _, r := range recs {
		m := r.(map[string]any)
		if m["action"] == "agent.suspend" {
			found = true
			if m["caller"] != "test-operator" || m["reason"] != "incident 7" || field(m, "details", "why") != "incident 7" || fmt.Sprint(m["request_id"]) == "" || m["request_id"] == nil {
				t.Errorf("the suspend's audit record: %v", m)
			}
		}
	}
	if !found {
		t.Fatalf("no agent.suspend record: %v", recs)
	}
}

func TestConsoleEscapesEveryValue(t *testing.T) {
	s := newScene(t, server.Config{})
	rev := newBrowser(t, s.srv.Base)
	rev.signIn(testenv.Keys[service.RoleReviewer])
	paths := append(s.pages(), "/ui/audit?correlation_id="+url.QueryEscape(s.correlation), "/ui/people?q="+url.QueryEscape(hostile),
		"/ui/audit?resource="+url.QueryEscape(hostile), "/ui/confirm?action=agent.suspend&target="+url.QueryEscape(hostile),
		"/ui/audit?since="+url.QueryEscape(hostile))
	sawEscaped := map[string]bool{}
	for _, p := range paths {
		_, body := rev.get(p)
		if strings.Contains(body, "<script>alert") || strings.Contains(body, `alert("x")`) {
			t.Errorf("%s renders the markup unescaped", p)
		}
		if strings.Contains(body, "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;") {
			sawEscaped[p] = true
		}
	}
	// A link cannot put a notice in the page.
	if _, body := rev.get("/ui/people?done=" + url.QueryEscape("your key leaked: sign in at evil.example")); strings.Contains(body, "evil.example") {
		t.Errorf("the page shows a notice taken from the URL")
	}
	for _, p := range []string{"/ui/people", "/ui/agents/" + s.top, "/ui/audit?correlation_id=" + url.QueryEscape(s.correlation)} {
		if !sawEscaped[p] {
			t.Errorf("%s does not show the hostile value as text", p)
		}
	}
}

func TestConsoleNeverHoldsTheKey(t *testing.T) {
	s := newScene(t, server.Config{})
	for _, role := range []service.Role{service.RoleReviewer, service.RoleOperator, service.RoleAdmin} {
		key := testenv.Keys[role]
		b := newBrowser(t, s.srv.Base)
		_, page := b.get("/ui/login")
		resp, _ := b.do("POST", "/ui/login", url.Values{"csrf": {csrf(t, page)}, "key": {key}})
		for _, c := range resp.Cookies() {
			if strings.Contains(c.Value, key) || strings.Contains(c.Value, string(role)) {
				t.Errorf("%s: cookie %s holds the key or the role", role, c.Name)
			}
			if c.Value != "" && (!c.HttpOnly || c.SameSite != http.SameSiteStrictMode) {
				t.Errorf("%s: cookie %s is not HttpOnly and SameSite=Strict: %+v", role, c.Name, c)
			}
		}
		for _, p := range s.pages() {
			if _, body := b.get(p); strings.Contains(body, key) {
				t.Errorf("%s: %s shows the key", role, p)
			}
		}
	}
	// A checker key cannot sign in; neither can an unknown one.
	for key, want := range map[string]int{testenv.Keys[service.RoleChecker]: http.StatusForbidden, "not-a-key": http.StatusUnauthorized} {
		b := newBrowser(t, s.srv.Base)
		_, page := b.get("/ui/login")
		resp, _ := b.do("POST", "/ui/login", url.Values{"csrf": {csrf(t, page)}, "key": {key}})
		if resp.StatusCode != want {
			t.Errorf("sign-in with %q: %d, want %d", key, resp.StatusCode, want)
		}
		if resp, _ := b.get("/ui/"); resp.StatusCode != http.StatusSeeOther {
			t.Errorf("after a refused sign-in with %q the overview answers %d", key, resp.StatusCode)
		}
	}
	// The sign-in form has its own CSRF check.
	b := newBrowser(t, s.srv.Base)
	if resp, _ := b.do("POST", "/ui/login", url.Values{"key": {testenv.Keys[service.RoleAdmin]}}); resp.StatusCode != http.StatusForbidden {
		t.Errorf("sign-in without the form's token: %d, want 403", resp.StatusCode)
	}
}

func TestConsoleSignInIsRateLimited(t *testing.T) {
	s := testenv.Start(t, server.Config{})
	b := newBrowser(t, s.Base)
	limited := false
	for i := 0; i < 12; i++ {
		_, page := b.get("/ui/login")
		resp, _ := b.do("POST", "/ui/login", url.Values{"csrf": {csrf(t, page)}, "key": {"guess"}})
		if resp.StatusCode == http.StatusTooManyRequests {
			limited = true
			break
		}
	}
	if !limited {
		t.Fatal("twelve wrong keys in a row were all tried")
	}
}

func TestConsoleOff(t *testing.T) {
	s := testenv.Start(t, server.Config{DisableUI: true})
	b := newBrowser(t, s.Base)
	if resp, _ := b.get("/ui/login"); resp.StatusCode != http.StatusNotFound {
		t.Fatalf("--ui=false: /ui/login answers %d", resp.StatusCode)
	}
}

func TestConsoleCookiesAreSecureOverTLS(t *testing.T) {
	ca := testenv.NewCA(t, "console")
	leaf := ca.Issue(t, "server", true, nil)
	srv := testenv.Start(t, server.Config{TLS: server.TLSConfig{CertFile: leaf.CertFile, KeyFile: leaf.KeyFile}})
	b := newBrowser(t, srv.Base)
	b.c.Transport = &http.Transport{TLSClientConfig: &tls.Config{RootCAs: ca.Pool()}}
	resp, page := b.get("/ui/login")
	if resp.Header.Get("Strict-Transport-Security") == "" {
		t.Errorf("no HSTS over TLS")
	}
	resp, _ = b.do("POST", "/ui/login", url.Values{"csrf": {csrf(t, page)}, "key": {testenv.Keys[service.RoleReviewer]}})
	if resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("sign-in over TLS: %d", resp.StatusCode)
	}
	for _, c := range resp.Cookies() {
		if c.Value != "" && (!c.Secure || !c.HttpOnly || c.SameSite != http.SameSiteStrictMode) {
			t.Errorf("cookie %s over TLS: %+v", c.Name, c)
		}
	}
	if resp, _ := b.get("/ui/people"); resp.StatusCode != http.StatusOK {
		t.Errorf("the People page over TLS: %d", resp.StatusCode)
	}
}

func TestConsoleAuditPaginatesAndSignOutEndsTheSession(t *testing.T) {
	s := newScene(t, server.Config{})
	rev := newBrowser(t, s.srv.Base)
	token := rev.signIn(testenv.Keys[service.RoleReviewer])
	nextRE := regexp.MustCompile(`href="([^"]+)" id="next-page"`)
	recRE := regexp.MustCompile(`data-record="([^"]+)"`)
	seen := map[string]bool{}
	path := "/ui/audit?principal=user:alice&page_size=2"
	for pages := 0; path != ""; pages++ {
		if pages > 20 {
			t.Fatal("the audit pages never end")
		}
		resp, body := rev.get(path)
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("%s: %d", path, resp.StatusCode)
		}
		recs := recRE.FindAllStringSubmatch(body, -1)
		if len(recs) > 2 {
			t.Fatalf("%s shows %d records, page size 2", path, len(recs))
		}
		for _, m := range recs {
			if seen[m[1]] {
				t.Fatalf("record %s shown on two pages", m[1])
			}
			seen[m[1]] = true
		}
		path = ""
		if m := nextRE.FindStringSubmatch(body); m != nil {
			path = html.UnescapeString(m[1])
		}
	}
	all := s.srv.OK("GET", "/v1/audit?principal=user:alice&page_size=1000", service.RoleReviewer, nil)["records"].([]any)
	if len(seen) != len(all) {
		t.Errorf("the pages showed %d records, the API has %d", len(seen), len(all))
	}
	// Sign-out ends the session on the server: the old cookie is worthless.
	u, _ := url.Parse(s.srv.Base + "/ui/")
	old := rev.c.Jar.Cookies(u)
	if len(old) == 0 {
		t.Fatal("no session cookie to replay")
	}
	if resp, _ := rev.do("POST", "/ui/logout", url.Values{"csrf": {token}}); resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("sign-out: %d", resp.StatusCode)
	}
	replay := newBrowser(t, s.srv.Base)
	replay.c.Jar.SetCookies(u, old)
	if resp, _ := replay.get("/ui/people"); resp.StatusCode != http.StatusSeeOther {
		t.Errorf("a signed-out session's cookie still opens pages: %d", resp.StatusCode)
	}
}

// TestConsoleOIDCStartIsRateLimited: every start of the issuer's sign-in keeps
// a pending sign-in on the server, so an unauthenticated caller may start no
// more of them than it may try keys.
func TestConsoleOIDCStartIsRateLimited(t *testing.T) {
	s := testenv.Start(t, server.Config{Credentials: server.CredentialsConfig{DevIdP: true, RequireHumanToken: "off"}})
	b := newBrowser(t, s.Base)
	b.c.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	limited := false
	for i := 0; i < 12; i++ {
		resp, _ := b.get("/ui/login/oidc")
		if resp.StatusCode == http.StatusTooManyRequests {
			limited = true
			break
		}
		if resp.StatusCode != http.StatusFound && resp.StatusCode != http.StatusSeeOther {
			t.Fatalf("starting the sign-in: %d", resp.StatusCode)
		}
	}
	if !limited {
		t.Fatal("twelve sign-in starts in a row were all kept")
	}
}
