package audit_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"testing"
)

// ocsfSchemaDir holds the OCSF schema sources the export is validated
// against: the parts of ocsf/ocsf-schema at tag 1.8.0 that API Activity
// events use (see its README.md).
const ocsfSchemaDir = "testdata/ocsf-1.8.0"

// ocsfSchema applies the rules of the OCSF server's validator (ocsf-server,
// lib/schema/validator2.ex) to the schema's sources, compiling what it needs
// from them the way the server does: a class or object extends its parent,
// "$include" merges a profile's attributes (tagged with the profile), each
// attribute takes its dictionary definition with the item's own on top, and
// attributes of profiles the event does not declare in metadata.profiles do
// not exist for it.
//
// Every finding is an error, including those the server only warns about
// (deprecated attributes, enum siblings that disagree with the enum,
// regex and range violations), and mandate adds two rules of its own: no
// empty strings anywhere, and an enum value of 99 (Other) must carry its
// sibling.
type ocsfSchema struct {
	dir      string
	version  string
	dict     map[string]map[string]any // dictionary attributes
	types    map[string]map[string]any // dictionary types
	objects  map[string]map[string]any // raw object sources, by name
	classes  map[string]map[string]any // raw class sources, by name
	cats     map[string]map[string]any // categories, by name
	profiles map[string]bool           // profiles the vendored sources define

	compiled map[string]*ocsfItem
	regexes  map[string]*regexp.Regexp
}

// ocsfItem is a compiled class or object.
type ocsfItem struct {
	name        string
	uid         int // classes: class_uid
	category    int // classes: category_uid
	attrs       map[string]map[string]any
	constraints map[string][]string
}

func loadOCSFSchema(t testing.TB, dir string) *ocsfSchema {
	t.Helper()
	s := &ocsfSchema{
		dir: dir, objects: map[string]map[string]any{}, classes: map[string]map[string]any{}, profiles: map[string]bool{},
		compiled: map[string]*ocsfItem{}, regexes: map[string]*regexp.Regexp{},
	}
	read := func(rel string) map[string]any {
		raw, err := os.ReadFile(filepath.Join(dir, rel))
		if err != nil {
			t.Fatalf("OCSF schema: %v", err)
		}
		var m map[string]any
		if err := json.Unmarshal(raw, &m); err != nil {
			t.Fatalf("OCSF schema %s: %v", rel, err)
		}
		return m
	}
	s.version = read("version.json")["version"].(string)
	d := read("dictionary.json")
	s.dict = asMapOfMaps(d["attributes"])
	s.types = asMapOfMaps(d["types"].(map[string]any)["attributes"])
	s.cats = asMapOfMaps(read("categories.json")["attributes"])
	walk := func(sub string, into map[string]map[string]any) {
		err := filepath.WalkDir(filepath.Join(dir, sub), func(p string, e os.DirEntry, err error) error {
			if err != nil || e.IsDir() || !strings.HasSuffix(p, ".json") {
				return err
			}
			rel, _ := filepath.Rel(dir, p)
			m := read(rel)
			into[m["name"].(string)] = m
			return nil
		})
		if err != nil {
			t.Fatalf("OCSF schema: %v", err)
		}
	}
	walk("objects", s.objects)
	walk("events", s.classes)
	profs := map[string]map[string]any{}
	walk("profiles", profs)
	for name := range profs {
		s.profiles[name] = true
	}
	return s
}

func asMapOfMaps(v any) map[string]map[string]any {
	out := map[string]map[string]any{}
	for k, x := range v.(map[string]any) {
		out[k] = x.(map[string]any)
	}
	return out
}

// deepMerge returns base with over on top: maps merge key by key, anything
// else (null included) replaces.
func deepMerge(base, over map[string]any) map[string]any {
	out := make(map[string]any, len(base)+len(over))
	for k, v := range base {
		out[k] = v
	}
	for k, v := range over {
		bm, ok1 := out[k].(map[string]any)
		om, ok2 := v.(map[string]any)
		if ok1 && ok2 {
			out[k] = deepMerge(bm, om)
		} else {
			out[k] = v
		}
	}
	return out
}

