package cli_test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/airlockpam/airlock/internal/e2e"
	"github.com/airlockpam/airlock/internal/keyring"
	"github.com/airlockpam/airlock/internal/testenv"
)

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "airlock-cli-test")
	if err != nil {
		panic(err)
	}
	if err := e2e.Build(dir); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	code := m.Run()
	testenv.CleanupShared()
	os.RemoveAll(dir)
	os.Exit(code)
}

func newUser(t *testing.T) *e2e.User { return e2e.NewUser(t) }

func startServer(t *testing.T, extraEnv ...string) string { return e2e.StartServer(t, extraEnv...).URL }

func TestServerRefusesToStartWithoutARootKey(t *testing.T) {
	u := newUser(t)
	u.Env = []string{"AIRLOCK_ROOT_KEY="}
	_, errOut, code := u.Run("", "server", "--data-dir", t.TempDir(), "--listen", e2e.FreeAddr(t))
	if code == 0 || !strings.Contains(errOut, "no root key") || !strings.Contains(errOut, "openssl rand -base64 32") {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	u.Env = []string{"AIRLOCK_ROOT_KEY=c2hvcnQ="}
	_, errOut, code = u.Run("", "server", "--data-dir", t.TempDir())
	if code == 0 || !strings.Contains(errOut, "decodes to 5 bytes, it must be 32") {
		t.Fatalf("short key: exit %d: %s", code, errOut)
	}
}

func TestServerWithUnreachableDatabase(t *testing.T) {
	u := newUser(t)
	u.Env = []string{"AIRLOCK_ROOT_KEY=" + keyring.GenerateRootKey()}
	port := strings.Split(e2e.FreeAddr(t), ":")[1] // nothing listens there
	_, errOut, code := u.Run("", "server", "--database-url", "postgres://airlock:hunter2pw@127.0.0.1:"+port+"/airlock?connect_timeout=2")
	if code == 0 || !strings.Contains(errOut, "cannot reach the PostgreSQL store") {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	if strings.Contains(errOut, "hunter2pw") {
		t.Fatalf("the error shows the database password: %s", errOut)
	}
}

func TestServerOnPostgres(t *testing.T) {
	db := testenv.SharedPostgres(t)
	url := startServer(t, "AIRLOCK_DATABASE_URL="+db.SuperURL())
	u := newUser(t)
	u.Must("root password 123", "login", "--domain", url, "--email", "root@example.com", "--password-stdin")
	id := strings.TrimSpace(u.Must("", "projects", "create", "on-postgres"))
	if !strings.Contains(u.Must("", "projects", "list"), id) {
		t.Fatal("project not listed")
	}
}

var uuidRE = regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$`)

func TestLoginProjectsAuditLogout(t *testing.T) {
	url := startServer(t)
	u := newUser(t)

	// Wrong password: a clear error, nothing stored.
	_, errOut, code := u.Run("wrong password!!", "login", "--domain", url, "--email", "root@example.com", "--password-stdin")
	if code == 0 || !strings.Contains(errOut, "the email or password is wrong") {
		t.Fatalf("wrong password: exit %d: %s", code, errOut)
	}
	if _, err := os.Stat(filepath.Join(u.Config, "credentials.json")); !os.IsNotExist(err) {
		t.Fatal("a failed login stored credentials")
	}
	// No terminal and no --password-stdin: say what to do.
	_, errOut, code = u.Run("", "login", "--domain", url, "--email", "root@example.com")
	if code == 0 || !strings.Contains(errOut, "--password-stdin") {
		t.Fatalf("no terminal: exit %d: %s", code, errOut)
	}
	// Not logged in yet.
	_, errOut, code = u.Run("", "projects", "list")
	if code == 0 || !strings.Contains(errOut, "airlock login") {
		t.Fatalf("not logged in: exit %d: %s", code, errOut)
	}

	out := u.Must("root password 123\n", "login", "--domain", url, "--email", "root@example.com", "--password-stdin")
	if !strings.Contains(out, "Logged in") {
		t.Fatalf("login output: %s", out)
	}
	credPath := filepath.Join(u.Config, "credentials.json")
	fi, err := os.Stat(credPath)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("credentials file: %v %v", fi, err)
	}

	id := strings.TrimSpace(u.Must("", "projects", "create", "billing"))
	if !uuidRE.MatchString(id) {
		t.Fatalf("projects create printed %q, want the id", id)
	}
	table := u.Must("", "projects", "list")
	if !strings.HasPrefix(table, "ID") || !strings.Contains(table, id) || !strings.Contains(table, "billing") {
		t.Fatalf("table: %s", table)
	}
	var projects []map[string]any
	if err := json.Unmarshal([]byte(u.Must("", "projects", "list", "--output", "json")), &projects); err != nil || len(projects) != 1 || projects[0]["id"] != id {
		t.Fatalf("json list: %v %v", projects, err)
	}
	_, errOut, code = u.Run("", "projects", "create", "billing")
	// The same neutral answer whether or not the caller can see the project
	// that holds the name (see the server's TestDuplicateProjectNameRevealsNothing).
	if code == 0 || !strings.Contains(errOut, "this project name is not available: choose another name") {
		t.Fatalf("duplicate: exit %d: %s", code, errOut)
	}
	_, errOut, code = u.Run("", "projects", "list", "-o", "yaml")
	if code == 0 || !strings.Contains(errOut, "--output must be table or json") {
		t.Fatalf("bad output flag: exit %d: %s", code, errOut)
	}

	audit := u.Must("", "audit", "list", "--action", "project.create")
	if !strings.Contains(audit, "project.create") || !strings.Contains(audit, "root@example.com") || !strings.Contains(audit, id) {
		t.Fatalf("audit list: %s", audit)
	}
	var evs []map[string]any
	json.Unmarshal([]byte(u.Must("", "audit", "list", "--from", "1h", "-o", "json")), &evs)
	if len(evs) < 3 {
		t.Fatalf("audit json: %v", evs)
	}

	// A machine identity logs in from the environment.
	var mi map[string]any
	json.Unmarshal([]byte(u.Must("", "machine-identities", "create", "ci", "-o", "json")), &mi)
	bot := newUser(t)
	bot.Env = []string{"AIRLOCK_CLIENT_ID=" + mi["clientId"].(string), "AIRLOCK_CLIENT_SECRET=" + mi["clientSecret"].(string)}
	if out := bot.Must("", "login", "--domain", url); !strings.Contains(out, "machine identity") {
		t.Fatalf("machine login: %s", out)
	}
	if out := bot.Must("", "projects", "list"); !strings.Contains(out, "(none)") {
		t.Fatalf("machine sees projects it is not in: %s", out)
	}

	// Logout revokes the token on the server and removes it here.
	var creds struct{ AccessToken string }
	b, _ := os.ReadFile(credPath)
	json.Unmarshal(b, &creds)
	u.Must("", "logout")
	if _, err := os.Stat(credPath); !os.IsNotExist(err) {
		t.Fatal("logout left the credentials file")
	}
	req, _ := http.NewRequest("GET", url+"/api/v1/auth/me", nil)
	req.Header.Set("Authorization", "Bearer "+creds.AccessToken)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 401 {
		t.Fatalf("token still valid after logout: %d", resp.StatusCode)
	}
}

func TestDevPrintsTheAdminOnce(t *testing.T) {
	state := t.TempDir()
	addr := e2e.FreeAddr(t)
	env := []string{"XDG_STATE_HOME=" + state}
	dev := e2e.Start(t, env, "dev", "--listen", addr)
	lines := dev.Lines
	var email, password string
	deadline := time.After(30 * time.Second)
	for password == "" {
		select {
		case l, ok := <-lines:
			if !ok {
				t.Fatal("dev exited")
			}
			if f := strings.Fields(l); len(f) == 2 && f[0] == "Admin:" {
				email = f[1]
			} else if len(f) == 2 && f[0] == "Password:" {
				password = f[1]
			}
		case <-deadline:
			t.Fatal("dev printed no password")
		}
	}
	dataDir := filepath.Join(state, "airlock", "dev")
	fi, err := os.Stat(filepath.Join(dataDir, "root.key"))
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("root key file: %v %v", fi, err)
	}
	u := newUser(t)
	u.Must(password, "login", "--domain", "http://"+addr, "--email", email, "--password-stdin")
	u.Must("", "projects", "create", "dev-project")
	// The built-in gateway enrolls itself and comes online.
	gwDeadline := time.Now().Add(20 * time.Second)
	for !strings.Contains(u.Must("", "gateways", "list"), "online") {
		if time.Now().After(gwDeadline) {
			t.Fatalf("the built-in gateway is not online:\n%s", u.Must("", "gateways", "list"))
		}
		time.Sleep(200 * time.Millisecond)
	}

	// A second start keeps the data and does not print a password.
	dev.Stop(syscall.SIGINT)
	lines2 := e2e.Start(t, env, "dev", "--listen", addr).Lines
	var out []string
	for l := range lines2 {
		out = append(out, l)
		if strings.HasPrefix(l, "Next:") {
			break
		}
	}
	joined := strings.Join(out, "\n")
	if strings.Contains(joined, "Password:") || strings.Contains(joined, password) {
		t.Fatalf("second start printed a password:\n%s", joined)
	}
	if !strings.Contains(u.Must("", "projects", "list"), "dev-project") {
		t.Fatal("data lost across restarts")
	}
}
