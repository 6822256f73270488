package authzen

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"

	"google.golang.org/protobuf/types/known/structpb"
)

// badRequest is a payload mandate refuses with 400. Field names the JSON
// path at fault.
type badRequest struct {
	Field string
	Msg   string
}

func (e *badRequest) Error() string {
	if e.Field == "" {
		return e.Msg
	}
	return e.Field + ": " + e.Msg
}

func bad(field, format string, args ...any) *badRequest {
	return &badRequest{Field: field, Msg: fmt.Sprintf(format, args...)}
}

// object is a decoded JSON object whose members are decoded on demand, so
// that every type error names its field.
type object map[string]json.RawMessage

// readBody checks the content type and decodes the body as one JSON object.
func readBody(r *http.Request) (object, error) {
	mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type"))
	if err != nil || mt != "application/json" {
		return nil, bad("Content-Type", "must be application/json, got %q", r.Header.Get("Content-Type"))
	}
	raw, err := io.ReadAll(r.Body)
	if err != nil {
		var tooLarge *http.MaxBytesError
		if errors.As(err, &tooLarge) {
			return nil, &tooLargeError{limit: tooLarge.Limit}
		}
		return nil, bad("body", "could not be read")
	}
	if len(bytes.TrimSpace(raw)) == 0 {
		return nil, bad("body", "is empty; send a JSON object")
	}
	if err := strictJSON(raw); err != nil {
		return nil, err
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	var o object
	if err := dec.Decode(&o); err != nil {
		return nil, bad("body", "is not a JSON object: %v", err)
	}
	if o == nil {
		return nil, bad("body", "is not a JSON object")
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, bad("body", "has data after the JSON object")
	}
	return o, nil
}

type tooLargeError struct{ limit int64 }

func (e *tooLargeError) Error() string { return fmt.Sprintf("body: larger than %d bytes", e.limit) }

func isNull(raw json.RawMessage) bool { return len(raw) == 0 || string(bytes.TrimSpace(raw)) == "null" }

// member decodes member k as an object. It reports false when k is absent
// or null.
func (o object) object(field, k string) (object, bool, error) {
	raw, ok := o[k]
	if !ok || isNull(raw) {
		return nil, false, nil
	}
	var out object
	if err := json.Unmarshal(raw, &out); err != nil || out == nil {
		return nil, false, bad(field, "must be a JSON object")
	}
	return out, true, nil
}

// str decodes member k as a string. It reports false when k is absent or null.
func (o object) str(field, k string) (string, bool, error) {
	raw, ok := o[k]
	if !ok || isNull(raw) {
		return "", false, nil
	}
	var s string
	if err := json.Unmarshal(raw, &s); err != nil {
		return "", false, bad(field, "must be a string")
	}
	return s, true, nil
}

// props decodes member k as a JSON object of any values.
func (o object) props(field, k string) (map[string]any, error) {
	raw, ok := o[k]
	if !ok || isNull(raw) {
		return nil, nil
	}
	var m map[string]any
	if err := json.Unmarshal(raw, &m); err != nil || m == nil {
		return nil, bad(field, "must be a JSON object")
	}
	return m, nil
}

// entity is an AuthZEN subject or resource. Present reports whether the
// request carried it at all.
type entity struct {
	Present    bool
	Type       string
	HasType    bool
	ID         string
	HasID      bool
	Properties map[string]any
}

// action is an AuthZEN action.
type action struct {
	Present    bool
	Name       string
	HasName    bool
	Properties map[string]any
}

// parseEntity decodes member k, naming errors after field.
func parseEntity(o object, k, field string) (entity, error) {
	m, ok, err := o.object(field, k)
	if err != nil || !ok {
		return entity{}, err
	}
	e := entity{Present: true}
	if e.Type, e.HasType, err = m.str(field+".type", "type"); err != nil {
		return e, err
	}
	if e.ID, e.HasID, err = m.str(field+".id", "id"); err != nil {
		return e, err
	}
	if e.Properties, err = m.props(field+".properties", "properties"); err != nil {
		return e, err
	}
	return e, nil
}

func parseAction(o object, field string) (action, error) {
	m, ok, err := o.object(field, "action")
	if err != nil || !ok {
		return action{}, err
	}
	a := action{Present: true}
	if a.Name, a.HasName, err = m.str(field+".name", "name"); err != nil {
		return a, err
	}
	if a.Properties, err = m.props(field+".properties", "properties"); err != nil {
		return a, err
	}
	return a, nil
}

// tuple is one evaluation's parts, possibly incomplete.
type tuple struct {
	Subject    entity
	Action     action
	Resource   entity
	Context    map[string]any
	HasContext bool
}

func parseTuple(o object, prefix string) (tuple, error) {
	var t tuple
	var err error
	if t.Subject, err = parseEntity(o, "subject", prefix+"subject"); err != nil {
		return t, err
	}
	if t.Action, err = parseAction(o, prefix+"action"); err != nil {
		return t, err
	}
	if t.Resource, err = parseEntity(o, "resource", prefix+"resource"); err != nil {
		return t, err
	}
	if t.Context, err = o.props(prefix+"context", "context"); err != nil {
		return t, err
	}
	t.HasContext = t.Context != nil
	return t, nil
}

// over returns t with every part that item carries replacing t's.
func (t tuple) over(item tuple) tuple {
	if item.Subject.Present {
		t.Subject = item.Subject
	}
	if item.Action.Present {
		t.Action = item.Action
	}
	if item.Resource.Present {
		t.Resource = item.Resource
	}
	if item.HasContext {
		t.Context, t.HasContext = item.Context, true
	}
	return t
}

// missing names the first required field t lacks, or "".
func (t tuple) missing(prefix string) string {
	switch {
	case !t.Subject.Present:
		return prefix + "subject"
	case !t.Subject.HasType:
		return prefix + "subject.type"
	case !t.Subject.HasID:
		return prefix + "subject.id"
	case !t.Action.Present:
		return prefix + "action"
	case !t.Action.HasName:
		return prefix + "action.name"
	case !t.Resource.Present:
		return prefix + "resource"
	case !t.Resource.HasType:
		return prefix + "resource.type"
	case !t.Resource.HasID:
		return prefix + "resource.id"
	}
	return ""
}

// caveatContext builds the caveat context of a question: the request's
// context as it is, plus every property as "<entity>_<name>", so that
// subject.properties.role is the caveat parameter subject_role and
// action.properties.soft is action_soft. A context key that a property
// would overwrite is refused.
func caveatContext(ctx map[string]any, subject, resource entity, act action) (*structpb.Struct, error) {
	if ctx == nil && subject.Properties == nil && resource.Properties == nil && act.Properties == nil {
		return nil, nil
	}
	fields := make(map[string]any, len(ctx)+len(subject.Properties)+len(resource.Properties)+len(act.Properties))
	for k, v := range ctx {
		fields[k] = v
	}
	for _, p := range []struct {
		prefix string
		props  map[string]any
	}{{"subject", subject.Properties}, {"resource", resource.Properties}, {"action", act.Properties}} {
		for k, v := range p.props {
			key := p.prefix + "_" + k
			if _, dup := fields[key]; dup {
				return nil, bad("context."+key, "is also given as %s.properties.%s; send one", p.prefix, k)
			}
			fields[key] = v
		}
	}
	s, err := structpb.NewStruct(fields)
	if err != nil {
		return nil, bad("context", "cannot be used as caveat context: %v", err)
	}
	return s, nil
}
