package e2e_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/pquerna/otp/totp"

	"github.com/airlockpam/airlock/internal/e2e"
)

// mfaWorld is a world with an account that requires MFA ("guarded") and an
// admin with TOTP enrolled through the CLI (no terminal: --code).
func mfaWorld(t *testing.T, serverArgs ...string) (w *world, secret string, recovery []string) {
	t.Helper()
	w = svNewWorld(t, serverArgs...)
	w.admin.Must(w.pg.SCRAMUser.Password, "accounts", "create", "--project-id", w.project, "--resource", "main-db", "--name", "guarded",
		"--username", w.pg.SCRAMUser.User, "--password-stdin", "--require-mfa")
	var en struct{ Secret, URI string }
	w.admin.JSON(&en, "", "mfa", "enroll", "totp")
	if en.Secret == "" || !strings.HasPrefix(en.URI, "otpauth://totp/") {
		t.Fatalf("enrollment %+v", en)
	}
	var conf struct{ RecoveryCodes []string }
	w.admin.JSON(&conf, "", "mfa", "enroll", "totp", "--code", totpCode(t, en.Secret, 0))
	if len(conf.RecoveryCodes) != 10 {
		t.Fatalf("%d recovery codes", len(conf.RecoveryCodes))
	}
	// Enrolling twice is refused.
	if _, errOut, code := w.admin.Run("", "mfa", "enroll", "totp"); code == 0 || !strings.Contains(errOut, "already enrolled") {
		t.Fatalf("enrolling twice: exit %d, %s", code, errOut)
	}
	return w, en.Secret, conf.RecoveryCodes
}

