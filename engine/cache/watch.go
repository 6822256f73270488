package cache

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"time"

	v1 "github.com/authzed/authzed-go/proto/authzed/api/v1"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/mandate-dev/mandate/engine"
)

// Watcher follows SpiceDB's Watch API and invalidates what every change
// touches, whoever made it: this replica, another one, or zed. It runs until
// its context ends, retrying with backoff and never giving up.
type Watcher struct {
	Cache  *Cache
	Client v1.WatchServiceClient
	// Schema gives the current revision, where the watch starts.
	Schema v1.SchemaServiceClient
	Log    *slog.Logger
	// OnSchemaChange is called when the schema changed, so the engine reloads it.
	OnSchemaChange func(ctx context.Context)
	// OnRelationships, when set, is told every changed relationship, this
	// replica's own included (the engine wakes long polls with it).
	OnRelationships func(rels []*v1.Relationship)
	// OnWrite, when set, is told the revision of every change the watch
	// delivers, so that decisions are never read from before it (the
	// engine's NoteWrite).
	OnWrite func(token string)
}

// Run follows the watch. Between messages it checks the lag every tenth of
// the lag bound.
func (w *Watcher) Run(ctx context.Context) {
	tick := w.Cache.cfg.LagBound / 10
	if tick <= 0 {
		tick = 100 * time.Millisecond
	}
	go func() {
		t := time.NewTicker(tick)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				w.Cache.CheckLag()
			}
		}
	}()

	// Every restart starts from now: MarkWatchDown flushed the cache and
	// nothing is stored while the watch is down, so no missed change can be served.
	backoff := 50 * time.Millisecond
	for ctx.Err() == nil {
		delivered, err := w.follow(ctx)
		if ctx.Err() != nil {
			return
		}
		if delivered {
			backoff = 50 * time.Millisecond
		}
		w.Cache.MarkWatchDown("watch broken: " + errString(err))
		w.Cache.m.watchRestarted()
		wait := backoff
		if status.Code(err) == codes.Unimplemented {
			// SpiceDB serves no Watch API, for example on Postgres without
			// track_commit_timestamp=on. Correct, but never cached.
			w.Log.Error("SpiceDB has no Watch API; every check is answered uncached (on Postgres, set track_commit_timestamp=on)", "error", err)
			wait = 30 * time.Second
		} else {
			w.Log.Warn("SpiceDB watch stopped; serving uncached until it resumes", "error", err, "retry_in", backoff)
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
		backoff = min(backoff*2, 5*time.Second)
	}
}

func errString(err error) string {
	if err == nil {
		return "stream ended"
	}
	return err.Error()
}

// follow runs one watch stream from now until it fails, and reports whether
// it delivered anything.
func (w *Watcher) follow(ctx context.Context) (delivered bool, err error) {
	// Start from a known revision, so every change after it is delivered even
	// though an idle memory datastore sends nothing to confirm the stream.
	head, err := w.Schema.ReadSchema(ctx, &v1.ReadSchemaRequest{})
	if err != nil {
		return false, err
	}
	stream, err := w.Client.Watch(ctx, &v1.WatchRequest{
		OptionalStartCursor: head.GetReadAt(),
		OptionalUpdateKinds: []v1.WatchKind{
			v1.WatchKind_WATCH_KIND_INCLUDE_RELATIONSHIP_UPDATES,
			v1.WatchKind_WATCH_KIND_INCLUDE_SCHEMA_UPDATES,
			v1.WatchKind_WATCH_KIND_INCLUDE_CHECKPOINTS,
		},
	})
	if err != nil {
		return false, err
	}
	// Decisions computed from now on read at or after head; every change
	// after head reaches this stream. The cache may serve.
	w.Cache.MarkWatchEvent("")
	for {
		resp, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return delivered, nil
		}
		if err != nil {
			return delivered, err
		}
		delivered = true
		if resp.GetSchemaUpdated() {
			w.Cache.bump([]string{engine.KeyAll})
			w.Cache.m.invalidated("watch", 1)
			if w.OnSchemaChange != nil {
				w.OnSchemaChange(ctx)
			}
		}
		if w.OnRelationships != nil && len(resp.GetUpdates()) > 0 {
			rels := make([]*v1.Relationship, len(resp.GetUpdates()))
			for i, u := range resp.GetUpdates() {
				rels[i] = u.GetRelationship()
			}
			w.OnRelationships(rels)
		}
		if w.OnWrite != nil && len(resp.GetUpdates()) > 0 {
			w.OnWrite(resp.GetChangesThrough().GetToken())
		}
		if n := len(resp.GetUpdates()); n > 0 && !w.Cache.alreadyApplied(resp.GetChangesThrough().GetToken()) {
			seen := make(map[string]bool, n)
			keys := make([]string, 0, n)
			for _, u := range resp.GetUpdates() {
				for _, k := range engine.InvalidationKeys(u.GetRelationship()) {
					if !seen[k] {
						seen[k] = true
						keys = append(keys, k)
					}
				}
			}
			w.Cache.bump(keys)
			w.Cache.m.invalidated("watch", len(keys))
		}
		w.Cache.MarkWatchEvent(resp.GetChangesThrough().GetToken())
	}
}
