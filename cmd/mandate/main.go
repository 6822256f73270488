// Command mandate is the mandate server and its command-line client.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/spf13/cobra"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := rootCmd().ExecuteContext(ctx); err != nil {
		// One line, whatever the error wraps, so a startup mistake reads at a glance.
		fmt.Fprintln(os.Stderr, "error:", strings.Join(strings.Fields(err.Error()), " "))
		os.Exit(1)
	}
}

func rootCmd() *cobra.Command {
	root := &cobra.Command{
		Use:           "mandate",
		Short:         "mandate is a policy decision point for AI agents, on SpiceDB",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.AddCommand(serveCmd(), migrateCmd(), schemaCmd(), checkCmd(), auditCmd(), agentsCmd(), principalsCmd(), explainCmd(), reviewCmd(), mcpGatewayCmd(), tokenCmd(), devCmd())
	return root
}
