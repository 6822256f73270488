package main

import (
	"encoding/json"
	"fmt"
	"os"

	"github.com/spf13/cobra"
	"google.golang.org/protobuf/types/known/structpb"

	mandatev1 "github.com/mandate-dev/mandate/proto/mandate/v1"
)

func checkCmd() *cobra.Command {
	var cf clientFlags
	var reqCtx, correlationID, reason, output string
	cmd := &cobra.Command{
		Use:   "check SUBJECT PERMISSION RESOURCE",
		Short: "Ask whether SUBJECT may PERMISSION on RESOURCE; exits 0 on allow, 3 on deny",
		Args:  cobra.ExactArgs(3),
		RunE: func(cmd *cobra.Command, args []string) error {
			req := &mandatev1.CheckRequest{Subject: args[0], Permission: args[1], Resource: args[2], CorrelationId: correlationID, Reason: reason}
			if reqCtx != "" {
				var m map[string]any
				if err := json.Unmarshal([]byte(reqCtx), &m); err != nil {
					return fmt.Errorf("--context must be a JSON object: %w", err)
				}
				s, err := structpb.NewStruct(m)
				if err != nil {
					return fmt.Errorf("--context: %w", err)
				}
				req.Context = s
			}
			conn, err := cf.dial()
			if err != nil {
				return err
			}
			defer conn.Close()
			resp, err := mandatev1.NewCheckServiceClient(conn).Check(cmd.Context(), req)
			if err != nil {
				return err
			}
			if output == "json" {
				if err := printJSON(cmd, resp); err != nil {
					return err
				}
			} else {
				verdict := "DENY"
				if resp.GetAllowed() {
					verdict = "ALLOW"
				}
				fmt.Fprintf(cmd.OutOrStdout(), "%s %s (decision %s)\n", verdict, resp.GetReasonCode(), resp.GetDecisionId())
				if len(resp.GetChain()) > 0 {
					fmt.Fprintf(cmd.OutOrStdout(), "chain: %v\n", resp.GetChain())
				}
			}
			if !resp.GetAllowed() {
				os.Exit(3)
			}
			return nil
		},
	}
	cf.register(cmd)
	cmd.Flags().StringVar(&reqCtx, "context", "", "caveat context as a JSON object")
	cmd.Flags().StringVar(&correlationID, "correlation-id", "", "correlation id linking related actions")
	cmd.Flags().StringVar(&reason, "reason", "", "the agent's stated reasoning")
	cmd.Flags().StringVarP(&output, "output", "o", "text", "text or json")
	return cmd
}
