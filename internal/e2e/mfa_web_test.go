package e2e_test

import (
	"context"
	"fmt"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/cdproto/webauthn"
	"github.com/chromedp/chromedp"

	"github.com/airlockpam/airlock/internal/e2e"
	"github.com/airlockpam/airlock/internal/testenv"
)

// guardedAccount adds the account "guarded" (require MFA) to the world's
// main-db and returns its id.
func (w *world) guardedAccount() {
	w.t.Helper()
	w.admin.Must(w.pg.SCRAMUser.Password, "accounts", "create", "--project-id", w.project, "--resource", "main-db", "--name", "guarded",
		"--username", w.pg.SCRAMUser.User, "--password-stdin", "--require-mfa")
}

// enrollTOTPInBrowser sets TOTP up on /mfa and returns its secret; the
// recovery codes are shown once.
func enrollTOTPInBrowser(t *testing.T, b *webBrowser) string {
	t.Helper()
	b.open("/mfa", "#totp-start")
	b.do(submit(chromedp.ID("totp-start")), chromedp.WaitVisible(chromedp.ID("totp-qr")))
	secret := strings.TrimSpace(b.text("#totp-secret"))
	if !strings.Contains(b.html(), "<svg") || len(secret) < 16 {
		t.Fatalf("the enrollment shows no QR code or secret: %q", secret)
	}
	// A wrong first code is refused and the QR code is shown again.
	b.do(chromedp.SendKeys(chromedp.ID("totp-code"), "000000"), submit(chromedp.ID("totp-confirm-button")),
		chromedp.WaitVisible(chromedp.ID("error")))
	if got := b.text("#error"); !strings.Contains(got, "does not match") || !b.has("#totp-qr") {
		t.Fatalf("a wrong first code: %q", got)
	}
	b.do(chromedp.SendKeys(chromedp.ID("totp-code"), totpCode(t, secret, 0)), submit(chromedp.ID("totp-confirm-button")),
		chromedp.WaitVisible(chromedp.ID("recovery-codes")))
	if n := strings.Count(b.html(), "<li><code>"); n != 10 {
		t.Fatalf("%d recovery codes shown; want 10", n)
	}
	if got := b.text("#mfa-methods"); got != "totp" {
		t.Fatalf("methods %q", got)
	}
	return secret
}

// TestWebMFATOTP: TOTP enrolled on the /mfa page (QR code, a wrong then a
// right first code, ten recovery codes once); Web Access to an account
// that requires MFA then asks for a code, refuses a wrong one with the
// tries left, and opens the console with the right one; the session
// records that MFA was passed with TOTP.
func TestWebMFATOTP(t *testing.T) {
	w := svNewWorld(t)
	w.guardedAccount()
	b := newWebBrowser(t, w.srv.URL)
	b.login(w.srv.AdminEmail, w.srv.AdminPassword)
	secret := enrollTOTPInBrowser(t, b)

	b.open("/projects/"+w.project+"/resources/main-db", `tr[data-account="guarded"]`)
	b.do(submit(chromedp.ID("web-access-guarded")), chromedp.WaitVisible(chromedp.ID("mfa-code")))
	if got := b.text("#mfa-detail"); !strings.Contains(got, "authenticator app") {
		t.Fatalf("the MFA step says %q", got)
	}
	b.do(chromedp.SendKeys(chromedp.ID("mfa-code"), "000000"), submit(chromedp.ID("mfa-submit")), chromedp.WaitVisible(chromedp.ID("error")))
	if got := b.text("#error"); !strings.Contains(got, "2 tries left") {
		t.Fatalf("a wrong code: %q", got)
	}
	// The enrollment used this step's code: the next step's.
	b.do(chromedp.SendKeys(chromedp.ID("mfa-code"), totpCode(t, secret, 1)), submit(chromedp.ID("mfa-submit")),
		chromedp.WaitVisible(chromedp.ID("sql")))
	sid := strings.TrimSpace(b.text("#console-session"))
	var logs []struct {
		Action  string
		Details map[string]any
	}
	w.svAPIGet("/api/v1/audit-logs?action=session.start", &logs)
	found := false
	for _, l := range logs {
		if l.Action == "session.start" && fmt.Sprint(l.Details["mfa"]) == "totp" {
			found = true
		}
	}
	if !found {
		t.Fatalf("no session.start with mfa=totp for %s: %+v", sid, logs)
	}
}

