// Package bench is mandate's load generator: closed and open loops with
// latency percentiles, a dataset generator, and the scenarios that measure
// mandate against its floor and against SpiceDB in one run.
package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"sort"
	"sync"
	"sync/atomic"
	"time"
)

// Op is one request. It returns an error for a failed request.
type Op func(ctx context.Context, worker, i int) error

// Result is what one scenario measured.
type Result struct {
	Scenario    string  `json:"scenario"`
	Description string  `json:"description"`
	Mode        string  `json:"mode"` // closed or open
	InFlight    int     `json:"in_flight,omitempty"`
	Rate        float64 `json:"rate_per_s,omitempty"`
	Requests    int     `json:"requests"`
	Errors      int     `json:"errors"`
	Seconds     float64 `json:"seconds"`
	Throughput  float64 `json:"throughput_per_s"`
	P50ms       float64 `json:"p50_ms"`
	P90ms       float64 `json:"p90_ms"`
	P99ms       float64 `json:"p99_ms"`
	P999ms      float64 `json:"p999_ms"`
	Note        string  `json:"note,omitempty"`
}

func (r *Result) fill(lat []time.Duration, errors int, elapsed time.Duration) {
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	r.Requests, r.Errors, r.Seconds = len(lat), errors, elapsed.Seconds()
	if elapsed > 0 {
		r.Throughput = float64(len(lat)-errors) / elapsed.Seconds()
	}
	r.P50ms, r.P90ms, r.P99ms, r.P999ms = pct(lat, .5), pct(lat, .9), pct(lat, .99), pct(lat, .999)
}

func pct(sorted []time.Duration, p float64) float64 {
	if len(sorted) == 0 {
		return 0
	}
	i := int(float64(len(sorted))*p+0.5) - 1
	i = max(0, min(i, len(sorted)-1))
	return float64(sorted[i].Microseconds()) / 1000
}

// Closed keeps inFlight requests outstanding for d, after a warmup.
func Closed(ctx context.Context, name string, inFlight int, warmup, d time.Duration, op Op) Result {
	res := Result{Scenario: name, Mode: "closed", InFlight: inFlight}
	run := func(d time.Duration, record bool) ([]time.Duration, int, time.Duration) {
		var mu sync.Mutex
		var all []time.Duration
		var errs atomic.Int64
		deadline := time.Now().Add(d)
		start := time.Now()
		var wg sync.WaitGroup
		for w := 0; w < inFlight; w++ {
			wg.Add(1)
			go func(w int) {
				defer wg.Done()
				lat := make([]time.Duration, 0, 1<<14)
				for i := 0; time.Now().Before(deadline) && ctx.Err() == nil; i++ {
					t0 := time.Now()
					if err := op(ctx, w, i); err != nil {
						errs.Add(1)
					}
					lat = append(lat, time.Since(t0))
				}
				if record {
					mu.Lock()
					all = append(all, lat...)
					mu.Unlock()
				}
			}(w)
		}
		wg.Wait()
		return all, int(errs.Load()), time.Since(start)
	}
	if warmup > 0 {
		run(warmup, false)
	}
	lat, errs, elapsed := run(d, true)
	res.fill(lat, errs, elapsed)
	return res
}

// Open sends requests at a fixed rate for d, whether or not earlier ones have
// answered, and measures each from when it was due: a stalled server shows
// up in the tail instead of slowing the sender (no coordinated omission).
// At most maxOutstanding requests wait at once; past that, requests count as
// errors.
func Open(ctx context.Context, name string, rate float64, d time.Duration, maxOutstanding int, op Op) Result {
	res := Result{Scenario: name, Mode: "open", Rate: rate}
	interval := time.Duration(float64(time.Second) / rate)
	n := int(d.Seconds() * rate)
	lat := make([]time.Duration, n)
	var errs atomic.Int64
	var outstanding atomic.Int64
	var wg sync.WaitGroup
	start := time.Now()
	for i := 0; i < n && ctx.Err() == nil; i++ {
		due := start.Add(time.Duration(i) * interval)
		if wait := time.Until(due); wait > 0 {
			time.Sleep(wait)
		}
		if outstanding.Load() >= int64(maxOutstanding) {
			errs.Add(1)
			lat[i] = time.Since(due)
			continue
		}
		outstanding.Add(1)
		wg.Add(1)
		go func(i int, due time.Time) {
			defer wg.Done()
			defer outstanding.Add(-1)
			if err := op(ctx, i%64, i); err != nil {
				errs.Add(1)
			}
			lat[i] = time.Since(due)
		}(i, due)
	}
	wg.Wait()
	res.fill(lat, int(errs.Load()), time.Since(start))
	return res
}

// Distribution summarises raw samples (for the propagation scenario).
func Distribution(name, description string, samples []time.Duration) Result {
	r := Result{Scenario: name, Description: description, Mode: "samples"}
	r.fill(samples, 0, 0)
	r.Throughput = 0
	return r
}

// WriteTable prints results as a table.
func WriteTable(w io.Writer, rs []Result) {
	fmt.Fprintf(w, "| scenario | mode | in flight / rate | requests | errors | throughput/s | p50 ms | p90 ms | p99 ms | p99.9 ms |\n")
	fmt.Fprintf(w, "|---|---|---|---|---|---|---|---|---|---|\n")
	for _, r := range rs {
		load := fmt.Sprintf("%d", r.InFlight)
		if r.Mode == "open" {
			load = fmt.Sprintf("%.0f/s", r.Rate)
		}
		if r.Mode == "samples" {
			load = "-"
		}
		fmt.Fprintf(w, "| %s | %s | %s | %d | %d | %.0f | %.3f | %.3f | %.3f | %.3f |\n",
			r.Scenario, r.Mode, load, r.Requests, r.Errors, r.Throughput, r.P50ms, r.P90ms, r.P99ms, r.P999ms)
	}
}

// WriteJSON writes results as JSON.
func WriteJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}
