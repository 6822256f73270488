package main

import (
	"strings"
	"time"

	"github.com/spf13/cobra"

	mandatev1 "github.com/mandate-dev/mandate/proto/mandate/v1"
)

func agentsCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "agents", Short: "Review agent instances, or freeze them all"}
	cmd.AddCommand(freezeCmds()...)
	var lf clientFlags
	var lreq mandatev1.ListAgentsRequest
	var lout string
	list := &cobra.Command{
		Use:   "list",
		Short: "List agents with their chain, task, expiry and status",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			conn, err := lf.dial()
			if err != nil {
				return err
			}
			defer conn.Close()
			client := mandatev1.NewReviewServiceClient(conn)
			agents, err := allPages(0, func(token string) ([]*mandatev1.Agent, string, error) {
				lreq.PageToken = token
				resp, err := client.ListAgents(cmd.Context(), &lreq)
				return resp.GetAgents(), resp.GetNextPageToken(), err
			})
			if err != nil {
				return err
			}
			all := &mandatev1.ListAgentsResponse{Agents: agents}
			rows := [][]string{{"AGENT", "NAME", "STATUS", "EXPIRES", "TASK", "CHAIN"}}
			for _, a := range all.GetAgents() {
				rows = append(rows, []string{"agent:" + a.GetId(), a.GetName(), a.GetStatus(), a.GetExpiresAt().AsTime().Format(time.RFC3339), a.GetTask(), strings.Join(a.GetChain(), " > ")})
			}
			return emit(cmd, lout, all, rows)
		},
	}
	lf.register(list)
	list.Flags().StringVar(&lreq.Principal, "principal", "", "user:<id>")
	list.Flags().StringVar(&lreq.Task, "task", "", "task:<id>")
	list.Flags().StringVar(&lreq.Status, "status", "", "active, suspended, revoked or expired")
	list.Flags().StringVarP(&lout, "output", "o", "table", "table, json or csv")

	var af clientFlags
	var areq mandatev1.ListAgentAccessRequest
	var aout string
	access := &cobra.Command{
		Use:   "access ID",
		Short: "List every resource and permission an agent can reach now, and why",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			conn, err := af.dial()
			if err != nil {
				return err
			}
			defer conn.Close()
			areq.Id = strings.TrimPrefix(args[0], "agent:")
			client := mandatev1.NewReviewServiceClient(conn)
			all := &mandatev1.ListAgentAccessResponse{}
			access, err := allPages(0, func(token string) ([]*mandatev1.AccessEntry, string, error) {
				areq.PageToken = token
				resp, err := client.ListAgentAccess(cmd.Context(), &areq)
				all.Agent, all.Chain, all.ConsistencyToken = resp.GetAgent(), resp.GetChain(), resp.GetConsistencyToken()
				return resp.GetAccess(), resp.GetNextPageToken(), err
			})
			if err != nil {
				return err
			}
			all.Access = access
			rows := [][]string{{"PERMISSION", "RESOURCE", "VALID UNTIL", "HOLDERS", "GRANTS"}}
			for _, x := range all.GetAccess() {
				rows = append(rows, []string{x.GetPermission(), x.GetResource(), x.GetValidUntil().AsTime().Format(time.RFC3339), strings.Join(x.GetHolders(), ","), strings.Join(x.GetGrants(), ",")})
			}
			return emit(cmd, aout, all, rows)
		},
	}
	af.register(access)
	access.Flags().StringVar(&areq.ResourceType, "resource-type", "", "only this resource type")
	access.Flags().StringVar(&areq.Permission, "permission", "", "only this permission")
	access.Flags().StringVarP(&aout, "output", "o", "table", "table, json or csv")
	cmd.AddCommand(list, access)
	return cmd
}
