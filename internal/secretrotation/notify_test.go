package secretrotation_test

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/airlockpam/airlock/internal/mfa"
	"github.com/airlockpam/airlock/internal/testenv"
)

// TestFailureEmailsTheAdmins: with SMTP configured, a rotation that fails
// after a success emails the project's admins (through a real SMTP server,
// mailpit) with the rotation, the reason and what to do, and no password;
// the next failure in a row sends nothing more; a rotation's failed first
// run at its creation sends nothing.
func TestFailureEmailsTheAdmins(t *testing.T) {
	mp := testenv.StartMailpit(t)
	f := newFixture(t, time.Date(2026, 6, 1, 12, 0, 0, 0, time.UTC))
	m, err := mfa.ParseSMTPURL("smtp://" + mp.SMTPAddr() + "?from=airlock@example.com")
	if err != nil {
		t.Fatal(err)
	}
	f.svc.SetMailer(m)
	if _, err := f.svc.Create(f.ctx, f.input("orders-creds")); err != nil {
		t.Fatal(err)
	}
	_, published := f.published(t)
	// User 2 may no longer log in: its new password is set, but the login
	// with it fails, so the rotation fails.
	f.super(t, fmt.Sprintf(`ALTER ROLE %s NOLOGIN`, f.u2))
	if _, err := f.svc.RotateNow(f.ctx, f.proj, "orders-creds"); err == nil {
		t.Fatal("the rotation succeeded for a user that cannot log in")
	}
	// The failure is in the audit log, with its reason and no password.
	var n int
	var details string
	if err := f.db.QueryRowContext(f.ctx, `SELECT COUNT(*), MAX(details) FROM audit_logs
		WHERE action = 'secret-rotation.rotate' AND outcome = 'failure' AND project_id = $1`, f.proj).Scan(&n, &details); err != nil {
		t.Fatal(err)
	}
	if n != 1 || !strings.Contains(details, "orders-creds") || !strings.Contains(details, "error") || strings.Contains(details, published) {
		t.Fatalf("the failure's audit events: %d %s", n, details)
	}
	msg := mp.WaitForMessage(t, time.Minute, func(m testenv.Message) bool { return strings.Contains(m.Subject, "orders-creds") })
	if len(msg.To) != 1 || msg.To[0].Address != "alice@example.com" || !strings.Contains(msg.Subject, "failed") || !strings.Contains(msg.Subject, "payments") {
		t.Fatalf("the failure mail: %+v", msg)
	}
	body := mp.Text(t, msg.ID)
	r, err := f.svc.Resolve(f.ctx, f.proj, "orders-creds")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{r.LastRotationMessage, "prod:/db/orders/PGUSER", "still work", "airlock secret-rotations rotate orders-creds --project-id " + f.proj} {
		if !strings.Contains(body, want) {
			t.Fatalf("the mail lacks %q:\n%s", want, body)
		}
	}
	if strings.Contains(body, published) {
		t.Fatal("the mail holds the published password")
	}
	// A second failure in a row: no second mail (the send is synchronous,
	// so it would be in mailpit when RotateNow returns).
	if _, err := f.svc.RotateNow(f.ctx, f.proj, "orders-creds"); err == nil {
		t.Fatal("the second rotation succeeded")
	}
	if n := len(mp.Messages(t)); n != 1 {
		t.Fatalf("%d mails after two failures in a row, want 1", n)
	}
	// A creation whose first run fails mails nobody: its caller sees the error.
	f.super(t, fmt.Sprintf(`ALTER ROLE %s NOLOGIN`, f.u1))
	in := f.input("other-creds")
	in.SecretsMapping.Username, in.SecretsMapping.Password = "OTHER_USER", "OTHER_PASSWORD"
	if _, err := f.svc.Create(f.ctx, in); err == nil {
		t.Fatal("a rotation whose first run fails was created")
	}
	if n := len(mp.Messages(t)); n != 1 {
		t.Fatalf("%d mails after a failed creation, want 1", n)
	}
}