// addVirtualAuthenticator gives the browser a platform authenticator
// (CTAP2, resident keys, user verification) that says yes at once.
func addVirtualAuthenticator(t *testing.T, b *webBrowser) {
	t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, 30*time.Second)
	defer cancel()
	no := false
	if _, err := chromedp.Call(ctx, webauthn.Enable, webauthn.EnableParams{EnableUI: &no}); err != nil {
		t.Fatalf("WebAuthn.enable: %v", err)
	}
	if _, err := chromedp.Call(ctx, webauthn.AddVirtualAuthenticator, webauthn.AddVirtualAuthenticatorParams{Options: &webauthn.VirtualAuthenticatorOptions{
		Protocol: webauthn.AuthenticatorProtocolCtap2, Transport: webauthn.AuthenticatorTransportInternal, HasResidentKey: true,
		HasUserVerification: true, IsUserVerified: true, AutomaticPresenceSimulation: true}}); err != nil {
		t.Fatalf("WebAuthn.addVirtualAuthenticator: %v", err)
	}
}

// localhostURL is the server's URL with localhost for 127.0.0.1: the
// origin passkeys are bound to (browsers take no IP address as a relying
// party), and the server's default public URL.
func localhostURL(u string) string { return strings.Replace(u, "://127.0.0.1:", "://localhost:", 1) }

