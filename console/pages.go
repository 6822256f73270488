package console

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/url"
	"sort"
	"strings"
	"time"

	"golang.org/x/sync/errgroup"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/types/known/structpb"

	mandatev1 "github.com/mandate-dev/mandate/proto/mandate/v1"
	"github.com/mandate-dev/mandate/service"
)

// maxListed bounds what one page gathers from paginated listings.
const (
	maxListed      = 100000
	maxAuditWindow = 200000
)

// allAgents pages through ListAgents.
func (c *Console) allAgents(ctx context.Context, principal, status string) ([]*mandatev1.Agent, error) {
	var out []*mandatev1.Agent
	tok := ""
	for {
		r, err := c.cfg.Services.ListAgents(ctx, &mandatev1.ListAgentsRequest{Principal: principal, Status: status, PageSize: 1000, PageToken: tok})
		if err != nil {
			return nil, err
		}
		out = append(out, r.GetAgents()...)
		if tok = r.GetNextPageToken(); tok == "" || len(out) >= maxListed {
			return out, nil
		}
	}
}

// auditWindow pages through ListAudit for f, newest first, up to limit records.
func (c *Console) auditWindow(ctx context.Context, f *mandatev1.ListAuditRequest, limit int) ([]*mandatev1.AuditRecord, bool, error) {
	var out []*mandatev1.AuditRecord
	f.PageSize = 1000
	for {
		r, err := c.cfg.Services.ListAudit(ctx, f)
		if err != nil {
			return nil, false, err
		}
		out = append(out, r.GetRecords()...)
		if r.GetNextPageToken() == "" {
			return out, false, nil
		}
		if len(out) >= limit {
			return out, true, nil
		}
		f.PageToken = r.GetNextPageToken()
	}
}

// tasksOf reads the tasks of agents, oldest first, a few at a time.
func (c *Console) tasksOf(ctx context.Context, agents []*mandatev1.Agent) ([]*mandatev1.Task, error) {
	seen := map[string]bool{}
	var ids []string
	for _, a := range agents {
		id := strings.TrimPrefix(a.GetTask(), "task:")
		if !seen[id] {
			seen[id] = true
			ids = append(ids, id)
		}
	}
	out := make([]*mandatev1.Task, len(ids))
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(8)
	for i, id := range ids {
		g.Go(func() error {
			t, err := c.cfg.Services.GetTask(gctx, &mandatev1.GetTaskRequest{Id: id})
			if err != nil {
				return err
			}
			out[i] = t.GetTask()
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return nil, err
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].GetCreatedAt().AsTime().Before(out[j].GetCreatedAt().AsTime()) })
	return out, nil
}

// ---- 1. overview ----

type overviewData struct {
	Scope                                                  string
	ActiveAgents, Tasks, Expiring, Denials, AutoSuspension int
	Problems                                               []string
	Chart                                                  chart
	Truncated                                              bool
}

func (c *Console) overview(w http.ResponseWriter, r *http.Request, s *session) {
	ctx := as(r, s)
	now := c.cfg.Now()
	d := overviewData{Scope: principalScope(s, "")}
	var refused []string
	problem := func(what string, err error) {
		if code, _ := httpStatus(err); code == http.StatusForbidden {
			refused = append(refused, what)
			return
		}
		d.Problems = append(d.Problems, what+": "+errText(err))
	}
	if agents, err := c.allAgents(ctx, d.Scope, ""); err != nil {
		problem("agents", err)
	} else {
		for _, a := range agents {
			if a.GetStatus() == "active" {
				d.ActiveAgents++
			}
		}
		tasks, err := c.tasksOf(ctx, agents)
		if err != nil {
			problem("tasks", err)
		}
		for _, t := range tasks {
			if t.GetStatus() == "active" {
				d.Tasks++
			}
		}
	}
	// Every live grant, from the unused-grants report over an empty window
	// (no check can have used a grant since now): the same grants and
	// expiries the review reports show.
	if ug, err := c.cfg.Services.ListUnusedGrants(ctx, &mandatev1.ListUnusedGrantsRequest{Since: now.Format(time.RFC3339Nano), Principal: d.Scope}); err != nil {
		problem("grants", err)
	} else {
		for _, g := range ug.GetGrants() {
			if exp := g.GetGrant().GetExpiresAt(); exp != nil && exp.AsTime().After(now) && exp.AsTime().Before(now.Add(time.Hour)) {
				d.Expiring++
			}
		}
	}
	recs, truncated, err := c.auditWindow(ctx, &mandatev1.ListAuditRequest{Principal: d.Scope, Since: now.Add(-24 * time.Hour).Format(time.RFC3339Nano)}, maxAuditWindow)
	if err != nil {
		problem("audit trail", err)
	} else {
		d.Truncated = truncated
		for _, rec := range recs {
			if rec.GetDecision() == "deny" && rec.GetTime().AsTime().After(now.Add(-time.Hour)) {
				d.Denials++
			}
			if rec.GetAction() == "agent.auto_suspend" {
				d.AutoSuspension++
			}
		}
		d.Chart = perMinute(recs, now)
	}
	if len(refused) > 0 {
		d.Problems = append(d.Problems, "your role ("+string(s.caller.Role)+") may not read the "+strings.Join(refused, ", ")+": a reviewer or an admin can; open an agent by its id from Actions")
	}
	c.render(w, r, s, http.StatusOK, "overview", "overview", "Overview", d)
}

