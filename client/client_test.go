package client_test

import (
	"context"
	"errors"
	"net/url"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"

	"github.com/mandate-dev/mandate/client"
	"github.com/mandate-dev/mandate/client/mandatetest"
	"github.com/mandate-dev/mandate/engine/tcpproxy"
	"github.com/mandate-dev/mandate/internal/testenv"
	"github.com/mandate-dev/mandate/server"
	"github.com/mandate-dev/mandate/service"
)

func TestClientAgainstMandate(t *testing.T) {
	m := mandatetest.New(t, server.Config{})
	s := &mandatetest.Setup{M: m}
	s.Relate("repo:acme/api#reader@user:alice", "environment:staging#deployer@user:alice")
	agent, _ := s.Agent("user:alice", "deploy", "deployer")
	s.Grant(agent, "read", "repo:acme/api")
	if s.Err != nil {
		t.Fatal(s.Err)
	}
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())

	checker, err := client.New(client.Config{Addr: m.GRPCAddr, Key: mandatetest.Keys[service.RoleChecker], Plaintext: true})
	if err != nil {
		t.Fatal(err)
	}
	defer checker.Close()
	reviewer, err := client.New(client.Config{Addr: m.GRPCAddr, Key: mandatetest.Keys[service.RoleReviewer], Plaintext: true})
	if err != nil {
		t.Fatal(err)
	}
	defer reviewer.Close()
	ctx := context.Background()
	sub := "agent:" + agent

	d, err := checker.Check(ctx, client.Request{Subject: sub, Permission: "read", Resource: "repo:acme/api", CorrelationID: "c1", Reason: "why"})
	if err != nil || !d.Allowed || d.ReasonCode != client.Allowed || d.Principal != "user:alice" || d.ValidUntil.IsZero() || d.DecisionID == "" {
		t.Fatalf("allowed check: %+v %v", d, err)
	}
	ds, err := checker.CheckBulk(ctx, []client.Request{
		{Subject: sub, Permission: "read", Resource: "repo:acme/api"},
		{Subject: sub, Permission: "deploy", Resource: "environment:production"},
	})
	if err != nil || len(ds) != 2 || !ds[0].Allowed || ds[1].Allowed || ds[1].ReasonCode != client.NoGrant {
		t.Fatalf("bulk: %+v %v", ds, err)
	}
	// One item mandate refuses fails the whole batch (the gateway then asks one by one).
	if ds, err := checker.CheckBulk(ctx, []client.Request{
		{Subject: sub, Permission: "read", Resource: "repo:acme/api"},
		{Subject: sub, Permission: "rollback", Resource: "environment:production"},
	}); err == nil || !client.IsInvalid(err) || ds != nil {
		t.Fatalf("bulk with an invalid item: %+v %v", ds, err)
	}
	e, err := reviewer.Explain(ctx, client.Request{Subject: sub, Permission: "deploy", Resource: "environment:staging"})
	if err != nil || e.Allowed || len(e.WouldChange) == 0 || len(e.Legs) == 0 {
		t.Fatalf("explain: %+v %v", e, err)
	}
	if _, err := checker.Explain(ctx, client.Request{Subject: sub, Permission: "read", Resource: "repo:acme/api"}); err == nil {
		t.Fatal("explain with a checker key succeeded")
	}
	for _, tc := range []struct {
		typ, perm string
		want      bool
	}{{"repo", "read", true}, {"repo", "write", false}, {"environment", "deploy", false}} {
		got, err := reviewer.HasAccess(ctx, agent, tc.typ, tc.perm)
		if err != nil || got != tc.want {
			t.Fatalf("HasAccess %s %s: %v %v", tc.typ, tc.perm, got, err)
		}
	}
	// A refused request is an error and a deny, not retried.
	if d, err := checker.Check(ctx, client.Request{Subject: "alice", Permission: "read", Resource: "repo:acme/api"}); err == nil || d.Allowed || client.IsUnavailable(err) || !client.IsInvalid(err) {
		t.Fatalf("malformed subject: %+v %v", d, err)
	}
	for _, r := range []client.Request{
		{Subject: sub, Permission: "fly", Resource: "repo:acme/api"},
		{Subject: sub, Permission: "read", Resource: "spaceship:x"},
	} {
		d, err := checker.Check(ctx, r)
		t.Logf("%s %s: %+v %v (invalid %v)", r.Permission, r.Resource, d.ReasonCode, err, client.IsInvalid(err))
		if d.Allowed || (err != nil && !client.IsInvalid(err)) {
			t.Fatalf("%+v: %+v %v", r, d, err)
		}
	}
}

