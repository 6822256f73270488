package credential

import (
	"fmt"
	"strings"

	"github.com/mandate-dev/mandate/engine"
)

// maxScopeItems bounds a scope: each item becomes a grant in one write.
const maxScopeItems = 64

// ScopeItem is one permission on one resource: "permission:type:id".
type ScopeItem struct {
	Permission string
	Resource   engine.Ref
}

func (s ScopeItem) String() string { return s.Permission + ":" + s.Resource.String() }

// ParseScope parses an RFC 6749 §3.3 scope of space-separated
// "permission:type:id" items. Empty is an empty scope; repeats are refused.
func ParseScope(s string) ([]ScopeItem, error) {
	var out []ScopeItem
	seen := map[string]bool{}
	for _, item := range strings.Split(s, " ") {
		if item == "" {
			if s != "" {
				return nil, fmt.Errorf("items are separated by exactly one space")
			}
			continue
		}
		perm, res, ok := strings.Cut(item, ":")
		if !ok {
			return nil, fmt.Errorf("%q is not permission:type:id", item)
		}
		if err := engine.ValidateName("scope", perm); err != nil {
			return nil, fmt.Errorf("%q has an invalid permission %q", item, perm)
		}
		ref, err := engine.ParseRef("scope", res)
		if err != nil {
			return nil, fmt.Errorf("%q has an invalid resource %q", item, res)
		}
		if seen[item] {
			return nil, fmt.Errorf("%q is repeated", item)
		}
		seen[item] = true
		out = append(out, ScopeItem{Permission: perm, Resource: ref})
		if len(out) > maxScopeItems {
			return nil, fmt.Errorf("more than %d items", maxScopeItems)
		}
	}
	return out, nil
}

// FormatScope joins items into a scope string.
func FormatScope(items []ScopeItem) string {
	parts := make([]string, len(items))
	for i, it := range items {
		parts[i] = it.String()
	}
	return strings.Join(parts, " ")
}
