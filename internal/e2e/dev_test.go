package e2e_test

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/airlockpam/airlock/internal/e2e"
	"github.com/airlockpam/airlock/internal/keyring"
	"github.com/airlockpam/airlock/internal/testenv"
)

// devNext matches the last line of `airlock dev`'s banner.
var devNext = regexp.MustCompile(`^Next:  airlock login --domain (\S+) --email (\S+)$`)

// startDev runs `airlock dev` on dataDir and a free port, and waits for its
// banner; it returns the process and its URL.
func startDev(t *testing.T, dataDir string) (*e2e.Process, string) {
	t.Helper()
	p := e2e.Start(t, nil, "dev", "--data-dir", dataDir, "--listen", e2e.FreeAddr(t))
	m := devNext.FindStringSubmatch(p.WaitLine(t, devNext, 60*time.Second))
	return p, m[1]
}

// TestDevRefusesASecondOnTheSameDataDirectory: a second `airlock dev` (or
// an `airlock server`) on the data directory of a running `airlock dev`
// refuses to start, names the process that holds it, and leaves it alone;
// once that process is gone, even killed, the directory can be used again.
func TestDevRefusesASecondOnTheSameDataDirectory(t *testing.T) {
	dataDir := filepath.Join(t.TempDir(), "dev")
	first, url := startDev(t, dataDir)
	u := e2e.NewUser(t)
	want := fmt.Sprintf("another airlock dev (pid %d) is using the data directory %s: stop it, or pass another --data-dir",
		first.Cmd.Process.Pid, dataDir)
	for _, args := range [][]string{
		{"dev", "--data-dir", dataDir, "--listen", e2e.FreeAddr(t)},
		{"server", "--data-dir", dataDir, "--listen", e2e.FreeAddr(t)},
	} {
		u.Env = []string{"AIRLOCK_ROOT_KEY=" + keyring.GenerateRootKey()}
		out, errOut, code := u.Run("", args...)
		if code != 1 || !strings.Contains(errOut, want) {
			t.Fatalf("airlock %s: exit %d\nstdout: %s\nstderr: %s", strings.Join(args, " "), code, out, errOut)
		}
	}
	u.Env = nil
	if first.Exited() {
		t.Fatalf("the first airlock dev stopped: %s", first.Stderr())
	}
	e2e.WaitReady(t, url)

	// Killed, it leaves no lock behind.
	first.Stop(syscall.SIGKILL)
	startDev(t, dataDir)
}

// devAdminPassword reads the admin's password from the banner of a first
// `airlock dev`.
func devAdminPassword(t *testing.T, p *e2e.Process) string {
	t.Helper()
	m := regexp.MustCompile(`(?m)^  Password:  (\S+)$`).FindStringSubmatch(p.Stdout())
	if m == nil {
		t.Fatalf("no password in the banner:\n%s", p.Stdout())
	}
	return m[1]
}

