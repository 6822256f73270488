// Package alert delivers mandate's alerts (an agent suspended for crossing a
// behavioural bound, an access request waiting for its human) to a webhook,
// signed and retried in the background.
package alert

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"slices"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Event types.
const (
	// TypeAutoSuspended: an agent crossed a behavioural bound and was suspended.
	TypeAutoSuspended = "mandate.agent.auto_suspended"
	// TypeAccessRequestFiled: an agent asks for a grant; its human should answer.
	TypeAccessRequestFiled = "mandate.access_request.filed"
)

// Event is what mandate posts to the alert webhook.
type Event struct {
	// Type is TypeAutoSuspended or TypeAccessRequestFiled.
	Type string    `json:"type"`
	ID   string    `json:"id"`
	Time time.Time `json:"time"`

	Agent      string   `json:"agent"`
	Principal  string   `json:"principal,omitempty"`
	Task       string   `json:"task,omitempty"`
	Bound      string   `json:"bound"`
	Limit      int      `json:"limit"`
	Observed   int      `json:"observed"`
	Window     string   `json:"window"`
	DecisionID string   `json:"decision_id"`
	Permission string   `json:"permission,omitempty"`
	Resource   string   `json:"resource,omitempty"`
	Suspended  []string `json:"suspended"`
	// SuspendError is set when the automatic suspension itself failed.
	SuspendError string `json:"suspend_error,omitempty"`

	// AccessRequest is the request of a TypeAccessRequestFiled event; the
	// bound fields above are absent from such an event.
	AccessRequest *AccessRequest `json:"access_request,omitempty"`
}

// AccessRequest is a filed access request, for its human to answer.
type AccessRequest struct {
	ID         string    `json:"id"`
	Human      string    `json:"human"`
	Chain      []string  `json:"chain,omitempty"`
	Permission string    `json:"permission"`
	Resource   string    `json:"resource"`
	TTL        string    `json:"ttl"`
	Reason     string    `json:"reason"`
	FiledBy    string    `json:"filed_by"`
	FiledAt    time.Time `json:"filed_at"`
	ExpiresAt  time.Time `json:"expires_at"`
}

// MarshalJSON writes an auto-suspension event as it always was, and an
// access request event without the bound fields it has no use for.
func (ev Event) MarshalJSON() ([]byte, error) {
	type plain Event
	if ev.AccessRequest == nil {
		return json.Marshal(plain(ev))
	}
	return json.Marshal(struct {
		Type          string         `json:"type"`
		ID            string         `json:"id"`
		Time          time.Time      `json:"time"`
		Agent         string         `json:"agent"`
		Principal     string         `json:"principal,omitempty"`
		Task          string         `json:"task,omitempty"`
		Permission    string         `json:"permission,omitempty"`
		Resource      string         `json:"resource,omitempty"`
		AccessRequest *AccessRequest `json:"access_request"`
	}{ev.Type, ev.ID, ev.Time, ev.Agent, ev.Principal, ev.Task, ev.Permission, ev.Resource, ev.AccessRequest})
}

// Alerter delivers alert events to a webhook, in the background, retrying
// with exponential backoff. Every event is also logged, delivered or not.
// Its zero value only logs.
type Alerter struct {
	// URL receives every event as JSON; empty only logs.
	URL string
	// Secret, when set, signs every delivery: the header
	// X-Mandate-Signature is "sha256=" + hex(HMAC-SHA256(secret, body)).
	Secret string
	// Attempts is the number of deliveries tried per event. Default 6.
	Attempts int
	// Backoff is the wait before the first retry; it doubles each time. Default 500ms.
	Backoff time.Duration
	// Timeout bounds each delivery. Default 5s.
	Timeout time.Duration
	// Client posts the events. Default a new http.Client.
	Client *http.Client
	// Log receives every event at WARN. Default slog.Default().
	Log *slog.Logger
	// Delivered counts deliveries by result: delivered, retried, dropped.
	// nil counts nothing.
	Delivered *prometheus.CounterVec
	// SpoolPath, when set, keeps every alert that is neither delivered nor
	// given up in this file, so alerts waiting at a shutdown or a crash are
	// delivered after the restart. Empty keeps them in memory only.
	SpoolPath string

	once     sync.Once
	queue    chan Event
	wg       sync.WaitGroup
	stop     chan struct{}
	spoolMu  sync.Mutex
	pending  []Event // guarded by spoolMu; what the spool file holds, oldest first
	restored []Event // read from the spool at start; delivered before new alerts
}

