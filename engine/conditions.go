package engine

import (
	"fmt"
	"math"
	"net/netip"
	"regexp"
	"strconv"
	"strings"
	"time"
	// The time zone database is embedded, so hours conditions mean the same
	// on every host, with or without /usr/share/zoneinfo. The embedded
	// SpiceDB, in this process, evaluates them with the same data; a remote
	// SpiceDB uses its own.
	_ "time/tzdata"

	v1 "github.com/authzed/authzed-go/proto/authzed/api/v1"

	"github.com/mandate-dev/mandate/schema"
)

// Condition names, as the API spells them. Each is the SpiceDB caveat
// "grant_" + name.
const (
	ConditionSourceNetwork = "source_network"
	ConditionHours         = "hours"
	ConditionMaxRisk       = "max_risk"
	ConditionEnvironment   = "environment"
)

const (
	maxCIDRs         = 32
	maxEnvironmentLn = 64
)

var environmentRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._:-]{0,63}$`)

// Condition restricts a grant to the contexts where it holds. Exactly one
// kind's parameters are set, the one Name names.
type Condition struct {
	Name string
	// CIDRs are the allowed source networks (source_network).
	CIDRs []string
	// TimeZone, Start and End are the daily window "HH:MM"–"HH:MM" (hours).
	// End before Start wraps past midnight.
	TimeZone   string
	Start, End string
	// MaxRisk is the highest risk score allowed (max_risk).
	MaxRisk float64
	// Environment is the label the caller's environment must equal (environment).
	Environment string
}

// caveat is the SpiceDB caveat that implements the condition.
func (c *Condition) caveat() string { return "grant_" + c.Name }

// conditionName maps a caveat name back to the API's condition name.
func conditionName(caveat string) string { return strings.TrimPrefix(caveat, "grant_") }

// validate checks the parameters and returns the caveat context they store.
func (c *Condition) validate(field string) (map[string]any, error) {
	switch c.Name {
	case ConditionSourceNetwork:
		if len(c.CIDRs) == 0 || len(c.CIDRs) > maxCIDRs {
			return nil, invalid(field+".source_network.cidrs", "must list 1 to %d networks", maxCIDRs)
		}
		cidrs := make([]any, len(c.CIDRs))
		for i, s := range c.CIDRs {
			p, err := netip.ParsePrefix(s)
			if err != nil {
				return nil, invalid(fmt.Sprintf("%s.source_network.cidrs[%d]", field, i), "%q is not a network in CIDR notation such as 10.0.0.0/8", s)
			}
			cidrs[i] = p.Masked().String()
		}
		return map[string]any{"allowed_cidrs": cidrs}, nil
	case ConditionHours:
		if c.TimeZone == "" {
			return nil, invalid(field+".hours.time_zone", "is required: an IANA time zone such as Europe/Berlin or UTC")
		}
		if !canonicalZone(c.TimeZone) {
			return nil, invalid(field+".hours.time_zone", "%q is not a canonical IANA time zone (Area/Location such as Europe/Berlin, or UTC)", c.TimeZone)
		}
		if _, err := time.LoadLocation(c.TimeZone); err != nil {
			return nil, invalid(field+".hours.time_zone", "%q is not a known IANA time zone", c.TimeZone)
		}
		start, err := parseClock(field+".hours.start", c.Start)
		if err != nil {
			return nil, err
		}
		end, err := parseClock(field+".hours.end", c.End)
		if err != nil {
			return nil, err
		}
		if start == end {
			return nil, invalid(field+".hours.end", "must differ from start")
		}
		return map[string]any{"time_zone": c.TimeZone, "start_minute": float64(start), "end_minute": float64(end)}, nil
	case ConditionMaxRisk:
		if math.IsNaN(c.MaxRisk) || math.IsInf(c.MaxRisk, 0) {
			return nil, invalid(field+".max_risk.max", "must be a finite number")
		}
		return map[string]any{"max_risk": c.MaxRisk}, nil
	case ConditionEnvironment:
		if !environmentRE.MatchString(c.Environment) {
			return nil, invalid(field+".environment.label", "must be 1 to %d letters, digits, '.', '_', ':' or '-', starting with a letter or digit", maxEnvironmentLn)
		}
		return map[string]any{"required_environment": c.Environment}, nil
	case "":
		return nil, invalid(field, "names no condition: set one of source_network, hours, max_risk or environment")
	}
	return nil, invalid(field, "unknown condition %q", c.Name)
}

// zoneAreas are the areas of the IANA database's canonical zones. Names
// outside them are host files (localtime, posixrules, Factory, right/…,
// posix/…) or backward-compatible aliases (US/Pacific, GMT, EST5EDT) whose
// meaning depends on the host's tzdata version.
var zoneAreas = map[string]bool{
	"Africa": true, "America": true, "Antarctica": true, "Arctic": true, "Asia": true, "Atlantic": true,
	"Australia": true, "Europe": true, "Indian": true, "Pacific": true, "Etc": true,
}

var zoneLocationRE = regexp.MustCompile(`^[A-Z][A-Za-z0-9_+-]*(/[A-Z][A-Za-z0-9_+-]*)?$`)

// canonicalZone reports whether name is spelled like a canonical IANA zone:
// UTC, or Area/Location[/Sub] in one of the database's areas.
func canonicalZone(name string) bool {
	if name == "UTC" {
		return true
	}
	area, loc, ok := strings.Cut(name, "/")
	return ok && zoneAreas[area] && len(name) <= 64 && zoneLocationRE.MatchString(loc)
}

// parseClock parses "HH:MM" (00:00 to 24:00) into minutes after midnight.
func parseClock(field, s string) (int, error) {
	h, m, ok := strings.Cut(s, ":")
	if ok && len(h) == 2 && len(m) == 2 {
		hh, err1 := strconv.Atoi(h)
		mm, err2 := strconv.Atoi(m)
		if err1 == nil && err2 == nil && hh >= 0 && mm >= 0 && mm < 60 && (hh < 24 || (hh == 24 && mm == 0)) {
			return hh*60 + mm, nil
		}
	}
	return 0, invalid(field, "%q is not a time of day HH:MM between 00:00 and 24:00", s)
}

func clock(minutes int) string { return fmt.Sprintf("%02d:%02d", minutes/60, minutes%60) }

// conditionOf reads a grant relationship's condition; nil for a plain grant.
func conditionOf(r *v1.Relationship) *Condition {
	name := r.GetOptionalCaveat().GetCaveatName()
	if name == schema.CaveatGrantLifetime || !schema.IsCondition(name) {
		return nil
	}
	f := r.GetOptionalCaveat().GetContext().GetFields()
	c := &Condition{Name: conditionName(name)}
	switch name {
	case schema.ConditionSourceNetwork:
		for _, v := range f["allowed_cidrs"].GetListValue().GetValues() {
			c.CIDRs = append(c.CIDRs, v.GetStringValue())
		}
	case schema.ConditionHours:
		c.TimeZone = f["time_zone"].GetStringValue()
		c.Start = clock(int(f["start_minute"].GetNumberValue()))
		c.End = clock(int(f["end_minute"].GetNumberValue()))
	case schema.ConditionMaxRisk:
		c.MaxRisk = f["max_risk"].GetNumberValue()
	case schema.ConditionEnvironment:
		c.Environment = f["required_environment"].GetStringValue()
	}
	return c
}

// hoursBoundary is the next moment after now at which an hours condition
// stored on r changes its answer; zero when r carries no hours condition. A
// cached decision that read the condition must not outlive it.
func hoursBoundary(r *v1.Relationship, now time.Time) time.Time {
	if r.GetOptionalCaveat().GetCaveatName() != schema.ConditionHours {
		return time.Time{}
	}
	f := r.GetOptionalCaveat().GetContext().GetFields()
	loc, err := time.LoadLocation(f["time_zone"].GetStringValue())
	if err != nil {
		// Unreachable for a grant mandate wrote; recheck soon rather than never.
		return now.Add(time.Minute)
	}
	return nextClockBoundary(now, loc, int(f["start_minute"].GetNumberValue()), int(f["end_minute"].GetNumberValue()))
}

// nextClockBoundary is the first instant after now whose wall-clock minute in
// loc is start or end.
func nextClockBoundary(now time.Time, loc *time.Location, start, end int) time.Time {
	local := now.In(loc)
	var best time.Time
	for day := 0; day <= 2; day++ {
		y, m, d := local.AddDate(0, 0, day).Date()
		for _, min := range []int{start, end} {
			t := time.Date(y, m, d, min/60, min%60, 0, 0, loc)
			if t.After(now) && (best.IsZero() || t.Before(best)) {
				best = t
			}
		}
	}
	if best.IsZero() {
		return now.Add(time.Minute)
	}
	return best
}

// describe says in words when the condition holds.
func (c *Condition) describe() string {
	switch c.Name {
	case ConditionSourceNetwork:
		return "context.source_ip is in " + strings.Join(c.CIDRs, ", ")
	case ConditionHours:
		return fmt.Sprintf("the time is between %s and %s in %s", c.Start, c.End, c.TimeZone)
	case ConditionMaxRisk:
		return fmt.Sprintf("context.risk_score is at most %g", c.MaxRisk)
	case ConditionEnvironment:
		return fmt.Sprintf("context.environment is %q", c.Environment)
	}
	return c.Name
}
