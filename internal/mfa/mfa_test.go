package mfa

import (
	"bytes"
	"context"
	"database/sql"
	"errors"
	"log/slog"
	"net/http"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/pquerna/otp/totp"

	"github.com/airlockpam/airlock/internal/api"
	"github.com/airlockpam/airlock/internal/errs"
	"github.com/airlockpam/airlock/internal/keyring"
	"github.com/airlockpam/airlock/internal/store"
	"github.com/airlockpam/airlock/internal/testenv"
)

// fakeMailer keeps what it is asked to send, or fails.
type fakeMailer struct {
	mu   sync.Mutex
	sent []string // bodies
	fail error
}

func (m *fakeMailer) Send(_ context.Context, to, subject, body string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.fail != nil {
		return m.fail
	}
	m.sent = append(m.sent, to+"|"+body)
	return nil
}

var sixDigits = regexp.MustCompile(`\b\d{6}\b`)

func (m *fakeMailer) lastCode(t *testing.T) string {
	t.Helper()
	m.mu.Lock()
	defer m.mu.Unlock()
	if len(m.sent) == 0 {
		t.Fatal("no mail was sent")
	}
	c := sixDigits.FindString(m.sent[len(m.sent)-1])
	if c == "" {
		t.Fatalf("no code in %q", m.sent[len(m.sent)-1])
	}
	return c
}

type env struct {
	s     *Service
	db    *store.DB
	clock *testenv.Clock
	mail  *fakeMailer
}

// newEnv returns a service on a fresh store with organization "org" and
// users alice (an org admin) and bob.
func newEnv(t *testing.T) *env {
	t.Helper()
	db, kr := openStore(t)
	c := testenv.NewClock(time.Date(2026, 12, 3, 12, 0, 0, 0, time.UTC))
	m := &fakeMailer{}
	s, err := New(Config{DB: db, Keyring: kr, Mailer: m, Now: c.Now})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := db.Exec(`INSERT INTO organizations (id, name, created_at) VALUES ('org', 'org', 0)`); err != nil {
		t.Fatal(err)
	}
	for _, u := range []struct {
		id, email string
		admin     bool
	}{{"alice", "alice@example.com", true}, {"bob", "bob@example.com", false}} {
		if _, err := db.Exec(`INSERT INTO users (id, org_id, email, password_hash, org_admin, created_at, updated_at)
			VALUES ($1, 'org', $2, 'x', $3, 0, 0)`, u.id, u.email, u.admin); err != nil {
			t.Fatal(err)
		}
	}
	return &env{s: s, db: db, clock: c, mail: m}
}

// as returns a context for a user's login (family).
func as(id, family string) context.Context {
	return api.WithPrincipal(context.Background(), &api.Principal{Kind: api.SubjectUser, ID: id, OrgID: "org",
		Name: id + "@example.com", OrgAdmin: id == "alice", TokenFamily: family})
}

