package main

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"

	"github.com/mandate-dev/mandate/internal/testenv"
	"github.com/mandate-dev/mandate/server"
	"github.com/mandate-dev/mandate/service"
)

// runToken runs `mandate token ARGS` in process and returns its output and error.
func runToken(t *testing.T, stdin string, args ...string) (string, error) {
	t.Helper()
	cmd := tokenCmd()
	var out bytes.Buffer
	cmd.SetOut(&out)
	cmd.SetErr(&out)
	cmd.SetIn(strings.NewReader(stdin))
	cmd.SetArgs(args)
	err := cmd.Execute()
	return out.String(), err
}

func TestTokenCommands(t *testing.T) {
	idp := testenv.StartIdP(t)
	s := testenv.Start(t, testenv.WithIdP(server.Config{}, idp))
	s.OK("POST", "/v1/relationships:write", service.RoleAdmin, map[string]any{"updates": []map[string]string{
		{"operation": "TOUCH", "relationship": "repo:acme/api#writer@user:alice"}}})
	op, checker := testenv.Keys[service.RoleOperator], testenv.Keys[service.RoleChecker]

	out, err := runToken(t, idp.Login("alice"), "exchange", "--url", s.Base, "--key", op, "--subject-token", "-", "--scope", "write:repo:acme/api", "--task-description", "fix the build")
	if err != nil {
		t.Fatalf("exchange: %v %s", err, out)
	}
	var tok map[string]any
	if err := json.Unmarshal([]byte(out), &tok); err != nil || tok["access_token"] == nil {
		t.Fatalf("exchange output: %s", out)
	}
	out, err = runToken(t, "", "introspect", "--url", s.Base, "--key", checker, tok["access_token"].(string))
	if err != nil || !strings.Contains(out, `"active": true`) {
		t.Fatalf("introspect: %v %s", err, out)
	}
	_, err = runToken(t, "", "exchange", "--url", s.Base, "--key", op, "--subject-token", tok["access_token"].(string), "--subject-token-type", "jwt", "--scope", "read:repo:acme/other")
	if err == nil || !strings.Contains(err.Error(), "invalid_scope") {
		t.Fatalf("a wider delegation: %v", err)
	}
}
