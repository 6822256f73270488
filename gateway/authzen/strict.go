package authzen

import (
	"bytes"
	"encoding/json"
	"fmt"
	"unicode/utf8"
)

// maxDepth bounds how deeply a request's JSON may nest.
const maxDepth = 64

// strictJSON refuses what encoding/json lets through but the native API's
// protojson refuses: invalid UTF-8, and an object with the same key twice
// (where the last would silently win, so two parsers could read one request
// differently). It names the member at fault.
func strictJSON(raw []byte) error {
	if !utf8.Valid(raw) {
		return bad("body", "is not valid UTF-8")
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	return strictValue(dec, "", 0)
}

func strictValue(dec *json.Decoder, path string, depth int) error {
	if depth > maxDepth {
		return bad("body", "nests deeper than %d levels", maxDepth)
	}
	tok, err := dec.Token()
	if err != nil {
		return bad("body", "is not valid JSON: %v", err)
	}
	switch tok {
	case json.Delim('{'):
		seen := map[string]bool{}
		for dec.More() {
			kt, err := dec.Token()
			if err != nil {
				return bad("body", "is not valid JSON: %v", err)
			}
			k, _ := kt.(string)
			p := k
			if path != "" {
				p = path + "." + k
			}
			if seen[k] {
				return bad(p, "appears twice in one object")
			}
			seen[k] = true
			if err := strictValue(dec, p, depth+1); err != nil {
				return err
			}
		}
	case json.Delim('['):
		for i := 0; dec.More(); i++ {
			if err := strictValue(dec, fmt.Sprintf("%s[%d]", path, i), depth+1); err != nil {
				return err
			}
		}
	default:
		return nil
	}
	if _, err := dec.Token(); err != nil { // the closing delimiter
		return bad("body", "is not valid JSON: %v", err)
	}
	return nil
}
