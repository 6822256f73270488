package mcpgateway

import (
	"bytes"
	"errors"
	"fmt"
	"net/url"
	"os"
	"regexp"
	"strings"

	"go.yaml.in/yaml/v3"

	"github.com/mandate-dev/mandate/client"
)

// File is the gateway's YAML configuration: the upstream MCP servers and the
// rules that map their tools, resources and prompts to mandate checks.
type File struct {
	Upstreams []Upstream `yaml:"upstreams"`
	Rules     []Rule     `yaml:"rules"`
	// Default is what happens to a tool, resource or prompt that no rule
	// names. Only "deny" exists: nothing without a rule is ever callable.
	Default string `yaml:"default"`
}

// Upstream is one MCP server behind the gateway: a command run over stdio,
// or a Streamable HTTP URL. Exactly one of Command and URL is set.
type Upstream struct {
	// Name prefixes its tools and prompts ("slack.read_channel").
	Name string `yaml:"name"`
	// Command is the program and its arguments, run with the gateway's
	// environment plus Env.
	Command []string          `yaml:"command"`
	Env     map[string]string `yaml:"env"`
	// URL is a Streamable HTTP endpoint.
	URL string `yaml:"url"`
}

// Rule maps one tool, resource URI template or prompt to a check. Exactly one
// of Tool, URI and Prompt is set.
type Rule struct {
	// Tool is "<upstream>.<tool>".
	Tool string `yaml:"tool"`
	// URI is a resource URI template of Upstream, such as
	// "crm://customers/{id}"; each {name} matches one path segment.
	URI      string `yaml:"uri"`
	Upstream string `yaml:"upstream"`
	// Prompt is "<upstream>.<prompt>".
	Prompt string `yaml:"prompt"`
	// Permission is checked on Resource.
	Permission string `yaml:"permission"`
	// Resource is a template, "<type>:<id>", filled from the tool's string
	// arguments, the URI's {names} or the prompt's arguments.
	Resource string `yaml:"resource"`

	line     int
	template *client.Template
	uriRe    *regexp.Regexp // for URI rules
}

// Line is where the rule starts in the file.
func (r *Rule) Line() int { return r.line }

// Template is the compiled resource template; never nil once loaded.
func (r *Rule) Template() *client.Template { return r.template }

var (
	nameRe       = regexp.MustCompile(`^[a-z][a-z0-9_-]{0,62}$`)
	permissionRe = regexp.MustCompile(`^[a-z][a-z0-9_]{0,62}[a-z0-9]$`)
	uriVarRe     = regexp.MustCompile(`\{([A-Za-z_][A-Za-z0-9_.-]{0,63})\}`)
)

// LoadFile reads and validates a config file. Every error is one line that
// names the file, the line and the field at fault.
func LoadFile(path string) (*File, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	f, err := Parse(raw)
	if err != nil {
		return nil, fmt.Errorf("%s:%w", path, err)
	}
	return f, nil
}

// lineError is "<line>: <field>: <problem>".
func lineError(line int, field, format string, args ...any) error {
	return fmt.Errorf("%d: %s: %s", line, field, fmt.Sprintf(format, args...))
}

// Parse validates a config. Errors start with the line number.
func Parse(raw []byte) (*File, error) {
	var root yaml.Node
	if err := yaml.Unmarshal(raw, &root); err != nil {
		return nil, oneLine(err)
	}
	if len(root.Content) == 0 {
		return nil, lineError(1, "config", "empty file")
	}
	dec := yaml.NewDecoder(bytes.NewReader(raw))
	dec.KnownFields(true)
	var f File
	if err := dec.Decode(&f); err != nil {
		return nil, oneLine(err)
	}
	doc := root.Content[0]
	if err := f.validate(doc); err != nil {
		return nil, err
	}
	return &f, nil
}

