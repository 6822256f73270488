package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"
)

func devCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "dev", Short: "Development helpers for a server started with --dev-idp"}
	var url_, key string
	login := &cobra.Command{
		Use:   "login USER",
		Short: "Print an ID token for USER from the development identity provider (mandate serve --dev-idp; operator or admin key)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if key == "" {
				key = os.Getenv("MANDATE_KEY")
			}
			if key == "" {
				return fmt.Errorf("--key or MANDATE_KEY is required")
			}
			req, err := http.NewRequestWithContext(cmd.Context(), "POST", strings.TrimSuffix(url_, "/")+"/dev-idp/login", strings.NewReader(url.Values{"user": {args[0]}}.Encode()))
			if err != nil {
				return fmt.Errorf("--url: %w", err)
			}
			req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
			req.Header.Set("Authorization", "Bearer "+key)
			resp, err := (&http.Client{Timeout: 30 * time.Second}).Do(req)
			if err != nil {
				return err
			}
			defer resp.Body.Close()
			var out map[string]string
			if err := json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(&out); err != nil {
				return fmt.Errorf("/dev-idp/login: HTTP %d (is the server started with --dev-idp?)", resp.StatusCode)
			}
			if resp.StatusCode != http.StatusOK {
				return fmt.Errorf("%s: %s", out["error"], out["error_description"])
			}
			fmt.Fprintln(cmd.ErrOrStderr(), "development identity provider: anyone can sign in as anyone")
			fmt.Fprintln(cmd.OutOrStdout(), out["id_token"])
			return nil
		},
	}
	login.Flags().StringVar(&url_, "url", "http://127.0.0.1:8080", "mandate's REST base URL")
	login.Flags().StringVar(&key, "key", "", "operator or admin key (or MANDATE_KEY)")
	cmd.AddCommand(login)
	return cmd
}
