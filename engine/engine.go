// Package engine is mandate's decision engine: tasks, agents and grants as
// SpiceDB relationships, and the four-leg agent Check. It never imports the
// transport; the service package translates to and from gRPC.
package engine

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync/atomic"
	"time"

	v1 "github.com/authzed/authzed-go/proto/authzed/api/v1"
	lru "github.com/hashicorp/golang-lru/v2"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/mandate-dev/mandate/schema"
)

// Config configures the engine. Zero values take the defaults noted.
type Config struct {
	// MaxTaskTTL bounds a task's lifetime. Default 24h.
	MaxTaskTTL time.Duration
	// MaxAgentTTL bounds an agent's lifetime; 0 means only its task and parent bound it.
	MaxAgentTTL time.Duration
	// MaxGrantTTL bounds a grant's lifetime. Default 1h.
	MaxGrantTTL time.Duration
	// MaxChainDepth bounds the number of agents in a delegation chain. Default 8.
	MaxChainDepth int
	// CallTimeout bounds each engine call that reaches SpiceDB. Default 2s.
	CallTimeout time.Duration
	// ChainCacheSize is the number of agent chains kept in memory. The structure
	// of a chain (agent, parents, task, principal, lifetimes) never changes once
	// written, so entries never go stale. Default 100000.
	ChainCacheSize int
	// AccessRequestTTL is how long an access request waits for its answer
	// before it expires (--access-request-ttl). Default 15m.
	AccessRequestTTL time.Duration
	// AccessRequestPoll is how often a long poll on an access request reads
	// again without a notice from a write or the watch. Default 1s.
	AccessRequestPoll time.Duration
	// BindAgentsToWorkload accepts a delegation from an agent that records
	// a workload identity (a SPIFFE ID) only from a caller connected as
	// that same workload (--bind-agents-to-workload). Renewals are refused
	// the same way by the token endpoint, through CheckWorkload.
	BindAgentsToWorkload bool
	// Now is the clock. Default time.Now.
	Now func() time.Time
}

func (c *Config) setDefaults() {
	if c.MaxTaskTTL == 0 {
		c.MaxTaskTTL = 24 * time.Hour
	}
	if c.MaxGrantTTL == 0 {
		c.MaxGrantTTL = time.Hour
	}
	if c.MaxChainDepth == 0 {
		c.MaxChainDepth = 8
	}
	if c.CallTimeout == 0 {
		c.CallTimeout = 2 * time.Second
	}
	if c.ChainCacheSize == 0 {
		c.ChainCacheSize = 100_000
	}
	if c.AccessRequestTTL == 0 {
		c.AccessRequestTTL = DefaultAccessRequestTTL
	}
	if c.AccessRequestPoll <= 0 {
		c.AccessRequestPoll = DefaultAccessRequestPoll
	}
	if c.Now == nil {
		c.Now = time.Now
	}
}

// Validate reports whether the config is usable.
func (c *Config) Validate() error {
	if c.MaxTaskTTL < 0 || c.MaxAgentTTL < 0 || c.MaxGrantTTL < 0 || c.CallTimeout < 0 || c.AccessRequestTTL < 0 {
		return errors.New("TTL bounds and timeouts must not be negative")
	}
	if c.MaxChainDepth < 0 || c.MaxChainDepth > 32 {
		return errors.New("max chain depth must be between 1 and 32")
	}
	return nil
}

// Engine decides and administers. It is safe for concurrent use.
type Engine struct {
	cfg    Config
	sdb    *Client
	log    *slog.Logger
	schema atomic.Pointer[schema.Info] // never nil after New
	chains *lru.Cache[string, *chain]
	// invalidator, when set, is told about every committed write. Set before serving.
	invalidator Invalidator
	// requests wakes the long polls on access requests.
	requests requestNotifier
	// watching reports whether the SpiceDB watch is following (SetWatching); nil when none runs.
	watching func() bool
	// slots serializes this engine's writes to one grant slot (grants.go).
	slots slotLocks
	// lastWrite is the newest write this engine acknowledged (revision.go).
	lastWrite atomic.Pointer[writeMark]
	// staleReads counts answers SpiceDB gave at a revision before one of
	// this engine's acknowledged writes, each asked again.
	staleReads atomic.Int64
}

// StaleReads is how many of SpiceDB's fully consistent answers came from a
// revision before a write this engine had acknowledged, and were asked again.
func (e *Engine) StaleReads() int64 { return e.staleReads.Load() }

// New connects the engine to SpiceDB. When SpiceDB has no schema yet, it
// writes the default one; when it has one, it must be mandate-compatible.
func New(ctx context.Context, cfg Config, sdb *Client, log *slog.Logger) (*Engine, error) {
	cfg.setDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if log == nil {
		log = slog.Default()
	}
	chains, err := lru.New[string, *chain](cfg.ChainCacheSize)
	if err != nil {
		return nil, err
	}
	e := &Engine{cfg: cfg, sdb: sdb, log: log, chains: chains}
	e.slots.init()
	if err := e.loadSchema(ctx); err != nil {
		return nil, err
	}
	return e, nil
}

func (e *Engine) now() time.Time { return e.cfg.Now() }

