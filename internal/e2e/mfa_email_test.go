package e2e_test

import (
	"fmt"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/airlockpam/airlock/internal/e2e"
	"github.com/airlockpam/airlock/internal/testenv"
)

// TestMFAEmailCode: a user without a method of their own gets an email code
// (read from mailpit, through the server's --smtp-url) when `db access` on
// a terminal opens an account that requires MFA; the code is not in the
// server's log.
func TestMFAEmailCode(t *testing.T) {
	mp := testenv.StartMailpit(t)
	w := svNewWorld(t, "--smtp-url", fmt.Sprintf("smtp://airlock:mail-pw@%s:%d?from=airlock@example.com", mp.SMTPHost, mp.SMTPPort))
	w.admin.Must(w.pg.SCRAMUser.Password, "accounts", "create", "--project-id", w.project, "--resource", "main-db", "--name", "guarded",
		"--username", w.pg.SCRAMUser.User, "--password-stdin", "--require-mfa")
	bob := w.svMember("bob@example.com", "member")

	ptm, out := startOnPTY(t, bob, "db", "access", "--project-id", w.project, "--resource", "main-db", "--account", "guarded", "--domain", w.srv.URL)
	waitOutput(t, out, regexp.MustCompile(`code was emailed to bob@example\.com(?s:.*)Code: `), 60*time.Second)
	msg := mp.WaitForMessage(t, 30*time.Second, func(m testenv.Message) bool {
		return len(m.To) == 1 && m.To[0].Address == "bob@example.com"
	})
	code := regexp.MustCompile(`\b\d{6}\b`).FindString(mp.Text(t, msg.ID))
	if code == "" {
		t.Fatalf("no code in the mail: %q", mp.Text(t, msg.ID))
	}
	fmt.Fprintf(ptm, "%s\n", code)
	waitOutput(t, out, regexp.MustCompile(`(?m)^postgres://\S+@127\.0\.0\.1:\d+/`), 60*time.Second)
	if log := w.srv.Proc.Stderr() + w.srv.Proc.Stdout(); strings.Contains(log, code) || strings.Contains(log, "mail-pw") {
		t.Fatalf("the server's log holds the code or the SMTP password:\n%s", log)
	}

	// An organization admin sets the enforced method and MFA at login; org
	// get shows them.
	w.admin.Must("", "org", "update", "--mfa-method", "email", "--require-mfa-login")
	if got := w.admin.Must("", "org", "get"); !strings.Contains(got, "email") || !strings.Contains(got, "true") {
		t.Fatalf("org get:\n%s", got)
	}
	// bob logs in with an email code and is led to enroll a method.
	mp.DeleteAll(t)
	ptm, out = startOnPTY(t, e2e.NewUser(t), "login", "--domain", w.srv.URL, "--email", "bob@example.com")
	waitOutput(t, out, regexp.MustCompile(`Password: `), 30*time.Second)
	fmt.Fprintf(ptm, "password of bob@example.com\n")
	waitOutput(t, out, regexp.MustCompile(`code was emailed to bob@example\.com(?s:.*)Code: `), 30*time.Second)
	msg = mp.WaitForMessage(t, 30*time.Second, func(m testenv.Message) bool { return len(m.To) == 1 && m.To[0].Address == "bob@example.com" })
	fmt.Fprintf(ptm, "%s\n", regexp.MustCompile(`\b\d{6}\b`).FindString(mp.Text(t, msg.ID)))
	waitOutput(t, out, regexp.MustCompile(`Logged in to (?s:.*)airlock mfa enroll totp`), 30*time.Second)
}
