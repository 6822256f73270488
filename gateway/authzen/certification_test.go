package authzen_test

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"

	"github.com/mandate-dev/mandate/gateway/authzen"
	"github.com/mandate-dev/mandate/internal/testenv"
	"github.com/mandate-dev/mandate/service"
)

// The AuthZEN certification scenario (Basic, Batch, Search and Discovery; the
// first three in a Core and a Properties variant). Its fixture,
// testdata/certification, is built from the scenario's description:
// user:alice; user:bob, an admin; record-1, active; record-2, archived; the
// actions read, write and delete (soft or not). Every answer is compared as
// exact JSON, because the suite rejects extra keys.

type obj = map[string]any

var (
	alice      = obj{"type": "user", "id": "alice"}
	bob        = obj{"type": "user", "id": "bob"}
	bobAdmin   = obj{"type": "user", "id": "bob", "properties": obj{"role": "admin"}}
	carolAdmin = obj{"type": "user", "id": "carol", "properties": obj{"role": "admin"}}
	aliceUser  = obj{"type": "user", "id": "alice", "properties": obj{"role": "user"}}
	record1    = obj{"type": "record", "id": "record-1"}
	record1Act = obj{"type": "record", "id": "record-1", "properties": obj{"status": "active"}}
	record2Arc = obj{"type": "record", "id": "record-2", "properties": obj{"status": "archived"}}
	read       = obj{"name": "read"}
	write      = obj{"name": "write"}
)

func softDelete(soft bool) obj { return obj{"name": "delete", "properties": obj{"soft": soft}} }

func eval(subject, action, resource obj) obj {
	return obj{"subject": subject, "action": action, "resource": resource}
}

func certificationPDP(t *testing.T) *pdp {
	return startPDP(t, []string{"testdata/certification/schema.zed"}, readLines(t, "testdata/certification/relationships.txt"))
}

// exact posts body and requires a 200 whose body is exactly want, as JSON text.
func (p *pdp) exact(path string, role service.Role, body any, want string) {
	p.t.Helper()
	code, raw := p.authzen(path, role, body)
	if got := compact(p.t, raw); code != 200 || got != want {
		p.t.Errorf("POST %s %s: got %d %s, want 200 %s", path, mustJSON(body), code, raw, want)
	}
}