func totpCode(t *testing.T, secret string, steps int) string {
	t.Helper()
	c, err := totp.GenerateCode(secret, time.Now().Add(time.Duration(steps)*30*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// TestMFADBAccess: `db access` on an account that requires MFA, through the
// real binary: refused without a code and without a terminal, started with
// --mfa-code, and on a terminal after a wrong code (tries left shown) with
// a recovery code; the session records how MFA was passed. A user with no
// method on a server without SMTP is told it cannot send an email code.
func TestMFADBAccess(t *testing.T) {
	w, secret, recovery := mfaWorld(t)
	access := []string{"db", "access", "--project-id", w.project, "--resource", "main-db", "--account", "guarded", "--domain", w.srv.URL}

	_, errOut, code := w.admin.Run("", access...)
	if code == 0 || !strings.Contains(errOut, "MFA required") || !strings.Contains(errOut, "--mfa-code") {
		t.Fatalf("without a code or a terminal: exit %d, %s", code, errOut)
	}
	if _, errOut, code = w.admin.Run("", append(access, "--mfa-code", "000000")...); code == 0 || !strings.Contains(errOut, "wrong code; 2 tries left") {
		t.Fatalf("a wrong --mfa-code: exit %d, %s", code, errOut)
	}

	// The next step's code (the enrollment used this one's).
	p := w.admin.Start(append(access, "--mfa-code", totpCode(t, secret, 1))...)
	p.WaitLine(t, urlLine, 60*time.Second)
	p.Stop(syscall.SIGINT)
	p.Wait(t, 30*time.Second)

	// On a terminal: a wrong code, then a recovery code.
	ptm, out := startOnPTY(t, w.admin, access...)
	waitOutput(t, out, regexp.MustCompile(`authenticator app.*\n(?s:.*)Code: `), 60*time.Second)
	fmt.Fprintf(ptm, "000000\n")
	waitOutput(t, out, regexp.MustCompile(`wrong code; 2 tries left\n(?s:.*)Code: `), 30*time.Second)
	fmt.Fprintf(ptm, "%s\n", recovery[0])
	waitOutput(t, out, regexp.MustCompile(`(?m)^postgres://\S+@127\.0\.0\.1:\d+/`), 60*time.Second)

	// The session starts record how MFA was passed.
	var logs []struct {
		Action  string
		Details map[string]any
	}
	w.svAPIGet("/api/v1/audit-logs?action=session.start", &logs)
	var how []string
	for _, l := range logs {
		if l.Action == "session.start" {
			how = append(how, fmt.Sprint(l.Details["mfa"]))
		}
	}
	if strings.Join(how, ",") != "recovery,totp" && strings.Join(how, ",") != "totp,recovery" {
		b, _ := json.Marshal(logs)
		t.Fatalf("session.start entries say MFA was passed by %v; want totp and recovery: %s", how, b)
	}

	// A member with no method, on a server without SMTP.
	bob := w.svMember("bob@example.com", "member")
	_, errOut, code = bob.Run("", "db", "access", "--project-id", w.project, "--resource", "main-db", "--account", "guarded", "--domain", w.srv.URL)
	if code == 0 || !strings.Contains(errOut, "cannot send email") || !strings.Contains(errOut, "airlock mfa enroll totp") {
		t.Fatalf("no method, no SMTP: exit %d, %s", code, errOut)
	}
	st := w.admin.Must("", "mfa", "status")
	if !strings.Contains(st, "totp") || !strings.Contains(st, "9") {
		t.Fatalf("status:\n%s", st)
	}

	// MFA at login: a script passes --mfa-code; a terminal is asked.
	w.admin.Must("", "org", "update", "--require-mfa-login")
	again := e2e.NewUser(t)
	if _, errOut, code := again.Run(w.srv.AdminPassword, "login", "--domain", w.srv.URL, "--email", w.srv.AdminEmail, "--password-stdin"); code == 0 ||
		!strings.Contains(errOut, "MFA required") || !strings.Contains(errOut, "--mfa-code") {
		t.Fatalf("login without a code: exit %d, %s", code, errOut)
	}
	again.Must(w.srv.AdminPassword, "login", "--domain", w.srv.URL, "--email", w.srv.AdminEmail, "--password-stdin", "--mfa-code", recovery[1])
	third := e2e.NewUser(t)
	ptm, out = startOnPTY(t, third, "login", "--domain", w.srv.URL, "--email", w.srv.AdminEmail)
	waitOutput(t, out, regexp.MustCompile(`Password: `), 30*time.Second)
	fmt.Fprintf(ptm, "%s\n", w.srv.AdminPassword)
	waitOutput(t, out, regexp.MustCompile(`authenticator app(?s:.*)Code: `), 30*time.Second)
	fmt.Fprintf(ptm, "000000\n")
	waitOutput(t, out, regexp.MustCompile(`wrong code; 2 tries left`), 30*time.Second)
	fmt.Fprintf(ptm, "%s\n", recovery[2])
	waitOutput(t, out, regexp.MustCompile(`Logged in to `), 30*time.Second)
	// bob has no method and the server no SMTP: he cannot log in, and is told why.
	if _, errOut, code := e2e.NewUser(t).Run("password of bob@example.com", "login", "--domain", w.srv.URL, "--email", "bob@example.com", "--password-stdin"); code == 0 ||
		!strings.Contains(errOut, "cannot send email codes") || !strings.Contains(errOut, "ask an organization admin") {
		t.Fatalf("bob's login: exit %d, %s", code, errOut)
	}
}

// waitOutput waits until out matches re.
func waitOutput(t *testing.T, out *lockedOutput, re *regexp.Regexp, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		if re.MatchString(out.String()) {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("no %q in the output:\n%s", re, out.String())
}

// startOnPTY runs airlock as u with a terminal as its stdin, and returns
// the terminal (to type into) and the command's output. The process is
// killed when the test ends.
func startOnPTY(t *testing.T, u *e2e.User, args ...string) (*os.File, *lockedOutput) {
	t.Helper()
	ptm, pts := openPTY(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	cmd := exec.CommandContext(ctx, e2e.Bin, args...)
	cmd.Env = append(os.Environ(), "AIRLOCK_CONFIG_DIR="+u.Config)
	cmd.Stdin = pts
	out := &lockedOutput{}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		cancel()
		t.Fatal(err)
	}
	pts.Close()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGINT)
		done := make(chan struct{})
		go func() { _ = cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(20 * time.Second):
			_ = cmd.Process.Kill()
			<-done
		}
		cancel()
	})
	go io.Copy(io.Discard, ptm)
	return ptm, out
}
