package main

import (
	"fmt"
	"strings"
	"time"

	"github.com/spf13/cobra"

	mandatev1 "github.com/mandate-dev/mandate/proto/mandate/v1"
)

// accessRequestsCmd files, lists, waits for and answers access requests.
// A human answers with their own OIDC token as --key (or MANDATE_KEY).
func accessRequestsCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "access-requests", Short: "File, list, wait for and answer agents' access requests"}
	bareID := func(s string) string { return strings.TrimPrefix(s, "access_request:") }
	line := func(r *mandatev1.AccessRequest) string {
		s := fmt.Sprintf("%s %s %s %s on %s for %s (%s)", r.GetId(), strings.ToUpper(r.GetState()), r.GetAgent(), r.GetPermission(), r.GetResource(), r.GetTtl(), r.GetHuman())
		if r.GetDecidedBy() != "" {
			s += fmt.Sprintf(", %s by %s as %s", r.GetState(), r.GetDecidedBy(), r.GetDecidedAs())
		}
		if r.GetGrant() != "" {
			s += ", grant " + r.GetGrant()
		}
		return s
	}

	var ff clientFlags
	var freq mandatev1.CreateAccessRequestRequest
	var fout string
	file := &cobra.Command{
		Use:   "file AGENT PERMISSION RESOURCE",
		Short: "Ask the agent's human for a grant (operator key)",
		Args:  cobra.ExactArgs(3),
		RunE: func(cmd *cobra.Command, args []string) error {
			conn, err := ff.dial()
			if err != nil {
				return err
			}
			defer conn.Close()
			freq.Agent, freq.Permission, freq.Resource = args[0], args[1], args[2]
			resp, err := mandatev1.NewAccessRequestServiceClient(conn).CreateAccessRequest(cmd.Context(), &freq)
			if err != nil {
				return err
			}
			if fout == "json" {
				return printJSON(cmd, resp)
			}
			fmt.Fprintln(cmd.OutOrStdout(), line(resp.GetAccessRequest()))
			return nil
		},
	}
	ff.register(file)
	file.Flags().StringVar(&freq.Ttl, "ttl", "", "the grant's lifetime, e.g. 30m")
	file.Flags().StringVar(&freq.Reason, "reason", "", "why the agent needs it; the human reads it")
	file.Flags().StringVarP(&fout, "output", "o", "text", "text or json")

	var gf clientFlags
	var wait time.Duration
	var gout string
	get := &cobra.Command{
		Use:   "get ID",
		Short: "Read a request; with --wait, wait until it is answered",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			conn, err := gf.dial()
			if err != nil {
				return err
			}
			defer conn.Close()
			req := &mandatev1.GetAccessRequestRequest{Id: bareID(args[0])}
			if wait > 0 {
				req.Wait = wait.String()
			}
			resp, err := mandatev1.NewAccessRequestServiceClient(conn).GetAccessRequest(cmd.Context(), req)
			if err != nil {
				return err
			}
			if gout == "json" {
				return printJSON(cmd, resp)
			}
			fmt.Fprintln(cmd.OutOrStdout(), line(resp.GetAccessRequest()))
			return nil
		},
	}
	gf.register(get)
	get.Flags().DurationVar(&wait, "wait", 0, "long-poll up to this long (at most 60s) for an answer")
	get.Flags().StringVarP(&gout, "output", "o", "text", "text or json")

	var lf clientFlags
	var lreq mandatev1.ListAccessRequestsRequest
	var lout string
	list := &cobra.Command{
		Use:   "list",
		Short: "List requests, newest first",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			conn, err := lf.dial()
			if err != nil {
				return err
			}
			defer conn.Close()
			client := mandatev1.NewAccessRequestServiceClient(conn)
			items, err := allPages(0, func(token string) ([]*mandatev1.AccessRequest, string, error) {
				lreq.PageToken = token
				resp, err := client.ListAccessRequests(cmd.Context(), &lreq)
				return resp.GetAccessRequests(), resp.GetNextPageToken(), err
			})
			if err != nil {
				return err
			}
			all := &mandatev1.ListAccessRequestsResponse{AccessRequests: items}
			rows := [][]string{{"ID", "STATE", "AGENT", "HUMAN", "PERMISSION", "RESOURCE", "TTL", "EXPIRES", "DECIDED_BY", "REASON"}}
			for _, r := range all.GetAccessRequests() {
				rows = append(rows, []string{r.GetId(), r.GetState(), r.GetAgent(), r.GetHuman(), r.GetPermission(), r.GetResource(), r.GetTtl(),
					r.GetExpiresAt().AsTime().Format(time.RFC3339), r.GetDecidedBy(), r.GetReason()})
			}
			return emit(cmd, lout, all, rows)
		},
	}
	lf.register(list)
	list.Flags().StringVar(&lreq.Human, "human", "", "user:<id>")
	list.Flags().StringVar(&lreq.Agent, "agent", "", "agent:<id>")
	list.Flags().StringVar(&lreq.State, "state", "", "pending, approved, declined or expired")
	list.Flags().StringVarP(&lout, "output", "o", "table", "table, json or csv")

	answer := func(use, short string, approve bool) *cobra.Command {
		var af clientFlags
		var reason, out string
		c := &cobra.Command{
			Use: use, Short: short, Args: cobra.ExactArgs(1),
			RunE: func(cmd *cobra.Command, args []string) error {
				conn, err := af.dial()
				if err != nil {
					return err
				}
				defer conn.Close()
				client := mandatev1.NewAccessRequestServiceClient(conn)
				var r *mandatev1.AccessRequest
				var resp interface {
					GetAccessRequest() *mandatev1.AccessRequest
				}
				if approve {
					x, err := client.ApproveAccessRequest(cmd.Context(), &mandatev1.ApproveAccessRequestRequest{Id: bareID(args[0]), Reason: reason})
					if err != nil {
						return err
					}
					if out == "json" {
						return printJSON(cmd, x)
					}
					resp = x
				} else {
					x, err := client.DeclineAccessRequest(cmd.Context(), &mandatev1.DeclineAccessRequestRequest{Id: bareID(args[0]), Reason: reason})
					if err != nil {
						return err
					}
					if out == "json" {
						return printJSON(cmd, x)
					}
					resp = x
				}
				r = resp.GetAccessRequest()
				fmt.Fprintln(cmd.OutOrStdout(), line(r))
				return nil
			},
		}
		af.register(c)
		c.Flags().StringVar(&reason, "reason", "", "why, for the audit trail")
		c.Flags().StringVarP(&out, "output", "o", "text", "text or json")
		return c
	}
	cmd.AddCommand(file, get, list,
		answer("approve ID", "Approve a pending request: its grant is created (the human's OIDC token or an admin key as --key)", true),
		answer("decline ID", "Decline a pending request (the human's OIDC token or an admin key as --key)", false))
	return cmd
}
