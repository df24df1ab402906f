package e2e_test

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/airlockpam/airlock/internal/testenv"
)

// TestCLIProxyServesOnlyItsOwner: another OS user (nobody) is refused by
// the proxy with the reason in psql's own output, and never reaches the
// database, while the owner's psql works; the proxy warns about it.
func TestCLIProxyServesOnlyItsOwner(t *testing.T) {
	w := newWorld(t)
	w.account("app", w.pg.SCRAMUser)
	p, url := w.access(w.admin, "app")

	own := psql(t, false, url, "SELECT 'owner-was-here'")
	if own.Code != 0 || !strings.Contains(own.Out, "owner-was-here") {
		t.Fatalf("the owner's psql: exit %d: %s", own.Code, own.Out)
	}
	other := psql(t, true, url, "INSERT INTO items VALUES (666, 'nobody-was-here')")
	if other.Code == 0 {
		t.Fatalf("nobody's psql succeeded: %s", other.Out)
	}
	for _, want := range []string{"FATAL", "airlock: this proxy serves only root (uid 0), who started `airlock db access`; you are nobody (uid 65534)"} {
		if !strings.Contains(other.Out, want) {
			t.Errorf("nobody's psql output lacks %q:\n%s", want, other.Out)
		}
	}
	waitStderr(t, p, regexp.MustCompile(`Warning: refused a connection from nobody \(uid 65534\): this proxy serves only root \(uid 0\)`), 10*time.Second)

	// The owner still works after the refusal, and nobody's statement
	// never ran.
	own = psql(t, false, url, "SELECT count(*) FROM items WHERE id = 666")
	if own.Code != 0 || strings.TrimSpace(own.Out) != "0" {
		t.Fatalf("after the refusal: exit %d: %q", own.Code, own.Out)
	}
	if p.Exited() {
		t.Fatalf("db access exited: %s", p.Stderr())
	}
}

// TestCLIProxyAllowOtherLocalUsers: the explicit opt-out lets nobody in,
// with a warning.
func TestCLIProxyAllowOtherLocalUsers(t *testing.T) {
	w := newWorld(t)
	w.account("app", w.pg.SCRAMUser)
	p, url := w.access(w.admin, "app", "--allow-other-local-users")
	waitStderr(t, p, regexp.MustCompile(`Warning: --allow-other-local-users is set`), 10*time.Second)
	if strings.Contains(p.Stdout(), "Only your OS user") {
		t.Fatalf("with the opt-out the proxy claims to serve only its owner:\n%s", p.Stdout())
	}
	if r := psql(t, true, url, "SELECT 'nobody-allowed'"); r.Code != 0 || !strings.Contains(r.Out, "nobody-allowed") {
		t.Fatalf("nobody's psql with the opt-out: exit %d: %s", r.Code, r.Out)
	}
}

var socketLine = regexp.MustCompile(`^host=(\S+) port=(\d+) user=(\S+) dbname=(\S+)$`)

// TestCLIUnixSocket: --unix-socket DIR serves psql through
// DIR/.s.PGSQL.<port> with mode 0600 (nobody cannot even connect), and the
// file is removed when the session ends.
func TestCLIUnixSocket(t *testing.T) {
	w := newWorld(t)
	w.account("app", w.pg.SCRAMUser)
	// A directory every user may enter, so that only the socket's own
	// mode keeps nobody out.
	dir, err := os.MkdirTemp("", "airlock-sock")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	p := w.admin.Start("db", "access", "--project-id", w.project, "--resource", "main-db", "--account", "app",
		"--unix-socket", dir, "--port", "6543")
	line := p.WaitLine(t, socketLine, time.Minute)
	m := socketLine.FindStringSubmatch(line)
	if m[1] != dir || m[2] != "6543" || m[3] != w.pg.SCRAMUser.User || m[4] != testenv.AppDatabase {
		t.Fatalf("connection line %q", line)
	}
	sock := filepath.Join(dir, ".s.PGSQL.6543")
	fi, err := os.Stat(sock)
	if err != nil || fi.Mode()&os.ModeSocket == 0 || fi.Mode().Perm() != 0o600 {
		t.Fatalf("socket %s: %v %v", sock, fi, err)
	}
	if strings.Contains(p.Stdout(), "127.0.0.1") {
		t.Fatalf("with --unix-socket the proxy printed a TCP address:\n%s", p.Stdout())
	}

	if r := psql(t, false, line, "SELECT 'through-the-socket'"); r.Code != 0 || !strings.Contains(r.Out, "through-the-socket") {
		t.Fatalf("psql %q: exit %d: %s", line, r.Code, r.Out)
	}
	if r := psql(t, true, line, "SELECT 1"); r.Code == 0 || !strings.Contains(r.Out, "Permission denied") {
		t.Fatalf("nobody's psql through the socket: exit %d: %s", r.Code, r.Out)
	}

	p.Stop(syscall.SIGINT)
	if code := p.Wait(t, 30*time.Second); code != 0 {
		t.Fatalf("db access exited %d: %s", code, p.Stderr())
	}
	if _, err := os.Lstat(sock); !os.IsNotExist(err) {
		t.Fatalf("the socket file outlived the session: %v", err)
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 0 {
		t.Fatalf("files left in the socket directory: %v", entries)
	}
}