// Now is the engine's clock, the one every decision is made by. Views that
// filter what the engine computed earlier (a listing's later pages) use it
// too, so they expire entries exactly when Check starts denying them.
func (e *Engine) Now() time.Time { return e.cfg.Now() }

func (e *Engine) withTimeout(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, e.cfg.CallTimeout)
}

// Schema returns the schema the engine currently decides with.
func (e *Engine) Schema() *schema.Info { return e.schema.Load() }

func (e *Engine) loadSchema(ctx context.Context) error {
	resp, err := e.sdb.Schema.ReadSchema(ctx, &v1.ReadSchemaRequest{})
	if status.Code(err) == codes.NotFound {
		e.log.Info("SpiceDB has no schema; writing mandate's default schema")
		_, err := e.writeSchema(ctx, schema.Default)
		return err
	}
	if err != nil {
		return fmt.Errorf("reading the schema from SpiceDB: %w", err)
	}
	info, err := schema.Parse(resp.GetSchemaText())
	if err != nil {
		// A schema written for an earlier mandate gets this version's core.
		up, changed, uerr := schema.Upgrade(resp.GetSchemaText())
		if uerr != nil || !changed {
			return fmt.Errorf("the schema in SpiceDB is not mandate-compatible: %w", err)
		}
		e.log.Warn("the schema in SpiceDB has an earlier mandate core; upgrading its core definitions", "reason", err.Error())
		if _, werr := e.writeSchema(ctx, up); werr != nil {
			return fmt.Errorf("upgrading the schema's core (%v): %w", err, werr)
		}
		return nil
	}
	e.schema.Store(info)
	return nil
}

// RefreshSchema reloads the schema, for when another writer changed it.
func (e *Engine) RefreshSchema(ctx context.Context) { e.refreshSchema(ctx) }

func (e *Engine) refreshSchema(ctx context.Context) {
	resp, err := e.sdb.Schema.ReadSchema(ctx, &v1.ReadSchemaRequest{})
	if err != nil {
		return
	}
	if info, err := schema.Parse(resp.GetSchemaText()); err == nil {
		e.schema.Store(info)
	}
}

// WriteSchema validates a schema against mandate's conventions, then writes
// it, within the call timeout.
func (e *Engine) WriteSchema(ctx context.Context, src string) (string, error) {
	ctx, cancel := e.withTimeout(ctx)
	defer cancel()
	return e.writeSchema(ctx, src)
}

// writeSchema is WriteSchema bounded by ctx alone. At startup the engine
// writes its schema with the caller's startup context, not the per-call
// timeout: compiling a schema on a busy machine can take longer than a
// check may, and starting must wait for SpiceDB rather than race a timer.
func (e *Engine) writeSchema(ctx context.Context, src string) (string, error) {
	info, err := schema.Parse(src)
	if err != nil {
		var se *schema.Error
		if errors.As(err, &se) {
			return "", &Error{Kind: KindInvalidArgument, Field: "schema", Msg: se.Error()}
		}
		return "", err
	}
	resp, err := e.sdb.Schema.WriteSchema(ctx, &v1.WriteSchemaRequest{Schema: src})
	if err != nil {
		switch status.Code(err) {
		case codes.InvalidArgument:
			return "", &Error{Kind: KindInvalidArgument, Field: "schema", Msg: status.Convert(err).Message()}
		case codes.FailedPrecondition:
			return "", &Error{Kind: KindFailedPrecondition, Field: "schema", Msg: status.Convert(err).Message()}
		}
		return "", backendErr("WriteSchema", err)
	}
	e.schema.Store(info)
	e.noteWrite(resp.GetWrittenAt().GetToken())
	if e.invalidator != nil {
		e.invalidator.Invalidate(resp.GetWrittenAt().GetToken(), []string{KeyAll})
	}
	return resp.GetWrittenAt().GetToken(), nil
}

// ReadSchema returns the schema text.
func (e *Engine) ReadSchema(ctx context.Context) (string, string, error) {
	ctx, cancel := e.withTimeout(ctx)
	defer cancel()
	resp, err := e.sdb.Schema.ReadSchema(ctx, &v1.ReadSchemaRequest{})
	if err != nil {
		return "", "", backendErr("ReadSchema", err)
	}
	return resp.GetSchemaText(), resp.GetReadAt().GetToken(), nil
}

// Ready reports whether SpiceDB answers.
func (e *Engine) Ready(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	_, err := e.sdb.Schema.ReadSchema(ctx, &v1.ReadSchemaRequest{})
	return backendErr("ReadSchema", err)
}

// requireType checks that t is a resource type in the schema, refreshing the
// schema once in case another replica or writer added it.
func (e *Engine) requireType(ctx context.Context, field string, r Ref) error {
	if e.Schema().HasType(r.Type) {
		return nil
	}
	e.refreshSchema(ctx)
	if e.Schema().HasType(r.Type) {
		return nil
	}
	return invalid(field, "unknown type %q", r.Type)
}

func (e *Engine) requirePermission(ctx context.Context, field string, t, p string) error {
	if err := ValidateName(field, p); err != nil {
		return err
	}
	if e.Schema().HasPermission(t, p) {
		return nil
	}
	e.refreshSchema(ctx)
	if e.Schema().HasPermission(t, p) {
		return nil
	}
	return invalid(field, "type %q has no permission %q", t, p)
}
