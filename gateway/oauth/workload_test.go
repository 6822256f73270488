package oauth_test

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/lestrrat-go/jwx/v3/jwk"
	"github.com/lestrrat-go/jwx/v3/jwt"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/mandate-dev/mandate/internal/testenv"
	mandatev1 "github.com/mandate-dev/mandate/proto/mandate/v1"
	"github.com/mandate-dev/mandate/server"
	"github.com/mandate-dev/mandate/service"
)

const (
	runnerA = "spiffe://acme.internal/ns/agents/sa/runner-a"
	runnerB = "spiffe://acme.internal/ns/agents/sa/runner-b"
)

// workloads is a mandate serving mutual TLS, whose keys file also has an
// operator entry for runner-a's SPIFFE ID, and the connections of each
// workload: runner-a (certificate only), runner-a after its SVID rotated,
// runner-b (an SVID plus the operator key) and a caller with no certificate.
type workloads struct {
	t                     *testing.T
	idp                   *testenv.IdP
	s                     *testenv.Server
	ca                    *testenv.CA
	a, a2, b, dns         testenv.Leaf
	viaA, viaA2, viaB     *testenv.Server
	viaDNS, viaNoCert     *testenv.Server
	operator, checker, rv string
}

func startWorkloads(t *testing.T, bind bool) *workloads {
	t.Helper()
	ca := testenv.NewCA(t, "bundle")
	srvLeaf := ca.Issue(t, "server", true, nil)
	w := &workloads{t: t, ca: ca, a: ca.Issue(t, "runner-a", false, nil, runnerA), a2: ca.Issue(t, "runner-a-rotated", false, nil, runnerA),
		b: ca.Issue(t, "runner-b", false, nil, runnerB), dns: ca.Issue(t, "dns-only", false, []string{"runner.acme.internal"}),
		operator: bearer(service.RoleOperator), checker: bearer(service.RoleChecker), rv: bearer(service.RoleReviewer)}
	base, err := os.ReadFile(testenv.KeysFile(t))
	if err != nil {
		t.Fatal(err)
	}
	keys := filepath.Join(t.TempDir(), "keys.yaml")
	body := string(base) + fmt.Sprintf("  - {name: runner-a, role: operator, spiffe_id: %q}\n", runnerA)
	if err := os.WriteFile(keys, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	w.idp = testenv.StartIdP(t)
	cfg := server.Config{KeysFile: keys, TLS: server.TLSConfig{CertFile: srvLeaf.CertFile, KeyFile: srvLeaf.KeyFile, ClientCAFile: ca.File}}
	cfg.Engine.BindAgentsToWorkload = bind
	w.s = testenv.Start(t, testenv.WithIdP(cfg, w.idp))
	w.viaA, w.viaA2 = w.s.As(testenv.MTLSClient(ca, &w.a)), w.s.As(testenv.MTLSClient(ca, &w.a2))
	w.viaB, w.viaDNS = w.s.As(testenv.MTLSClient(ca, &w.b)), w.s.As(testenv.MTLSClient(ca, &w.dns))
	w.viaNoCert = w.s.As(testenv.MTLSClient(ca, nil))
	w.viaNoCert.OK("POST", "/v1/relationships:write", service.RoleAdmin, map[string]any{"updates": []map[string]string{
		{"operation": "TOUCH", "relationship": "repo:acme/api#writer@user:alice"},
	}})
	return w
}

func thumbprint(l testenv.Leaf) string {
	sum := sha256.Sum256(l.Der())
	return base64.RawURLEncoding.EncodeToString(sum[:])
}

// exchange posts a token exchange over via, with authorization (none when "").
func (w *workloads) exchange(via *testenv.Server, authorization string, form url.Values) (int, map[string]any) {
	w.t.Helper()
	return via.Form("/oauth2/token", authorization, form)
}

func (w *workloads) mustExchange(via *testenv.Server, authorization string, form url.Values) map[string]any {
	w.t.Helper()
	code, out := w.exchange(via, authorization, form)
	if code != http.StatusOK {
		w.t.Fatalf("exchange: %d %v", code, out)
	}
	return out
}

func renewal(token string) url.Values { return testenv.ExchangeForm(token, "jwt", "") }

func (w *workloads) workloadOf(agent string) string {
	w.t.Helper()
	out := w.viaNoCert.OK("GET", "/v1/agents/"+strings.TrimPrefix(agent, "agent:"), service.RoleReviewer, nil)
	id, _ := out["agent"].(map[string]any)["workload_id"].(string)
	return id
}

// claims reads a token's payload, unverified, for the test's own assertions.
func claims(t *testing.T, raw string) map[string]any {
	t.Helper()
	parts := strings.Split(raw, ".")
	b, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		t.Fatal(err)
	}
	var c map[string]any
	if err := json.Unmarshal(b, &c); err != nil {
		t.Fatal(err)
	}
	return c
}

