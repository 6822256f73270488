package service

import (
	"fmt"
	"time"

	"github.com/mandate-dev/mandate/engine"
	"github.com/mandate-dev/mandate/engine/bounds"
)

// boundsFromPB converts API bounds, naming bad fields under prefix.
func boundsFromPB(prefix string, b interface {
	GetChecksPerMinute() int32
	GetMaxDenials() int32
	GetDenialWindow() string
	GetResourcesPerHour() int32
}) (bounds.Limits, error) {
	l := bounds.Limits{ChecksPerMinute: int(b.GetChecksPerMinute()), MaxDenials: int(b.GetMaxDenials()), ResourcesPerHour: int(b.GetResourcesPerHour())}
	if w := b.GetDenialWindow(); w != "" {
		d, err := time.ParseDuration(w)
		if err != nil {
			return l, &engine.Error{Kind: engine.KindInvalidArgument, Field: prefix + "denial_window", Msg: fmt.Sprintf("%q is not a duration such as \"5m\"", w)}
		}
		l.DenialWindow = d
	}
	return l, nil
}
