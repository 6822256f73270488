package main

import (
	"fmt"

	"github.com/spf13/cobra"

	mandatev1 "github.com/mandate-dev/mandate/proto/mandate/v1"
)

func auditCmd() *cobra.Command {
	var cf clientFlags
	var req mandatev1.ListAuditRequest
	var output string
	var limit int
	cmd := &cobra.Command{
		Use:   "audit",
		Short: "List audit records, newest first: what an agent did, for whom, why",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			conn, err := cf.dial()
			if err != nil {
				return err
			}
			defer conn.Close()
			client := mandatev1.NewAuditServiceClient(conn)
			all, err := allPages(limit, func(token string) ([]*mandatev1.AuditRecord, string, error) {
				req.PageToken = token
				resp, err := client.ListAudit(cmd.Context(), &req)
				return resp.GetRecords(), resp.GetNextPageToken(), err
			})
			if err != nil {
				return err
			}
			if output == "json" {
				return printJSON(cmd, &mandatev1.ListAuditResponse{Records: all})
			}
			w := cmd.OutOrStdout()
			fmt.Fprintf(w, "%-27s %-6s %-8s %-27s %-16s %-28s %-20s %s\n", "TIME", "KIND", "RESULT", "SUBJECT/TARGET", "PERMISSION/ACTION", "RESOURCE", "PRINCIPAL", "CORRELATION")
			for _, r := range all {
				who, what, result := r.GetSubject(), r.GetPermission(), r.GetDecision()
				if r.GetKind() == "change" {
					who, what, result = r.GetTarget(), r.GetAction(), "-"
				} else if r.GetReasonCode() != "" && r.GetDecision() != "allow" {
					result = r.GetDecision() + ":" + r.GetReasonCode()
				}
				fmt.Fprintf(w, "%-27s %-6s %-8s %-27s %-16s %-28s %-20s %s\n", r.GetTime().AsTime().Format("2006-01-02T15:04:05.000Z07:00"),
					r.GetKind(), result, who, what, r.GetResource(), r.GetPrincipal(), r.GetCorrelationId())
			}
			return nil
		},
	}
	cf.register(cmd)
	f := cmd.Flags()
	f.StringVar(&req.Agent, "agent", "", "agent:<id>")
	f.StringVar(&req.Principal, "principal", "", "user:<id>")
	f.StringVar(&req.Task, "task", "", "task:<id>")
	f.StringVar(&req.CorrelationId, "correlation-id", "", "correlation id")
	f.StringVar(&req.Decision, "decision", "", "allow, deny or error")
	f.StringVar(&req.Resource, "resource", "", "type:id")
	f.StringVar(&req.Since, "since", "", "RFC 3339 time or duration back from now (30d, 12h)")
	f.StringVar(&req.Until, "until", "", "RFC 3339 time or duration back from now")
	f.IntVar(&limit, "limit", 200, "most records to print (0: all)")
	f.StringVarP(&output, "output", "o", "table", "table or json")
	return cmd
}
