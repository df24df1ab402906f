package auth

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/airlockpam/airlock/internal/api"
	"github.com/airlockpam/airlock/internal/audit"
	"github.com/airlockpam/airlock/internal/errs"
)

// TestResetPassword: an operator's reset replaces the password, clears a
// lockout, revokes every login of the user and is audited on the hash
// chain; a refused password or an unknown email changes nothing and the
// password never appears in an error.
func TestResetPassword(t *testing.T) {
	ctx := api.WithClientAddr(context.Background(), "203.0.113.7")
	s, _, userID := newService(t)
	s.cfg.MaxFailedLogins, s.cfg.LockDuration = 2, time.Hour
	const oldPW, newPW = "the old password 1", "the new password 2"
	h, err := HashPassword(oldPW)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.cfg.DB.Exec(`UPDATE users SET password_hash = $1 WHERE id = $2`, h, userID); err != nil {
		t.Fatal(err)
	}
	pair, err := s.Login(ctx, "alice@example.com", oldPW)
	if err != nil {
		t.Fatal(err)
	}
	for range 2 {
		s.Login(ctx, "alice@example.com", "not the password")
	}
	if _, err := s.Login(ctx, "alice@example.com", oldPW); err == nil {
		t.Fatal("the account is not locked")
	}
	hashOf := func() string {
		var h string
		s.cfg.DB.QueryRow(`SELECT password_hash FROM users WHERE id = $1`, userID).Scan(&h)
		return h
	}
	before := hashOf()

	called := false
	s.OnAccessRevoked(func(context.Context) { called = true })
	for _, tc := range []struct {
		email, password string
		code            errs.Code
	}{
		{"alice@example.com", "short", errs.Invalid},
		{"bob@example.com", newPW, errs.NotFound},
		{"not an email", newPW, errs.Invalid},
	} {
		_, err := s.ResetPassword(ctx, tc.email, tc.password, "root@host")
		if !errs.Is(err, tc.code) || strings.Contains(err.Error(), tc.password) {
			t.Errorf("%s %q: %v, want %v without the password", tc.email, tc.password, err, tc.code)
		}
	}
	if hashOf() != before || called {
		t.Fatal("a refused reset changed something")
	}

	r, err := s.ResetPassword(ctx, " Alice@Example.com ", newPW, "root@host (airlock admin reset-password)")
	if err != nil {
		t.Fatal(err)
	}
	if r.User.ID != userID || r.LoginsRevoked != 1 || r.User.LockedUntil != nil || !called {
		t.Fatalf("reset: %+v, revocation hook called: %v", r, called)
	}
	if _, err := s.Authenticate(ctx, pair.AccessToken); !errs.Is(err, errs.Unauthenticated) {
		t.Fatalf("a login from before the reset still works: %v", err)
	}
	if _, err := s.Login(ctx, "alice@example.com", oldPW); err == nil {
		t.Fatal("the old password still logs in")
	}
	if _, err := s.Login(ctx, "alice@example.com", newPW); err != nil {
		t.Fatalf("the new password (the lockout cleared): %v", err)
	}

	repo := audit.NewRepository(s.cfg.DB, audit.WithMACKey([]byte("0123456789abcdef0123456789abcdef")))
	evs, err := repo.List(ctx, audit.Filter{OrgID: "org", Action: "user.reset_password"})
	if err != nil || len(evs) != 1 {
		t.Fatalf("audit entries: %v %v", evs, err)
	}
	ev := evs[0]
	if ev.ActorKind != "system" || ev.ActorName != "root@host (airlock admin reset-password)" || ev.TargetID != userID || ev.Seq == 0 {
		t.Fatalf("audit entry: %+v", ev)
	}
	for _, e := range evs {
		if strings.Contains(e.ActorName+e.TargetID, newPW) {
			t.Fatal("the audit log holds the password")
		}
	}
	if v, err := repo.Verify(ctx, "org"); err != nil || !v.OK {
		t.Fatalf("the audit chain after the reset: %+v %v", v, err)
	}
}
