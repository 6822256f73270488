package client

import (
	"errors"
	"fmt"
	"regexp"
	"strings"
)

// Template builds a resource reference such as "repo:{owner}/{name}" from
// named values (path values, tool arguments). It never yields an empty or
// shifted id: a value that is missing, empty, outside SpiceDB's id alphabet,
// or that contains one of the template's own separators (any character of
// the id's literal text, such as "/" above) is refused. Without that rule,
// owner "acme/api" and name "x" would name repo:acme/api/x, a different repo.
type Template struct {
	raw   string
	typ   string
	parts []part // the id, in order; never two placeholders side by side
	seps  string // every literal character of the id
}

type part struct {
	literal     string
	placeholder string // set when this part is a placeholder
}

var (
	typeRe        = regexp.MustCompile(`^([a-z][a-z0-9_]{0,62}[a-z0-9]/)?[a-z][a-z0-9_]{0,62}[a-z0-9]$`)
	placeholderRe = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_.-]{0,63}$`)
	idRe          = regexp.MustCompile(`^[a-zA-Z0-9/_|\-=+]+$`)
)

// maxIDLen is SpiceDB's longest object id.
const maxIDLen = 1024

// ParseTemplate parses "<type>:<id>", where the id mixes literal text and
// {placeholders}. The type is literal.
func ParseTemplate(s string) (*Template, error) {
	typ, id, ok := strings.Cut(s, ":")
	if !ok {
		return nil, fmt.Errorf("template %q: want <type>:<id>", s)
	}
	if !typeRe.MatchString(typ) {
		return nil, fmt.Errorf("template %q: %q is not a resource type", s, typ)
	}
	if id == "" {
		return nil, fmt.Errorf("template %q: empty id", s)
	}
	t := &Template{raw: s, typ: typ}
	var seps strings.Builder
	for rest := id; rest != ""; {
		open := strings.IndexByte(rest, '{')
		if open < 0 {
			open = len(rest)
		}
		if lit := rest[:open]; lit != "" {
			if strings.ContainsRune(lit, '}') {
				return nil, fmt.Errorf("template %q: unbalanced }", s)
			}
			if !idRe.MatchString(lit) {
				return nil, fmt.Errorf("template %q: %q is not allowed in an id", s, lit)
			}
			t.parts = append(t.parts, part{literal: lit})
			seps.WriteString(lit)
		}
		if open == len(rest) {
			break
		}
		end := strings.IndexByte(rest[open:], '}')
		if end < 0 {
			return nil, fmt.Errorf("template %q: unbalanced {", s)
		}
		name := rest[open+1 : open+end]
		if !placeholderRe.MatchString(name) {
			return nil, fmt.Errorf("template %q: {%s} is not a placeholder name", s, name)
		}
		if n := len(t.parts); n > 0 && t.parts[n-1].placeholder != "" {
			return nil, fmt.Errorf("template %q: {%s} follows {%s} with no separator between them", s, name, t.parts[n-1].placeholder)
		}
		t.parts = append(t.parts, part{placeholder: name})
		rest = rest[open+end+1:]
	}
	t.seps = seps.String()
	return t, nil
}

// MustParseTemplate is ParseTemplate for templates written in code.
func MustParseTemplate(s string) *Template {
	t, err := ParseTemplate(s)
	if err != nil {
		panic(err)
	}
	return t
}

// String is the template as written.
func (t *Template) String() string { return t.raw }

// Type is the resource type.
func (t *Template) Type() string { return t.typ }

// Fixed reports whether the template has no placeholders.
func (t *Template) Fixed() bool { return len(t.Placeholders()) == 0 }

// Placeholders are the placeholder names, in order.
func (t *Template) Placeholders() []string {
	var out []string
	for _, p := range t.parts {
		if p.placeholder != "" {
			out = append(out, p.placeholder)
		}
	}
	return out
}

// ErrBadValue is wrapped by every Expand error about a value.
var ErrBadValue = errors.New("bad template value")

// Expand fills the template. lookup returns a placeholder's value, or an
// error (wrapped in the result) when there is none or it is of the wrong
// kind.
func (t *Template) Expand(lookup func(name string) (string, error)) (string, error) {
	var b strings.Builder
	b.WriteString(t.typ)
	b.WriteByte(':')
	for _, p := range t.parts {
		if p.placeholder == "" {
			b.WriteString(p.literal)
			continue
		}
		v, err := lookup(p.placeholder)
		if err != nil {
			return "", fmt.Errorf("%w: {%s}: %w", ErrBadValue, p.placeholder, err)
		}
		switch {
		case v == "":
			return "", fmt.Errorf("%w: {%s} is empty", ErrBadValue, p.placeholder)
		case len(v) > maxIDLen:
			return "", fmt.Errorf("%w: {%s} is longer than %d bytes", ErrBadValue, p.placeholder, maxIDLen)
		case !idRe.MatchString(v):
			return "", fmt.Errorf("%w: {%s} may hold only letters, digits and / _ | - = +", ErrBadValue, p.placeholder)
		case t.seps != "" && strings.ContainsAny(v, t.seps):
			return "", fmt.Errorf("%w: {%s} contains a separator of %s (one of %q)", ErrBadValue, p.placeholder, t.raw, t.seps)
		}
		b.WriteString(v)
	}
	if b.Len()-len(t.typ)-1 > maxIDLen {
		return "", fmt.Errorf("%w: the id is longer than %d bytes", ErrBadValue, maxIDLen)
	}
	return b.String(), nil
}
