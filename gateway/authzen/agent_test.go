package authzen_test

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/mandate-dev/mandate/gateway/authzen"
	"github.com/mandate-dev/mandate/internal/testenv"
	"github.com/mandate-dev/mandate/service"
)

func TestKeysAndRoles(t *testing.T) {
	p := certificationPDP(t)
	body := mustJSON(eval(alice, read, record1))
	search := mustJSON(obj{"subject": obj{"type": "user"}, "action": read, "resource": record1})
	for _, c := range []struct {
		name, path, auth string
		body             []byte
		want             int
	}{
		{"no key", authzen.PathEvaluation, "", body, 401},
		{"unknown key", authzen.PathEvaluation, "Bearer not-a-key", body, 401},
		{"unknown bare key", authzen.PathEvaluation, "not-a-key", body, 401},
		{"no key on search", authzen.PathSearchSubject, "", search, 401},
		// A batch whose items are all denied without asking Check still needs a key.
		{"no key, nothing to ask", authzen.PathEvaluations, "", mustJSON(obj{"subject": alice, "evaluations": []obj{{"action": read}}}), 401},
		{"no key, unknown resource type", authzen.PathEvaluation, "", mustJSON(eval(alice, read, obj{"type": "user_resource", "id": "x"})), 401},
		// The key is checked before the body.
		{"no key, malformed body", authzen.PathEvaluation, "", []byte("{"), 401},
		{"reviewer, malformed body", authzen.PathEvaluation, testenv.Keys[service.RoleReviewer], []byte("{"), 403},
		{"checker, Bearer", authzen.PathEvaluation, "Bearer " + testenv.Keys[service.RoleChecker], body, 200},
		{"checker, bare key as the harness sends it", authzen.PathEvaluation, testenv.Keys[service.RoleChecker], body, 200},
		{"checker, batch", authzen.PathEvaluations, testenv.Keys[service.RoleChecker], body, 200},
		{"admin evaluates", authzen.PathEvaluation, testenv.Keys[service.RoleAdmin], body, 200},
		{"reviewer may not evaluate", authzen.PathEvaluation, testenv.Keys[service.RoleReviewer], body, 403},
		{"operator may not evaluate", authzen.PathEvaluations, testenv.Keys[service.RoleOperator], body, 403},
		{"reviewer searches", authzen.PathSearchSubject, testenv.Keys[service.RoleReviewer], search, 200},
		{"admin searches", authzen.PathSearchSubject, testenv.Keys[service.RoleAdmin], search, 200},
		{"checker may not search", authzen.PathSearchSubject, testenv.Keys[service.RoleChecker], search, 403},
	} {
		code, raw, hdr := p.callH("POST", c.path, c.auth, "application/json", c.body, nil)
		if code != c.want {
			t.Errorf("%s: got %d %s, want %d", c.name, code, raw, c.want)
		}
		if code == 401 && !strings.HasPrefix(hdr.Get("WWW-Authenticate"), "Bearer") {
			t.Errorf("%s: 401 without a Bearer challenge: %q", c.name, hdr.Get("WWW-Authenticate"))
		}
		if code == 200 && strings.Contains(string(raw), "reason_code") {
			t.Errorf("%s: reason code sent unasked: %s", c.name, raw)
		}
	}
}

