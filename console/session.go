package console

import (
	"crypto/rand"
	"crypto/subtle"
	"encoding/base64"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/mandate-dev/mandate/service"
)

// session is one signed-in person, kept on the server. The cookie holds only
// the session's random id: never a key, never the role.
type session struct {
	id      string
	caller  service.Key // name and role; a key's secret is never kept
	csrf    string
	created time.Time
	expires time.Time
	flash   string // what the last action did, shown once; guarded by sessions.mu
}

// sessions is the server-side session store. Sessions expire; a signed-out
// or expired session is gone from the map.
type sessions struct {
	mu  sync.Mutex
	m   map[string]*session
	ttl time.Duration
	now func() time.Time
}

func newSessions(ttl time.Duration, now func() time.Time) *sessions {
	return &sessions{m: map[string]*session{}, ttl: ttl, now: now}
}

func randomToken() string {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		panic(err)
	}
	return base64.RawURLEncoding.EncodeToString(b)
}

// create starts a session for caller.
func (s *sessions) create(caller service.Key) *session {
	now := s.now()
	ss := &session{id: randomToken(), caller: caller, csrf: randomToken(), created: now, expires: now.Add(s.ttl)}
	s.mu.Lock()
	defer s.mu.Unlock()
	for id, x := range s.m {
		if !now.Before(x.expires) {
			delete(s.m, id)
		}
	}
	s.m[ss.id] = ss
	return ss
}

// get returns the live session of id.
func (s *sessions) get(id string) (*session, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	ss, ok := s.m[id]
	if !ok {
		return nil, false
	}
	if !s.now().Before(ss.expires) {
		delete(s.m, id)
		return nil, false
	}
	return ss, true
}

func (s *sessions) delete(id string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.m, id)
}

// setFlash keeps msg for the next page s renders.
func (s *sessions) setFlash(ss *session, msg string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	ss.flash = msg
}

// takeFlash returns and forgets what the last action did.
func (s *sessions) takeFlash(ss *session) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	msg := ss.flash
	ss.flash = ""
	return msg
}

// expire ends every session now (tests: an expired session is refused).
func (s *sessions) expireAll() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, x := range s.m {
		x.expires = s.now()
	}
}

func sameToken(a, b string) bool {
	return a != "" && len(a) == len(b) && subtle.ConstantTimeCompare([]byte(a), []byte(b)) == 1
}

// limiter refuses sign-in attempts from one address beyond burst per window.
// Keys are long random secrets compared by hash; the limit keeps guessing
// slow and keeps the log quiet.
type limiter struct {
	mu     sync.Mutex
	burst  int
	window time.Duration
	now    func() time.Time
	seen   map[string][]time.Time
}

// maxLimitedAddrs bounds the addresses the limiter remembers.
const maxLimitedAddrs = 10000

func newLimiter(burst int, window time.Duration, now func() time.Time) *limiter {
	return &limiter{burst: burst, window: window, now: now, seen: map[string][]time.Time{}}
}

// allow records one attempt from r's address and reports whether it is within the limit.
func (l *limiter) allow(r *http.Request) bool {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		host = r.RemoteAddr
	}
	now := l.now()
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.seen) >= maxLimitedAddrs {
		// Forget only the addresses whose attempts are all outside the
		// window. Forgetting everyone would let a caller with many
		// addresses reset every address's limit, so when the table is
		// still full a new address is refused until attempts age out.
		for h, ts := range l.seen {
			if len(ts) == 0 || now.Sub(ts[len(ts)-1]) >= l.window {
				delete(l.seen, h)
			}
		}
		if _, known := l.seen[host]; !known && len(l.seen) >= maxLimitedAddrs {
			return false
		}
	}
	kept := l.seen[host][:0]
	for _, t := range l.seen[host] {
		if now.Sub(t) < l.window {
			kept = append(kept, t)
		}
	}
	if len(kept) >= l.burst {
		l.seen[host] = kept
		return false
	}
	l.seen[host] = append(kept, now)
	return true
}
