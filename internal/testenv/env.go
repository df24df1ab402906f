package testenv

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"io/fs"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// installHint tells a developer how to get the servers a skipped test needs.
const installHint = "run ./scripts/test to install test dependencies"

// Timeouts for the steps of starting and stopping a server. They are generous
// so that a loaded CI machine (two cores, several test binaries at once) does
// not fail spuriously, and finite so that nothing waits forever.
const (
	startTimeout = 60 * time.Second
	stopTimeout  = 10 * time.Second
	buildTimeout = 15 * time.Minute
	pollInterval = 20 * time.Millisecond
)

// portAttempts is how many times a server start is retried with a new port
// when another process took the free port between FreePort and the bind.
const portAttempts = 4

// RequireServers reports whether a server that cannot be started must fail the
// test rather than skip it: in CI (CI=true) or when
// AIRLOCK_TEST_REQUIRE_SERVERS=1 is set.
func RequireServers() bool {
	return os.Getenv("CI") == "true" || os.Getenv("AIRLOCK_TEST_REQUIRE_SERVERS") == "1"
}

// Require applies the project's policy for a real server that a test needs:
// if err is nil it does nothing; otherwise the test fails (in CI, or with
// AIRLOCK_TEST_REQUIRE_SERVERS=1) or is skipped with a hint on how to install
// the missing dependencies. what names the server, for example "PostgreSQL".
func Require(t testing.TB, what string, err error) {
	t.Helper()
	if err == nil {
		return
	}
	if RequireServers() {
		t.Fatalf("testenv: %s is required but could not be started: %v", what, err)
		return // for a testing.TB whose Fatalf returns
	}
	t.Skipf("testenv: skipping, %s could not be started: %v (%s)", what, err, installHint)
}

// FreePort returns a TCP port on 127.0.0.1 that was free a moment ago. Another
// process may take it before the caller binds it; the Start functions retry
// with a new port when that happens.
func FreePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("find a free port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// randomPassword returns 32 hex characters: safe in URLs, SQL literals and
// command lines without quoting.
func randomPassword() string {
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		// crypto/rand does not fail on Linux; a failure means a broken system.
		panic(fmt.Sprintf("testenv: read random bytes: %v", err))
	}
	return hex.EncodeToString(b[:])
}

// waitTCP waits until addr accepts a TCP connection, ctx ends or exited (when
// not nil) is closed because the server process is gone.
func waitTCP(ctx context.Context, addr string, exited <-chan struct{}) error {
	var d net.Dialer
	tick := time.NewTicker(pollInterval)
	defer tick.Stop()
	for {
		dctx, cancel := context.WithTimeout(ctx, time.Second)
		c, err := d.DialContext(dctx, "tcp", addr)
		cancel()
		if err == nil {
			c.Close()
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("wait for %s to accept connections: %w (last error: %v)", addr, ctx.Err(), err)
		case <-exited:
			return fmt.Errorf("server exited before accepting connections on %s", addr)
		case <-tick.C:
		}
	}
}

// processAlive reports whether pid names a running process. A zombie counts
// as dead: this machine's PID 1 does not always reap orphans.
func processAlive(pid int) bool {
	if pid <= 0 {
		return false
	}
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return false
	}
	// The state follows the command name, which is in parentheses and may
	// itself contain spaces or parentheses.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 || i+2 >= len(b) {
		return false
	}
	state := b[i+2]
	return state != 'Z' && state != 'X'
}

// processName returns the command name of pid, or "" if there is none.
func processName(pid int) string {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/comm")
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(b))
}

// waitDead waits until pid is gone or ctx ends.
func waitDead(ctx context.Context, pid int) bool {
	tick := time.NewTicker(pollInterval)
	defer tick.Stop()
	for processAlive(pid) {
		select {
		case <-ctx.Done():
			return !processAlive(pid)
		case <-tick.C:
		}
	}
	return true
}

// killGroup sends sig to the process group led by pid and to pid itself (in
// case it is not a group leader). Errors for processes already gone are
// ignored.
func killGroup(pid int, sig syscall.Signal) {
	if pid <= 0 {
		return
	}
	_ = syscall.Kill(-pid, sig)
	_ = syscall.Kill(pid, sig)
}

// terminate stops the process group led by pid: sig first, then SIGKILL if it
// is still alive after grace. It returns an error only if the process
// survives SIGKILL.
func terminate(pid int, sig syscall.Signal, grace time.Duration) error {
	if !processAlive(pid) {
		return nil
	}
	killGroup(pid, sig)
	ctx, cancel := context.WithTimeout(context.Background(), grace)
	defer cancel()
	if waitDead(ctx, pid) {
		// The leader is gone; make sure no member of its group lingers.
		killGroup(pid, syscall.SIGKILL)
		return nil
	}
	killGroup(pid, syscall.SIGKILL)
	ctx2, cancel2 := context.WithTimeout(context.Background(), stopTimeout)
	defer cancel2()
	if !waitDead(ctx2, pid) {
		return fmt.Errorf("process %d survived SIGKILL", pid)
	}
	return nil
}