// TestAdminResetPassword: an operator with the data directory resets a lost
// admin password while `airlock dev` runs: the old password and every login
// of the admin stop working, the admin's live session ends, the new
// password logs in, and the audit log records the reset and still
// verifies. Bad input (a weak password, the wrong root key, an unknown
// email, a store that is not there) changes nothing.
func TestAdminResetPassword(t *testing.T) {
	dataDir := filepath.Join(t.TempDir(), "dev")
	dev, url := startDev(t, dataDir)
	oldPW := devAdminPassword(t, dev)
	const email, newPW = "admin@airlock.local", "the new admin password 7"
	admin := e2e.NewUser(t)
	admin.Must(oldPW, "login", "--domain", url, "--email", email, "--password-stdin")

	// A live session of the admin, through the built-in gateway.
	pg := testenv.StartPostgres(t)
	caFile := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(caFile, pg.CA.CertPEM, 0o644); err != nil {
		t.Fatal(err)
	}
	admin.Must("", "projects", "create", "payments")
	admin.Must("", "resources", "create", "postgres", "--project-id", "payments", "--name", "main-db", "--gateway", "local",
		"--host", "127.0.0.1", "--port", fmt.Sprint(pg.Port), "--database", testenv.AppDatabase, "--ssl-ca-file", caFile)
	admin.Must(pg.SCRAMUser.Password, "accounts", "create", "--project-id", "payments", "--resource", "main-db", "--name", "app",
		"--username", pg.SCRAMUser.User, "--password-stdin")
	access := admin.Start("db", "access", "--project-id", "payments", "--resource", "main-db", "--account", "app",
		"--check-interval", "1s")
	connect(t, access.WaitLine(t, urlLine, 60*time.Second))
	session := sessionOf(t, access)
	audits := func() int {
		return strings.Count(admin.Must("", "audit", "list", "--action", "user.reset_password"), "user.reset_password")
	}

	op := e2e.NewUser(t)
	pwFile := filepath.Join(t.TempDir(), "pw")
	os.WriteFile(pwFile, []byte(newPW+"\n"), 0o600)
	for _, tc := range []struct {
		env   []string
		stdin string
		args  []string
		want  string
	}{
		{nil, "too short", []string{"--data-dir", dataDir, "--email", email}, "the new password is refused"},
		{nil, newPW, []string{"--data-dir", dataDir, "--email", "someone@example.com"}, "no user has this email in this store"},
		{[]string{"AIRLOCK_ROOT_KEY=" + keyring.GenerateRootKey()}, newPW, []string{"--data-dir", dataDir, "--email", email},
			"is not the one this store was created with"},
		{nil, newPW, []string{"--data-dir", filepath.Join(t.TempDir(), "none"), "--email", email}, "no Airlock store in"},
		{nil, newPW, []string{"--email", email}, "give the store: --data-dir D"},
		{nil, "", []string{"--data-dir", dataDir, "--email", email, "--password", newPW}, "unknown flag: --password"},
	} {
		op.Env = tc.env
		out, errOut, code := op.Run(tc.stdin, append([]string{"admin", "reset-password"}, tc.args...)...)
		if code != 1 || !strings.Contains(errOut, tc.want) || strings.Contains(out+errOut, newPW) {
			t.Fatalf("reset-password %v: exit %d, want 1 and %q\nstdout: %s\nstderr: %s", tc.args, code, tc.want, out, errOut)
		}
	}
	op.Env = nil
	if n := audits(); n != 0 {
		t.Fatalf("a refused reset was audited (%d)", n)
	}
	if access.Exited() {
		t.Fatalf("a refused reset ended the session: %s", access.Stderr())
	}

	out := op.Must("", "admin", "reset-password", "--data-dir", dataDir, "--email", email, "--password-file", pwFile)
	if !strings.Contains(out, "The password of admin@airlock.local is reset") || !strings.Contains(out, "login was revoked") ||
		strings.Contains(out, newPW) {
		t.Fatalf("reset-password: %s", out)
	}
	// The admin's login and session end; the old password no longer logs in.
	if code := access.Wait(t, 30*time.Second); code == 0 {
		t.Fatalf("db access exited 0 after its login was revoked: %s", access.Stderr())
	}
	if _, errOut, code := admin.Run("", "projects", "list"); code == 0 || !strings.Contains(errOut, "revoked") {
		t.Fatalf("the admin's old login still works: exit %d %s", code, errOut)
	}
	if _, errOut, code := admin.Run(oldPW, "login", "--domain", url, "--email", email, "--password-stdin"); code == 0 {
		t.Fatalf("the old password still logs in: %s", errOut)
	}
	admin.Must(newPW, "login", "--domain", url, "--email", email, "--password-stdin")
	var s struct{ Status, EndReason string }
	admin.JSON(&s, "", "sessions", "show", session)
	if s.Status != "ended" || s.EndReason != "revoked" {
		t.Fatalf("the admin's session after the reset: %+v", s)
	}
	if n := audits(); n != 1 {
		t.Fatalf("%d user.reset_password entries, want 1", n)
	}
	if out := admin.Must("", "audit", "verify"); !strings.HasPrefix(out, "OK") {
		t.Fatalf("audit verify after the reset: %s", out)
	}
}

// TestDevSaysWhatItIsDoing: `airlock dev` says that it is starting before
// the store is opened, and says when its built-in gateway is connected,
// which is when sessions can start.
func TestDevSaysWhatItIsDoing(t *testing.T) {
	dataDir := filepath.Join(t.TempDir(), "dev")
	dev, url := startDev(t, dataDir)
	if first := strings.SplitN(dev.Stdout(), "\n", 2)[0]; !strings.HasPrefix(first, "Starting the server on ") ||
		!strings.Contains(first, dataDir) {
		t.Fatalf("the first line is %q", first)
	}
	dev.WaitLine(t, regexp.MustCompile(`^Ready: the built-in gateway local is connected\.$`), 30*time.Second)
	u := e2e.NewUser(t)
	u.Must(devAdminPassword(t, dev), "login", "--domain", url, "--email", "admin@airlock.local", "--password-stdin")
	if out := u.Must("", "gateways", "list"); !strings.Contains(out, "online") {
		t.Fatalf("ready, but the gateway is not online:\n%s", out)
	}
}
