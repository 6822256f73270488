package authzen_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	v1 "github.com/authzed/authzed-go/proto/authzed/api/v1"
	"github.com/authzed/authzed-go/v1"
	"github.com/authzed/grpcutil"
	"github.com/authzed/spicedb/pkg/tuple"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/mandate-dev/mandate/internal/testenv"
	"github.com/mandate-dev/mandate/schema"
	"github.com/mandate-dev/mandate/server"
	"github.com/mandate-dev/mandate/service"
)

const spicedbKey = "authzen-test-spicedb-key"

// pdp is a running mandate with a fixture loaded, reached over real HTTP.
type pdp struct {
	t    *testing.T
	base string
}

// startPDP starts mandate on the embedded memory datastore, writes the
// default schema plus the fixture schemas through mandate's admin API, and
// writes the fixture relationships through SpiceDB's own API (the way an
// operator loads data with zed), because some carry caveats.
func startPDP(t *testing.T, schemaFiles []string, rels []string) *pdp {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	spiceAddr := l.Addr().String()
	_ = l.Close()
	cfg := server.Config{}
	cfg.Embedded.APIAddr, cfg.Embedded.APIKey = spiceAddr, spicedbKey
	cfg.Audit.SpoolPath = filepath.Join(t.TempDir(), "audit.spool")
	p := &pdp{t: t, base: testenv.Start(t, cfg).Base}

	src := schema.Default
	for _, f := range schemaFiles {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		src += "\n" + string(b)
	}
	if code, body := p.call("PUT", "/v1/schema", "Bearer "+testenv.Keys[service.RoleAdmin], "application/json", mustJSON(map[string]string{"schema": src}), nil); code != 200 {
		t.Fatalf("writing the fixture schema: %d %s", code, body)
	}
	if len(rels) > 0 {
		client, err := authzed.NewClient(spiceAddr, grpc.WithTransportCredentials(insecure.NewCredentials()), grpcutil.WithInsecureBearerToken(spicedbKey))
		if err != nil {
			t.Fatal(err)
		}
		defer client.Close()
		var updates []*v1.RelationshipUpdate
		for _, r := range rels {
			rel, err := tuple.ParseV1Rel(r)
			if err != nil {
				t.Fatalf("fixture relationship %q: %v", r, err)
			}
			updates = append(updates, &v1.RelationshipUpdate{Operation: v1.RelationshipUpdate_OPERATION_TOUCH, Relationship: rel})
		}
		wctx, wcancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer wcancel()
		if _, err := client.WriteRelationships(wctx, &v1.WriteRelationshipsRequest{Updates: updates}); err != nil {
			t.Fatalf("writing %d fixture relationships: %v", len(updates), err)
		}
	}
	return p
}

// call sends a request with the given Authorization header value (as is)
// and content type, and returns the status and raw body.
func (p *pdp) call(method, path, auth, contentType string, body []byte, hdr http.Header) (int, []byte) {
	p.t.Helper()
	code, raw, _ := p.callH(method, path, auth, contentType, body, hdr)
	return code, raw
}

func (p *pdp) callH(method, path, auth, contentType string, body []byte, hdr http.Header) (int, []byte, http.Header) {
	p.t.Helper()
	req, err := http.NewRequest(method, p.base+path, bytes.NewReader(body))
	if err != nil {
		p.t.Fatal(err)
	}
	if auth != "" {
		req.Header.Set("Authorization", auth)
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	for k, vs := range hdr {
		for _, v := range vs {
			req.Header.Add(k, v)
		}
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		p.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, raw, resp.Header
}

// authzen posts a JSON body to an AuthZEN endpoint with a key of role, the
// way the public harness does: the key verbatim as the Authorization header.
func (p *pdp) authzen(path string, role service.Role, body any) (int, []byte) {
	p.t.Helper()
	return p.call("POST", path, testenv.Keys[role], "application/json", mustJSON(body), nil)
}

// native calls mandate's native REST API with a key of role, and requires a 200.
func (p *pdp) native(method, path string, role service.Role, body any) map[string]any {
	p.t.Helper()
	var b []byte
	if body != nil {
		b = mustJSON(body)
	}
	code, raw := p.call(method, path, "Bearer "+testenv.Keys[role], "application/json", b, nil)
	if code != 200 {
		p.t.Fatalf("%s %s: %d %s", method, path, code, raw)
	}
	var out map[string]any
	if err := json.Unmarshal(raw, &out); err != nil {
		p.t.Fatalf("%s %s: %v", method, path, err)
	}
	return out
}

func mustJSON(v any) []byte {
	if raw, ok := v.(json.RawMessage); ok {
		return raw
	}
	b, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	return b
}

func readJSON(t *testing.T, path string, v any) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, v); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
}

// readLines reads a relationships file: one per line, # comments.
func readLines(t *testing.T, path string) []string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line != "" && !strings.HasPrefix(line, "#") {
			out = append(out, line)
		}
	}
	return out
}
