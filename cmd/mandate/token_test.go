package main

import (
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/mandate-dev/mandate/internal/testenv"
	"github.com/mandate-dev/mandate/server"
	"github.com/mandate-dev/mandate/service"
)

// runToken runs `mandate token ARGS` in process and returns its output and error.
func runToken(t *testing.T, stdin string, args ...string) (string, error) {
	t.Helper()
	cmd := tokenCmd()
	var out bytes.Buffer
	cmd.SetOut(&out)
	cmd.SetErr(&out)
	cmd.SetIn(strings.NewReader(stdin))
	cmd.SetArgs(args)
	err := cmd.Execute()
	return out.String(), err
}

func TestTokenCommands(t *testing.T) {
	idp := testenv.StartIdP(t)
	s := testenv.Start(t, testenv.WithIdP(server.Config{}, idp))
	s.OK("POST", "/v1/relationships:write", service.RoleAdmin, map[string]any{"updates": []map[string]string{
		{"operation": "TOUCH", "relationship": "repo:acme/api#writer@user:alice"}}})
	op, checker := testenv.Keys[service.RoleOperator], testenv.Keys[service.RoleChecker]

	out, err := runToken(t, idp.Login("alice"), "exchange", "--url", s.Base, "--key", op, "--subject-token", "-", "--scope", "write:repo:acme/api", "--task-description", "fix the build")
	if err != nil {
		t.Fatalf("exchange: %v %s", err, out)
	}
	var tok map[string]any
	if err := json.Unmarshal([]byte(out), &tok); err != nil || tok["access_token"] == nil {
		t.Fatalf("exchange output: %s", out)
	}
	out, err = runToken(t, "", "introspect", "--url", s.Base, "--key", checker, tok["access_token"].(string))
	if err != nil || !strings.Contains(out, `"active": true`) {
		t.Fatalf("introspect: %v %s", err, out)
	}
	_, err = runToken(t, "", "exchange", "--url", s.Base, "--key", op, "--subject-token", tok["access_token"].(string), "--subject-token-type", "jwt", "--scope", "read:repo:acme/other")
	if err == nil || !strings.Contains(err.Error(), "invalid_scope") {
		t.Fatalf("a wider delegation: %v", err)
	}
}

// TestDevIdP: `mandate serve --dev-idp` signs humans in by `mandate dev
// login` and by the authorization-code flow with PKCE, and mandate trusts
// the tokens.
func TestDevIdP(t *testing.T) {
	s := testenv.Start(t, server.Config{Credentials: server.CredentialsConfig{DevIdP: true}})
	s.OK("POST", "/v1/relationships:write", service.RoleAdmin, map[string]any{"updates": []map[string]string{
		{"operation": "TOUCH", "relationship": "repo:acme/api#writer@user:alice"}}})
	op := testenv.Keys[service.RoleOperator]

	cmd := devCmd()
	var out bytes.Buffer
	cmd.SetOut(&out)
	cmd.SetErr(io.Discard)
	cmd.SetArgs([]string{"login", "alice", "--url", s.Base, "--key", op})
	if err := cmd.Execute(); err != nil {
		t.Fatal(err)
	}
	idTok := strings.TrimSpace(out.String())
	if res, err := runToken(t, "", "exchange", "--url", s.Base, "--key", op, "--subject-token", idTok, "--scope", "write:repo:acme/api"); err != nil {
		t.Fatalf("exchange of a dev login: %v %s", err, res)
	}
	if code, _, _ := s.Call("POST", "/dev-idp/login", "Bearer "+testenv.Keys[service.RoleChecker], "user=alice"); code != http.StatusUnauthorized {
		t.Fatalf("dev login with a checker key: %d", code)
	}

	// The browser flow: picker, code, PKCE.
	verifier := strings.Repeat("v", 50)
	sum := sha256.Sum256([]byte(verifier))
	challenge := base64.RawURLEncoding.EncodeToString(sum[:])
	q := url.Values{"response_type": {"code"}, "client_id": {"console"}, "redirect_uri": {"http://127.0.0.1:9/cb"}, "state": {"st"},
		"code_challenge": {challenge}, "code_challenge_method": {"S256"}, "scope": {"openid"}}
	code, _, page := s.Call("GET", "/dev-idp/authorize?"+q.Encode(), "", nil)
	if code != 200 || !strings.Contains(string(page), "DEVELOPMENT IDENTITY PROVIDER") || !strings.Contains(string(page), "alice") {
		t.Fatalf("picker: %d %s", code, page)
	}
	noRedirect := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	form := url.Values{}
	for k, v := range q {
		form[k] = v
	}
	form.Set("user", "alice")
	resp, err := noRedirect.PostForm(s.Base+"/dev-idp/authorize", form)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	loc, err := url.Parse(resp.Header.Get("Location"))
	if err != nil || resp.StatusCode != http.StatusFound || loc.Query().Get("state") != "st" {
		t.Fatalf("redirect: %d %s", resp.StatusCode, resp.Header.Get("Location"))
	}
	redeem := func(verifier string) (int, map[string]any) {
		return s.Form("/dev-idp/token", "", url.Values{"grant_type": {"authorization_code"}, "code": {loc.Query().Get("code")},
			"code_verifier": {verifier}, "client_id": {"console"}, "redirect_uri": {"http://127.0.0.1:9/cb"}})
	}
	if c, body := redeem(strings.Repeat("w", 50)); c != 400 {
		t.Fatalf("a wrong verifier: %d %v", c, body)
	}
	// The code was spent by the failed attempt: get a new one.
	resp, err = noRedirect.PostForm(s.Base+"/dev-idp/authorize", form)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	loc, _ = url.Parse(resp.Header.Get("Location"))
	c, body := redeem(verifier)
	if c != 200 {
		t.Fatalf("token: %d %v", c, body)
	}
	if res, err := runToken(t, "", "exchange", "--url", s.Base, "--key", op, "--subject-token", body["id_token"].(string), "--scope", "write:repo:acme/api"); err != nil {
		t.Fatalf("exchange of a browser sign-in: %v %s", err, res)
	}
	if c, _ := redeem(verifier); c != 400 {
		t.Fatalf("a code redeemed twice: %d", c)
	}
	// Not an open redirector.
	q.Set("redirect_uri", "https://evil.example/cb")
	if code, _, _ := s.Call("GET", "/dev-idp/authorize?"+q.Encode(), "", nil); code != 400 {
		t.Fatalf("foreign redirect_uri: %d", code)
	}
}