func (e *env) code(t *testing.T, secret string, at time.Time) string {
	t.Helper()
	c, err := totp.GenerateCodeCustom(secret, at, totpOpts)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// enroll enrolls TOTP for ctx's user and returns its secret and recovery codes.
func (e *env) enroll(t *testing.T, ctx context.Context) (string, []string) {
	t.Helper()
	en, err := e.s.EnrollTOTP(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(en.URI, "otpauth://totp/Airlock:") || !strings.Contains(en.URI, "secret="+en.Secret) {
		t.Fatalf("URI %q", en.URI)
	}
	c, err := e.s.ConfirmTOTP(ctx, e.code(t, en.Secret, e.clock.Now()))
	if err != nil {
		t.Fatal(err)
	}
	return en.Secret, c.RecoveryCodes
}

// challenge asks for access to account and returns the problem.
func (e *env) challenge(t *testing.T, ctx context.Context, account string) *RequiredError {
	t.Helper()
	method, err := e.s.Gate(ctx, account, account, "")
	var re *RequiredError
	if !errors.As(err, &re) {
		t.Fatalf("Gate = %q, %v; want a RequiredError", method, err)
	}
	if re.Status != http.StatusForbidden || re.Type != ProblemMFARequired || re.ChallengeID == "" || !errs.Is(err, errs.Forbidden) {
		t.Fatalf("problem %+v", re)
	}
	return re
}

func wantCode(t *testing.T, err error, code errs.Code, contains string) {
	t.Helper()
	if !errs.Is(err, code) {
		t.Fatalf("err = %v; want code %s", err, code)
	}
	if !strings.Contains(err.Error(), contains) {
		t.Fatalf("err = %v; want it to say %q", err, contains)
	}
}

func (e *env) audit(t *testing.T, action, outcome string) int {
	t.Helper()
	var n int
	if err := e.db.QueryRow(`SELECT COUNT(*) FROM audit_logs WHERE action = $1 AND outcome = $2`, action, outcome).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

func TestTOTPEnrollmentAndClock(t *testing.T) {
	e := newEnv(t)
	ctx := as("alice", "f1")
	secret, recovery := e.enroll(t, ctx)
	if len(recovery) != 10 {
		t.Fatalf("%d recovery codes; want 10", len(recovery))
	}
	var sealed []byte
	if err := e.db.QueryRow(`SELECT secret_enc FROM mfa_methods WHERE user_id = 'alice'`).Scan(&sealed); err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(sealed, []byte(secret)) {
		t.Fatal("the TOTP secret is stored in the clear")
	}
	if _, err := e.s.EnrollTOTP(ctx); !errs.Is(err, errs.Conflict) {
		t.Fatalf("enrolling twice: %v; want a conflict", err)
	}
	if e.audit(t, "mfa.enroll", "success") != 1 {
		t.Fatal("the enrollment is not audited")
	}

	// A code from 30 s ago works; the same code again does not.
	e.clock.Advance(2 * time.Minute)
	re := e.challenge(t, ctx, "acct-a")
	if re.Method != MethodTOTP {
		t.Fatalf("method %q; want totp (the user's own)", re.Method)
	}
	old := e.code(t, secret, e.clock.Now().Add(-30*time.Second))
	if v, err := e.s.VerifyChallenge(ctx, re.ChallengeID, old); err != nil || v.Method != MethodTOTP {
		t.Fatalf("a code from 30s ago: %v %v", v, err)
	}
	re2 := e.challenge(t, ctx, "acct-a")
	_, err := e.s.VerifyChallenge(ctx, re2.ChallengeID, old)
	wantCode(t, err, errs.Invalid, "2 tries left")
	// A code from 90 s ago does not work.
	_, err = e.s.VerifyChallenge(ctx, re2.ChallengeID, e.code(t, secret, e.clock.Now().Add(-90*time.Second)))
	wantCode(t, err, errs.Invalid, "1 try left")
	if _, err := e.s.VerifyChallenge(ctx, re2.ChallengeID, e.code(t, secret, e.clock.Now())); err != nil {
		t.Fatalf("the current code: %v", err)
	}
	// A recovery code works once.
	re3 := e.challenge(t, ctx, "acct-a")
	if v, err := e.s.VerifyChallenge(ctx, re3.ChallengeID, strings.ToUpper(recovery[0])); err != nil || v.Method != MethodRecovery {
		t.Fatalf("a recovery code: %v %v", v, err)
	}
	re4 := e.challenge(t, ctx, "acct-a")
	_, err = e.s.VerifyChallenge(ctx, re4.ChallengeID, recovery[0])
	wantCode(t, err, errs.Invalid, "wrong code")
	st, err := e.s.Status(ctx)
	if err != nil || len(st.Methods) != 1 || st.RecoveryCodesLeft != 9 {
		t.Fatalf("status %+v %v", st, err)
	}
}

func TestApprovalBinding(t *testing.T) {
	e := newEnv(t)
	ctx := as("alice", "f1")
	secret, _ := e.enroll(t, ctx)
	step := func() { e.clock.Advance(30 * time.Second) }
	approve := func(account string) string {
		t.Helper()
		step()
		re := e.challenge(t, ctx, account)
		if _, err := e.s.VerifyChallenge(ctx, re.ChallengeID, e.code(t, secret, e.clock.Now())); err != nil {
			t.Fatal(err)
		}
		return re.ChallengeID
	}
	refused := func(ctx context.Context, account, id string) {
		t.Helper()
		m, err := e.s.Gate(ctx, account, account, id)
		var re *RequiredError
		if !errors.As(err, &re) || !strings.Contains(re.Detail, "not valid") {
			t.Fatalf("Gate(%s, %s) = %q, %v; want a new challenge that says the approval is not valid", account, id, m, err)
		}
	}
	id := approve("A")
	refused(ctx, "B", id)               // another account
	refused(as("bob", "f2"), "A", id)   // another user
	refused(as("alice", "f9"), "A", id) // another login of the same user
	if m, err := e.s.Gate(ctx, "A", "A", id); err != nil || m != MethodTOTP {
		t.Fatalf("the right account: %q %v", m, err)
	}
	refused(ctx, "A", id) // single use

	id = approve("A")
	e.clock.Advance(5*time.Minute + time.Second)
	refused(ctx, "A", id) // expired

	// Another user's challenge, an unknown one, an expired one.
	re := e.challenge(t, ctx, "A")
	_, err := e.s.VerifyChallenge(as("bob", "f2"), re.ChallengeID, "123456")
	wantCode(t, err, errs.NotFound, "no such MFA challenge")
	_, err = e.s.VerifyChallenge(ctx, uuid.NewString(), "123456")
	wantCode(t, err, errs.NotFound, "no such MFA challenge")
	e.clock.Advance(6 * time.Minute)
	_, err = e.s.VerifyChallenge(ctx, re.ChallengeID, e.code(t, secret, e.clock.Now()))
	wantCode(t, err, errs.Conflict, "expired")

	// Challenges that ended a day ago are removed when the next is made.
	e.clock.Advance(25 * time.Hour)
	e.challenge(t, ctx, "A")
	var n int
	if err := e.db.QueryRow(`SELECT COUNT(*) FROM mfa_challenges WHERE user_id = 'alice'`).Scan(&n); err != nil || n != 1 {
		t.Fatalf("%d challenges left (%v); want only the new one", n, err)
	}

	// Machine identities are refused.
	mctx := api.WithPrincipal(context.Background(), &api.Principal{Kind: api.SubjectMachine, ID: "m", OrgID: "org", TokenFamily: "f"})
	_, err = e.s.Gate(mctx, "A", "A", "")
	wantCode(t, err, errs.Forbidden, "machine identities cannot pass")
}

func TestMethodChoiceAndEmail(t *testing.T) {
	e := newEnv(t)
	bob := as("bob", "f2")
	// No method of his own: an email code.
	re := e.challenge(t, bob, "A")
	if re.Method != MethodEmail || !strings.Contains(re.Detail, "bob@example.com") {
		t.Fatalf("%+v; want an email code sent to bob", re)
	}
	code := e.mail.lastCode(t)
	if _, err := e.s.VerifyChallenge(bob, re.ChallengeID, "000000"); err == nil && code != "000000" {
		t.Fatal("a wrong email code was accepted")
	}
	if v, err := e.s.VerifyChallenge(bob, re.ChallengeID, code); err != nil || v.Method != MethodEmail {
		t.Fatalf("the emailed code: %v %v", v, err)
	}
	// An email challenge allows 3 wrong codes.
	re = e.challenge(t, bob, "A")
	for i, want := range []string{"2 tries left", "1 try left", "no tries are left"} {
		_, err := e.s.VerifyChallenge(bob, re.ChallengeID, "99999"+string(rune('0'+i)))
		wantCode(t, err, errs.Invalid, want)
	}
	_, err := e.s.VerifyChallenge(bob, re.ChallengeID, e.mail.lastCode(t))
	wantCode(t, err, errs.Conflict, "used up")

	// The organization enforces TOTP: bob without it is told to enroll;
	// alice with it gets TOTP.
	admin := as("alice", "f1")
	if _, err := e.s.UpdateOrg(bob, ptr(MethodTOTP), nil); !errs.Is(err, errs.Forbidden) {
		t.Fatalf("a non-admin changed the policy: %v", err)
	}
	if _, err := e.s.UpdateOrg(admin, ptr(MethodWebAuthn), nil); !errs.Is(err, errs.Invalid) {
		t.Fatalf("webauthn enforced without passkey support: %v", err)
	}
	if o, err := e.s.UpdateOrg(admin, ptr(MethodTOTP), nil); err != nil || o.MFAMethod != MethodTOTP {
		t.Fatalf("%+v %v", o, err)
	}
	_, err = e.s.Gate(bob, "A", "A", "")
	wantCode(t, err, errs.Forbidden, "airlock mfa enroll totp")
	e.enroll(t, admin)
	if re := e.challenge(t, admin, "A"); re.Method != MethodTOTP {
		t.Fatalf("method %q; want totp", re.Method)
	}
	// Enforced email wins over alice's own TOTP.
	if _, err := e.s.UpdateOrg(admin, ptr(MethodEmail), nil); err != nil {
		t.Fatal(err)
	}
	if re := e.challenge(t, admin, "A"); re.Method != MethodEmail {
		t.Fatalf("method %q; want email (enforced)", re.Method)
	}
	if e.audit(t, "org.update", "success") != 2 || e.audit(t, "mfa.challenge", "success") != 4 {
		t.Fatal("policy changes and challenges are not all audited")
	}
}

func TestEmailCannotBeSent(t *testing.T) {
	e := newEnv(t)
	bob := as("bob", "f2")
	var logs bytes.Buffer
	prev := slog.Default()
	slog.SetDefault(slog.New(slog.NewTextHandler(&logs, nil)))
	t.Cleanup(func() { slog.SetDefault(prev) })
	e.mail.fail = errors.New("dial tcp 127.0.0.1:1: connection refused")
	_, err := e.s.Gate(bob, "A", "A", "")
	wantCode(t, err, errs.Unavailable, "could not be sent")
	if !strings.Contains(logs.String(), "connection refused") || sixDigits.MatchString(logs.String()) {
		t.Fatalf("the log should say why and hold no code:\n%s", logs.String())
	}
	// A server without SMTP says so.
	e.s.cfg.Mailer = nil
	_, err = e.s.Gate(bob, "A", "A", "")
	wantCode(t, err, errs.Unavailable, "cannot send email")
}

func TestDisableResetAndLockout(t *testing.T) {
	e := newEnv(t)
	alice := as("alice", "f1")
	secret, recovery := e.enroll(t, alice)
	if _, err := e.s.UpdateOrg(alice, ptr(MethodTOTP), nil); err != nil {
		t.Fatal(err)
	}
	err := e.s.Disable(alice, MethodTOTP, recovery[0])
	wantCode(t, err, errs.Conflict, "requires totp")
	if _, err := e.s.UpdateOrg(alice, ptr(MethodNone), nil); err != nil {
		t.Fatal(err)
	}
	err = e.s.Disable(alice, MethodTOTP, "000000")
	wantCode(t, err, errs.Invalid, "does not match")
	e.clock.Advance(time.Minute)
	if err := e.s.Disable(alice, MethodTOTP, e.code(t, secret, e.clock.Now())); err != nil {
		t.Fatal(err)
	}
	st, _ := e.s.Status(alice)
	if len(st.Methods) != 0 || st.RecoveryCodesLeft != 0 {
		t.Fatalf("after disabling the last method: %+v", st)
	}

	// Five wrong codes in a row lock MFA.
	bob := as("bob", "f2")
	e.enroll(t, bob)
	for i := 0; i < 5; i++ {
		re := e.challenge(t, bob, "A")
		_, _ = e.s.VerifyChallenge(bob, re.ChallengeID, "000000")
	}
	_, err = e.s.Gate(bob, "A", "A", "")
	wantCode(t, err, errs.Locked, "locked until")
	if e.audit(t, "mfa.lock", "success") != 1 || e.audit(t, "mfa.verify", "failure") != 5 {
		t.Fatal("the lockout is not audited")
	}
	// An admin resets bob (lost phone): methods gone, lock lifted.
	if err := e.s.Reset(bob, "bob"); !errs.Is(err, errs.Forbidden) {
		t.Fatalf("a non-admin reset: %v", err)
	}
	if err := e.s.Reset(alice, "nobody"); !errs.Is(err, errs.NotFound) {
		t.Fatalf("reset of an unknown user: %v", err)
	}
	if err := e.s.Reset(alice, "bob"); err != nil {
		t.Fatal(err)
	}
	st, _ = e.s.Status(bob)
	if len(st.Methods) != 0 || st.LockedUntil != nil {
		t.Fatalf("after reset: %+v", st)
	}
	if e.audit(t, "mfa.reset", "success") != 1 {
		t.Fatal("the reset is not audited")
	}
}

func ptr[T any](v T) *T { return &v }

// TestLoginGate: with MFA required at login, a right password gets a
// challenge; the code passes it once; a wrong code shows the tries left;
// the last method cannot be turned off.
func TestLoginGate(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	if m, err := e.s.LoginGate(ctx, "org", "bob", "bob@example.com", "", "", true); m != "" || err != nil {
		t.Fatalf("no policy: %q %v", m, err)
	}
	alice := as("alice", "f1")
	secret, _ := e.enroll(t, alice)
	if o, err := e.s.UpdateOrg(alice, nil, ptr(true)); err != nil || !o.RequireMFALogin || o.MFAMethod != MethodNone {
		t.Fatalf("%+v %v", o, err)
	}
	_, err := e.s.LoginGate(ctx, "org", "alice", "alice@example.com", "", "", true)
	var re *RequiredError
	if !errors.As(err, &re) || re.Method != MethodTOTP {
		t.Fatalf("login: %v", err)
	}
	_, err = e.s.LoginGate(ctx, "org", "alice", "alice@example.com", re.ChallengeID, "000000", true)
	wantCode(t, err, errs.Invalid, "2 tries left")
	e.clock.Advance(30 * time.Second)
	if m, err := e.s.LoginGate(ctx, "org", "alice", "alice@example.com", re.ChallengeID, e.code(t, secret, e.clock.Now()), true); err != nil || m != MethodTOTP {
		t.Fatalf("the right code: %q %v", m, err)
	}
	_, err = e.s.LoginGate(ctx, "org", "alice", "alice@example.com", re.ChallengeID, e.code(t, secret, e.clock.Now()), true)
	wantCode(t, err, errs.Conflict, "used up")
	// An access approval is not a login's, nor the other way round.
	_, err = e.s.VerifyChallenge(alice, re.ChallengeID, "123456")
	wantCode(t, err, errs.NotFound, "no such MFA challenge")
	// A caller that cannot ask is refused, and nothing is sent.
	sent := len(e.mail.sent)
	_, err = e.s.LoginGate(ctx, "org", "bob", "bob@example.com", "", "", false)
	wantCode(t, err, errs.Forbidden, "cannot ask")
	if len(e.mail.sent) != sent {
		t.Fatal("a login that cannot ask for a code sent one")
	}
	// A user without a method gets an email code.
	_, err = e.s.LoginGate(ctx, "org", "bob", "bob@example.com", "", "", true)
	if !errors.As(err, &re) || re.Method != MethodEmail {
		t.Fatalf("bob's login: %v", err)
	}
	if m, err := e.s.LoginGate(ctx, "org", "bob", "bob@example.com", re.ChallengeID, e.mail.lastCode(t), true); err != nil || m != MethodEmail {
		t.Fatalf("bob's email code: %q %v", m, err)
	}
	// The organization enforces TOTP: bob, who has none (new, or reset
	// after a lost phone), still signs in with an email code, so that he
	// can enroll it; an account needs TOTP itself.
	if _, err := e.s.UpdateOrg(alice, ptr(MethodTOTP), nil); err != nil {
		t.Fatal(err)
	}
	_, err = e.s.LoginGate(ctx, "org", "bob", "bob@example.com", "", "", true)
	if !errors.As(err, &re) || re.Method != MethodEmail {
		t.Fatalf("bob's login under an enforced TOTP: %v", err)
	}
	if m, err := e.s.LoginGate(ctx, "org", "bob", "bob@example.com", re.ChallengeID, e.mail.lastCode(t), true); err != nil || m != MethodEmail {
		t.Fatalf("bob's email code under an enforced TOTP: %q %v", m, err)
	}
	_, err = e.s.Gate(as("bob", "f2"), "A", "A", "")
	wantCode(t, err, errs.Forbidden, "enroll totp")
	e.clock.Advance(time.Minute)
	err = e.s.Disable(alice, MethodTOTP, e.code(t, secret, e.clock.Now()))
	wantCode(t, err, errs.Conflict, "last method")
}

// openStore opens the embedded store, or PostgreSQL under TestOnPostgres.
func openStore(t *testing.T) (*store.DB, *keyring.Keyring) {
	t.Helper()
	if !strings.HasPrefix(t.Name(), "TestOnPostgres/") {
		return testenv.OpenStore(t)
	}
	ctx := context.Background()
	db, err := store.Open(ctx, store.Config{DatabaseURL: testenv.SharedPostgres(t).SuperURL()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	root, err := keyring.ParseRootKey(keyring.GenerateRootKey())
	if err != nil {
		t.Fatal(err)
	}
	kr, err := keyring.New(ctx, db, root)
	if err != nil {
		t.Fatal(err)
	}
	return db, kr
}

// TestOnPostgres runs the tests above on a PostgreSQL store.
func TestOnPostgres(t *testing.T) {
	for _, tc := range []struct {
		name string
		f    func(*testing.T)
	}{
		{"TOTP", TestTOTPEnrollmentAndClock}, {"Binding", TestApprovalBinding}, {"Methods", TestMethodChoiceAndEmail},
		{"Disable", TestDisableResetAndLockout}, {"Login", TestLoginGate},
		{"PasskeyRegistration", TestPasskeyRegistration}, {"PasskeyChallenge", TestPasskeyChallenge}, {"PasskeyRemoval", TestPasskeyRemoval},
		{"PasskeyLogin", TestPasskeyLogin},
	} {
		t.Run(tc.name, tc.f)
	}
}

// TestRecoveryCodesAreKeyed: recovery codes are stored as an HMAC under a
// key derived from the root key, never as a plain hash that a copy of the
// store could test guesses against; codes stored the old way still work,
// once.
func TestRecoveryCodesAreKeyed(t *testing.T) {
	e := newEnv(t)
	alice := as("alice", "f1")
	_, codes := e.enroll(t, alice)
	if len(codes) != recoveryCodeCount {
		t.Fatalf("%d recovery codes", len(codes))
	}
	rows, err := e.db.Query(`SELECT code_hash FROM mfa_recovery_codes WHERE user_id = 'alice'`)
	if err != nil {
		t.Fatal(err)
	}
	stored := map[string]bool{}
	for rows.Next() {
		var h []byte
		if err := rows.Scan(&h); err != nil {
			t.Fatal(err)
		}
		stored[string(h)] = true
	}
	rows.Close()
	for _, c := range codes {
		if stored[string(legacyRecoveryHash(c))] || !stored[string(e.s.hashRecoveryCode(c))] {
			t.Fatalf("recovery code %s is not stored as its keyed hash", c)
		}
	}
	use := func(code string) string {
		t.Helper()
		var m string
		err := e.db.InTx(context.Background(), func(tx *sql.Tx) (err error) {
			m, err = e.s.useFactor(context.Background(), tx, "alice", code)
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
		return m
	}
	if m := use(codes[0]); m != MethodRecovery {
		t.Fatalf("a keyed recovery code: %q", m)
	}
	if m := use(codes[0]); m != "" {
		t.Fatal("a recovery code worked twice")
	}
	const old = "abcde-fghjk"
	if _, err := e.db.Exec(`INSERT INTO mfa_recovery_codes (user_id, code_hash, used_at) VALUES ('alice', $1, 0)`, legacyRecoveryHash(old)); err != nil {
		t.Fatal(err)
	}
	if !isRecoveryCode(old) {
		t.Fatalf("%s is not shaped like a recovery code", old)
	}
	if m := use(old); m != MethodRecovery {
		t.Fatalf("a code stored the old way: %q", m)
	}
	if m := use(old); m != "" {
		t.Fatal("an old code worked twice")
	}
}
