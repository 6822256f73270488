// Package cache is mandate's decision cache: an LRU decorator around an
// engine.Decider that never serves an answer past a revocation or an expiry.
//
// Freshness works with dependency generations. Every write (this replica's,
// through the engine's Invalidator hook, and everyone's, through SpiceDB's
// Watch) bumps the dependency keys it touches to a new value of one monotonic
// counter. A decision records the counter's value from before it was computed
// and the keys it relied on; it is served only while none of those keys was
// bumped since, while it is younger than MaxAge, while the earliest expiry it
// relied on is in the future, and while the watch is healthy.
package cache

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"hash/maphash"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	lru "github.com/hashicorp/golang-lru/v2"
	"golang.org/x/sync/singleflight"
	"google.golang.org/protobuf/proto"

	"github.com/mandate-dev/mandate/engine"
	"github.com/mandate-dev/mandate/engine/tracing"
)

// Config configures the cache. Zero values take the defaults noted.
type Config struct {
	// Size bounds the number of cached decisions. Default 100000.
	Size int
	// MaxAge bounds how long any decision is served, as a safety net. Default 5m.
	MaxAge time.Duration
	// LagBound: when the watch has been silent this long, the cache is bypassed
	// until it catches up. Default 1s.
	LagBound time.Duration
	// GenerationKeys bounds the number of dependency keys tracked. Evicting one
	// invalidates every older decision. Default 1000000.
	GenerationKeys int
	// HeartbeatExpected says the datastore's watch sends checkpoints while
	// idle (Postgres, CockroachDB), so silence longer than LagBound means the
	// watch is stuck. The memory datastore only speaks when something changes.
	// Either way, a write of this replica's that the watch has not delivered
	// within LagBound means the watch is behind.
	HeartbeatExpected bool
	// Now is the clock. Default time.Now.
	Now func() time.Time
	// Metrics receives the cache's metrics; nil records nothing.
	Metrics *Metrics
}

func (c *Config) setDefaults() {
	if c.Size == 0 {
		c.Size = 100_000
	}
	if c.MaxAge == 0 {
		c.MaxAge = 5 * time.Minute
	}
	if c.LagBound == 0 {
		c.LagBound = time.Second
	}
	if c.GenerationKeys == 0 {
		c.GenerationKeys = 1_000_000
	}
	if c.Now == nil {
		c.Now = time.Now
	}
}

// Validate reports whether the config is usable.
func (c *Config) Validate() error {
	if c.Size < 0 || c.MaxAge < 0 || c.LagBound < 0 || c.GenerationKeys < 0 {
		return errors.New("cache sizes and durations must not be negative")
	}
	return nil
}

// entryKey is the first 128 bits of the SHA-256 of subject, permission,
// resource and context: a fixed-size key instead of a string per entry.
type entryKey [16]byte

// shape is what every decision of one subject with one outcome has in
// common. Entries share shapes, which keeps a cached decision small.
type shape struct {
	allowed   bool
	reason    engine.Reason
	condition string // the grant condition that failed, for CONDITION_FAILED
	principal engine.Ref
	task      engine.Ref
	chain     []engine.Ref // shared with the engine; read-only
	keys      []uint64     // hashes of the chain-level dependency keys
}

// entry is one cached decision. It is immutable once stored.
type entry struct {
	shape      *shape
	grants     []string
	token      string
	validUntil int64  // unix nanoseconds; 0 when nothing expires
	born       int64  // unix nanoseconds, when it was computed
	snapshot   uint64 // counter value before the decision was computed
	grantKey   uint64 // hash of the grant dependency key; 0 for user checks
}

func (e *entry) decision() engine.Decision {
	d := engine.Decision{
		Allowed: e.shape.allowed, Reason: e.shape.reason, Condition: e.shape.condition, Principal: e.shape.principal, Task: e.shape.task,
		Chain: e.shape.chain, Grants: e.grants, Token: e.token, Cached: true,
	}
	if e.validUntil != 0 {
		d.ValidUntil = time.Unix(0, e.validUntil).UTC()
	}
	return d
}

