package service

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/csv"
	"fmt"
	"sort"
	"strings"
	"time"

	lru "github.com/hashicorp/golang-lru/v2"
	"google.golang.org/genproto/googleapis/api/httpbody"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/mandate-dev/mandate/engine"
	"github.com/mandate-dev/mandate/engine/audit"
	mandatev1 "github.com/mandate-dev/mandate/proto/mandate/v1"
	"github.com/mandate-dev/mandate/schema"
)

const (
	defaultReviewPage = 50
	maxReviewPage     = 1000
)

func pageSize(field string, n uint32) (int, error) {
	switch {
	case n == 0:
		return defaultReviewPage, nil
	case n > maxReviewPage:
		return 0, &engine.Error{Kind: engine.KindInvalidArgument, Field: field, Msg: fmt.Sprintf("must be at most %d", maxReviewPage)}
	}
	return int(n), nil
}

func encodeCursor(s string) string { return base64.RawURLEncoding.EncodeToString([]byte("v1:" + s)) }

func decodeCursor(tok string) (string, error) {
	b, err := base64.RawURLEncoding.DecodeString(tok)
	if err != nil || len(b) < 3 || len(b) > 2048 || string(b[:3]) != "v1:" {
		return "", &engine.Error{Kind: engine.KindInvalidArgument, Field: "page_token", Msg: "is not a token this server issued"}
	}
	return string(b[3:]), nil
}

func (h *Handlers) ListAgents(ctx context.Context, r *mandatev1.ListAgentsRequest) (*mandatev1.ListAgentsResponse, error) {
	n, err := pageSize("page_size", r.GetPageSize())
	if err != nil {
		return nil, h.err(ctx, err)
	}
	after := ""
	if r.GetPageToken() != "" {
		if after, err = decodeCursor(r.GetPageToken()); err != nil {
			return nil, h.err(ctx, err)
		}
	}
	agents, last, err := h.Engine.ListAgents(ctx, engine.AgentFilter{Principal: r.GetPrincipal(), Task: r.GetTask(), Status: r.GetStatus()}, after, n)
	if err != nil {
		return nil, h.err(ctx, err)
	}
	out := &mandatev1.ListAgentsResponse{}
	for _, a := range agents {
		out.Agents = append(out.Agents, agentPB(a))
	}
	if last != "" {
		out.NextPageToken = encodeCursor(last)
	}
	return out, nil
}

func accessPB(a engine.Access, task string) *mandatev1.AccessEntry {
	return &mandatev1.AccessEntry{
		Resource: a.Resource.String(), Permission: a.Permission, Grants: a.Grants, Holders: engine.RefStrings(a.Holders),
		Task: task, ValidUntil: tsp(a.ValidUntil), PrincipalHolds: true, Conditions: a.Conditions,
	}
}

// listing is one computed access listing, kept briefly so that its later
// pages come from the same revision instead of recomputing it per page.
type listing struct {
	access []engine.Access
	chain  []engine.Ref
	token  string
	task   string
	at     time.Time
}

// listingTTL bounds how long the later pages of a listing are served from it.
// Each later page still checks that the agent can act at all, so revoking,
// suspending or completing ends a listing at once.
const listingTTL = 30 * time.Second

func (h *Handlers) listingCache() *lru.Cache[string, *listing] {
	h.listingsOnce.Do(func() { h.listings, _ = lru.New[string, *listing](64) })
	return h.listings
}

