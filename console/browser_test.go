package console_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/mandate-dev/mandate/internal/testenv"
	"github.com/mandate-dev/mandate/server"
	"github.com/mandate-dev/mandate/service"
)

// noBrowser skips, or fails when MANDATE_REQUIRE_BROWSER=1 (CI).
func noBrowser(t *testing.T, format string, args ...any) {
	t.Helper()
	msg := fmt.Sprintf(format, args...)
	if os.Getenv("MANDATE_REQUIRE_BROWSER") == "1" {
		t.Fatalf("MANDATE_REQUIRE_BROWSER=1 but %s", msg)
	}
	t.Skipf("skipping the browser test: %s (install Debian's chromium, or set MANDATE_CHROMIUM; CI sets MANDATE_REQUIRE_BROWSER=1 so that it never skips)", msg)
}

func chromiumPath() string {
	if p := os.Getenv("MANDATE_CHROMIUM"); p != "" {
		return p
	}
	for _, name := range []string{"/usr/bin/chromium", "chromium", "chromium-browser", "google-chrome", "google-chrome-stable"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	return ""
}

// startChromium starts a headless Chromium with a fresh profile for the test.
func startChromium(t *testing.T) context.Context {
	t.Helper()
	path := chromiumPath()
	if path == "" {
		noBrowser(t, "no Chromium was found")
	}
	parent, cancelParent := context.WithTimeout(context.Background(), 5*time.Minute)
	alloc, cancelAlloc := chromedp.NewExecAllocator(parent,
		chromedp.ExecPath(path), chromedp.Headless, chromedp.NoSandbox, chromedp.DisableGPU, chromedp.NoFirstRun,
		chromedp.NoDefaultBrowserCheck, chromedp.UserDataDir(t.TempDir()), chromedp.WindowSize(1280, 900),
		chromedp.Flag("disable-quic", true), chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true), chromedp.Flag("disable-sync", true),
		chromedp.Flag("disable-dev-shm-usage", true))
	ctx, cancel := chromedp.NewContext(alloc)
	t.Cleanup(func() { cancel(); cancelAlloc(); cancelParent() })
	if err := chromedp.Do(ctx); err != nil {
		noBrowser(t, "Chromium at %s did not start: %v", path, err)
	}
	return ctx
}

// tab is one browser context: its own cookies, so its own session.
type tab struct {
	t    *testing.T
	who  string
	ctx  context.Context
	base string
}

func newTab(t *testing.T, browser context.Context, base, who string) *tab {
	ctx, cancel := chromedp.NewContext(browser, chromedp.WithNewBrowserContext())
	t.Cleanup(cancel)
	return &tab{t: t, who: who, ctx: ctx, base: base}
}

func (b *tab) do(what string, steps ...chromedp.Action[chromedp.Void]) {
	b.t.Helper()
	if err := chromedp.Do(b.ctx, steps...); err != nil {
		b.t.Fatalf("%s: %s: %v", b.who, what, err)
	}
}

func (b *tab) open(path string) {
	b.t.Helper()
	b.do("open "+path, chromedp.Navigate(b.base+path), chromedp.WaitReady(chromedp.CSS("footer")))
}

// click follows a link or submits a form, and waits for the next page.
func (b *tab) click(css string) {
	b.t.Helper()
	if _, err := chromedp.RunResponse(b.ctx, chromedp.Click(chromedp.CSS(css))); err != nil {
		b.t.Fatalf("%s: click %s: %v", b.who, css, err)
	}
	b.do("wait for the page", chromedp.WaitReady(chromedp.CSS("footer")))
}

func (b *tab) fill(css, value string) {
	b.t.Helper()
	b.do("fill "+css, chromedp.SendKeys(chromedp.CSS(css), value))
}

func js[T any](b *tab, expr string) T {
	b.t.Helper()
	v, err := chromedp.Run(b.ctx, chromedp.Evaluate[T](expr))
	if err != nil {
		b.t.Fatalf("%s: %s: %v", b.who, expr, err)
	}
	return v
}

func (b *tab) count(css string) int {
	b.t.Helper()
	q, _ := json.Marshal(css)
	return js[int](b, "document.querySelectorAll("+string(q)+").length")
}

func (b *tab) text(css string) string {
	b.t.Helper()
	q, _ := json.Marshal(css)
	return js[string](b, "(document.querySelector("+string(q)+")||{}).textContent||''")
}

