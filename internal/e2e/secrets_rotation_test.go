package e2e_test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/airlockpam/airlock/internal/e2e"
	"github.com/airlockpam/airlock/internal/testenv"
)

// TestSecretsRotationCLI: a dual-user PostgreSQL credentials rotation made
// and driven with the CLI. After its creation and after every rotation,
// `airlock run -- psql` logs in as the published user; the users alternate;
// the previous credentials still log in until the rotation after. The
// mapped secrets cannot be edited by hand and the connection cannot be
// deleted while the rotation exists. (The schedule with a moved clock,
// across a daylight-saving change, and a rotation stopped between the
// password change and the publication are tested in package secretrotation.)
func TestSecretsRotationCLI(t *testing.T) {
	pg := testenv.SharedPostgres(t)
	srv := e2e.StartServer(t, "AIRLOCK_ALLOW_INTERNAL_IP_CONNECTIONS=true")
	admin := e2e.NewUser(t)
	admin.Login(srv, srv.AdminEmail, srv.AdminPassword)
	project := strings.TrimSpace(admin.Must("", "projects", "create", "payments"))
	pgRole(t, pg, "rotator", "rotator-pw")
	pgRoleExec(t, pg, `ALTER ROLE rotator WITH CREATEROLE`)
	pgRole(t, pg, "orders_a", "initial-a")
	pgRole(t, pg, "orders_b", "initial-b")
	caFile := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(caFile, pg.Cluster.CA.CertPEM, 0o644); err != nil {
		t.Fatal(err)
	}
	admin.Must("rotator-pw\n", "app-connections", "create", "postgres", "--project-id", project, "--name", "orders-db", "--host", "127.0.0.1",
		"--port", fmt.Sprint(pg.Cluster.Port), "--database", pg.Name, "--username", "rotator", "--password-stdin", "--ssl-ca-file", caFile)
	admin.Must("", "secrets", "folders", "create", "/db/orders", "--project-id", project, "--env", "prod")
	at := []string{"--project-id", project, "--env", "prod", "--path", "/db/orders"}

	// Bad input: a clear error, nothing changed.
	base := []string{"secret-rotations", "create", "postgres-credentials", "--project-id", project, "--name", "orders-creds", "--connection", "orders-db",
		"--env", "prod", "--path", "/db/orders", "--rotate-at", "02:00", "--timezone", "Europe/Berlin", "--username-secret", "PGUSER", "--password-secret", "PGPASSWORD"}
	for _, bad := range [][]string{
		{"--interval", "0", "--username1", "orders_a", "--username2", "orders_b"},
		{"--interval", "400", "--username1", "orders_a", "--username2", "orders_b"},
		{"--interval", "7", "--username1", "orders_a", "--username2", "orders_a"},
		{"--interval", "7", "--username1", "orders_a", "--username2", "nobody_at_all"},
	} {
		if _, errOut, code := admin.Run("", append(append([]string{}, base...), bad...)...); code == 0 || errOut == "" {
			t.Fatalf("%v: exit %d", bad, code)
		}
	}
	// The API refuses an unknown field (by design its name, the caller's own
	// input, is not echoed) and a wrong type, naming the field.
	token := apiToken(t, srv)
	body := func(extra string) string {
		return fmt.Sprintf(`{"name": "orders-creds", "projectId": %q, "connectionId": "orders-db", "environment": "prod",
			"secretPath": "/db/orders", "rotateAt": "02:00", "timeZone": "Europe/Berlin", %s
			"parameters": {"username1": "orders_a", "username2": "orders_b"},
			"secretsMapping": {"username": "PGUSER", "password": "PGPASSWORD"}}`, project, extra)
	}
	for extra, field := range map[string]string{
		`"rotationInterval": 7, "colour": "red",`: "unexpected property",
		`"rotationInterval": "weekly",`:           "rotationInterval",
	} {
		status, b := apiCall(t, srv, token, http.MethodPost, "/api/v2/secret-rotations/postgres-credentials", body(extra))
		if status != http.StatusUnprocessableEntity || !strings.Contains(string(b), field) {
			t.Fatalf("a body with %s: %d %s", extra, status, b)
		}
	}
	if !pgLogsIn(pg, "orders_a", "initial-a") || !pgLogsIn(pg, "orders_b", "initial-b") {
		t.Fatal("a refused rotation changed a password")
	}
	admin.Must("", append(append([]string{}, base...), "--interval", "7", "--username1", "orders_a", "--username2", "orders_b")...)

	// psql through airlock run: the host settings in the environment, the
	// credentials from the secrets.
	admin.Env = []string{"PGHOST=127.0.0.1", "PGPORT=" + fmt.Sprint(pg.Cluster.Port), "PGDATABASE=" + pg.Name, "PGSSLMODE=verify-full",
		"PGSSLROOTCERT=" + caFile, "PGCONNECT_TIMEOUT=30"}
	whoami := func() string {
		t.Helper()
		out := admin.Must("", append(append([]string{"run"}, at...), "--", "psql", "-X", "-A", "-t", "-c", "select current_user")...)
		return strings.TrimSpace(out)
	}
	published := func() (string, string) {
		t.Helper()
		var m map[string]string
		if err := json.Unmarshal([]byte(admin.Must("", append([]string{"export", "--format", "json"}, at...)...)), &m); err != nil {
			t.Fatal(err)
		}
		return m["PGUSER"], m["PGPASSWORD"]
	}
	if got := whoami(); got != "orders_a" {
		t.Fatalf("after create, psql logs in as %q, want orders_a", got)
	}
	prevU, prevP := published()
	var prevU2, prevP2 string
	want := "orders_b"
	for i := 0; i < 4; i++ {
		admin.Must("", "secret-rotations", "rotate", "orders-creds", "--project-id", project)
		if got := whoami(); got != want {
			t.Fatalf("rotation %d: psql logs in as %q, want %s", i+1, got, want)
		}
		if !pgLogsIn(pg, prevU, prevP) {
			t.Fatalf("rotation %d: the previous credentials of %s stopped working", i+1, prevU)
		}
		u, p := published()
		if i > 0 && pgLogsIn(pg, prevU2, prevP2) {
			t.Fatalf("rotation %d: credentials from two rotations ago still log in", i+1)
		}
		prevU2, prevP2 = prevU, prevP
		prevU, prevP = u, p
		if want == "orders_a" {
			want = "orders_b"
		} else {
			want = "orders_a"
		}
	}
	out := admin.Must("", "secret-rotations", "get", "orders-creds", "--project-id", project)
	for _, s := range []string{"every 7 days at 02:00 Europe/Berlin", "Status:", "ok", "Next rotation:"} {
		if !strings.Contains(out, s) {
			t.Fatalf("get does not show %q:\n%s", s, out)
		}
	}

	// Owned secrets and a used connection.
	if _, errOut, code := admin.Run("", append([]string{"secrets", "set", "PGPASSWORD=mine"}, at...)...); code == 0 || !strings.Contains(errOut, "orders-creds") {
		t.Fatalf("a hand edit of a mapped secret: exit %d %s", code, errOut)
	}
	if _, errOut, code := admin.Run("", "app-connections", "delete", "orders-db", "--project-id", project); code == 0 || !strings.Contains(errOut, "orders-creds") {
		t.Fatalf("deleting the rotation's connection: exit %d %s", code, errOut)
	}
	admin.Must("", "secret-rotations", "delete", "orders-creds", "--project-id", project, "--delete-secrets")
	admin.Must("", "app-connections", "delete", "orders-db", "--project-id", project)
}
