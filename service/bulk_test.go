package service_test

import (
	"fmt"
	"reflect"
	"sort"
	"testing"

	"github.com/mandate-dev/mandate/server"
	"github.com/mandate-dev/mandate/service"
)

// TestListingsOfManyAgentsReadInBulk: past 32 agents the listing and the
// unused-grants report read every record at once; they must say exactly
// what reading each agent and each grant alone says.
func TestListingsOfManyAgentsReadInBulk(t *testing.T) {
	a := startServer(t, server.Config{})
	a.ok("POST", "/v1/relationships:write", service.RoleAdmin, map[string]any{"updates": []map[string]string{
		{"operation": "TOUCH", "relationship": "repo:acme/a#reader@user:alice"},
	}})
	task := field(a.ok("POST", "/v1/tasks", service.RoleOperator, map[string]string{"principal": "user:alice", "ttl": "2h"}), "task", "id").(string)
	var agents, grants []string
	for i := 0; i < 40; i++ {
		parent := ""
		if i > 0 && i%4 != 0 {
			parent = agents[i-1]
		}
		id := a.agentOf(task, parent, "1h")
		agents = append(agents, id)
		grants = append(grants, a.grantTo("agent:"+id, "read", "repo:acme/a", "30m"))
	}
	a.ok("POST", "/v1/agents/"+agents[5]+":suspend", service.RoleOperator, nil)
	a.ok("DELETE", "/v1/agents/"+agents[9], service.RoleOperator, nil)
	listed := a.ok("GET", "/v1/agents?page_size=1000&principal=user:alice", service.RoleReviewer, nil)["agents"].([]any)
	if len(listed) != len(agents) {
		t.Fatalf("listed %d agents, want %d", len(listed), len(agents))
	}
	for _, x := range listed {
		m := x.(map[string]any)
		one := a.ok("GET", "/v1/agents/"+m["id"].(string), service.RoleReviewer, nil)["agent"].(map[string]any)
		if !reflect.DeepEqual(m, one) {
			t.Errorf("the bulk listing says %v\nreading the agent alone says %v", m, one)
		}
	}
	unused := a.ok("GET", "/v1/review/unused-grants?principal=user:alice&since=1h", service.RoleReviewer, nil)["grants"].([]any)
	var got []string
	for _, u := range unused {
		got = append(got, field(u.(map[string]any), "grant", "id").(string))
	}
	// The revoked agent's (and its sub-agents') grants are no longer live.
	var want []string
	for _, g := range grants {
		st := field(a.ok("GET", "/v1/grants/"+g, service.RoleReviewer, nil), "grant", "status")
		if st == "active" {
			want = append(want, g)
		}
	}
	sort.Strings(got)
	sort.Strings(want)
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("unused grants %v, want every live grant %v", got, want)
	}
}
