package main

import (
	"bytes"
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

// tokenFlags are shared by the token commands, which speak OAuth over HTTP.
type tokenFlags struct {
	url string
	key string
}

func (f *tokenFlags) register(cmd *cobra.Command) {
	cmd.Flags().StringVar(&f.url, "url", "http://127.0.0.1:8080", "mandate's REST base URL")
	cmd.Flags().StringVar(&f.key, "key", "", "API key (or MANDATE_KEY)")
}

// post sends a form and prints the JSON answer; a non-200 is an error
// carrying RFC 6749's error and description.
func (f *tokenFlags) post(cmd *cobra.Command, path string, form url.Values) error {
	key := f.key
	if key == "" {
		key = os.Getenv("MANDATE_KEY")
	}
	if key == "" {
		return fmt.Errorf("--key or MANDATE_KEY is required")
	}
	req, err := http.NewRequestWithContext(cmd.Context(), "POST", strings.TrimSuffix(f.url, "/")+path, strings.NewReader(form.Encode()))
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
	raw, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK {
		var e struct{ Error, ErrorDescription string }
		var m map[string]string
		if json.Unmarshal(raw, &m) == nil {
			e.Error, e.ErrorDescription = m["error"], m["error_description"]
		}
		if e.Error == "" {
			return fmt.Errorf("%s: HTTP %d", path, resp.StatusCode)
		}
		return fmt.Errorf("%s: %s", e.Error, e.ErrorDescription)
	}
	var out bytes.Buffer
	if err := json.Indent(&out, raw, "", "  "); err != nil {
		return fmt.Errorf("%s: the answer is not JSON", path)
	}
	fmt.Fprintln(cmd.OutOrStdout(), strings.TrimSpace(out.String()))
	return nil
}

// readToken reads a token from a flag value, "-" for stdin.
func readToken(cmd *cobra.Command, v string) (string, error) {
	if v != "-" {
		return v, nil
	}
	b, err := io.ReadAll(io.LimitReader(cmd.InOrStdin(), 64<<10))
	return strings.TrimSpace(string(b)), err
}

func tokenCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "token", Short: "Exchange a human's or an agent's token for an agent token, and introspect tokens"}

	var ef tokenFlags
	var subject, subjectType, scope, description, taskTTL, agentName, grantTTL, ttl, resource string
	exchange := &cobra.Command{
		Use:   "exchange",
		Short: "RFC 8693 token exchange: a human's ID token starts a task; an agent token delegates (with --scope) or renews (without)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			tok, err := readToken(cmd, subject)
			if err != nil {
				return err
			}
			if tok == "" {
				return fmt.Errorf("--subject-token is required (\"-\" reads it from stdin)")
			}
			types := map[string]string{"id_token": "urn:ietf:params:oauth:token-type:id_token", "jwt": "urn:ietf:params:oauth:token-type:jwt"}
			t, ok := types[subjectType]
			if !ok {
				return fmt.Errorf("--subject-token-type: %q is not id_token or jwt", subjectType)
			}
			form := url.Values{"grant_type": {"urn:ietf:params:oauth:grant-type:token-exchange"}, "subject_token": {tok}, "subject_token_type": {t}}
			for k, v := range map[string]string{"scope": scope, "task_description": description, "task_ttl": taskTTL,
				"agent_name": agentName, "grant_ttl": grantTTL, "requested_token_ttl": ttl, "resource": resource} {
				if v != "" {
					form.Set(k, v)
				}
			}
			return ef.post(cmd, "/oauth2/token", form)
		},
	}
	ef.register(exchange)
	fl := exchange.Flags()
	fl.StringVar(&subject, "subject-token", "", "the human's ID token or the agent's mandate token (\"-\": stdin)")
	fl.StringVar(&subjectType, "subject-token-type", "id_token", "id_token (a human) or jwt (an agent's mandate token)")
	fl.StringVar(&scope, "scope", "", "space-separated permission:type:id items; empty with an agent token renews it")
	fl.StringVar(&description, "task-description", "", "what the task is for (a human's token only)")
	fl.StringVar(&taskTTL, "task-ttl", "", "task lifetime (default --max-task-ttl)")
	fl.StringVar(&agentName, "agent-name", "", "the new agent's name")
	fl.StringVar(&grantTTL, "grant-ttl", "", "the grants' lifetime (default --max-grant-ttl)")
	fl.StringVar(&ttl, "ttl", "", "the token's lifetime (default --token-ttl)")
	fl.StringVar(&resource, "resource", "", "the token's audience (RFC 8707)")

	var inf tokenFlags
	introspect := &cobra.Command{
		Use:   "introspect TOKEN",
		Short: "RFC 7662 introspection (checker or admin key): whether the token's agent can act now, read from the graph; \"-\" reads stdin",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			tok, err := readToken(cmd, args[0])
			if err != nil {
				return err
			}
			return inf.post(cmd, "/oauth2/introspect", url.Values{"token": {tok}})
		},
	}
	inf.register(introspect)
	cmd.AddCommand(exchange, introspect)
	return cmd
}
