// Package e2e runs the real `airlock` binary as server, gateway and CLI for
// end-to-end tests: Build compiles it once per test binary; Server, Gateway
// and User start and drive processes that are stopped when the test ends.
package e2e

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/airlockpam/airlock/internal/keyring"
)

// Bin is the path of the built binary (set by Build).
var Bin string

// Build compiles the airlock binary into dir; call it from TestMain.
func Build(dir string) error {
	Bin = filepath.Join(dir, "airlock")
	out, err := exec.Command("go", "build", "-o", Bin, "github.com/airlockpam/airlock/cmd/airlock").CombinedOutput()
	if err != nil {
		return fmt.Errorf("building airlock: %v\n%s", err, out)
	}
	return nil
}

// FreeAddr returns a free 127.0.0.1 address.
func FreeAddr(t testing.TB) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// Process is a running airlock command.
type Process struct {
	Cmd    *exec.Cmd
	Lines  <-chan string // stdout, line by line
	stderr *lockedBuilder
	done   chan struct{}
	stdout *lockedBuilder
}

type lockedBuilder struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *lockedBuilder) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuilder) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// Start runs airlock args in the background with env added; it is
// interrupted (then killed) when the test ends, and its output is logged if
// the test failed.
func Start(t testing.TB, env []string, args ...string) *Process {
	t.Helper()
	cmd := exec.Command(Bin, args...)
	cmd.Env = append(os.Environ(), env...)
	if len(args) > 0 && args[0] == "gateway" {
		cmd.Env = gatewayEnv(cmd.Env)
	}
	p := &Process{Cmd: cmd, stderr: &lockedBuilder{}, stdout: &lockedBuilder{}, done: make(chan struct{})}
	cmd.Stderr = p.stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	lines := make(chan string, 1000)
	p.Lines = lines
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			p.stdout.Write([]byte(sc.Text() + "\n"))
			select {
			case lines <- sc.Text():
			default:
			}
		}
		close(lines)
		cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() {
		p.Stop(syscall.SIGINT)
		if t.Failed() {
			t.Logf("airlock %s\nstdout:\n%s\nstderr:\n%s", strings.Join(args, " "), p.stdout.String(), p.stderr.String())
		}
	})
	return p
}

// GatewayAllowTargets is the --allow-targets of the gateways tests start:
// the gateway's default refuses its own loopback, where every test
// database listens. A test of the default sets AIRLOCK_GATEWAY_ALLOW_TARGETS
// itself (an empty value is not overridden).
const GatewayAllowTargets = "127.0.0.0/8,::1/128"

// gatewayEnv adds AIRLOCK_GATEWAY_ALLOW_TARGETS=GatewayAllowTargets to env
// unless env sets it already.
func gatewayEnv(env []string) []string {
	for _, kv := range env {
		if strings.HasPrefix(kv, "AIRLOCK_GATEWAY_ALLOW_TARGETS=") {
			return env
		}
	}
	return append(env, "AIRLOCK_GATEWAY_ALLOW_TARGETS="+GatewayAllowTargets)
}

// Stop signals the process and waits up to 15 s before killing it.
func (p *Process) Stop(sig syscall.Signal) {
	if p.Exited() {
		return
	}
	p.Cmd.Process.Signal(sig)
	select {
	case <-p.done:
	case <-time.After(15 * time.Second):
		p.Cmd.Process.Kill()
		<-p.done
	}
}

// Wait waits for the process to exit, up to timeout, and returns its exit code.
func (p *Process) Wait(t testing.TB, timeout time.Duration) int {
	t.Helper()
	select {
	case <-p.done:
		return p.Cmd.ProcessState.ExitCode()
	case <-time.After(timeout):
		t.Fatalf("process did not exit within %s", timeout)
		return -1
	}
}

// Exited reports whether the process has ended.
func (p *Process) Exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// Stdout and Stderr return what the process printed so far.
func (p *Process) Stdout() string { return p.stdout.String() }
func (p *Process) Stderr() string { return p.stderr.String() }

// WaitLine returns the first stdout line matching re, failing after timeout.
func (p *Process) WaitLine(t testing.TB, re *regexp.Regexp, timeout time.Duration) string {
	t.Helper()
	deadline := time.After(timeout)
	for {
		select {
		case l, ok := <-p.Lines:
			if !ok {
				t.Fatalf("process exited before printing %s\nstderr: %s", re, p.Stderr())
			}
			if re.MatchString(l) {
				return l
			}
		case <-deadline:
			t.Fatalf("no line matching %s within %s\nstdout: %s\nstderr: %s", re, timeout, p.Stdout(), p.Stderr())
		}
	}
}