// TestAgentSubject: an agent evaluated through AuthZEN gets the full
// four-leg check, with the same audit, and searches list only what Check
// would allow.
func TestAgentSubject(t *testing.T) {
	p := startPDP(t, []string{"testdata/search/schema.zed"}, searchRelationships(t))
	task := p.native("POST", "/v1/tasks", service.RoleOperator, obj{"principal": "user:bob", "description": "read the contracts", "ttl": "1h"})["task"].(map[string]any)["id"].(string)
	agent := p.native("POST", "/v1/agents", service.RoleOperator, obj{"task": "task:" + task, "name": "reader", "ttl": "30m"})["agent"].(map[string]any)["id"].(string)
	// bob may view 102 (his own) and 105 (his department); the agent gets 102 only.
	p.native("POST", "/v1/grants", service.RoleOperator, obj{"holder": "agent:" + agent, "permission": "view", "resource": "record:102", "ttl": "10m"})
	a := obj{"type": "agent", "id": agent}
	reason := http.Header{authzen.ReasonHeader: {"true"}}

	ask := func(action string, record string, hdr http.Header) map[string]any {
		t.Helper()
		code, raw := p.call("POST", authzen.PathEvaluation, testenv.Keys[service.RoleChecker], "application/json",
			mustJSON(eval(a, obj{"name": action}, obj{"type": "record", "id": record})), hdr)
		var out map[string]any
		if err := json.Unmarshal(raw, &out); code != 200 || err != nil {
			t.Fatalf("evaluation: %d %s", code, raw)
		}
		return out
	}
	// Unasked, the answer is bare AuthZEN.
	if out := ask("view", "102", nil); out["decision"] != true || len(out) != 1 {
		t.Fatalf("granted view: %v", out)
	}
	// Asked, it carries the reason code and the decision id.
	out := ask("view", "102", reason)
	ctx, _ := out["context"].(map[string]any)
	if out["decision"] != true || ctx["reason_code"] != "ALLOWED" || !strings.HasPrefix(ctx["decision_id"].(string), "dec_") {
		t.Fatalf("granted view with reasons: %v", out)
	}
	decisionID := ctx["decision_id"].(string)
	if out := ask("view", "105", reason); out["decision"] != false || out["context"].(map[string]any)["reason_code"] != "NO_GRANT" {
		t.Fatalf("view without a grant: %v", out)
	}
	if out := ask("delete", "102", reason); out["decision"] != false || out["context"].(map[string]any)["reason_code"] != "NO_GRANT" {
		t.Fatalf("delete without a grant: %v", out)
	}

	// The AuthZEN decision is in the audit trail like any check.
	found := false
	for deadline := time.Now().Add(3 * time.Second); !found && time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		recs, _ := p.native("GET", "/v1/audit?agent=agent:"+agent, service.RoleReviewer, nil)["records"].([]any)
		for _, r := range recs {
			rec := r.(map[string]any)
			if rec["id"] == decisionID {
				found = true
				if rec["decision"] != "allow" || rec["principal"] != "user:bob" || rec["task"] != "task:"+task || rec["resource"] != "record:102" || rec["caller"] != "test-checker" {
					t.Fatalf("audit record: %v", rec)
				}
			}
		}
	}
	if !found {
		t.Fatalf("decision %s is not in the audit trail", decisionID)
	}

	searches := func() (subjects, resources, actions string) {
		_, s := p.authzen(authzen.PathSearchSubject, service.RoleReviewer, obj{"subject": obj{"type": "agent"}, "action": obj{"name": "view"}, "resource": obj{"type": "record", "id": "102"}})
		_, r := p.authzen(authzen.PathSearchResource, service.RoleReviewer, obj{"subject": a, "action": obj{"name": "view"}, "resource": obj{"type": "record"}})
		_, ac := p.authzen(authzen.PathSearchAction, service.RoleReviewer, obj{"subject": a, "resource": obj{"type": "record", "id": "102"}})
		return compact(t, s), compact(t, r), compact(t, ac)
	}
	s, r, ac := searches()
	if want := `{"results":[{"type":"agent","id":"` + agent + `"}],"page":{"next_token":""}}`; s != want {
		t.Errorf("subject search: %s, want %s", s, want)
	}
	if want := `{"results":[{"type":"record","id":"102"}],"page":{"next_token":""}}`; r != want {
		t.Errorf("resource search: %s, want %s", r, want)
	}
	if want := `{"results":[{"name":"view"}],"page":{"next_token":""}}`; ac != want {
		t.Errorf("action search: %s, want %s", ac, want)
	}

	// A grant held by the task reaches its agents, in evaluations and in searches.
	taskGrant := p.native("POST", "/v1/grants", service.RoleOperator, obj{"holder": "task:" + task, "permission": "view", "resource": "record:105", "ttl": "10m"})["grant"].(map[string]any)["id"].(string)
	if out := ask("view", "105", nil); out["decision"] != true {
		t.Fatalf("view through the task's grant: %v", out)
	}
	if _, r := p.authzen(authzen.PathSearchResource, service.RoleReviewer, obj{"subject": a, "action": obj{"name": "view"}, "resource": obj{"type": "record"}}); compact(t, r) !=
		`{"results":[{"type":"record","id":"102"},{"type":"record","id":"105"}],"page":{"next_token":""}}` {
		t.Errorf("resource search with a task grant: %s", r)
	}
	if _, s := p.authzen(authzen.PathSearchSubject, service.RoleReviewer, obj{"subject": obj{"type": "agent"}, "action": obj{"name": "view"}, "resource": obj{"type": "record", "id": "105"}}); compact(t, s) !=
		`{"results":[{"type":"agent","id":"`+agent+`"}],"page":{"next_token":""}}` {
		t.Errorf("subject search with a task grant: %s", s)
	}
	p.native("DELETE", "/v1/grants/"+taskGrant, service.RoleOperator, nil)
	if out := ask("view", "105", reason); out["decision"] != false || out["context"].(map[string]any)["reason_code"] != "NO_GRANT" {
		t.Fatalf("view after the task's grant was removed: %v", out)
	}

	// Suspending the agent ends it all at once: leg 1.
	p.native("POST", "/v1/agents/"+agent+":suspend", service.RoleOperator, nil)
	if out := ask("view", "102", reason); out["decision"] != false || out["context"].(map[string]any)["reason_code"] != "AGENT_SUSPENDED" {
		t.Fatalf("suspended agent: %v", out)
	}
	const empty = `{"results":[],"page":{"next_token":""}}`
	s, r, ac = searches()
	if s != empty || r != empty || ac != empty {
		t.Errorf("searches for a suspended agent: %s %s %s", s, r, ac)
	}
	p.native("POST", "/v1/agents/"+agent+":resume", service.RoleOperator, nil)
	if out := ask("view", "102", nil); out["decision"] != true {
		t.Fatalf("resumed agent: %v", out)
	}

	// The principal losing the permission ends the agent's too: leg 4. bob
	// viewed 102 as its owner and as a member of its department.
	p.native("POST", "/v1/relationships:write", service.RoleAdmin, obj{"updates": []obj{
		{"operation": "DELETE", "relationship": "record:102#owner@user:bob"},
		{"operation": "DELETE", "relationship": "department:Legal#member@user:bob"},
	}})
	if out := ask("view", "102", reason); out["decision"] != false || out["context"].(map[string]any)["reason_code"] != "PRINCIPAL_LACKS_PERMISSION" {
		t.Fatalf("after bob lost 102: %v", out)
	}
	s, r, ac = searches()
	if s != empty || r != empty || ac != empty {
		t.Errorf("searches after the principal lost access: %s %s %s", s, r, ac)
	}
}

