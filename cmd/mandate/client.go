package main

import (
	"bytes"
	"encoding/csv"
	"encoding/json"
	"fmt"
	"os"
	"strings"
	"text/tabwriter"

	"github.com/authzed/grpcutil"
	"github.com/spf13/cobra"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
)

// clientFlags are shared by the client commands.
type clientFlags struct {
	addr string
	key  string
}

func (c *clientFlags) register(cmd *cobra.Command) {
	cmd.Flags().StringVar(&c.addr, "addr", "127.0.0.1:50051", "mandate gRPC address")
	cmd.Flags().StringVar(&c.key, "key", "", "API key (or MANDATE_KEY)")
}

func (c *clientFlags) dial() (*grpc.ClientConn, error) {
	key := c.key
	if key == "" {
		key = os.Getenv("MANDATE_KEY")
	}
	if key == "" {
		return nil, fmt.Errorf("--key or MANDATE_KEY is required")
	}
	return grpc.NewClient(c.addr, grpc.WithTransportCredentials(insecure.NewCredentials()), grpcutil.WithInsecureBearerToken(key))
}

func printJSON(cmd *cobra.Command, m proto.Message) error {
	b, err := protojson.MarshalOptions{UseProtoNames: true}.Marshal(m)
	if err != nil {
		return err
	}
	// protojson varies its whitespace on purpose; scripts get stable output.
	var out bytes.Buffer
	if err := json.Indent(&out, b, "", "  "); err != nil {
		return err
	}
	fmt.Fprintln(cmd.OutOrStdout(), out.String())
	return nil
}

// emit prints m as JSON, rows as CSV, or rows as an aligned table.
func emit(cmd *cobra.Command, format string, m proto.Message, rows [][]string) error {
	switch format {
	case "json":
		return printJSON(cmd, m)
	case "csv":
		w := csv.NewWriter(cmd.OutOrStdout())
		if err := w.WriteAll(rows); err != nil {
			return err
		}
		return nil
	case "table":
		tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
		for _, r := range rows {
			fmt.Fprintln(tw, strings.Join(r, "\t"))
		}
		return tw.Flush()
	}
	return fmt.Errorf("-o must be table, json or csv, not %q", format)
}
