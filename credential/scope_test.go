package credential

import (
	"strings"
	"testing"
)

var scopeCases = []struct {
	in   string
	want int // items; -1 is a refusal
}{
	{"", 0},
	{"read:repo:acme/api", 1},
	{"read:repo:acme/api deploy:environment:staging", 2},
	{"read:repo:acme/api read:repo:acme/api", -1},
	{"read:repo:acme/api  deploy:environment:staging", -1},
	{" read:repo:acme/api", -1},
	{"read:repo:acme/api ", -1},
	{"read:repo", -1},
	{"read", -1},
	{"Read:repo:x", -1},
	{"read:repo:a b", -1},
	{"read:repo:a:b", -1},
	{"read:repo:*", -1},
	{"read:\x00:x", -1},
	{"read:repo:" + strings.Repeat("a", 1025), -1},
}

func TestParseScope(t *testing.T) {
	for _, tc := range scopeCases {
		got, err := ParseScope(tc.in)
		switch {
		case tc.want < 0 && err == nil:
			t.Errorf("ParseScope(%q) = %v, want a refusal", tc.in, got)
		case tc.want >= 0 && (err != nil || len(got) != tc.want):
			t.Errorf("ParseScope(%q) = %v, %v; want %d items", tc.in, got, err, tc.want)
		case err == nil && FormatScope(got) != tc.in:
			t.Errorf("FormatScope(ParseScope(%q)) = %q", tc.in, FormatScope(got))
		}
	}
}

// FuzzParseScope: the parser never panics, and what it accepts formats back
// to the same string and parses again to the same items.
func FuzzParseScope(f *testing.F) {
	for _, tc := range scopeCases {
		f.Add(tc.in)
	}
	f.Fuzz(func(t *testing.T, s string) {
		items, err := ParseScope(s)
		if err != nil {
			return
		}
		if FormatScope(items) != s {
			t.Fatalf("round trip %q → %q", s, FormatScope(items))
		}
		again, err := ParseScope(FormatScope(items))
		if err != nil || len(again) != len(items) {
			t.Fatalf("reparse of %q: %v %v", s, again, err)
		}
	})
}

func TestEscape(t *testing.T) {
	for in, want := range map[string]string{
		"alice":             "alice",
		"alice@example.com": "alice=40example=2Ecom",
		"a=b":               "a=3Db",
		"ünï":               "=C3=BCn=C3=AF",
		"a/b|c+d":           "a=2Fb=7Cc=2Bd",
	} {
		if got := Escape(in); got != want {
			t.Errorf("Escape(%q) = %q, want %q", in, got, want)
		}
	}
}

// FuzzEscape: every escaped string is a valid SpiceDB id, and distinct
// inputs never escape alike.
func FuzzEscape(f *testing.F) {
	f.Add("alice@example.com", "alice=40example.com")
	f.Add("", "x")
	f.Fuzz(func(t *testing.T, a, b string) {
		ea, eb := Escape(a), Escape(b)
		for i := 0; i < len(ea); i++ {
			c := ea[i]
			if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '-' || c == '=') {
				t.Fatalf("Escape(%q) = %q holds %q", a, ea, c)
			}
		}
		if a != b && ea == eb {
			t.Fatalf("Escape(%q) == Escape(%q)", a, b)
		}
	})
}