func (b *tab) path() string { return js[string](b, "location.pathname+location.search") }

// shot saves a screenshot in the test's folder, and in
// MANDATE_SCREENSHOTS_DIR when set (docs/ is made that way).
func (b *tab) shot(dir, name string) {
	b.t.Helper()
	png, err := chromedp.Run(b.ctx, chromedp.FullScreenshot(100))
	if err != nil {
		b.t.Fatalf("%s: screenshot %s: %v", b.who, name, err)
	}
	dirs := []string{dir}
	if d := os.Getenv("MANDATE_SCREENSHOTS_DIR"); d != "" {
		dirs = append(dirs, d)
	}
	for _, d := range dirs {
		if err := os.WriteFile(filepath.Join(d, "console-"+name+".png"), png, 0o644); err != nil {
			b.t.Fatal(err)
		}
	}
}

func (b *tab) signIn(key string) {
	b.t.Helper()
	b.open("/ui/login")
	b.fill("#key", key)
	b.click("#signin")
	if p := b.path(); p != "/ui/" {
		b.t.Fatalf("%s: after sign-in the browser is at %s", b.who, p)
	}
	// The CSP lets the console's own stylesheet and script run.
	if bg := js[string](b, "getComputedStyle(document.querySelector('header')).backgroundColor"); bg != "rgb(31, 41, 51)" {
		b.t.Errorf("%s: the stylesheet did not apply (header %q)", b.who, bg)
	}
	if on := js[string](b, "document.documentElement.getAttribute('data-console-js')||''"); on != "on" {
		b.t.Errorf("%s: the console's script did not run under the CSP", b.who)
	}
}

