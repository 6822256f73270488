package service

import (
	"context"

	"google.golang.org/genproto/googleapis/api/httpbody"
	"google.golang.org/grpc"

	mandatev1 "github.com/mandate-dev/mandate/proto/mandate/v1"
)

// InProcess serves every mandate RPC to callers in this process (the REST
// gateway, AuthZEN) through the same interceptor chain as the gRPC server,
// so keys and roles, request ids and errors apply exactly as on gRPC, with
// no loopback connection and no serialization in between.
type InProcess struct {
	mandatev1.UnimplementedTaskServiceServer
	mandatev1.UnimplementedAgentServiceServer
	mandatev1.UnimplementedGrantServiceServer
	mandatev1.UnimplementedCheckServiceServer
	mandatev1.UnimplementedSchemaServiceServer
	mandatev1.UnimplementedRelationshipServiceServer
	mandatev1.UnimplementedAuditServiceServer
	mandatev1.UnimplementedReviewServiceServer
	mandatev1.UnimplementedSearchServiceServer
	mandatev1.UnimplementedAccessRequestServiceServer

	h           *Handlers
	search      *SearchHandlers
	access      *AccessHandlers
	interceptor grpc.UnaryServerInterceptor
}

// NewInProcess serves h and search through interceptor, the gRPC server's
// own chain (Interceptor).
func NewInProcess(h *Handlers, search *SearchHandlers, interceptor grpc.UnaryServerInterceptor) *InProcess {
	return &InProcess{h: h, search: search, access: &AccessHandlers{Handlers: h}, interceptor: interceptor}
}

// unary runs one call through the interceptor chain, as grpc.Server does.
func unary[Req, Resp any](ctx context.Context, s *InProcess, method string, req Req, fn func(context.Context, Req) (Resp, error)) (Resp, error) {
	out, err := s.interceptor(ctx, req, &grpc.UnaryServerInfo{Server: s.h, FullMethod: method}, func(ctx context.Context, r any) (any, error) {
		return fn(ctx, r.(Req))
	})
	if err != nil {
		var zero Resp
		return zero, err
	}
	return out.(Resp), nil
}

// One method per RPC, each through unary. A method missing here answers
// Unimplemented on REST and AuthZEN, which the route × role test catches.

func (s *InProcess) CreateTask(ctx context.Context, r *mandatev1.CreateTaskRequest) (*mandatev1.CreateTaskResponse, error) {
	return unary(ctx, s, mandatev1.TaskService_CreateTask_FullMethodName, r, s.h.CreateTask)
}

func (s *InProcess) GetTask(ctx context.Context, r *mandatev1.GetTaskRequest) (*mandatev1.GetTaskResponse, error) {
	return unary(ctx, s, mandatev1.TaskService_GetTask_FullMethodName, r, s.h.GetTask)
}

func (s *InProcess) CompleteTask(ctx context.Context, r *mandatev1.CompleteTaskRequest) (*mandatev1.CompleteTaskResponse, error) {
	return unary(ctx, s, mandatev1.TaskService_CompleteTask_FullMethodName, r, s.h.CompleteTask)
}

func (s *InProcess) CreateAgent(ctx context.Context, r *mandatev1.CreateAgentRequest) (*mandatev1.CreateAgentResponse, error) {
	return unary(ctx, s, mandatev1.AgentService_CreateAgent_FullMethodName, r, s.h.CreateAgent)
}

func (s *InProcess) GetAgent(ctx context.Context, r *mandatev1.GetAgentRequest) (*mandatev1.GetAgentResponse, error) {
	return unary(ctx, s, mandatev1.AgentService_GetAgent_FullMethodName, r, s.h.GetAgent)
}

func (s *InProcess) RevokeAgent(ctx context.Context, r *mandatev1.RevokeAgentRequest) (*mandatev1.RevokeAgentResponse, error) {
	return unary(ctx, s, mandatev1.AgentService_RevokeAgent_FullMethodName, r, s.h.RevokeAgent)
}

func (s *InProcess) SuspendAgent(ctx context.Context, r *mandatev1.SuspendAgentRequest) (*mandatev1.SuspendAgentResponse, error) {
	return unary(ctx, s, mandatev1.AgentService_SuspendAgent_FullMethodName, r, s.h.SuspendAgent)
}

func (s *InProcess) ResumeAgent(ctx context.Context, r *mandatev1.ResumeAgentRequest) (*mandatev1.ResumeAgentResponse, error) {
	return unary(ctx, s, mandatev1.AgentService_ResumeAgent_FullMethodName, r, s.h.ResumeAgent)
}

