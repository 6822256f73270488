package oauth_test

import (
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/lestrrat-go/jwx/v3/jwk"
	"github.com/lestrrat-go/jwx/v3/jws"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/mandate-dev/mandate/credential"
	"github.com/mandate-dev/mandate/internal/testenv"
	mandatev1 "github.com/mandate-dev/mandate/proto/mandate/v1"
	"github.com/mandate-dev/mandate/server"
	"github.com/mandate-dev/mandate/service"
)

func checkBody(token, perm, res string) map[string]any {
	return map[string]any{"subject_token": token, "permission": perm, "resource": res}
}

func TestCheckBySubjectToken(t *testing.T) {
	const public = "http://mandate.test"
	path, key := testenv.SigningKeyFile(t)
	e := start(t, server.Config{PublicURL: public, Credentials: server.CredentialsConfig{SigningKeyFiles: []string{path}}})
	out := e.mustExchange(testenv.ExchangeForm(e.idp.Login("alice"), "id_token", "write:repo:acme/api"))
	tok := out["access_token"].(string)

	d := e.s.OK("POST", "/v1/check", service.RoleChecker, checkBody(tok, "write", "repo:acme/api"))
	if d["allowed"] != true || d["chain"].([]any)[0] != out["agent"] {
		t.Fatalf("check by token: %v", d)
	}
	if d := e.s.OK("POST", "/v1/check", service.RoleChecker, checkBody(tok, "read", "repo:acme/web")); d["reason_code"] != "NO_GRANT" {
		t.Fatalf("ungranted: %v", d)
	}

	// gRPC accepts it too.
	cc := mandatev1.NewCheckServiceClient(e.s.Dial(service.RoleChecker))
	resp, err := cc.Check(context.Background(), &mandatev1.CheckRequest{SubjectToken: tok, Permission: "write", Resource: "repo:acme/api"})
	if err != nil || !resp.GetAllowed() {
		t.Fatalf("gRPC check by token: %v %v", resp, err)
	}
	_, err = cc.Check(context.Background(), &mandatev1.CheckRequest{SubjectToken: tok + "x", Permission: "write", Resource: "repo:acme/api"})
	if status.Code(err) != codes.InvalidArgument || !strings.Contains(status.Convert(err).Message(), "subject_token") {
		t.Fatalf("gRPC invalid token: %v", err)
	}

	// A token that verifies but names a chain that is not the graph's.
	forger, err := credential.NewTokens(credential.TokensConfig{Issuer: public, Keys: mustKeySet(t, key)})
	if err != nil {
		t.Fatal(err)
	}
	for name, in := range map[string]credential.IssueInput{
		"another human":  {Subject: "user:bob", Agents: []string{out["agent"].(string)}, Task: out["task"].(string)},
		"another task":   {Subject: "user:alice", Agents: []string{out["agent"].(string)}, Task: "task:tsk_nosuch"},
		"a longer chain": {Subject: "user:alice", Agents: []string{out["agent"].(string), "agent:agt_other"}, Task: out["task"].(string)},
	} {
		raw, _, err := forger.Issue(in)
		if err != nil {
			t.Fatal(err)
		}
		if d := e.s.OK("POST", "/v1/check", service.RoleChecker, checkBody(raw, "write", "repo:acme/api")); d["allowed"] != false || d["reason_code"] != "CHAIN_MISMATCH" {
			t.Errorf("%s: %v", name, d)
		}
		if in := e.introspect(raw); in["active"] != false {
			t.Errorf("%s: introspection %v", name, in)
		}
	}

	// Invalid tokens: a 400 naming subject_token, never echoing the token.
	for name, bad := range map[string]string{"tampered": tok[:len(tok)-4] + "AAAA", "garbage": "x.y.z", "human token": e.idp.Login("alice")} {
		code, body := e.s.Do("POST", "/v1/check", service.RoleChecker, checkBody(bad, "write", "repo:acme/api"))
		msg, _ := body["message"].(string)
		if code != http.StatusBadRequest || !strings.HasPrefix(msg, "subject_token") || strings.Contains(msg, bad) {
			t.Errorf("%s: %d %v", name, code, body)
		}
	}
	code, body := e.s.Do("POST", "/v1/check", service.RoleChecker, map[string]any{"subject": out["agent"], "subject_token": tok, "permission": "write", "resource": "repo:acme/api"})
	if code != 400 {
		t.Errorf("subject and subject_token: %d %v", code, body)
	}

	// In a bulk check only the bad item is denied, with INVALID_TOKEN.
	bulk := e.s.OK("POST", "/v1/check:bulk", service.RoleChecker, map[string]any{"checks": []any{
		checkBody(tok, "write", "repo:acme/api"), checkBody("x.y.z", "write", "repo:acme/api")}})
	res := bulk["results"].([]any)
	if res[0].(map[string]any)["allowed"] != true || res[1].(map[string]any)["reason_code"] != "INVALID_TOKEN" || res[1].(map[string]any)["allowed"] == true {
		t.Fatalf("bulk: %v", res)
	}

	// AuthZEN: subject {type: agent_token, id: <jwt>}.
	az := map[string]any{"subject": map[string]any{"type": "agent_token", "id": tok}, "action": map[string]any{"name": "write"},
		"resource": map[string]any{"type": "repo", "id": "acme/api"}}
	if d := authzen(t, e.s, "/access/v1/evaluation", az); d["decision"] != true {
		t.Fatalf("AuthZEN by token: %v", d)
	}
	batch := authzen(t, e.s, "/access/v1/evaluations", map[string]any{
		"action": map[string]any{"name": "write"}, "resource": map[string]any{"type": "repo", "id": "acme/api"},
		"options":     map[string]any{"evaluations_semantic": "execute_all"},
		"evaluations": []any{map[string]any{"subject": az["subject"]}, map[string]any{"subject": map[string]any{"type": "agent_token", "id": "x.y.z"}}},
	})["evaluations"].([]any)
	if batch[0].(map[string]any)["decision"] != true || batch[1].(map[string]any)["decision"] != false {
		t.Fatalf("AuthZEN batch: %v", batch)
	}

	// The audit trail keeps the jti, never the token.
	c := claimsOf(t, tok)
	_, _, raw := e.s.Call("GET", "/v1/audit?agent="+out["agent"].(string), "Bearer "+testenv.Keys[service.RoleReviewer], nil)
	if strings.Contains(string(raw), tok) || strings.Contains(string(raw), strings.Split(tok, ".")[2]) {
		t.Fatal("the audit trail holds a token")
	}
	if !strings.Contains(string(raw), c["jti"].(string)) {
		t.Fatalf("the audit trail lacks the jti: %s", raw)
	}
	_, _, raw = e.s.Call("GET", "/v1/audit?decision=deny&page_size=1000", "Bearer "+testenv.Keys[service.RoleReviewer], nil)
	if !strings.Contains(string(raw), "INVALID_TOKEN") || strings.Contains(string(raw), "x.y.z") {
		t.Fatalf("the bulk item denied INVALID_TOKEN is not recorded, or its token is: %s", raw)
	}
}

