package e2e_test

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/airlockpam/airlock/internal/e2e"
)

// stdoutLine returns the submatches of the first line of the process's
// stdout so far that matches re.
func stdoutLine(t *testing.T, p *e2e.Process, re *regexp.Regexp) []string {
	t.Helper()
	for _, l := range strings.Split(p.Stdout(), "\n") {
		if m := re.FindStringSubmatch(l); m != nil {
			return m
		}
	}
	t.Fatalf("no line matching %s in\n%s", re, p.Stdout())
	return nil
}

// listeningLine is what `db access` says about its port.
var listeningLine = regexp.MustCompile(`^Listening on port (\d+)(.*)\.$`)

// TestAccessReusesThePort: db access without --port listens on the port of
// the account's last session, so a saved connection works again; when
// another program holds it, a new port is chosen and the output says why,
// and the account's port is tried again the next time.
func TestAccessReusesThePort(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	w.account("app", w.pg.SCRAMUser)
	session := func(extra ...string) (port, why string) {
		t.Helper()
		p, url := w.access(w.admin, "app", extra...)
		m := stdoutLine(t, p, listeningLine) // printed before the URL
		if !strings.Contains(url, "127.0.0.1:"+m[1]+"/") {
			t.Fatalf("the URL %s is not on port %s", url, m[1])
		}
		if r := psql(t, false, url, "SELECT 'on-'||1"); r.Code != 0 || !strings.Contains(r.Out, "on-1") {
			t.Fatalf("psql on port %s: %d %s", m[1], r.Code, r.Out)
		}
		p.Stop(syscall.SIGINT)
		if code := p.Wait(t, 20*time.Second); code != 0 {
			t.Fatalf("db access exited %d", code)
		}
		return m[1], m[2]
	}
	first, why := session()
	if why != ", a new port" {
		t.Fatalf("first session: port %s%s", first, why)
	}
	again, why := session()
	if again != first || why != ", the same as last time for this account" {
		t.Fatalf("second session: port %s%s, want %s", again, why, first)
	}

	// Another program takes the port.
	blocker, err := net.Listen("tcp", "127.0.0.1:"+first)
	if err != nil {
		t.Fatal(err)
	}
	other, why := session()
	if want := fmt.Sprintf(": the last one (%s) is in use; it is tried again next time", first); other == first || why != want {
		t.Fatalf("with port %s taken: port %s%s, want %q", first, other, why, want)
	}
	// --port on a busy port is an error that says what to do.
	_, stderr, code := w.admin.Run("", "db", "access", "--project-id", w.project, "--resource", "main-db", "--account", "app",
		"--domain", w.srv.URL, "--port", first)
	if code == 0 || !strings.Contains(stderr, "--port "+first+": another program listens on 127.0.0.1:"+first+" already: pick another port with --port, or omit --port") {
		t.Fatalf("--port %s taken: exit %d %s", first, code, stderr)
	}
	blocker.Close()
	back, why := session()
	if back != first || why != ", the same as last time for this account" {
		t.Fatalf("after the port was freed: port %s%s, want %s", back, why, first)
	}
	fi, err := os.Stat(filepath.Join(w.admin.Config, "ports.json"))
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("ports.json: %v %v", fi, err)
	}
}
