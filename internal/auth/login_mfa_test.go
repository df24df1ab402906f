package auth

import (
	"context"
	"testing"

	"github.com/airlockpam/airlock/internal/errs"
)

// TestLoginMFAHook: the second-factor check runs only after the right
// password, is told whether the caller can ask for a code, and its refusal
// issues no token.
func TestLoginMFAHook(t *testing.T) {
	ctx := context.Background()
	s, _, userID := newService(t)
	const pw = "correct horse battery"
	h, err := HashPassword(pw)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.cfg.DB.Exec(`UPDATE users SET password_hash = $1 WHERE id = $2`, h, userID); err != nil {
		t.Fatal(err)
	}
	type call struct {
		challenge, code string
		canAsk          bool
	}
	var calls []call
	s.SetLoginMFA(func(_ context.Context, orgID, uid, email, challengeID, code string, canAsk bool) (string, error) {
		if orgID != "org" || uid != userID || email != "alice@example.com" {
			t.Errorf("hook called with %s %s %s", orgID, uid, email)
		}
		calls = append(calls, call{challengeID, code, canAsk})
		if code != "123456" {
			return "", errs.E("test", errs.Forbidden, "MFA required")
		}
		return "totp", nil
	})
	if _, err := s.Login(ctx, "alice@example.com", "wrong password"); !errs.Is(err, errs.Unauthenticated) || len(calls) != 0 {
		t.Fatalf("a wrong password: %v, %d hook calls", err, len(calls))
	}
	if pair, err := s.Login(ctx, "alice@example.com", pw); !errs.Is(err, errs.Forbidden) || pair.AccessToken != "" || calls[0].canAsk {
		t.Fatalf("Login (cannot ask): %v %+v %+v", err, pair, calls)
	}
	if _, err := s.LoginWithMFA(ctx, "alice@example.com", pw, "", ""); !errs.Is(err, errs.Forbidden) || !calls[1].canAsk {
		t.Fatalf("LoginWithMFA without a code: %v %+v", err, calls)
	}
	pair, err := s.LoginWithMFA(ctx, "alice@example.com", pw, "ch-1", "123456")
	if err != nil || pair.AccessToken == "" || calls[2] != (call{"ch-1", "123456", true}) {
		t.Fatalf("LoginWithMFA with the code: %v %+v", err, calls)
	}
	var details string
	if err := s.cfg.DB.QueryRow(`SELECT details FROM audit_logs WHERE action = 'auth.login' AND outcome = 'success'`).Scan(&details); err != nil {
		t.Fatal(err)
	}
	if details != `{"mfa":"totp"}` {
		t.Fatalf("auth.login details %s", details)
	}
}
