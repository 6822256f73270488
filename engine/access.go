package engine

import (
	"context"
	"errors"
	"sort"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	v1 "github.com/authzed/authzed-go/proto/authzed/api/v1"

	"github.com/mandate-dev/mandate/schema"
)

// Access requests: an agent asks for one more grant, and its human answers
// once. A request is stored as relationships of access_request:<id>:
//
//	filed@agent:<id>[mandate_request]  what was asked, by which key, until when
//	human@user:<id>                    who answers (an index for listings)
//	pending@agent:*                    until answered or seen expired
//	answered@agent:*[mandate_answer]   the answer
//
// Every answer is one write that deletes pending and creates answered,
// preconditioned on pending: whatever races, a request is answered once.
// An approval writes the grant in that same write. Expiry is computed from
// the stored expires_at against the engine's clock, never from SpiceDB's
// relationship expiration; a request seen expired is then marked so, once.

// States of an access request.
const (
	RequestPending  = "pending"
	RequestApproved = "approved"
	RequestDeclined = "declined"
	RequestExpired  = "expired"
)

// PrefixAccessRequest prefixes access request ids.
const PrefixAccessRequest = "acr"

// ReasonConflict is the reason of a refusal because the object was changed
// by someone else first (an access request already answered): re-read it.
const ReasonConflict = "CONFLICT"

// DefaultAccessRequestTTL is how long a request waits for its answer by default.
const DefaultAccessRequestTTL = 15 * time.Minute

var requestStates = map[string]bool{RequestPending: true, RequestApproved: true, RequestDeclined: true, RequestExpired: true}

// AccessRequest is an agent's request for one permission on one resource.
type AccessRequest struct {
	ID         string
	Agent      Ref
	Human      Ref
	Task       Ref
	Chain      []Ref
	Permission string
	Resource   Ref
	TTL        string
	Reason     string
	State      string
	FiledBy    string
	FiledAt    time.Time
	ExpiresAt  time.Time
	// The answer; empty while pending.
	DecidedBy      string
	DecidedAs      string
	DecidedAt      time.Time
	DecisionReason string
	Grant          string
	// Refiled is set when filing found this request already pending for
	// the same agent, permission, resource and ttl, and returned it.
	Refiled bool

	pending bool // the pending relationship is present
}

// FileAccessRequestInput is what FileAccessRequest needs.
type FileAccessRequestInput struct {
	Agent      string
	Permission string
	Resource   string
	TTL        string
	Reason     string
	// FiledBy is the name of the key that files it; it can never answer it.
	FiledBy string
}

// Answer is who answers a request, and their rule.
type Answer struct {
	// By is the key name, or "user:<id>" for a human with their own token.
	By string
	// As is "human", "admin" or "operator".
	As     string
	Reason string
	// Allow, when set, is asked with the request as read, before anything
	// is written: the caller's rules (who may answer which request).
	Allow func(*AccessRequest) error
}

const maxRequestReason = 1024