// oneLine turns yaml's "yaml: line 3: …" (possibly several lines) into "3: …".
func oneLine(err error) error {
	var te *yaml.TypeError
	msg := err.Error()
	if errors.As(err, &te) && len(te.Errors) > 0 {
		msg = te.Errors[0]
	}
	msg = strings.TrimPrefix(msg, "yaml: ")
	// yaml quotes the offending value as it is, newlines included; a startup
	// mistake is one line, so escape them.
	msg = strings.NewReplacer("\r", `\r`, "\n", `\n`).Replace(msg)
	if rest, ok := strings.CutPrefix(msg, "line "); ok {
		if n, tail, ok := strings.Cut(rest, ": "); ok {
			return fmt.Errorf("%s: %s", n, tail)
		}
	}
	return fmt.Errorf("1: %s", msg)
}

// child finds key in a mapping node; nil if absent.
func child(n *yaml.Node, key string) *yaml.Node {
	if n == nil || n.Kind != yaml.MappingNode {
		return nil
	}
	for i := 0; i+1 < len(n.Content); i += 2 {
		if n.Content[i].Value == key {
			return n.Content[i+1]
		}
	}
	return nil
}

func item(n *yaml.Node, i int) *yaml.Node {
	if n == nil || n.Kind != yaml.SequenceNode || i >= len(n.Content) {
		return nil
	}
	return n.Content[i]
}

// lineOf is the line of field in node, else the node's own line.
func lineOf(n *yaml.Node, field string) int {
	if c := child(n, field); c != nil {
		return c.Line
	}
	if n != nil {
		return n.Line
	}
	return 1
}

func (f *File) validate(doc *yaml.Node) error {
	switch f.Default {
	case "", "deny":
		f.Default = "deny"
	default:
		return lineError(lineOf(doc, "default"), "default", "%q: only deny is supported; a tool with no rule is never callable", f.Default)
	}
	ups := child(doc, "upstreams")
	if len(f.Upstreams) == 0 {
		return lineError(lineOf(doc, "upstreams"), "upstreams", "at least one upstream is required")
	}
	names := map[string]bool{}
	for i := range f.Upstreams {
		u, n := &f.Upstreams[i], item(ups, i)
		field := fmt.Sprintf("upstreams[%d]", i)
		if !nameRe.MatchString(u.Name) {
			return lineError(lineOf(n, "name"), field+".name", "%q must be lower case letters, digits, _ or - (it prefixes tool names)", u.Name)
		}
		if names[u.Name] {
			return lineError(lineOf(n, "name"), field+".name", "%q is named twice", u.Name)
		}
		names[u.Name] = true
		switch {
		case len(u.Command) > 0 && u.URL != "":
			return lineError(lineOf(n, "url"), field, "set command or url, not both")
		case len(u.Command) > 0:
			if u.Command[0] == "" {
				return lineError(lineOf(n, "command"), field+".command", "the program is empty")
			}
		case u.URL != "":
			p, err := url.Parse(u.URL)
			if err != nil || (p.Scheme != "http" && p.Scheme != "https") || p.Host == "" {
				return lineError(lineOf(n, "url"), field+".url", "%q is not an http(s) URL", u.URL)
			}
		default:
			return lineError(lineOf(n, "name"), field, "set command (stdio) or url (Streamable HTTP)")
		}
		if len(u.Env) > 0 && u.URL != "" {
			return lineError(lineOf(n, "env"), field+".env", "env applies to a command only")
		}
	}
	rules := child(doc, "rules")
	seen := map[string]int{}
	for i := range f.Rules {
		r, n := &f.Rules[i], item(rules, i)
		r.line = lineOf(n, "")
		if err := r.compile(fmt.Sprintf("rules[%d]", i), n, names); err != nil {
			return err
		}
		key := r.Tool + "\x00" + r.Prompt + "\x00" + r.Upstream + "\x00" + r.URI
		if prev, dup := seen[key]; dup {
			return lineError(r.line, fmt.Sprintf("rules[%d]", i), "repeats the rule on line %d", prev)
		}
		seen[key] = r.line
	}
	return nil
}