// rawAttributes is an item's own attributes with its "$include"s merged
// underneath; a profile's attributes are tagged with the profile.
func (s *ocsfSchema) rawAttributes(item map[string]any) (map[string]any, error) {
	own, _ := item["attributes"].(map[string]any)
	merged := map[string]any{}
	if inc, ok := own["$include"].([]any); ok {
		for _, p := range inc {
			raw, err := os.ReadFile(filepath.Join(s.dir, p.(string)))
			if err != nil {
				return nil, fmt.Errorf("%s includes %s, which is not in the vendored schema", item["name"], p)
			}
			var f map[string]any
			if err := json.Unmarshal(raw, &f); err != nil {
				return nil, err
			}
			attrs, _ := f["attributes"].(map[string]any)
			for k, v := range attrs {
				a := v.(map[string]any)
				if f["meta"] == "profile" {
					a = deepMerge(a, map[string]any{"profile": f["name"]})
				}
				merged[k] = a
			}
		}
	}
	for k, v := range own {
		if k == "$include" {
			continue
		}
		if b, ok := merged[k].(map[string]any); ok {
			merged[k] = deepMerge(b, v.(map[string]any))
		} else {
			merged[k] = v
		}
	}
	return merged, nil
}

// resolve follows "extends" and returns the item's merged raw attributes
// and constraints.
func (s *ocsfSchema) resolve(src map[string]map[string]any, name string) (map[string]any, map[string]any, error) {
	item, ok := src[name]
	if !ok {
		return nil, nil, fmt.Errorf("%q is not in the vendored schema", name)
	}
	attrs, err := s.rawAttributes(item)
	if err != nil {
		return nil, nil, err
	}
	cons, _ := item["constraints"].(map[string]any)
	if ext, ok := item["extends"].(string); ok && ext != "" {
		pa, pc, err := s.resolve(src, ext)
		if err != nil {
			return nil, nil, fmt.Errorf("%s extends %w", name, err)
		}
		for k, v := range attrs {
			if b, ok := pa[k].(map[string]any); ok {
				attrs[k] = deepMerge(b, v.(map[string]any))
			}
		}
		for k, v := range pa {
			if _, ok := attrs[k]; !ok {
				attrs[k] = v
			}
		}
		if cons == nil {
			cons = pc
		}
	}
	return attrs, cons, nil
}

// item compiles a class ("class:" prefix) or an object.
func (s *ocsfSchema) item(key string) (*ocsfItem, error) {
	if it, ok := s.compiled[key]; ok {
		return it, nil
	}
	src, name := s.objects, key
	if n, ok := strings.CutPrefix(key, "class:"); ok {
		src, name = s.classes, n
	}
	attrs, cons, err := s.resolve(src, name)
	if err != nil {
		return nil, err
	}
	it := &ocsfItem{name: name, attrs: map[string]map[string]any{}, constraints: map[string][]string{}}
	for k, v := range attrs {
		d, ok := s.dict[k]
		if !ok {
			return nil, fmt.Errorf("SCHEMA BUG: %s.%s is not in the dictionary", name, k)
		}
		it.attrs[k] = deepMerge(d, v.(map[string]any))
	}
	for k, v := range cons {
		for _, x := range v.([]any) {
			it.constraints[k] = append(it.constraints[k], x.(string))
		}
	}
	if src = s.classes; strings.HasPrefix(key, "class:") {
		raw := src[name]
		catName, _ := raw["category"].(string)
		for p := raw; catName == ""; {
			ext, _ := p["extends"].(string)
			if p = src[ext]; p == nil {
				break
			}
			catName, _ = p["category"].(string)
		}
		cat, ok := s.cats[catName]
		if !ok {
			return nil, fmt.Errorf("class %s: category %q not in the vendored categories", name, catName)
		}
		it.category = int(cat["uid"].(float64))
		it.uid = it.category*1000 + int(raw["uid"].(float64))
		// As the server does, the class's own uids are the only values of
		// class_uid and category_uid, and type_uid's values follow from
		// activity_id's.
		caption, _ := raw["caption"].(string)
		it.attrs["class_uid"] = deepMerge(it.attrs["class_uid"], map[string]any{"enum": nil})
		it.attrs["class_uid"]["enum"] = map[string]any{strconv.Itoa(it.uid): map[string]any{"caption": caption}}
		it.attrs["category_uid"] = deepMerge(it.attrs["category_uid"], map[string]any{"enum": nil})
		it.attrs["category_uid"]["enum"] = map[string]any{strconv.Itoa(it.category): map[string]any{"caption": cat["caption"]}}
		types := map[string]any{}
		for k, e := range it.attrs["activity_id"]["enum"].(map[string]any) {
			n, _ := strconv.Atoi(k)
			types[strconv.Itoa(it.uid*100+n)] = map[string]any{"caption": caption + ": " + e.(map[string]any)["caption"].(string)}
		}
		it.attrs["type_uid"] = deepMerge(it.attrs["type_uid"], map[string]any{"enum": nil})
		it.attrs["type_uid"]["enum"] = types
	}
	s.compiled[key] = it
	return it, nil
}