func mustKeySet(t *testing.T, keys ...*credential.SigningKey) *credential.KeySet {
	t.Helper()
	ks, err := credential.NewKeySet(keys...)
	if err != nil {
		t.Fatal(err)
	}
	return ks
}

// TestSigningKeyRotation: a token signed by the old key verifies as long as
// the old key is still published, until it expires.
func TestSigningKeyRotation(t *testing.T) {
	oldPath, _ := testenv.SigningKeyFile(t)
	newPath, _ := testenv.SigningKeyFile(t)
	const public = "http://mandate.test"
	idp := testenv.StartIdP(t)
	first := testenv.Start(t, testenv.WithIdP(server.Config{PublicURL: public, Credentials: server.CredentialsConfig{SigningKeyFiles: []string{oldPath}}}, idp))
	first.OK("POST", "/v1/relationships:write", service.RoleAdmin, map[string]any{"updates": []map[string]string{
		{"operation": "TOUCH", "relationship": "repo:acme/api#writer@user:alice"}}})
	e := &env{t: t, idp: idp, s: first}
	tok := e.mustExchange(testenv.ExchangeForm(idp.Login("alice"), "id_token", "write:repo:acme/api"))["access_token"].(string)

	// The same key set as another replica would load it after rotation.
	rotated, err := credential.NewTokens(credential.TokensConfig{Issuer: public, Keys: mustKeySet(t, mustLoad(t, newPath), mustLoad(t, oldPath))})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := rotated.Verify(tok); err != nil {
		t.Fatalf("a token of the old key fails after rotation: %v", err)
	}
	retired, err := credential.NewTokens(credential.TokensConfig{Issuer: public, Keys: mustKeySet(t, mustLoad(t, newPath))})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := retired.Verify(tok); err == nil {
		t.Fatal("a token of a retired key verifies")
	}
	later, err := credential.NewTokens(credential.TokensConfig{Issuer: public, Keys: mustKeySet(t, mustLoad(t, newPath), mustLoad(t, oldPath)),
		Now: func() time.Time { return time.Now().Add(time.Hour) }})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := later.Verify(tok); err == nil {
		t.Fatal("an expired token verifies")
	}
}