// TestConsoleInChromium is the scenario in a real headless Chromium.
func TestConsoleInChromium(t *testing.T) {
	browser := startChromium(t)
	s := buildScene(t, server.Config{}, false)
	shots := t.TempDir()

	// 1. A reviewer finds alice's task, opens the agent tree, sees the
	// unused grant, and sees no action button anywhere.
	rev := newTab(t, browser, s.srv.Base, "reviewer")
	rev.signIn(testenv.Keys[service.RoleReviewer])
	if got := rev.text("#count-agents"); got != "3" {
		t.Errorf("overview: %q active agents, want 3", got)
	}
	if rev.count("#chart-allow") != 1 || rev.text("#chart-allowed") != "1" || rev.text("#chart-denied") != "1" {
		t.Errorf("overview chart: %q allowed, %q denied", rev.text("#chart-allowed"), rev.text("#chart-denied"))
	}
	rev.shot(shots, "overview")
	rev.click("#nav-people")
	rev.fill("#filter-q", "alice")
	rev.click("#people-filter button")
	if n := rev.count("section.person"); n != 1 || rev.count(`section.person[data-principal="user:alice"]`) != 1 {
		t.Fatalf("people filtered to alice: %d people", n)
	}
	taskSel := fmt.Sprintf(`[data-task="%s"]`, s.task)
	subSel := fmt.Sprintf(`%s li[data-agent="%s"] li[data-agent="%s"]`, taskSel, s.top, s.sub)
	if rev.count(subSel) != 1 {
		t.Fatalf("the sub-agent is not under its parent in alice's task")
	}
	if !strings.Contains(rev.text(taskSel+" h3"), s.taskDescription) {
		t.Errorf("the task's description is not shown as text: %q", rev.text(taskSel+" h3"))
	}
	if reason := rev.text(subSel + " .reason"); reason != "NO_GRANT" {
		t.Errorf("the sub-agent's last denial: %q, want NO_GRANT", reason)
	}
	rev.shot(shots, "people")
	rev.click(fmt.Sprintf(`li[data-agent="%s"] > a.agent-link`, s.top))
	if p := rev.path(); p != "/ui/agents/"+s.top {
		t.Fatalf("the agent link went to %s", p)
	}
	if rev.count(fmt.Sprintf(`.grant.unused[data-grant="%s"]`, s.grantUnused)) != 1 || rev.count(fmt.Sprintf(`.grant.used[data-grant="%s"]`, s.grantUsed)) != 1 {
		t.Errorf("the agent page does not mark write unused and read used")
	}
	if rev.count(fmt.Sprintf(`#unused [data-grant="%s"]`, s.grantUnused)) != 1 {
		t.Errorf("the unused-grants list lacks the write grant")
	}
	if rev.count(`#timeline li[data-record] .corr`) != 1 {
		t.Errorf("the timeline does not show the check's correlation id")
	}
	rev.fill("#explain-permission", "write")
	rev.fill("#explain-resource", "repo:acme/api")
	rev.click("#explain-submit")
	if rev.text("#explain-code") != "ALLOWED" || rev.count(`.leg[data-passed="true"]`) < 4 {
		t.Errorf("explain: %q with %d legs passed", rev.text("#explain-code"), rev.count(`.leg[data-passed="true"]`))
	}
	rev.shot(shots, "agent")
	for _, p := range []string{"/ui/", "/ui/people", "/ui/agents/" + s.top, "/ui/agents/" + s.sub, "/ui/audit", "/ui/review?principal=user:alice", "/ui/requests"} {
		rev.open(p)
		if n := rev.count("a[data-action], #nav-actions"); n != 0 {
			t.Errorf("a reviewer sees %d action controls on %s", n, p)
		}
	}
	rev.open("/ui/audit?principal=user:alice")
	if rev.count("#audit-table tr.rec") == 0 {
		t.Errorf("the audit page lists nothing for alice")
	}
	rev.shot(shots, "audit")
	rev.open("/ui/review?principal=user:alice")
	if rev.count(".review-agent") != 2 || rev.count("#download-csv") != 1 {
		t.Errorf("the review lists %d agents", rev.count(".review-agent"))
	}
	rev.shot(shots, "review")

	// 2. An operator suspends the sub-agent, confirming with a reason.
	op := newTab(t, browser, s.srv.Base, "operator")
	op.signIn(testenv.Keys[service.RoleOperator])
	if !strings.Contains(op.text("main"), "your role (operator) may not read the agents") {
		t.Errorf("the operator's overview does not say what the role cannot read: %q", op.text("main"))
	}
	op.open("/ui/agents/" + s.sub)
	if !strings.Contains(op.text("main"), "your role (operator) may not read this agent's") {
		t.Errorf("the operator's agent page does not say what the role cannot read")
	}
	op.click(`#agent-actions a[data-action="agent.suspend"]`)
	op.fill("#reason", "the tests misbehave")
	op.shot(shots, "actions")
	op.click("#confirm")
	if !strings.Contains(op.text("#notice"), "suspended") || op.text("#agent-status") != "suspended" {
		t.Fatalf("after the suspend: notice %q, status %q", op.text("#notice"), op.text("#agent-status"))
	}
	// Every page and a Check agree at once.
	if ok, code := s.allowed(t, s.sub, "read", "repo:acme/api"); ok || code != "AGENT_SUSPENDED" {
		t.Errorf("Check after the suspend: %v %s", ok, code)
	}
	rev.open("/ui/people?q=alice")
	if st := js[string](rev, fmt.Sprintf(`document.querySelector('li[data-agent="%s"]').dataset.status`, s.sub)); st != "suspended" {
		t.Errorf("people page: the sub-agent is %q", st)
	}
	rev.open("/ui/agents/" + s.sub)
	if rev.text("#agent-status") != "suspended" || rev.count("#no-access") != 1 {
		t.Errorf("agent page: status %q, access rows %d", rev.text("#agent-status"), rev.count(".access-row"))
	}
	rev.open("/ui/")
	if got := rev.text("#count-agents"); got != "2" {
		t.Errorf("overview after the suspend: %q active agents, want 2", got)
	}
	rev.open("/ui/audit?agent=agent:" + s.sub)
	suspendRow := `#audit-table tr.rec[data-record^="chg_"]`
	if !strings.Contains(rev.text(suspendRow), "agent.suspend") || !strings.Contains(rev.text(suspendRow), "the tests misbehave") || !strings.Contains(rev.text(suspendRow), "test-operator") {
		t.Errorf("audit page: the newest change is %q", rev.text(suspendRow))
	}
	rev.open("/ui/review?principal=user:alice")
	if st := rev.text(fmt.Sprintf(`.review-agent[data-agent="%s"] .status`, s.sub)); st != "suspended" {
		t.Errorf("review page: the sub-agent is %q", st)
	}

	// 3. An access request, approved in the console, makes the agent's next check allowed.
	t.Run("access request", func(t *testing.T) {
		code, _, raw := s.srv.Call("POST", "/v1/access-requests", "Bearer "+testenv.Keys[service.RoleOperator],
			map[string]string{"agent": "agent:" + s.top, "permission": "read", "resource": "repo:acme/web", "ttl": "10m", "reason": "the web repo too"})
		if code != http.StatusOK {
			t.Fatalf("filing a request: %d %s", code, raw)
		}
		var filed struct {
			AccessRequest struct{ ID string } `json:"access_request"`
		}
		_ = json.Unmarshal(raw, &filed)
		if ok, _ := s.allowed(t, s.top, "read", "repo:acme/web"); ok {
			t.Fatal("allowed before the approval")
		}
		// The operator key filed it, so the operator sees no approve button.
		op.open("/ui/requests")
		if op.count(fmt.Sprintf(`tr[data-request="%s"] a[data-action]`, filed.AccessRequest.ID)) != 0 {
			t.Errorf("the filing key is offered to answer its own request")
		}
		adm := newTab(t, browser, s.srv.Base, "admin")
		adm.signIn(testenv.Keys[service.RoleAdmin])
		adm.open("/ui/requests")
		adm.shot(shots, "requests")
		adm.click(fmt.Sprintf(`tr[data-request="%s"] a[data-action="request.approve"]`, filed.AccessRequest.ID))
		adm.fill("#reason", "alice asked for it in the ticket")
		adm.click("#confirm")
		if !strings.Contains(adm.text("#notice"), "approved") {
			t.Fatalf("after the approval: %q", adm.text("#notice"))
		}
		if ok, code := s.allowed(t, s.top, "read", "repo:acme/web"); !ok {
			t.Fatalf("the next check after the approval: denied %s", code)
		}
		adm.open("/ui/agents/" + s.top)
		if adm.count(`.access-row[data-resource="repo:acme/web"]`) != 1 {
			t.Errorf("the agent page does not list the approved grant")
		}
	})
}

