package console

import (
	"context"
	"net/http"
	"strings"
	"unicode/utf8"

	mandatev1 "github.com/mandate-dev/mandate/proto/mandate/v1"
	"github.com/mandate-dev/mandate/service"
)

// action is one change the console can ask for. Each goes to exactly one
// service method, as the signed-in caller, with the reason they typed.
type action struct {
	Name   string
	Label  string
	Target string // what the target names: agent, task, grant, human, request, or "" (everything)
	Warn   string
	call   func(ctx context.Context, svc Services, target, reason string) (string, error)
}

var actionList = []action{
	{Name: "agent.suspend", Label: "Suspend agent", Target: "agent", Warn: "The agent and every sub-agent below it are denied until resumed.",
		call: func(ctx context.Context, svc Services, t, _ string) (string, error) {
			_, err := svc.SuspendAgent(ctx, &mandatev1.SuspendAgentRequest{Id: t})
			return "agent:" + t + " suspended", err
		}},
	{Name: "agent.resume", Label: "Resume agent", Target: "agent", Warn: "The agent may act again (within its grants), and its bound counts restart.",
		call: func(ctx context.Context, svc Services, t, _ string) (string, error) {
			_, err := svc.ResumeAgent(ctx, &mandatev1.ResumeAgentRequest{Id: t})
			return "agent:" + t + " resumed", err
		}},
	{Name: "agent.revoke", Label: "Revoke agent", Target: "agent", Warn: "Final: the agent and every agent below it are revoked and can never act again.",
		call: func(ctx context.Context, svc Services, t, _ string) (string, error) {
			r, err := svc.RevokeAgent(ctx, &mandatev1.RevokeAgentRequest{Id: t})
			return strings.Join(r.GetRevoked(), ", ") + " revoked", err
		}},
	{Name: "task.complete", Label: "Complete task", Target: "task", Warn: "Every agent and grant of the task loses access at once.",
		call: func(ctx context.Context, svc Services, t, _ string) (string, error) {
			_, err := svc.CompleteTask(ctx, &mandatev1.CompleteTaskRequest{Id: t})
			return "task:" + t + " completed", err
		}},
	{Name: "grant.delete", Label: "Remove grant", Target: "grant", Warn: "The grant is removed; whatever relied on it is denied from now on.",
		call: func(ctx context.Context, svc Services, t, _ string) (string, error) {
			_, err := svc.DeleteGrant(ctx, &mandatev1.DeleteGrantRequest{Id: t})
			return "grant:" + t + " removed", err
		}},
	{Name: "principal.suspend_agents", Label: "Suspend all of this human's agents", Target: "human", Warn: "Every agent acting for this human is denied until their agents are resumed.",
		call: func(ctx context.Context, svc Services, t, why string) (string, error) {
			_, err := svc.SuspendPrincipalAgents(ctx, &mandatev1.SuspendPrincipalAgentsRequest{Id: t, Reason: why})
			return "every agent of user:" + t + " suspended", err
		}},
	{Name: "principal.resume_agents", Label: "Resume this human's agents", Target: "human", Warn: "This human's agents may act again (each still needs its own grants and status).",
		call: func(ctx context.Context, svc Services, t, why string) (string, error) {
			_, err := svc.ResumePrincipalAgents(ctx, &mandatev1.ResumePrincipalAgentsRequest{Id: t, Reason: why})
			return "the agents of user:" + t + " resumed", err
		}},
	{Name: "agents.freeze_all", Label: "Freeze all agents", Target: "", Warn: "Every agent of every human is denied until an admin unfreezes them.",
		call: func(ctx context.Context, svc Services, _, why string) (string, error) {
			_, err := svc.FreezeAllAgents(ctx, &mandatev1.FreezeAllAgentsRequest{Reason: why})
			return "every agent frozen", err
		}},
	{Name: "agents.unfreeze_all", Label: "Unfreeze all agents", Target: "", Warn: "Agents may act again, each within its own grants and status.",
		call: func(ctx context.Context, svc Services, _, why string) (string, error) {
			_, err := svc.UnfreezeAllAgents(ctx, &mandatev1.UnfreezeAllAgentsRequest{Reason: why})
			return "agents unfrozen", err
		}},
	{Name: "request.approve", Label: "Approve access request", Target: "request", Warn: "The agent gets the grant it asked for, for the requested time (cut to its life).",
		call: func(ctx context.Context, svc Services, t, why string) (string, error) {
			r, err := svc.ApproveAccessRequest(ctx, &mandatev1.ApproveAccessRequestRequest{Id: t, Reason: why})
			return "request " + t + " approved: grant:" + r.GetGrant().GetId(), err
		}},
	{Name: "request.decline", Label: "Decline access request", Target: "request", Warn: "The agent does not get the grant; it may ask again.",
		call: func(ctx context.Context, svc Services, t, why string) (string, error) {
			_, err := svc.DeclineAccessRequest(ctx, &mandatev1.DeclineAccessRequestRequest{Id: t, Reason: why})
			return "request " + t + " declined", err
		}},
}

