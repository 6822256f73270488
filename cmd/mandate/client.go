package main

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"encoding/csv"
	"encoding/json"
	"fmt"
	"os"
	"strings"
	"text/tabwriter"

	"github.com/authzed/grpcutil"
	"github.com/spf13/cobra"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
)

// clientFlags are shared by the client commands.
type clientFlags struct {
	addr string
	key  string
	// tlsCA, tlsCert and tlsKey dial with TLS, and with a client certificate.
	tlsCA, tlsCert, tlsKey string
}

func (c *clientFlags) register(cmd *cobra.Command) {
	c.registerAddrKey(cmd)
	cmd.Flags().StringVar(&c.tlsCA, "tls-ca", "", "dial with TLS, trusting these CAs (PEM) for mandate's certificate")
	cmd.Flags().StringVar(&c.tlsCert, "tls-cert", "", "client certificate (PEM, e.g. an X.509-SVID) for mutual TLS; needs --tls-ca and --tls-key")
	cmd.Flags().StringVar(&c.tlsKey, "tls-key", "", "the private key of --tls-cert (PEM)")
}

// registerAddrKey registers --addr and --key alone, for commands (the MCP
// gateway) that set up TLS their own way.
func (c *clientFlags) registerAddrKey(cmd *cobra.Command) {
	cmd.Flags().StringVar(&c.addr, "addr", "127.0.0.1:50051", "mandate gRPC address")
	cmd.Flags().StringVar(&c.key, "key", "", "API key (or MANDATE_KEY); with --tls-cert, the certificate can stand in for it")
}

func (c *clientFlags) dial() (*grpc.ClientConn, error) {
	key := c.key
	if key == "" {
		key = os.Getenv("MANDATE_KEY")
	}
	if c.tlsCA == "" {
		if c.tlsCert != "" || c.tlsKey != "" {
			return nil, fmt.Errorf("--tls-cert and --tls-key need --tls-ca")
		}
		if key == "" {
			return nil, fmt.Errorf("--key or MANDATE_KEY is required")
		}
		return grpc.NewClient(c.addr, grpc.WithTransportCredentials(insecure.NewCredentials()), grpcutil.WithInsecureBearerToken(key))
	}
	pem, err := os.ReadFile(c.tlsCA)
	if err != nil {
		return nil, fmt.Errorf("--tls-ca: %w", err)
	}
	cfg := &tls.Config{RootCAs: x509.NewCertPool(), MinVersion: tls.VersionTLS12}
	if !cfg.RootCAs.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("--tls-ca %s: no PEM certificate in it", c.tlsCA)
	}
	if (c.tlsCert == "") != (c.tlsKey == "") {
		return nil, fmt.Errorf("--tls-cert and --tls-key go together")
	}
	if c.tlsCert != "" {
		cert, err := tls.LoadX509KeyPair(c.tlsCert, c.tlsKey)
		if err != nil {
			return nil, fmt.Errorf("--tls-cert, --tls-key: %w", err)
		}
		cfg.Certificates = []tls.Certificate{cert}
	} else if key == "" {
		return nil, fmt.Errorf("--key, MANDATE_KEY or --tls-cert is required")
	}
	opts := []grpc.DialOption{grpc.WithTransportCredentials(credentials.NewTLS(cfg))}
	if key != "" {
		opts = append(opts, grpcutil.WithBearerToken(key))
	}
	return grpc.NewClient(c.addr, opts...)
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

// allPages reads a paginated list to its end: next gets each page's token
// ("" first) and returns that page's items and the next token. With limit >
// 0 it stops once limit items are read, and returns at most limit.
func allPages[T any](limit int, next func(token string) ([]T, string, error)) ([]T, error) {
	var all []T
	token := ""
	for {
		items, nextToken, err := next(token)
		if err != nil {
			return nil, err
		}
		all = append(all, items...)
		if nextToken == "" || (limit > 0 && len(all) >= limit) {
			break
		}
		token = nextToken
	}
	if limit > 0 && len(all) > limit {
		all = all[:limit]
	}
	return all, nil
}
