package engine

import (
	"strings"

	v1 "github.com/authzed/authzed-go/proto/authzed/api/v1"
	"github.com/authzed/spicedb/pkg/datastore"
	"github.com/authzed/spicedb/pkg/datastore/revisionparsing"
	"github.com/authzed/spicedb/pkg/zedtoken"
)

// A decision must see every write this engine has acknowledged. Asking
// SpiceDB at full consistency is not quite enough: SpiceDB shares one call
// for the head revision among the requests that ask at once
// (internal/datastore/proxy/singleflight.go), so a check that arrives just
// after a write was acknowledged can join a call that started before the
// write committed, and be answered at the revision before it. The soak saw
// it on a loaded machine: a grant whose deletion had been acknowledged was
// allowed once more. So the engine remembers its newest write, and a
// decision read at an older revision is read again (see gather).

// NoteWrite records a write another replica made, as the watch delivers
// it: decisions from then on are not read from before it either.
func (e *Engine) NoteWrite(token string) { e.noteWrite(token) }

// noteWrite records token as this engine's newest acknowledged write.
func (e *Engine) noteWrite(token string) {
	if token == "" {
		return
	}
	rev, ok := tokenRevision(token)
	if !ok {
		return
	}
	for {
		cur := e.lastWrite.Load()
		if cur != nil && !rev.GreaterThan(cur.rev) {
			return
		}
		if e.lastWrite.CompareAndSwap(cur, &writeMark{token: token, rev: rev}) {
			return
		}
	}
}

// writeMark is a write's token and its parsed revision.
type writeMark struct {
	token string
	rev   datastore.Revision
}

// readBefore reports whether a read at token may have missed the write w: its
// revision is not at or after w's. A token that cannot be read counts as
// missing it.
func readBefore(token string, w *writeMark) bool {
	if w == nil || token == w.token {
		return false
	}
	rev, ok := tokenRevision(token)
	if !ok {
		return true
	}
	return !(rev.Equal(w.rev) || rev.GreaterThan(w.rev))
}

// tokenRevision decodes the revision of a ZedToken. The memory datastore's
// revisions (nanoseconds) and CockroachDB's (hybrid logical clocks) are
// decimal numbers and are read, and ordered, as hybrid logical clocks;
// Postgres's are encoded snapshots.
func tokenRevision(token string) (datastore.Revision, bool) {
	d, err := zedtoken.Decode(&v1.ZedToken{Token: token})
	if err != nil {
		return nil, false
	}
	s := d.GetV1().GetRevision()
	if s == "" {
		return nil, false
	}
	engine := "postgres"
	if strings.Trim(s, "0123456789.") == "" {
		engine = "cockroachdb"
	}
	rev, err := revisionparsing.ParseRevisionStringByDatastoreEngineID[engine](s)
	if err != nil {
		return nil, false
	}
	return rev, true
}
