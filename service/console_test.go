package service_test

import (
	"context"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	mandatev1 "github.com/mandate-dev/mandate/proto/mandate/v1"
	"github.com/mandate-dev/mandate/service"
)

// TestPersonCallsAreConfinedToTheirOwnDelegation applies the person rules
// to requests a console page never makes, the way a person editing a form
// might: every filter that could reach another human's records is refused.
func TestPersonCallsAreConfinedToTheirOwnDelegation(t *testing.T) {
	s := newReviewScene(t)
	a := s.a
	bobTask := field(a.ok("POST", "/v1/tasks", service.RoleOperator, map[string]string{"principal": "user:bob", "ttl": "1h"}), "task", "id").(string)
	bobAgent := a.agentOf(bobTask, "", "1h")
	keys, err := service.NewKeys([]service.Key{{Name: "k", Role: service.RoleAdmin, SHA256: "0000000000000000000000000000000000000000000000000000000000000000"}})
	if err != nil {
		t.Fatal(err)
	}
	call := func(keys *service.Keys, method string, req any) codes.Code {
		ctx := service.AsCaller(context.Background(), service.Person("alice"))
		_, err := keys.UnaryInterceptor(ctx, req, &grpc.UnaryServerInfo{FullMethod: method}, func(context.Context, any) (any, error) { return "ran", nil })
		return status.Code(err)
	}
	// Without the engine, every person call is refused.
	if got := call(keys, "/mandate.v1.AgentService/GetAgent", &mandatev1.GetAgentRequest{Id: s.top}); got != codes.PermissionDenied {
		t.Fatalf("a person without the ownership rules wired: %v", got)
	}
	keys.SetPersonEngine(a.Srv.Engine())
	cases := []struct {
		name   string
		method string
		req    any
		want   codes.Code
	}{
		{"her agent", "/mandate.v1.AgentService/GetAgent", &mandatev1.GetAgentRequest{Id: s.top}, codes.OK},
		{"bob's agent", "/mandate.v1.AgentService/GetAgent", &mandatev1.GetAgentRequest{Id: bobAgent}, codes.PermissionDenied},
		{"suspend bob's agent", "/mandate.v1.AgentService/SuspendAgent", &mandatev1.SuspendAgentRequest{Id: bobAgent}, codes.PermissionDenied},
		{"resume her agent", "/mandate.v1.AgentService/ResumeAgent", &mandatev1.ResumeAgentRequest{Id: s.top}, codes.PermissionDenied},
		{"complete bob's task", "/mandate.v1.TaskService/CompleteTask", &mandatev1.CompleteTaskRequest{Id: bobTask}, codes.PermissionDenied},
		{"complete her task", "/mandate.v1.TaskService/CompleteTask", &mandatev1.CompleteTaskRequest{Id: s.task}, codes.OK},
		{"remove her grant", "/mandate.v1.GrantService/DeleteGrant", &mandatev1.DeleteGrantRequest{Id: s.grantWrite}, codes.OK},
		{"create a grant", "/mandate.v1.GrantService/CreateGrant", &mandatev1.CreateGrantRequest{Holder: "agent:" + s.top}, codes.PermissionDenied},
		{"freeze everyone", "/mandate.v1.AgentService/FreezeAllAgents", &mandatev1.FreezeAllAgentsRequest{}, codes.PermissionDenied},
		{"everyone's audit", "/mandate.v1.AuditService/ListAudit", &mandatev1.ListAuditRequest{}, codes.PermissionDenied},
		{"bob's audit", "/mandate.v1.AuditService/ListAudit", &mandatev1.ListAuditRequest{Principal: "user:bob"}, codes.PermissionDenied},
		{"her audit", "/mandate.v1.AuditService/ListAudit", &mandatev1.ListAuditRequest{Principal: "user:alice"}, codes.OK},
		{"her agents by bob's task", "/mandate.v1.ReviewService/ListAgents", &mandatev1.ListAgentsRequest{Principal: "user:alice", Task: "task:" + bobTask}, codes.PermissionDenied},
		{"her unused grants of bob's agent", "/mandate.v1.ReviewService/ListUnusedGrants", &mandatev1.ListUnusedGrantsRequest{Principal: "user:alice", Agent: "agent:" + bobAgent}, codes.PermissionDenied},
		{"her unused grants", "/mandate.v1.ReviewService/ListUnusedGrants", &mandatev1.ListUnusedGrantsRequest{Principal: "user:alice"}, codes.OK},
		{"explain bob's agent", "/mandate.v1.ReviewService/Explain", &mandatev1.ExplainRequest{Subject: "agent:" + bobAgent}, codes.PermissionDenied},
		{"explain as bob", "/mandate.v1.ReviewService/Explain", &mandatev1.ExplainRequest{Subject: "user:bob"}, codes.PermissionDenied},
		{"bob's tree", "/mandate.v1.ReviewService/ListPrincipalAgents", &mandatev1.ListPrincipalAgentsRequest{Id: "bob"}, codes.PermissionDenied},
		{"bob's review", "/mandate.v1.ReviewService/GetReviewReport", &mandatev1.GetReviewReportRequest{Principal: "user:bob"}, codes.PermissionDenied},
		{"an agent that does not exist", "/mandate.v1.AgentService/GetAgent", &mandatev1.GetAgentRequest{Id: "agt_00000000000000000000000000000000"}, codes.PermissionDenied},
		{"a check", "/mandate.v1.CheckService/Check", &mandatev1.CheckRequest{}, codes.PermissionDenied},
	}
	for _, c := range cases {
		if got := call(keys, c.method, c.req); got != c.want {
			t.Errorf("%s: %v, want %v", c.name, got, c.want)
		}
	}
}
