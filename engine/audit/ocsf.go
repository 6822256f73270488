package audit

import (
	"net"
	"net/netip"
	"os"
	"runtime/debug"
	"strconv"
	"strings"
)

// OCSFVersion is the OCSF schema version of the export. Moving to another
// version is this constant, the schema vendored in testdata, and whatever the
// validating test then reports.
const OCSFVersion = "1.8.0"

// ProductVersion is mandate's version in metadata.product.version: the
// module version the binary was built from, "devel" for a source build.
var ProductVersion = productVersion()

func productVersion() string {
	if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
		return bi.Main.Version
	}
	return "devel"
}

// selfHost is this machine's name: the source of the records mandate makes
// itself, such as an automatic suspension.
var selfHost = func() string {
	if h, err := os.Hostname(); err == nil && h != "" {
		return h
	}
	return "localhost"
}()

// API Activity (class 6003) in the Application Activity category (6).
const (
	ocsfClassUID    = 6003
	ocsfCategoryUID = 6
)

// Activity ids of API Activity, with their captions.
const (
	ocsfCreate = 1
	ocsfRead   = 2
	ocsfUpdate = 3
	ocsfDelete = 4
	ocsfOther  = 99
)

var ocsfActivityNames = map[int]string{ocsfCreate: "Create", ocsfRead: "Read", ocsfUpdate: "Update", ocsfDelete: "Delete"}

// Enum values of the event, with the captions their siblings must carry.
var (
	ocsfStatus      = map[int]string{1: "Success", 2: "Failure"}
	ocsfAction      = map[int]string{1: "Allowed", 2: "Denied"}
	ocsfDisposition = map[int]string{1: "Allowed", 2: "Blocked", 9: "Restored", 24: "Access Revoked", 27: "Error"}
	ocsfSeverity    = map[int]string{1: "Informational", 3: "Medium", 4: "High"}
	ocsfRole        = map[int]string{1: "Target", 3: "Affected", 4: "Related"}
)

// Changes that take access away, and changes that give it back.
var (
	ocsfRevocations = map[string]bool{
		"task.complete": true, "agent.revoke": true, "agent.suspend": true, "agent.auto_suspend": true,
		"principal.suspend_agents": true, "agents.freeze_all": true, "grant.delete": true,
	}
	ocsfRestorations = map[string]bool{"agent.resume": true, "principal.resume_agents": true, "agents.unfreeze_all": true}
	// ocsfAlerts are the changes a SOC should see at once.
	ocsfAlerts = map[string]bool{"agent.auto_suspend": true, "agents.freeze_all": true}
	// ocsfSelfMade are the changes mandate makes on its own, not at a caller's request.
	// An access request is marked expired by mandate when a read first finds its time up.
	ocsfSelfMade = map[string]bool{"agent.auto_suspend": true, "access_request.expire": true}
)

