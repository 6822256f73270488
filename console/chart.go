package console

import (
	"fmt"
	"html/template"
	"strings"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	mandatev1 "github.com/mandate-dev/mandate/proto/mandate/v1"
)

// chart is the overview's allow/deny per minute over the last 24 hours,
// drawn on the server as SVG: no chart library, no script.
type chart struct {
	SVG          template.HTML
	Allow, Deny  int
	PeakPerMin   int
	From, To     time.Time
	MinutesShown int
}

const (
	chartMinutes = 24 * 60
	chartW       = 960.0
	chartH       = 160.0
	chartPad     = 24.0
)

// perMinute buckets check records by minute, ending at now.
func perMinute(recs []*mandatev1.AuditRecord, now time.Time) chart {
	end := now.Truncate(time.Minute).Add(time.Minute)
	start := end.Add(-chartMinutes * time.Minute)
	var allow, deny [chartMinutes]int
	c := chart{From: start, To: end, MinutesShown: chartMinutes}
	for _, r := range recs {
		if r.GetKind() != "check" {
			continue
		}
		i := int(r.GetTime().AsTime().Sub(start) / time.Minute)
		if i < 0 || i >= chartMinutes {
			continue
		}
		switch r.GetDecision() {
		case "allow":
			allow[i]++
			c.Allow++
		case "deny", "error":
			deny[i]++
			c.Deny++
		}
	}
	for i := range allow {
		c.PeakPerMin = max(c.PeakPerMin, allow[i], deny[i])
	}
	// Only numbers are written into the SVG: it holds no value from a record.
	var b strings.Builder
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" class="chart" id="chart" viewBox="0 0 %.0f %.0f" role="img" aria-label="allowed and denied checks per minute, last 24 hours">`, chartW+2*chartPad, chartH+2*chartPad)
	fmt.Fprintf(&b, `<rect x="%.0f" y="%.0f" width="%.0f" height="%.0f" fill="#fafafa" stroke="#ccc"/>`, chartPad, chartPad, chartW, chartH)
	peak := max(c.PeakPerMin, 1)
	bar := func(vals *[chartMinutes]int, color, id string, up bool) {
		var p strings.Builder
		mid := chartPad + chartH/2
		for i, v := range vals {
			if v == 0 {
				continue
			}
			x := chartPad + float64(i)*chartW/chartMinutes
			h := float64(v) / float64(peak) * (chartH/2 - 2)
			if up {
				fmt.Fprintf(&p, "M%.2f %.2fV%.2f", x, mid, mid-h)
			} else {
				fmt.Fprintf(&p, "M%.2f %.2fV%.2f", x, mid, mid+h)
			}
		}
		fmt.Fprintf(&b, `<path id="%s" d="%s" stroke="%s" stroke-width="1" fill="none"/>`, id, p.String(), color)
	}
	bar(&allow, "#2a7d2a", "chart-allow", true)
	bar(&deny, "#c0392b", "chart-deny", false)
	fmt.Fprintf(&b, `<line x1="%.0f" y1="%.0f" x2="%.0f" y2="%.0f" stroke="#999"/>`, chartPad, chartPad+chartH/2, chartPad+chartW, chartPad+chartH/2)
	for h := 0; h <= 24; h += 6 {
		x := chartPad + float64(h*60)*chartW/chartMinutes
		fmt.Fprintf(&b, `<text x="%.0f" y="%.0f" font-size="11" text-anchor="middle" fill="#555">%s</text>`, x, chartH+2*chartPad-6, start.Add(time.Duration(h)*time.Hour).UTC().Format("15:04"))
	}
	fmt.Fprintf(&b, `<text x="%.0f" y="16" font-size="11" fill="#2a7d2a">allowed ↑</text><text x="%.0f" y="16" font-size="11" fill="#c0392b">denied ↓</text><text x="%.0f" y="16" font-size="11" text-anchor="end" fill="#555">peak %d/min</text>`,
		chartPad, chartPad+80, chartPad+chartW, c.PeakPerMin)
	b.WriteString(`</svg>`)
	c.SVG = template.HTML(b.String()) //nolint:gosec // numbers and fixed text only
	return c
}

// funcs are the templates' helpers.
func funcs(now func() time.Time) template.FuncMap {
	return template.FuncMap{
		"ts": func(t *timestamppb.Timestamp) string {
			if t == nil {
				return ""
			}
			return t.AsTime().UTC().Format("2006-01-02 15:04:05Z")
		},
		"iso": func(t *timestamppb.Timestamp) string {
			if t == nil {
				return ""
			}
			return t.AsTime().UTC().Format(time.RFC3339)
		},
		"left": func(t *timestamppb.Timestamp) string {
			if t == nil {
				return "no expiry"
			}
			d := t.AsTime().Sub(now())
			if d <= 0 {
				return "expired"
			}
			return shortDuration(d)
		},
		"bare": func(ref string) string {
			if _, id, ok := strings.Cut(ref, ":"); ok {
				return id
			}
			return ref
		},
		"typ": func(ref string) string {
			t, _, _ := strings.Cut(ref, ":")
			return t
		},
		"join":   strings.Join,
		"list4":  func() []string { return []string{"active", "suspended", "revoked", "expired"} },
		"states": func() []string { return []string{"pending", "approved", "declined", "expired"} },
		"actArg": func(action, target, back, label, class string) map[string]string {
			return map[string]string{"Action": action, "Target": target, "Back": back, "Label": label, "Class": class}
		},
		"inc": func(i int) int { return i + 1 },
	}
}

func shortDuration(d time.Duration) string {
	d = d.Round(time.Second)
	switch {
	case d >= 24*time.Hour:
		return fmt.Sprintf("%dd %dh", int(d.Hours())/24, int(d.Hours())%24)
	case d >= time.Hour:
		return fmt.Sprintf("%dh %dm", int(d.Hours()), int(d.Minutes())%60)
	case d >= time.Minute:
		return fmt.Sprintf("%dm %ds", int(d.Minutes()), int(d.Seconds())%60)
	}
	return fmt.Sprintf("%ds", int(d.Seconds()))
}
