package e2e_test

import (
	"context"
	"os"
	"os/exec"
	"regexp"
	"syscall"
	"testing"
	"time"

	"github.com/airlockpam/airlock/internal/e2e"
)

// startServerArgs runs `airlock server` with extra command-line flags
// (such as --access-token-ttl 2s).
func startServerArgs(t *testing.T, args ...string) *e2e.Server {
	t.Helper()
	return e2e.StartServerWith(t, nil, args...)
}

// runServer starts the stopped server s again with args and returns its
// process.
func runServer(t *testing.T, s *e2e.Server, args ...string) *e2e.Process {
	t.Helper()
	s.Restart(t, args...)
	return s.Proc
}

// psqlResult is what a psql run printed and how it exited.
type psqlResult struct {
	Out  string
	Code int
}

// psql runs /usr/bin/psql with a connection string and one command, as
// root or, with asNobody, as the OS user nobody. It never waits more than
// a minute: a client that hangs fails the test.
func psql(t *testing.T, asNobody bool, conninfo, command string) psqlResult {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	args := []string{"psql", "-X", "-A", "-t", "-v", "ON_ERROR_STOP=1", conninfo, "-c", command}
	if asNobody {
		args = append([]string{"setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups"}, args...)
	}
	cmd := exec.CommandContext(ctx, args[0], args[1:]...)
	cmd.Env = append(os.Environ(), "PGCONNECT_TIMEOUT=30", "HOME=/tmp")
	cmd.Dir = "/"
	out, err := cmd.CombinedOutput()
	if ctx.Err() != nil {
		t.Fatalf("psql %q hung: %s", command, out)
	}
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatalf("running psql: %v", err)
	}
	return psqlResult{Out: string(out), Code: code}
}

// sessionOf returns the session id that `db access` printed.
func sessionOf(t *testing.T, p *e2e.Process) string {
	t.Helper()
	m := sessionIDRE.FindStringSubmatch(p.Stdout())
	if m == nil {
		t.Fatalf("no session id in %q", p.Stdout())
	}
	return m[1]
}

// waitStderr waits until the process's stderr matches re or the process
// exits; it fails the test after timeout.
func waitStderr(t *testing.T, p *e2e.Process, re *regexp.Regexp, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !re.MatchString(p.Stderr()) {
		if time.Now().After(deadline) || p.Exited() {
			t.Fatalf("stderr never matched %s (exited: %v):\n%s", re, p.Exited(), p.Stderr())
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// killServer stops the server process at once, as a crash would.
func killServer(s *e2e.Server) { s.Proc.Stop(syscall.SIGKILL) }