// TestAgentWorkloadIdentity: an agent records the SPIFFE ID of the SVID its
// creator presented (by certificate alone, or a key plus a certificate), and
// it shows in GetAgent, the audit trail (native and OCSF) and the access
// review. A caller with a key and no certificate records none. Its tokens
// are bound to the certificate (cnf.x5t#S256, read by jwx), introspection
// returns cnf, and a rotated SVID of the same workload still renews.
func TestAgentWorkloadIdentity(t *testing.T) {
	w := startWorkloads(t, false)
	login := w.idp.Login("alice")

	// runner-a authenticates with its SVID alone (tls_client_auth).
	out := w.mustExchange(w.viaA, "", testenv.ExchangeForm(login, "id_token", "write:repo:acme/api"))
	tokA, agentA, taskA := out["access_token"].(string), out["agent"].(string), out["task"].(string)
	if got := w.workloadOf(agentA); got != runnerA {
		t.Fatalf("GetAgent workload_id %q, want %q", got, runnerA)
	}

	// An independent JOSE library verifies the token and reads its cnf.
	code, _, jwks := w.viaNoCert.Call("GET", "/.well-known/jwks.json", "", nil)
	if code != http.StatusOK {
		t.Fatalf("jwks: %d", code)
	}
	set, err := jwk.Parse(jwks)
	if err != nil {
		t.Fatal(err)
	}
	tok, err := jwt.Parse([]byte(tokA), jwt.WithKeySet(set), jwt.WithIssuer(w.s.Base), jwt.WithValidate(true))
	if err != nil {
		t.Fatalf("jwx refuses the certificate-bound token: %v", err)
	}
	var cnf map[string]any
	if err := tok.Get("cnf", &cnf); err != nil || cnf["x5t#S256"] != thumbprint(w.a) {
		t.Fatalf("cnf %v (%v), want x5t#S256 %s", cnf, err, thumbprint(w.a))
	}
	intro := func(raw string) map[string]any {
		_, o := w.viaNoCert.Form("/oauth2/introspect", w.checker, url.Values{"token": {raw}})
		return o
	}
	if got := intro(tokA); got["active"] != true || got["cnf"].(map[string]any)["x5t#S256"] != thumbprint(w.a) {
		t.Fatalf("introspection of a bound token: %v", got)
	}

	// A key plus a certificate: the key authenticates, the certificate names the workload.
	out = w.mustExchange(w.viaB, w.operator, testenv.ExchangeForm(login, "id_token", "write:repo:acme/api"))
	if got := w.workloadOf(out["agent"].(string)); got != runnerB {
		t.Fatalf("key and SVID: workload_id %q, want %q", got, runnerB)
	}
	// A key and no certificate, or a certificate that is no SVID: no workload, no cnf.
	for name, via := range map[string]*testenv.Server{"no certificate": w.viaNoCert, "DNS-only certificate": w.viaDNS} {
		out = w.mustExchange(via, w.operator, testenv.ExchangeForm(login, "id_token", "write:repo:acme/api"))
		if got := w.workloadOf(out["agent"].(string)); got != "" {
			t.Errorf("%s: workload_id %q, want none", name, got)
		}
		_, bound := claims(t, out["access_token"].(string))["cnf"]
		if bound != (via == w.viaDNS) {
			t.Errorf("%s: token bound %v", name, bound)
		}
	}

	// POST /v1/agents records the caller's SVID too.
	created := w.viaB.OK("POST", "/v1/agents", service.RoleOperator, map[string]any{"task": taskA, "name": "b", "ttl": "30m"})
	if got := created["agent"].(map[string]any)["workload_id"]; got != runnerB {
		t.Fatalf("POST /v1/agents workload_id %v, want %s", got, runnerB)
	}

	// Renewal by runner-a after its SVID rotated: same SPIFFE ID, new certificate.
	out = w.mustExchange(w.viaA2, "", renewal(tokA))
	if got := claims(t, out["access_token"].(string))["cnf"].(map[string]any)["x5t#S256"]; got != thumbprint(w.a2) {
		t.Fatalf("renewed token bound to %v, want the rotated certificate", got)
	}

	// A resource service presenting its own SVID checks the agent's token.
	if code, _, body := w.viaB.Call("POST", "/v1/check", w.checker,
		map[string]any{"subject_token": tokA, "permission": "write", "resource": "repo:acme/api"}); code != http.StatusOK {
		t.Fatalf("check by token: %d %s", code, body)
	}

	// The audit trail: the token's issue carries the workload that asked for
	// it, and the check the resource service's.
	recs := w.viaNoCert.OK("GET", "/v1/audit?agent="+url.QueryEscape(agentA), service.RoleReviewer, nil)["records"].([]any)
	want := map[string]string{"token.issue": runnerA, "check": runnerB}
	for _, r := range recs {
		r := r.(map[string]any)
		kind, _ := r["action"].(string)
		if kind == "" {
			kind, _ = r["kind"].(string)
		}
		if id, ok := want[kind]; ok {
			delete(want, kind)
			if r["workload_id"] != id {
				t.Errorf("%s record workload_id %v, want %s", kind, r["workload_id"], id)
			}
		}
	}
	if len(want) > 0 {
		t.Fatalf("no %v records for %s in %v", want, agentA, recs)
	}

	// The access review names each agent's workload, in JSON and CSV.
	rep := w.viaNoCert.OK("GET", "/v1/review/report?principal=user:alice", service.RoleReviewer, nil)
	seen := map[string]string{}
	for _, a := range rep["agents"].([]any) {
		ag := a.(map[string]any)["agent"].(map[string]any)
		id, _ := ag["workload_id"].(string)
		seen["agent:"+ag["id"].(string)] = id
	}
	if seen[agentA] != runnerA {
		t.Fatalf("review report workload of %s: %q, want %q (%v)", agentA, seen[agentA], runnerA, seen)
	}
	_, _, csv := w.viaNoCert.Call("GET", "/v1/review/report.csv?principal=user:alice", w.rv, nil)
	if !strings.Contains(string(csv), "workload "+runnerA) {
		t.Fatalf("review CSV names no workload:\n%s", csv)
	}
}

