package cache

import (
	"testing"
	"time"
)

// Two writes that touch one dependency key at once (grants of two agents on
// one resource) each take a counter value and record it for the key. If the
// one with the older value recorded last, the key would read as bumped at
// that value, and a decision computed after it but before the other write
// committed (its snapshot equal to that value) would count as fresh: an
// allow served past an acknowledged revocation. The soak found it. Here the
// first bump is held between taking its value and recording it while a
// second bump of the same key runs; the key must end at the newest value,
// and a decision snapshotted between the two must be stale.
func TestConcurrentBumpsKeepTheNewestGeneration(t *testing.T) {
	c, err := New(nil, Config{})
	if err != nil {
		t.Fatal(err)
	}
	const key = "g:repo:acme/x#read"
	h := hashKey(key)

	var snapshot uint64 // a decision's snapshot, taken while the first bump is held
	secondDone := make(chan struct{})
	held := false
	c.beforeRecord = func(string) {
		if held {
			return
		}
		held = true
		snapshot = c.counter.Load()
		go func() {
			c.Invalidate("", []string{key}) // the second write (the revocation)
			close(secondDone)
		}()
		// Give the second bump every chance to finish first: it cannot
		// while bumps take turns, so this wait ends by its timeout.
		select {
		case <-secondDone:
		case <-time.After(200 * time.Millisecond):
		}
	}
	c.Invalidate("", []string{key}) // the first write
	<-secondDone

	got, _ := c.gens.Peek(h)
	if want := c.counter.Load(); got != want {
		t.Fatalf("the key's generation is %d, but the newest bump of it took %d", got, want)
	}
	if e := (&entry{shape: &shape{}, grantKey: h, snapshot: snapshot, born: time.Now().UnixNano()}); c.fresh(e, time.Now().UnixNano()) {
		t.Fatalf("a decision snapshotted at %d, before the second bump, is still fresh after it", snapshot)
	}
}