func (h *Handlers) ListAgentAccess(ctx context.Context, r *mandatev1.ListAgentAccessRequest) (*mandatev1.ListAgentAccessResponse, error) {
	n, err := pageSize("page_size", r.GetPageSize())
	if err != nil {
		return nil, h.err(ctx, err)
	}
	if t := r.GetResourceType(); t != "" && schema.IsCore(t) {
		return nil, h.err(ctx, &engine.Error{Kind: engine.KindInvalidArgument, Field: "resource_type", Msg: fmt.Sprintf("%q is one of mandate's own types", t)})
	}
	listingID, after := "", ""
	if r.GetPageToken() != "" {
		cur, err := decodeCursor(r.GetPageToken())
		if err != nil {
			return nil, h.err(ctx, err)
		}
		var ok bool
		if listingID, after, ok = strings.Cut(cur, "|"); !ok {
			return nil, h.err(ctx, &engine.Error{Kind: engine.KindInvalidArgument, Field: "page_token", Msg: "is not a token this server issued"})
		}
	}
	key := fmt.Sprintf("%s|%s|%s|%s", listingID, r.GetId(), r.GetResourceType(), r.GetPermission())
	l, ok := h.listingCache().Get(key)
	if ok && time.Since(l.at) < listingTTL {
		active, err := h.Engine.AgentActive(ctx, r.GetId())
		if err != nil {
			return nil, h.err(ctx, err)
		}
		if !active {
			l = &listing{chain: l.chain, token: l.token, at: l.at}
		}
	} else {
		access, chain, tok, err := h.Engine.AgentAccess(ctx, r.GetId(), r.GetResourceType(), r.GetPermission())
		if err != nil {
			return nil, h.err(ctx, err)
		}
		sort.Slice(access, func(i, j int) bool { return accessKey(access[i]) < accessKey(access[j]) })
		l = &listing{access: access, chain: chain, token: tok, at: time.Now()}
		a, _, err := h.Engine.GetAgent(ctx, r.GetId())
		if err != nil {
			return nil, h.err(ctx, err)
		}
		l.task = a.Task.String()
		listingID = audit.NewID("lst")[4:]
		key = fmt.Sprintf("%s|%s|%s|%s", listingID, r.GetId(), r.GetResourceType(), r.GetPermission())
		h.listingCache().Add(key, l)
	}
	out := &mandatev1.ListAgentAccessResponse{Agent: "agent:" + r.GetId(), Chain: engine.RefStrings(l.chain), ConsistencyToken: l.token}
	now := h.Engine.Now()
	i := sort.Search(len(l.access), func(i int) bool { return accessKey(l.access[i]) > after })
	for ; i < len(l.access); i++ {
		a := l.access[i]
		if !now.Before(a.ValidUntil) {
			continue // expired since the listing was computed
		}
		if len(out.Access) == n {
			out.NextPageToken = encodeCursor(listingID + "|" + accessKey(l.access[i-1]))
			break
		}
		out.Access = append(out.Access, accessPB(a, l.task))
	}
	return out, nil
}

// accessKey orders a listing: resource, then permission.
func accessKey(a engine.Access) string { return a.Resource.String() + "#" + a.Permission }

func (h *Handlers) ListPrincipalAgents(ctx context.Context, r *mandatev1.ListPrincipalAgentsRequest) (*mandatev1.ListPrincipalAgentsResponse, error) {
	tasks, roots, err := h.Engine.PrincipalAgents(ctx, r.GetId())
	if err != nil {
		return nil, h.err(ctx, err)
	}
	out := &mandatev1.ListPrincipalAgentsResponse{Principal: "user:" + r.GetId()}
	for _, t := range tasks {
		out.Tasks = append(out.Tasks, taskPB(t))
	}
	var node func(n *engine.AgentNode) *mandatev1.AgentNode
	node = func(n *engine.AgentNode) *mandatev1.AgentNode {
		pb := &mandatev1.AgentNode{Agent: agentPB(n.Agent)}
		for _, c := range n.Children {
			pb.Children = append(pb.Children, node(c))
		}
		return pb
	}
	for _, n := range roots {
		out.Agents = append(out.Agents, node(n))
	}
	return out, nil
}

func (h *Handlers) Explain(ctx context.Context, r *mandatev1.ExplainRequest) (*mandatev1.ExplainResponse, error) {
	q, err := h.Engine.ValidateQuery(ctx, r.GetSubject(), r.GetPermission(), r.GetResource(), r.GetContext())
	if err != nil {
		return nil, h.err(ctx, err)
	}
	x, err := h.Engine.Explain(ctx, q)
	if err != nil {
		return nil, h.err(ctx, err)
	}
	out := &mandatev1.ExplainResponse{Allowed: x.Decision.Allowed, ReasonCode: string(x.Decision.Reason), WouldChange: x.WouldChange, Chain: engine.RefStrings(x.Decision.Chain)}
	for _, l := range x.Legs {
		out.Legs = append(out.Legs, &mandatev1.Leg{Name: l.Name, Passed: l.Passed, Detail: l.Detail, Path: l.Path, ExpiresAt: tsp(l.ExpiresAt)})
	}
	return out, nil
}

// reviewScope resolves which agents a review covers.
func (h *Handlers) reviewScope(ctx context.Context, principal, agent string) ([]string, error) {
	if agent != "" {
		ref, err := engine.ParseRef("agent", agent)
		if err != nil {
			return nil, err
		}
		if ref.Type != schema.TypeAgent {
			return nil, &engine.Error{Kind: engine.KindInvalidArgument, Field: "agent", Msg: "must be an agent reference (agent:<id>)"}
		}
		if _, _, err := h.Engine.GetAgent(ctx, ref.ID); err != nil {
			return nil, err
		}
		return []string{ref.ID}, nil
	}
	return h.Engine.AgentIDs(ctx, engine.AgentFilter{Principal: principal})
}