// ---- 2. people ----

type peopleData struct {
	Q, Status, Tasks string
	People           []person
	Problems         []string
	Agents           int
}

type person struct {
	Principal string
	ID        string
	Tasks     []taskView
}

type taskView struct {
	Task   *mandatev1.Task
	Agents []*nodeView
}

type nodeView struct {
	Agent    *mandatev1.Agent
	LastDeny *mandatev1.AuditRecord
	Children []*nodeView
}

func (c *Console) people(w http.ResponseWriter, r *http.Request, s *session) {
	ctx := as(r, s)
	q := r.URL.Query()
	d := peopleData{Q: strings.TrimSpace(q.Get("q")), Status: q.Get("status"), Tasks: q.Get("tasks")}
	if d.Tasks == "" {
		d.Tasks = "open"
	}
	scope := principalScope(s, "")
	agents, err := c.allAgents(ctx, scope, "")
	if err != nil {
		c.failErr(w, r, s, err)
		return
	}
	principals := map[string]bool{}
	for _, a := range agents {
		principals[a.GetPrincipal()] = true
	}
	names := make([]string, 0, len(principals))
	for p := range principals {
		if d.Q == "" || strings.Contains(strings.ToLower(p), strings.ToLower(d.Q)) {
			names = append(names, p)
		}
	}
	sort.Strings(names)
	// The latest denial of each agent in the last 24 hours: the reason code
	// Check gave, from the audit trail.
	lastDeny := map[string]*mandatev1.AuditRecord{}
	if recs, _, err := c.auditWindow(ctx, &mandatev1.ListAuditRequest{Principal: scope, Decision: "deny",
		Since: c.cfg.Now().Add(-24 * time.Hour).Format(time.RFC3339Nano)}, 20000); err != nil {
		d.Problems = append(d.Problems, "audit trail: "+errText(err))
	} else {
		for _, rec := range recs {
			if _, seen := lastDeny[rec.GetSubject()]; !seen {
				lastDeny[rec.GetSubject()] = rec
			}
		}
	}
	tasks, err := c.tasksOf(ctx, agents)
	if err != nil {
		d.Problems = append(d.Problems, "tasks: "+errText(err))
	}
	// Each human's trees, from the same agent records ListPrincipalAgents
	// reads: sub-agents under their parent, top agents under their task.
	children := map[string][]*mandatev1.Agent{}
	tops := map[string][]*mandatev1.Agent{} // by task
	taskOwner := map[string][]string{}      // principal → task ids, in creation order
	for _, a := range agents {
		if a.GetParent() != "" {
			children[a.GetParent()] = append(children[a.GetParent()], a)
		} else {
			tops[a.GetTask()] = append(tops[a.GetTask()], a)
		}
	}
	for _, t := range tasks {
		taskOwner[t.GetPrincipal()] = append(taskOwner[t.GetPrincipal()], t.GetId())
	}
	byID := map[string]*mandatev1.Task{}
	for _, t := range tasks {
		byID[t.GetId()] = t
	}
	var build func(a *mandatev1.Agent) *nodeView
	build = func(a *mandatev1.Agent) *nodeView {
		v := &nodeView{Agent: a, LastDeny: lastDeny["agent:"+a.GetId()]}
		for _, ch := range children["agent:"+a.GetId()] {
			if cv := build(ch); cv != nil {
				v.Children = append(v.Children, cv)
			}
		}
		if d.Status != "" && a.GetStatus() != d.Status && len(v.Children) == 0 {
			return nil
		}
		d.Agents++
		return v
	}
	for _, p := range names {
		pv := person{Principal: p, ID: strings.TrimPrefix(p, "user:")}
		for _, tid := range taskOwner[p] {
			t := byID[tid]
			if d.Tasks == "open" && t.GetStatus() != "active" {
				continue
			}
			var nodes []*nodeView
			for _, a := range tops["task:"+tid] {
				if v := build(a); v != nil {
					nodes = append(nodes, v)
				}
			}
			if d.Status != "" && len(nodes) == 0 {
				continue
			}
			pv.Tasks = append(pv.Tasks, taskView{Task: t, Agents: nodes})
		}
		if len(pv.Tasks) > 0 {
			d.People = append(d.People, pv)
		}
	}
	c.render(w, r, s, http.StatusOK, "people", "people", "People", d)
}

