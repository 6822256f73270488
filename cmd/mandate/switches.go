package main

import (
	"context"
	"fmt"
	"strings"

	"github.com/spf13/cobra"
	"google.golang.org/protobuf/proto"

	mandatev1 "github.com/mandate-dev/mandate/proto/mandate/v1"
)

// switchCmd is one kill-switch command: it calls the AgentService and prints
// what changed.
func switchCmd(use, short string, args cobra.PositionalArgs, call func(ctx context.Context, c mandatev1.AgentServiceClient, args []string, reason string) (proto.Message, string, error)) *cobra.Command {
	var f clientFlags
	var reason, out string
	cmd := &cobra.Command{
		Use: use, Short: short, Args: args,
		RunE: func(cmd *cobra.Command, args []string) error {
			conn, err := f.dial()
			if err != nil {
				return err
			}
			defer conn.Close()
			resp, line, err := call(cmd.Context(), mandatev1.NewAgentServiceClient(conn), args, reason)
			if err != nil {
				return err
			}
			if out == "json" {
				return printJSON(cmd, resp)
			}
			fmt.Fprintln(cmd.OutOrStdout(), line)
			return nil
		},
	}
	f.register(cmd)
	cmd.Flags().StringVar(&reason, "reason", "", "why, for the audit trail")
	cmd.Flags().StringVarP(&out, "output", "o", "text", "text or json")
	return cmd
}

func principalsCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "principals", Short: "Switch off, or back on, every agent acting for one human"}
	id := func(arg string) string { return strings.TrimPrefix(arg, "user:") }
	cmd.AddCommand(
		switchCmd("suspend-agents USER", "Suspend every agent acting for a human, including agents created while it lasts", cobra.ExactArgs(1),
			func(ctx context.Context, c mandatev1.AgentServiceClient, args []string, reason string) (proto.Message, string, error) {
				r, err := c.SuspendPrincipalAgents(ctx, &mandatev1.SuspendPrincipalAgentsRequest{Id: id(args[0]), Reason: reason})
				if err != nil {
					return nil, "", err
				}
				return r, fmt.Sprintf("every agent of %s is suspended (already before: %v)", r.GetPrincipal(), r.GetAlreadySuspended()), nil
			}),
		switchCmd("resume-agents USER", "Undo suspend-agents", cobra.ExactArgs(1),
			func(ctx context.Context, c mandatev1.AgentServiceClient, args []string, reason string) (proto.Message, string, error) {
				r, err := c.ResumePrincipalAgents(ctx, &mandatev1.ResumePrincipalAgentsRequest{Id: id(args[0]), Reason: reason})
				if err != nil {
					return nil, "", err
				}
				return r, fmt.Sprintf("the agents of %s are resumed (were suspended: %v)", r.GetPrincipal(), r.GetWasSuspended()), nil
			}),
	)
	return cmd
}

func freezeCmds() []*cobra.Command {
	return []*cobra.Command{
		switchCmd("freeze-all", "Deny every agent check at once (admin)", cobra.NoArgs,
			func(ctx context.Context, c mandatev1.AgentServiceClient, _ []string, reason string) (proto.Message, string, error) {
				r, err := c.FreezeAllAgents(ctx, &mandatev1.FreezeAllAgentsRequest{Reason: reason})
				if err != nil {
					return nil, "", err
				}
				return r, fmt.Sprintf("every agent is frozen (already before: %v)", r.GetAlreadyFrozen()), nil
			}),
		switchCmd("unfreeze-all", "Lift the freeze (admin)", cobra.NoArgs,
			func(ctx context.Context, c mandatev1.AgentServiceClient, _ []string, reason string) (proto.Message, string, error) {
				r, err := c.UnfreezeAllAgents(ctx, &mandatev1.UnfreezeAllAgentsRequest{Reason: reason})
				if err != nil {
					return nil, "", err
				}
				return r, fmt.Sprintf("the freeze is lifted (was frozen: %v)", r.GetWasFrozen()), nil
			}),
	}
}