func (h *Handlers) since(field, s string) (time.Time, error) {
	if s == "" {
		s = "30d"
	}
	t, err := audit.ParseTime(s, time.Now())
	if err != nil {
		return time.Time{}, &engine.Error{Kind: engine.KindInvalidArgument, Field: field, Msg: err.Error()}
	}
	return t, nil
}

// auditOf reads every record of one agent since a time.
func (h *Handlers) auditOf(ctx context.Context, agent string, since time.Time, decision string) ([]audit.Record, error) {
	if h.AuditStore == nil {
		return nil, h.err(ctx, &engine.Error{Kind: engine.KindFailedPrecondition, Msg: "audit is off on this server (--audit-mode off); usage cannot be reviewed"})
	}
	if err := h.syncAudit(ctx); err != nil {
		return nil, err
	}
	f := audit.Filter{Agent: "agent:" + agent, Since: since, Decision: decision, PageSize: maxAuditPage}
	var out []audit.Record
	for {
		recs, err := h.AuditStore.Query(ctx, f)
		if err != nil {
			return nil, &engine.Error{Kind: engine.KindUnavailable, Msg: "audit store unavailable", Err: err}
		}
		out = append(out, recs...)
		if len(recs) < f.PageSize {
			return out, nil
		}
		f.After = &audit.Cursor{Time: recs[len(recs)-1].Time, ID: recs[len(recs)-1].ID}
	}
}

// unused lists the live grants of the agents (and of their tasks) that no
// allowed check in the window relied on.
func (h *Handlers) unused(ctx context.Context, agents []string, since time.Time) (map[string][]*engine.Grant, map[string]*engine.Agent, error) {
	used := map[string]bool{}
	info := map[string]*engine.Agent{}
	var holders []engine.Ref
	tasks := map[string]bool{}
	for _, id := range agents {
		a, _, err := h.Engine.GetAgent(ctx, id)
		if err != nil {
			return nil, nil, err
		}
		info[id] = a
		holders = append(holders, engine.Ref{Type: schema.TypeAgent, ID: id})
		if !tasks[a.Task.ID] {
			tasks[a.Task.ID] = true
			holders = append(holders, a.Task)
		}
		recs, err := h.auditOf(ctx, id, since, audit.DecisionAllow)
		if err != nil {
			return nil, nil, err
		}
		for _, r := range recs {
			for _, g := range r.Grants {
				used[g] = true
			}
		}
	}
	grants, err := h.Engine.GrantsHeldBy(ctx, holders)
	if err != nil {
		return nil, nil, err
	}
	out := map[string][]*engine.Grant{}
	for _, g := range grants {
		if g.Status != engine.StatusActive || used[g.ID] {
			continue
		}
		out[g.Holder.String()] = append(out[g.Holder.String()], g)
	}
	return out, info, nil
}

func (h *Handlers) ListUnusedGrants(ctx context.Context, r *mandatev1.ListUnusedGrantsRequest) (*mandatev1.ListUnusedGrantsResponse, error) {
	since, err := h.since("since", r.GetSince())
	if err != nil {
		return nil, h.err(ctx, err)
	}
	agents, err := h.reviewScope(ctx, r.GetPrincipal(), r.GetAgent())
	if err != nil {
		return nil, h.err(ctx, err)
	}
	byHolder, info, err := h.unused(ctx, agents, since)
	if err != nil {
		return nil, h.err(ctx, err)
	}
	out := &mandatev1.ListUnusedGrantsResponse{}
	holders := make([]string, 0, len(byHolder))
	for k := range byHolder {
		holders = append(holders, k)
	}
	sort.Strings(holders)
	for _, k := range holders {
		for _, g := range byHolder[k] {
			ug := &mandatev1.UnusedGrant{Grant: grantPB(g)}
			if a := info[g.Holder.ID]; a != nil && g.Holder.Type == schema.TypeAgent {
				ug.Principal, ug.Task = a.Principal.String(), a.Task.String()
			} else {
				for _, a := range info {
					if a.Task == g.Holder {
						ug.Principal, ug.Task = a.Principal.String(), a.Task.String()
						break
					}
				}
			}
			out.Grants = append(out.Grants, ug)
		}
	}
	return out, nil
}