// ---- 3. agent ----

type agentData struct {
	Agent     *mandatev1.Agent
	Task      *mandatev1.Task
	Access    []accessView
	Unused    []*mandatev1.UnusedGrant
	Since     string
	Timeline  []*mandatev1.AuditRecord
	Requests  []*mandatev1.AccessRequest
	Explain   *mandatev1.ExplainResponse
	ExplainQ  explainQuery
	Problems  []string
	ExplainEr string
}

type accessView struct {
	Entry  *mandatev1.AccessEntry
	Grants []grantUse
}

type grantUse struct {
	ID     string
	Unused bool
}

type explainQuery struct{ Permission, Resource, Context string }

func (c *Console) agent(w http.ResponseWriter, r *http.Request, s *session) {
	ctx := as(r, s)
	id := r.PathValue("id")
	d := agentData{Since: r.URL.Query().Get("since")}
	if d.Since == "" {
		d.Since = "30d"
	}
	ga, err := c.cfg.Services.GetAgent(ctx, &mandatev1.GetAgentRequest{Id: id})
	if err != nil {
		c.failErr(w, r, s, err)
		return
	}
	d.Agent = ga.GetAgent()
	var refused []string
	problem := func(what string, err error) {
		if code, _ := httpStatus(err); code == http.StatusForbidden {
			refused = append(refused, what)
			return
		}
		d.Problems = append(d.Problems, what+": "+errText(err))
	}
	if t, err := c.cfg.Services.GetTask(ctx, &mandatev1.GetTaskRequest{Id: strings.TrimPrefix(d.Agent.GetTask(), "task:")}); err != nil {
		problem("task", err)
	} else {
		d.Task = t.GetTask()
	}
	unused := map[string]bool{}
	if ug, err := c.cfg.Services.ListUnusedGrants(ctx, &mandatev1.ListUnusedGrantsRequest{Agent: "agent:" + id, Principal: principalScope(s, ""), Since: d.Since}); err != nil {
		problem("unused grants", err)
	} else {
		d.Unused = ug.GetGrants()
		for _, g := range d.Unused {
			unused[g.GetGrant().GetId()] = true
		}
	}
	tok := ""
	for {
		la, err := c.cfg.Services.ListAgentAccess(ctx, &mandatev1.ListAgentAccessRequest{Id: id, PageSize: 1000, PageToken: tok})
		if err != nil {
			problem("access", err)
			break
		}
		for _, e := range la.GetAccess() {
			v := accessView{Entry: e}
			for _, g := range e.GetGrants() {
				v.Grants = append(v.Grants, grantUse{ID: strings.TrimPrefix(g, "grant:"), Unused: unused[strings.TrimPrefix(g, "grant:")]})
			}
			d.Access = append(d.Access, v)
		}
		if tok = la.GetNextPageToken(); tok == "" || len(d.Access) >= maxListed {
			break
		}
	}
	if au, err := c.cfg.Services.ListAudit(ctx, &mandatev1.ListAuditRequest{Agent: "agent:" + id, Principal: principalScope(s, ""), PageSize: 50}); err != nil {
		problem("decisions", err)
	} else {
		d.Timeline = au.GetRecords()
	}
	if lr, err := c.cfg.Services.ListAccessRequests(ctx, &mandatev1.ListAccessRequestsRequest{Agent: "agent:" + id, PageSize: 50}); err != nil {
		problem("access requests", err)
	} else {
		d.Requests = lr.GetAccessRequests()
	}
	if r.Method == http.MethodPost {
		d.ExplainQ = explainQuery{Permission: strings.TrimSpace(r.PostForm.Get("permission")), Resource: strings.TrimSpace(r.PostForm.Get("resource")), Context: strings.TrimSpace(r.PostForm.Get("context"))}
		req := &mandatev1.ExplainRequest{Subject: "agent:" + id, Permission: d.ExplainQ.Permission, Resource: d.ExplainQ.Resource}
		if err := parseContext(d.ExplainQ.Context, req); err != nil {
			d.ExplainEr = "context: " + err.Error()
		} else if x, err := c.cfg.Services.Explain(ctx, req); err != nil {
			d.ExplainEr = errText(err)
		} else {
			d.Explain = x
		}
	}
	if len(refused) > 0 {
		d.Problems = append(d.Problems, "your role ("+string(s.caller.Role)+") may not read this agent's "+strings.Join(refused, ", ")+": a reviewer or an admin can")
	}
	c.render(w, r, s, http.StatusOK, "agent", "people", "Agent "+d.Agent.GetName(), d)
}