// TestWebMFAPasskey: a passkey added on /mfa with Chromium's virtual
// authenticator; the organization enforces passkeys; `db access` through
// the real binary (AIRLOCK_NO_BROWSER=1) prints the approval link and
// waits; the browser approves it with the passkey; the CLI goes on and
// psql connects. Web Access and, with MFA at sign-in, the sign-in take the
// passkey in their MFA step, and `airlock login` waits for the approval of
// its link. The approval page of another user's challenge
// is refused.
func TestWebMFAPasskey(t *testing.T) {
	w := svNewWorld(t)
	w.guardedAccount()
	b := newWebBrowser(t, localhostURL(w.srv.URL))
	addVirtualAuthenticator(t, b)
	b.login(w.srv.AdminEmail, w.srv.AdminPassword)
	b.open("/mfa", "#passkey-add")
	b.do(chromedp.SendKeys(chromedp.ID("passkey-name"), "virtual"), chromedp.Click(chromedp.ID("passkey-add")),
		chromedp.WaitVisible(chromedp.ID("passkey-recovery")))
	if n := strings.Count(b.html(), "<li><code>"); n != 10 {
		t.Fatalf("%d recovery codes shown; want 10\n%s", n, b.pageText())
	}
	b.open("/mfa", "#passkey-list")
	if got := b.text("#passkey-list"); !strings.Contains(got, "virtual") {
		t.Fatalf("the passkey list shows %q", got)
	}
	w.admin.Must("", "org", "update", "--mfa-method", "webauthn")
	// The last passkey, while the organization enforces passkeys, cannot be
	// removed (proved with the passkey itself).
	b.do(chromedp.Click(chromedp.ID("passkey-remove-virtual")), chromedp.WaitVisible(chromedp.ID("passkey-error")))
	if got := b.text("#passkey-error"); !strings.Contains(got, "last one") {
		t.Fatalf("removing the last passkey: %q", got)
	}

	w.admin.Env = append(w.admin.Env, "AIRLOCK_NO_BROWSER=1")
	p := w.admin.Start("db", "access", "--project-id", w.project, "--resource", "main-db", "--account", "guarded", "--domain", w.srv.URL)
	approval := regexp.MustCompile(`http://localhost:\d+/mfa/approve/[0-9a-f-]{36}`)
	var link string
	for deadline := time.Now().Add(60 * time.Second); link == ""; {
		link = approval.FindString(p.Stderr())
		if link == "" && time.Now().After(deadline) {
			t.Fatalf("no approval link:\n%s", p.Stderr())
		}
		time.Sleep(100 * time.Millisecond)
	}
	if !strings.Contains(p.Stderr(), "Waiting for the approval") {
		t.Fatalf("the CLI does not say it waits:\n%s", p.Stderr())
	}
	b.open(strings.TrimPrefix(link, localhostURL(w.srv.URL)), "#passkey-approve")
	b.do(chromedp.Click(chromedp.ID("passkey-approve")), chromedp.WaitVisible(chromedp.ID("passkey-done")))
	line := p.WaitLine(t, urlLine, 60*time.Second)
	if r := psql(t, false, line, "select current_user"); r.Code != 0 || !strings.Contains(r.Out, w.pg.SCRAMUser.User) {
		t.Fatalf("psql through the approved session: %+v", r)
	}
	// The approval page now says the challenge is used.
	b.open(strings.TrimPrefix(link, localhostURL(w.srv.URL)), "#approve-status")
	if got := b.text("#approve-status"); !strings.Contains(got, "used") {
		t.Fatalf("the approval page says %q", got)
	}
	// Another user cannot see it.
	w.svMember("bob@example.com", "member")
	bob := newWebBrowser(t, localhostURL(w.srv.URL))
	bob.login("bob@example.com", "password of bob@example.com")
	bob.open(strings.TrimPrefix(link, localhostURL(w.srv.URL)), "#error")
	if got := bob.text("#error"); !strings.Contains(got, "no such MFA challenge") {
		t.Fatalf("bob's view of the admin's challenge: %q", got)
	}
	// Web Access asks for the passkey in its MFA step, then opens the console.
	b.open("/projects/"+w.project+"/resources/main-db", `tr[data-account="guarded"]`)
	b.do(submit(chromedp.ID("web-access-guarded")), chromedp.WaitVisible(chromedp.ID("passkey-approve")))
	b.do(chromedp.Click(chromedp.ID("passkey-approve")), chromedp.WaitVisible(chromedp.ID("sql")))
	// With MFA at sign-in, the sign-in asks for the passkey after the password.
	w.admin.Must("", "org", "update", "--require-mfa-login")
	b.do(submit(chromedp.ID("logout")), chromedp.WaitVisible(chromedp.ID("login-form")))
	b.do(chromedp.SendKeys(chromedp.ID("email"), w.srv.AdminEmail), chromedp.SendKeys(chromedp.ID("password"), w.srv.AdminPassword),
		submit(chromedp.ID("sign-in")), chromedp.WaitVisible(chromedp.ID("passkey-approve")))
	b.do(chromedp.Click(chromedp.ID("passkey-approve")), chromedp.WaitVisible(chromedp.ID("signed-in")))
	// `airlock login` on a terminal prints the approval link; approved in
	// the signed-in browser, Enter completes the login.
	cli := e2e.NewUser(t)
	cli.Env = append(cli.Env, "AIRLOCK_NO_BROWSER=1")
	ptm, out := startOnPTY(t, cli, "login", "--domain", w.srv.URL, "--email", w.srv.AdminEmail)
	waitOutput(t, out, regexp.MustCompile(`Password: `), 30*time.Second)
	fmt.Fprintf(ptm, "%s\n", w.srv.AdminPassword)
	waitOutput(t, out, regexp.MustCompile(`Press Enter once approved`), 30*time.Second)
	fmt.Fprintf(ptm, "\n") // not approved yet
	waitOutput(t, out, regexp.MustCompile(`Not approved yet(?s:.*)Press Enter once approved`), 30*time.Second)
	loginLink := approval.FindAllString(out.String(), -1)
	if len(loginLink) == 0 {
		t.Fatalf("no approval link in the login's output:\n%s", out.String())
	}
	b.open(strings.TrimPrefix(loginLink[0], localhostURL(w.srv.URL)), "#passkey-approve")
	b.do(chromedp.Click(chromedp.ID("passkey-approve")), chromedp.WaitVisible(chromedp.ID("passkey-done")))
	fmt.Fprintf(ptm, "\n")
	waitOutput(t, out, regexp.MustCompile(`Logged in to `), 30*time.Second)

	var logs []struct {
		Action  string
		Details map[string]any
	}
	w.admin.JSON(&logs, "", "audit", "list", "--action", "mfa.verify", "--output", "json")
	passkeyVerifies := 0
	for _, l := range logs {
		if l.Action == "mfa.verify" && fmt.Sprint(l.Details["method"]) == "webauthn" {
			passkeyVerifies++
		}
	}
	if passkeyVerifies != 4 {
		t.Fatalf("%d mfa.verify entries with method webauthn; want 4 (db access, Web Access, web sign-in, CLI login): %+v", passkeyVerifies, logs)
	}
}

