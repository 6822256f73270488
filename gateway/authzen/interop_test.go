package authzen_test

import (
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"testing"

	"github.com/mandate-dev/mandate/gateway/authzen"
	"github.com/mandate-dev/mandate/schema"
	"github.com/mandate-dev/mandate/service"
)

// The public AuthZEN interop decision files (testdata, copied from the
// openid/authzen repository), replayed against a running mandate over HTTP and
// judged exactly as the public harnesses judge them:
//   - a single evaluation passes when `decision || false` equals the expected value;
//   - a batch passes when JSON.stringify(evaluations) equals JSON.stringify(expected),
//     so an extra key in any item fails it;
//   - a search passes when its results, sorted, stringify the same as the
//     expected results, sorted, so key order and extra keys matter.

type pip struct {
	ID    string   `json:"id"`
	Roles []string `json:"roles"`
}

// todoAndGatewayRelationships loads the Todo and gateway scenarios: users
// and roles from users-pip.json, todo owners from todos-referenced-by-tests.json,
// and the routes of the Todo API from its OpenAPI document.
func todoAndGatewayRelationships(t *testing.T) []string {
	var users map[string]pip
	readJSON(t, "testdata/todo/users-pip.json", &users)
	var owners map[string]string
	readJSON(t, "testdata/todo/todos-referenced-by-tests.json", &owners)
	var openapi struct {
		Paths map[string]json.RawMessage `json:"paths"`
	}
	readJSON(t, "testdata/gateway/todo-openapi.json", &openapi)

	enc := authzen.EncodeID
	rels := []string{"todo_app:todo#member@user:*", "gateway:main#anyone@identity:*"}
	pidOf := map[string]string{}
	for pid, u := range users {
		pidOf[u.ID] = pid
		rels = append(rels, "user_resource:"+enc(u.ID)+"#viewer@user:*")
		for _, role := range u.Roles {
			rels = append(rels, "todo_app:todo#"+role+"@user:"+enc(pid), "gateway:main#"+role+"@identity:"+enc(pid))
		}
	}
	for todo, email := range owners {
		pid, ok := pidOf[email]
		if !ok {
			t.Fatalf("todo %s: owner %s is not in users-pip.json", todo, email)
		}
		rels = append(rels, "todo:"+enc(todo)+"#app@todo_app:todo", "todo:"+enc(todo)+"#owner@user:"+enc(pid))
	}
	// "todo-1" is the id the suite uses for the todo list as a whole (reading
	// and creating todos). It is a todo of the app, with no owner.
	rels = append(rels, "todo:todo-1#app@todo_app:todo")
	for path := range openapi.Paths {
		rels = append(rels, "route:"+enc(path)+"#gateway@gateway:main")
	}
	return rels
}

// decisionCase is one case of a decision file. Expected stays raw, so that a
// batch can be compared as text.
type decisionCase struct {
	Request  json.RawMessage `json:"request"`
	Expected json.RawMessage `json:"expected"`
}

type decisionFile struct {
	Evaluation  []decisionCase `json:"evaluation"`
	Evaluations []decisionCase `json:"evaluations"`
}

func compact(t *testing.T, raw []byte) string {
	t.Helper()
	var b bytes.Buffer
	if err := json.Compact(&b, raw); err != nil {
		t.Fatalf("compacting %s: %v", raw, err)
	}
	return b.String()
}

// replayDecisions replays a decision file and returns how many cases passed.
func replayDecisions(t *testing.T, p *pdp, file string) (passed, total int) {
	var f decisionFile
	readJSON(t, file, &f)
	for i, c := range f.Evaluation {
		total++
		code, raw := p.authzen(authzen.PathEvaluation, service.RoleChecker, c.Request)
		var resp struct {
			Decision bool `json:"decision"`
		}
		_ = json.Unmarshal(raw, &resp)
		var want bool
		_ = json.Unmarshal(c.Expected, &want)
		if code != 200 || resp.Decision != want {
			t.Errorf("%s evaluation[%d] %s: got %d %s, want decision %v", file, i, c.Request, code, raw, want)
			continue
		}
		passed++
	}
	for i, c := range f.Evaluations {
		total++
		code, raw := p.authzen(authzen.PathEvaluations, service.RoleChecker, c.Request)
		var resp struct {
			Evaluations json.RawMessage `json:"evaluations"`
		}
		_ = json.Unmarshal(raw, &resp)
		got := "[]"
		if resp.Evaluations != nil {
			got = compact(t, resp.Evaluations)
		}
		if want := compact(t, c.Expected); code != 200 || got != want {
			t.Errorf("%s evaluations[%d] %s: got %d %s, want %s", file, i, c.Request, code, got, want)
			continue
		}
		passed++
	}
	return passed, total
}

func TestInteropTodoAndGateway(t *testing.T) {
	p := startPDP(t, []string{"testdata/todo/schema.zed", "testdata/gateway/schema.zed"}, todoAndGatewayRelationships(t))

	passed, total := replayDecisions(t, p, "testdata/todo/decisions-authorization-api-1_0-02.json")
	t.Logf("Todo (authorization-api-1_0-02): %d/%d", passed, total)
	if total != 43 || passed != total {
		t.Errorf("Todo: %d/%d passed, want 43/43", passed, total)
	}
	passed, total = replayDecisions(t, p, "testdata/gateway/decisions.json")
	t.Logf("API gateway: %d/%d", passed, total)
	if total != 25 || passed != total {
		t.Errorf("gateway: %d/%d passed, want 25/25", passed, total)
	}
}

