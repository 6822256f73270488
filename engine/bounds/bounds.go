// Package bounds counts what each agent does and says when it crosses one of
// its behavioural bounds: checks per minute, denied checks in a sliding
// window, and distinct resources per hour. The service suspends an agent
// that crosses one.
//
// Counts live in a Store: in memory for one process, or in Postgres or
// CockroachDB, where every replica records into the same rows under a
// per-agent row lock, so the replicas share one budget exactly and the
// counts survive restarts.
package bounds

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// Bound names.
const (
	ChecksPerMinute  = "checks_per_minute"
	DeniedChecks     = "denied_checks"
	ResourcesPerHour = "resources_per_hour"
)

// Windows of the fixed-length bounds.
const (
	CheckWindow    = time.Minute
	ResourceWindow = time.Hour
	// MaxDenialWindow bounds the configurable denial window.
	MaxDenialWindow = 24 * time.Hour
)

// Limits are one agent's bounds. Zero means unbounded.
type Limits struct {
	// ChecksPerMinute is the most checks allowed in any sliding minute.
	ChecksPerMinute int
	// MaxDenials is the most denied checks allowed in any sliding DenialWindow.
	MaxDenials int
	// DenialWindow is the window MaxDenials counts over. Default 5m.
	DenialWindow time.Duration
	// ResourcesPerHour is the most distinct resources allowed in any sliding hour.
	ResourcesPerHour int
}

// IsZero reports whether no bound is set.
func (l Limits) IsZero() bool {
	return l.ChecksPerMinute == 0 && l.MaxDenials == 0 && l.ResourcesPerHour == 0
}

// Or fills the bounds l leaves unset from d.
func (l Limits) Or(d Limits) Limits {
	if l.ChecksPerMinute == 0 {
		l.ChecksPerMinute = d.ChecksPerMinute
	}
	if l.MaxDenials == 0 {
		l.MaxDenials, l.DenialWindow = d.MaxDenials, d.DenialWindow
	}
	if l.DenialWindow == 0 {
		l.DenialWindow = d.DenialWindow
	}
	if l.ResourcesPerHour == 0 {
		l.ResourcesPerHour = d.ResourcesPerHour
	}
	return l
}

// Within clamps l to outer, bound by bound, as a sub-agent's lifetime is
// clamped to its parent's: a bound outer sets is never loosened, neither by
// a higher limit nor by leaving it unbounded, nor by a shorter denial
// window for the same number of denials.
func (l Limits) Within(outer Limits) Limits {
	tighter := func(own, out int) int {
		if out > 0 && (own == 0 || own > out) {
			return out
		}
		return own
	}
	l.ChecksPerMinute = tighter(l.ChecksPerMinute, outer.ChecksPerMinute)
	l.ResourcesPerHour = tighter(l.ResourcesPerHour, outer.ResourcesPerHour)
	if outer.MaxDenials > 0 {
		l.MaxDenials = tighter(l.MaxDenials, outer.MaxDenials)
		if l.Window() < outer.Window() {
			l.DenialWindow = outer.Window()
		}
	}
	return l
}

// Window is the denial window, defaulted.
func (l Limits) Window() time.Duration {
	if l.DenialWindow == 0 {
		return 5 * time.Minute
	}
	return l.DenialWindow
}

// Validate reports the first bad field, named after prefix.
func (l Limits) Validate(prefix string) (field string, err error) {
	switch {
	case l.ChecksPerMinute < 0:
		return prefix + "checks_per_minute", errors.New("must not be negative")
	case l.MaxDenials < 0:
		return prefix + "max_denials", errors.New("must not be negative")
	case l.ResourcesPerHour < 0:
		return prefix + "resources_per_hour", errors.New("must not be negative")
	case l.DenialWindow < 0 || l.DenialWindow > MaxDenialWindow:
		return prefix + "denial_window", fmt.Errorf("must be between 0 (the default, 5m) and %s", MaxDenialWindow)
	case l.DenialWindow != 0 && l.DenialWindow < time.Second:
		return prefix + "denial_window", errors.New("must be at least 1s")
	}
	return "", nil
}

// Event is one check by an agent.
type Event struct {
	Agent    string
	Resource string // "type:id"
	// Denied counts the check against the denial bound.
	Denied bool
	At     time.Time
}

// Counts are an agent's totals in each window, the recorded event included.
type Counts struct {
	Checks    int // in the last CheckWindow
	Denials   int // in the last denial window
	Resources int // distinct, in the last ResourceWindow
}

// Crossing is a bound an event took the agent over.
type Crossing struct {
	Bound    string
	Limit    int
	Observed int
	Window   time.Duration
}

func (c Crossing) String() string {
	return fmt.Sprintf("%s: %d in %s, limit %d", c.Bound, c.Observed, c.Window, c.Limit)
}

// Crossed lists the bounds counts exceed, in a fixed order.
func Crossed(l Limits, c Counts) []Crossing {
	var out []Crossing
	if l.ChecksPerMinute > 0 && c.Checks > l.ChecksPerMinute {
		out = append(out, Crossing{Bound: ChecksPerMinute, Limit: l.ChecksPerMinute, Observed: c.Checks, Window: CheckWindow})
	}
	if l.MaxDenials > 0 && c.Denials > l.MaxDenials {
		out = append(out, Crossing{Bound: DeniedChecks, Limit: l.MaxDenials, Observed: c.Denials, Window: l.Window()})
	}
	if l.ResourcesPerHour > 0 && c.Resources > l.ResourcesPerHour {
		out = append(out, Crossing{Bound: ResourcesPerHour, Limit: l.ResourcesPerHour, Observed: c.Resources, Window: ResourceWindow})
	}
	return out
}

// Store records events and counts them. Implementations are safe for
// concurrent use, and Record is atomic per agent: two concurrent events of
// one agent never both see the count before the other.
type Store interface {
	// Record adds ev and returns the agent's counts including it. The denial
	// count uses denialWindow. Only the bounds in l are tracked.
	Record(ctx context.Context, ev Event, l Limits) (Counts, error)
	// Reset forgets an agent's counts, when it is resumed.
	Reset(ctx context.Context, agent string) error
	// Prune drops what no window can count any more.
	Prune(ctx context.Context, now time.Time) error
}