func findAction(name string) (action, bool) {
	for _, a := range actionList {
		if a.Name == name {
			return a, true
		}
	}
	return action{}, false
}

const maxActionReason = 1000

type confirmData struct {
	Action  action
	Target  string
	Back    string
	Reason  string
	Problem string
}

// confirm shows what an action will do and asks for a reason: nothing
// changes until that form is posted.
func (c *Console) confirm(w http.ResponseWriter, r *http.Request, s *session) {
	q := r.URL.Query()
	a, ok := findAction(q.Get("action"))
	if !ok {
		c.fail(w, r, s, http.StatusBadRequest, "action: unknown")
		return
	}
	d := confirmData{Action: a, Target: strings.TrimSpace(q.Get("target")), Back: safeNext(q.Get("back"))}
	if a.Target != "" && d.Target == "" {
		c.fail(w, r, s, http.StatusBadRequest, "target: the "+a.Target+" is required")
		return
	}
	c.render(w, r, s, http.StatusOK, "confirm", "actions", a.Label, d)
}

// act performs a confirmed action through the services, as the caller,
// with their reason. The services decide whether the caller may.
func (c *Console) act(w http.ResponseWriter, r *http.Request, s *session) {
	f := r.PostForm
	a, ok := findAction(f.Get("action"))
	if !ok {
		c.fail(w, r, s, http.StatusBadRequest, "action: unknown")
		return
	}
	target := strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(f.Get("target")), a.Target+":"))
	if a.Target == "human" {
		target = strings.TrimPrefix(strings.TrimSpace(f.Get("target")), "user:")
	}
	reason := strings.TrimSpace(f.Get("reason"))
	back := safeNext(f.Get("back"))
	if a.Target != "" && target == "" {
		c.fail(w, r, s, http.StatusBadRequest, "target: the "+a.Target+" is required")
		return
	}
	if reason == "" || utf8.RuneCountInString(reason) > maxActionReason || !utf8.ValidString(reason) {
		d := confirmData{Action: a, Target: target, Back: back, Reason: reason,
			Problem: "reason: say why (1 to 1000 characters); it is kept in the audit trail with your name"}
		c.render(w, r, s, http.StatusBadRequest, "confirm", "actions", a.Label, d)
		return
	}
	ctx := service.WithStatedReason(as(r, s), reason)
	msg, err := a.call(ctx, c.cfg.Services, target, reason)
	if err != nil {
		c.failErr(w, r, s, err)
		return
	}
	c.cfg.Log.Info("console: action", "caller", s.caller.Name, "role", s.caller.Role, "action", a.Name, "target", target)
	c.sessions.setFlash(s, msg)
	http.Redirect(w, r, back, http.StatusSeeOther)
}