func (s *InProcess) SuspendPrincipalAgents(ctx context.Context, r *mandatev1.SuspendPrincipalAgentsRequest) (*mandatev1.SuspendPrincipalAgentsResponse, error) {
	return unary(ctx, s, mandatev1.AgentService_SuspendPrincipalAgents_FullMethodName, r, s.h.SuspendPrincipalAgents)
}

func (s *InProcess) ResumePrincipalAgents(ctx context.Context, r *mandatev1.ResumePrincipalAgentsRequest) (*mandatev1.ResumePrincipalAgentsResponse, error) {
	return unary(ctx, s, mandatev1.AgentService_ResumePrincipalAgents_FullMethodName, r, s.h.ResumePrincipalAgents)
}

func (s *InProcess) FreezeAllAgents(ctx context.Context, r *mandatev1.FreezeAllAgentsRequest) (*mandatev1.FreezeAllAgentsResponse, error) {
	return unary(ctx, s, mandatev1.AgentService_FreezeAllAgents_FullMethodName, r, s.h.FreezeAllAgents)
}

func (s *InProcess) UnfreezeAllAgents(ctx context.Context, r *mandatev1.UnfreezeAllAgentsRequest) (*mandatev1.UnfreezeAllAgentsResponse, error) {
	return unary(ctx, s, mandatev1.AgentService_UnfreezeAllAgents_FullMethodName, r, s.h.UnfreezeAllAgents)
}

func (s *InProcess) CreateGrant(ctx context.Context, r *mandatev1.CreateGrantRequest) (*mandatev1.CreateGrantResponse, error) {
	return unary(ctx, s, mandatev1.GrantService_CreateGrant_FullMethodName, r, s.h.CreateGrant)
}

func (s *InProcess) GetGrant(ctx context.Context, r *mandatev1.GetGrantRequest) (*mandatev1.GetGrantResponse, error) {
	return unary(ctx, s, mandatev1.GrantService_GetGrant_FullMethodName, r, s.h.GetGrant)
}

func (s *InProcess) DeleteGrant(ctx context.Context, r *mandatev1.DeleteGrantRequest) (*mandatev1.DeleteGrantResponse, error) {
	return unary(ctx, s, mandatev1.GrantService_DeleteGrant_FullMethodName, r, s.h.DeleteGrant)
}

func (s *InProcess) Check(ctx context.Context, r *mandatev1.CheckRequest) (*mandatev1.CheckResponse, error) {
	return unary(ctx, s, mandatev1.CheckService_Check_FullMethodName, r, s.h.Check)
}

func (s *InProcess) CheckBulk(ctx context.Context, r *mandatev1.CheckBulkRequest) (*mandatev1.CheckBulkResponse, error) {
	return unary(ctx, s, mandatev1.CheckService_CheckBulk_FullMethodName, r, s.h.CheckBulk)
}

func (s *InProcess) WriteSchema(ctx context.Context, r *mandatev1.WriteSchemaRequest) (*mandatev1.WriteSchemaResponse, error) {
	return unary(ctx, s, mandatev1.SchemaService_WriteSchema_FullMethodName, r, s.h.WriteSchema)
}

func (s *InProcess) ReadSchema(ctx context.Context, r *mandatev1.ReadSchemaRequest) (*mandatev1.ReadSchemaResponse, error) {
	return unary(ctx, s, mandatev1.SchemaService_ReadSchema_FullMethodName, r, s.h.ReadSchema)
}

func (s *InProcess) WriteRelationships(ctx context.Context, r *mandatev1.WriteRelationshipsRequest) (*mandatev1.WriteRelationshipsResponse, error) {
	return unary(ctx, s, mandatev1.RelationshipService_WriteRelationships_FullMethodName, r, s.h.WriteRelationships)
}

func (s *InProcess) ReadRelationships(ctx context.Context, r *mandatev1.ReadRelationshipsRequest) (*mandatev1.ReadRelationshipsResponse, error) {
	return unary(ctx, s, mandatev1.RelationshipService_ReadRelationships_FullMethodName, r, s.h.ReadRelationships)
}

func (s *InProcess) ListAudit(ctx context.Context, r *mandatev1.ListAuditRequest) (*mandatev1.ListAuditResponse, error) {
	return unary(ctx, s, mandatev1.AuditService_ListAudit_FullMethodName, r, s.h.ListAudit)
}

func (s *InProcess) ListAgents(ctx context.Context, r *mandatev1.ListAgentsRequest) (*mandatev1.ListAgentsResponse, error) {
	return unary(ctx, s, mandatev1.ReviewService_ListAgents_FullMethodName, r, s.h.ListAgents)
}