// Server is a running airlock server with a bootstrap admin.
type Server struct {
	URL           string
	DataDir       string
	RootKey       string
	AdminEmail    string
	AdminPassword string
	Proc          *Process
	env           []string // the extra environment it was started with
}

// StartServer runs `airlock server` on a free port with an embedded store.
func StartServer(t testing.TB, extraEnv ...string) *Server {
	t.Helper()
	return StartServerWith(t, extraEnv)
}

// StartServerWith runs `airlock server` on a free port with an embedded
// store, extra environment and extra command-line arguments (such as
// --access-token-ttl 2s).
func StartServerWith(t testing.TB, extraEnv []string, args ...string) *Server {
	t.Helper()
	s := &Server{DataDir: t.TempDir(), RootKey: keyring.GenerateRootKey(), AdminEmail: "root@example.com", AdminPassword: "root password 123"}
	s.URL = "http://" + FreeAddr(t)
	s.env = extraEnv
	s.Restart(t, args...)
	return s
}

// Restart starts the server's process (again, after it was stopped) on its
// address, data directory and root key, with args, and waits until it is
// ready; Proc is the new process.
func (s *Server) Restart(t testing.TB, args ...string) {
	t.Helper()
	env := append([]string{"AIRLOCK_ROOT_KEY=" + s.RootKey, "AIRLOCK_BOOTSTRAP_EMAIL=" + s.AdminEmail,
		"AIRLOCK_BOOTSTRAP_PASSWORD=" + s.AdminPassword}, s.env...)
	s.Proc = Start(t, env, append([]string{"server", "--listen", strings.TrimPrefix(s.URL, "http://"), "--data-dir", s.DataDir}, args...)...)
	WaitReady(t, s.URL)
}

// WaitReady waits until url's /readyz answers 200.
func WaitReady(t testing.TB, url string) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		resp, err := http.Get(url + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("server at %s did not become ready", url)
}

// User is a person at a machine: their own config directory.
type User struct {
	T      testing.TB
	Config string
	Env    []string
}

// NewUser returns a user with an empty config directory.
func NewUser(t testing.TB) *User { return &User{T: t, Config: t.TempDir()} }

// Login logs the user in with a password, failing the test on error.
func (u *User) Login(s *Server, email, password string) {
	u.T.Helper()
	u.Must(password, "login", "--domain", s.URL, "--email", email, "--password-stdin")
}

// Env returns the environment of the user's commands.
func (u *User) environ() []string {
	return append(append(os.Environ(), "AIRLOCK_CONFIG_DIR="+u.Config), u.Env...)
}

// Run runs airlock with stdin and returns stdout, stderr and the exit code.
func (u *User) Run(stdin string, args ...string) (string, string, int) {
	u.T.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, Bin, args...)
	cmd.Env = u.environ()
	cmd.Stdin = strings.NewReader(stdin)
	var out, errb strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		u.T.Fatalf("running airlock %v: %v", args, err)
	}
	return out.String(), errb.String(), code
}

// Must runs airlock and fails the test unless it exits 0.
func (u *User) Must(stdin string, args ...string) string {
	u.T.Helper()
	out, errOut, code := u.Run(stdin, args...)
	if code != 0 {
		u.T.Fatalf("airlock %v: exit %d\nstdout: %s\nstderr: %s", args, code, out, errOut)
	}
	return out
}

// JSON runs airlock with --output json and decodes the answer into v.
func (u *User) JSON(v any, stdin string, args ...string) {
	u.T.Helper()
	out := u.Must(stdin, append(args, "--output", "json")...)
	if err := json.Unmarshal([]byte(out), v); err != nil {
		u.T.Fatalf("airlock %v: decoding %q: %v", args, out, err)
	}
}

// Start runs a long-lived airlock command as this user.
func (u *User) Start(args ...string) *Process {
	u.T.Helper()
	return Start(u.T, append([]string{"AIRLOCK_CONFIG_DIR=" + u.Config}, u.Env...), args...)
}

// Replica starts another `airlock server` process on s's store (the same
// environment, so the same AIRLOCK_DATABASE_URL and root key), with its own
// address and data directory, as a second replica behind a load balancer.
func (s *Server) Replica(t testing.TB, args ...string) *Server {
	t.Helper()
	r := &Server{DataDir: t.TempDir(), RootKey: s.RootKey, AdminEmail: s.AdminEmail, AdminPassword: s.AdminPassword, env: s.env}
	r.URL = "http://" + FreeAddr(t)
	r.Restart(t, args...)
	return r
}