// TestStrictJSON: AuthZEN bodies are parsed as strictly as the native API's:
// a key twice in one object and invalid UTF-8 are 400s naming where.
func TestStrictJSON(t *testing.T) {
	p := certificationPDP(t)
	key := testenv.Keys[service.RoleChecker]
	for _, c := range []struct {
		name, body, want string
	}{
		{"duplicate top-level key", `{"subject":{"type":"user","id":"alice"},"action":{"name":"can_read"},"resource":{"type":"record","id":"101"},"subject":{"type":"user","id":"bob"}}`, "subject"},
		{"duplicate nested key", `{"subject":{"type":"user","id":"alice","id":"bob"},"action":{"name":"can_read"},"resource":{"type":"record","id":"101"}}`, "subject.id"},
		{"duplicate in a batch item", `{"subject":{"type":"user","id":"alice"},"evaluations":[{"action":{"name":"can_read","name":"x"}}]}`, "evaluations[0].action.name"},
		{"invalid UTF-8", "{\"subject\":{\"type\":\"user\",\"id\":\"al\xffice\"},\"action\":{\"name\":\"can_read\"},\"resource\":{\"type\":\"record\",\"id\":\"101\"}}", "UTF-8"},
		{"too deep", strings.Repeat("[", 100) + strings.Repeat("]", 100), "nests"},
	} {
		code, raw, _ := p.callH("POST", authzen.PathEvaluation, key, "application/json", []byte(c.body), nil)
		if code != 400 || !strings.Contains(string(raw), c.want) {
			t.Errorf("%s: got %d %s, want 400 naming %s", c.name, code, raw, c.want)
		}
	}
}