// FileAccessRequest stores a pending request after the same checks a grant
// would pass now: the agent is active, the ttl is within the grant maximum,
// the permission can be granted on the resource, and neither the human nor,
// for a sub-agent, the parent would be escalated (ESCALATION otherwise).
// The same request already pending is returned instead, marked Refiled.
func (e *Engine) FileAccessRequest(ctx context.Context, in FileAccessRequestInput) (*AccessRequest, string, error) {
	agent, err := ParseRef("agent", in.Agent)
	if err != nil {
		return nil, "", err
	}
	if agent.Type != schema.TypeAgent {
		return nil, "", invalid("agent", "must be an agent reference (agent:<id>), got type %q", agent.Type)
	}
	if err := ValidateName("permission", in.Permission); err != nil {
		return nil, "", err
	}
	if err := validRequestReason("reason", in.Reason, true); err != nil {
		return nil, "", err
	}
	ctx, cancel := e.withTimeout(ctx)
	defer cancel()
	p, err := e.planGrant(ctx, CreateGrantInput{Holder: agent.String(), Permission: in.Permission, Resource: in.Resource, TTL: in.TTL}, "agent")
	if err != nil {
		return nil, "", unknownAgentInvalid(err)
	}
	c, err := e.chainOf(ctx, agent.ID)
	if err != nil {
		return nil, "", err
	}
	// An agent runtime that asks again for what is already waiting (it
	// retried, or was denied again) gets the pending request back: the
	// human is asked once.
	if same, tok, err := e.pendingTwin(ctx, agent, p.grant.Resource.String()+"#"+in.Permission, in.TTL); err != nil || same != nil {
		return same, tok, err
	}
	now := e.now()
	r := &AccessRequest{
		ID: newID(PrefixAccessRequest), Agent: agent, Human: p.principal, Task: Ref{Type: schema.TypeTask, ID: c.task}, Chain: c.refs(),
		Permission: in.Permission, Resource: p.grant.Resource, TTL: in.TTL, Reason: in.Reason, State: RequestPending,
		FiledBy: in.FiledBy, FiledAt: now, ExpiresAt: now.Add(e.cfg.AccessRequestTTL), pending: true,
	}
	// The agent must still be able to hold the grant when the request lands.
	tok, err := e.write(ctx, creates(accessRequestRelationships(r)), p.pre, precondition("agent", "agent %s was revoked or suspended while the request was being filed", agent.ID))
	if err != nil {
		return nil, "", err
	}
	e.requests.notify(r.ID)
	return r, tok, nil
}

// pendingTwin finds a pending request of agent for the same target
// ("<resource>#<permission>") and ttl, or nil.
func (e *Engine) pendingTwin(ctx context.Context, agent Ref, target, ttl string) (*AccessRequest, string, error) {
	filed, err := e.sdb.readRels(ctx, &v1.RelationshipFilter{ResourceType: schema.TypeAccessRequest, OptionalRelation: "filed",
		OptionalSubjectFilter: &v1.SubjectFilter{SubjectType: schema.TypeAgent, OptionalSubjectId: agent.ID}})
	if err != nil {
		return nil, "", err
	}
	for _, f := range filed {
		if caveatString(f, "target") != target || caveatString(f, "ttl") != ttl {
			continue
		}
		r, tok, err := e.readAccessRequest(ctx, f.GetResource().GetObjectId())
		if err != nil {
			return nil, "", err
		}
		if r.State == RequestPending {
			r.Refiled = true
			return r, tok, nil
		}
	}
	return nil, "", nil
}

// unknownAgentInvalid makes an unknown agent a bad request naming the field:
// the request body names it, it is not the object of the call.
func unknownAgentInvalid(err error) error {
	var ee *Error
	if errors.As(err, &ee) && ee.Kind == KindNotFound && ee.Field == "agent" {
		return &Error{Kind: KindInvalidArgument, Field: "agent", Msg: ee.Msg}
	}
	return err
}

func validRequestReason(field, s string, required bool) error {
	if s == "" && required {
		return invalid(field, "is required: say why the agent needs it; the human sees it")
	}
	if !utf8.ValidString(s) || len(s) > maxRequestReason {
		return invalid(field, "must be valid UTF-8 of at most %d bytes", maxRequestReason)
	}
	return nil
}

// GetAccessRequest reads a request. A pending request whose time is up
// reads as expired; the first reader to see it so marks it expired in
// SpiceDB and gets expiredNow, to audit it once.
func (e *Engine) GetAccessRequest(ctx context.Context, id string) (r *AccessRequest, token string, expiredNow bool, err error) {
	if err := ValidateID("id", PrefixAccessRequest, id); err != nil {
		return nil, "", false, err
	}
	ctx, cancel := e.withTimeout(ctx)
	defer cancel()
	if r, token, err = e.readAccessRequest(ctx, id); err != nil {
		return nil, "", false, err
	}
	if r.State == RequestExpired && r.pending {
		tok, moved, err := e.markExpired(ctx, r)
		if err != nil {
			// The request reads as expired whether or not the mark lands.
			e.log.Warn("marking an access request expired", "id", id, "error", err)
		} else if moved {
			token, expiredNow = tok, true
		}
	}
	return r, token, expiredNow, nil
}

