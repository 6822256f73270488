//go:build unix

package testenv

import (
	"bytes"
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	v1 "github.com/authzed/authzed-go/proto/authzed/api/v1"
	"github.com/authzed/grpcutil"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
)

// spicedbModule is the module whose cmd/spicedb is the standalone binary.
const spicedbModule = "github.com/authzed/spicedb"

// SpiceDBVersion is the SpiceDB version mandate is built against: the one
// go.mod requires.
func SpiceDBVersion() (string, error) {
	out, err := exec.Command("go", "list", "-m", "-f", "{{if .Replace}}{{.Replace.Version}}{{else}}{{.Version}}{{end}}", spicedbModule).Output()
	if err != nil {
		return "", fmt.Errorf("go list -m %s: %w", spicedbModule, err)
	}
	return strings.TrimSpace(string(out)), nil
}

// SpiceDBBinary returns a standalone spicedb binary at SpiceDBVersion,
// building it the first time on this machine. It is built from the module
// internal/spicedbtool, whose go.mod and go.sum pin cmd/spicedb's own
// dependencies (the server needs more than mandate's go.mod holds), and is
// cached by version under the user cache directory, so a CI run builds it
// once: test packages that ask at the same time wait on a file lock instead of
// building it twice.
func SpiceDBBinary(t testing.TB) string {
	t.Helper()
	bin, err := spicedbBinary()
	if err != nil {
		t.Fatalf("standalone SpiceDB: %v", err)
	}
	return bin
}

// SpiceDBBinaryPath is SpiceDBBinary for a program that is not a test (the
// bench's soak): it returns the error instead of failing a test.
func SpiceDBBinaryPath() (string, error) { return spicedbBinary() }

var (
	binOnce sync.Once
	binPath string
	binErr  error
)

func spicedbBinary() (string, error) {
	binOnce.Do(func() { binPath, binErr = buildSpiceDB() })
	return binPath, binErr
}

func buildSpiceDB() (string, error) {
	version, err := SpiceDBVersion()
	if err != nil {
		return "", err
	}
	cache, err := os.UserCacheDir()
	if err != nil {
		return "", err
	}
	dir := filepath.Join(cache, "mandate", "spicedb-"+version)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	bin := filepath.Join(dir, "spicedb")
	lock, err := os.OpenFile(filepath.Join(dir, ".lock"), os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return "", err
	}
	defer lock.Close()
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX); err != nil {
		return "", fmt.Errorf("locking %s: %w", dir, err)
	}
	defer func() { _ = syscall.Flock(int(lock.Fd()), syscall.LOCK_UN) }()
	if _, err := os.Stat(bin); err == nil {
		return bin, nil
	}
	tool, err := toolModule(version)
	if err != nil {
		return "", err
	}
	tmp := bin + ".tmp"
	cmd := exec.Command("go", "build", "-o", tmp, spicedbModule+"/cmd/spicedb")
	cmd.Dir = tool
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	start := time.Now()
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("go build %s/cmd/spicedb in %s: %v\n%s", spicedbModule, tool, err, out.String())
	}
	if err := os.Rename(tmp, bin); err != nil {
		return "", err
	}
	fmt.Fprintf(os.Stderr, "built spicedb %s in %v: %s\n", version, time.Since(start).Round(time.Second), bin)
	return bin, nil
}

// toolModule finds internal/spicedbtool from the module root, and checks
// that it pins the same SpiceDB as go.mod.
func toolModule(version string) (string, error) {
	out, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("go env GOMOD: %w", err)
	}
	root := filepath.Dir(strings.TrimSpace(string(out)))
	dir := filepath.Join(root, "internal", "spicedbtool")
	mod, err := os.ReadFile(filepath.Join(dir, "go.mod"))
	if err != nil {
		return "", err
	}
	if !bytes.Contains(mod, []byte(spicedbModule+" "+version)) {
		return "", fmt.Errorf("%s/go.mod does not pin %s %s like go.mod does: run `go get -tool %s/cmd/spicedb@%s` there", dir, spicedbModule, version, spicedbModule, version)
	}
	return dir, nil
}

// SpiceDBNode is a standalone SpiceDB process on a Postgres datastore, with
// its Watch API on. It keeps its port across Stop and Start, as a restarted
// node behind a fixed address would.
type SpiceDBNode struct {
	t    testing.TB
	bin  string
	uri  string
	Addr string
	Key  string
	// TLS, when set, is the certificate the node serves gRPC with.
	TLS *Leaf

	mu   sync.Mutex
	cmd  *exec.Cmd
	done chan struct{}
	logs *lockedBuffer
}

// lockedBuffer collects a process's output while the test may read it.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// SpiceDBKey is the preshared key of the nodes StartSpiceDB starts.
const SpiceDBKey = "test-spicedb-key"

// SpiceDBDatabase makes a fresh database on the test Postgres (skipping the
// test without PostgresEnv) and migrates it to head with the standalone
// binary's `spicedb datastore migrate head`.
func SpiceDBDatabase(t testing.TB) string {
	t.Helper()
	uri := PostgresDB(t, "mandate_spicedb")
	bin := SpiceDBBinary(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, bin, "datastore", "migrate", "head",
		"--datastore-engine", "postgres", "--datastore-conn-uri", uri).CombinedOutput()
	if err != nil {
		t.Fatalf("spicedb datastore migrate head: %v\n%s", err, out)
	}
	return uri
}