func mustLoad(t *testing.T, path string) *credential.SigningKey {
	t.Helper()
	k, err := credential.LoadKeyFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// authzen posts an AuthZEN request with the checker key and requires a 200.
func authzen(t *testing.T, s *testenv.Server, path string, body any) map[string]any {
	t.Helper()
	req, err := http.NewRequest("POST", s.Base+path, strings.NewReader(mustJSON(t, body)))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", bearer(service.RoleChecker))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var out map[string]any
	_ = json.NewDecoder(resp.Body).Decode(&out)
	if resp.StatusCode != 200 {
		t.Fatalf("%s: %d %v", path, resp.StatusCode, out)
	}
	return out
}

// TestReceipts: a check with receipt: true carries a JWS anyone can verify
// against the JWKS with another library, which never passes as a token.
func TestReceipts(t *testing.T) {
	e := start(t, server.Config{})
	out := e.mustExchange(testenv.ExchangeForm(e.idp.Login("alice"), "id_token", "write:repo:acme/api"))
	tok := out["access_token"].(string)
	body := checkBody(tok, "write", "repo:acme/api")
	body["receipt"] = true
	d := e.s.OK("POST", "/v1/check", service.RoleChecker, body)
	receipt, _ := d["receipt"].(string)
	if receipt == "" {
		t.Fatalf("no receipt: %v", d)
	}
	set, err := jwk.Fetch(context.Background(), e.s.Base+"/.well-known/jwks.json")
	if err != nil {
		t.Fatal(err)
	}
	payload, err := jws.Verify([]byte(receipt), jws.WithKeySet(set))
	if err != nil {
		t.Fatalf("jwx refuses the receipt: %v", err)
	}
	var r map[string]any
	if err := json.Unmarshal(payload, &r); err != nil {
		t.Fatal(err)
	}
	if r["decision_id"] != d["decision_id"] || r["allowed"] != true || r["reason_code"] != "ALLOWED" || r["sub"] != out["agent"] ||
		r["task"] != out["task"] || r["permission"] != "write" || r["resource"] != "repo:acme/api" || r["consistency_token"] != d["consistency_token"] ||
		r["iat"] == nil || r["act"].(map[string]any)["sub"] != out["agent"] || r["token_jti"] != claimsOf(t, tok)["jti"] {
		t.Errorf("receipt %v for %v", r, d)
	}
	msg, _ := jws.Parse([]byte(receipt))
	if typ, _ := msg.Signatures()[0].ProtectedHeaders().Type(); typ != "mandate-receipt+jwt" {
		t.Errorf("typ %q", typ)
	}
	// A receipt is not a token: not for a check, not for an exchange, not for introspection.
	if code, _ := e.s.Do("POST", "/v1/check", service.RoleChecker, checkBody(receipt, "write", "repo:acme/api")); code != 400 {
		t.Errorf("check by receipt: %d", code)
	}
	if code, _ := e.exchange(testenv.ExchangeForm(receipt, "jwt", "")); code != 400 {
		t.Errorf("exchange of a receipt: %d", code)
	}
	if in := e.introspect(receipt); in["active"] != false {
		t.Errorf("introspection of a receipt: %v", in)
	}
	// Without receipt: true there is none.
	if d := e.s.OK("POST", "/v1/check", service.RoleChecker, checkBody(tok, "write", "repo:acme/api")); d["receipt"] != "" && d["receipt"] != nil {
		t.Errorf("unasked receipt: %v", d["receipt"])
	}
}
