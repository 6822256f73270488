package cache

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"log/slog"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/mandate-dev/mandate/engine"
)

// busChannel is the Postgres NOTIFY channel replicas share.
const busChannel = "mandate_invalidate"

// maxPayload stays under Postgres's 8000-byte NOTIFY limit.
const maxPayload = 7000

// Bus tells other replicas, through Postgres LISTEN/NOTIFY, which keys a
// write touched, so their caches drop stale entries within milliseconds
// instead of waiting for SpiceDB's Watch, which polls Postgres every 100ms.
// It only accelerates: the Watch remains what makes the cache correct, and a
// lost notification costs latency, never freshness.
type Bus struct {
	dsn   string
	log   *slog.Logger
	cache *Cache
	id    string // this replica, to skip its own notifications

	mu   sync.Mutex
	conn *pgx.Conn // guarded by mu; the publishing connection, nil until dialed
}

type busMessage struct {
	Replica string   `json:"r"`
	Keys    []string `json:"k"`
}

// NewBus makes a bus on the Postgres at dsn for c.
func NewBus(dsn string, c *Cache, log *slog.Logger) *Bus {
	b := make([]byte, 8)
	_, _ = rand.Read(b)
	return &Bus{dsn: dsn, log: log, cache: c, id: hex.EncodeToString(b)}
}

// Publish sends keys to the other replicas. Errors are logged and dropped.
func (b *Bus) Publish(keys []string) {
	if len(keys) == 0 {
		return
	}
	payload, _ := json.Marshal(busMessage{Replica: b.id, Keys: keys})
	if len(payload) > maxPayload {
		payload, _ = json.Marshal(busMessage{Replica: b.id, Keys: []string{engine.KeyAll}})
	}
	ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
	defer cancel()
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.conn == nil {
		conn, err := pgx.Connect(ctx, b.dsn)
		if err != nil {
			b.log.Warn("invalidation bus: cannot connect; other replicas will rely on the watch", "error", err)
			return
		}
		b.conn = conn
	}
	if _, err := b.conn.Exec(ctx, "SELECT pg_notify($1, $2)", busChannel, string(payload)); err != nil {
		b.log.Warn("invalidation bus: notify failed; other replicas will rely on the watch", "error", err)
		_ = b.conn.Close(context.Background())
		b.conn = nil
	}
}

// Run listens until ctx ends, reconnecting with backoff.
func (b *Bus) Run(ctx context.Context) {
	backoff := 100 * time.Millisecond
	for ctx.Err() == nil {
		err := b.listen(ctx)
		if ctx.Err() != nil {
			break
		}
		b.log.Warn("invalidation bus: listener stopped; retrying", "error", err, "retry_in", backoff)
		select {
		case <-ctx.Done():
		case <-time.After(backoff):
		}
		backoff = min(backoff*2, 5*time.Second)
	}
	b.mu.Lock()
	if b.conn != nil {
		_ = b.conn.Close(context.Background())
		b.conn = nil
	}
	b.mu.Unlock()
}

func (b *Bus) listen(ctx context.Context) error {
	conn, err := pgx.Connect(ctx, b.dsn)
	if err != nil {
		return err
	}
	defer conn.Close(context.Background())
	if _, err := conn.Exec(ctx, "LISTEN "+busChannel); err != nil {
		return err
	}
	for {
		n, err := conn.WaitForNotification(ctx)
		if err != nil {
			return err
		}
		var m busMessage
		if err := json.Unmarshal([]byte(n.Payload), &m); err != nil || m.Replica == b.id {
			continue
		}
		b.cache.bump(m.Keys)
		b.cache.m.invalidated("notify", len(m.Keys))
	}
}