const alertQueue = 1024

func (a *Alerter) start() {
	a.once.Do(func() {
		if a.Attempts <= 0 {
			a.Attempts = 6
		}
		if a.Backoff <= 0 {
			a.Backoff = 500 * time.Millisecond
		}
		if a.Timeout <= 0 {
			a.Timeout = 5 * time.Second
		}
		if a.Client == nil {
			a.Client = &http.Client{}
		}
		if a.Log == nil {
			a.Log = slog.Default()
		}
		a.queue = make(chan Event, alertQueue)
		a.stop = make(chan struct{})
		a.restored = a.loadSpool()
		a.wg.Add(1)
		go a.run()
	})
}

// Start starts delivering, beginning with the alerts a previous run left in
// the spool. Send and Close start it too.
func (a *Alerter) Start() { a.start() }

// loadSpool reads the alerts a previous run left waiting.
func (a *Alerter) loadSpool() []Event {
	if a.SpoolPath == "" || a.URL == "" {
		return nil
	}
	b, err := os.ReadFile(a.SpoolPath)
	if err != nil {
		if !errors.Is(err, os.ErrNotExist) {
			a.Log.Error("reading the alert spool; its alerts are only in the audit trail", "path", a.SpoolPath, "error", err)
		}
		return nil
	}
	var evs []Event
	for _, line := range bytes.Split(b, []byte("\n")) {
		if len(bytes.TrimSpace(line)) == 0 {
			continue
		}
		var ev Event
		if err := json.Unmarshal(line, &ev); err != nil {
			// A line cut short by a crash mid-write; the rest are whole.
			a.Log.Warn("skipping an unreadable line in the alert spool", "path", a.SpoolPath, "error", err)
			continue
		}
		evs = append(evs, ev)
	}
	a.spoolMu.Lock()
	a.pending = append([]Event(nil), evs...)
	a.spoolMu.Unlock()
	if len(evs) > 0 {
		a.Log.Warn("delivering alerts left waiting by the previous run", "count", len(evs))
	}
	return evs
}

// spool adds ev to the spool file, or removes the alert done names from it,
// rewriting the file whole (it holds only what is waiting: a few alerts).
func (a *Alerter) spool(add *Event, done string) {
	if a.SpoolPath == "" {
		return
	}
	a.spoolMu.Lock()
	defer a.spoolMu.Unlock()
	if add != nil {
		a.pending = append(a.pending, *add)
	}
	if done != "" {
		a.pending = slices.DeleteFunc(a.pending, func(e Event) bool { return e.ID == done })
	}
	var buf bytes.Buffer
	for _, ev := range a.pending {
		line, _ := json.Marshal(ev)
		buf.Write(line)
		buf.WriteByte('\n')
	}
	if err := writeFileSync(a.SpoolPath, buf.Bytes()); err != nil {
		a.Log.Error("writing the alert spool; waiting alerts may not survive a restart", "path", a.SpoolPath, "error", err)
	}
}

// writeFileSync replaces path with b, durably: a crash leaves the old file
// or the new one, never half of one.
func writeFileSync(path string, b []byte) error {
	tmp := path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o600)
	if err != nil {
		return err
	}
	if _, err := f.Write(b); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

