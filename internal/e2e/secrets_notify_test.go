package e2e_test

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/airlockpam/airlock/internal/e2e"
	"github.com/airlockpam/airlock/internal/testenv"
)

// TestSecretsRotationFailureMail: a server with --smtp-url emails the
// project's admins when a secret rotation that worked before fails (read
// from mailpit); the mail names the rotation and the reason and holds no
// password.
func TestSecretsRotationFailureMail(t *testing.T) {
	mp := testenv.StartMailpit(t)
	pg := testenv.SharedPostgres(t)
	srv := e2e.StartServerWith(t, []string{"AIRLOCK_ALLOW_INTERNAL_IP_CONNECTIONS=true"},
		"--smtp-url", fmt.Sprintf("smtp://airlock:mail-pw@%s:%d?from=airlock@example.com", mp.SMTPHost, mp.SMTPPort))
	admin := e2e.NewUser(t)
	admin.Login(srv, srv.AdminEmail, srv.AdminPassword)
	project := strings.TrimSpace(admin.Must("", "projects", "create", "mail-rotation"))
	pgRole(t, pg, "mailrot_rotator", "mail-rotator-pw")
	pgRoleExec(t, pg, `ALTER ROLE mailrot_rotator WITH CREATEROLE`)
	pgRole(t, pg, "mailrot_a", "initial-mail-a")
	pgRole(t, pg, "mailrot_b", "initial-mail-b")
	caFile := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(caFile, pg.Cluster.CA.CertPEM, 0o644); err != nil {
		t.Fatal(err)
	}
	admin.Must("mail-rotator-pw\n", "app-connections", "create", "postgres", "--project-id", project, "--name", "mail-db", "--host", "127.0.0.1",
		"--port", fmt.Sprint(pg.Cluster.Port), "--database", pg.Name, "--username", "mailrot_rotator", "--password-stdin", "--ssl-ca-file", caFile)
	admin.Must("", "secret-rotations", "create", "postgres-credentials", "--project-id", project, "--name", "mail-creds",
		"--connection", "mail-db", "--env", "prod", "--path", "/", "--interval", "7", "--rotate-at", "02:00",
		"--username1", "mailrot_a", "--username2", "mailrot_b", "--username-secret", "PGUSER", "--password-secret", "PGPASSWORD")
	published := strings.TrimSuffix(admin.Must("", "secrets", "get", "PGPASSWORD", "--project-id", project, "--env", "prod"), "\n")

	pgRoleExec(t, pg, `ALTER ROLE mailrot_b NOLOGIN`)
	if _, _, code := admin.Run("", "secret-rotations", "rotate", "mail-creds", "--project-id", project); code == 0 {
		t.Fatal("a rotation of a user that may not log in succeeded")
	}
	msg := mp.WaitForMessage(t, time.Minute, func(m testenv.Message) bool { return strings.Contains(m.Subject, "mail-creds") })
	if len(msg.To) != 1 || msg.To[0].Address != srv.AdminEmail || !strings.Contains(msg.Subject, "failed") {
		t.Fatalf("the failure mail: %+v", msg)
	}
	body := mp.Text(t, msg.ID)
	for _, want := range []string{"mail-creds", "mailrot_b", "still work", "airlock secret-rotations rotate mail-creds --project-id " + project} {
		if !strings.Contains(body, want) {
			t.Fatalf("the mail lacks %q:\n%s", want, body)
		}
	}
	if strings.Contains(body, published) {
		t.Fatal("the mail holds the published password")
	}
}