// markExpired records an expired request's answer, once: the write holds
// only while the request is still pending.
func (e *Engine) markExpired(ctx context.Context, r *AccessRequest) (string, bool, error) {
	ref := Ref{Type: schema.TypeAccessRequest, ID: r.ID}
	tok, err := e.write(ctx, answerUpdates(ref, RequestExpired, r.ExpiresAt, Answer{}, ""), []*v1.Precondition{mustMatch(ref, "pending")}, errAnswered)
	if errors.Is(err, errAnswered) || writeConflict(err) {
		// Answered, or marked by another reader, first.
		return "", false, nil
	}
	if err != nil {
		return "", false, err
	}
	r.pending, r.DecidedAt = false, r.ExpiresAt
	e.requests.notify(r.ID)
	return tok, true, nil
}

var errAnswered = errors.New("access request already answered")

// alreadyAnswered is the refusal of an answer to a request that is no longer pending.
func alreadyAnswered(r *AccessRequest) error {
	msg := "access request " + r.ID + " is " + r.State
	switch r.State {
	case RequestApproved, RequestDeclined:
		msg += " already (by " + r.DecidedBy + " at " + r.DecidedAt.UTC().Format(time.RFC3339) + "); it is answered only once"
	case RequestExpired:
		msg += ": it was not answered before " + r.ExpiresAt.UTC().Format(time.RFC3339) + "; the agent must file a new one"
	}
	return &Error{Kind: KindFailedPrecondition, Field: "id", Reason: ReasonConflict, Msg: msg}
}

// answerable reads a request for an answer and refuses one that is not pending.
func (e *Engine) answerable(ctx context.Context, id string, a Answer) (*AccessRequest, error) {
	if err := ValidateID("id", PrefixAccessRequest, id); err != nil {
		return nil, err
	}
	if err := validRequestReason("reason", a.Reason, false); err != nil {
		return nil, err
	}
	r, _, err := e.readAccessRequest(ctx, id)
	if err != nil {
		return nil, err
	}
	if a.Allow != nil {
		if err := a.Allow(r); err != nil {
			return nil, err
		}
	}
	if r.State != RequestPending {
		return nil, alreadyAnswered(r)
	}
	return r, nil
}

// stillPending is asked when an answer's write was refused: a request no
// longer pending ends the attempt with the conflict.
func (e *Engine) stillPending(id string) func(context.Context) error {
	return func(ctx context.Context) error {
		now, _, err := e.readAccessRequest(ctx, id)
		if err != nil {
			return err
		}
		if now.State != RequestPending {
			return alreadyAnswered(now)
		}
		return nil
	}
}

// ApproveAccessRequest approves a pending request: the grant (the requested
// ttl from now, cut to the agent's life) is checked again as a new grant
// would be and is written in the same write that answers the request, which
// holds only while the request is pending. Racing approvals make one grant.
func (e *Engine) ApproveAccessRequest(ctx context.Context, id string, a Answer) (*AccessRequest, *Grant, string, error) {
	ctx, cancel := e.withTimeout(ctx)
	defer cancel()
	r, err := e.answerable(ctx, id, a)
	if err != nil {
		return nil, nil, "", err
	}
	p, err := e.planGrant(ctx, CreateGrantInput{Holder: r.Agent.String(), Permission: r.Permission, Resource: r.Resource.String(), TTL: r.TTL}, "agent")
	if err != nil {
		return nil, nil, "", err
	}
	ref := Ref{Type: schema.TypeAccessRequest, ID: id}
	now := p.grant.CreatedAt
	tok, err := e.writeGrant(ctx, p, answerUpdates(ref, RequestApproved, now, a, p.grant.ID), []*v1.Precondition{mustMatch(ref, "pending")}, e.stillPending(id))
	if err != nil {
		return nil, nil, "", err
	}
	e.requests.notify(id)
	r.State, r.pending, r.DecidedAt, r.DecidedBy, r.DecidedAs, r.DecisionReason, r.Grant = RequestApproved, false, now, a.By, a.As, a.Reason, p.grant.ID
	return r, p.grant, tok, nil
}