// TestWebMFAEnrollAtSignIn: the organization requires MFA at sign-in; a
// user without a method signs in with an emailed code (mailpit) and is led
// to the MFA page to enroll; once TOTP is on, the next sign-in asks for its
// code; a wrong code shows the tries left.
func TestWebMFAEnrollAtSignIn(t *testing.T) {
	mp := testenv.StartMailpit(t)
	w := svNewWorld(t, "--smtp-url", fmt.Sprintf("smtp://airlock:mail-pw@%s:%d?from=airlock@example.com", mp.SMTPHost, mp.SMTPPort))
	w.svMember("bob@example.com", "member")
	w.admin.Must("", "org", "update", "--require-mfa-login")

	b := newWebBrowser(t, w.srv.URL)
	b.open("/login", "#login-form")
	b.do(chromedp.SendKeys(chromedp.ID("email"), "bob@example.com"), chromedp.SendKeys(chromedp.ID("password"), "password of bob@example.com"),
		submit(chromedp.ID("sign-in")), chromedp.WaitVisible(chromedp.ID("mfa-code")))
	if got := b.text("#mfa-detail"); !strings.Contains(got, "emailed to bob@example.com") {
		t.Fatalf("the sign-in's MFA step says %q", got)
	}
	msg := mp.WaitForMessage(t, 30*time.Second, func(m testenv.Message) bool { return len(m.To) == 1 && m.To[0].Address == "bob@example.com" })
	code := regexp.MustCompile(`\b\d{6}\b`).FindString(mp.Text(t, msg.ID))
	b.do(chromedp.SendKeys(chromedp.ID("mfa-code"), code), submit(chromedp.ID("mfa-submit")), chromedp.WaitVisible(chromedp.ID("totp-start")))
	if got := b.text("#notice"); !strings.Contains(got, "requires a second factor at sign-in") {
		t.Fatalf("after the sign-in bob sees %q", got)
	}
	secret := enrollTOTPInBrowser(t, b)

	b.do(submit(chromedp.ID("logout")), chromedp.WaitVisible(chromedp.ID("login-form")))
	b.do(chromedp.SendKeys(chromedp.ID("email"), "bob@example.com"), chromedp.SendKeys(chromedp.ID("password"), "password of bob@example.com"),
		submit(chromedp.ID("sign-in")), chromedp.WaitVisible(chromedp.ID("mfa-code")))
	if got := b.text("#mfa-detail"); !strings.Contains(got, "authenticator app") {
		t.Fatalf("the second sign-in asks %q", got)
	}
	b.do(chromedp.SendKeys(chromedp.ID("mfa-code"), "000000"), submit(chromedp.ID("mfa-submit")), chromedp.WaitVisible(chromedp.ID("error")))
	if got := b.text("#error"); !strings.Contains(got, "2 tries left") {
		t.Fatalf("a wrong code at sign-in: %q", got)
	}
	b.do(chromedp.SendKeys(chromedp.ID("mfa-code"), totpCode(t, secret, 1)), submit(chromedp.ID("mfa-submit")),
		chromedp.WaitVisible(chromedp.ID("signed-in")))
	if got := b.text("#signed-in"); got != "bob@example.com" {
		t.Fatalf("signed in as %q", got)
	}
}
