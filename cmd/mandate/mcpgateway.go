package main

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"time"

	"github.com/spf13/cobra"

	"github.com/mandate-dev/mandate/client"
	"github.com/mandate-dev/mandate/client/mcpgateway"
)

// gatewayFlags are the flags of `mandate mcp-gateway`.
type gatewayFlags struct {
	clientFlags
	config, listen, publicURL, issuer string
	jwksURL, logLevel                 string
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
			key := envOr(f.key, "MANDATE_KEY")
			if key == "" {
				return errors.New("--key or MANDATE_KEY (a gateway key) is required")
			}
			if f.issuer == "" {
				return errors.New("--issuer (mandate's --public-url, the iss of agent tokens) is required")
			}
			ccfg := client.Config{Addr: f.addr, Key: key, Plaintext: !f.tls}
			// The JWKS is fetched over HTTPS with the same trust as --tls-ca.
			hc := &http.Client{Timeout: 5 * time.Second}
			if f.tls || f.tlsCA != "" {
				if ccfg.TLS, err = tlsConfig(f.tlsCA); err != nil {
					return err
				}
				tr := http.DefaultTransport.(*http.Transport).Clone()
				tr.TLSClientConfig = ccfg.TLS.Clone()
				hc.Transport = tr
				if !f.tls {
					ccfg.TLS = nil
				}
			}
			c, err := client.New(ccfg)
			if err != nil {
				return err
			}
			defer c.Close()
			cfg := mcpgateway.Config{File: file, Client: c, Listen: f.listen, PublicURL: f.publicURL, Issuer: f.issuer, JWKSURL: f.jwksURL, HTTPClient: hc, Log: log}
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
	fl.StringVar(&f.issuer, "issuer", "", "mandate's issuer, its --public-url: agent tokens must carry it as iss; named in the protected-resource metadata (required)")
	fl.StringVar(&f.jwksURL, "jwks-url", "", "mandate's signing keys (default <issuer>/.well-known/jwks.json)")
	fl.BoolVar(&f.tls, "tls", false, "reach mandate over TLS")
	fl.StringVar(&f.tlsCA, "tls-ca", "", "PEM CA bundle for --tls and an https JWKS (default: the system roots)")
	fl.StringVar(&f.logLevel, "log-level", "info", "slog level")
	return cmd
}

func envOr(v, env string) string {
	if v != "" {
		return v
	}
	return os.Getenv(env)
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
