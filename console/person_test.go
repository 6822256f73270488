package console_test

import (
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/mandate-dev/mandate/internal/testenv"
	"github.com/mandate-dev/mandate/server"
	"github.com/mandate-dev/mandate/service"
)

// signInOIDC signs in through the development provider as user, by the
// authorization-code flow with PKCE, and returns the session's CSRF token.
func (b *browser) signInOIDC(user string) string {
	b.t.Helper()
	resp, _ := b.get("/ui/login/oidc?next=/ui/people")
	if resp.StatusCode != http.StatusFound {
		b.t.Fatalf("/ui/login/oidc: %d", resp.StatusCode)
	}
	auth, err := url.Parse(resp.Header.Get("Location"))
	if err != nil || auth.Path != "/dev-idp/authorize" {
		b.t.Fatalf("/ui/login/oidc sent the browser to %s", resp.Header.Get("Location"))
	}
	q := auth.Query()
	if q.Get("code_challenge_method") != "S256" || q.Get("state") == "" || q.Get("nonce") == "" {
		b.t.Fatalf("the authorization request lacks PKCE, state or nonce: %v", q)
	}
	form := url.Values{}
	for k, v := range q {
		form[k] = v
	}
	form.Set("user", user)
	resp, body := b.do("POST", "/dev-idp/authorize", form)
	if resp.StatusCode != http.StatusFound {
		b.t.Fatalf("the provider's sign-in: %d %s", resp.StatusCode, body)
	}
	cb, _ := url.Parse(resp.Header.Get("Location"))
	resp, body = b.get(cb.RequestURI())
	if resp.StatusCode != http.StatusOK || !strings.Contains(body, "/ui/people") {
		b.t.Fatalf("the callback: %d %s", resp.StatusCode, body)
	}
	_, page := b.get("/ui/people")
	return csrf(b.t, page)
}

func TestConsolePersonSignsInThroughTheIssuer(t *testing.T) {
	s := newScene(t, server.Config{Credentials: server.CredentialsConfig{DevIdP: true, RequireHumanToken: "off"}})
	alice := newBrowser(t, s.srv.Base)
	token := alice.signInOIDC("alice")

	_, people := alice.get("/ui/people")
	if !strings.Contains(people, `data-principal="user:alice"`) || strings.Contains(people, "user:bob") || !strings.Contains(people, s.sub) {
		t.Errorf("alice's people page does not show exactly her own agents")
	}
	if _, page := alice.get("/ui/"); !strings.Contains(page, ">user:alice<") || !strings.Contains(page, `id="count-agents">2<`) {
		t.Errorf("alice's overview is not hers alone")
	}
	// Someone else's agent, audit and review are refused or confined to her.
	if resp, _ := alice.get("/ui/agents/" + s.bobAgent); resp.StatusCode != http.StatusForbidden {
		t.Errorf("alice opening bob's agent: %d, want 403", resp.StatusCode)
	}
	if _, page := alice.get("/ui/audit?principal=user:bob"); strings.Contains(page, "user:bob") && strings.Contains(page, `class="rec`) && strings.Contains(page, s.bobAgent) {
		t.Errorf("alice's audit page shows bob's records")
	}
	if resp, body := alice.get("/ui/review.json?principal=user:bob"); resp.StatusCode != http.StatusOK || strings.Contains(body, s.bobAgent) || !strings.Contains(body, s.top) {
		t.Errorf("alice's review download: %d, bob's agent present: %v", resp.StatusCode, strings.Contains(body, s.bobAgent))
	}
	act := func(action, target string) int {
		resp, _ := alice.do("POST", "/ui/act", url.Values{"csrf": {token}, "action": {action}, "target": {target}, "reason": {"mine to stop"}})
		return resp.StatusCode
	}
	// Not hers: refused by the services' ownership rules.
	if code := act("agent.suspend", s.bobAgent); code != http.StatusForbidden {
		t.Errorf("alice suspending bob's agent: %d", code)
	}
	if ok, _ := s.allowed(t, s.bobAgent, "read", "repo:acme/api"); ok {
		t.Log("bob's agent holds no grant; its status is checked below")
	}
	got := s.srv.OK("GET", "/v1/agents/"+s.bobAgent, service.RoleReviewer, nil)
	if field(got, "agent", "status") != "active" {
		t.Fatalf("bob's agent after alice's refused suspend: %v", got)
	}
	for _, a := range [][2]string{{"principal.suspend_agents", "bob"}, {"agents.freeze_all", ""}, {"agent.resume", s.sub}} {
		if code := act(a[0], a[1]); code != http.StatusForbidden {
			t.Errorf("alice's %s %s: %d, want 403", a[0], a[1], code)
		}
	}
	// Hers: taking access away is hers to do, audited with her name.
	if code := act("agent.suspend", s.sub); code != http.StatusSeeOther {
		t.Fatalf("alice suspending her own sub-agent: %d", code)
	}
	if ok, code := s.allowed(t, s.sub, "read", "repo:acme/api"); ok || code != "AGENT_SUSPENDED" {
		t.Fatalf("Check after alice's suspend: %v %s", ok, code)
	}
	var suspend map[string]any
	for _, r := range s.srv.OK("GET", "/v1/audit?agent=agent:"+s.sub, service.RoleReviewer, nil)["records"].([]any) {
		if m := r.(map[string]any); m["action"] == "agent.suspend" {
			suspend = m
		}
	}
	if suspend == nil || suspend["caller"] != "user:alice" || suspend["reason"] != "mine to stop" {
		t.Errorf("the suspend's record: %v", suspend)
	}
	if code := act("grant.delete", s.grantUnused); code != http.StatusSeeOther {
		t.Errorf("alice removing her agent's unused grant: %d", code)
	}
}

