package auth

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/airlockpam/airlock/internal/api"
	"github.com/airlockpam/airlock/internal/errs"
	"github.com/airlockpam/airlock/internal/store"
	"github.com/airlockpam/airlock/internal/testenv"
)

func TestPasswordHashAndVerify(t *testing.T) {
	const pw = "correct horse battery"
	h, err := HashPassword(pw)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(h, "$argon2id$v=19$m=65536,t=2,p=2$") || strings.Contains(h, pw) {
		t.Fatalf("hash %q is not an argon2id PHC string of the password", h)
	}
	if ok, err := VerifyPassword(h, pw); !ok || err != nil {
		t.Fatalf("the right password is refused: %v %v", ok, err)
	}
	for _, wrong := range []string{"", "correct horse batterY", "correct horse battery ", pw[:len(pw)-1]} {
		if ok, err := VerifyPassword(h, wrong); ok || err != nil {
			t.Fatalf("VerifyPassword(%q) = %v, %v; want false, nil", wrong, ok, err)
		}
	}
	h2, err := HashPassword(pw)
	if err != nil {
		t.Fatal(err)
	}
	if h2 == h {
		t.Fatal("two hashes of one password are equal: no salt")
	}
	if ok, _ := VerifyPassword(h2, pw); !ok {
		t.Fatal("the second hash does not verify")
	}
}

// TestVerifyDamagedHash: a damaged or foreign hash is an error, never a match.
func TestVerifyDamagedHash(t *testing.T) {
	h, err := HashPassword("correct horse battery")
	if err != nil {
		t.Fatal(err)
	}
	parts := strings.Split(h, "$")
	with := func(i int, v string) string {
		p := append([]string(nil), parts...)
		p[i] = v
		return strings.Join(p, "$")
	}
	for name, enc := range map[string]string{
		"empty":          "",
		"bcrypt":         "$2a$10$N9qo8uLOickgx2ZMRZoMyeIjZAgcfl7p92ldGxad68LJZdL17lhWy",
		"argon2i":        with(1, "argon2i"),
		"no version":     with(2, "19"),
		"old version":    with(2, "v=16"),
		"no parameters":  with(3, "m=65536"),
		"salt not b64":   with(4, "!!!"),
		"hash not b64":   with(5, "***"),
		"missing fields": strings.Join(parts[:5], "$"),
		"extra field":    h + "$x",
	} {
		ok, err := VerifyPassword(enc, "correct horse battery")
		if ok || err == nil {
			t.Errorf("%s: VerifyPassword = %v, %v; want false and an error", name, ok, err)
		}
	}
}

func TestCheckPasswordPolicy(t *testing.T) {
	for pw, ok := range map[string]bool{
		"short":                        false,
		"elevenchars":                  false,
		"twelve chars":                 true,
		"ééééééééééé":                  false, // 11 runes, 22 bytes
		"éééééééééééé":                 true,
		strings.Repeat("a", 1024):      true,
		strings.Repeat("a", 1025):      false,
		strings.Repeat("é", 600):       false, // 600 runes, 1200 bytes
		"correct horse battery staple": true,
	} {
		if got := CheckPasswordPolicy(pw) == ""; got != ok {
			t.Errorf("CheckPasswordPolicy(%d runes, %d bytes) accepted=%v, want %v", len([]rune(pw)), len(pw), got, ok)
		}
	}
}

