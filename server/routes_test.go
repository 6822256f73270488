package server_test

import (
	"context"
	"encoding/json"
	"net/http"
	"regexp"
	"slices"
	"sort"
	"strings"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/emptypb"

	"github.com/mandate-dev/mandate/gateway"
	"github.com/mandate-dev/mandate/gateway/authzen"
	"github.com/mandate-dev/mandate/internal/testenv"
	"github.com/mandate-dev/mandate/server"
	"github.com/mandate-dev/mandate/service"
)

// route is one operation of the OpenAPI document.
type route struct {
	method, path string
	rpc          string // the gRPC method it maps to, "/mandate.v1.Service/Method"
}

var pathParam = regexp.MustCompile(`\{[^}]+\}`)

// routes reads every operation from the OpenAPI document the gateway serves,
// and adds the AuthZEN endpoints.
func routes(t *testing.T) []route {
	t.Helper()
	var doc struct {
		Paths map[string]map[string]struct {
			OperationID string `json:"operationId"`
		} `json:"paths"`
	}
	if err := json.Unmarshal(gateway.OpenAPI, &doc); err != nil {
		t.Fatal(err)
	}
	var out []route
	for path, ops := range doc.Paths {
		for method, op := range ops {
			// "AgentService_ResumePrincipalAgents2" is a second route of the same RPC.
			svc, rpc, ok := strings.Cut(strings.TrimRight(op.OperationID, "0123456789"), "_")
			if !ok {
				t.Fatalf("%s %s: operationId %q is not Service_Method", method, path, op.OperationID)
			}
			out = append(out, route{strings.ToUpper(method), path, "/mandate.v1." + svc + "/" + rpc})
		}
	}
	// The AuthZEN endpoints share the port and take the roles of a gRPC method.
	for path, rpc := range authzen.Methods() {
		out = append(out, route{http.MethodPost, path, rpc})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].path+out[i].method < out[j].path+out[j].method })
	return out
}

// caller is who calls: a role, no key, or a key mandate does not know.
type caller struct {
	name string
	role service.Role // "" for no role
	key  string       // the key sent; "" sends none
}

func callers() []caller {
	out := []caller{{name: "no key"}, {name: "unknown key", key: "not-a-key-of-this-server"}}
	for _, r := range service.Roles {
		out = append(out, caller{name: string(r), role: r, key: testenv.Keys[r]})
	}
	return out
}

// TestEveryRouteEnforcesItsRoles calls every route of the OpenAPI document
// and every AuthZEN endpoint with every role, no key and an unknown key,
// over REST and over gRPC (AuthZEN's gRPC method, for an AuthZEN route), and
// checks each answer against the role table the interceptors enforce
// (service.MethodRoles): 401 without a known key, 403 for a role the table
// does not list, and past authorization (anything else) for one it does.
func TestEveryRouteEnforcesItsRoles(t *testing.T) {
	srv := testenv.Start(t, server.Config{})
	table := service.MethodRoles()
	rs := routes(t)
	covered := map[string]bool{}
	for _, r := range rs {
		covered[r.rpc] = true
		if _, ok := table[r.rpc]; !ok {
			t.Errorf("%s %s maps to %s, which has no entry in the role table", r.method, r.path, r.rpc)
		}
	}
	for rpc := range table {
		if !covered[rpc] {
			t.Errorf("%s has roles but no REST route", rpc)
		}
	}
	conns := map[string]*grpc.ClientConn{}
	for _, c := range callers() {
		conns[c.name] = srv.Dial("", c.key)
	}
	for _, r := range rs {
		path := pathParam.ReplaceAllString(r.path, "x")
		for _, c := range callers() {
			want := "allowed"
			switch {
			case c.role == "":
				want = "unauthenticated"
			case !slices.Contains(table[r.rpc], c.role):
				want = "forbidden"
			}
			// REST, through the in-process gateway.
			auth := ""
			if c.key != "" {
				auth = "Bearer " + c.key
			}
			var body any
			if r.method == http.MethodPost || r.method == http.MethodPut {
				body = "{}"
			}
			code, hdr, raw := srv.Call(r.method, path, auth, body)
			got := "allowed"
			switch code {
			case http.StatusUnauthorized:
				got = "unauthenticated"
				if hdr.Get("WWW-Authenticate") == "" {
					t.Errorf("REST %s %s as %s: 401 without a Bearer challenge", r.method, path, c.name)
				}
			case http.StatusForbidden:
				got = "forbidden"
			case http.StatusNotImplemented:
				t.Errorf("REST %s %s as %s: 501, the in-process service does not serve %s", r.method, path, c.name, r.rpc)
			}
			if got != want {
				t.Errorf("REST %s %s as %s: %d %s, want %s", r.method, path, c.name, code, raw, want)
			}
			if hdr.Get("X-Request-Id") == "" {
				t.Errorf("REST %s %s as %s: no X-Request-Id", r.method, path, c.name)
			}
			// gRPC: an empty request, which every message decodes from.
			err := conns[c.name].Invoke(context.Background(), r.rpc, &emptypb.Empty{}, &emptypb.Empty{})
			got = "allowed"
			switch status.Code(err) {
			case codes.Unauthenticated:
				got = "unauthenticated"
			case codes.PermissionDenied:
				got = "forbidden"
			case codes.Unimplemented:
				t.Errorf("gRPC %s as %s: Unimplemented", r.rpc, c.name)
			}
			if got != want {
				t.Errorf("gRPC %s as %s: %v, want %s", r.rpc, c.name, err, want)
			}
		}
	}
}

