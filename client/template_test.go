package client

import (
	"errors"
	"strings"
	"testing"
)

func TestTemplate(t *testing.T) {
	for _, tc := range []struct {
		tmpl   string
		values map[string]string
		want   string // "" means refused
	}{
		{"repo:{owner}/{name}", map[string]string{"owner": "acme", "name": "api"}, "repo:acme/api"},
		{"repo:{owner}/{name}", map[string]string{"owner": "acme/api", "name": "x"}, ""}, // would shift
		{"repo:{owner}/{name}", map[string]string{"owner": "acme", "name": "api/x"}, ""},
		{"repo:{owner}/{name}", map[string]string{"owner": "acme"}, ""},               // missing
		{"repo:{owner}/{name}", map[string]string{"owner": "", "name": "api"}, ""},    // empty
		{"repo:{owner}/{name}", map[string]string{"owner": "a b", "name": "api"}, ""}, // outside the alphabet
		{"repo:{owner}/{name}", map[string]string{"owner": "a:b", "name": "api"}, ""},
		{"repo:{owner}/{name}", map[string]string{"owner": "a#b", "name": "api"}, ""},
		{"repo:{owner}/{name}", map[string]string{"owner": "*", "name": "api"}, ""},
		{"channel:{channel_id}", map[string]string{"channel_id": "C042"}, "channel:C042"},
		{"channel:{channel_id}", map[string]string{"channel_id": strings.Repeat("a", 1025)}, ""},
		{"environment:production", nil, "environment:production"},
		{"customer:{id}-pii", map[string]string{"id": "c-1"}, ""}, // "-" is a separator here
		{"customer:{id}-pii", map[string]string{"id": "c1"}, "customer:c1-pii"},
	} {
		tp, err := ParseTemplate(tc.tmpl)
		if err != nil {
			t.Fatalf("%s: %v", tc.tmpl, err)
		}
		got, err := tp.Expand(func(name string) (string, error) {
			v, ok := tc.values[name]
			if !ok {
				return "", errors.New("missing")
			}
			return v, nil
		})
		if tc.want == "" {
			if err == nil || !errors.Is(err, ErrBadValue) || got != "" {
				t.Errorf("%s %v: got %q, %v; want refused", tc.tmpl, tc.values, got, err)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("%s %v: got %q, %v; want %q", tc.tmpl, tc.values, got, err, tc.want)
		}
	}
}

func TestParseTemplateRefuses(t *testing.T) {
	for _, s := range []string{"", "repo", "repo:", ":x", "Repo:x", "repo:{owner}{name}", "repo:{owner", "repo:owner}", "repo:{}", "repo:{a b}", "repo:a b", "repo:{x}#y", "repo:{x}@y"} {
		if _, err := ParseTemplate(s); err == nil {
			t.Errorf("%q: parsed", s)
		}
	}
}

// FuzzTemplate: whatever the values, an expansion is either refused or
// yields exactly the values in the template's slots, so it round-trips.
func FuzzTemplate(f *testing.F) {
	f.Add("acme", "api")
	f.Add("acme/api", "x")
	f.Add("", "x")
	f.Add("a:b", "c#d")
	tp := MustParseTemplate("repo:{owner}/{name}")
	f.Fuzz(func(t *testing.T, owner, name string) {
		got, err := tp.Expand(func(n string) (string, error) {
			if n == "owner" {
				return owner, nil
			}
			return name, nil
		})
		if err != nil {
			return
		}
		if got != "repo:"+owner+"/"+name || strings.Count(got, "/") != 1 || owner == "" || name == "" {
			t.Fatalf("owner %q name %q gave %q", owner, name, got)
		}
	})
}
