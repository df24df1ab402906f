package e2e_test

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/airlockpam/airlock/internal/e2e"
	"github.com/airlockpam/airlock/internal/testenv"
)

// TestSecretsRotationThroughGateway: a rotation whose app connection goes
// through a gateway (so the server's internal-address guard does not apply:
// the server runs without AIRLOCK_ALLOW_INTERNAL_IP_CONNECTIONS) checks its
// preconditions through the gateway before any password changes: a user
// that does not exist and a connection that may not alter the users are
// refused with words that say so, and no password changed. With good
// input it rotates, and the published credentials log in.
func TestSecretsRotationThroughGateway(t *testing.T) {
	pg := testenv.SharedPostgres(t)
	srv := e2e.StartServer(t)
	admin := e2e.NewUser(t)
	admin.Login(srv, srv.AdminEmail, srv.AdminPassword)
	project := strings.TrimSpace(admin.Must("", "projects", "create", "gw-rotation"))
	lghStartGateway(t, srv, admin, "gw-rot", "env", nil)
	lghWaitOnline(t, admin, "gw-rot")
	admin.Must("", "gateways", "allow-project", "gw-rot", "--project-id", project)
	pgRole(t, pg, "gwrot_rotator", "gw-rotator-pw")
	pgRoleExec(t, pg, `ALTER ROLE gwrot_rotator WITH CREATEROLE`)
	pgRole(t, pg, "gwrot_weak", "gw-weak-pw")
	pgRole(t, pg, "gwrot_a", "initial-gw-a")
	pgRole(t, pg, "gwrot_b", "initial-gw-b")
	caFile := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(caFile, pg.Cluster.CA.CertPEM, 0o644); err != nil {
		t.Fatal(err)
	}
	conn := func(name, user, pw string) {
		t.Helper()
		admin.Must(pw+"\n", "app-connections", "create", "postgres", "--project-id", project, "--name", name, "--host", "127.0.0.1",
			"--port", fmt.Sprint(pg.Cluster.Port), "--database", pg.Name, "--username", user, "--password-stdin", "--ssl-ca-file", caFile,
			"--gateway", "gw-rot")
	}
	conn("orders-gw", "gwrot_rotator", "gw-rotator-pw")
	conn("weak-gw", "gwrot_weak", "gw-weak-pw")
	admin.Must("", "secrets", "folders", "create", "/db", "--project-id", project, "--env", "prod")
	create := func(connection, user2 string) (string, int) {
		_, stderr, code := admin.Run("", "secret-rotations", "create", "postgres-credentials", "--project-id", project, "--name", "gw-creds",
			"--connection", connection, "--env", "prod", "--path", "/db", "--interval", "7", "--rotate-at", "02:00",
			"--username1", "gwrot_a", "--username2", user2, "--username-secret", "PGUSER", "--password-secret", "PGPASSWORD")
		return stderr, code
	}
	if stderr, code := create("orders-gw", "gwrot_nobody"); code == 0 || !strings.Contains(stderr, `"gwrot_nobody" does not exist`) {
		t.Fatalf("a user that does not exist, through the gateway: exit %d: %s", code, stderr)
	}
	if stderr, code := create("weak-gw", "gwrot_b"); code == 0 || !strings.Contains(stderr, "needs CREATEROLE") {
		t.Fatalf("a connection that may not alter the users, through the gateway: exit %d: %s", code, stderr)
	}
	if !pgLogsIn(pg, "gwrot_a", "initial-gw-a") || !pgLogsIn(pg, "gwrot_b", "initial-gw-b") {
		t.Fatal("a refused rotation changed a password")
	}
	if out := admin.Must("", "secret-rotations", "list", "--project-id", project); strings.Contains(out, "gw-creds") {
		t.Fatalf("a refused rotation was saved: %s", out)
	}
	if stderr, code := create("orders-gw", "gwrot_b"); code != 0 {
		t.Fatalf("the rotation through the gateway: exit %d: %s", code, stderr)
	}
	admin.Must("", "secret-rotations", "rotate", "gw-creds", "--project-id", project)
	u := strings.TrimSpace(admin.Must("", "secrets", "get", "PGUSER", "--project-id", project, "--env", "prod", "--path", "/db"))
	p := strings.TrimSuffix(admin.Must("", "secrets", "get", "PGPASSWORD", "--project-id", project, "--env", "prod", "--path", "/db"), "\n")
	if u != "gwrot_b" || !pgLogsIn(pg, u, p) {
		t.Fatalf("after a rotation through the gateway, %s does not log in with the published password", u)
	}
}