func TestConsoleOIDCCallbackRefusesForeignState(t *testing.T) {
	s := newScene(t, server.Config{Credentials: server.CredentialsConfig{DevIdP: true, RequireHumanToken: "off"}})
	// A callback this browser never started (login CSRF), and one whose
	// state was started in another browser, are refused.
	victim := newBrowser(t, s.srv.Base)
	if resp, _ := victim.get("/ui/callback?code=x&state=made-up"); resp.StatusCode != http.StatusBadRequest {
		t.Errorf("a made-up state: %d", resp.StatusCode)
	}
	attacker := newBrowser(t, s.srv.Base)
	resp, _ := attacker.get("/ui/login/oidc")
	auth, _ := url.Parse(resp.Header.Get("Location"))
	form := auth.Query()
	form.Set("user", "mallory")
	resp, _ = attacker.do("POST", "/dev-idp/authorize", form)
	cb, _ := url.Parse(resp.Header.Get("Location"))
	if resp, _ := victim.get(cb.RequestURI()); resp.StatusCode != http.StatusBadRequest {
		t.Errorf("another browser's callback: %d, want 400", resp.StatusCode)
	}
	if resp, _ := victim.get("/ui/"); resp.StatusCode != http.StatusSeeOther {
		t.Errorf("the victim was signed in as the attacker")
	}
}

// fileRequest files an access request with the operator key and returns its id.
func (s *scene) fileRequest(t *testing.T, agent, perm, res string) string {
	t.Helper()
	got := s.srv.OK("POST", "/v1/access-requests", service.RoleOperator, map[string]string{"agent": "agent:" + agent, "permission": perm, "resource": res, "ttl": "10m", "reason": "needed for the deploy"})
	return field(got, "access_request", "id").(string)
}

func TestConsolePersonAnswersTheirOwnRequests(t *testing.T) {
	s := newScene(t, server.Config{Credentials: server.CredentialsConfig{DevIdP: true, RequireHumanToken: "off"}})
	id := s.fileRequest(t, s.top, "read", "repo:acme/web")

	// With an issuer configured, an operator neither sees the buttons nor may answer.
	op := newBrowser(t, s.srv.Base)
	opToken := op.signIn(testenv.Keys[service.RoleOperator])
	if _, page := op.get("/ui/requests"); !strings.Contains(page, id) || strings.Contains(page, `data-action="request.approve"`) {
		t.Errorf("the operator's requests page: listed %v, approve offered %v", strings.Contains(page, id), strings.Contains(page, `data-action="request.approve"`))
	}
	if resp, _ := op.do("POST", "/ui/act", url.Values{"csrf": {opToken}, "action": {"request.approve"}, "target": {id}, "reason": {"sure"}}); resp.StatusCode != http.StatusForbidden {
		t.Errorf("an operator's approval with an issuer configured: %d, want 403", resp.StatusCode)
	}
	// bob sees nothing of alice's request and cannot answer it.
	bob := newBrowser(t, s.srv.Base)
	bobToken := bob.signInOIDC("bob")
	if _, page := bob.get("/ui/requests"); strings.Contains(page, id) {
		t.Errorf("bob sees alice's request")
	}
	if resp, _ := bob.do("POST", "/ui/act", url.Values{"csrf": {bobToken}, "action": {"request.approve"}, "target": {id}, "reason": {"why not"}}); resp.StatusCode != http.StatusForbidden {
		t.Errorf("bob approving alice's request: %d, want 403", resp.StatusCode)
	}
	if ok, _ := s.allowed(t, s.top, "read", "repo:acme/web"); ok {
		t.Fatal("allowed before alice answered")
	}
	alice := newBrowser(t, s.srv.Base)
	token := alice.signInOIDC("alice")
	if _, page := alice.get("/ui/requests"); !strings.Contains(page, `data-action="request.approve"`) {
		t.Fatalf("alice is not offered to approve her agent's request")
	}
	if resp, body := alice.do("POST", "/ui/act", url.Values{"csrf": {token}, "action": {"request.approve"}, "target": {id}, "reason": {"yes, for the deploy"}}); resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("alice's approval: %d %s", resp.StatusCode, body)
	}
	if ok, code := s.allowed(t, s.top, "read", "repo:acme/web"); !ok {
		t.Fatalf("the agent's next check after alice's approval: %s", code)
	}
	got := s.srv.OK("GET", "/v1/access-requests/"+id, service.RoleReviewer, nil)
	if field(got, "access_request", "decided_by") != "user:alice" || field(got, "access_request", "decided_as") != "human" {
		t.Errorf("the answered request: %v", got)
	}
}