// TestCertificateBoundSubjectToken: without --bind-agents-to-workload, a
// certificate-bound token is still renewed or delegated only over a
// connection presenting its certificate (or the agent's own workload's
// SVID): a stolen token and an operator key are not enough. An unbound
// token renews from anywhere. A token whose cnf was cut out of the payload
// fails mandate's signature check, at introspection and at Check.
func TestCertificateBoundSubjectToken(t *testing.T) {
	w := startWorkloads(t, false)
	login := w.idp.Login("alice")
	bound := w.mustExchange(w.viaB, w.operator, testenv.ExchangeForm(login, "id_token", "write:repo:acme/api"))["access_token"].(string)
	for name, via := range map[string]*testenv.Server{"no certificate": w.viaNoCert, "another workload": w.viaA, "another certificate": w.viaDNS} {
		code, out := w.exchange(via, w.operator, renewal(bound))
		if code != http.StatusBadRequest || out["error"] != "invalid_grant" || !strings.HasPrefix(out["error_description"].(string), "subject_token:") {
			t.Errorf("%s renewing a token bound to runner-b: %d %v, want 400 invalid_grant", name, code, out)
		}
	}
	w.mustExchange(w.viaB, w.operator, renewal(bound))

	unbound := w.mustExchange(w.viaNoCert, w.operator, testenv.ExchangeForm(login, "id_token", "write:repo:acme/api"))["access_token"].(string)
	w.mustExchange(w.viaB, w.operator, renewal(unbound))

	// Cut cnf out of the payload and keep the signature.
	parts := strings.Split(bound, ".")
	c := claims(t, bound)
	delete(c, "cnf")
	payload, _ := json.Marshal(c)
	stripped := parts[0] + "." + base64.RawURLEncoding.EncodeToString(payload) + "." + parts[2]
	_, got := w.viaNoCert.Form("/oauth2/introspect", w.checker, url.Values{"token": {stripped}})
	if got["active"] != false {
		t.Fatalf("introspection of a token with cnf cut out: %v, want inactive", got)
	}
	code, _, body := w.viaNoCert.Call("POST", "/v1/check", w.checker,
		map[string]any{"subject_token": stripped, "permission": "write", "resource": "repo:acme/api"})
	if code != http.StatusBadRequest || !strings.Contains(string(body), "subject_token") {
		t.Fatalf("check with a token whose cnf was cut out: %d %s, want 400 naming subject_token", code, body)
	}
	if code, out := w.exchange(w.viaNoCert, w.operator, renewal(stripped)); code != http.StatusBadRequest || out["error"] != "invalid_grant" {
		t.Fatalf("renewing a token whose cnf was cut out: %d %v", code, out)
	}
}