func TestCertification(t *testing.T) {
	p := certificationPDP(t)
	const allow, deny = `{"decision":true}`, `{"decision":false}`

	t.Run("Basic/Core", func(t *testing.T) {
		p.t = t
		p.exact(authzen.PathEvaluation, service.RoleChecker, eval(alice, read, record1), allow)
		p.exact(authzen.PathEvaluation, service.RoleChecker, eval(alice, write, record1), allow)
		p.exact(authzen.PathEvaluation, service.RoleChecker, eval(bob, read, record1), allow)
		p.exact(authzen.PathEvaluation, service.RoleChecker, eval(bob, write, record1), deny)
		// Unknown subjects, resources, types and actions are denies, not errors.
		p.exact(authzen.PathEvaluation, service.RoleChecker, eval(obj{"type": "user", "id": "mallory"}, read, record1), deny)
		p.exact(authzen.PathEvaluation, service.RoleChecker, eval(alice, read, obj{"type": "record", "id": "record-9"}), deny)
		p.exact(authzen.PathEvaluation, service.RoleChecker, eval(alice, read, obj{"type": "ledger", "id": "record-1"}), deny)
		p.exact(authzen.PathEvaluation, service.RoleChecker, eval(alice, obj{"name": "shred"}, record1), deny)
		p.exact(authzen.PathEvaluation, service.RoleChecker, eval(obj{"type": "robot", "id": "r2"}, read, record1), deny)
		// A relation is not an action, and a grant relation least of all.
		p.exact(authzen.PathEvaluation, service.RoleChecker, eval(alice, obj{"name": "editor"}, record1), deny)
		p.exact(authzen.PathEvaluation, service.RoleChecker, eval(alice, obj{"name": "read_grant"}, record1), deny)
		// Action names are case-insensitive.
		p.exact(authzen.PathEvaluation, service.RoleChecker, eval(alice, obj{"name": "READ"}, record1), allow)
	})

	t.Run("Basic/Properties", func(t *testing.T) {
		p.t = t
		p.exact(authzen.PathEvaluation, service.RoleChecker, eval(bobAdmin, write, record1Act), deny)
		p.exact(authzen.PathEvaluation, service.RoleChecker, eval(alice, write, record2Arc), deny)
		p.exact(authzen.PathEvaluation, service.RoleChecker, eval(bobAdmin, write, record2Arc), allow)
		// The role property alone makes an admin (the caveat role_is_admin)...
		p.exact(authzen.PathEvaluation, service.RoleChecker, eval(carolAdmin, write, record2Arc), allow)
		// ...and another role does not.
		p.exact(authzen.PathEvaluation, service.RoleChecker, eval(aliceUser, write, record2Arc), deny)
		p.exact(authzen.PathEvaluation, service.RoleChecker, eval(alice, softDelete(true), record1Act), allow)
		p.exact(authzen.PathEvaluation, service.RoleChecker, eval(alice, softDelete(false), record1Act), deny)
		// Without the property the caveat lacks context: a deny, never an allow.
		p.exact(authzen.PathEvaluation, service.RoleChecker, eval(alice, obj{"name": "delete"}, record1), deny)
		// A property of the wrong type for the caveat is the caller's mistake.
		code, raw := p.authzen(authzen.PathEvaluation, service.RoleChecker, eval(alice, obj{"name": "delete", "properties": obj{"soft": "yes"}}, record1))
		if code != 400 || !strings.Contains(string(raw), "context") {
			t.Errorf("soft: \"yes\": got %d %s, want a 400 naming the context", code, raw)
		}
		// Context is caveat context as it is; properties may not shadow it.
		code, raw = p.authzen(authzen.PathEvaluation, service.RoleChecker, obj{"subject": bobAdmin, "action": write, "resource": record2Arc, "context": obj{"subject_role": "admin"}})
		if code != 400 || !strings.Contains(string(raw), "context.subject_role") {
			t.Errorf("context shadowed by a property: got %d %s, want 400 naming context.subject_role", code, raw)
		}
		code, raw = p.authzen(authzen.PathEvaluation, service.RoleChecker, obj{"subject": alice, "action": read, "resource": record1, "context": obj{"now": "2020-01-01T00:00:00Z"}})
		if code != 400 || !strings.Contains(string(raw), "context.now") {
			t.Errorf("reserved context key: got %d %s, want 400 naming context.now", code, raw)
		}
	})

	t.Run("Batch/Core", func(t *testing.T) {
		p.t = t
		// Defaults with per-item overrides, answered in request order.
		p.exact(authzen.PathEvaluations, service.RoleChecker, obj{
			"subject": alice, "resource": record1,
			"evaluations": []obj{{"action": read}, {"action": write}, {"subject": bob, "action": read}, {"subject": bob, "action": write}},
		}, `{"evaluations":[{"decision":true},{"decision":true},{"decision":true},{"decision":false}]}`)
		// Every item complete, no defaults.
		p.exact(authzen.PathEvaluations, service.RoleChecker, obj{"evaluations": []obj{eval(bob, write, record1), eval(alice, read, record1)}},
			`{"evaluations":[{"decision":false},{"decision":true}]}`)
		// An item missing a field is denied alone.
		p.exact(authzen.PathEvaluations, service.RoleChecker, obj{
			"subject": alice, "evaluations": []obj{{"action": read, "resource": record1}, {"action": read}, {"action": write, "resource": record1}},
		}, `{"evaluations":[{"decision":true},{"decision":false},{"decision":true}]}`)
		// Asked for reasons, the denied item says why.
		code, raw := p.call("POST", authzen.PathEvaluations, testenv.Keys[service.RoleChecker], "application/json",
			mustJSON(obj{"subject": alice, "evaluations": []obj{{"action": read}, {"action": read, "resource": obj{"type": "ledger", "id": "x"}}}}),
			http.Header{authzen.ReasonHeader: {"true"}})
		var out struct {
			Evaluations []struct {
				Decision bool
				Context  map[string]string
			}
		}
		if err := json.Unmarshal(raw, &out); code != 200 || err != nil || len(out.Evaluations) != 2 ||
			out.Evaluations[0].Context["reason_code"] != "INVALID_REQUEST" || out.Evaluations[0].Context["error"] != "evaluations[0].resource: is required" ||
			out.Evaluations[1].Context["reason_code"] != "INVALID_REFERENCE" || out.Evaluations[1].Decision {
			t.Errorf("reasons of denied items: %d %s", code, raw)
		}
		// Short-circuit semantics stop after, and include, the deciding answer.
		items := []obj{{"action": read}, {"subject": bob, "action": write}, {"action": write}}
		p.exact(authzen.PathEvaluations, service.RoleChecker, obj{"subject": alice, "resource": record1, "evaluations": items,
			"options": obj{"evaluations_semantic": "execute_all"}}, `{"evaluations":[{"decision":true},{"decision":false},{"decision":true}]}`)
		p.exact(authzen.PathEvaluations, service.RoleChecker, obj{"subject": alice, "resource": record1, "evaluations": items,
			"options": obj{"evaluations_semantic": "deny_on_first_deny"}}, `{"evaluations":[{"decision":true},{"decision":false}]}`)
		p.exact(authzen.PathEvaluations, service.RoleChecker, obj{"subject": alice, "resource": record1, "evaluations": items,
			"options": obj{"evaluations_semantic": "permit_on_first_permit"}}, `{"evaluations":[{"decision":true}]}`)
		// Without items, or with none, it is a single evaluation, with a
		// single evaluation's 400 for a missing field.
		p.exact(authzen.PathEvaluations, service.RoleChecker, eval(alice, read, record1), allow)
		if code, raw := p.authzen(authzen.PathEvaluations, service.RoleChecker, obj{"subject": alice, "action": read, "evaluations": []obj{}}); code != 400 ||
			!strings.Contains(string(raw), "resource") {
			t.Errorf("no items and no resource: got %d %s, want 400 naming resource", code, raw)
		}
		p.exact(authzen.PathEvaluations, service.RoleChecker, obj{"subject": bob, "action": write, "resource": record1, "evaluations": []obj{}}, deny)
		if code, raw := p.authzen(authzen.PathEvaluations, service.RoleChecker, obj{"subject": alice, "resource": record1,
			"evaluations": []obj{{"action": read}}, "options": obj{"evaluations_semantic": "first_come"}}); code != 400 ||
			!strings.Contains(string(raw), "options.evaluations_semantic") {
			t.Errorf("unknown semantic: got %d %s, want 400", code, raw)
		}
	})

	t.Run("Batch/Properties", func(t *testing.T) {
		p.t = t
		p.exact(authzen.PathEvaluations, service.RoleChecker, obj{"evaluations": []obj{
			eval(alice, write, record2Arc), eval(bobAdmin, write, record2Arc), eval(alice, softDelete(true), record1Act), eval(alice, softDelete(false), record1Act),
		}}, `{"evaluations":[{"decision":false},{"decision":true},{"decision":true},{"decision":false}]}`)
		// Item context replaces the default context; properties travel with their entity.
		p.exact(authzen.PathEvaluations, service.RoleChecker, obj{"subject": alice, "resource": record1Act,
			"evaluations": []obj{{"action": softDelete(true)}, {"action": softDelete(false)}, {"subject": carolAdmin, "action": write, "resource": record2Arc}},
		}, `{"evaluations":[{"decision":true},{"decision":false},{"decision":true}]}`)
	})

	t.Run("Search/Core", func(t *testing.T) {
		p.t = t
		p.exact(authzen.PathSearchSubject, service.RoleReviewer, obj{"subject": obj{"type": "user"}, "action": read, "resource": record1},
			`{"results":[{"type":"user","id":"alice"},{"type":"user","id":"bob"}],"page":{"next_token":""}}`)
		p.exact(authzen.PathSearchResource, service.RoleReviewer, obj{"subject": alice, "action": read, "resource": obj{"type": "record"}},
			`{"results":[{"type":"record","id":"record-1"},{"type":"record","id":"record-2"}],"page":{"next_token":""}}`)
		// delete needs the soft property, which an action search cannot carry.
		p.exact(authzen.PathSearchAction, service.RoleReviewer, obj{"subject": alice, "resource": record1},
			`{"results":[{"name":"read"},{"name":"write"}],"page":{"next_token":""}}`)
		// An id on the searched-for entity is ignored.
		p.exact(authzen.PathSearchSubject, service.RoleReviewer, obj{"subject": obj{"type": "user", "id": "zed"}, "action": read, "resource": record1},
			`{"results":[{"type":"user","id":"alice"},{"type":"user","id":"bob"}],"page":{"next_token":""}}`)
		// Unknown types, ids and actions find nothing.
		for _, body := range []obj{
			{"subject": obj{"type": "robot"}, "action": read, "resource": record1},
			{"subject": obj{"type": "user"}, "action": read, "resource": obj{"type": "ledger", "id": "x"}},
			{"subject": obj{"type": "user"}, "action": obj{"name": "shred"}, "resource": record1},
			{"subject": obj{"type": "user"}, "action": read, "resource": obj{"type": "record", "id": "record-9"}},
		} {
			p.exact(authzen.PathSearchSubject, service.RoleReviewer, body, `{"results":[],"page":{"next_token":""}}`)
		}
		p.exact(authzen.PathSearchAction, service.RoleReviewer, obj{"subject": alice, "resource": obj{"type": "ledger", "id": "x"}}, `{"results":[],"page":{"next_token":""}}`)
		p.exact(authzen.PathSearchResource, service.RoleReviewer, obj{"subject": obj{"type": "user", "id": "mallory"}, "action": read, "resource": obj{"type": "record"}},
			`{"results":[],"page":{"next_token":""}}`)
		// Pages: a limit of one, followed to the end.
		var ids []string
		token := ""
		for i := 0; i < 3; i++ {
			body := obj{"subject": obj{"type": "user"}, "action": read, "resource": record1, "page": obj{"limit": 1}}
			if token != "" {
				body["page"] = obj{"limit": 1, "token": token}
			}
			code, raw := p.authzen(authzen.PathSearchSubject, service.RoleReviewer, body)
			var out struct {
				Results []struct{ ID string }
				Page    struct {
					NextToken string `json:"next_token"`
				}
			}
			if err := json.Unmarshal(raw, &out); code != 200 || err != nil || len(out.Results) != 1 {
				t.Fatalf("page %d: %d %s", i, code, raw)
			}
			ids = append(ids, out.Results[0].ID)
			if token = out.Page.NextToken; token == "" {
				break
			}
		}
		if strings.Join(ids, ",") != "alice,bob" || token != "" {
			t.Errorf("paged subjects: %v, last token %q; want alice,bob and an empty token", ids, token)
		}
		if code, raw := p.authzen(authzen.PathSearchSubject, service.RoleReviewer, obj{"subject": obj{"type": "user"}, "action": read, "resource": record1,
			"page": obj{"token": "not-a-token"}}); code != 400 || !strings.Contains(string(raw), "page.token") {
			t.Errorf("bad page token: %d %s, want 400 naming page.token", code, raw)
		}
		// A limit above the largest page gets the largest page.
		p.exact(authzen.PathSearchSubject, service.RoleReviewer, obj{"subject": obj{"type": "user"}, "action": read, "resource": record1, "page": obj{"limit": 5000}},
			`{"results":[{"type":"user","id":"alice"},{"type":"user","id":"bob"}],"page":{"next_token":""}}`)
	})

	t.Run("Search/Properties", func(t *testing.T) {
		p.t = t
		p.exact(authzen.PathSearchSubject, service.RoleReviewer, obj{"subject": obj{"type": "user"}, "action": write, "resource": record2Arc},
			`{"results":[{"type":"user","id":"bob"}],"page":{"next_token":""}}`)
		p.exact(authzen.PathSearchResource, service.RoleReviewer, obj{"subject": bobAdmin, "action": write, "resource": obj{"type": "record"}},
			`{"results":[{"type":"record","id":"record-2"}],"page":{"next_token":""}}`)
		p.exact(authzen.PathSearchAction, service.RoleReviewer, obj{"subject": bobAdmin, "resource": record2Arc},
			`{"results":[{"name":"write"}],"page":{"next_token":""}}`)
		// A subject that is an admin by its role property alone can write the archived record.
		p.exact(authzen.PathSearchResource, service.RoleReviewer, obj{"subject": carolAdmin, "action": write, "resource": obj{"type": "record"}},
			`{"results":[{"type":"record","id":"record-2"}],"page":{"next_token":""}}`)
		// Action properties reach caveats in an action search too, through context.
		p.exact(authzen.PathSearchAction, service.RoleReviewer, obj{"subject": alice, "resource": record1Act, "context": obj{"action_soft": true}},
			`{"results":[{"name":"delete"},{"name":"read"},{"name":"write"}],"page":{"next_token":""}}`)
	})

	t.Run("Discovery", func(t *testing.T) {
		p.t = t
		code, raw := p.call("GET", authzen.PathMetadata, "", "", nil, nil)
		var md map[string]string
		if err := json.Unmarshal(raw, &md); code != 200 || err != nil {
			t.Fatalf("metadata: %d %s", code, raw)
		}
		if md["policy_decision_point"] != p.base {
			t.Errorf("policy_decision_point %q, want %q", md["policy_decision_point"], p.base)
		}
		for k, path := range map[string]string{
			"access_evaluation_endpoint": authzen.PathEvaluation, "access_evaluations_endpoint": authzen.PathEvaluations,
			"search_subject_endpoint": authzen.PathSearchSubject, "search_resource_endpoint": authzen.PathSearchResource,
			"search_action_endpoint": authzen.PathSearchAction,
		} {
			if md[k] != p.base+path {
				t.Errorf("%s = %q, want %q", k, md[k], p.base+path)
			}
		}
	})

	t.Run("BadRequests", func(t *testing.T) {
		p.t = t
		valid := map[string]obj{
			authzen.PathEvaluation:     eval(alice, read, record1),
			authzen.PathEvaluations:    {"subject": alice, "resource": record1, "evaluations": []obj{{"action": read}}},
			authzen.PathSearchSubject:  {"subject": obj{"type": "user"}, "action": read, "resource": record1},
			authzen.PathSearchResource: {"subject": alice, "action": read, "resource": obj{"type": "record"}},
			authzen.PathSearchAction:   {"subject": alice, "resource": record1},
		}
		role := func(path string) service.Role {
			if strings.Contains(path, "/search/") {
				return service.RoleReviewer
			}
			return service.RoleChecker
		}
		for path, body := range valid {
			if code, raw := p.authzen(path, role(path), body); code != 200 {
				t.Fatalf("%s: the valid request got %d %s", path, code, raw)
			}
			type badCase struct {
				name, contentType string
				body              []byte
				field             string
			}
			without := func(k string) []byte {
				m := obj{}
				for kk, v := range body {
					if kk != k {
						m[kk] = v
					}
				}
				return mustJSON(m)
			}
			with := func(k string, v any) []byte {
				m := obj{}
				for kk, vv := range body {
					m[kk] = vv
				}
				m[k] = v
				return mustJSON(m)
			}
			cases := []badCase{
				{"missing subject", "application/json", without("subject"), "subject"},
				{"missing resource", "application/json", without("resource"), "resource"},
				{"subject of the wrong type", "application/json", with("subject", "user:alice"), "subject"},
				{"subject.type of the wrong type", "application/json", with("subject", obj{"type": 7, "id": "alice"}), "subject.type"},
				{"resource.id of the wrong type", "application/json", with("resource", obj{"type": "record", "id": 1}), "resource.id"},
				{"properties of the wrong type", "application/json", with("subject", obj{"type": "user", "id": "alice", "properties": []string{"admin"}}), "subject.properties"},
				{"context of the wrong type", "application/json", with("context", "today"), "context"},
				{"not JSON content", "text/plain", mustJSON(body), "Content-Type"},
				{"no content type", "", mustJSON(body), "Content-Type"},
				{"malformed JSON", "application/json", []byte(`{"subject": {"type": "user",`), "body"},
				{"empty body", "application/json", nil, "body"},
				{"an array", "application/json", []byte(`[]`), "body"},
				{"two objects", "application/json", []byte(`{} {}`), "body"},
			}
			if path != authzen.PathSearchAction {
				cases = append(cases, badCase{"missing action", "application/json", without("action"), "action"},
					badCase{"action.name of the wrong type", "application/json", with("action", obj{"name": true}), "action.name"})
			}
			if path == authzen.PathEvaluations {
				cases = append(cases, badCase{"evaluations of the wrong type", "application/json", with("evaluations", obj{"action": read}), "evaluations"},
					badCase{"an item of the wrong type", "application/json", with("evaluations", []any{"read"}), "evaluations[0]"},
					badCase{"an item field of the wrong type", "application/json", with("evaluations", []obj{{"action": "read"}}), "evaluations[0].action"})
			}
			if strings.Contains(path, "/search/") {
				cases = append(cases, badCase{"page.limit of the wrong type", "application/json", with("page", obj{"limit": "ten"}), "page.limit"})
			}
			for _, c := range cases {
				if path == authzen.PathEvaluations && strings.HasPrefix(c.name, "missing ") {
					// Defaults may be left out; the item is then denied alone.
					continue
				}
				code, raw := p.call("POST", path, testenv.Keys[role(path)], c.contentType, c.body, nil)
				if code != 400 || !strings.Contains(string(raw), c.field) {
					t.Errorf("%s, %s: got %d %s, want 400 naming %s", path, c.name, code, raw, c.field)
				}
			}
		}
	})

	t.Run("Methods", func(t *testing.T) {
		p.t = t
		for _, c := range []struct{ method, path, allow string }{
			{"GET", authzen.PathEvaluation, "POST"}, {"PUT", authzen.PathEvaluations, "POST"},
			{"GET", authzen.PathSearchAction, "POST"}, {"POST", authzen.PathMetadata, "GET"},
		} {
			if code, _, hdr := p.callH(c.method, c.path, testenv.Keys[service.RoleAdmin], "application/json", nil, nil); code != 405 || hdr.Get("Allow") != c.allow {
				t.Errorf("%s %s: %d, Allow %q; want 405, Allow %s", c.method, c.path, code, hdr.Get("Allow"), c.allow)
			}
		}
	})

	t.Run("RequestIDAndRepeat", func(t *testing.T) {
		p.t = t
		for _, path := range []string{authzen.PathEvaluation, authzen.PathEvaluations, authzen.PathSearchSubject} {
			body := mustJSON(eval(alice, read, record1))
			if path == authzen.PathSearchSubject {
				body = mustJSON(obj{"subject": obj{"type": "user"}, "action": read, "resource": record1})
			}
			var first string
			for i := 0; i < 3; i++ {
				key := testenv.Keys[service.RoleChecker]
				if path == authzen.PathSearchSubject {
					key = testenv.Keys[service.RoleReviewer]
				}
				code, raw, hdr := p.callH("POST", path, key, "application/json", body, http.Header{"X-Request-Id": {"cert-req-42"}})
				if code != 200 || hdr.Get("X-Request-Id") != "cert-req-42" {
					t.Fatalf("%s: %d, X-Request-Id %q", path, code, hdr.Get("X-Request-Id"))
				}
				if i == 0 {
					first = string(raw)
				} else if string(raw) != first {
					t.Errorf("%s: repeated answer %s differs from %s", path, raw, first)
				}
			}
		}
		// Without one, mandate makes one.
		if _, _, hdr := p.callH("POST", authzen.PathEvaluation, testenv.Keys[service.RoleChecker], "application/json", mustJSON(eval(alice, read, record1)), nil); !strings.HasPrefix(hdr.Get("X-Request-Id"), "req_") {
			t.Errorf("no X-Request-Id generated: %q", hdr.Get("X-Request-Id"))
		}
		// A body over the limit is refused before it is read.
		huge := mustJSON(obj{"subject": alice, "action": read, "resource": record1, "context": obj{"blob": strings.Repeat("x", 2<<20)}})
		if code, raw := p.call("POST", authzen.PathEvaluation, testenv.Keys[service.RoleChecker], "application/json", huge, nil); code != 413 {
			t.Errorf("a 2 MiB body: got %d %s, want 413", code, raw)
		}
		// A bad request echoes it too.
		if _, _, hdr := p.callH("POST", authzen.PathEvaluation, testenv.Keys[service.RoleChecker], "text/plain", nil, http.Header{"X-Request-Id": {"cert-bad"}}); hdr.Get("X-Request-Id") != "cert-bad" {
			t.Errorf("400 lost X-Request-Id: %q", hdr.Get("X-Request-Id"))
		}
		if _, _, hdr := p.callH("GET", authzen.PathMetadata, "", "", nil, http.Header{"X-Request-Id": {"cert-md"}}); hdr.Get("X-Request-Id") != "cert-md" {
			t.Errorf("metadata lost X-Request-Id: %q", hdr.Get("X-Request-Id"))
		}
	})
}
