//go:build unix

package testenv

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"sort"
	"strconv"
	"syscall"
	"testing"
	"time"
)

// PrivatePostgres is a Postgres server of the test's own, in a temporary
// directory on a free port, with track_commit_timestamp on: a test may stop
// and restart it without touching the Postgres other tests share.
type PrivatePostgres struct {
	t    testing.TB
	bin  string
	dir  string
	port string
	cred *syscall.Credential
	// DSN is the URI of its postgres database.
	DSN string
}

// StartPrivatePostgres initdb's and starts a private Postgres, stopped when
// the test ends. It skips the test when no Postgres binaries are installed
// (/usr/lib/postgresql/*/bin, or POSTGRES_BIN). Postgres refuses to run as
// root, so as root it runs as the postgres user.
func StartPrivatePostgres(t testing.TB) *PrivatePostgres {
	t.Helper()
	bin := os.Getenv("POSTGRES_BIN")
	if bin == "" {
		dirs, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
		sort.Strings(dirs)
		if len(dirs) == 0 {
			t.Skip("no Postgres binaries (/usr/lib/postgresql/*/bin); set POSTGRES_BIN")
		}
		bin = dirs[len(dirs)-1]
	}
	// Not t.TempDir: its parent is private to the test's user.
	dir, err := os.MkdirTemp("", "mandate-pg-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	p := &PrivatePostgres{t: t, bin: bin, dir: dir}
	if os.Geteuid() == 0 {
		u, err := user.Lookup("postgres")
		if err != nil {
			t.Skip("running as root and there is no postgres user to run a private Postgres as")
		}
		uid, _ := strconv.Atoi(u.Uid)
		gid, _ := strconv.Atoi(u.Gid)
		p.cred = &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}
		if err := os.Chown(p.dir, uid, gid); err != nil {
			t.Fatal(err)
		}
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	_, p.port, _ = net.SplitHostPort(l.Addr().String())
	l.Close()
	p.DSN = fmt.Sprintf("postgres://postgres@127.0.0.1:%s/postgres?sslmode=disable", p.port)
	p.run("initdb", "-D", p.data(), "-U", "postgres", "--auth=trust", "--no-sync")
	p.Start()
	t.Cleanup(p.Stop)
	return p
}

func (p *PrivatePostgres) data() string { return filepath.Join(p.dir, "data") }

func (p *PrivatePostgres) run(name string, args ...string) {
	p.t.Helper()
	cmd := exec.Command(filepath.Join(p.bin, name), args...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: p.cred}
	if out, err := cmd.CombinedOutput(); err != nil {
		p.t.Fatalf("%s %v: %v\n%s", name, args, err, out)
	}
}

// Start starts the server (again) and waits until it accepts connections.
func (p *PrivatePostgres) Start() {
	p.t.Helper()
	p.run("pg_ctl", "-D", p.data(), "-l", filepath.Join(p.dir, "log"), "-w", "-t", "60", "start", "-o",
		"-p "+p.port+" -c listen_addresses=127.0.0.1 -c unix_socket_directories="+p.dir+
			" -c track_commit_timestamp=on -c max_connections=200 -c fsync=off")
	deadline := time.Now().Add(30 * time.Second)
	for CommitTimestamps(p.DSN) != nil {
		if time.Now().After(deadline) {
			p.t.Fatalf("private Postgres on %s did not come up", p.port)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Stop stops the server (fast shutdown: open connections are cut) and waits.
func (p *PrivatePostgres) Stop() {
	cmd := exec.Command(filepath.Join(p.bin, "pg_ctl"), "-D", p.data(), "-m", "fast", "-w", "stop")
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: p.cred}
	_ = cmd.Run()
}