func parseContext(raw string, req *mandatev1.ExplainRequest) error {
	if raw == "" {
		return nil
	}
	var m map[string]any
	if err := json.Unmarshal([]byte(raw), &m); err != nil {
		return errors.New("must be a JSON object")
	}
	st, err := structpb.NewStruct(m)
	if err != nil {
		return err
	}
	req.Context = st
	return nil
}

// ---- 4. audit ----

type auditData struct {
	F       url.Values
	Records []*mandatev1.AuditRecord
	Next    string
	Problem string
}

var auditFilters = []string{"agent", "principal", "task", "correlation_id", "decision", "resource", "since", "until", "page_size"}

func (c *Console) auditPage(w http.ResponseWriter, r *http.Request, s *session) {
	q := r.URL.Query()
	f := url.Values{}
	for _, k := range auditFilters {
		if v := strings.TrimSpace(q.Get(k)); v != "" {
			f.Set(k, v)
		}
	}
	req := &mandatev1.ListAuditRequest{Agent: f.Get("agent"), Principal: principalScope(s, f.Get("principal")), Task: f.Get("task"),
		CorrelationId: f.Get("correlation_id"), Decision: f.Get("decision"), Resource: f.Get("resource"), Since: f.Get("since"),
		Until: f.Get("until"), PageToken: q.Get("page_token")}
	if ps := f.Get("page_size"); ps != "" {
		n, ok := parseUint(ps)
		if !ok {
			c.fail(w, r, s, http.StatusBadRequest, "page_size: must be a whole number")
			return
		}
		req.PageSize = n
	}
	d := auditData{F: f}
	resp, err := c.cfg.Services.ListAudit(as(r, s), req)
	if err != nil {
		code, msg := httpStatus(err)
		if code >= 500 || code == http.StatusForbidden {
			c.fail(w, r, s, code, msg)
			return
		}
		d.Problem = msg
	} else {
		d.Records = resp.GetRecords()
		if t := resp.GetNextPageToken(); t != "" {
			nq := url.Values{}
			for k, v := range f {
				nq[k] = v
			}
			nq.Set("page_token", t)
			d.Next = "/ui/audit?" + nq.Encode()
		}
	}
	c.render(w, r, s, http.StatusOK, "audit", "audit", "Audit", d)
}

func parseUint(s string) (uint32, bool) {
	var n uint64
	if s == "" || len(s) > 9 {
		return 0, false
	}
	for _, ch := range s {
		if ch < '0' || ch > '9' {
			return 0, false
		}
		n = n*10 + uint64(ch-'0')
	}
	return uint32(n), true
}

// ---- 5. review ----

type reviewData struct {
	Principal, Since string
	Report           *mandatev1.GetReviewReportResponse
	Problem          string
	Query            string
}

func (c *Console) reviewRequest(r *http.Request, s *session) (string, string) {
	q := r.URL.Query()
	p := strings.TrimSpace(q.Get("principal"))
	if p != "" && !strings.HasPrefix(p, "user:") {
		p = "user:" + p
	}
	since := strings.TrimSpace(q.Get("since"))
	if since == "" {
		since = "30d"
	}
	return principalScope(s, p), since
}

func (c *Console) review(w http.ResponseWriter, r *http.Request, s *session) {
	p, since := c.reviewRequest(r, s)
	d := reviewData{Principal: p, Since: since, Query: url.Values{"principal": {p}, "since": {since}}.Encode()}
	if p != "" {
		rep, err := c.cfg.Services.GetReviewReport(as(r, s), &mandatev1.GetReviewReportRequest{Principal: p, Since: since})
		if err != nil {
			d.Problem = errText(err)
		} else {
			d.Report = rep
		}
	}
	c.render(w, r, s, http.StatusOK, "review", "review", "Review", d)
}

