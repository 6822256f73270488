package console

import (
	"fmt"
	"net/http"
	"testing"
	"time"
)

// TestLimiterIsNotResetByManyAddresses: a caller with more addresses than the
// limiter remembers must not wipe the limit of an address already at it; a
// new address is refused while the table is full of live entries, and let in
// once they age out.
func TestLimiterIsNotResetByManyAddresses(t *testing.T) {
	now := time.Date(2026, 12, 1, 9, 0, 0, 0, time.UTC)
	l := newLimiter(2, time.Minute, func() time.Time { return now })
	from := func(addr string) *http.Request { return &http.Request{RemoteAddr: addr + ":1234"} }
	guesser := from("192.0.2.1")
	if !l.allow(guesser) || !l.allow(guesser) || l.allow(guesser) {
		t.Fatal("the burst of 2 is not enforced")
	}
	for i := 0; i < maxLimitedAddrs; i++ {
		l.allow(from(fmt.Sprintf("10.%d.%d.%d", i>>16&255, i>>8&255, i&255)))
	}
	if l.allow(guesser) {
		t.Fatal("many other addresses reset the guesser's limit")
	}
	if l.allow(from("198.51.100.7")) {
		t.Fatal("a new address was let in while the table is full of live entries")
	}
	now = now.Add(time.Minute)
	if !l.allow(from("198.51.100.7")) || !l.allow(guesser) {
		t.Fatal("once the attempts aged out, addresses are not let in again")
	}
}
