package engine

import (
	"crypto/rand"
	"encoding/base32"
	"fmt"
	"strings"
	"time"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/types/known/structpb"
)

// Ref is an object reference, written "type:id".
type Ref struct {
	Type string
	ID   string
}

func (r Ref) String() string { return r.Type + ":" + r.ID }

// IsZero reports whether r is empty.
func (r Ref) IsZero() bool { return r.Type == "" && r.ID == "" }

// matcher validates a string. The validators are hand-written rather than
// regular expressions because they run on every check.
type matcher func(string) bool

// MatchString reports whether s is valid.
func (m matcher) MatchString(s string) bool { return m(s) }

var (
	// typeRE is ^[a-z][a-z0-9_]{1,62}[a-z0-9]$, SpiceDB's type name.
	typeRE = matcher(validName)
	// idRE is ^[a-zA-Z0-9/_|\-=+]+$, SpiceDB's object id alphabet minus the wildcard.
	idRE = matcher(validID)
	// relationRE is ^[a-z][a-z0-9_]{1,62}[a-z0-9]$, SpiceDB's relation name.
	relationRE = matcher(validName)
)

func validName(s string) bool {
	if len(s) < 3 || len(s) > 64 {
		return false
	}
	if c := s[0]; c < 'a' || c > 'z' {
		return false
	}
	for i := 1; i < len(s)-1; i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '_') {
			return false
		}
	}
	c := s[len(s)-1]
	return c >= 'a' && c <= 'z' || c >= '0' && c <= '9'
}

func validID(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' ||
			c == '/' || c == '_' || c == '|' || c == '-' || c == '=' || c == '+') {
			return false
		}
	}
	return true
}

// maxIDLen is SpiceDB's limit on object ids.
const maxIDLen = 1024

// ParseRef parses "type:id". field names the request field for errors.
func ParseRef(field, s string) (Ref, error) {
	if s == "" {
		return Ref{}, invalid(field, "is required")
	}
	t, id, ok := strings.Cut(s, ":")
	if !ok {
		return Ref{}, invalid(field, "%q is not a reference of the form type:id", s)
	}
	if !typeRE.MatchString(t) {
		return Ref{}, invalid(field, "%q has an invalid type %q", s, t)
	}
	if len(id) > maxIDLen || !idRE.MatchString(id) {
		return Ref{}, invalid(field, "%q has an invalid id %q", s, id)
	}
	return Ref{Type: t, ID: id}, nil
}

// ValidateName checks a relation or permission name.
func ValidateName(field, s string) error {
	if s == "" {
		return invalid(field, "is required")
	}
	if !relationRE.MatchString(s) {
		return invalid(field, "%q is not a valid permission or relation name", s)
	}
	return nil
}

// ParseTTL parses a positive Go duration no longer than max (when max > 0).
func ParseTTL(field, s string, max time.Duration) (time.Duration, error) {
	if s == "" {
		return 0, invalid(field, "is required, for example \"15m\"")
	}
	d, err := time.ParseDuration(s)
	if err != nil {
		return 0, invalid(field, "%q is not a duration such as \"90s\", \"15m\" or \"2h\"", s)
	}
	if d <= 0 {
		return 0, invalid(field, "must be positive, got %q", s)
	}
	if d < time.Second {
		return 0, invalid(field, "must be at least 1s, got %q", s)
	}
	if max > 0 && d > max {
		return 0, invalid(field, "%q is longer than the maximum %s", s, max)
	}
	return d, nil
}

// Relationship is a parsed "type:id#relation@type:id[#relation]".
type Relationship struct {
	Resource        Ref
	Relation        string
	Subject         Ref
	SubjectRelation string
	// Caveat, when set, conditions the relationship, with CaveatContext as
	// the values stored with it (SpiceDB's "[name]" or "[name:{...}]").
	Caveat        string
	CaveatContext *structpb.Struct
}

func (r Relationship) String() string {
	s := r.Resource.String() + "#" + r.Relation + "@" + r.Subject.String()
	if r.SubjectRelation != "" {
		s += "#" + r.SubjectRelation
	}
	if r.Caveat != "" {
		s += caveatSuffix(r.Caveat, r.CaveatContext)
	}
	return s
}