// TestConsoleOIDCSignInInChromium: a person signs in through the issuer
// (here the development provider) in a real browser, lands on their own
// People page, and suspends their own sub-agent.
func TestConsoleOIDCSignInInChromium(t *testing.T) {
	browser := startChromium(t)
	s := buildScene(t, server.Config{Credentials: server.CredentialsConfig{DevIdP: true, RequireHumanToken: "off"}}, false)
	alice := newTab(t, browser, s.srv.Base, "alice")
	alice.open("/ui/people")
	if p := alice.path(); !strings.HasPrefix(p, "/ui/login") {
		t.Fatalf("without a session the browser is at %s", p)
	}
	if _, err := chromedp.RunResponse(alice.ctx, chromedp.Click(chromedp.CSS("#signin-oidc"))); err != nil {
		t.Fatalf("to the issuer: %v", err)
	}
	alice.do("the provider's page", chromedp.WaitVisible(chromedp.CSS(`input[name="other"]`)))
	if p := alice.path(); !strings.HasPrefix(p, "/dev-idp/authorize") {
		t.Fatalf("the sign-in went to %s", p)
	}
	alice.do("name the user", chromedp.SendKeys(chromedp.CSS(`input[name="other"]`), "alice"))
	if _, err := chromedp.RunResponse(alice.ctx, chromedp.Click(chromedp.CSS(`button[value=""]`))); err != nil {
		t.Fatalf("the provider's sign-in: %v", err)
	}
	alice.do("land on the console", chromedp.WaitVisible(chromedp.ID("who")))
	if who, p := alice.text("#who"), alice.path(); who != "user:alice" || p != "/ui/people" {
		t.Fatalf("after the issuer's sign-in: %q at %s", who, p)
	}
	if alice.count(`section.person`) != 1 || alice.count(fmt.Sprintf(`li[data-agent="%s"]`, s.bobAgent)) != 0 {
		t.Errorf("alice's People page is not hers alone")
	}
	alice.open("/ui/agents/" + s.sub)
	if alice.count(`a[data-action="agent.resume"]`) != 0 {
		t.Errorf("a person is offered to resume")
	}
	alice.click(`#agent-actions a[data-action="agent.suspend"]`)
	alice.fill("#reason", "my tests misbehave")
	alice.click("#confirm")
	if alice.text("#agent-status") != "suspended" {
		t.Fatalf("after alice's suspend: %q", alice.text("#agent-status"))
	}
	if ok, code := s.allowed(t, s.sub, "read", "repo:acme/api"); ok || code != "AGENT_SUSPENDED" {
		t.Errorf("Check after alice's suspend: %v %s", ok, code)
	}
}