// Cache is an engine.Decider that caches another one.
type Cache struct {
	cfg   Config
	inner engine.Decider
	m     *Metrics

	entries *lru.Cache[entryKey, *entry]
	shapes  *lru.Cache[string, *shape]   // interned by subject and outcome
	token   atomic.Pointer[string]       // the last token stored, to share its bytes
	gens    *lru.Cache[uint64, uint64]   // key hash -> counter value of its last bump; a collision only over-invalidates
	counter atomic.Uint64                // monotonic; every bump takes a new value
	floor   atomic.Uint64                // decisions with snapshot < floor are stale
	tokens  *lru.Cache[string, struct{}] // revisions this replica has seen: its writes and the watch's
	local   *lru.Cache[string, struct{}] // revisions of this replica's own writes, already invalidated
	flights singleflight.Group

	// watchOK is false until the watch delivers its first message, and again
	// whenever it breaks or falls behind LagBound. While false, every check
	// bypasses the cache.
	watchOK   atomic.Bool
	stateMu   sync.Mutex
	state     string    // guarded by stateMu: why the cache is bypassed, "" when serving
	lastWatch time.Time // guarded by stateMu: when the watch last said anything
	// pending holds this replica's writes the watch has not delivered yet, by
	// token, with when they were made; watched holds tokens the watch
	// delivered first. Both guarded by stateMu.
	pending map[string]time.Time
	watched *lru.Cache[string, struct{}]

	// bumpMu makes bumps take their counter values and record them in one
	// turn, so a key's generation only grows (see bump).
	bumpMu sync.Mutex
	// beforeRecord, in tests, runs between a bump taking its counter value
	// and recording it.
	beforeRecord func(key string)

	// publish, when set, tells other replicas about this replica's writes. Set before serving.
	publish func(keys []string)
}

// SetPublisher makes every local invalidation also reach other replicas
// (see Bus). Call it before serving.
func (c *Cache) SetPublisher(publish func(keys []string)) { c.publish = publish }

var _ engine.Decider = (*Cache)(nil)
var _ engine.Invalidator = (*Cache)(nil)

// New wraps inner. The cache serves nothing until MarkWatchHealthy is called
// by a watcher (or by a caller that runs without replicas, see AlwaysFresh).
func New(inner engine.Decider, cfg Config) (*Cache, error) {
	cfg.setDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	c := &Cache{cfg: cfg, inner: inner, m: cfg.Metrics, state: "watch not started"}
	var err error
	c.entries, err = lru.NewWithEvict(cfg.Size, func(entryKey, *entry) { c.m.evicted() })
	if err != nil {
		return nil, err
	}
	if c.shapes, err = lru.New[string, *shape](min(cfg.Size, 200_000) + 1); err != nil {
		return nil, err
	}
	c.gens, err = lru.NewWithEvict(cfg.GenerationKeys, func(_ uint64, v uint64) {
		// A forgotten key could hide a bump: invalidate everything older.
		for {
			f := c.floor.Load()
			if v <= f || c.floor.CompareAndSwap(f, v) {
				return
			}
		}
	})
	if err != nil {
		return nil, err
	}
	if c.tokens, err = lru.New[string, struct{}](4096); err != nil {
		return nil, err
	}
	if c.local, err = lru.New[string, struct{}](4096); err != nil {
		return nil, err
	}
	if c.watched, err = lru.New[string, struct{}](4096); err != nil {
		return nil, err
	}
	c.pending = map[string]time.Time{}
	c.m.setFailsafe(true)
	return c, nil
}

// Invalidate bumps keys after a write committed at token.
func (c *Cache) Invalidate(token string, keys []string) {
	c.bump(keys)
	c.m.invalidated("local", len(keys))
	if c.publish != nil {
		c.publish(keys)
	}
	if token != "" {
		c.tokens.Add(token, struct{}{})
		c.local.Add(token, struct{}{})
		c.stateMu.Lock()
		if _, seen := c.watched.Peek(token); !seen && c.state == "" && len(c.pending) < maxPending {
			c.pending[token] = c.cfg.Now()
		}
		c.stateMu.Unlock()
	}
}

// maxPending bounds the writes awaiting the watch; past it the watch is
// far behind anyway and CheckLag will say so.
const maxPending = 10_000

// alreadyApplied reports whether a watched revision is one of this replica's
// own writes, whose keys were bumped when the write returned. One revision is
// one transaction, so nothing else can hide in it.
func (c *Cache) alreadyApplied(token string) bool {
	if token == "" {
		return false
	}
	_, ok := c.local.Peek(token)
	return ok
}