// DeclineAccessRequest declines a pending request, once.
func (e *Engine) DeclineAccessRequest(ctx context.Context, id string, a Answer) (*AccessRequest, string, error) {
	ctx, cancel := e.withTimeout(ctx)
	defer cancel()
	r, err := e.answerable(ctx, id, a)
	if err != nil {
		return nil, "", err
	}
	ref := Ref{Type: schema.TypeAccessRequest, ID: id}
	now := e.now()
	var tok string
	for attempt := 0; ; attempt++ {
		tok, err = e.write(ctx, answerUpdates(ref, RequestDeclined, now, a, ""), []*v1.Precondition{mustMatch(ref, "pending")}, errAnswered)
		if err == nil {
			break
		}
		// Refused by the precondition, or colliding on Postgres with a
		// racing answer from another replica: read which.
		if !errors.Is(err, errAnswered) && !writeConflict(err) {
			return nil, "", err
		}
		if err := e.stillPending(id)(ctx); err != nil {
			return nil, "", err
		}
		if attempt >= maxGrantAttempts {
			return nil, "", &Error{Kind: KindUnavailable, Msg: "the answer could not be written; try again", Err: ErrUnavailable}
		}
	}
	e.requests.notify(id)
	r.State, r.pending, r.DecidedAt, r.DecidedBy, r.DecidedAs, r.DecisionReason = RequestDeclined, false, now, a.By, a.As, a.Reason
	return r, tok, nil
}

// ---- waiting -------------------------------------------------------------

// MaxAccessRequestWait bounds a long poll.
const MaxAccessRequestWait = 60 * time.Second

// DefaultAccessRequestPoll is how often a long poll reads again when no
// notice came: the fallback when the watch is down, or off with the cache.
const DefaultAccessRequestPoll = time.Second

// WaitAccessRequest reads a request and, while it is pending, waits up to
// wait for it to change: it reads again on every notice about it (this
// replica's writes, and the SpiceDB watch for other replicas' writes, see
// NotifyRelationships), at its expiry, and every AccessRequestPoll
// regardless (ten times as long while the watch is healthy).
func (e *Engine) WaitAccessRequest(ctx context.Context, id string, wait time.Duration) (*AccessRequest, string, bool, error) {
	if wait < 0 || wait > MaxAccessRequestWait {
		return nil, "", false, invalid("wait", "must be between 0s and %s", MaxAccessRequestWait)
	}
	if err := ValidateID("id", PrefixAccessRequest, id); err != nil {
		return nil, "", false, err
	}
	deadline := time.Now().Add(wait)
	for {
		// Subscribe before reading, so no change between the two is missed.
		ch, stop := e.requests.subscribe(id)
		r, tok, expiredNow, err := e.GetAccessRequest(ctx, id)
		if err != nil || r.State != RequestPending {
			stop()
			return r, tok, expiredNow, err
		}
		left := time.Until(deadline)
		if left <= 0 {
			stop()
			return r, tok, false, nil
		}
		poll := e.cfg.AccessRequestPoll
		if e.watching != nil && e.watching() {
			// The watch is following SpiceDB: every change wakes the poll,
			// and reading again is only a safety net.
			poll *= watchedPollFactor
		}
		sleep := min(left, poll)
		if untilExpiry := r.ExpiresAt.Sub(e.now()); untilExpiry > 0 && untilExpiry < sleep {
			sleep = untilExpiry
		}
		t := time.NewTimer(sleep)
		select {
		case <-ch:
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			stop()
			return r, tok, false, nil
		}
		t.Stop()
		stop()
	}
}

