package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/mandate-dev/mandate/internal/testenv"
)

// standaloneSpiceDB runs `spicedb serve` for the soak in a process of its
// own: the stock binary at go.mod's version (built once per machine, the one
// the cluster tests use), on the memory datastore, or on the migrated
// Postgres database uri. mandate then reaches it over TCP, as it reaches a
// SpiceDB cluster in production, and the two processes' memory is measured
// apart. It returns the address, the process id and a stop function.
func standaloneSpiceDB(ctx context.Context, uri string) (string, int, func()) {
	bin, err := testenv.SpiceDBBinaryPath()
	must(err)
	addr := freeAddr()
	args := testenv.SpiceDBServeArgs(addr, spicedbKey)
	if uri == "" {
		args = append(args, "--datastore-engine", "memory")
	} else {
		out, err := exec.CommandContext(ctx, bin, "datastore", "migrate", "head",
			"--datastore-engine", "postgres", "--datastore-conn-uri", uri).CombinedOutput()
		if err != nil {
			must(fmt.Errorf("spicedb datastore migrate head: %v\n%s", err, out))
		}
		args = append(args, "--datastore-engine", "postgres", "--datastore-conn-uri", uri,
			"--datastore-conn-pool-read-max-open", "16", "--datastore-conn-pool-read-min-open", "1",
			"--datastore-conn-pool-write-max-open", "8", "--datastore-conn-pool-write-min-open", "1")
	}
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	must(cmd.Start())
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	stop := func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-done:
		case <-time.After(15 * time.Second):
			_ = cmd.Process.Kill()
			<-done
		}
	}
	if err := testenv.WaitSpiceDB(dial(addr, spicedbKey), done, 60*time.Second); err != nil {
		stop()
		must(fmt.Errorf("spicedb on %s: %w", addr, err))
	}
	return addr, cmd.Process.Pid, stop
}

// statusOf reads a memory line of /proc/<pid>/status, in MiB.
func statusOf(pid int, field string) float64 {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return 0
	}
	for _, l := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(l, field) {
			var kb float64
			fmt.Sscanf(strings.TrimSpace(strings.TrimPrefix(l, field)), "%f", &kb)
			return kb / 1024
		}
	}
	return 0
}

// processCPUOf is the CPU time process pid has used, user and system, from
// /proc/<pid>/stat (in clock ticks of 10 ms, Linux's USER_HZ).
func processCPUOf(pid int) time.Duration {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0
	}
	// The command name (field 2) may hold spaces; count from after it.
	i := strings.LastIndexByte(string(b), ')')
	if i < 0 {
		return 0
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 13 {
		return 0
	}
	utime, _ := strconv.ParseInt(f[11], 10, 64)
	stime, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(utime+stime) * 10 * time.Millisecond
}