// TestBindAgentsToWorkload: with --bind-agents-to-workload, an agent that
// recorded a workload is renewed and delegated (by token exchange, and by
// POST /v1/agents with a parent) only over a connection presenting the same
// SPIFFE ID; anyone else gets 403. An agent with no workload is not bound.
func TestBindAgentsToWorkload(t *testing.T) {
	w := startWorkloads(t, true)
	login := w.idp.Login("alice")
	out := w.mustExchange(w.viaA, "", testenv.ExchangeForm(login, "id_token", "write:repo:acme/api"))
	tokA, agentA, task := out["access_token"].(string), out["agent"].(string), out["task"].(string)
	delegation := testenv.ExchangeForm(tokA, "jwt", "write:repo:acme/api")

	// An admin key may renew and delegate any client's tokens, but not from another workload.
	admin := bearer(service.RoleAdmin)
	for name, via := range map[string]*testenv.Server{"another workload": w.viaB, "no certificate": w.viaNoCert, "no SVID": w.viaDNS} {
		for what, form := range map[string]url.Values{"renewal": renewal(tokA), "delegation": delegation} {
			code, got := w.exchange(via, admin, form)
			if code != http.StatusForbidden || got["error"] != "unauthorized_client" ||
				!strings.HasPrefix(got["error_description"].(string), "subject_token:") || strings.Contains(got["error_description"].(string), runnerA) {
				t.Errorf("%s, %s: %d %v, want 403 unauthorized_client naming subject_token and not the bound workload", name, what, code, got)
			}
		}
		code, got := via.Do("POST", "/v1/agents", service.RoleOperator, map[string]any{"task": task, "parent": agentA, "name": "sub", "ttl": "30m"})
		if code != http.StatusForbidden || !strings.Contains(fmt.Sprint(got), "WORKLOAD_MISMATCH") {
			t.Errorf("%s, POST /v1/agents under a bound parent: %d %v, want 403 WORKLOAD_MISMATCH", name, code, got)
		}
	}
	// The refusals made nothing: the same workload renews, delegates and creates sub-agents.
	w.mustExchange(w.viaA2, "", renewal(tokA))
	sub := w.mustExchange(w.viaA, "", delegation)
	if got := w.workloadOf(sub["agent"].(string)); got != runnerA {
		t.Fatalf("sub-agent workload %q, want %q", got, runnerA)
	}
	created := w.viaA.OK("POST", "/v1/agents", "", map[string]any{"task": task, "parent": agentA, "name": "sub2", "ttl": "30m"})
	if got := created["agent"].(map[string]any)["workload_id"]; got != runnerA {
		t.Fatalf("POST /v1/agents sub-agent workload %v", got)
	}

	// The same over gRPC, where the SVID comes from gRPC's own TLS peer.
	grpcAgent := func(leaf *testenv.Leaf, key string) (*mandatev1.CreateAgentResponse, error) {
		conn, err := grpc.NewClient(w.s.Srv.GRPCAddr(), grpc.WithTransportCredentials(credentials.NewTLS(
			&tls.Config{RootCAs: w.ca.Pool(), Certificates: []tls.Certificate{leaf.TLS}})))
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		ctx := context.Background()
		if key != "" {
			ctx = metadata.AppendToOutgoingContext(ctx, "authorization", key)
		}
		return mandatev1.NewAgentServiceClient(conn).CreateAgent(ctx, &mandatev1.CreateAgentRequest{Task: task, Parent: agentA, Name: "grpc", Ttl: "30m"})
	}
	if _, err := grpcAgent(&w.b, w.operator); status.Code(err) != codes.PermissionDenied || !strings.Contains(err.Error(), "parent") {
		t.Errorf("gRPC CreateAgent under a bound parent from another workload: %v, want PermissionDenied naming parent", err)
	}
	if resp, err := grpcAgent(&w.a, ""); err != nil || resp.GetAgent().GetWorkloadId() != runnerA {
		t.Errorf("gRPC CreateAgent from the parent's workload: %v %v", resp, err)
	}

	// An agent created without an SVID is bound to nothing.
	free := w.mustExchange(w.viaNoCert, w.operator, testenv.ExchangeForm(login, "id_token", "write:repo:acme/api"))["access_token"].(string)
	w.mustExchange(w.viaNoCert, w.operator, renewal(free))
	w.mustExchange(w.viaNoCert, w.operator, testenv.ExchangeForm(free, "jwt", "write:repo:acme/api"))
}