// bump gives each key a new counter value. Bumps take turns: two writes
// bumping one key at once (grants of two agents on one resource) could
// otherwise record their values out of order, leaving the key at the older
// one, and a decision whose snapshot is that older value, computed before the
// newer write committed, would count as fresh after it: an allow served past
// an acknowledged revocation (found by the soak).
func (c *Cache) bump(keys []string) {
	c.bumpMu.Lock()
	defer c.bumpMu.Unlock()
	for _, k := range keys {
		v := c.counter.Add(1)
		if c.beforeRecord != nil {
			c.beforeRecord(k)
		}
		if k == engine.KeyAll {
			for {
				f := c.floor.Load()
				if v <= f || c.floor.CompareAndSwap(f, v) {
					break
				}
			}
			continue
		}
		c.gens.Add(hashKey(k), v)
	}
}

var keySeed = maphash.MakeSeed()

func hashKey(k string) uint64 { return maphash.String(keySeed, k) }

func hashKeys(keys []string) []uint64 {
	out := make([]uint64, len(keys))
	for i, k := range keys {
		out[i] = hashKey(k)
	}
	return out
}

// Flush invalidates every cached decision.
func (c *Cache) Flush() { c.bump([]string{engine.KeyAll}) }

// fresh reports whether e may still be served at now.
func (c *Cache) fresh(e *entry, now int64) bool {
	if e.snapshot < c.floor.Load() {
		return false
	}
	if now-e.born >= int64(c.cfg.MaxAge) {
		return false
	}
	if e.validUntil != 0 && now >= e.validUntil {
		return false
	}
	if e.grantKey != 0 {
		if g, ok := c.gens.Peek(e.grantKey); ok && g > e.snapshot {
			return false
		}
	}
	for _, k := range e.shape.keys {
		if g, ok := c.gens.Peek(k); ok && g > e.snapshot {
			return false
		}
	}
	return true
}

// Decide answers from the cache when it can, and from inner otherwise.
func (c *Cache) Decide(ctx context.Context, q engine.Query) (engine.Decision, error) {
	if !c.watchOK.Load() {
		c.m.bypassed("failsafe")
		return c.inner.Decide(ctx, q)
	}
	if q.ConsistencyToken != "" {
		if _, seen := c.tokens.Peek(q.ConsistencyToken); !seen {
			// The caller wants an answer at least as fresh as a revision this
			// replica has not seen: ask SpiceDB.
			c.m.bypassed("consistency_token")
			return c.inner.Decide(ctx, q)
		}
	}
	_, lookup := tracing.Start(ctx, tracing.SpanCacheLookup)
	key := cacheKey(q)
	now := c.cfg.Now()
	if e, ok := c.entries.Get(key); ok {
		if c.fresh(e, now.UnixNano()) {
			c.m.hit()
			lookup.SetAttributes(tracing.AttrCacheHit.Bool(true))
			lookup.End()
			return e.decision(), nil
		}
		c.entries.Remove(key)
	}
	c.m.miss()
	lookup.SetAttributes(tracing.AttrCacheHit.Bool(false))
	lookup.End()

	snapshot := c.counter.Load()
	v, err, shared := c.flights.Do(string(key[:])+strconv.FormatUint(snapshot, 10), func() (any, error) {
		d, err := c.inner.Decide(ctx, q)
		if err != nil {
			return nil, err
		}
		// Never store what the watch may not have covered, nor an answer that
		// only says the caller left context out.
		if c.watchOK.Load() && len(d.MissingContext) == 0 {
			c.entries.Add(key, c.newEntry(q, d, snapshot, now))
		}
		return d, nil
	})
	if shared {
		c.m.collapsed()
	}
	if err != nil {
		return engine.Decision{}, err
	}
	return v.(engine.Decision), nil
}

func (c *Cache) newEntry(q engine.Query, d engine.Decision, snapshot uint64, now time.Time) *entry {
	chainKeys, grantKey := engine.DecisionKeys(q, d)
	e := &entry{grants: d.Grants, born: now.UnixNano(), snapshot: snapshot}
	if grantKey != "" {
		e.grantKey = hashKey(grantKey)
	}
	if !d.ValidUntil.IsZero() {
		e.validUntil = d.ValidUntil.UnixNano()
	}
	e.token = d.Token
	if last := c.token.Load(); last != nil && *last == d.Token {
		e.token = *last
	} else {
		c.token.Store(&e.token)
	}
	skey := q.Subject.String() + "|" + string(d.Reason) + "|" + d.Condition
	if s, ok := c.shapes.Get(skey); ok && s.allowed == d.Allowed && s.condition == d.Condition && s.principal == d.Principal && s.task == d.Task && sameChain(s.chain, d.Chain) {
		e.shape = s
		return e
	}
	e.shape = &shape{allowed: d.Allowed, reason: d.Reason, condition: d.Condition, principal: d.Principal, task: d.Task, chain: d.Chain, keys: hashKeys(chainKeys)}
	c.shapes.Add(skey, e.shape)
	return e
}

