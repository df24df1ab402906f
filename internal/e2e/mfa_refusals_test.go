package e2e_test

import (
	"fmt"
	"regexp"
	"strings"
	"testing"

	"github.com/airlockpam/airlock/internal/e2e"
	"github.com/airlockpam/airlock/internal/testenv"
)

// TestMFARefusals: an SMTP server that cannot be reached (the user is told
// the code could not be sent; the server's log says why, without the code
// or the SMTP password), and a machine identity on an account that requires
// MFA (a clear refusal).
func TestMFARefusals(t *testing.T) {
	port, err := testenv.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	w := svNewWorld(t, "--smtp-url", fmt.Sprintf("smtp://airlock:smtp-secret-pw@127.0.0.1:%d", port))
	w.admin.Must(w.pg.SCRAMUser.Password, "accounts", "create", "--project-id", w.project, "--resource", "main-db", "--name", "guarded",
		"--username", w.pg.SCRAMUser.User, "--password-stdin", "--require-mfa")
	access := []string{"db", "access", "--project-id", w.project, "--resource", "main-db", "--account", "guarded", "--domain", w.srv.URL}

	_, errOut, code := w.admin.Run("", access...)
	if code == 0 || !strings.Contains(errOut, "the email code could not be sent") {
		t.Fatalf("SMTP unreachable: exit %d, %s", code, errOut)
	}
	log := w.srv.Proc.Stderr()
	if !strings.Contains(log, "sending an MFA email code failed") || !strings.Contains(log, "connection refused") {
		t.Fatalf("the server's log does not say why:\n%s", log)
	}
	if strings.Contains(log, "smtp-secret-pw") || strings.Contains(log, "Your Airlock code") || regexp.MustCompile(`code is \d{6}`).MatchString(log) {
		t.Fatalf("the server's log holds the SMTP password or the code:\n%s", log)
	}

	var m struct{ ID, ClientID, ClientSecret string }
	w.admin.JSON(&m, "", "machine-identities", "create", "ci-bot")
	w.admin.Must("", "projects", "members", "set", "--project-id", w.project, "--machine-identity-id", m.ID, "--role", "member")
	bot := e2e.NewUser(t)
	bot.Must("", "login", "--domain", w.srv.URL, "--client-id", m.ClientID, "--client-secret", m.ClientSecret)
	if _, errOut, code := bot.Run("", access...); code == 0 || !strings.Contains(errOut, "machine identities cannot pass an MFA challenge") {
		t.Fatalf("a machine identity: exit %d, %s", code, errOut)
	}
}