// TestClientFailsClosed: with mandate unreachable, Check is an error and a
// deny within the client's deadline; Unavailable is retried, so a brief
// outage inside the deadline is ridden out.
func TestClientFailsClosed(t *testing.T) {
	m := mandatetest.New(t, server.Config{})
	px, err := tcpproxy.New(m.GRPCAddr)
	if err != nil {
		t.Fatal(err)
	}
	defer px.Down()
	c, err := client.New(client.Config{Addr: px.Addr, Key: mandatetest.Keys[service.RoleChecker], Plaintext: true,
		Timeout: 300 * time.Millisecond, Attempts: 4, Backoff: 20 * time.Millisecond,
		DialOptions: []grpc.DialOption{grpc.WithConnectParams(grpc.ConnectParams{Backoff: backoff.Config{BaseDelay: 10 * time.Millisecond, Multiplier: 1, MaxDelay: 10 * time.Millisecond}, MinConnectTimeout: 100 * time.Millisecond})}})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	req := client.Request{Subject: "user:alice", Permission: "read", Resource: "repo:acme/api"}
	if _, err := c.Check(context.Background(), req); err != nil {
		t.Fatal(err)
	}
	px.Down()
	start := time.Now()
	d, err := c.Check(context.Background(), req)
	if err == nil || d.Allowed || !client.IsUnavailable(err) {
		t.Fatalf("mandate down: %+v %v", d, err)
	}
	if took := time.Since(start); took > time.Second {
		t.Fatalf("failing took %v; the deadline is 300ms", took)
	}
	ds, err := c.CheckBulk(context.Background(), []client.Request{req})
	if err == nil || ds != nil {
		t.Fatalf("bulk with mandate down: %v %v", ds, err)
	}

	// Back within one call's deadline: the retries reach it.
	up := make(chan error, 1)
	go func() { time.Sleep(40 * time.Millisecond); up <- px.Up() }()
	// gRPC's own reconnect backoff (1 s and growing) must not outlast the
	// deadline on a busy machine: reconnect as quickly as the first client.
	c2, err := client.New(client.Config{Addr: px.Addr, Key: mandatetest.Keys[service.RoleChecker], Plaintext: true, Timeout: 3 * time.Second, Attempts: 10, Backoff: 30 * time.Millisecond,
		DialOptions: []grpc.DialOption{grpc.WithConnectParams(grpc.ConnectParams{Backoff: backoff.Config{BaseDelay: 10 * time.Millisecond, Multiplier: 1, MaxDelay: 10 * time.Millisecond}, MinConnectTimeout: 100 * time.Millisecond})}})
	if err != nil {
		t.Fatal(err)
	}
	defer c2.Close()
	if _, err := c2.Check(context.Background(), req); err != nil {
		t.Fatalf("after the outage: %v (proxy back up: %v)", err, <-up)
	}
	if err := <-up; err != nil {
		t.Fatalf("bringing the proxy back: %v", err)
	}
}