func TestLimiter(t *testing.T) {
	start := time.Date(2026, 12, 3, 12, 0, 0, 0, time.UTC)
	l := newLimiter(6, 3) // one token every 10 s, burst 3
	for i := range 3 {
		if ok, _ := l.allow("203.0.113.9", start); !ok {
			t.Fatalf("attempt %d of the burst refused", i+1)
		}
	}
	ok, wait := l.allow("203.0.113.9", start)
	if ok || wait <= 0 || wait > 10*time.Second {
		t.Fatalf("after the burst: allowed=%v wait=%v; want refused with a wait of at most 10s", ok, wait)
	}
	// A refusal does not spend a token: the wait does not grow.
	if _, again := l.allow("203.0.113.9", start); again != wait {
		t.Fatalf("a refused attempt moved the wait from %v to %v", wait, again)
	}
	if ok, _ := l.allow("198.51.100.1", start); !ok {
		t.Fatal("another key shares the first key's budget")
	}
	if ok, _ := l.allow("203.0.113.9", start.Add(wait)); !ok {
		t.Fatal("refused after waiting as long as told")
	}
	if ok, _ := l.allow("203.0.113.9", start.Add(wait)); ok {
		t.Fatal("a second attempt passed with one token refilled")
	}
	// Idle keys are forgotten (the map does not grow without bound) and
	// come back with a full burst.
	later := start.Add(time.Hour)
	l.allow("192.0.2.1", later)
	if _, kept := l.buckets["203.0.113.9"]; kept {
		t.Fatal("a key idle for an hour is still held")
	}
}

func TestValidSlug(t *testing.T) {
	for s, ok := range map[string]bool{
		"gw":                     true,
		"a":                      true,
		"9":                      true,
		"prod-eu-1":              true,
		strings.Repeat("a", 63):  true,
		strings.Repeat("a", 64):  false,
		"":                       false,
		"-gw":                    false,
		"gw-":                    false,
		"GW":                     false,
		"gw_1":                   false,
		"gw 1":                   false,
		"gw.example":             false,
		"gw\n":                   false,
		"ünïcode":                false,
		"a-b-c-d-e-f-g-h-i-j-k0": true,
	} {
		if ValidSlug(s) != ok {
			t.Errorf("ValidSlug(%q) = %v, want %v", s, !ok, ok)
		}
	}
}

