package alert

import (
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// TestSpooledAlertsSurviveARestart: an alert the webhook has not taken by
// shutdown is delivered by the next run from the spool, and the spool is
// empty once it is.
func TestSpooledAlertsSurviveARestart(t *testing.T) {
	spool := filepath.Join(t.TempDir(), "alerts.spool")
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	down := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.WriteHeader(http.StatusServiceUnavailable)
	}))
	defer down.Close()
	first := &Alerter{URL: down.URL, SpoolPath: spool, Attempts: 100, Backoff: time.Hour, Log: quiet}
	ev := Event{Type: "mandate.agent.auto_suspended", ID: "chg_1", Agent: "agent:agt_1", Bound: "checks_per_minute", Suspended: []string{"agent:agt_1"}}
	first.Send(ev)
	time.Sleep(50 * time.Millisecond) // the first attempt fails; the next is an hour away
	first.Close()

	var mu sync.Mutex
	var got []Event
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var e Event
		_ = json.NewDecoder(r.Body).Decode(&e)
		mu.Lock()
		got = append(got, e)
		mu.Unlock()
	}))
	defer up.Close()
	second := &Alerter{URL: up.URL, SpoolPath: spool, Log: quiet}
	second.Start()
	deadline := time.Now().Add(5 * time.Second)
	for {
		mu.Lock()
		n := len(got)
		mu.Unlock()
		if n > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the spooled alert was never delivered after the restart")
		}
		time.Sleep(10 * time.Millisecond)
	}
	second.Close()
	if got[0].ID != ev.ID || got[0].Agent != ev.Agent {
		t.Fatalf("delivered %+v, want %+v", got[0], ev)
	}
	if b, err := os.ReadFile(spool); err != nil || len(b) != 0 {
		t.Fatalf("spool after delivery: %q %v, want empty", b, err)
	}
}

// TestAlertSpoolOnFullDisk: the alert spool's disk is full (its temporary
// file is a link to /dev/full, which answers every write with ENOSPC). The
// alert is still logged and delivered by this run; only an alert this run
// could not deliver before it stops is lost, which the log says at the time.
// The fault table in bench/RESULTS.md quotes this.
func TestAlertSpoolOnFullDisk(t *testing.T) {
	if _, err := os.Stat("/dev/full"); err != nil {
		t.Skip("no /dev/full to stand for a full disk")
	}
	spool := filepath.Join(t.TempDir(), "alerts.spool")
	if err := os.Symlink("/dev/full", spool+".tmp"); err != nil {
		t.Fatal(err)
	}
	var logs syncBuffer
	log := slog.New(slog.NewTextHandler(&logs, nil))
	var mu sync.Mutex
	var got []Event
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var e Event
		_ = json.NewDecoder(r.Body).Decode(&e)
		mu.Lock()
		got = append(got, e)
		mu.Unlock()
	}))
	defer up.Close()
	a := &Alerter{URL: up.URL, SpoolPath: spool, Log: log}
	a.Send(Event{Type: "mandate.agent.auto_suspended", ID: "chg_full", Agent: "agent:agt_1", Bound: "max_denials"})
	deadline := time.Now().Add(5 * time.Second)
	for {
		mu.Lock()
		n := len(got)
		mu.Unlock()
		if n == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the alert was not delivered with the spool disk full")
		}
		time.Sleep(10 * time.Millisecond)
	}
	a.Close()
	if !strings.Contains(logs.String(), "writing the alert spool") || !strings.Contains(logs.String(), "no space left on device") {
		t.Fatalf("the log does not say the spool could not be written:\n%s", logs.String())
	}
}

type syncBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// TestEventShapes: an auto-suspension event keeps every field it always
// had; an access request event carries its request and none of the bound
// fields; both read back whole (as the spool reads them).
func TestEventShapes(t *testing.T) {
	at := time.Date(2026, 12, 1, 9, 0, 0, 0, time.UTC)
	suspend := Event{Type: TypeAutoSuspended, ID: "chg_1", Time: at, Agent: "agent:agt_1", Bound: "checks_per_minute", Limit: 3, Observed: 4,
		Window: "1m0s", DecisionID: "dec_1", Suspended: []string{"agent:agt_1"}}
	filed := Event{Type: TypeAccessRequestFiled, ID: "evt_1", Time: at, Agent: "agent:agt_1", Principal: "user:alice", Task: "task:tsk_1",
		Permission: "write", Resource: "repo:acme/api", AccessRequest: &AccessRequest{ID: "acr_1", Human: "user:alice", Permission: "write",
			Resource: "repo:acme/api", TTL: "30m", Reason: "release", FiledBy: "runtime", FiledAt: at, ExpiresAt: at.Add(15 * time.Minute)}}
	for _, c := range []struct {
		ev          Event
		have, lacks []string
	}{
		{suspend, []string{"bound", "limit", "observed", "window", "decision_id", "suspended", "agent"}, []string{"access_request"}},
		{filed, []string{"access_request", "agent", "principal", "task", "permission", "resource"}, []string{"bound", "limit", "observed", "window", "decision_id", "suspended"}},
	} {
		raw, err := json.Marshal(c.ev)
		if err != nil {
			t.Fatal(err)
		}
		var m map[string]any
		if err := json.Unmarshal(raw, &m); err != nil {
			t.Fatal(err)
		}
		for _, k := range c.have {
			if _, ok := m[k]; !ok {
				t.Errorf("%s event lacks %q: %s", c.ev.Type, k, raw)
			}
		}
		for _, k := range c.lacks {
			if _, ok := m[k]; ok {
				t.Errorf("%s event has %q: %s", c.ev.Type, k, raw)
			}
		}
		var back Event
		if err := json.Unmarshal(raw, &back); err != nil {
			t.Fatal(err)
		}
		again, _ := json.Marshal(back)
		if string(again) != string(raw) {
			t.Errorf("%s event does not read back whole:\n%s\n%s", c.ev.Type, raw, again)
		}
	}
}