func (r *Rule) compile(field string, n *yaml.Node, upstreams map[string]bool) error {
	set := 0
	for _, s := range []string{r.Tool, r.URI, r.Prompt} {
		if s != "" {
			set++
		}
	}
	if set != 1 {
		return lineError(r.line, field, "set exactly one of tool, uri and prompt")
	}
	if !permissionRe.MatchString(r.Permission) {
		return lineError(lineOf(n, "permission"), field+".permission", "%q is not a permission name", r.Permission)
	}
	t, err := client.ParseTemplate(r.Resource)
	if err != nil {
		return lineError(lineOf(n, "resource"), field+".resource", "%v", err)
	}
	r.template = t
	switch {
	case r.Tool != "" || r.Prompt != "":
		which, name := "tool", r.Tool
		if r.Prompt != "" {
			which, name = "prompt", r.Prompt
		}
		up, local, ok := strings.Cut(name, ".")
		if !ok || local == "" {
			return lineError(lineOf(n, which), field+"."+which, "%q must be <upstream>.<name>", name)
		}
		if !upstreams[up] {
			return lineError(lineOf(n, which), field+"."+which, "%q names no upstream %q", name, up)
		}
		if r.Upstream != "" {
			return lineError(lineOf(n, "upstream"), field+".upstream", "only for uri rules; a %s is named <upstream>.<name>", which)
		}
	default:
		if !upstreams[r.Upstream] {
			return lineError(lineOf(n, "upstream"), field+".upstream", "%q names no upstream; a uri rule says which upstream serves it", r.Upstream)
		}
		re, vars, err := compileURI(r.URI)
		if err != nil {
			return lineError(lineOf(n, "uri"), field+".uri", "%v", err)
		}
		for _, p := range t.Placeholders() {
			if !vars[p] {
				return lineError(lineOf(n, "resource"), field+".resource", "{%s} is not a variable of uri %q", p, r.URI)
			}
		}
		r.uriRe = re
	}
	return nil
}

// compileURI turns "crm://customers/{id}" into an anchored regexp in which
// each {name} matches one non-empty segment (no "/", "?" or "#").
func compileURI(tmpl string) (*regexp.Regexp, map[string]bool, error) {
	if !strings.Contains(tmpl, "://") {
		return nil, nil, fmt.Errorf("%q is not a URI template (scheme://…)", tmpl)
	}
	vars := map[string]bool{}
	var b strings.Builder
	b.WriteString("^")
	last := 0
	for _, m := range uriVarRe.FindAllStringSubmatchIndex(tmpl, -1) {
		lit := tmpl[last:m[0]]
		if strings.ContainsAny(lit, "{}") {
			return nil, nil, fmt.Errorf("%q: malformed {variable}", tmpl)
		}
		if last > 0 && lit == "" {
			return nil, nil, fmt.Errorf("%q: two variables with nothing between them", tmpl)
		}
		b.WriteString(regexp.QuoteMeta(lit))
		name := tmpl[m[2]:m[3]]
		if vars[name] {
			return nil, nil, fmt.Errorf("%q: {%s} appears twice", tmpl, name)
		}
		vars[name] = true
		b.WriteString("([^/?#]+)")
		last = m[1]
	}
	if rest := tmpl[last:]; strings.ContainsAny(rest, "{}") {
		return nil, nil, fmt.Errorf("%q: malformed {variable}", tmpl)
	} else {
		b.WriteString(regexp.QuoteMeta(rest))
	}
	b.WriteString("$")
	re, err := regexp.Compile(b.String())
	if err != nil {
		return nil, nil, fmt.Errorf("%q: %v", tmpl, err)
	}
	return re, vars, nil
}

// matchURI returns the URI's variables if it matches the rule.
func (r *Rule) matchURI(uri string) (map[string]string, bool) {
	m := r.uriRe.FindStringSubmatch(uri)
	if m == nil {
		return nil, false
	}
	vars := map[string]string{}
	i := 1
	for _, v := range uriVarRe.FindAllStringSubmatch(r.URI, -1) {
		vars[v[1]] = m[i]
		i++
	}
	return vars, true
}