// TestRequestIDReachesTheAuditTrail: the id a REST caller sends is echoed
// once and names the check's audit record, as the gRPC path does, because
// both run through the same interceptors.
func TestRequestIDReachesTheAuditTrail(t *testing.T) {
	srv := testenv.Start(t, server.Config{})
	req, err := http.NewRequest("POST", srv.Base+"/v1/check", strings.NewReader(`{"subject": "user:alice", "permission": "read", "resource": "repo:acme/api"}`))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+testenv.Keys[service.RoleChecker])
	req.Header.Set("X-Request-Id", "rest-req-7")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if got := resp.Header.Values("X-Request-Id"); resp.StatusCode != 200 || len(got) != 1 || got[0] != "rest-req-7" {
		t.Fatalf("%d, X-Request-Id %q; want 200 and the caller's id once", resp.StatusCode, got)
	}
	out := srv.OK("GET", "/v1/audit?resource=repo:acme/api", service.RoleReviewer, nil)
	recs, _ := out["records"].([]any)
	if len(recs) != 1 || recs[0].(map[string]any)["request_id"] != "rest-req-7" {
		t.Fatalf("audit records %v, want one with request_id rest-req-7", recs)
	}
}

// TestHumanTokensOpenOnlyTheirRoutes: with an OIDC issuer, a human's own
// token is accepted in place of a key exactly on the routes whose methods the
// role table opens to RoleHuman (the access requests a human answers), over
// REST and gRPC; on every other route it is no key at all (401).
func TestHumanTokensOpenOnlyTheirRoutes(t *testing.T) {
	idp := testenv.StartIdP(t)
	srv := testenv.Start(t, testenv.WithIdP(server.Config{}, idp))
	table := service.MethodRoles()
	token := idp.Login("alice")
	conn := srv.Dial("", token)
	opened := 0
	for _, r := range routes(t) {
		want := "unauthenticated"
		if slices.Contains(table[r.rpc], service.RoleHuman) {
			want = "allowed"
			opened++
		}
		path := pathParam.ReplaceAllString(r.path, "x")
		var body any
		if r.method == http.MethodPost || r.method == http.MethodPut {
			body = "{}"
		}
		code, _, raw := srv.Call(r.method, path, "Bearer "+token, body)
		got := "allowed"
		switch code {
		case http.StatusUnauthorized:
			got = "unauthenticated"
		case http.StatusForbidden:
			got = "forbidden"
		}
		if got != want {
			t.Errorf("REST %s %s with a human token: %d %s, want %s", r.method, path, code, raw, want)
		}
		err := conn.Invoke(context.Background(), r.rpc, &emptypb.Empty{}, &emptypb.Empty{})
		got = "allowed"
		switch status.Code(err) {
		case codes.Unauthenticated:
			got = "unauthenticated"
		case codes.PermissionDenied:
			got = "forbidden"
		}
		if got != want {
			t.Errorf("gRPC %s with a human token: %v, want %s", r.rpc, err, want)
		}
	}
	if opened == 0 {
		t.Fatal("no route is open to human tokens; the test covers nothing")
	}
}

// TestGatewayRoleIsExactlyWhatTheGatewayCalls: the gateway role holds the
// four methods the MCP gateway calls and nothing else, so a stolen gateway
// key can check and list one agent's access, but write nothing, read no
// audit trail and search nothing.
func TestGatewayRoleIsExactlyWhatTheGatewayCalls(t *testing.T) {
	var got []string
	for m, roles := range service.MethodRoles() {
		if slices.Contains(roles, service.RoleGateway) {
			got = append(got, m)
		}
	}
	sort.Strings(got)
	want := []string{"/mandate.v1.CheckService/Check", "/mandate.v1.CheckService/CheckBulk",
		"/mandate.v1.ReviewService/Explain", "/mandate.v1.ReviewService/ListAgentAccess"}
	if !slices.Equal(got, want) {
		t.Fatalf("the gateway role may call %v, want exactly %v", got, want)
	}
}
