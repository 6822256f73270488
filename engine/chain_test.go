package engine_test

import (
	"context"
	"os"
	"testing"

	v1 "github.com/authzed/authzed-go/proto/authzed/api/v1"

	"github.com/mandate-dev/mandate/engine"
	"github.com/mandate-dev/mandate/engine/embedded"
)

// TestChainReadBack: an engine that did not provision the agents (another
// replica) resolves their chains from SpiceDB alone.
func TestChainReadBack(t *testing.T) {
	e1, srv := startEngine(t, embedded.Config{Engine: "memory"}, engine.Config{})
	w := &world{t: t, e: e1}
	w.admin("repo:acme/api#reader@user:alice")
	task := w.task("user:alice", "1h")
	top := w.agent(task, nil, "50m")
	mid := w.agent(task, top, "40m")
	leaf := w.agent(task, mid, "30m")
	for _, a := range []*engine.Agent{top, mid, leaf} {
		w.mustGrant(ag(a), "read", "repo:acme/api", "10m")
	}

	conn, err := srv.Dial()
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	e2, err := engine.New(context.Background(), engine.Config{}, engine.NewClient(conn), nil)
	if err != nil {
		t.Fatal(err)
	}
	w2 := &world{t: t, e: e2}
	d := w2.expect(ag(leaf), "read", "repo:acme/api", engine.ReasonAllowed)
	want := []string{ag(leaf), ag(mid), ag(top), "user:alice"}
	if len(d.Chain) != len(want) {
		t.Fatalf("chain %v, want %v", d.Chain, want)
	}
	for i := range want {
		if d.Chain[i].String() != want[i] {
			t.Fatalf("chain %v, want %v", d.Chain, want)
		}
	}
	if d.ValidUntil.After(leaf.ExpiresAt) {
		t.Fatalf("valid_until %v after the leaf's expiry %v", d.ValidUntil, leaf.ExpiresAt)
	}
	got, _, err := e2.GetAgent(context.Background(), leaf.ID)
	if err != nil {
		t.Fatal(err)
	}
	if got.Parent.ID != mid.ID || got.Principal.String() != "user:alice" || got.Task.ID != task.ID || !got.ExpiresAt.Equal(leaf.ExpiresAt) {
		t.Fatalf("agent read back as %+v", got)
	}
	// The other engine sees a revocation made by the first at once.
	if _, _, err := e1.RevokeAgent(context.Background(), mid.ID); err != nil {
		t.Fatal(err)
	}
	w2.expect(ag(leaf), "read", "repo:acme/api", engine.ReasonAgentRevoked)
}

// TestStartUpgradesOldCore: an engine started on a SpiceDB whose schema has
// an earlier mandate core upgrades it in place, and the old data still
// decides.
func TestStartUpgradesOldCore(t *testing.T) {
	old, err := os.ReadFile("../schema/testdata/core-v0.zed")
	if err != nil {
		t.Fatal(err)
	}
	srv, err := embedded.Start(context.Background(), embedded.Config{Engine: "memory"})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	conn, err := srv.Dial()
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	client := engine.NewClient(conn)
	// The old schema goes in straight through SpiceDB, as an earlier mandate wrote it.
	if _, err := client.Schema.WriteSchema(context.Background(), &v1.WriteSchemaRequest{Schema: string(old)}); err != nil {
		t.Fatal(err)
	}
	e, err := engine.New(context.Background(), engine.Config{}, client, nil)
	if err != nil {
		t.Fatalf("starting on an old core: %v", err)
	}
	if !e.Schema().Grantable("doc", "view") || !e.Schema().HasType("mandate") {
		t.Fatal("the upgraded schema lost the admin's type or lacks the new core")
	}
	w := &world{t: t, e: e}
	w.admin("doc:handbook#viewer@user:alice")
	task := w.task("user:alice", "1h")
	a := w.agent(task, nil, "30m")
	w.mustGrant(ag(a), "view", "doc:handbook", "10m")
	w.expect(ag(a), "view", "doc:handbook", engine.ReasonAllowed)
	if _, _, err := e.FreezeAgents(context.Background()); err != nil {
		t.Fatal(err)
	}
	w.expect(ag(a), "view", "doc:handbook", engine.ReasonAgentsFrozen)
}
