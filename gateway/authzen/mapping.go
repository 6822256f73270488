package authzen

import (
	"strings"

	"github.com/mandate-dev/mandate/schema"
)

// SpiceDB object ids allow only [a-zA-Z0-9/_|\-=+]. AuthZEN ids are any
// string: e-mail addresses, routes such as "/todos/{todoId}", numbers. EncodeID
// maps them one to one onto SpiceDB's alphabet: every byte outside it, and
// the escape character '|' itself, becomes '|' followed by two upper-case hex
// digits. "rick@the-citadel.com" is stored as "rick|40the-citadel|2Ecom".
// Ids already in SpiceDB's alphabet without a '|' (mandate's own agent ids,
// "alice", "101") are unchanged.

const hexDigits = "0123456789ABCDEF"

func plainIDByte(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' ||
		c == '/' || c == '_' || c == '-' || c == '=' || c == '+'
}

// EncodeID maps an AuthZEN id to a SpiceDB object id.
func EncodeID(id string) string {
	n := 0
	for i := 0; i < len(id); i++ {
		if !plainIDByte(id[i]) {
			n++
		}
	}
	if n == 0 {
		return id
	}
	var b strings.Builder
	b.Grow(len(id) + 2*n)
	for i := 0; i < len(id); i++ {
		c := id[i]
		if plainIDByte(c) {
			b.WriteByte(c)
			continue
		}
		b.WriteByte('|')
		b.WriteByte(hexDigits[c>>4])
		b.WriteByte(hexDigits[c&0xF])
	}
	return b.String()
}

// DecodeID reverses EncodeID. It reports false for an id EncodeID cannot
// produce (a stray '|', lower-case hex, an escaped byte that needs no
// escaping): such an object, written by another tool, has no AuthZEN id.
func DecodeID(s string) (string, bool) {
	if !strings.Contains(s, "|") {
		for i := 0; i < len(s); i++ {
			if !plainIDByte(s[i]) {
				return "", false
			}
		}
		return s, true
	}
	var b strings.Builder
	b.Grow(len(s))
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c != '|' {
			if !plainIDByte(c) {
				return "", false
			}
			b.WriteByte(c)
			continue
		}
		if i+2 >= len(s) {
			return "", false
		}
		hi, lo := strings.IndexByte(hexDigits, s[i+1]), strings.IndexByte(hexDigits, s[i+2])
		if hi < 0 || lo < 0 {
			return "", false
		}
		d := byte(hi<<4 | lo)
		if plainIDByte(d) {
			return "", false
		}
		b.WriteByte(d)
		i += 2
	}
	return b.String(), true
}

// coreResourceSuffix names the definition that stands for a resource whose
// AuthZEN type is one of mandate's own types. mandate owns the definitions
// user, task, agent and grant, and a schema cannot give them permissions; an
// AuthZEN resource of type "user" (a user profile someone reads, say) is
// therefore the definition "user_resource".
const coreResourceSuffix = "_resource"

// ResourceType maps an AuthZEN resource type to the schema definition that
// holds it. It reports false for a type that can name no definition: one
// spelled like the stand-in of a core type ("user_resource"), which keeps
// the mapping one to one.
func ResourceType(t string) (string, bool) {
	if schema.IsCore(t) {
		return t + coreResourceSuffix, true
	}
	if base, ok := strings.CutSuffix(t, coreResourceSuffix); ok && schema.IsCore(base) {
		return "", false
	}
	return t, true
}

// Permission maps an AuthZEN action name to a permission: names are
// case-insensitive, and the permission is the name in lower case, so the
// HTTP method "GET" is the permission "get". A name that is not a valid
// permission name in lower case ("read:all", "can-read") matches no
// permission and is denied.
func Permission(name string) string { return strings.ToLower(name) }