// ParseRelationship parses "type:id#relation@type:id" with an optional
// "#relation" on the subject. The subject id may be "*" for a wildcard.
func ParseRelationship(field, s string) (Relationship, error) {
	if s == "" {
		return Relationship{}, invalid(field, "is required")
	}
	rest, caveat, ctx, err := cutCaveat(field, s)
	if err != nil {
		return Relationship{}, err
	}
	res, sub, ok := strings.Cut(rest, "@")
	if !ok {
		return Relationship{}, invalid(field, "%q is not of the form type:id#relation@type:id", s)
	}
	resRef, rel, ok := strings.Cut(res, "#")
	if !ok {
		return Relationship{}, invalid(field, "%q has no #relation", s)
	}
	r := Relationship{Relation: rel, Caveat: caveat, CaveatContext: ctx}
	if r.Resource, err = ParseRef(field, resRef); err != nil {
		return Relationship{}, err
	}
	if err := ValidateName(field, rel); err != nil {
		return Relationship{}, err
	}
	subRef, subRel, hasSubRel := strings.Cut(sub, "#")
	if hasSubRel {
		if err := ValidateName(field, subRel); err != nil {
			return Relationship{}, err
		}
		r.SubjectRelation = subRel
	}
	if t, id, ok := strings.Cut(subRef, ":"); ok && id == "*" && !hasSubRel {
		if !typeRE.MatchString(t) {
			return Relationship{}, invalid(field, "%q has an invalid subject type %q", s, t)
		}
		r.Subject = Ref{Type: t, ID: "*"}
		return r, nil
	}
	if r.Subject, err = ParseRef(field, subRef); err != nil {
		return Relationship{}, err
	}
	return r, nil
}

// cutCaveat splits SpiceDB's caveat suffix off a relationship string:
// "[name]" or "[name:{json object}]".
func cutCaveat(field, s string) (rest, name string, ctx *structpb.Struct, err error) {
	if !strings.HasSuffix(s, "]") {
		return s, "", nil, nil
	}
	i := strings.Index(s, "[")
	if i < 0 {
		return "", "", nil, invalid(field, "%q has a ']' without '['", s)
	}
	rest, inner := s[:i], s[i+1:len(s)-1]
	name, raw, hasCtx := strings.Cut(inner, ":")
	if err := ValidateName(field, name); err != nil {
		return "", "", nil, invalid(field, "%q has an invalid caveat name %q", s, name)
	}
	if hasCtx {
		ctx = &structpb.Struct{}
		if err := protojson.Unmarshal([]byte(raw), ctx); err != nil {
			return "", "", nil, invalid(field, "the context of caveat %s must be a JSON object: %v", name, err)
		}
		if len(ctx.GetFields()) == 0 {
			ctx = nil
		}
	}
	return rest, name, ctx, nil
}

// caveatSuffix writes "[name]" or "[name:{json}]".
func caveatSuffix(name string, ctx *structpb.Struct) string {
	if len(ctx.GetFields()) == 0 {
		return "[" + name + "]"
	}
	raw, err := protojson.MarshalOptions{}.Marshal(ctx)
	if err != nil {
		return "[" + name + "]"
	}
	return "[" + name + ":" + string(raw) + "]"
}

var idEncoding = base32.NewEncoding("0123456789abcdefghjkmnpqrstvwxyz").WithPadding(base32.NoPadding)

// newID returns prefix_ followed by 128 random bits: unique and unguessable.
func newID(prefix string) string {
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic(fmt.Sprintf("crypto/rand failed: %v", err))
	}
	return prefix + "_" + idEncoding.EncodeToString(b[:])
}

// ValidateID checks a bare id from a URL path against a prefix.
func ValidateID(field, prefix, id string) error {
	if id == "" {
		return invalid(field, "is required")
	}
	if len(id) > maxIDLen || len(id) <= len(prefix)+1 || !strings.HasPrefix(id, prefix+"_") || !idRE.MatchString(id) {
		return invalid(field, "%q is not a %s id (%s_…)", id, prefix, prefix)
	}
	return nil
}

// OrEmpty is the reference as "type:id", or "" for the zero reference.
func (r Ref) OrEmpty() string {
	if r.IsZero() {
		return ""
	}
	return r.String()
}

// RefStrings writes references as "type:id".
func RefStrings(rs []Ref) []string {
	out := make([]string, len(rs))
	for i, r := range rs {
		out[i] = r.String()
	}
	return out
}