// searchRelationships loads the search scenario from users.json and records.json.
func searchRelationships(t *testing.T) []string {
	var users []struct {
		ID, Role, Department string
	}
	readJSON(t, "testdata/search/users.json", &users)
	var records []struct {
		ID         int    `json:"id"`
		Department string `json:"department"`
		Owner      string `json:"owner"`
	}
	readJSON(t, "testdata/search/records.json", &records)
	enc := authzen.EncodeID
	var rels []string
	for _, u := range users {
		dept := "department:" + enc(u.Department)
		rels = append(rels, dept+"#member@user:"+enc(u.ID))
		if u.Role == "manager" {
			rels = append(rels, dept+"#manager@user:"+enc(u.ID), "company:main#manager@user:"+enc(u.ID))
		}
	}
	for _, r := range records {
		rec := "record:" + enc(fmt.Sprint(r.ID))
		rels = append(rels, rec+"#owner@user:"+enc(r.Owner), rec+"#department@department:"+enc(r.Department), rec+"#company@company:main")
	}
	return rels
}

// searchKey is how the public harness orders results: by type then id, or by name.
type searchKey struct {
	Type string `json:"type"`
	ID   string `json:"id"`
	Name string `json:"name"`
}

// sortedResults sorts raw result items the way the harness does and
// stringifies them, keeping each item's own key order.
func sortedResults(t *testing.T, items []json.RawMessage) string {
	t.Helper()
	keys := make([]searchKey, len(items))
	for i, it := range items {
		if err := json.Unmarshal(it, &keys[i]); err != nil {
			t.Fatalf("result %s: %v", it, err)
		}
	}
	idx := make([]int, len(items))
	for i := range idx {
		idx[i] = i
	}
	sort.SliceStable(idx, func(a, b int) bool {
		ka, kb := keys[idx[a]], keys[idx[b]]
		if ka.Type != "" {
			if ka.Type != kb.Type {
				return ka.Type < kb.Type
			}
			return ka.ID < kb.ID
		}
		return ka.Name < kb.Name
	})
	parts := make([]string, len(items))
	for i, j := range idx {
		parts[i] = compact(t, items[j])
	}
	return "[" + joinComma(parts) + "]"
}

func joinComma(s []string) string {
	var b bytes.Buffer
	for i, x := range s {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(x)
	}
	return b.String()
}

type searchResults struct {
	Results []json.RawMessage `json:"results"`
	Page    *struct {
		NextToken *string `json:"next_token"`
	} `json:"page"`
}

// replaySearch replays one search results file against one endpoint.
func replaySearch(t *testing.T, p *pdp, file, path string) (passed, total int) {
	var f decisionFile
	readJSON(t, file, &f)
	for i, c := range f.Evaluation {
		total++
		code, raw := p.authzen(path, service.RoleReviewer, c.Request)
		var got, want searchResults
		_ = json.Unmarshal(raw, &got)
		if err := json.Unmarshal(c.Expected, &want); err != nil {
			t.Fatal(err)
		}
		g, w := sortedResults(t, got.Results), sortedResults(t, want.Results)
		if code != 200 || g != w || got.Page == nil || got.Page.NextToken == nil || *got.Page.NextToken != "" {
			t.Errorf("%s[%d] %s: got %d %s, want results %s", file, i, c.Request, code, raw, w)
			continue
		}
		passed++
	}
	return passed, total
}

func TestInteropSearch(t *testing.T) {
	p := startPDP(t, []string{"testdata/search/schema.zed"}, searchRelationships(t))
	want := map[string]int{"subject": 60, "resource": 18, "action": 120}
	all, allTotal := 0, 0
	for _, kind := range []string{"subject", "resource", "action"} {
		passed, total := replaySearch(t, p, "testdata/search/"+kind+"/results.json", "/access/v1/search/"+kind)
		t.Logf("search %s: %d/%d", kind, passed, total)
		if total != want[kind] || passed != total {
			t.Errorf("search %s: %d/%d passed, want %d/%d", kind, passed, total, want[kind], want[kind])
		}
		all, allTotal = all+passed, allTotal+total
	}
	t.Logf("search: %d/%d", all, allTotal)
}

var fixturesOut = flag.String("fixtures-out", "", "write the interop fixtures (schema and relationships) to this directory, to load into a running mandate for the public harnesses")

// TestWriteFixtures writes, with -fixtures-out DIR, each interop scenario as
// a schema file for `mandate schema apply` and a body for
// POST /v1/relationships:write, so that the public Node harnesses can be
// pointed at a running mandate loaded with the same data as these tests.
func TestWriteFixtures(t *testing.T) {
	if *fixturesOut == "" {
		t.Skip("set -fixtures-out DIR to write the fixtures")
	}
	for name, f := range map[string]struct {
		schemas []string
		rels    []string
	}{
		"todo-gateway": {[]string{"testdata/todo/schema.zed", "testdata/gateway/schema.zed"}, todoAndGatewayRelationships(t)},
		"search":       {[]string{"testdata/search/schema.zed"}, searchRelationships(t)},
	} {
		src := schema.Default
		for _, s := range f.schemas {
			b, err := os.ReadFile(s)
			if err != nil {
				t.Fatal(err)
			}
			src += "\n" + string(b)
		}
		var updates []map[string]string
		for _, r := range f.rels {
			updates = append(updates, map[string]string{"operation": "TOUCH", "relationship": r})
		}
		must := func(err error) {
			if err != nil {
				t.Fatal(err)
			}
		}
		must(os.WriteFile(filepath.Join(*fixturesOut, name+".zed"), []byte(src), 0o644))
		must(os.WriteFile(filepath.Join(*fixturesOut, name+".relationships.json"), mustJSON(map[string]any{"updates": updates}), 0o644))
	}
}