// OCSF maps a record to an OCSF API Activity event (class_uid 6003) of
// version OCSFVersion, with the security_control profile (and trace, when
// the record has a trace id). Every record maps to an event that validates
// against the schema (tested against the vendored schema). The mapping is
// documented in the README; the agent and delegation part is in ocsf_agent.go.
func OCSF(r *Record) map[string]any {
	activity := ocsfActivity(r)
	activityName := ocsfActivityNames[activity]
	if activity == ocsfOther {
		activityName = r.Action
	}
	o := ocsfOutcomeOf(r)
	ev := map[string]any{
		"class_uid":       ocsfClassUID,
		"class_name":      "API Activity",
		"category_uid":    ocsfCategoryUID,
		"category_name":   "Application Activity",
		"activity_id":     activity,
		"activity_name":   activityName,
		"type_uid":        ocsfClassUID*100 + activity,
		"type_name":       "API Activity: " + firstNonEmpty(ocsfActivityNames[activity], "Other"),
		"time":            r.Time.UnixMilli(),
		"timezone_offset": 0,
		"severity_id":     o.severity,
		"severity":        ocsfSeverity[o.severity],
		"status_id":       o.status,
		"status":          ocsfStatus[o.status],
		"action_id":       o.action,
		"action":          ocsfAction[o.action],
		"disposition_id":  o.disposition,
		"disposition":     ocsfDisposition[o.disposition],
		"is_alert":        o.alert,
		"actor":           ocsfActor(r),
		"api":             ocsfAPI(r),
		"src_endpoint":    ocsfSource(r),
	}
	setString(ev, "status_code", o.code)
	setString(ev, "status_detail", o.detail)
	setString(ev, "message", ocsfMessage(r))
	if res := ocsfResources(r); len(res) > 0 {
		ev["resources"] = res
	}
	if auths := ocsfAuthorizations(r); len(auths) > 0 {
		ev["authorizations"] = auths
	}
	profiles := []any{"security_control"}
	if r.TraceID != "" {
		ev["trace"] = map[string]any{"uid": r.TraceID}
		profiles = append(profiles, "trace")
	}
	md := map[string]any{
		"version":  OCSFVersion,
		"uid":      r.ID,
		"log_name": "mandate audit",
		"profiles": profiles,
		"product":  map[string]any{"name": "mandate", "vendor_name": "mandate", "version": ProductVersion},
	}
	setString(md, "correlation_uid", r.CorrelationID)
	setString(md, "event_code", firstNonEmpty(r.Action, r.Kind))
	ev["metadata"] = md
	if um := ocsfUnmapped(r); len(um) > 0 {
		ev["unmapped"] = um
	}
	return ev
}

// ocsfActivity is a check's Read, or what a change did to its target.
func ocsfActivity(r *Record) int {
	if r.Kind == KindCheck {
		return ocsfRead
	}
	verb := r.Action[strings.LastIndexByte(r.Action, '.')+1:]
	switch verb {
	case "create", "refused", "file": // a refused grant is a create that failed; filing creates an access request
		return ocsfCreate
	case "revoke", "delete":
		return ocsfDelete
	case "complete", "suspend", "resume", "auto_suspend", "suspend_agents", "resume_agents", "freeze_all", "unfreeze_all", "write",
		"approve", "decline", "expire": // the last three answer an access request
		return ocsfUpdate
	}
	return ocsfOther
}

type ocsfOutcome struct {
	status, action, disposition, severity int
	alert                                 bool
	code, detail                          string
}

// ocsfOutcomeOf is the security control's verdict on a record.
func ocsfOutcomeOf(r *Record) ocsfOutcome {
	if r.Kind == KindCheck {
		switch r.Decision {
		case DecisionAllow:
			return ocsfOutcome{status: 1, action: 1, disposition: 1, severity: 1, code: r.ReasonCode}
		case DecisionDeny:
			o := ocsfOutcome{status: 2, action: 2, disposition: 2, severity: 1, code: r.ReasonCode, detail: r.FailedLeg}
			if r.ReasonCode == "BOUND_EXCEEDED" {
				o.severity = 3
			}
			return o
		}
		// mandate could not decide and answered an error: the caller must
		// not go ahead (fail closed).
		return ocsfOutcome{status: 2, action: 2, disposition: 27, severity: 3, code: "ERROR", detail: "the decision failed; the caller was answered with an error"}
	}
	o := ocsfOutcome{status: 1, action: 1, disposition: 1, severity: 1}
	switch {
	case strings.HasSuffix(r.Action, ".refused"):
		o = ocsfOutcome{status: 2, action: 2, disposition: 2, severity: 3, code: "ESCALATION"}
		if why, ok := r.Details["why"].(string); ok {
			o.detail = why
		}
	case ocsfRevocations[r.Action]:
		o.disposition = 24
	case ocsfRestorations[r.Action]:
		o.disposition = 9
	}
	if ocsfAlerts[r.Action] {
		o.alert, o.severity = true, 4
	}
	return o
}

