// Command mandate is the mandate server and its command-line client.
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/mandate-dev/mandate/server"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := rootCmd().ExecuteContext(ctx); err != nil {
		// One line, whatever the error wraps, so a startup mistake reads at a glance.
		fmt.Fprintln(os.Stderr, "error:", strings.Join(strings.Fields(err.Error()), " "))
		os.Exit(exitStatus(err))
	}
}

// exitStatus is 2 for a mistake in the flags or the files they name, so a
// supervisor can tell "fix the configuration" from "try again", and 1 for
// everything else.
func exitStatus(err error) int {
	var cfg *server.ConfigError
	var usage usageError
	if errors.As(err, &cfg) || errors.As(err, &usage) {
		return 2
	}
	return 1
}

// usageError is a flag or argument cobra could not parse.
type usageError struct{ error }

func (e usageError) Unwrap() error { return e.error }

func rootCmd() *cobra.Command {
	root := &cobra.Command{
		Use:           "mandate",
		Short:         "mandate is a policy decision point for AI agents, on SpiceDB",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return usageError{err} })
	root.AddCommand(serveCmd(), migrateCmd(), schemaCmd(), checkCmd(), auditCmd(), agentsCmd(), principalsCmd(), accessRequestsCmd(), explainCmd(), reviewCmd(), mcpGatewayCmd(), tokenCmd(), devCmd())
	return root
}
