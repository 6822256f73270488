package audit

import "strings"

// The AI-agent and delegation part of the OCSF mapping, kept in this one file.
//
// OCSF 1.8.0 has no object for an AI agent nor for delegation, so:
//   - the human principal is actor.user, a person (type_id 1, User);
//   - the acting agent instance is actor.session: uid is the agent, issuer
//     is mandate, credential_uid the jti of the agent token the check was
//     made with (checks by subject_token); expiration_time would be the
//     agent's expiry, which the record does not carry yet;
//   - the task is a resources[] entry with role Related, whose
//     resource_relationship is the delegation chain as a directed graph: one
//     node per agent and the human, one "acts_for" edge per link.
//
// OCSF 1.9 brings ai_operation.ai_agent, and a delegation object is
// proposed. Adopting them changes ocsfActingAgent (the session becomes an
// ai_agent) and ocsfDelegation (the graph becomes a delegation), and
// nothing else.

// ocsfActingAgent is the human and the agent instance behind a check.
// Either may be nil: a user check has no agent, an unknown agent no human.
func ocsfActingAgent(r *Record) (user, session map[string]any) {
	human := r.Principal
	if strings.HasPrefix(r.Subject, "user:") {
		human = r.Subject
	}
	if human != "" {
		user = map[string]any{"uid": human, "type_id": 1, "type": "User"}
		setString(user, "name", strings.TrimPrefix(human, "user:"))
	}
	if strings.HasPrefix(r.Subject, "agent:") {
		session = map[string]any{"uid": r.Subject, "issuer": "mandate"}
		if jti, ok := r.Details["jti"].(string); ok {
			setString(session, "credential_uid", jti)
		}
	}
	return user, session
}

// ocsfDelegation is the task a record concerns, as a Related resource
// carrying the delegation chain, or nil when the record names no task.
func ocsfDelegation(r *Record) map[string]any {
	if r.Task == "" {
		return nil
	}
	task := ocsfResource(r.Task, 4)
	chain := r.Chain
	if len(chain) == 0 {
		chain = stringList(r.Details["chain"])
	}
	if len(chain) == 0 {
		return task
	}
	nodes := make([]any, 0, len(chain))
	edges := make([]any, 0, len(chain)-1)
	for i, ref := range chain {
		typ, id, _ := strings.Cut(ref, ":")
		node := map[string]any{"uid": ref, "type": typ}
		setString(node, "name", id)
		nodes = append(nodes, node)
		if i > 0 {
			edges = append(edges, map[string]any{
				"uid": chain[i-1] + "->" + ref, "name": "acts_for", "relation": "acts_for",
				"source": chain[i-1], "target": ref, "is_directed": true,
			})
		}
	}
	graph := map[string]any{"name": "delegation chain", "type": "delegation", "is_directed": true, "nodes": nodes}
	if len(edges) > 0 {
		graph["edges"] = edges
	}
	task["resource_relationship"] = graph
	return task
}
