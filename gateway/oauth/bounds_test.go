package oauth_test

import (
	"strings"
	"testing"

	"github.com/mandate-dev/mandate/engine/bounds"
	"github.com/mandate-dev/mandate/internal/testenv"
	"github.com/mandate-dev/mandate/server"
)

// TestTokenChecksCountForBounds: a check by the agent's own token proves
// that the agent acted, so it counts against the agent's bounds whichever key
// relays it; a check by bare subject from a key not marked
// counts_for_bounds never does.
func TestTokenChecksCountForBounds(t *testing.T) {
	e := start(t, server.Config{Bounds: server.BoundsConfig{Defaults: bounds.Limits{ChecksPerMinute: 2}}})
	untrusted := "Bearer " + testenv.UntrustedCheckerKey
	check := func(body map[string]any) string {
		t.Helper()
		code, _, raw := e.s.Call("POST", "/v1/check", untrusted, body)
		if code != 200 {
			t.Fatalf("check: %d %s", code, raw)
		}
		return string(raw)
	}
	byToken := e.mustExchange(testenv.ExchangeForm(e.idp.Login("alice"), "id_token", "write:repo:acme/api"))
	tok := byToken["access_token"].(string)
	bySubject := e.mustExchange(testenv.ExchangeForm(e.idp.Login("alice"), "id_token", "write:repo:acme/api"))
	for i := 0; i < 5; i++ {
		out := check(map[string]any{"subject": bySubject["agent"], "permission": "write", "resource": "repo:acme/api"})
		if !contains(out, `"ALLOWED"`) {
			t.Fatalf("bare-subject check %d from an untrusted key: %s; it must not count", i+1, out)
		}
	}
	for i := 1; i <= 3; i++ {
		out := check(checkBody(tok, "write", "repo:acme/api"))
		want := `"ALLOWED"`
		if i == 3 {
			want = `"BOUND_EXCEEDED"`
		}
		if !contains(out, want) {
			t.Fatalf("check %d by token from an untrusted key: %s, want %s", i, out, want)
		}
	}
}

func contains(s, sub string) bool { return strings.Contains(s, sub) }
