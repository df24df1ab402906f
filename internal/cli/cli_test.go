package cli_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/airlockpam/airlock/internal/keyring"
	"github.com/airlockpam/airlock/internal/testenv"
)

var bin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "airlock-cli-test")
	if err != nil {
		panic(err)
	}
	bin = filepath.Join(dir, "airlock")
	if out, err := exec.Command("go", "build", "-o", bin, "github.com/airlockpam/airlock/cmd/airlock").CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "building airlock: %v\n%s", err, out)
		os.Exit(1)
	}
	code := m.Run()
	testenv.CleanupShared()
	os.RemoveAll(dir)
	os.Exit(code)
}

// user is one person at one machine: their own config directory.
type user struct {
	t      *testing.T
	config string
	env    []string
}

func newUser(t *testing.T) *user {
	return &user{t: t, config: t.TempDir()}
}

// run runs airlock with args and stdin; it returns stdout, stderr and the exit code.
func (u *user) run(stdin string, args ...string) (string, string, int) {
	u.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Env = append(os.Environ(), "AIRLOCK_CONFIG_DIR="+u.config)
	cmd.Env = append(cmd.Env, u.env...)
	cmd.Stdin = strings.NewReader(stdin)
	var out, errb strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		u.t.Fatalf("running airlock %v: %v", args, err)
	}
	return out.String(), errb.String(), code
}

// must runs airlock and fails the test unless it exits 0.
func (u *user) must(stdin string, args ...string) string {
	u.t.Helper()
	out, errOut, code := u.run(stdin, args...)
	if code != 0 {
		u.t.Fatalf("airlock %v: exit %d\nstdout: %s\nstderr: %s", args, code, out, errOut)
	}
	return out
}

func freeAddr(t *testing.T) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// startProcess starts airlock in the background, stopped when the test ends,
// and returns its stdout lines as they come.
func startProcess(t *testing.T, env []string, args ...string) (*exec.Cmd, <-chan string, *strings.Builder) {
	t.Helper()
	cmd := exec.Command(bin, args...)
	cmd.Env = append(os.Environ(), env...)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Signal(os.Interrupt)
		done := make(chan struct{})
		go func() { cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			cmd.Process.Kill()
			<-done
		}
	})
	lines := make(chan string, 100)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
	}()
	return cmd, lines, &stderr
}

func waitReady(t *testing.T, url string) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		resp, err := http.Get(url + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("server at %s did not become ready", url)
}

func startServer(t *testing.T, extraEnv ...string) string {
	t.Helper()
	addr := freeAddr(t)
	env := append([]string{"AIRLOCK_ROOT_KEY=" + keyring.GenerateRootKey(),
		"AIRLOCK_BOOTSTRAP_EMAIL=root@example.com", "AIRLOCK_BOOTSTRAP_PASSWORD=root password 123"}, extraEnv...)
	_, _, stderr := startProcess(t, env, "server", "--listen", addr, "--data-dir", t.TempDir())
	url := "http://" + addr
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("server log:\n%s", stderr.String())
		}
	})
	waitReady(t, url)
	return url
}

