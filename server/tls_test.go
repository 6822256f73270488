package server_test

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mandate-dev/mandate/client"
	"github.com/mandate-dev/mandate/internal/testenv"
	"github.com/mandate-dev/mandate/server"
	"github.com/mandate-dev/mandate/service"
)

// TestMutualTLS: both ports serve TLS; a client certificate that chains to
// --client-ca authenticates by the keys file's spiffe_id or dns_name entry
// (no key needed), an unmapped one gets 401, one from another CA cannot
// connect, and keys keep working. A rotated server certificate is served
// without a restart.
func TestMutualTLS(t *testing.T) {
	ca := testenv.NewCA(t, "trust")
	serverLeaf := ca.Issue(t, "server", true, nil)
	const svid = "spiffe://acme.internal/ns/payments/sa/api"
	payments := ca.Issue(t, "payments", false, nil, svid)
	reviewer := ca.Issue(t, "auditor", false, []string{"auditor.acme.internal"})
	stranger := ca.Issue(t, "stranger", false, nil, "spiffe://acme.internal/ns/other/sa/x")
	rogue := testenv.NewCA(t, "rogue").Issue(t, "rogue", false, nil, svid)

	sum := sha256.Sum256([]byte(testenv.Keys[service.RoleAdmin]))
	keys := filepath.Join(t.TempDir(), "keys.yaml")
	body := fmt.Sprintf("keys:\n  - {name: admin, role: admin, sha256: %s}\n  - {name: payments-api, role: checker, spiffe_id: %q}\n  - {name: auditor, role: reviewer, dns_name: auditor.acme.internal}\n", hex.EncodeToString(sum[:]), svid)
	if err := os.WriteFile(keys, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	srv := testenv.Start(t, server.Config{KeysFile: keys, TLS: server.TLSConfig{CertFile: serverLeaf.CertFile, KeyFile: serverLeaf.KeyFile, ClientCAFile: ca.File}})

	call := func(cert *tls.Certificate, key, method, path, body string) (int, error) {
		cfg := &tls.Config{RootCAs: ca.Pool()}
		if cert != nil {
			cfg.Certificates = []tls.Certificate{*cert}
		}
		c := &http.Client{Transport: &http.Transport{TLSClientConfig: cfg}}
		req, _ := http.NewRequest(method, srv.Base+path, strings.NewReader(body))
		if key != "" {
			req.Header.Set("Authorization", "Bearer "+key)
		}
		resp, err := c.Do(req)
		if err != nil {
			return 0, err
		}
		defer resp.Body.Close()
		_, _ = io.ReadAll(resp.Body)
		return resp.StatusCode, nil
	}
	check := `{"subject":"user:alice","permission":"read","resource":"repo:acme/api"}`
	for _, c := range []struct {
		name         string
		cert         *tls.Certificate
		key          string
		method, path string
		want         int
	}{
		{"key over TLS", nil, testenv.Keys[service.RoleAdmin], "POST", "/v1/check", 200},
		{"SVID, no key", &payments.TLS, "", "POST", "/v1/check", 200},
		{"SVID, role too small", &payments.TLS, "", "GET", "/v1/audit", 403},
		{"DNS name, no key", &reviewer.TLS, "", "GET", "/v1/audit", 200},
		{"unmapped certificate", &stranger.TLS, "", "POST", "/v1/check", 401},
		{"no certificate, no key", nil, "", "POST", "/v1/check", 401},
		{"a key wins over a certificate", &payments.TLS, testenv.Keys[service.RoleAdmin], "GET", "/v1/audit", 200},
	} {
		code, err := call(c.cert, c.key, c.method, c.path, check)
		if err != nil || code != c.want {
			t.Errorf("%s: %d %v, want %d", c.name, code, err, c.want)
		}
	}
	// Without --public-url, the published URLs name https when mandate serves TLS.
	meta, err := (&http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: ca.Pool()}}}).Get(srv.Base + "/.well-known/authzen-configuration")
	if err != nil {
		t.Fatal(err)
	}
	mb, _ := io.ReadAll(meta.Body)
	meta.Body.Close()
	if !strings.Contains(string(mb), `"https://`) || strings.Contains(string(mb), `"http://`) {
		t.Errorf("the AuthZEN metadata over TLS names a plaintext URL: %s", mb)
	}
	// A certificate from another CA is not sent (it matches none of the
	// server's acceptable CAs) or, if sent, fails the handshake: no access.
	if code, err := call(&rogue.TLS, "", "POST", "/v1/check", check); err == nil && code != 401 {
		t.Errorf("a certificate from another CA: %d, want 401 or a failed handshake", code)
	}
	rogueForced := &tls.Config{RootCAs: ca.Pool(), GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return &rogue.TLS, nil }}
	if conn, err := tls.Dial("tcp", strings.TrimPrefix(srv.Base, "https://"), rogueForced); err == nil {
		// TLS 1.3 reports the client certificate's rejection on the first read.
		_, _ = conn.Write([]byte("GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"))
		_, rerr := conn.Read(make([]byte, 1))
		conn.Close()
		if rerr == nil {
			t.Error("a connection presenting a certificate from another CA was served")
		}
	}

	// gRPC, through the Go client, with the SVID and no key.
	grpcClient, err := client.New(client.Config{Addr: srv.Srv.GRPCAddr(), TLS: &tls.Config{RootCAs: ca.Pool(), Certificates: []tls.Certificate{payments.TLS}}})
	if err != nil {
		t.Fatal(err)
	}
	defer grpcClient.Close()
	if _, err := grpcClient.Check(context.Background(), client.Request{Subject: "user:alice", Permission: "read", Resource: "repo:acme/api"}); err != nil {
		t.Fatalf("gRPC check with an SVID: %v", err)
	}

	// Rotation: new files under the same names are served without a restart.
	rotated := ca.Issue(t, "server-rotated", true, nil)
	for _, p := range [][2]string{{rotated.CertFile, serverLeaf.CertFile}, {rotated.KeyFile, serverLeaf.KeyFile}} {
		b, err := os.ReadFile(p[0])
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p[1], b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		conn, err := tls.Dial("tcp", strings.TrimPrefix(srv.Base, "https://"), &tls.Config{RootCAs: ca.Pool()})
		if err == nil {
			cn := conn.ConnectionState().PeerCertificates[0].Subject.CommonName
			conn.Close()
			if cn == "server-rotated" {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatal("the rotated certificate was never served")
		}
		time.Sleep(200 * time.Millisecond)
	}
}
