package main

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"

	"github.com/spf13/cobra"

	"github.com/mandate-dev/mandate/client"
	"github.com/mandate-dev/mandate/client/mcpgateway"
)

// gatewayFlags are the flags of `mandate mcp-gateway`.
type gatewayFlags struct {
	clientFlags
	config, listen, publicURL, issuer string
	reviewKey, secretFile, logLevel   string
	tls                               bool
	tlsCA                             string
}

func mcpGatewayCmd() *cobra.Command {
	var f gatewayFlags
	cmd := &cobra.Command{
		Use:   "mcp-gateway",
		Short: "Serve MCP at /mcp, checking every tool call, resource read and prompt with mandate before forwarding it upstream",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var lvl slog.Level
			if err := lvl.UnmarshalText([]byte(f.logLevel)); err != nil {
				return fmt.Errorf("--log-level: %w", err)
			}
			log := slog.New(slog.NewJSONHandler(os.Stderr, &slog.HandlerOptions{Level: lvl}))
			file, err := mcpgateway.LoadFile(f.config)
			if err != nil {
				return err
			}
			secret, err := gatewaySecret(f.secretFile)
			if err != nil {
				return err
			}
			key := envOr(f.key, "MANDATE_KEY")
			if key == "" {
				return errors.New("--key or MANDATE_KEY (a checker key) is required")
			}
			ccfg := client.Config{Addr: f.addr, Key: key, Plaintext: !f.tls}
			if f.tls {
				if ccfg.TLS, err = tlsConfig(f.tlsCA); err != nil {
					return err
				}
			}
			checker, err := client.New(ccfg)
			if err != nil {
				return err
			}
			defer checker.Close()
			cfg := mcpgateway.Config{File: file, Checker: checker, Secret: secret, Listen: f.listen, PublicURL: f.publicURL, Issuer: f.issuer, Log: log}
			if rk := envOr(f.reviewKey, "MANDATE_REVIEW_KEY"); rk != "" {
				ccfg.Key = rk
				reviewer, err := client.New(ccfg)
				if err != nil {
					return err
				}
				defer reviewer.Close()
				cfg.Reviewer = reviewer
			} else {
				log.Warn("no --review-key: templated tools are left out of tools/list and denies carry no explanation")
			}
			gw, err := cfg.Complete(cmd.Context())
			if err != nil {
				return err
			}
			return gw.Run(cmd.Context())
		},
	}
	f.registerAddrKey(cmd)
	fl := cmd.Flags()
	fl.StringVar(&f.config, "config", "mcp-gateway.yaml", "YAML file of upstreams and rules")
	fl.StringVar(&f.listen, "listen", "127.0.0.1:8787", "address to serve MCP (Streamable HTTP at /mcp) on")
	fl.StringVar(&f.publicURL, "public-url", "", "the gateway's base URL as agents reach it (default http://<listen>)")
	fl.StringVar(&f.issuer, "issuer", "", "mandate's authorization server, named in the protected-resource metadata")
	fl.StringVar(&f.reviewKey, "review-key", "", "reviewer key, to list agents' grants and explain denies (or MANDATE_REVIEW_KEY)")
	fl.StringVar(&f.secretFile, "secret-file", "", "file holding the gateway secret that signs agent tokens (or MANDATE_GATEWAY_SECRET)")
	fl.BoolVar(&f.tls, "tls", false, "reach mandate over TLS")
	fl.StringVar(&f.tlsCA, "tls-ca", "", "PEM CA bundle for --tls (default: the system roots)")
	fl.StringVar(&f.logLevel, "log-level", "info", "slog level")

	var tokenSecret string
	token := &cobra.Command{
		Use:   "token AGENT_ID",
		Short: "Print the transitional bearer token for an agent (agent id + gateway secret)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			secret, err := gatewaySecret(tokenSecret)
			if err != nil {
				return err
			}
			t, err := mcpgateway.MintToken(secret, args[0])
			if err != nil {
				return err
			}
			fmt.Fprintln(cmd.OutOrStdout(), t)
			return nil
		},
	}
	token.Flags().StringVar(&tokenSecret, "secret-file", "", "file holding the gateway secret (or MANDATE_GATEWAY_SECRET)")
	cmd.AddCommand(token)
	return cmd
}

func envOr(v, env string) string {
	if v != "" {
		return v
	}
	return os.Getenv(env)
}

// gatewaySecret reads the secret from a file, else MANDATE_GATEWAY_SECRET.
func gatewaySecret(path string) ([]byte, error) {
	var secret []byte
	if path != "" {
		b, err := os.ReadFile(path)
		if err != nil {
			return nil, fmt.Errorf("--secret-file: %w", err)
		}
		secret = []byte(strings.TrimSpace(string(b)))
	} else {
		secret = []byte(os.Getenv("MANDATE_GATEWAY_SECRET"))
	}
	if len(secret) == 0 {
		return nil, errors.New("--secret-file or MANDATE_GATEWAY_SECRET is required")
	}
	return secret, mcpgateway.ValidateSecret(secret)
}

func tlsConfig(caFile string) (*tls.Config, error) {
	cfg := &tls.Config{MinVersion: tls.VersionTLS12}
	if caFile == "" {
		return cfg, nil
	}
	pem, err := os.ReadFile(caFile)
	if err != nil {
		return nil, fmt.Errorf("--tls-ca: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("--tls-ca: %s holds no PEM certificate", caFile)
	}
	cfg.RootCAs = pool
	return cfg, nil
}
