package service

import (
	"context"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	mandatev1 "github.com/mandate-dev/mandate/proto/mandate/v1"
)

// AccessHandlers implements AccessRequestService: agents' requests for one
// more grant, and their humans' answers.
type AccessHandlers struct {
	mandatev1.UnimplementedAccessRequestServiceServer
	*Handlers
}

func (h *AccessHandlers) CreateAccessRequest(ctx context.Context, r *mandatev1.CreateAccessRequestRequest) (*mandatev1.CreateAccessRequestResponse, error) {
	return nil, status.Error(codes.Unimplemented, "access requests are being built")
}

func (h *AccessHandlers) GetAccessRequest(ctx context.Context, r *mandatev1.GetAccessRequestRequest) (*mandatev1.GetAccessRequestResponse, error) {
	return nil, status.Error(codes.Unimplemented, "access requests are being built")
}

func (h *AccessHandlers) ListAccessRequests(ctx context.Context, r *mandatev1.ListAccessRequestsRequest) (*mandatev1.ListAccessRequestsResponse, error) {
	return nil, status.Error(codes.Unimplemented, "access requests are being built")
}

func (h *AccessHandlers) ApproveAccessRequest(ctx context.Context, r *mandatev1.ApproveAccessRequestRequest) (*mandatev1.ApproveAccessRequestResponse, error) {
	return nil, status.Error(codes.Unimplemented, "access requests are being built")
}

func (h *AccessHandlers) DeclineAccessRequest(ctx context.Context, r *mandatev1.DeclineAccessRequestRequest) (*mandatev1.DeclineAccessRequestResponse, error) {
	return nil, status.Error(codes.Unimplemented, "access requests are being built")
}
