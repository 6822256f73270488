package bench

import (
	"context"
	"fmt"
	"math/rand/v2"
	"time"

	v1 "github.com/authzed/authzed-go/proto/authzed/api/v1"

	"github.com/mandate-dev/mandate/engine"
)

// Spec sizes a dataset. The default is the issue's: 100k agents, 10k tasks,
// 50k resources, about 1M relationships.
type Spec struct {
	Agents    int
	Tasks     int
	Resources int
	Humans    int
	// ReadersPerResource is how many humans may read each repo.
	ReadersPerResource int
	// GrantsPerAgent is how many read grants each agent holds.
	GrantsPerAgent int
	// SubAgentShare is the share of agents that are sub-agents of another agent of their task.
	SubAgentShare float64
	Seed          uint64
}

// Million is the 1M-relationship dataset.
var Million = Spec{Agents: 100_000, Tasks: 10_000, Resources: 50_000, Humans: 5_000, ReadersPerResource: 4, GrantsPerAgent: 2, SubAgentShare: 0.3, Seed: 1}

// Pair is an allowed (agent, resource) check in the dataset.
type Pair struct {
	Agent    string
	Resource string
}

// Dataset is a generated scene.
type Dataset struct {
	Relationships []*v1.Relationship
	// Allowed lists checks the dataset allows.
	Allowed []Pair
}

// Generate builds a dataset with realistic fan-out: each human reads a few
// hundred repos, each task has about ten agents (some of them sub-agents),
// and each agent holds a couple of grants on repos its human can read.
func Generate(s Spec) *Dataset {
	r := rand.New(rand.NewPCG(s.Seed, s.Seed+1))
	now := time.Now()
	exp := now.Add(23 * time.Hour)
	ds := &Dataset{}
	add := func(rels ...*v1.Relationship) { ds.Relationships = append(ds.Relationships, rels...) }
	repo := func(i int) engine.Ref { return engine.Ref{Type: "repo", ID: fmt.Sprintf("org%d/repo%d", i%100, i)} }
	human := func(i int) engine.Ref { return engine.Ref{Type: "user", ID: fmt.Sprintf("u%d", i)} }

	// Who reads what, indexed by human.
	reads := make([][]int, s.Humans)
	for res := 0; res < s.Resources; res++ {
		picked := map[int]bool{}
		for k := 0; k < s.ReadersPerResource; k++ {
			h := r.IntN(s.Humans)
			if picked[h] {
				continue
			}
			picked[h] = true
			reads[h] = append(reads[h], res)
			add(&v1.Relationship{Resource: &v1.ObjectReference{ObjectType: "repo", ObjectId: repo(res).ID}, Relation: "reader",
				Subject: &v1.SubjectReference{Object: &v1.ObjectReference{ObjectType: "user", ObjectId: human(h).ID}}})
		}
	}
	taskHuman := make([]int, s.Tasks)
	taskRefs := make([]engine.Ref, s.Tasks)
	for t := 0; t < s.Tasks; t++ {
		h := r.IntN(s.Humans)
		for len(reads[h]) == 0 {
			h = r.IntN(s.Humans)
		}
		taskHuman[t] = h
		id := engine.NewID(engine.PrefixTask)
		taskRefs[t] = engine.Ref{Type: "task", ID: id}
		add(engine.TaskRelationships(engine.Task{ID: id, Principal: human(h), Description: "bench", CreatedAt: now, ExpiresAt: exp})...)
	}
	lastTop := make([]engine.Ref, s.Tasks)
	lastTopExp := make([]time.Time, s.Tasks)
	lastTopGrants := make([][]int, s.Tasks)
	for a := 0; a < s.Agents; a++ {
		t := a % s.Tasks
		id := engine.NewID(engine.PrefixAgent)
		ag := engine.Agent{ID: id, Name: "bench", Task: taskRefs[t], CreatedAt: now, ExpiresAt: exp}
		mine := reads[taskHuman[t]]
		lineage := engine.Lineage{Principal: human(taskHuman[t]), TaskExpires: exp}
		var resources []int
		if !lastTop[t].IsZero() && r.Float64() < s.SubAgentShare && len(lastTopGrants[t]) > 0 {
			// A sub-agent holds a subset of its parent's grants.
			ag.Parent = lastTop[t]
			lineage.Ancestors = []engine.Ancestor{{ID: lastTop[t].ID, Expires: lastTopExp[t]}}
			resources = lastTopGrants[t][:1]
		} else {
			for g := 0; g < s.GrantsPerAgent; g++ {
				resources = append(resources, mine[r.IntN(len(mine))])
			}
			lastTop[t], lastTopGrants[t], lastTopExp[t] = engine.Ref{Type: "agent", ID: id}, resources, exp
		}
		add(engine.AgentRelationships(ag, lineage)...)
		seen := map[int]bool{}
		for _, res := range resources {
			if seen[res] {
				continue
			}
			seen[res] = true
			add(engine.GrantRelationships(engine.Grant{ID: engine.NewID(engine.PrefixGrant), Holder: engine.Ref{Type: "agent", ID: id},
				Permission: "read", Resource: repo(res), CreatedAt: now, ExpiresAt: exp})...)
			ds.Allowed = append(ds.Allowed, Pair{Agent: "agent:" + id, Resource: repo(res).String()})
		}
	}
	return ds
}

// Import loads the dataset through SpiceDB's bulk import, in chunks.
func Import(ctx context.Context, pc v1.PermissionsServiceClient, rels []*v1.Relationship) error {
	const chunk = 10_000
	for start := 0; start < len(rels); start += chunk * 10 {
		stream, err := pc.ImportBulkRelationships(ctx)
		if err != nil {
			return err
		}
		end := min(start+chunk*10, len(rels))
		for i := start; i < end; i += chunk {
			if err := stream.Send(&v1.ImportBulkRelationshipsRequest{Relationships: rels[i:min(i+chunk, end)]}); err != nil {
				// The server ended the stream; its reason comes with CloseAndRecv.
				_, cerr := stream.CloseAndRecv()
				return fmt.Errorf("import at %d: %w (%v)", i, err, cerr)
			}
		}
		if _, err := stream.CloseAndRecv(); err != nil {
			return fmt.Errorf("import batch at %d: %w", start, err)
		}
	}
	return nil
}