func (s *InProcess) ListAgentAccess(ctx context.Context, r *mandatev1.ListAgentAccessRequest) (*mandatev1.ListAgentAccessResponse, error) {
	return unary(ctx, s, mandatev1.ReviewService_ListAgentAccess_FullMethodName, r, s.h.ListAgentAccess)
}

func (s *InProcess) ListPrincipalAgents(ctx context.Context, r *mandatev1.ListPrincipalAgentsRequest) (*mandatev1.ListPrincipalAgentsResponse, error) {
	return unary(ctx, s, mandatev1.ReviewService_ListPrincipalAgents_FullMethodName, r, s.h.ListPrincipalAgents)
}

func (s *InProcess) Explain(ctx context.Context, r *mandatev1.ExplainRequest) (*mandatev1.ExplainResponse, error) {
	return unary(ctx, s, mandatev1.ReviewService_Explain_FullMethodName, r, s.h.Explain)
}

func (s *InProcess) ListUnusedGrants(ctx context.Context, r *mandatev1.ListUnusedGrantsRequest) (*mandatev1.ListUnusedGrantsResponse, error) {
	return unary(ctx, s, mandatev1.ReviewService_ListUnusedGrants_FullMethodName, r, s.h.ListUnusedGrants)
}

func (s *InProcess) GetReviewReport(ctx context.Context, r *mandatev1.GetReviewReportRequest) (*mandatev1.GetReviewReportResponse, error) {
	return unary(ctx, s, mandatev1.ReviewService_GetReviewReport_FullMethodName, r, s.h.GetReviewReport)
}

func (s *InProcess) GetReviewReportCSV(ctx context.Context, r *mandatev1.GetReviewReportCSVRequest) (*httpbody.HttpBody, error) {
	return unary(ctx, s, mandatev1.ReviewService_GetReviewReportCSV_FullMethodName, r, s.h.GetReviewReportCSV)
}

func (s *InProcess) LookupSubjects(ctx context.Context, r *mandatev1.LookupSubjectsRequest) (*mandatev1.LookupSubjectsResponse, error) {
	return unary(ctx, s, mandatev1.SearchService_LookupSubjects_FullMethodName, r, s.search.LookupSubjects)
}

func (s *InProcess) LookupResources(ctx context.Context, r *mandatev1.LookupResourcesRequest) (*mandatev1.LookupResourcesResponse, error) {
	return unary(ctx, s, mandatev1.SearchService_LookupResources_FullMethodName, r, s.search.LookupResources)
}

func (s *InProcess) LookupActions(ctx context.Context, r *mandatev1.LookupActionsRequest) (*mandatev1.LookupActionsResponse, error) {
	return unary(ctx, s, mandatev1.SearchService_LookupActions_FullMethodName, r, s.search.LookupActions)
}

func (s *InProcess) CreateAccessRequest(ctx context.Context, r *mandatev1.CreateAccessRequestRequest) (*mandatev1.CreateAccessRequestResponse, error) {
	return unary(ctx, s, mandatev1.AccessRequestService_CreateAccessRequest_FullMethodName, r, s.access.CreateAccessRequest)
}

func (s *InProcess) GetAccessRequest(ctx context.Context, r *mandatev1.GetAccessRequestRequest) (*mandatev1.GetAccessRequestResponse, error) {
	return unary(ctx, s, mandatev1.AccessRequestService_GetAccessRequest_FullMethodName, r, s.access.GetAccessRequest)
}

func (s *InProcess) ListAccessRequests(ctx context.Context, r *mandatev1.ListAccessRequestsRequest) (*mandatev1.ListAccessRequestsResponse, error) {
	return unary(ctx, s, mandatev1.AccessRequestService_ListAccessRequests_FullMethodName, r, s.access.ListAccessRequests)
}

func (s *InProcess) ApproveAccessRequest(ctx context.Context, r *mandatev1.ApproveAccessRequestRequest) (*mandatev1.ApproveAccessRequestResponse, error) {
	return unary(ctx, s, mandatev1.AccessRequestService_ApproveAccessRequest_FullMethodName, r, s.access.ApproveAccessRequest)
}

func (s *InProcess) DeclineAccessRequest(ctx context.Context, r *mandatev1.DeclineAccessRequestRequest) (*mandatev1.DeclineAccessRequestResponse, error) {
	return unary(ctx, s, mandatev1.AccessRequestService_DeclineAccessRequest_FullMethodName, r, s.access.DeclineAccessRequest)
}
