//go:build cluster

package engine_test

import (
	"testing"

	"github.com/mandate-dev/mandate/internal/testenv"
)

// The third backend: a standalone SpiceDB process, built from go.mod's
// version, on its own Postgres database with its Watch on, reached over TCP
// as mandate's --spicedb-endpoint reaches it. Behind the cluster build tag:
// the first run builds the binary (minutes); .ci/run enables it.
func init() {
	extraBackends = append(extraBackends, backend{name: "spicedb", open: func(t testing.TB) dialer {
		return testenv.StartSpiceDB(t, testenv.SpiceDBDatabase(t))
	}})
}