// ocsfActor is who acted: for a check the human, the agent instance and the
// calling key; for a change the caller, never the object acted on.
func ocsfActor(r *Record) map[string]any {
	actor := map[string]any{}
	if r.Kind == KindCheck {
		user, session := ocsfActingAgent(r)
		if user != nil {
			actor["user"] = user
		}
		if session != nil {
			actor["session"] = session
		}
	}
	if ocsfSelfMade[r.Action] {
		// mandate itself: the key whose check crossed the bound is in unmapped.
		actor["app_name"], actor["app_uid"] = "mandate", "mandate"
		return actor
	}
	if r.Caller != "" {
		actor["app_name"], actor["app_uid"] = r.Caller, "key:"+r.Caller
	}
	if len(actor) == 0 {
		// Only a record written without a caller (none is, today) gets here;
		// actor needs at least one attribute.
		actor["app_name"] = "unknown caller"
	}
	return actor
}

func ocsfAPI(r *Record) map[string]any {
	op := r.Action
	if r.Kind == KindCheck {
		op = "check:" + r.Permission
	}
	api := map[string]any{
		"operation": op,
		"service":   map[string]any{"name": "mandate", "version": ProductVersion},
	}
	if r.RequestID != "" {
		api["request"] = map[string]any{"uid": r.RequestID}
	}
	return api
}

// ocsfSource is the caller's network address and workload identity, with the check's source_ip
// (the address the caller acts for) as an intermediate address, the way an
// HTTP server records X-Forwarded-For. A record mandate makes itself comes
// from mandate's own host.
func ocsfSource(r *Record) map[string]any {
	if ocsfSelfMade[r.Action] {
		return map[string]any{"hostname": selfHost, "svc_name": "mandate"}
	}
	ep := map[string]any{}
	if host, port, err := net.SplitHostPort(r.SourceAddr); err == nil {
		if ip, err := netip.ParseAddr(host); err == nil {
			ep["ip"] = ip.Unmap().String()
			if p, err := strconv.Atoi(port); err == nil && p > 0 && p <= 65535 {
				ep["port"] = p
			}
		}
	} else if ip, err := netip.ParseAddr(r.SourceAddr); err == nil {
		ep["ip"] = ip.Unmap().String()
	}
	// The workload that connected, by the SPIFFE ID of its X.509-SVID: OCSF
	// 1.8.0 has no workload object, and network_endpoint.uid is "the unique
	// identifier of the endpoint", which a SPIFFE ID is.
	setString(ep, "uid", r.Workload)
	if len(ep) == 0 {
		// A record from before mandate kept the address (a spool replay).
		ep["name"] = "unknown"
	}
	if ctx, ok := r.Details["context"].(map[string]any); ok {
		if s, ok := ctx["source_ip"].(string); ok {
			if ip, err := netip.ParseAddr(s); err == nil {
				ep["intermediate_ips"] = []any{ip.Unmap().String()}
			}
		}
	}
	return ep
}

func ocsfMessage(r *Record) string {
	if r.Reason != "" {
		return r.Reason
	}
	if why, ok := r.Details["why"].(string); ok && r.Kind == KindChange {
		return why
	}
	return ""
}

// ocsfAuthorizations has one entry per grant a check relied on, or one
// entry with the decision alone when no grant was involved.
func ocsfAuthorizations(r *Record) []any {
	if r.Kind != KindCheck {
		return nil
	}
	if len(r.Grants) == 0 {
		return []any{map[string]any{"decision": r.Decision}}
	}
	out := make([]any, 0, len(r.Grants))
	for _, g := range r.Grants {
		out = append(out, map[string]any{
			"decision": r.Decision,
			"policy":   map[string]any{"uid": g, "name": g, "type": "mandate grant", "is_applied": true},
		})
	}
	return out
}