// logTail returns the last n lines of the file at path, for error messages.
func logTail(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return fmt.Sprintf("(no log: %v)", err)
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// withLog appends the tail of a server's log to err.
func withLog(err error, path string) error {
	if err == nil {
		return nil
	}
	return fmt.Errorf("%w\n--- last lines of %s ---\n%s", err, path, logTail(path, 30))
}

// logOnFailure registers a cleanup that prints the tail of a server's log
// when the test failed, so that a failure shows what the server said.
func logOnFailure(t testing.TB, what, path string) {
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("testenv: last lines of the %s log %s:\n%s", what, path, logTail(path, 40))
		}
	})
}

// watchdog is a helper process that cleans up after a server if the test
// binary dies without running its cleanups (a -timeout panic, SIGKILL, a
// missing TestMain for the shared cluster). It reads its standard input until
// end of file, which the kernel delivers when the test binary exits for any
// reason, then runs its script. A normal cleanup disarms it first.
type watchdog struct {
	cmd   *exec.Cmd
	stdin io.WriteCloser
}

// watchdogKillScript stops the process group led by $1 (TERM, then KILL after
// five seconds) and removes the directory $2.
const watchdogKillScript = `
pid="$1"
kill -TERM "-$pid" 2>/dev/null
i=0
while kill -0 "$pid" 2>/dev/null && [ "$i" -lt 50 ]; do sleep 0.1; i=$((i+1)); done
kill -KILL "-$pid" 2>/dev/null
rm -rf -- "$2"
`

// watchdogPostgresScript stops the cluster whose data directory is $1 by the
// PID in its postmaster.pid (SIGQUIT is PostgreSQL's immediate shutdown), and
// removes the directory $2. The PID is read when the watchdog fires, so it
// follows restarts of the cluster.
const watchdogPostgresScript = `
if pid=$(head -n 1 "$1/postmaster.pid" 2>/dev/null) && [ -n "$pid" ]; then
  kill -QUIT "$pid" 2>/dev/null
  i=0
  while kill -0 "$pid" 2>/dev/null && [ "$i" -lt 50 ]; do sleep 0.1; i=$((i+1)); done
  kill -KILL "-$pid" 2>/dev/null
  kill -KILL "$pid" 2>/dev/null
fi
rm -rf -- "$2"
`

// startWatchdog starts a watchdog that runs script with args as $1, $2, ...
func startWatchdog(script string, args ...string) (*watchdog, error) {
	cmd := exec.Command("/bin/sh", append([]string{"-c", "cat >/dev/null\n" + script, "testenv-watchdog"}, args...)...)
	// Its own process group: a Ctrl-C to the test's group must not kill it
	// before it has cleaned up. Its output goes nowhere, so that go test does
	// not wait for it to close the test binary's pipes.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return nil, fmt.Errorf("start watchdog: %w", err)
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start watchdog: %w", err)
	}
	return &watchdog{cmd: cmd, stdin: stdin}, nil
}

// disarm ends the watchdog without running its script. It is safe on nil.
func (w *watchdog) disarm() {
	if w == nil || w.cmd == nil {
		return
	}
	killGroup(w.cmd.Process.Pid, syscall.SIGKILL)
	_ = w.stdin.Close()
	_ = w.cmd.Wait()
	w.cmd = nil
}

// chownTree gives the directory tree at root to uid:gid.
func chownTree(root string, uid, gid int) error {
	return filepath.WalkDir(root, func(path string, _ fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		return os.Lchown(path, uid, gid)
	})
}

// serverProcess is a server that testenv runs as its own child, in a process
// group of its own, with its output in a log file.
type serverProcess struct {
	cmd    *exec.Cmd
	exited chan struct{} // closed when the process has exited and been reaped
}

// startProcess starts bin with args, its standard output and error appended
// to logPath.
func startProcess(bin string, args []string, dir, logPath string) (*serverProcess, error) {
	logFile, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, fmt.Errorf("open server log: %w", err)
	}
	// The log file descriptor is handed to the child directly (no pipe), so
	// neither this process nor go test waits on the child's output.
	defer logFile.Close()
	cmd := exec.Command(bin, args...)
	cmd.Dir = dir
	cmd.Stdout = logFile
	cmd.Stderr = logFile
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", bin, err)
	}
	s := &serverProcess{cmd: cmd, exited: make(chan struct{})}
	go func() {
		_ = cmd.Wait()
		close(s.exited)
	}()
	return s, nil
}

// pid returns the process ID, which is also its process group ID.
func (s *serverProcess) pid() int { return s.cmd.Process.Pid }

// stop sends SIGTERM to the process group, then SIGKILL if the process has not
// exited after grace. It is safe to call more than once.
func (s *serverProcess) stop(grace time.Duration) error {
	select {
	case <-s.exited:
		killGroup(s.pid(), syscall.SIGKILL) // stragglers in its group, if any
		return nil
	default:
	}
	killGroup(s.pid(), syscall.SIGTERM)
	select {
	case <-s.exited:
		killGroup(s.pid(), syscall.SIGKILL)
		return nil
	case <-time.After(grace):
	}
	killGroup(s.pid(), syscall.SIGKILL)
	select {
	case <-s.exited:
		return nil
	case <-time.After(stopTimeout):
		return fmt.Errorf("process %d survived SIGKILL", s.pid())
	}
}