// watchedPollFactor stretches a long poll's fallback reads while the watch
// follows SpiceDB, so waiting requests cost SpiceDB little.
const watchedPollFactor = 10

// SetWatching tells the long polls how to know that the SpiceDB watch is
// following every change (NotifyRelationships will wake them); while it
// is not, they read again every AccessRequestPoll. Set before serving.
func (e *Engine) SetWatching(f func() bool) { e.watching = f }

// requestNotifier wakes the long polls waiting on a request.
type requestNotifier struct {
	mu      sync.Mutex
	waiters map[string]map[chan struct{}]struct{}
}

func (n *requestNotifier) subscribe(id string) (<-chan struct{}, func()) {
	ch := make(chan struct{}, 1)
	n.mu.Lock()
	if n.waiters == nil {
		n.waiters = map[string]map[chan struct{}]struct{}{}
	}
	if n.waiters[id] == nil {
		n.waiters[id] = map[chan struct{}]struct{}{}
	}
	n.waiters[id][ch] = struct{}{}
	n.mu.Unlock()
	return ch, func() {
		n.mu.Lock()
		delete(n.waiters[id], ch)
		if len(n.waiters[id]) == 0 {
			delete(n.waiters, id)
		}
		n.mu.Unlock()
	}
}

func (n *requestNotifier) notify(id string) {
	n.mu.Lock()
	defer n.mu.Unlock()
	for ch := range n.waiters[id] {
		select {
		case ch <- struct{}{}:
		default:
		}
	}
}

// NotifyRelationships tells the long polls about changed relationships,
// whoever wrote them: the server feeds it every change SpiceDB's watch
// reports, so a poll on one replica wakes when another answers.
func (e *Engine) NotifyRelationships(rels []*v1.Relationship) {
	for _, r := range rels {
		if r.GetResource().GetObjectType() == schema.TypeAccessRequest {
			e.requests.notify(r.GetResource().GetObjectId())
		}
	}
}

// ---- listing -------------------------------------------------------------

// AccessRequestFilter selects requests. Empty fields match everything.
type AccessRequestFilter struct {
	Human string // "user:<id>"
	Agent string // "agent:<id>"
	State string
}