func sameChain(a, b []engine.Ref) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// Len is the number of cached decisions.
func (c *Cache) Len() int { return c.entries.Len() }

// cacheKey hashes subject, permission, resource and the context. The hash is
// cryptographic, so no two questions share an entry by accident or design.
func cacheKey(q engine.Query) entryKey {
	var buf [512]byte
	b := buf[:0]
	// Every field is length-prefixed, so no two questions encode alike.
	for _, f := range []string{q.Subject.Type, q.Subject.ID, q.Permission, q.Resource.Type, q.Resource.ID} {
		b = binary.AppendUvarint(b, uint64(len(f)))
		b = append(b, f...)
	}
	if q.TokenChain != nil {
		// A check by token is its own question: its answer depends on the chain it claims.
		b = append(b, 't')
		for _, r := range append(q.TokenChain, q.TokenTask) {
			for _, f := range []string{r.Type, r.ID} {
				b = binary.AppendUvarint(b, uint64(len(f)))
				b = append(b, f...)
			}
		}
	}
	if len(q.Context.GetFields()) > 0 {
		b = append(b, 'c')
		raw, err := proto.MarshalOptions{Deterministic: true}.Marshal(q.Context)
		if err != nil {
			// Unreachable for a valid Struct; a unique key is never shared.
			raw = []byte(time.Now().String())
		}
		b = binary.AppendUvarint(b, uint64(len(raw)))
		b = append(b, raw...)
	}
	sum := sha256.Sum256(b)
	var k entryKey
	copy(k[:], sum[:16])
	return k
}

// ---- watch health ----

// MarkWatchEvent records that the watch said something (a change or a
// checkpoint) through token. It makes the cache servable again.
func (c *Cache) MarkWatchEvent(token string) {
	now := c.cfg.Now()
	c.stateMu.Lock()
	c.lastWatch = now
	recovering := c.state != ""
	c.state = ""
	if token != "" {
		delete(c.pending, token)
		c.watched.Add(token, struct{}{})
	}
	c.stateMu.Unlock()
	if token != "" {
		c.tokens.Add(token, struct{}{})
	}
	if recovering {
		c.m.setFailsafe(false)
	}
	c.m.setLag(0)
	c.watchOK.Store(true)
}

// MarkWatchDown bypasses the cache until the watch delivers again. It flushes
// everything: changes made while the watch was down may never be seen.
func (c *Cache) MarkWatchDown(reason string) {
	c.watchOK.Store(false)
	c.Flush()
	c.stateMu.Lock()
	was := c.state
	c.state = reason
	clear(c.pending) // the watch restarts from now and will never deliver them
	c.stateMu.Unlock()
	if was == "" {
		c.m.setFailsafe(true)
	}
}

// CheckLag bypasses the cache when the watch is behind by more than LagBound:
// a write of this replica's has not come back through it, or, where the
// datastore sends checkpoints while idle, the watch has been silent.
func (c *Cache) CheckLag() {
	now := c.cfg.Now()
	c.stateMu.Lock()
	last, state := c.lastWatch, c.state
	var lag time.Duration
	if c.cfg.HeartbeatExpected && !last.IsZero() {
		lag = now.Sub(last)
	}
	for _, t := range c.pending {
		lag = max(lag, now.Sub(t))
	}
	c.stateMu.Unlock()
	c.m.setLag(lag.Seconds())
	if state == "" && lag > c.cfg.LagBound {
		c.MarkWatchDown("watch lagging by " + lag.Round(time.Millisecond).String())
	}
}

// Status reports whether the cache serves, and if not, why.
func (c *Cache) Status() (serving bool, reason string) {
	c.stateMu.Lock()
	defer c.stateMu.Unlock()
	return c.state == "", c.state
}
