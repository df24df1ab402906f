package e2e_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/airlockpam/airlock/internal/e2e"
	"github.com/airlockpam/airlock/internal/testenv"
)

// apiToken logs the server's admin in through the API.
func apiToken(t *testing.T, srv *e2e.Server) string {
	t.Helper()
	body, _ := json.Marshal(map[string]string{"email": srv.AdminEmail, "password": srv.AdminPassword})
	resp, err := http.Post(srv.URL+"/api/v1/auth/login", "application/json", bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var pair struct{ AccessToken string }
	if err := json.NewDecoder(resp.Body).Decode(&pair); err != nil || pair.AccessToken == "" {
		t.Fatalf("admin login: %d %v", resp.StatusCode, err)
	}
	return pair.AccessToken
}

// apiCall sends body (raw JSON) and returns the status and the answer.
func apiCall(t *testing.T, srv *e2e.Server, token, method, path, body string) (int, []byte) {
	t.Helper()
	req, _ := http.NewRequest(method, srv.URL+path, strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+token)
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, b
}

// pgRole creates a login role in the cluster of db.
func pgRole(t *testing.T, db testenv.Database, name, password string) {
	t.Helper()
	pgRoleExec(t, db, fmt.Sprintf(`CREATE ROLE %s LOGIN PASSWORD '%s'`, name, password))
}

// pgRoleExec runs a statement as the superuser in db.
func pgRoleExec(t *testing.T, db testenv.Database, stmt string) {
	t.Helper()
	conn, err := pgx.Connect(context.Background(), db.SuperURL())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	if _, err := conn.Exec(context.Background(), stmt); err != nil {
		t.Fatal(err)
	}
}

func pgLogsIn(db testenv.Database, user, password string) bool {
	conn, err := pgx.Connect(context.Background(), db.Cluster.URL(user, password, db.Name, "verify-full"))
	if err != nil {
		return false
	}
	conn.Close(context.Background())
	return true
}

// TestSecretsAppConnectionSeed: the seed's request body (its fields and
// nesting, pointed at the test PostgreSQL, with the CA it needs) creates a
// platform-managed connection, answered in the seed's shape, field by
// field, without the password; the original password no longer logs in.
// Bad bodies are refused and change nothing. The CLI lists, gets, updates
// and deletes. Without AIRLOCK_ALLOW_INTERNAL_IP_CONNECTIONS the server
// refuses 127.0.0.1 and says which setting allows it.
func TestSecretsAppConnectionSeed(t *testing.T) {
	pg := testenv.SharedPostgres(t)
	srv := e2e.StartServer(t, "AIRLOCK_ALLOW_INTERNAL_IP_CONNECTIONS=true")
	admin := e2e.NewUser(t)
	admin.Login(srv, srv.AdminEmail, srv.AdminPassword)
	project := strings.TrimSpace(admin.Must("", "projects", "create", "payments"))
	token := apiToken(t, srv)
	pgRole(t, pg, "infisical_role", "my-password")
	ca, _ := json.Marshal(string(pg.Cluster.CA.CertPEM))

	seed := fmt.Sprintf(`{
        "name": "my-pg-connection",
        "method": "username-and-password",
        "isPlatformManagedCredentials": true,
        "projectId": %q,
        "credentials": {
            "host": "127.0.0.1",
            "port": %d,
            "database": %q,
            "username": "infisical_role",
            "password": "my-password",
            "sslEnabled": true,
            "sslRejectUnauthorized": true,
            "sslCertificate": %s
        }
    }`, project, pg.Cluster.Port, pg.Name, ca)

	// Bad bodies first: nothing is saved.
	for _, bad := range []string{
		strings.Replace(seed, `"method"`, `"colour": "red", "method"`, 1),                                         // an unknown field
		strings.Replace(seed, `"isPlatformManagedCredentials": true`, `"isPlatformManagedCredentials": "yes"`, 1), // a wrong type
		strings.Replace(seed, `"my-pg-connection"`, `"My PG"`, 1),                                                 // not a slug
		strings.Replace(seed, `"my-password"`, `"wrong-password"`, 1),                                             // the login fails
	} {
		if status, b := apiCall(t, srv, token, http.MethodPost, "/api/v1/app-connections/postgres", bad); status < 400 || status >= 500 {
			t.Fatalf("a bad body: %d %s", status, b)
		}
	}
	if !pgLogsIn(pg, "infisical_role", "my-password") {
		t.Fatal("a refused request changed the password")
	}

	status, b := apiCall(t, srv, token, http.MethodPost, "/api/v1/app-connections/postgres", seed)
	if status != http.StatusOK {
		t.Fatalf("the seed's body: %d %s", status, b)
	}
	if bytes.Contains(b, []byte("my-password")) {
		t.Fatalf("the answer holds a password: %s", b)
	}
	var resp map[string]map[string]any
	if err := json.Unmarshal(b, &resp); err != nil {
		t.Fatal(err)
	}
	ac := resp["appConnection"]
	for k, want := range map[string]any{"name": "my-pg-connection", "projectId": project, "version": 1.0, "app": "postgres",
		"method": "username-and-password", "isPlatformManagedCredentials": true} {
		if ac[k] != want {
			t.Errorf("appConnection.%s = %v, want %v", k, ac[k], want)
		}
	}
	for _, k := range []string{"id", "orgId", "createdAt", "updatedAt"} {
		if s, _ := ac[k].(string); s == "" {
			t.Errorf("appConnection.%s is missing", k)
		}
	}
	creds, _ := ac["credentials"].(map[string]any)
	for k, want := range map[string]any{"host": "127.0.0.1", "port": float64(pg.Cluster.Port), "database": pg.Name, "username": "infisical_role",
		"sslEnabled": true, "sslRejectUnauthorized": true} {
		if creds[k] != want {
			t.Errorf("appConnection.credentials.%s = %v, want %v", k, creds[k], want)
		}
	}
	if _, ok := creds["password"]; ok {
		t.Error("the answer has credentials.password")
	}
	if pgLogsIn(pg, "infisical_role", "my-password") {
		t.Fatal("the original password still logs in after a platform-managed create")
	}

	// The CLI: list, get by name, a refused credentials change, rename, delete.
	if out := admin.Must("", "app-connections", "list", "--project-id", project); !strings.Contains(out, "my-pg-connection") {
		t.Fatalf("list:\n%s", out)
	}
	var got struct{ AppConnection struct{ ID, Name string } }
	admin.JSON(&got, "", "app-connections", "get", "my-pg-connection", "--project-id", project)
	if got.AppConnection.ID != ac["id"] {
		t.Fatalf("get by name: %+v", got)
	}
	if _, errOut, code := admin.Run("x\n", "app-connections", "update", "my-pg-connection", "--project-id", project, "--password-stdin"); code == 0 ||
		!strings.Contains(errOut, "platform-managed") {
		t.Fatalf("changing a platform-managed connection's password: exit %d %s", code, errOut)
	}
	admin.Must("", "app-connections", "update", "my-pg-connection", "--project-id", project, "--name", "orders-db")
	admin.Must("", "app-connections", "delete", "orders-db", "--project-id", project)
	if out := admin.Must("", "app-connections", "list", "--project-id", project); strings.Contains(out, "orders-db") {
		t.Fatalf("deleted but listed:\n%s", out)
	}

	// A connection that is not platform-managed, made with the CLI.
	pgRole(t, pg, "plain_role", "plain-password")
	caFile := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(caFile, pg.Cluster.CA.CertPEM, 0o644); err != nil {
		t.Fatal(err)
	}
	admin.Must("plain-password\n", "app-connections", "create", "postgres", "--project-id", project, "--name", "plain", "--host", "127.0.0.1",
		"--port", fmt.Sprint(pg.Cluster.Port), "--database", pg.Name, "--username", "plain_role", "--password-stdin", "--ssl-ca-file", caFile)
	if !pgLogsIn(pg, "plain_role", "plain-password") {
		t.Fatal("a connection that is not platform-managed changed the password")
	}

	// Without the setting: 127.0.0.1 is refused, naming it; nothing is saved.
	strict := e2e.StartServer(t)
	strictAdmin := e2e.NewUser(t)
	strictAdmin.Login(strict, strict.AdminEmail, strict.AdminPassword)
	p2 := strings.TrimSpace(strictAdmin.Must("", "projects", "create", "payments"))
	_, errOut, code := strictAdmin.Run("plain-password\n", "app-connections", "create", "postgres", "--project-id", p2, "--name", "plain",
		"--host", "127.0.0.1", "--port", fmt.Sprint(pg.Cluster.Port), "--database", pg.Name, "--username", "plain_role", "--password-stdin", "--ssl-ca-file", caFile)
	if code == 0 || !strings.Contains(errOut, "AIRLOCK_ALLOW_INTERNAL_IP_CONNECTIONS=true") {
		t.Fatalf("127.0.0.1 without the setting: exit %d %s", code, errOut)
	}
	if out := strictAdmin.Must("", "app-connections", "list", "--project-id", p2); strings.Contains(out, "plain") {
		t.Fatalf("a refused connection was saved:\n%s", out)
	}
}

// TestSecretsAppConnectionThroughGateway: through a gateway the server's
// internal-address guard does not apply (the server runs without the
// setting): the gateway logs in, and with platform-managed credentials sets
// the new password (the original stops working). A gateway the project may
// not use is refused.
func TestSecretsAppConnectionThroughGateway(t *testing.T) {
	w := newWorld(t)
	conn, err := pgx.Connect(context.Background(), w.pg.SuperURL(testenv.AppDatabase))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := conn.Exec(context.Background(), `CREATE ROLE gw_rotator LOGIN PASSWORD 'gw-original'`); err != nil {
		t.Fatal(err)
	}
	conn.Close(context.Background())
	args := []string{"app-connections", "create", "postgres", "--project-id", w.project, "--name", "via-gateway", "--gateway", "dc1",
		"--host", "127.0.0.1", "--port", fmt.Sprint(w.pg.Port), "--database", testenv.AppDatabase, "--username", "gw_rotator",
		"--password-stdin", "--ssl-ca-file", w.caFile, "--platform-managed"}
	other := strings.TrimSpace(w.admin.Must("", "projects", "create", "elsewhere"))
	bad := append([]string{}, args...)
	bad[4] = other
	if _, errOut, code := w.admin.Run("gw-original\n", bad...); code == 0 || !strings.Contains(errOut, "allow-project") {
		t.Fatalf("a gateway the project may not use: exit %d %s", code, errOut)
	}
	w.admin.Must("gw-original\n", args...)
	login := func(pw string) bool {
		c, err := pgx.Connect(context.Background(), fmt.Sprintf("postgres://gw_rotator:%s@127.0.0.1:%d/%s?sslmode=verify-full&sslrootcert=%s",
			pw, w.pg.Port, testenv.AppDatabase, w.caFile))
		if err != nil {
			return false
		}
		c.Close(context.Background())
		return true
	}
	if login("gw-original") {
		t.Fatal("the original password still logs in after a platform-managed create through the gateway")
	}
}
