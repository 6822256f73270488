package engine

import (
	"strings"
	"testing"

	"github.com/mandate-dev/mandate/schema"
)

// FuzzCondition: a grant condition is refused as invalid, naming a field
// under "condition", or yields parameters the schema's caveat accepts as
// they are, so SpiceDB never sees a condition mandate did not mean.
func FuzzCondition(f *testing.F) {
	info, err := schema.Parse(schema.Default)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(ConditionSourceNetwork, "10.0.0.0/8,2001:db8::/32", "", "", "", 0.0, "")
	f.Add(ConditionHours, "", "Europe/Berlin", "09:00", "17:00", 0.0, "")
	f.Add(ConditionHours, "", "localtime", "24:00", "00:00", 0.0, "")
	f.Add(ConditionMaxRisk, "", "", "", "", 0.7, "")
	f.Add(ConditionEnvironment, "", "", "", "", 0.0, "prod-change-window")
	f.Add("", "", "", "", "", 0.0, "")
	f.Fuzz(func(t *testing.T, name, cidrs, tz, start, end string, maxRisk float64, env string) {
		c := &Condition{Name: name, TimeZone: tz, Start: start, End: end, MaxRisk: maxRisk, Environment: env}
		if cidrs != "" {
			c.CIDRs = strings.Split(cidrs, ",")
		}
		params, err := c.validate("condition")
		if err != nil {
			requireInvalid(t, err, err.(*Error).Field)
			if !strings.HasPrefix(err.(*Error).Field, "condition") {
				t.Fatalf("%+v: error names %q, not a condition field", c, err.(*Error).Field)
			}
			return
		}
		if err := info.ValidateCaveatContext(c.caveat(), params); err != nil {
			t.Fatalf("%+v: validated parameters %v refused by the caveat: %v", c, params, err)
		}
	})
}

// FuzzValidateConsistencyToken: a token is accepted only if SpiceDB could
// read it; anything else is an invalid argument naming the field.
func FuzzValidateConsistencyToken(f *testing.F) {
	for _, s := range []string{"", "garbage!!", "aGVsbG8=", "GhUKEzE3MzMwNTg1NjQ5NTYyMzk0NzE=", strings.Repeat("A", 2000)} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if err := ValidateConsistencyToken("consistency_token", s); err != nil {
			requireInvalid(t, err, "consistency_token")
		}
	})
}
