package main

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"

	"github.com/mandate-dev/mandate/bench"
	"github.com/mandate-dev/mandate/engine/embedded"
	mandatev1 "github.com/mandate-dev/mandate/proto/mandate/v1"
	"github.com/mandate-dev/mandate/server"
)

// tokenScope is the number of hot resources a bench token's scope names.
const tokenScope = 50

// benchIdP is a minimal OIDC issuer for the token scenarios: discovery,
// JWKS, and ID tokens for alice.
type benchIdP struct {
	url    string
	signer jose.Signer
	stop   func()
}

func startIdP() *benchIdP {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	must(err)
	signer, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.ES256, Key: jose.JSONWebKey{Key: key, KeyID: "bench"}}, nil)
	must(err)
	p := &benchIdP{signer: signer}
	mux := http.NewServeMux()
	srv := httptest.NewServer(mux)
	p.url, p.stop = srv.URL, srv.Close
	mux.HandleFunc("GET /.well-known/openid-configuration", func(w http.ResponseWriter, _ *http.Request) {
		_ = json.NewEncoder(w).Encode(map[string]any{"issuer": p.url, "jwks_uri": p.url + "/jwks", "authorization_endpoint": p.url + "/authorize",
			"id_token_signing_alg_values_supported": []string{"ES256"}})
	})
	mux.HandleFunc("GET /jwks", func(w http.ResponseWriter, _ *http.Request) {
		_ = json.NewEncoder(w).Encode(jose.JSONWebKeySet{Keys: []jose.JSONWebKey{{Key: &key.PublicKey, KeyID: "bench", Algorithm: "ES256", Use: "sig"}}})
	})
	return p
}

func (p *benchIdP) login(user string) string {
	now := time.Now()
	raw, err := jwt.Signed(p.signer).Claims(map[string]any{"iss": p.url, "sub": user, "aud": "mandate-bench", "iat": now.Unix(), "exp": now.Add(time.Hour).Unix()}).Serialize()
	must(err)
	return raw
}

// exchangeOp posts one token exchange as the operator and requires a token.
func exchangeOp(client *http.Client, base string, form func(w, i int) url.Values) bench.Op {
	return func(ctx context.Context, w, i int) error {
		req, _ := http.NewRequestWithContext(ctx, "POST", base+"/oauth2/token", strings.NewReader(form(w, i).Encode()))
		req.Header.Set("Authorization", "Bearer "+operatorKey)
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		resp, err := client.Do(req)
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		var out map[string]any
		if err := json.NewDecoder(resp.Body).Decode(&out); err != nil || resp.StatusCode != 200 || out["access_token"] == nil {
			return fmt.Errorf("exchange: %d %v %v", resp.StatusCode, out["error_description"], err)
		}
		return nil
	}
}

func tokenServer(ctx context.Context, keys string, idp *benchIdP, engineName, uri string) (*server.Server, func()) {
	return start(ctx, server.Config{KeysFile: keys, Embedded: embedded.Config{Engine: engineName, URI: uri},
		Credentials: server.CredentialsConfig{OIDCIssuers: []string{idp.url}, OIDCAudience: "mandate-bench", RequireHumanToken: "off"}})
}

// tokenCost measures (1) a token exchange (task + agent + one grant +
// signing) on memory and on Postgres, one in flight, and (2) a cached check
// by subject_token against the same check by subject, interleaved on one
// warm cache.
func tokenCost(ctx context.Context, dsn, keys string, warmup, d time.Duration) []bench.Result {
	idp := startIdP()
	defer idp.stop()
	human := idp.login("alice")
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64}}
	form := func(w, i int) url.Values {
		return url.Values{"grant_type": {"urn:ietf:params:oauth:grant-type:token-exchange"}, "subject_token": {human},
			"subject_token_type": {"urn:ietf:params:oauth:token-type:id_token"}, "scope": {fmt.Sprintf("read:repo:bench/hot%d", (w*7919+i)%hotSet)}}
	}
	var out []bench.Result
	backends := []struct{ name, engine, uri string }{{"memory", "memory", ""}}
	if dsn != "" {
		uri, drop := freshDB(ctx, dsn)
		defer drop()
		must(embedded.Migrate(ctx, "postgres", uri))
		backends = append(backends, struct{ name, engine, uri string }{"Postgres", "postgres", uri})
	}
	for _, b := range backends {
		srv, stop := tokenServer(ctx, keys, idp, b.engine, b.uri)
		seedHotSet(ctx, srv, dial(srv.GRPCAddr(), operatorKey))
		r := bench.Closed(ctx, "token-exchange-"+strings.ToLower(b.name), 1, warmup, d, exchangeOp(client, "http://"+srv.HTTPAddr(), form))
		r.Description = "token exchange (verify the human's ID token, task + agent + 1 grant in one write, sign), " + b.name
		out = append(out, r)
		stop()
	}

	srv, stop := tokenServer(ctx, keys, idp, "memory", "")
	defer stop()
	seedHotSet(ctx, srv, dial(srv.GRPCAddr(), operatorKey))
	scope := make([]string, tokenScope)
	for i := range scope {
		scope[i] = fmt.Sprintf("read:repo:bench/hot%d", i)
	}
	f := form(0, 0)
	f.Set("scope", strings.Join(scope, " "))
	tok := exchangeForToken(ctx, client, "http://"+srv.HTTPAddr(), f)
	checks := mandatev1.NewCheckServiceClient(dial(srv.GRPCAddr(), checkerKey))
	res := func(w, i int) string { return fmt.Sprintf("repo:bench/hot%d", (w*7919+i)%tokenScope) }
	bySubject := func(ctx context.Context, w, i int) error {
		return allowed(checks.Check(ctx, &mandatev1.CheckRequest{Subject: tok.agent, Permission: "read", Resource: res(w, i)}))
	}
	byToken := func(ctx context.Context, w, i int) error {
		return allowed(checks.Check(ctx, &mandatev1.CheckRequest{SubjectToken: tok.token, Permission: "read", Resource: res(w, i)}))
	}
	for _, n := range []int{1, 8} {
		a, b := interleaved(ctx, "check-by-subject", "check-by-token", n, warmup, d, bySubject, byToken)
		a.Description = "cached gRPC check by subject (the agent of the token), interleaved with the next"
		b.Description = "cached gRPC check by subject_token, the same questions, interleaved with the previous"
		out = append(out, a, b)
	}
	return out
}

type agentToken struct{ agent, token string }

func exchangeForToken(ctx context.Context, client *http.Client, base string, form url.Values) agentToken {
	req, _ := http.NewRequestWithContext(ctx, "POST", base+"/oauth2/token", strings.NewReader(form.Encode()))
	req.Header.Set("Authorization", "Bearer "+operatorKey)
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	resp, err := client.Do(req)
	must(err)
	defer resp.Body.Close()
	var out map[string]any
	must(json.NewDecoder(resp.Body).Decode(&out))
	if resp.StatusCode != 200 {
		must(fmt.Errorf("exchange: %d %v", resp.StatusCode, out))
	}
	return agentToken{agent: out["agent"].(string), token: out["access_token"].(string)}
}

// tokenRatio is the p50 of a check by token over a check by subject.
func tokenRatio(rs []bench.Result) []string {
	var lines []string
	for _, n := range []int{1, 8} {
		s, t := find(rs, "check-by-subject", n), find(rs, "check-by-token", n)
		if s != nil && t != nil && s.P50ms > 0 {
			lines = append(lines, fmt.Sprintf("check by subject_token / by subject, p50 at %d in flight = %.2f (target <= 1.3)", n, t.P50ms/s.P50ms))
		}
	}
	return lines
}
