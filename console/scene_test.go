package console_test

import (
	"encoding/json"
	"fmt"
	"html"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"regexp"
	"strings"
	"testing"

	"github.com/mandate-dev/mandate/internal/testenv"
	"github.com/mandate-dev/mandate/server"
	"github.com/mandate-dev/mandate/service"
)

// hostile is a value that must come out of every page as text.
const hostile = `<script>alert("x")</script>`

// scene is alice's task: a top agent and its sub-agent. The top agent holds
// read (used by one allowed check) and write (never used) on repo:acme/api;
// the sub-agent holds read. Its names and description hold markup.
type scene struct {
	srv                      *testenv.Server
	task, top, sub           string
	grantUsed, grantUnused   string
	subGrant, correlation    string
	bobAgent                 string
	taskDescription, topName string
}

func field(m map[string]any, path ...string) any {
	var v any = m
	for _, p := range path {
		v = v.(map[string]any)[p]
	}
	return v
}

// newScene builds the scene with markup in its names and description.
func newScene(t *testing.T, cfg server.Config) *scene { return buildScene(t, cfg, true) }

// buildScene builds the scene; hostileNames puts markup in its names, the
// plain ones read well in the README's screenshots.
func buildScene(t *testing.T, cfg server.Config, hostileNames bool) *scene {
	t.Helper()
	srv := testenv.Start(t, cfg)
	srv.OK("POST", "/v1/relationships:write", service.RoleAdmin, map[string]any{"updates": []map[string]string{
		{"operation": "TOUCH", "relationship": "repo:acme/api#reader@user:alice"},
		{"operation": "TOUCH", "relationship": "repo:acme/api#writer@user:alice"},
		{"operation": "TOUCH", "relationship": "repo:acme/web#reader@user:alice"},
		{"operation": "TOUCH", "relationship": "repo:acme/api#reader@user:bob"},
	}})
	s := &scene{srv: srv, taskDescription: "deploy " + hostile, topName: "deployer" + hostile, correlation: "corr-" + hostile}
	if !hostileNames {
		s.taskDescription, s.topName, s.correlation = "Deploy acme/api to staging", "deployer", "deploy-42"
	}
	s.task = field(srv.OK("POST", "/v1/tasks", service.RoleOperator, map[string]string{"principal": "user:alice", "ttl": "2h", "description": s.taskDescription}), "task", "id").(string)
	s.top = field(srv.OK("POST", "/v1/agents", service.RoleOperator, map[string]string{"task": "task:" + s.task, "name": s.topName, "ttl": "1h"}), "agent", "id").(string)
	s.sub = field(srv.OK("POST", "/v1/agents", service.RoleOperator, map[string]string{"task": "task:" + s.task, "parent": "agent:" + s.top, "name": "tester", "ttl": "1h"}), "agent", "id").(string)
	grant := func(holder, perm, res string) string {
		return field(srv.OK("POST", "/v1/grants", service.RoleOperator, map[string]string{"holder": holder, "permission": perm, "resource": res, "ttl": "30m"}), "grant", "id").(string)
	}
	s.grantUsed = grant("agent:"+s.top, "read", "repo:acme/api")
	s.grantUnused = grant("agent:"+s.top, "write", "repo:acme/api")
	s.subGrant = grant("agent:"+s.sub, "read", "repo:acme/api")
	// bob has a task too, so "alice's task" has to be found.
	bt := field(srv.OK("POST", "/v1/tasks", service.RoleOperator, map[string]string{"principal": "user:bob", "ttl": "1h", "description": "bob's chores"}), "task", "id").(string)
	s.bobAgent = field(srv.OK("POST", "/v1/agents", service.RoleOperator, map[string]string{"task": "task:" + bt, "name": "bob-agent", "ttl": "1h"}), "agent", "id").(string)
	if got := srv.OK("POST", "/v1/check", service.RoleChecker, map[string]string{"subject": "agent:" + s.top, "permission": "read", "resource": "repo:acme/api", "correlation_id": s.correlation, "reason": "reading the service's manifest"}); got["allowed"] != true {
		t.Fatalf("the scene's first check: %v", got)
	}
	if got := srv.Check("agent:"+s.sub, "read", "repo:acme/web", nil); got["allowed"] != false {
		t.Fatalf("the scene's denied check: %v", got)
	}
	return s
}

// allowed asks Check whether agent may perm on res.
func (s *scene) allowed(t *testing.T, agent, perm, res string) (bool, string) {
	t.Helper()
	got := s.srv.Check("agent:"+agent, perm, res, nil)
	return got["allowed"] == true, fmt.Sprint(got["reason_code"])
}

// browser is a plain HTTP client with a cookie jar, that does not follow redirects.
type browser struct {
	t    *testing.T
	base string
	c    *http.Client
}

func newBrowser(t *testing.T, base string) *browser {
	jar, _ := cookiejar.New(nil)
	return &browser{t: t, base: base, c: &http.Client{Jar: jar, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}}
}

func (b *browser) do(method, path string, form url.Values) (*http.Response, string) {
	b.t.Helper()
	var body io.Reader
	if form != nil {
		body = strings.NewReader(form.Encode())
	}
	req, err := http.NewRequest(method, b.base+path, body)
	if err != nil {
		b.t.Fatal(err)
	}
	if form != nil {
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	}
	resp, err := b.c.Do(req)
	if err != nil {
		b.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	return resp, string(raw)
}

func (b *browser) get(path string) (*http.Response, string) { return b.do("GET", path, nil) }

var csrfRE = regexp.MustCompile(`name="csrf" value="([^"]+)"`)

// csrf is the token of the first form on page.
func csrf(t *testing.T, page string) string {
	t.Helper()
	m := csrfRE.FindStringSubmatch(page)
	if m == nil {
		t.Fatalf("no CSRF token on the page:\n%s", page)
	}
	return html.UnescapeString(m[1])
}

// signIn signs in with key and returns the session's CSRF token.
func (b *browser) signIn(key string) string {
	b.t.Helper()
	_, page := b.get("/ui/login")
	resp, body := b.do("POST", "/ui/login", url.Values{"csrf": {csrf(b.t, page)}, "key": {key}, "next": {"/ui/"}})
	if resp.StatusCode != http.StatusSeeOther {
		b.t.Fatalf("sign-in: %d\n%s", resp.StatusCode, body)
	}
	_, page = b.get("/ui/")
	return csrf(b.t, page)
}

func decodeJSON(t *testing.T, s string) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal([]byte(s), &m); err != nil {
		t.Fatalf("not JSON: %v\n%s", err, s)
	}
	return m
}