// ocsfResources lists the object acted on (role Target), what a change also
// touched (Affected) and what the record relates to (Related): the task with
// its delegation chain, a grant's holder and resource, a change's principal.
func ocsfResources(r *Record) []any {
	var out []any
	seen := map[string]bool{}
	add := func(ref string, role int) map[string]any {
		if ref == "" || seen[ref] {
			return nil
		}
		seen[ref] = true
		res := ocsfResource(ref, role)
		out = append(out, res)
		return res
	}
	add(firstNonEmpty(r.Resource, r.Target), 1)
	if r.Kind == KindChange {
		for _, key := range []string{"suspended", "revoked"} {
			for _, ref := range stringList(r.Details[key]) {
				add(ref, 3)
			}
		}
		for _, key := range []string{"holder", "resource", "principal"} {
			if ref, ok := r.Details[key].(string); ok {
				add(ref, 4)
			}
		}
	}
	if r.Principal != "" && r.Kind == KindChange {
		add(r.Principal, 4)
	}
	if task := ocsfDelegation(r); task != nil {
		uid, _ := task["uid"].(string)
		if seen[uid] {
			// The task is the target: it carries the chain itself.
			for _, x := range out {
				if m := x.(map[string]any); m["uid"] == uid {
					for k, v := range task {
						if k != "role_id" && k != "role" {
							m[k] = v
						}
					}
				}
			}
		} else {
			seen[uid] = true
			out = append(out, task)
		}
	}
	return out
}

// ocsfResource describes a reference ("type:id", or a bare name such as
// "schema") in one role.
func ocsfResource(ref string, role int) map[string]any {
	typ, id, ok := strings.Cut(ref, ":")
	if !ok {
		typ, id = ref, ref
	}
	res := map[string]any{"uid": ref, "type": typ, "role_id": role, "role": ocsfRole[role]}
	setString(res, "name", id)
	return res
}

// ocsfUnmapped keeps what OCSF has no attribute for.
func ocsfUnmapped(r *Record) map[string]any {
	um := map[string]any{"kind": r.Kind}
	if r.Kind == KindCheck {
		um["cached"] = r.Cached
		um["latency_us"] = r.LatencyMicros
		setString(um, "permission", r.Permission)
		setString(um, "subject", r.Subject)
	}
	setString(um, "consistency_token", r.ConsistencyToken)
	if ocsfSelfMade[r.Action] {
		setString(um, "triggered_by_key", r.Caller)
	}
	if d, ok := dropEmpty(r.Details).(map[string]any); ok && len(d) > 0 {
		um["details"] = d
	}
	return um
}

// dropEmpty removes empty strings, nils and empty collections, so that an
// export never carries an empty string.
func dropEmpty(v any) any {
	switch x := v.(type) {
	case nil:
		return nil
	case string:
		if x == "" {
			return nil
		}
		return x
	case []string:
		return dropEmpty(toAnySlice(x))
	case []any:
		out := make([]any, 0, len(x))
		for _, e := range x {
			if e = dropEmpty(e); e != nil {
				out = append(out, e)
			}
		}
		if len(out) == 0 {
			return nil
		}
		return out
	case map[string]any:
		out := make(map[string]any, len(x))
		for k, e := range x {
			if e = dropEmpty(e); e != nil {
				out[k] = e
			}
		}
		if len(out) == 0 {
			return nil
		}
		return out
	}
	return v
}

func stringList(v any) []string {
	switch x := v.(type) {
	case []string:
		return x
	case []any:
		out := make([]string, 0, len(x))
		for _, e := range x {
			if s, ok := e.(string); ok && s != "" {
				out = append(out, s)
			}
		}
		return out
	}
	return nil
}

func toAnySlice(ss []string) []any {
	out := make([]any, len(ss))
	for i, s := range ss {
		out[i] = s
	}
	return out
}

// setString sets m[k] unless v is empty: OCSF consumers read "" as a value.
func setString(m map[string]any, k, v string) {
	if v != "" {
		m[k] = v
	}
}

func firstNonEmpty(xs ...string) string {
	for _, x := range xs {
		if x != "" {
			return x
		}
	}
	return ""
}