// TestClientChecksByToken: CheckToken and CheckBulk send the agent's own
// token as subject_token, so mandate establishes the agent and its chain; a
// token mandate refuses is a typed error (Check) or an INVALID_TOKEN deny of
// that item alone (CheckBulk), never an allow.
func TestClientChecksByToken(t *testing.T) {
	idp := testenv.StartIdP(t)
	m := testenv.Start(t, testenv.WithIdP(server.Config{}, idp))
	m.OK("POST", "/v1/relationships:write", service.RoleAdmin, map[string]any{"updates": []map[string]string{
		{"operation": "TOUCH", "relationship": "repo:acme/api#reader@user:alice"},
		{"operation": "TOUCH", "relationship": "environment:staging#deployer@user:alice"},
	}})
	token, agent, task := m.AgentToken(idp, "alice", "read:repo:acme/api deploy:environment:staging", url.Values{"agent_name": {"deployer"}})
	sub, subAgent := m.SubAgentToken(token, "read:repo:acme/api", nil)
	c, err := client.New(client.Config{Addr: m.Srv.GRPCAddr(), Key: testenv.Keys[service.RoleGateway], Plaintext: true})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx := context.Background()

	d, err := c.CheckToken(ctx, token, client.Request{Subject: "user:alice", Permission: "read", Resource: "repo:acme/api"})
	if err != nil || !d.Allowed || d.Principal != "user:alice" || d.Task != task || len(d.Chain) != 2 || d.Chain[0] != agent {
		t.Fatalf("CheckToken checks the token's agent, not r.Subject: %+v %v", d, err)
	}
	d, err = c.CheckToken(ctx, sub, client.Request{Permission: "deploy", Resource: "environment:staging"})
	if err != nil || d.Allowed || d.ReasonCode != client.NoGrant || len(d.Chain) != 3 || d.Chain[0] != subAgent || d.Chain[1] != agent {
		t.Fatalf("a sub-agent's token: its own grants, its chain: %+v %v", d, err)
	}
	parts := strings.Split(token, ".")
	forged := parts[0] + "." + parts[1] + "." + strings.Repeat("A", len(parts[2]))
	for name, tok := range map[string]string{"forged": forged, "not a JWT": "agt_123", "empty": ""} {
		d, err := c.CheckToken(ctx, tok, client.Request{Permission: "read", Resource: "repo:acme/api"})
		var te *client.TokenError
		if d.Allowed || !client.IsInvalidToken(err) || !errors.As(err, &te) || client.IsInvalid(err) || client.IsUnavailable(err) {
			t.Fatalf("%s token: %+v %v", name, d, err)
		}
		if name != "empty" && te.Field != "subject_token" {
			t.Fatalf("%s token: field %q", name, te.Field)
		}
	}
	// Subject and token both: refused, naming subject_token.
	if _, err := c.Check(ctx, client.Request{Subject: agent, SubjectToken: token, Permission: "read", Resource: "repo:acme/api"}); !client.IsInvalidToken(err) {
		t.Fatalf("subject and token: %v", err)
	}

	ds, err := c.CheckBulk(ctx, []client.Request{
		{SubjectToken: token, Permission: "read", Resource: "repo:acme/api"},
		{SubjectToken: forged, Permission: "read", Resource: "repo:acme/api"},
		{SubjectToken: sub, Permission: "read", Resource: "repo:acme/api"},
		{Subject: agent, Permission: "deploy", Resource: "environment:production"},
	})
	if err != nil || len(ds) != 4 || !ds[0].Allowed || ds[1].Allowed || ds[1].ReasonCode != client.InvalidToken || !ds[2].Allowed || ds[3].Allowed {
		t.Fatalf("bulk by token: %+v %v", ds, err)
	}
	if _, err := c.CheckBulk(ctx, []client.Request{{SubjectToken: token, Permission: "read", Resource: "repo:acme/api"},
		{Subject: agent, SubjectToken: token, Permission: "read", Resource: "repo:acme/api"}}); !client.IsInvalidToken(err) || !strings.Contains(err.Error(), "checks[1].subject_token") {
		t.Fatalf("bulk with subject and token in one item: %v", err)
	}

	// Completing the task ends every token of it at the next check.
	m.OK("POST", "/v1/tasks/"+strings.TrimPrefix(task, "task:")+":complete", service.RoleOperator, map[string]any{})
	for _, tok := range []string{token, sub} {
		if d, err := c.CheckToken(ctx, tok, client.Request{Permission: "read", Resource: "repo:acme/api"}); err != nil || d.Allowed || d.ReasonCode != "TASK_COMPLETED" {
			t.Fatalf("after the task completed: %+v %v", d, err)
		}
	}
}
