package main

import (
	"context"
	"fmt"
	"html"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"regexp"
	"strings"
	"time"

	"github.com/mandate-dev/mandate/bench"
	"github.com/mandate-dev/mandate/engine/embedded"
	mandatev1 "github.com/mandate-dev/mandate/proto/mandate/v1"
	"github.com/mandate-dev/mandate/server"
)

// consolePages times the web console's People page (every human, task and
// agent tree) and Overview with n agents on the memory datastore: 20 humans,
// 5 tasks each, and per task a top agent with its sub-agents, n in all. Each
// sample is one whole GET, as a browser's, signed in with the admin key.
func consolePages(ctx context.Context, keys string, n int) []bench.Result {
	srv, stop := start(ctx, server.Config{KeysFile: keys, Embedded: embedded.Config{Engine: "memory"}})
	defer stop()
	op := dial(srv.GRPCAddr(), operatorKey)
	tasks, agents := mandatev1.NewTaskServiceClient(op), mandatev1.NewAgentServiceClient(op)
	const humans, tasksPer = 20, 5
	perTask := n / (humans * tasksPer)
	made := 0
	for h := 0; h < humans; h++ {
		for k := 0; k < tasksPer; k++ {
			t, err := tasks.CreateTask(ctx, &mandatev1.CreateTaskRequest{Principal: fmt.Sprintf("user:human%02d", h), Ttl: "2h", Description: fmt.Sprintf("task %d of human %d", k, h)})
			must(err)
			top, err := agents.CreateAgent(ctx, &mandatev1.CreateAgentRequest{Task: "task:" + t.GetTask().GetId(), Name: "top", Ttl: "2h"})
			must(err)
			made++
			for a := 1; a < perTask; a++ {
				_, err := agents.CreateAgent(ctx, &mandatev1.CreateAgentRequest{Task: "task:" + t.GetTask().GetId(), Parent: "agent:" + top.GetAgent().GetId(), Name: fmt.Sprintf("sub%d", a), Ttl: "2h"})
				must(err)
				made++
			}
		}
	}
	if made != n {
		must(fmt.Errorf("made %d agents, want %d", made, n))
	}
	base := "http://" + srv.HTTPAddr()
	jar, _ := cookiejar.New(nil)
	c := &http.Client{Jar: jar}
	get := func(path string) string {
		resp, err := c.Get(base + path)
		must(err)
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != http.StatusOK {
			must(fmt.Errorf("GET %s: %d", path, resp.StatusCode))
		}
		return string(b)
	}
	m := regexp.MustCompile(`name="csrf" value="([^"]+)"`).FindStringSubmatch(get("/ui/login"))
	resp, err := c.PostForm(base+"/ui/login", url.Values{"csrf": {html.UnescapeString(m[1])}, "key": {adminKey}})
	must(err)
	resp.Body.Close()
	var out []bench.Result
	// The baseline, in the same run: the one REST call that lists the same
	// 1,000 agents (what the People page starts from), as JSON.
	api := func() {
		req, _ := http.NewRequestWithContext(ctx, "GET", base+"/v1/agents?page_size=1000", nil)
		req.Header.Set("Authorization", "Bearer "+adminKey)
		resp, err := http.DefaultClient.Do(req)
		must(err)
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			must(fmt.Errorf("GET /v1/agents: %d", resp.StatusCode))
		}
	}
	api()
	var apiSamples, pageSamples []time.Duration
	for round := 0; round < 20; round++ {
		t0 := time.Now()
		api()
		apiSamples = append(apiSamples, time.Since(t0))
		t0 = time.Now()
		get("/ui/people?tasks=all")
		pageSamples = append(pageSamples, time.Since(t0))
	}
	r := bench.Distribution("console-baseline-api", "", apiSamples)
	r.Description = fmt.Sprintf("baseline: GET /v1/agents?page_size=1000 (the %d agents as JSON), interleaved with the next", n)
	out = append(out, r)
	r = bench.Distribution("console-people-pair", "", pageSamples)
	r.Description = "console People page, interleaved with the baseline"
	out = append(out, r)
	for _, p := range []struct{ name, path, desc string }{
		{"console-people", "/ui/people?tasks=all", fmt.Sprintf("console People page, %d agents in 100 trees, memory datastore (target <= 300 ms)", n)},
		{"console-overview", "/ui/", fmt.Sprintf("console Overview, %d agents, memory datastore", n)},
	} {
		if got := strings.Count(get(p.path), `class="agent"`); p.name == "console-people" && got != n {
			must(fmt.Errorf("the People page shows %d agents, want %d", got, n))
		}
		var samples []time.Duration
		for round := 0; round < 20; round++ {
			t0 := time.Now()
			get(p.path)
			samples = append(samples, time.Since(t0))
		}
		r := bench.Distribution(p.name, "", samples)
		r.Description = p.desc
		out = append(out, r)
	}
	return out
}