// ListAccessRequests lists requests, newest first, pageSize at a time, after
// the cursor a previous page returned ("" for the first page). Requests
// seen expired are marked so, and returned in expired (to audit them once).
func (e *Engine) ListAccessRequests(ctx context.Context, f AccessRequestFilter, after string, pageSize int) (out []*AccessRequest, next string, expired []*AccessRequest, err error) {
	var human, agent Ref
	if f.Human != "" {
		if human, err = ParseRef("human", f.Human); err != nil {
			return nil, "", nil, err
		}
		if human.Type != schema.TypeUser {
			return nil, "", nil, invalid("human", "must be a user reference (user:<id>)")
		}
	}
	if f.Agent != "" {
		if agent, err = ParseRef("agent", f.Agent); err != nil {
			return nil, "", nil, err
		}
		if agent.Type != schema.TypeAgent {
			return nil, "", nil, invalid("agent", "must be an agent reference (agent:<id>)")
		}
	}
	if f.State != "" && !requestStates[f.State] {
		return nil, "", nil, invalid("state", "%q is not pending, approved, declined or expired", f.State)
	}
	var afterTime time.Time
	afterID := ""
	if after != "" {
		at, id, ok := strings.Cut(after, "|")
		t, terr := time.Parse(time.RFC3339Nano, at)
		if !ok || terr != nil || ValidateID("page_token", PrefixAccessRequest, id) != nil {
			return nil, "", nil, invalid("page_token", "is not a token this server issued")
		}
		afterTime, afterID = t, id
	}
	ctx, cancel := context.WithTimeout(ctx, 4*e.cfg.CallTimeout)
	defer cancel()
	// Read filed, then pending, then answered: a request answered between
	// two reads is seen pending and answered, and the answer wins; one
	// filed after the first read is not listed.
	filedFilter := &v1.RelationshipFilter{ResourceType: schema.TypeAccessRequest, OptionalRelation: "filed"}
	if !agent.IsZero() {
		filedFilter.OptionalSubjectFilter = &v1.SubjectFilter{SubjectType: schema.TypeAgent, OptionalSubjectId: agent.ID}
	}
	filed, err := e.sdb.readRels(ctx, filedFilter)
	if err != nil {
		return nil, "", nil, err
	}
	// Without a human filter, each request's human comes from its agent's chain.
	var ofHuman map[string]bool
	humans := map[string]*v1.Relationship{}
	if !human.IsZero() {
		hrels, err := e.sdb.readRels(ctx, &v1.RelationshipFilter{ResourceType: schema.TypeAccessRequest, OptionalRelation: "human",
			OptionalSubjectFilter: &v1.SubjectFilter{SubjectType: schema.TypeUser, OptionalSubjectId: human.ID}})
		if err != nil {
			return nil, "", nil, err
		}
		ofHuman = map[string]bool{}
		for _, r := range hrels {
			id := r.GetResource().GetObjectId()
			humans[id], ofHuman[id] = r, true
		}
	}
	pend, err := e.sdb.readRels(ctx, &v1.RelationshipFilter{ResourceType: schema.TypeAccessRequest, OptionalRelation: "pending"})
	if err != nil {
		return nil, "", nil, err
	}
	pending := make(map[string]bool, len(pend))
	for _, r := range pend {
		pending[r.GetResource().GetObjectId()] = true
	}
	ans, err := e.sdb.readRels(ctx, &v1.RelationshipFilter{ResourceType: schema.TypeAccessRequest, OptionalRelation: "answered"})
	if err != nil {
		return nil, "", nil, err
	}
	answers := make(map[string]*v1.Relationship, len(ans))
	for _, r := range ans {
		answers[r.GetResource().GetObjectId()] = r
	}
	type entry struct {
		id    string
		at    time.Time
		filed *v1.Relationship
	}
	var entries []entry
	for _, r := range filed {
		id := r.GetResource().GetObjectId()
		if ofHuman != nil && !ofHuman[id] {
			continue
		}
		if !pending[id] && answers[id] == nil {
			continue // filed after the pending read
		}
		at, _ := caveatTime(r, "filed_at")
		entries = append(entries, entry{id, at, r})
	}
	// Newest first; ties by id, descending.
	sort.Slice(entries, func(i, j int) bool {
		if !entries[i].at.Equal(entries[j].at) {
			return entries[i].at.After(entries[j].at)
		}
		return entries[i].id > entries[j].id
	})
	for _, en := range entries {
		if after != "" && !(en.at.Before(afterTime) || en.at.Equal(afterTime) && en.id < afterID) {
			continue
		}
		r, err := e.decodeAccessRequest(ctx, en.id, en.filed, humans[en.id], pending[en.id], answers[en.id])
		if err != nil {
			return nil, "", nil, err
		}
		if r.State == RequestExpired && r.pending {
			if _, moved, err := e.markExpired(ctx, r); err != nil {
				e.log.Warn("marking an access request expired", "id", r.ID, "error", err)
			} else if moved {
				expired = append(expired, r)
			}
		}
		if f.State != "" && r.State != f.State {
			continue
		}
		out = append(out, r)
		if len(out) == pageSize {
			return out, ts(en.at) + "|" + en.id, expired, nil
		}
	}
	return out, "", expired, nil
}