// StartSpiceDB runs `spicedb serve` on the migrated Postgres database uri,
// on a free port, until the test ends, and waits until it answers. With a
// leaf certificate it serves gRPC over TLS.
func StartSpiceDB(t testing.TB, uri string, tlsLeaf ...Leaf) *SpiceDBNode {
	t.Helper()
	n := &SpiceDBNode{t: t, bin: SpiceDBBinary(t), uri: uri, Addr: freePort(t), Key: SpiceDBKey}
	if len(tlsLeaf) > 0 {
		n.TLS = &tlsLeaf[0]
	}
	n.Start()
	t.Cleanup(n.Stop)
	return n
}

// SpiceDBServeArgs are the arguments of `spicedb serve` on addr with key,
// set as the embedded SpiceDB is; the caller adds the datastore's.
func SpiceDBServeArgs(addr, key string) []string {
	return []string{"serve",
		"--grpc-addr", addr,
		"--grpc-preshared-key", key,
		// As the embedded SpiceDB: quantization and checkpoints short enough
		// for mandate's watch-lag bound (1 s), history long enough for
		// consistency tokens.
		"--datastore-revision-quantization-interval", "100ms",
		"--datastore-gc-window", "24h",
		"--watch-api-heartbeat", "100ms",
		"--metrics-enabled=false", "--http-enabled=false", "--telemetry-endpoint=", "--skip-release-check=true",
		"--grpc-shutdown-grace-period", "1s",
		"--log-level", "warn",
	}
}

// Start starts the node (again) and waits until it answers.
func (n *SpiceDBNode) Start() {
	n.t.Helper()
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.cmd != nil {
		return
	}
	args := append(SpiceDBServeArgs(n.Addr, n.Key),
		"--datastore-engine", "postgres",
		"--datastore-conn-uri", n.uri,
		// Three nodes and their replicas share one Postgres.
		"--datastore-conn-pool-read-max-open", "8", "--datastore-conn-pool-read-min-open", "1",
		"--datastore-conn-pool-write-max-open", "4", "--datastore-conn-pool-write-min-open", "1",
	)
	if n.TLS != nil {
		args = append(args, "--grpc-tls-cert-path", n.TLS.CertFile, "--grpc-tls-key-path", n.TLS.KeyFile)
	}
	cmd := exec.Command(n.bin, args...)
	n.logs = &lockedBuffer{}
	cmd.Stdout, cmd.Stderr = n.logs, n.logs
	if err := cmd.Start(); err != nil {
		n.t.Fatalf("starting spicedb: %v", err)
	}
	n.cmd, n.done = cmd, make(chan struct{})
	go func(done chan struct{}) { _ = cmd.Wait(); close(done) }(n.done)
	if err := n.waitReady(60 * time.Second); err != nil {
		n.t.Fatalf("spicedb on %s: %v\n%s", n.Addr, err, n.logs.String())
	}
}

func (n *SpiceDBNode) waitReady(timeout time.Duration) error {
	conn, err := n.Dial()
	if err != nil {
		return err
	}
	defer conn.Close()
	return WaitSpiceDB(conn, n.done, timeout)
}

// WaitSpiceDB waits until the SpiceDB behind conn answers, its process has
// exited (exited closed), or timeout passes.
func WaitSpiceDB(conn *grpc.ClientConn, exited <-chan struct{}, timeout time.Duration) error {
	schema := v1.NewSchemaServiceClient(conn)
	deadline := time.Now().Add(timeout)
	for {
		select {
		case <-exited:
			return fmt.Errorf("exited while starting")
		default:
		}
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		_, err := schema.ReadSchema(ctx, &v1.ReadSchemaRequest{})
		cancel()
		// An empty datastore has no schema yet: NotFound is an answer.
		if err == nil || status.Code(err) == codes.NotFound {
			return nil
		}
		if time.Now().After(deadline) {
			return err
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Dial connects to the node over TCP with its key, as mandate's
// --spicedb-endpoint with --spicedb-insecure does. Extra options are appended.
func (n *SpiceDBNode) Dial(opts ...grpc.DialOption) (*grpc.ClientConn, error) {
	base := []grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials()), grpcutil.WithInsecureBearerToken(n.Key)}
	if n.TLS != nil {
		creds := credentials.NewTLS(&tls.Config{InsecureSkipVerify: true}) // readiness only
		base = []grpc.DialOption{grpc.WithTransportCredentials(creds), grpcutil.WithBearerToken(n.Key)}
	}
	return grpc.NewClient(n.Addr, append(base, opts...)...)
}

// Stop stops the node gracefully (SIGTERM) and waits for it.
func (n *SpiceDBNode) Stop() { n.signal(syscall.SIGTERM) }

// Kill kills the node (SIGKILL) and waits for it.
func (n *SpiceDBNode) Kill() { n.signal(syscall.SIGKILL) }

func (n *SpiceDBNode) signal(sig syscall.Signal) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.cmd == nil {
		return
	}
	_ = n.cmd.Process.Signal(sig)
	select {
	case <-n.done:
	case <-time.After(15 * time.Second):
		_ = n.cmd.Process.Kill()
		<-n.done
	}
	n.cmd = nil
}

// Logs is what the node has printed.
func (n *SpiceDBNode) Logs() string {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.logs == nil {
		return ""
	}
	return n.logs.String()
}

// freePort returns a loopback address nothing listens on right now.
func freePort(t testing.TB) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}
