package audit_test

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/mandate-dev/mandate/engine/audit"
)

// at reads a dotted path ("actor.user.uid", "resources.1.role") in an event.
func at(ev any, path string) any {
	cur := ev
	for _, p := range strings.Split(path, ".") {
		switch c := cur.(type) {
		case map[string]any:
			cur = c[p]
		case []any:
			var i int
			if _, err := fmt.Sscan(p, &i); err != nil || i >= len(c) {
				return nil
			}
			cur = c[i]
		default:
			return nil
		}
	}
	return cur
}

// TestOCSFMapping: each kind of record lands where the README's table says,
// and validates against the OCSF 1.8.0 schema.
func TestOCSFMapping(t *testing.T) {
	s := loadOCSFSchema(t, ocsfSchemaDir)
	now := time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC)
	cases := []struct {
		name string
		rec  audit.Record
		want map[string]any // path → value; nil means absent
	}{
		{"allowed agent check", audit.Record{
			ID: "dec_1", Time: now, Kind: audit.KindCheck, Decision: audit.DecisionAllow, ReasonCode: "ALLOWED",
			Subject: "agent:agt_2", Chain: []string{"agent:agt_2", "agent:agt_1", "user:alice"}, Principal: "user:alice", Task: "task:tsk_1",
			Permission: "read", Resource: "repo:acme/api", Grants: []string{"grt_a", "grt_b"}, Reason: "pull the code",
			CorrelationID: "deploy-42", RequestID: "req_1", Caller: "ci-runner", SourceAddr: "10.1.2.3:5555", TraceID: "4bf92f3577b34da6a3ce929d0e0e4736",
			Details: map[string]any{"context": map[string]any{"source_ip": "192.0.2.7"}, "jti": "tok_1"},
		}, map[string]any{
			"actor.session.credential_uid": "tok_1",
			"metadata.version":             audit.OCSFVersion, "activity_id": 2, "type_uid": 600302, "status_id": 1, "status_code": "ALLOWED", "status_detail": nil,
			"action_id": 1, "disposition_id": 1, "is_alert": false,
			"actor.user.uid": "user:alice", "actor.user.type_id": 1, "actor.session.uid": "agent:agt_2", "actor.app_name": "ci-runner", "actor.app_uid": "key:ci-runner",
			"actor.invoked_by": nil,
			"src_endpoint.ip":  "10.1.2.3", "src_endpoint.port": 5555, "src_endpoint.intermediate_ips.0": "192.0.2.7",
			"authorizations.0.policy.uid": "grt_a", "authorizations.1.policy.uid": "grt_b", "authorizations.1.decision": "allow",
			"resources.0.uid": "repo:acme/api", "resources.0.role": "Target", "resources.1.uid": "task:tsk_1", "resources.1.role": "Related",
			"resources.1.resource_relationship.nodes.1.uid": "agent:agt_1", "resources.1.resource_relationship.edges.1.target": "user:alice",
			"trace.uid": "4bf92f3577b34da6a3ce929d0e0e4736", "metadata.profiles.1": "trace", "metadata.correlation_uid": "deploy-42",
			"api.request.uid": "req_1", "message": "pull the code", "unmapped.chain": nil, "unmapped.task": nil,
		}},
		{"denied for a condition", audit.Record{
			ID: "dec_2", Time: now, Kind: audit.KindCheck, Decision: audit.DecisionDeny, ReasonCode: "CONDITION_FAILED", FailedLeg: "grant",
			Subject: "agent:agt_2", Principal: "user:alice", Task: "task:tsk_1", Permission: "deploy", Resource: "environment:prod",
			Caller: "ci-runner", SourceAddr: "[2001:db8::1]:443", Details: map[string]any{"condition": "grant_source_network", "context": map[string]any{"source_ip": "not an ip"}},
		}, map[string]any{
			"status_id": 2, "status_code": "CONDITION_FAILED", "status_detail": "grant", "action_id": 2, "disposition_id": 2, "disposition": "Blocked",
			"authorizations.0.decision": "deny", "authorizations.0.policy": nil, "src_endpoint.ip": "2001:db8::1", "src_endpoint.intermediate_ips": nil,
			"unmapped.details.condition": "grant_source_network", "metadata.correlation_uid": nil, "trace": nil,
		}},
		{"user check over REST", audit.Record{
			ID: "dec_3", Time: now, Kind: audit.KindCheck, Decision: audit.DecisionAllow, ReasonCode: "ALLOWED",
			Subject: "user:bob", Permission: "read", Resource: "repo:acme/api", Caller: "gw", SourceAddr: "127.0.0.1",
		}, map[string]any{"actor.user.uid": "user:bob", "actor.user.name": "bob", "actor.session": nil, "src_endpoint.ip": "127.0.0.1", "src_endpoint.port": nil},
		},
		{"decision error", audit.Record{
			ID: "dec_4", Time: now, Kind: audit.KindCheck, Decision: audit.DecisionError, Subject: "agent:agt_9", Permission: "read",
			Resource: "repo:acme/api", Caller: "ci-runner", SourceAddr: "10.0.0.1:1",
		}, map[string]any{"status_id": 2, "disposition_id": 27, "status_code": "ERROR", "actor.user": nil, "actor.session.uid": "agent:agt_9"}},
		{"agent suspended by an operator", audit.Record{
			ID: "chg_1", Time: now, Kind: audit.KindChange, Action: "agent.suspend", Target: "agent:agt_2", Principal: "user:alice", Task: "task:tsk_1",
			Caller: "ops", SourceAddr: "10.0.0.2:9", Details: map[string]any{"principal": "user:alice", "task": "task:tsk_1", "after": "suspended"},
		}, map[string]any{
			"activity_id": 3, "actor.app_name": "ops", "actor.user": nil, "actor.session": nil, "resources.0.uid": "agent:agt_2", "resources.0.role": "Target",
			"disposition_id": 24, "disposition": "Access Revoked", "is_alert": false, "status_code": nil,
		}},
		{"automatic suspension", audit.Record{
			ID: "chg_2", Time: now, Kind: audit.KindChange, Action: "agent.auto_suspend", Target: "agent:agt_1", Principal: "user:alice", Task: "task:tsk_1",
			Caller: "ci-runner", SourceAddr: "10.0.0.3:7", Details: map[string]any{
				"principal": "user:alice", "task": "task:tsk_1", "bound": "checks_per_minute", "limit": 3, "observed": 4,
				"suspended": []any{"agent:agt_1", "agent:agt_2"}, "resource": "repo:acme/api", "suspend_error": "",
			},
		}, map[string]any{
			"is_alert": true, "severity_id": 4, "actor.app_name": "mandate", "src_endpoint.svc_name": "mandate", "src_endpoint.ip": nil,
			"resources.0.uid": "agent:agt_1", "resources.1.uid": "agent:agt_2", "resources.1.role": "Affected",
			"unmapped.triggered_by_key": "ci-runner", "unmapped.details.suspend_error": nil, "unmapped.details.bound": "checks_per_minute",
		}},
		{"freeze", audit.Record{
			ID: "chg_3", Time: now, Kind: audit.KindChange, Action: "agents.freeze_all", Target: "mandate:global", Caller: "root", SourceAddr: "10.0.0.4:1",
			Details: map[string]any{"already_frozen": false, "why": "incident 42"},
		}, map[string]any{"is_alert": true, "message": "incident 42", "resources.0.type": "mandate", "actor.app_name": "root"}},
		{"agent created", audit.Record{
			ID: "chg_4", Time: now, Kind: audit.KindChange, Action: "agent.create", Target: "agent:agt_2", Principal: "user:alice", Task: "task:tsk_1",
			Caller: "ops", SourceAddr: "10.0.0.2:9", Details: map[string]any{"principal": "user:alice", "task": "task:tsk_1", "parent": "",
				"chain": []string{"agent:agt_2", "agent:agt_1", "user:alice"}},
		}, map[string]any{"activity_id": 1, "disposition_id": 1, "resources.2.uid": "task:tsk_1",
			"resources.2.resource_relationship.edges.0.source": "agent:agt_2", "resources.1.uid": "user:alice", "unmapped.details.parent": nil,
			"src_endpoint.uid": nil}},
		{"agent created by a workload presenting an X.509-SVID", audit.Record{
			ID: "chg_4w", Time: now, Kind: audit.KindChange, Action: "agent.create", Target: "agent:agt_3", Principal: "user:alice", Task: "task:tsk_1",
			Caller: "ops", SourceAddr: "10.0.0.2:9", Workload: "spiffe://acme.internal/ns/agents/sa/runner",
			Details: map[string]any{"principal": "user:alice", "task": "task:tsk_1", "chain": []string{"agent:agt_3", "user:alice"}},
		}, map[string]any{"src_endpoint.uid": "spiffe://acme.internal/ns/agents/sa/runner", "src_endpoint.ip": "10.0.0.2",
			"actor.app_name": "ops", "unmapped.workload_id": nil}},
		{"task completed: the target carries the chain", audit.Record{
			ID: "chg_5", Time: now, Kind: audit.KindChange, Action: "task.complete", Target: "task:tsk_1", Task: "task:tsk_1", Principal: "user:alice",
			Caller: "ops", SourceAddr: "10.0.0.2:9", Details: map[string]any{"task": "task:tsk_1", "principal": "user:alice"},
		}, map[string]any{"resources.0.uid": "task:tsk_1", "resources.0.role": "Target", "resources.2": nil}},
		{"refused grant", audit.Record{
			ID: "chg_6", Time: now, Kind: audit.KindChange, Action: "grant.refused", Target: "agent:agt_2", Caller: "ops", SourceAddr: "10.0.0.2:9",
			Details: map[string]any{"holder": "agent:agt_2", "permission": "deploy", "resource": "environment:prod", "why": "user:alice lacks deploy"},
		}, map[string]any{"status_id": 2, "status_code": "ESCALATION", "status_detail": "user:alice lacks deploy", "action_id": 2, "resources.1.uid": "environment:prod"}},
		{"grant deleted", audit.Record{
			ID: "chg_7", Time: now, Kind: audit.KindChange, Action: "grant.delete", Target: "grant:grt_a", Caller: "ops", SourceAddr: "10.0.0.2:9",
			Details: map[string]any{"before": "grant:grt_a", "after": ""},
		}, map[string]any{"activity_id": 4, "disposition_id": 24, "unmapped.details.after": nil}},
		{"a replayed record without an address", audit.Record{
			ID: "chg_8", Time: now, Kind: audit.KindChange, Action: "schema.write", Target: "schema", Caller: "root",
		}, map[string]any{"src_endpoint.name": "unknown", "resources.0.uid": "schema"}},
		{"access request filed", audit.Record{
			ID: "chg_10", Time: now, Kind: audit.KindChange, Action: "access_request.file", Target: "access_request:acr_1", Principal: "user:alice",
			Task: "task:tsk_1", Chain: []string{"agent:agt_2", "agent:agt_1", "user:alice"}, Reason: "needs to push the fix", Caller: "runtime", SourceAddr: "10.0.0.2:9",
			Details: map[string]any{"holder": "agent:agt_2", "human": "user:alice", "permission": "write", "resource": "repo:acme/api", "state": "pending", "ttl": "30m"},
		}, map[string]any{"activity_id": 1, "status_id": 1, "disposition_id": 1, "message": "needs to push the fix", "actor.app_name": "runtime",
			"resources.0.uid": "access_request:acr_1", "resources.1.uid": "agent:agt_2", "resources.2.uid": "repo:acme/api",
			"resources.3.uid": "user:alice", "resources.4.uid": "task:tsk_1", "resources.4.resource_relationship.edges.1.target": "user:alice"}},
		{"access request approved by the human", audit.Record{
			ID: "chg_11", Time: now, Kind: audit.KindChange, Action: "access_request.approve", Target: "access_request:acr_1", Principal: "user:alice",
			Task: "task:tsk_1", Reason: "ok for today", Caller: "user:alice", SourceAddr: "10.0.0.5:1",
			Details: map[string]any{"holder": "agent:agt_2", "decided_as": "human", "grant": "grant:grt_9", "state": "approved"},
		}, map[string]any{"activity_id": 3, "status_id": 1, "message": "ok for today", "actor.app_name": "user:alice", "unmapped.details.decided_as": "human"}},
		{"access request declined", audit.Record{
			ID: "chg_12", Time: now, Kind: audit.KindChange, Action: "access_request.decline", Target: "access_request:acr_1", Caller: "root", SourceAddr: "10.0.0.4:1",
			Details: map[string]any{"holder": "agent:agt_2", "decided_as": "admin", "state": "declined"},
		}, map[string]any{"activity_id": 3, "message": nil}},
		{"access request expired, seen by a reader", audit.Record{
			ID: "chg_13", Time: now, Kind: audit.KindChange, Action: "access_request.expire", Target: "access_request:acr_1", Principal: "user:alice",
			Caller: "runtime", SourceAddr: "10.0.0.2:9", Details: map[string]any{"holder": "agent:agt_2", "state": "expired"},
		}, map[string]any{"activity_id": 3, "actor.app_name": "mandate", "unmapped.triggered_by_key": "runtime", "src_endpoint.svc_name": "mandate"}},
		{"access request refused as an escalation", audit.Record{
			ID: "chg_14", Time: now, Kind: audit.KindChange, Action: "access_request.refused", Target: "agent:agt_2", Caller: "runtime", SourceAddr: "10.0.0.2:9",
			Details: map[string]any{"holder": "agent:agt_2", "permission": "deploy", "resource": "environment:prod", "why": "principal user:alice does not hold deploy"},
		}, map[string]any{"activity_id": 1, "status_id": 2, "status_code": "ESCALATION", "action_id": 2}},
		{"an action this mapping does not know", audit.Record{
			ID: "chg_9", Time: now, Kind: audit.KindChange, Action: "widget.frobnicate", Target: "widget:w", Caller: "root", SourceAddr: "10.0.0.2:9",
		}, map[string]any{"activity_id": 99, "activity_name": "widget.frobnicate", "type_uid": 600399, "type_name": "API Activity: Other"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			ev := audit.OCSF(&c.rec)
			if errs := s.Validate("api_activity", ev); len(errs) > 0 {
				t.Errorf("does not validate against OCSF %s:\n  %s", audit.OCSFVersion, strings.Join(errs, "\n  "))
			}
			if ev["metadata"].(map[string]any)["product"].(map[string]any)["version"] == "" {
				t.Error("metadata.product.version is empty")
			}
			for path, want := range c.want {
				got := at(ev, path)
				if fmt.Sprint(got) != fmt.Sprint(want) || (want == nil) != (got == nil) {
					t.Errorf("%s = %v, want %v", path, got, want)
				}
			}
		})
	}
}