func TestServerRefusesToStartWithoutARootKey(t *testing.T) {
	u := newUser(t)
	u.env = []string{"AIRLOCK_ROOT_KEY="}
	_, errOut, code := u.run("", "server", "--data-dir", t.TempDir(), "--listen", freeAddr(t))
	if code == 0 || !strings.Contains(errOut, "no root key") || !strings.Contains(errOut, "openssl rand -base64 32") {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	u.env = []string{"AIRLOCK_ROOT_KEY=c2hvcnQ="}
	_, errOut, code = u.run("", "server", "--data-dir", t.TempDir())
	if code == 0 || !strings.Contains(errOut, "decodes to 5 bytes, it must be 32") {
		t.Fatalf("short key: exit %d: %s", code, errOut)
	}
}

func TestServerWithUnreachableDatabase(t *testing.T) {
	u := newUser(t)
	u.env = []string{"AIRLOCK_ROOT_KEY=" + keyring.GenerateRootKey()}
	port := strings.Split(freeAddr(t), ":")[1] // nothing listens there
	_, errOut, code := u.run("", "server", "--database-url", "postgres://airlock:hunter2pw@127.0.0.1:"+port+"/airlock?connect_timeout=2")
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
	u.must("root password 123", "login", "--domain", url, "--email", "root@example.com", "--password-stdin")
	id := strings.TrimSpace(u.must("", "projects", "create", "on-postgres"))
	if !strings.Contains(u.must("", "projects", "list"), id) {
		t.Fatal("project not listed")
	}
}

var uuidRE = regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$`)

func TestLoginProjectsAuditLogout(t *testing.T) {
	url := startServer(t)
	u := newUser(t)

	// Wrong password: a clear error, nothing stored.
	_, errOut, code := u.run("wrong password!!", "login", "--domain", url, "--email", "root@example.com", "--password-stdin")
	if code == 0 || !strings.Contains(errOut, "the email or password is wrong") {
		t.Fatalf("wrong password: exit %d: %s", code, errOut)
	}
	if _, err := os.Stat(filepath.Join(u.config, "credentials.json")); !os.IsNotExist(err) {
		t.Fatal("a failed login stored credentials")
	}
	// No terminal and no --password-stdin: say what to do.
	_, errOut, code = u.run("", "login", "--domain", url, "--email", "root@example.com")
	if code == 0 || !strings.Contains(errOut, "--password-stdin") {
		t.Fatalf("no terminal: exit %d: %s", code, errOut)
	}
	// Not logged in yet.
	_, errOut, code = u.run("", "projects", "list")
	if code == 0 || !strings.Contains(errOut, "airlock login") {
		t.Fatalf("not logged in: exit %d: %s", code, errOut)
	}

	out := u.must("root password 123\n", "login", "--domain", url, "--email", "root@example.com", "--password-stdin")
	if !strings.Contains(out, "Logged in") {
		t.Fatalf("login output: %s", out)
	}
	credPath := filepath.Join(u.config, "credentials.json")
	fi, err := os.Stat(credPath)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("credentials file: %v %v", fi, err)
	}

	id := strings.TrimSpace(u.must("", "projects", "create", "billing"))
	if !uuidRE.MatchString(id) {
		t.Fatalf("projects create printed %q, want the id", id)
	}
	table := u.must("", "projects", "list")
	if !strings.HasPrefix(table, "ID") || !strings.Contains(table, id) || !strings.Contains(table, "billing") {
		t.Fatalf("table: %s", table)
	}
	var projects []map[string]any
	if err := json.Unmarshal([]byte(u.must("", "projects", "list", "--output", "json")), &projects); err != nil || len(projects) != 1 || projects[0]["id"] != id {
		t.Fatalf("json list: %v %v", projects, err)
	}
	_, errOut, code = u.run("", "projects", "create", "billing")
	if code == 0 || !strings.Contains(errOut, `a project named "billing" already exists`) {
		t.Fatalf("duplicate: exit %d: %s", code, errOut)
	}
	_, errOut, code = u.run("", "projects", "list", "-o", "yaml")
	if code == 0 || !strings.Contains(errOut, "--output must be table or json") {
		t.Fatalf("bad output flag: exit %d: %s", code, errOut)
	}

	audit := u.must("", "audit", "list", "--action", "project.create")
	if !strings.Contains(audit, "project.create") || !strings.Contains(audit, "root@example.com") || !strings.Contains(audit, id) {
		t.Fatalf("audit list: %s", audit)
	}
	var evs []map[string]any
	json.Unmarshal([]byte(u.must("", "audit", "list", "--from", "1h", "-o", "json")), &evs)
	if len(evs) < 3 {
		t.Fatalf("audit json: %v", evs)
	}

	// A machine identity logs in from the environment.
	var mi map[string]any
	json.Unmarshal([]byte(u.must("", "machine-identities", "create", "ci", "-o", "json")), &mi)
	bot := newUser(t)
	bot.env = []string{"AIRLOCK_CLIENT_ID=" + mi["clientId"].(string), "AIRLOCK_CLIENT_SECRET=" + mi["clientSecret"].(string)}
	if out := bot.must("", "login", "--domain", url); !strings.Contains(out, "machine identity") {
		t.Fatalf("machine login: %s", out)
	}
	if out := bot.must("", "projects", "list"); !strings.Contains(out, "(none)") {
		t.Fatalf("machine sees projects it is not in: %s", out)
	}

	// Logout revokes the token on the server and removes it here.
	var creds struct{ AccessToken string }
	b, _ := os.ReadFile(credPath)
	json.Unmarshal(b, &creds)
	u.must("", "logout")
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
	addr := freeAddr(t)
	env := []string{"XDG_STATE_HOME=" + state}
	cmd, lines, _ := startProcess(t, env, "dev", "--listen", addr)
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
	u.must(password, "login", "--domain", "http://"+addr, "--email", email, "--password-stdin")
	u.must("", "projects", "create", "dev-project")
	// The built-in gateway enrolls itself and comes online.
	gwDeadline := time.Now().Add(20 * time.Second)
	for !strings.Contains(u.must("", "gateways", "list"), "online") {
		if time.Now().After(gwDeadline) {
			t.Fatalf("the built-in gateway is not online:\n%s", u.must("", "gateways", "list"))
		}
		time.Sleep(200 * time.Millisecond)
	}

	// A second start keeps the data and does not print a password.
	cmd.Process.Signal(os.Interrupt)
	cmd.Wait()
	_, lines2, _ := startProcess(t, env, "dev", "--listen", addr)
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
	if !strings.Contains(u.must("", "projects", "list"), "dev-project") {
		t.Fatal("data lost across restarts")
	}
}
