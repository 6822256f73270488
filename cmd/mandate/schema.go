package main

import (
	"fmt"
	"os"

	"github.com/spf13/cobra"

	mandatev1 "github.com/mandate-dev/mandate/proto/mandate/v1"
)

func schemaCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "schema", Short: "Read or replace the schema"}
	var cf clientFlags
	apply := &cobra.Command{
		Use:   "apply FILE",
		Short: "Validate and write a schema file",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			src, err := os.ReadFile(args[0])
			if err != nil {
				return err
			}
			conn, err := cf.dial()
			if err != nil {
				return err
			}
			defer conn.Close()
			resp, err := mandatev1.NewSchemaServiceClient(conn).WriteSchema(cmd.Context(), &mandatev1.WriteSchemaRequest{Schema: string(src)})
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "schema written (consistency_token %s)\n", resp.GetConsistencyToken())
			return nil
		},
	}
	cf.register(apply)
	var rf clientFlags
	read := &cobra.Command{
		Use:   "read",
		Short: "Print the current schema",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			conn, err := rf.dial()
			if err != nil {
				return err
			}
			defer conn.Close()
			resp, err := mandatev1.NewSchemaServiceClient(conn).ReadSchema(cmd.Context(), &mandatev1.ReadSchemaRequest{})
			if err != nil {
				return err
			}
			fmt.Fprint(cmd.OutOrStdout(), resp.GetSchema())
			return nil
		},
	}
	rf.register(read)
	cmd.AddCommand(apply, read)
	return cmd
}
