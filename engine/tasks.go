package engine

import (
	"context"
	"time"
	"unicode/utf8"

	v1 "github.com/authzed/authzed-go/proto/authzed/api/v1"

	"github.com/mandate-dev/mandate/engine/bounds"
	"github.com/mandate-dev/mandate/schema"
)

// Tasks: a unit of work one human asked for, and its lifecycle.

// Task is a unit of work one human asked for.
type Task struct {
	ID          string
	Principal   Ref
	Description string
	CreatedAt   time.Time
	ExpiresAt   time.Time
	Status      string
	// Bounds are the default behavioural bounds of the task's agents.
	Bounds bounds.Limits
}

// ---- tasks ---------------------------------------------------------------

// CreateTaskInput is what CreateTask needs.
type CreateTaskInput struct {
	Principal   string
	Description string
	TTL         string
	// Bounds are the default bounds of the task's agents.
	Bounds bounds.Limits
}

func validateBounds(l bounds.Limits) error {
	if field, err := l.Validate("bounds."); err != nil {
		return invalid(field, "%v", err)
	}
	return nil
}

// CreateTask opens a task for a human principal.
func (e *Engine) CreateTask(ctx context.Context, in CreateTaskInput) (*Task, string, error) {
	principal, err := ParseRef("principal", in.Principal)
	if err != nil {
		return nil, "", err
	}
	if principal.Type != schema.TypeUser {
		return nil, "", invalid("principal", "must be a user reference (user:<id>), got type %q", principal.Type)
	}
	if !utf8.ValidString(in.Description) || len(in.Description) > maxDescription {
		return nil, "", invalid("description", "must be valid UTF-8 of at most %d bytes", maxDescription)
	}
	ttl, err := ParseTTL("ttl", in.TTL, e.cfg.MaxTaskTTL)
	if err != nil {
		return nil, "", err
	}
	if err := validateBounds(in.Bounds); err != nil {
		return nil, "", err
	}
	now := e.now()
	t := &Task{ID: newID(PrefixTask), Principal: principal, Description: in.Description, CreatedAt: now, ExpiresAt: now.Add(ttl), Status: StatusActive, Bounds: in.Bounds}
	ctx, cancel := e.withTimeout(ctx)
	defer cancel()
	token, err := e.write(ctx, creates(TaskRelationships(*t)), nil, nil)
	if err != nil {
		return nil, "", err
	}
	return t, token, nil
}

// GetTask reads a task, and the revision it was read at.
func (e *Engine) GetTask(ctx context.Context, id string) (*Task, string, error) {
	if err := ValidateID("id", PrefixTask, id); err != nil {
		return nil, "", err
	}
	ctx, cancel := e.withTimeout(ctx)
	defer cancel()
	t, err := e.readTask(ctx, id)
	if err != nil {
		return nil, "", err
	}
	return &t.Task, t.token, nil
}

// CompleteTask ends a task. Every agent and grant under it loses access in the
// same write; the returned token makes later reads see it.
func (e *Engine) CompleteTask(ctx context.Context, id string) (*Task, string, error) {
	if err := ValidateID("id", PrefixTask, id); err != nil {
		return nil, "", err
	}
	ctx, cancel := e.withTimeout(ctx)
	defer cancel()
	t, err := e.readTask(ctx, id)
	if err != nil {
		return nil, "", err
	}
	ref := Ref{Type: schema.TypeTask, ID: id}
	token, err := e.write(ctx, []*v1.RelationshipUpdate{
		del(rel(ref, "open", wildcardAgent, "", "", nil)),
		touch(rel(ref, "completed", wildcardAgent, "", "", nil)),
	}, nil, nil)
	if err != nil {
		return nil, "", err
	}
	t.Status = StatusCompleted
	return &t.Task, token, nil
}
