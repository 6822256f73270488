package authzen

import (
	"bytes"
	"encoding/json"
	"errors"
	"net/http/httptest"
	"testing"
)

// FuzzRequest: an AuthZEN body is refused with a 400 naming where, or
// parsed; it never panics, and whatever is accepted is valid JSON without
// duplicate keys, so every JSON parser reads it the same way.
func FuzzRequest(f *testing.F) {
	for _, s := range []string{
		`{"subject":{"type":"user","id":"alice"},"action":{"name":"can_read"},"resource":{"type":"record","id":"101"}}`,
		`{"subject":{"type":"user","id":"alice"},"evaluations":[{"action":{"name":"can_read"},"resource":{"type":"record","id":"101"}}]}`,
		`{"subject":{"type":"user","id":"alice","id":"bob"}}`,
		`{"context":{"risk_score":0.5,"source_ip":"10.0.0.1"}}`,
		"{\"a\":\"\xff\"}", `[[[[`, `{}`, `null`, `{"a":1} {"b":2}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, raw []byte) {
		r := httptest.NewRequest("POST", PathEvaluation, bytes.NewReader(raw))
		r.Header.Set("Content-Type", "application/json")
		o, err := readBody(r)
		if err != nil {
			var br *badRequest
			if !errors.As(err, &br) {
				t.Fatalf("readBody(%q): %v, not a 400", raw, err)
			}
			return
		}
		if !json.Valid(raw) {
			t.Fatalf("readBody accepted invalid JSON %q", raw)
		}
		if err := strictJSON(raw); err != nil {
			t.Fatalf("readBody accepted %q that strictJSON refuses: %v", raw, err)
		}
		tup, err := parseTuple(o, "")
		if err != nil {
			var br *badRequest
			if !errors.As(err, &br) || br.Field == "" {
				t.Fatalf("parseTuple(%q): %v, want a 400 naming a field", raw, err)
			}
			return
		}
		if _, err := caveatContext(tup.Context, tup.Subject, tup.Resource, tup.Action); err != nil {
			var br *badRequest
			if !errors.As(err, &br) {
				t.Fatalf("caveatContext(%q): %v, not a 400", raw, err)
			}
		}
	})
}