func (h *Handlers) report(ctx context.Context, principal, sinceStr string) (*mandatev1.GetReviewReportResponse, error) {
	since, err := h.since("since", sinceStr)
	if err != nil {
		return nil, err
	}
	agents, err := h.reviewScope(ctx, principal, "")
	if err != nil {
		return nil, err
	}
	unusedBy, info, err := h.unused(ctx, agents, since)
	if err != nil {
		return nil, err
	}
	out := &mandatev1.GetReviewReportResponse{GeneratedAt: timestamppb.Now(), Since: timestamppb.New(since)}
	for _, id := range agents {
		a := info[id]
		rep := &mandatev1.AgentReport{Agent: agentPB(a)}
		access, _, _, err := h.Engine.AgentAccess(ctx, id, "", "")
		if err != nil {
			return nil, err
		}
		for _, x := range access {
			rep.CanReach = append(rep.CanReach, accessPB(x, a.Task.String()))
		}
		recs, err := h.auditOf(ctx, id, since, "")
		if err != nil {
			return nil, err
		}
		used := map[string]bool{}
		for i := range recs {
			rec := &recs[i]
			switch rec.Decision {
			case audit.DecisionAllow:
				if k := rec.Permission + " " + rec.Resource; !used[k] {
					used[k] = true
					rep.Used = append(rep.Used, k)
				}
			case audit.DecisionDeny:
				rep.Denials = append(rep.Denials, auditPB(rec))
			}
		}
		sort.Strings(rep.Used)
		for _, g := range unusedBy["agent:"+id] {
			rep.UnusedGrants = append(rep.UnusedGrants, grantPB(g))
		}
		for _, g := range unusedBy[a.Task.String()] {
			rep.UnusedGrants = append(rep.UnusedGrants, grantPB(g))
		}
		out.Agents = append(out.Agents, rep)
	}
	return out, nil
}

func (h *Handlers) GetReviewReport(ctx context.Context, r *mandatev1.GetReviewReportRequest) (*mandatev1.GetReviewReportResponse, error) {
	out, err := h.report(ctx, r.GetPrincipal(), r.GetSince())
	if err != nil {
		return nil, h.err(ctx, err)
	}
	return out, nil
}

// ReportCSV renders a report as CSV: one row per finding.
func ReportCSV(rep *mandatev1.GetReviewReportResponse) ([]byte, error) {
	var b bytes.Buffer
	w := csv.NewWriter(&b)
	_ = w.Write([]string{"agent", "name", "principal", "task", "status", "chain", "finding", "permission", "resource", "detail", "time"})
	for _, a := range rep.GetAgents() {
		ag := a.GetAgent()
		row := func(finding, perm, res, detail string, at *timestamppb.Timestamp) {
			t := ""
			if at != nil {
				t = at.AsTime().Format(time.RFC3339)
			}
			chain := ""
			for i, c := range ag.GetChain() {
				if i > 0 {
					chain += " > "
				}
				chain += c
			}
			_ = w.Write([]string{"agent:" + ag.GetId(), ag.GetName(), ag.GetPrincipal(), ag.GetTask(), ag.GetStatus(), chain, finding, perm, res, detail, t})
		}
		identity := "expires " + ag.GetExpiresAt().AsTime().Format(time.RFC3339)
		if w := ag.GetWorkloadId(); w != "" {
			identity += "; workload " + w
		}
		row("identity", "", "", identity, ag.GetCreatedAt())
		for _, x := range a.GetCanReach() {
			row("can_reach", x.GetPermission(), x.GetResource(), "grants "+fmt.Sprint(x.GetGrants()), x.GetValidUntil())
		}
		for _, u := range a.GetUsed() {
			var perm, res string
			fmt.Sscanf(u, "%s %s", &perm, &res)
			row("used", perm, res, "", nil)
		}
		for _, g := range a.GetUnusedGrants() {
			row("unused_grant", g.GetPermission(), g.GetResource(), "grant "+g.GetId()+" held by "+g.GetHolder(), g.GetExpiresAt())
		}
		for _, d := range a.GetDenials() {
			row("denied", d.GetPermission(), d.GetResource(), d.GetReasonCode(), d.GetTime())
		}
	}
	w.Flush()
	return b.Bytes(), w.Error()
}

func (h *Handlers) GetReviewReportCSV(ctx context.Context, r *mandatev1.GetReviewReportCSVRequest) (*httpbody.HttpBody, error) {
	out, err := h.report(ctx, r.GetPrincipal(), r.GetSince())
	if err != nil {
		return nil, h.err(ctx, err)
	}
	b, err := ReportCSV(out)
	if err != nil {
		return nil, h.err(ctx, err)
	}
	return &httpbody.HttpBody{ContentType: "text/csv; charset=utf-8", Data: b}, nil
}