func (c *Console) reviewJSON(w http.ResponseWriter, r *http.Request, s *session) {
	p, since := c.reviewRequest(r, s)
	rep, err := c.cfg.Services.GetReviewReport(as(r, s), &mandatev1.GetReviewReportRequest{Principal: p, Since: since})
	if err != nil {
		c.failErr(w, r, s, err)
		return
	}
	b, err := protojson.MarshalOptions{UseProtoNames: true, Indent: "  "}.Marshal(rep)
	if err != nil {
		c.fail(w, r, s, http.StatusInternalServerError, "the report could not be encoded")
		return
	}
	download(w, "application/json", "review-"+fileSafe(p)+".json", b)
}

func (c *Console) reviewCSV(w http.ResponseWriter, r *http.Request, s *session) {
	p, since := c.reviewRequest(r, s)
	body, err := c.cfg.Services.GetReviewReportCSV(as(r, s), &mandatev1.GetReviewReportCSVRequest{Principal: p, Since: since})
	if err != nil {
		c.failErr(w, r, s, err)
		return
	}
	download(w, "text/csv; charset=utf-8", "review-"+fileSafe(p)+".csv", body.GetData())
}

func download(w http.ResponseWriter, ctype, name string, b []byte) {
	w.Header().Set("Content-Type", ctype)
	w.Header().Set("Content-Disposition", `attachment; filename="`+name+`"`)
	_, _ = w.Write(b)
}

func fileSafe(s string) string {
	var b strings.Builder
	for _, ch := range s {
		if ch >= 'a' && ch <= 'z' || ch >= 'A' && ch <= 'Z' || ch >= '0' && ch <= '9' || ch == '-' || ch == '_' {
			b.WriteRune(ch)
		} else {
			b.WriteByte('_')
		}
	}
	if b.Len() == 0 {
		return "all"
	}
	return b.String()
}

// ---- 6. actions and access requests ----

type actionsData struct{ OIDC bool }

func (c *Console) actions(w http.ResponseWriter, r *http.Request, s *session) {
	c.render(w, r, s, http.StatusOK, "actions", "actions", "Actions", actionsData{OIDC: c.oidc != nil})
}

type requestsData struct {
	State, Human string
	Requests     []requestView
	Problem      string
	OIDC         bool
	Next         string
}

type requestView struct {
	R *mandatev1.AccessRequest
	// CanAnswer applies the API's approver rules, so that the console shows
	// only the buttons the API would accept; the API enforces them again.
	CanAnswer bool
	Why       string
}

func (c *Console) requests(w http.ResponseWriter, r *http.Request, s *session) {
	q := r.URL.Query()
	d := requestsData{State: q.Get("state"), Human: strings.TrimSpace(q.Get("human")), OIDC: c.oidc != nil}
	if _, set := q["state"]; !set {
		d.State = "pending"
	}
	human := d.Human
	if human != "" && !strings.HasPrefix(human, "user:") {
		human = "user:" + human
	}
	resp, err := c.cfg.Services.ListAccessRequests(as(r, s), &mandatev1.ListAccessRequestsRequest{Human: principalScope(s, human), State: d.State, PageSize: 100, PageToken: q.Get("page_token")})
	if err != nil {
		d.Problem = errText(err)
	} else {
		for _, ar := range resp.GetAccessRequests() {
			ok, why := c.mayAnswer(s, ar)
			d.Requests = append(d.Requests, requestView{R: ar, CanAnswer: ok, Why: why})
		}
		if t := resp.GetNextPageToken(); t != "" {
			d.Next = "/ui/requests?" + url.Values{"state": {d.State}, "human": {d.Human}, "page_token": {t}}.Encode()
		}
	}
	c.render(w, r, s, http.StatusOK, "requests", "requests", "Access requests", d)
}

// mayAnswer mirrors the API's approver rules for the buttons.
func (c *Console) mayAnswer(s *session, ar *mandatev1.AccessRequest) (bool, string) {
	if ar.GetState() != "pending" {
		return false, "answered or expired"
	}
	if ar.GetFiledBy() == s.caller.Name {
		return false, "you filed it: the filing key never answers its own request"
	}
	switch s.caller.Role {
	case service.RoleHuman:
		if ar.GetHuman() != s.caller.Name {
			return false, "only " + ar.GetHuman() + " answers it"
		}
		return true, ""
	case service.RoleAdmin:
		return true, ""
	case service.RoleOperator:
		if c.oidc != nil {
			return false, "people sign in through the issuer here: only " + ar.GetHuman() + " or an admin answers"
		}
		return true, ""
	}
	return false, "your role does not answer requests"
}