// Send logs ev and queues it for the webhook. It never blocks the caller.
func (a *Alerter) Send(ev Event) {
	a.start()
	if r := ev.AccessRequest; r != nil {
		a.Log.Info("an agent asks for access; its human should answer",
			"access_request", r.ID, "agent", ev.Agent, "human", r.Human, "permission", r.Permission, "resource", r.Resource,
			"ttl", r.TTL, "expires_at", r.ExpiresAt)
	} else {
		a.Log.Warn("ALERT: agent suspended automatically after crossing a behavioural bound",
			"agent", ev.Agent, "bound", ev.Bound, "limit", ev.Limit, "observed", ev.Observed, "window", ev.Window,
			"decision_id", ev.DecisionID, "suspended", ev.Suspended, "suspend_error", ev.SuspendError)
	}
	if a.URL == "" {
		return
	}
	a.spool(&ev, "")
	select {
	case a.queue <- ev:
	default:
		a.Log.Error("alert webhook queue is full; this alert is only in the log and the audit trail", "alert_id", ev.ID)
		a.count("dropped")
	}
}

func (a *Alerter) run() {
	defer a.wg.Done()
	for _, ev := range a.restored {
		select {
		case <-a.stop:
			return // still in the spool for the next run
		default:
			a.deliver(ev)
		}
	}
	for {
		select {
		case ev := <-a.queue:
			a.deliver(ev)
		case <-a.stop:
			// Drain what is queued, once each, before stopping.
			for {
				select {
				case ev := <-a.queue:
					a.deliver(ev)
				default:
					return
				}
			}
		}
	}
}

func (a *Alerter) deliver(ev Event) {
	body, err := json.Marshal(ev)
	if err != nil {
		a.Log.Error("encoding an alert", "error", err)
		return
	}
	wait := a.Backoff
	for attempt := 1; attempt <= a.Attempts; attempt++ {
		err = a.post(body, ev.ID)
		if err == nil {
			a.Log.Info("alert delivered", "alert_id", ev.ID, "attempt", attempt)
			a.count("delivered")
			a.spool(nil, ev.ID)
			return
		}
		a.Log.Warn("alert delivery failed", "alert_id", ev.ID, "attempt", attempt, "of", a.Attempts, "error", err)
		a.count("retried")
		if attempt == a.Attempts {
			break
		}
		select {
		case <-time.After(wait):
		case <-a.stop:
			// Shutting down: one last try without waiting; if it fails
			// too, a spooled alert waits for the next run.
			if err = a.post(body, ev.ID); err == nil {
				a.count("delivered")
				a.spool(nil, ev.ID)
				return
			}
			if a.SpoolPath != "" {
				a.Log.Warn("alert not delivered before shutdown; it stays in the spool for the next run", "alert_id", ev.ID)
				return
			}
			attempt = a.Attempts
		}
		wait *= 2
	}
	a.Log.Error("alert was not delivered; it is in the log and the audit trail", "alert_id", ev.ID, "error", err)
	a.count("dropped")
	a.spool(nil, ev.ID)
}

func (a *Alerter) count(result string) {
	if a.Delivered != nil {
		a.Delivered.WithLabelValues(result).Inc()
	}
}

func (a *Alerter) post(body []byte, id string) error {
	ctx, cancel := context.WithTimeout(context.Background(), a.Timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, a.URL, bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	// Receivers can drop duplicates of a retried delivery by this id.
	req.Header.Set("Idempotency-Key", id)
	if a.Secret != "" {
		req.Header.Set("X-Mandate-Signature", Sign(a.Secret, body))
	}
	resp, err := a.Client.Do(req)
	if err != nil {
		return err
	}
	resp.Body.Close()
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return fmt.Errorf("webhook answered %s", resp.Status)
	}
	return nil
}

// Sign is the X-Mandate-Signature of an alert body, for receivers to verify.
func Sign(secret string, body []byte) string {
	m := hmac.New(sha256.New, []byte(secret))
	m.Write(body)
	return "sha256=" + hex.EncodeToString(m.Sum(nil))
}

// Close stops the alerter after trying what is queued.
func (a *Alerter) Close() {
	a.start()
	close(a.stop)
	a.wg.Wait()
}
