package main

import (
	"fmt"
	"strings"
	"time"

	"github.com/spf13/cobra"

	mandatev1 "github.com/mandate-dev/mandate/proto/mandate/v1"
)

func explainCmd() *cobra.Command {
	var cf clientFlags
	var out string
	cmd := &cobra.Command{
		Use:   "explain SUBJECT PERMISSION RESOURCE",
		Short: "Say, leg by leg, why a check is allowed or denied and what would change it",
		Args:  cobra.ExactArgs(3),
		RunE: func(cmd *cobra.Command, args []string) error {
			conn, err := cf.dial()
			if err != nil {
				return err
			}
			defer conn.Close()
			resp, err := mandatev1.NewReviewServiceClient(conn).Explain(cmd.Context(), &mandatev1.ExplainRequest{Subject: args[0], Permission: args[1], Resource: args[2]})
			if err != nil {
				return err
			}
			rows := [][]string{{"LEG", "PASSED", "DETAIL", "PATH"}}
			for _, l := range resp.GetLegs() {
				rows = append(rows, []string{l.GetName(), fmt.Sprint(l.GetPassed()), l.GetDetail(), strings.Join(l.GetPath(), "; ")})
			}
			if out == "table" {
				verdict := "DENY"
				if resp.GetAllowed() {
					verdict = "ALLOW"
				}
				fmt.Fprintf(cmd.OutOrStdout(), "%s %s\n\n", verdict, resp.GetReasonCode())
				if err := emit(cmd, out, resp, rows); err != nil {
					return err
				}
				fmt.Fprintln(cmd.OutOrStdout(), "\nwhat would change it:")
				for _, w := range resp.GetWouldChange() {
					fmt.Fprintln(cmd.OutOrStdout(), "  - "+w)
				}
				return nil
			}
			return emit(cmd, out, resp, rows)
		},
	}
	cf.register(cmd)
	cmd.Flags().StringVarP(&out, "output", "o", "table", "table, json or csv")
	return cmd
}

func reviewCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "review", Short: "Periodic access review"}
	var cf clientFlags
	var req mandatev1.GetReviewReportRequest
	var out string
	report := &cobra.Command{
		Use:   "report",
		Short: "One page per agent: identity and chain, what it can reach, what it used, what it never used, its denials",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			conn, err := cf.dial()
			if err != nil {
				return err
			}
			defer conn.Close()
			client := mandatev1.NewReviewServiceClient(conn)
			if out == "csv" {
				body, err := client.GetReviewReportCSV(cmd.Context(), &mandatev1.GetReviewReportCSVRequest{Principal: req.GetPrincipal(), Since: req.GetSince()})
				if err != nil {
					return err
				}
				_, err = cmd.OutOrStdout().Write(body.GetData())
				return err
			}
			resp, err := client.GetReviewReport(cmd.Context(), &req)
			if err != nil {
				return err
			}
			if out == "json" {
				return printJSON(cmd, resp)
			}
			w := cmd.OutOrStdout()
			for _, a := range resp.GetAgents() {
				ag := a.GetAgent()
				fmt.Fprintf(w, "agent:%s (%s) %s, task %s, chain %s\n", ag.GetId(), ag.GetName(), ag.GetStatus(), ag.GetTask(), strings.Join(ag.GetChain(), " > "))
				if wl := ag.GetWorkloadId(); wl != "" {
					fmt.Fprintf(w, "  workload    %s\n", wl)
				}
				for _, x := range a.GetCanReach() {
					fmt.Fprintf(w, "  can reach   %s %s until %s\n", x.GetPermission(), x.GetResource(), x.GetValidUntil().AsTime().Format(time.RFC3339))
				}
				for _, u := range a.GetUsed() {
					fmt.Fprintf(w, "  used        %s\n", u)
				}
				for _, g := range a.GetUnusedGrants() {
					fmt.Fprintf(w, "  never used  %s %s (grant %s held by %s)\n", g.GetPermission(), g.GetResource(), g.GetId(), g.GetHolder())
				}
				for _, d := range a.GetDenials() {
					fmt.Fprintf(w, "  denied      %s %s: %s at %s\n", d.GetPermission(), d.GetResource(), d.GetReasonCode(), d.GetTime().AsTime().Format(time.RFC3339))
				}
			}
			return nil
		},
	}
	cf.register(report)
	report.Flags().StringVar(&req.Principal, "principal", "", "user:<id>; default every agent")
	report.Flags().StringVar(&req.Since, "since", "30d", "window: duration back from now or RFC 3339 time")
	report.Flags().StringVarP(&out, "output", "o", "table", "table, json or csv")
	cmd.AddCommand(report)
	return cmd
}