// newService opens a SQLite store with one organization and one user.
func newService(t *testing.T) (*Service, *testenv.Clock, string) {
	t.Helper()
	ctx := context.Background()
	db, err := store.Open(ctx, store.Config{DataDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	c := testenv.NewClock(time.Date(2026, 12, 3, 12, 0, 0, 0, time.UTC))
	s, err := New(Config{DB: db, Now: c.Now})
	if err != nil {
		t.Fatal(err)
	}
	userID := uuid.NewString()
	if _, err := db.Exec(`INSERT INTO organizations (id, name, created_at) VALUES ('org', 'org', 0)`); err != nil {
		t.Fatal(err)
	}
	if _, err := db.Exec(`INSERT INTO users (id, org_id, email, password_hash, org_admin, created_at, updated_at)
		VALUES ($1, 'org', 'alice@example.com', 'x', TRUE, 0, 0)`, userID); err != nil {
		t.Fatal(err)
	}
	return s, c, userID
}

func TestTokens(t *testing.T) {
	ctx := context.Background()
	s, c, userID := newService(t)
	pair, err := s.issue(ctx, s.cfg.DB, api.SubjectUser, userID, "org", "")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(pair.AccessToken, "alk_") || pair.AccessToken == pair.RefreshToken {
		t.Fatalf("tokens %q, %q", pair.AccessToken, pair.RefreshToken)
	}
	if !pair.AccessExpiresAt.Equal(c.Now().Add(15*time.Minute)) || !pair.RefreshExpiresAt.Equal(c.Now().Add(7*24*time.Hour)) {
		t.Fatalf("expiries %v, %v", pair.AccessExpiresAt, pair.RefreshExpiresAt)
	}

	// The store holds hashes only: a copy of the database is not a login.
	var n int
	if err := s.cfg.DB.QueryRow(`SELECT COUNT(*) FROM auth_tokens WHERE token_hash = $1 OR token_hash = $2`,
		[]byte(pair.AccessToken), []byte(pair.RefreshToken)).Scan(&n); err != nil || n != 0 {
		t.Fatalf("raw tokens stored: %d %v", n, err)
	}

	p, err := s.Authenticate(ctx, pair.AccessToken)
	if err != nil {
		t.Fatal(err)
	}
	if p.Kind != api.SubjectUser || p.ID != userID || p.OrgID != "org" || p.Name != "alice@example.com" || !p.OrgAdmin || p.TokenFamily == "" {
		t.Fatalf("principal %+v", p)
	}

	refused := func(raw, words string) {
		t.Helper()
		_, err := s.Authenticate(ctx, raw)
		if !errs.Is(err, errs.Unauthenticated) {
			t.Fatalf("Authenticate: %v, want unauthenticated", err)
		}
		var e *errs.Error
		if !errors.As(err, &e) || !strings.Contains(e.Msg, words) {
			t.Fatalf("Authenticate: %v, want a message saying %q", err, words)
		}
	}
	refused("Bearer "+pair.AccessToken, "not an Airlock token")
	refused("alk_"+strings.Repeat("x", 300), "not an Airlock token")
	refused(pair.AccessToken[:len(pair.AccessToken)-1], "not valid here")
	refused(pair.RefreshToken, "not valid here") // a refresh token is not an access token

	c.Advance(15*time.Minute + time.Second)
	refused(pair.AccessToken, "expired")

	// A new login of the same user is a family of its own: logging out of
	// one leaves the other.
	other, err := s.issue(ctx, s.cfg.DB, api.SubjectUser, userID, "org", "")
	if err != nil {
		t.Fatal(err)
	}
	if err := s.revokeFamily(ctx, s.cfg.DB, p.TokenFamily); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Authenticate(ctx, other.AccessToken); err != nil {
		t.Fatalf("revoking one login revoked another: %v", err)
	}
	if err := s.revokeSubject(ctx, s.cfg.DB, api.SubjectUser, userID); err != nil {
		t.Fatal(err)
	}
	refused(other.AccessToken, "revoked")

	// A disabled user's tokens stop working; a deleted user's are unknown.
	third, err := s.issue(ctx, s.cfg.DB, api.SubjectUser, userID, "org", "")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.cfg.DB.Exec(`UPDATE users SET disabled = TRUE WHERE id = $1`, userID); err != nil {
		t.Fatal(err)
	}
	refused(third.AccessToken, "disabled")
	if _, err := s.cfg.DB.Exec(`DELETE FROM users WHERE id = $1`, userID); err != nil {
		t.Fatal(err)
	}
	refused(third.AccessToken, "not valid here")
}

// TestLogin: a wrong password, an unknown email and a locked account get
// one answer, and repeated failures lock the account until its lock ends.
func TestLogin(t *testing.T) {
	ctx := api.WithClientAddr(context.Background(), "203.0.113.7")
	s, c, userID := newService(t)
	s.cfg.MaxFailedLogins, s.cfg.LockDuration = 3, 10*time.Minute
	const pw = "correct horse battery"
	h, err := HashPassword(pw)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.cfg.DB.Exec(`UPDATE users SET password_hash = $1 WHERE id = $2`, h, userID); err != nil {
		t.Fatal(err)
	}
	badCredentials := func(email, password string) {
		t.Helper()
		_, err := s.Login(ctx, email, password)
		var e *errs.Error
		if !errors.As(err, &e) || e.Code != errs.Unauthenticated || e.Msg != errBadCredentials {
			t.Fatalf("Login(%q): %v, want the bad-credentials answer", email, err)
		}
	}

	pair, err := s.Login(ctx, "  Alice@Example.com ", pw)
	if err != nil {
		t.Fatalf("the right password is refused: %v", err)
	}
	if p, err := s.Authenticate(ctx, pair.AccessToken); err != nil || p.ID != userID {
		t.Fatalf("the login's token: %v %v", p, err)
	}
	if _, err := s.Login(ctx, "alice@example.com", ""); !errs.Is(err, errs.Invalid) {
		t.Fatalf("an empty password: %v, want invalid", err)
	}
	badCredentials("nobody@example.com", pw)
	badCredentials("alice@example.com", "wrong password!")
	badCredentials("alice@example.com", "wrong password!")
	badCredentials("alice@example.com", "wrong password!") // the third failure locks
	badCredentials("alice@example.com", pw)                // locked: the right password is refused alike
	c.Advance(10*time.Minute + time.Second)
	if _, err := s.Login(ctx, "alice@example.com", pw); err != nil {
		t.Fatalf("still refused after the lock ended: %v", err)
	}
}