// validator collects the errors of one event.
type validator struct {
	s        *ocsfSchema
	profiles map[string]bool
	errs     []string
}

func (v *validator) errorf(path, format string, args ...any) {
	v.errs = append(v.errs, path+": "+fmt.Sprintf(format, args...))
}

// Validate checks one event, as its JSON encoding, against class className
// and returns every error found.
func (s *ocsfSchema) Validate(className string, event any) []string {
	raw, err := json.Marshal(event)
	if err != nil {
		return []string{"event: " + err.Error()}
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	var ev map[string]any
	if err := dec.Decode(&ev); err != nil {
		return []string{"event: " + err.Error()}
	}
	v := &validator{s: s, profiles: map[string]bool{}}
	class, err := s.item("class:" + className)
	if err != nil {
		return []string{"schema: " + err.Error()}
	}
	if md, ok := ev["metadata"].(map[string]any); ok {
		if ps, ok := md["profiles"].([]any); ok {
			for i, p := range ps {
				name, _ := p.(string)
				if !s.profiles[name] {
					v.errorf(fmt.Sprintf("metadata.profiles[%d]", i), "unknown profile %q", p)
				}
				v.profiles[name] = true
			}
		}
		if ver, ok := md["version"].(string); ok && ver != s.version {
			v.errorf("metadata.version", "%q is not the schema version %q", ver, s.version)
		}
	}
	want := map[string]int{"class_uid": class.uid, "category_uid": class.category}
	for k, n := range want {
		if got, _ := ev[k].(json.Number); got.String() != strconv.Itoa(n) {
			v.errorf(k, "is %v, want %d", ev[k], n)
		}
	}
	if a, err1 := intOf(ev["activity_id"]); err1 == nil {
		if tu, err2 := intOf(ev["type_uid"]); err2 == nil && tu != int64(class.uid)*100+a {
			v.errorf("type_uid", "is %d, want class_uid*100+activity_id = %d", tu, int64(class.uid)*100+a)
		}
	}
	v.object("", ev, class)
	return v.errs
}

func intOf(x any) (int64, error) {
	n, ok := x.(json.Number)
	if !ok {
		return 0, fmt.Errorf("not a number")
	}
	return n.Int64()
}

// object validates one class or object instance.
func (v *validator) object(path string, val map[string]any, it *ocsfItem) {
	attrs := map[string]map[string]any{}
	for k, a := range it.attrs {
		if p, ok := a["profile"].(string); ok && !v.profiles[p] {
			continue
		}
		attrs[k] = a
	}
	if len(attrs) == 0 {
		// An object with no attributes ("object", for unmapped) takes anything.
		v.noEmptyStrings(path, val)
		return
	}
	join := func(k string) string {
		if path == "" {
			return k
		}
		return path + "." + k
	}
	keys := make([]string, 0, len(val))
	for k := range val {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		if _, ok := attrs[k]; !ok {
			v.errorf(join(k), "attribute %q is not defined in %s", k, it.name)
		}
	}
	names := make([]string, 0, len(attrs))
	for k := range attrs {
		names = append(names, k)
	}
	sort.Strings(names)
	for _, k := range names {
		a := attrs[k]
		x, present := val[k]
		if !present || x == nil {
			if a["requirement"] == "required" {
				v.errorf(join(k), "required attribute is missing from %s", it.name)
			}
			continue
		}
		if dep, ok := a["@deprecated"].(map[string]any); ok {
			v.errorf(join(k), "deprecated since %v: %v", dep["since"], dep["message"])
		}
		if a["is_array"] == true {
			arr, ok := x.([]any)
			if !ok {
				v.errorf(join(k), "is %T, want an array", x)
				continue
			}
			for i, e := range arr {
				v.value(fmt.Sprintf("%s[%d]", join(k), i), e, a)
			}
		} else {
			v.value(join(k), x, a)
		}
		v.enum(join(k), val, k, a)
	}
	for kind, list := range it.constraints {
		n := 0
		for _, k := range list {
			if x, ok := val[k]; ok && x != nil {
				n++
			}
		}
		switch kind {
		case "at_least_one":
			if n == 0 {
				v.errorf(path, "%s needs at least one of %v", it.name, list)
			}
		case "just_one":
			if n != 1 {
				v.errorf(path, "%s needs exactly one of %v, has %d", it.name, list, n)
			}
		default:
			v.errorf(path, "unknown constraint %q in %s", kind, it.name)
		}
	}
}

// enum checks an enum attribute's value and its sibling.
func (v *validator) enum(path string, parent map[string]any, k string, a map[string]any) {
	enum, ok := a["enum"].(map[string]any)
	if !ok {
		return
	}
	values := []any{parent[k]}
	if arr, ok := parent[k].([]any); ok {
		values = arr
	}
	for _, x := range values {
		key := fmt.Sprint(x)
		e, ok := enum[key].(map[string]any)
		if !ok {
			v.errorf(path, "%v is not one of the enum's values", x)
			continue
		}
		sib, _ := a["sibling"].(string)
		if sib == "" {
			continue
		}
		got, has := parent[sib]
		switch {
		case key == "99" && !has:
			v.errorf(path, "is 99 (Other) without %s saying what it is", sib)
		case key != "99" && has && got != e["caption"]:
			v.errorf(path, "sibling %s is %v, want %q", sib, got, e["caption"])
		}
	}
}

// value checks one (non-array) value against an attribute's type.
func (v *validator) value(path string, x any, a map[string]any) {
	typ, _ := a["type"].(string)
	if !strings.HasSuffix(typ, "_t") {
		m, ok := x.(map[string]any)
		if !ok {
			v.errorf(path, "is %T, want object %s", x, typ)
			return
		}
		it, err := v.s.item(typ)
		if err != nil {
			v.errorf(path, "object %s: %v", typ, err)
			return
		}
		v.object(path, m, it)
		return
	}
	// Derived types (ip_t, timestamp_t, port_t…) name their base type.
	var constraints []map[string]any
	base := typ
	for {
		t, ok := v.s.types[base]
		if !ok {
			v.errorf(path, "SCHEMA BUG: type %s is not in the dictionary", base)
			return
		}
		constraints = append(constraints, t)
		next, _ := t["type"].(string)
		if next == "" {
			break
		}
		base = next
	}
	switch base {
	case "string_t":
		s, ok := x.(string)
		if !ok {
			v.errorf(path, "is %T, want %s", x, typ)
			return
		}
		if s == "" {
			v.errorf(path, "is an empty string")
		}
		for _, t := range constraints {
			if re, ok := t["regex"].(string); ok && !v.s.regex(re).MatchString(s) {
				v.errorf(path, "%q does not match the %s pattern", s, typ)
			}
			if ml, ok := t["max_len"].(float64); ok && len(s) > int(ml) {
				v.errorf(path, "%q is longer than %v", s, ml)
			}
		}
	case "integer_t", "long_t":
		n, err := intOf(x)
		if err != nil {
			v.errorf(path, "is %v, want an integer (%s)", x, typ)
			return
		}
		if base == "integer_t" && (n < math.MinInt32 || n > math.MaxInt32) {
			v.errorf(path, "%d does not fit integer_t", n)
		}
		for _, t := range constraints {
			if r, ok := t["range"].([]any); ok && (n < int64(r[0].(float64)) || n > int64(r[1].(float64))) {
				v.errorf(path, "%d is outside %v", n, r)
			}
		}
	case "float_t":
		n, ok := x.(json.Number)
		if _, err := n.Float64(); !ok || err != nil {
			v.errorf(path, "is %v, want a number", x)
		}
	case "boolean_t":
		if _, ok := x.(bool); !ok {
			v.errorf(path, "is %T, want a boolean", x)
		}
	case "json_t":
		v.noEmptyStrings(path, x)
	default:
		v.errorf(path, "type %s (base %s) is not handled by this validator", typ, base)
	}
}

// noEmptyStrings is mandate's own rule: an empty string is never a value,
// in unmapped or in json_t data either.
func (v *validator) noEmptyStrings(path string, x any) {
	switch y := x.(type) {
	case string:
		if y == "" {
			v.errorf(path, "is an empty string")
		}
	case []any:
		for i, e := range y {
			v.noEmptyStrings(fmt.Sprintf("%s[%d]", path, i), e)
		}
	case map[string]any:
		for k, e := range y {
			v.noEmptyStrings(path+"."+k, e)
		}
	}
}

func (s *ocsfSchema) regex(re string) *regexp.Regexp {
	if r, ok := s.regexes[re]; ok {
		return r
	}
	r := regexp.MustCompile(re)
	s.regexes[re] = r
	return r
}

// TestOCSFValidatorCatches: the validator is only worth its passes if it
// fails what the schema forbids. Each case breaks one rule of a valid event.
func TestOCSFValidatorCatches(t *testing.T) {
	s := loadOCSFSchema(t, ocsfSchemaDir)
	valid := func() map[string]any {
		return map[string]any{
			"class_uid": 6003, "category_uid": 6, "activity_id": 2, "activity_name": "Read", "type_uid": 600302,
			"severity_id": 1, "time": 1700000000000,
			"metadata":     map[string]any{"version": "1.8.0", "product": map[string]any{"name": "mandate"}, "profiles": []any{"security_control"}},
			"actor":        map[string]any{"app_name": "ci"},
			"api":          map[string]any{"operation": "check:read"},
			"src_endpoint": map[string]any{"ip": "10.0.0.1", "port": 4000},
		}
	}
	if errs := s.Validate("api_activity", valid()); len(errs) > 0 {
		t.Fatalf("the minimal valid event fails: %v", errs)
	}
	cases := []struct {
		name   string
		break_ func(m map[string]any)
		want   string
	}{
		{"missing src_endpoint", func(m map[string]any) { delete(m, "src_endpoint") }, "src_endpoint: required"},
		{"unknown attribute", func(m map[string]any) { m["agent_chain"] = []any{"x"} }, `attribute "agent_chain" is not defined`},
		{"unknown nested attribute", func(m map[string]any) { m["actor"].(map[string]any)["human"] = "alice" }, `actor.human: attribute "human"`},
		{"actor constraint", func(m map[string]any) { m["actor"] = map[string]any{"authorizations": []any{}} }, "actor needs at least one"},
		{"deprecated invoked_by", func(m map[string]any) { m["actor"].(map[string]any)["invoked_by"] = "user:alice" }, "actor.invoked_by: deprecated"},
		{"wrong type", func(m map[string]any) { m["time"] = "yesterday" }, "time: is yesterday, want an integer"},
		{"bad enum", func(m map[string]any) { m["severity_id"] = 7 }, "severity_id: 7 is not one of"},
		{"sibling disagrees", func(m map[string]any) { m["severity"] = "High" }, `sibling severity is High, want "Informational"`},
		{"other without name", func(m map[string]any) {
			m["activity_id"], m["type_uid"] = 99, 600399
			delete(m, "activity_name")
		}, "activity_id: is 99 (Other) without activity_name"},
		{"type_uid", func(m map[string]any) { m["type_uid"] = 600301 }, "type_uid: is 600301"},
		{"version", func(m map[string]any) { m["metadata"].(map[string]any)["version"] = "1.1.0" }, `"1.1.0" is not the schema version`},
		{"profile not declared", func(m map[string]any) {
			m["metadata"].(map[string]any)["profiles"] = []any{}
			m["action_id"], m["action"] = 1, "Allowed"
		}, `attribute "action_id" is not defined`},
		{"empty string", func(m map[string]any) { m["message"] = "" }, "message: is an empty string"},
		{"empty string in unmapped", func(m map[string]any) { m["unmapped"] = map[string]any{"x": []any{""}} }, "unmapped.x[0]: is an empty string"},
		{"bad ip", func(m map[string]any) { m["src_endpoint"] = map[string]any{"ip": "10.0.0.300"} }, "does not match the ip_t pattern"},
		{"port range", func(m map[string]any) { m["src_endpoint"].(map[string]any)["port"] = 70000 }, "70000 is outside"},
		{"array expected", func(m map[string]any) { m["resources"] = map[string]any{"uid": "repo:x"} }, "resources: is map[string]interface {}, want an array"},
		{"object not vendored", func(m map[string]any) { m["device"] = map[string]any{"name": "x"} }, `attribute "device" is not defined`},
		{"required in object", func(m map[string]any) { m["api"] = map[string]any{"service": map[string]any{"name": "mandate"}} }, "api.operation: required"},
		{"wrong class uid", func(m map[string]any) { m["class_uid"] = 3001 }, "class_uid: is 3001, want 6003"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			ev := valid()
			c.break_(ev)
			errs := s.Validate("api_activity", ev)
			for _, e := range errs {
				if strings.Contains(e, c.want) {
					return
				}
			}
			t.Fatalf("want an error containing %q, got %v", c.want, errs)
		})
	}
}
