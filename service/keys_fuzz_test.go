package service_test

import (
	"crypto/sha256"
	"encoding/hex"
	"testing"

	"github.com/mandate-dev/mandate/service"
)

// FuzzParseKeys: a keys file is refused with an error, or every key it
// accepts has a name and a known role; it never panics.
func FuzzParseKeys(f *testing.F) {
	sum := sha256.Sum256([]byte("k"))
	h := hex.EncodeToString(sum[:])
	for _, s := range []string{
		"keys:\n  - {name: ci, role: checker, sha256: " + h + "}\n",
		"keys:\n  - {name: gw, role: checker, sha256: " + h + ", counts_for_bounds: true}\n",
		"keys:\n  - {name: a, role: checker, sha256: " + h + ", colour: red}\n",
		"keys: []\n", "", "keys:\n  - name: [\n", "keys: {a: b}\n", "- 1\n", "keys:\n  - &a {name: x}\n  - *a\n",
	} {
		f.Add([]byte(s))
	}
	roles := map[service.Role]bool{}
	for _, r := range service.Roles {
		roles[r] = true
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		keys, err := service.ParseKeys(b)
		if err != nil {
			return
		}
		key, ok := keys.Lookup("k")
		if ok && (key.Name == "" || !roles[key.Role]) {
			t.Fatalf("%q: accepted a key %+v without a name or a known role", b, key)
		}
	})
}
