package e2e_test

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/airlockpam/airlock/internal/e2e"
	"github.com/airlockpam/airlock/internal/keyring"
	"github.com/airlockpam/airlock/internal/testenv"
)

// startServerArgs runs `airlock server` like e2e.StartServer, with extra
// command-line flags (such as --access-token-ttl 2s).
func startServerArgs(t *testing.T, args ...string) *e2e.Server {
	t.Helper()
	s := &e2e.Server{DataDir: t.TempDir(), RootKey: keyring.GenerateRootKey(), AdminEmail: "root@example.com", AdminPassword: "root password 123"}
	s.URL = "http://" + e2e.FreeAddr(t)
	s.Proc = runServer(t, s, args...)
	return s
}

// runServer starts (or starts again) the server s on its address, data
// directory and root key, and waits until it is ready.
func runServer(t *testing.T, s *e2e.Server, args ...string) *e2e.Process {
	t.Helper()
	env := []string{"AIRLOCK_ROOT_KEY=" + s.RootKey, "AIRLOCK_BOOTSTRAP_EMAIL=" + s.AdminEmail, "AIRLOCK_BOOTSTRAP_PASSWORD=" + s.AdminPassword}
	p := e2e.Start(t, env, append([]string{"server", "--listen", strings.TrimPrefix(s.URL, "http://"), "--data-dir", s.DataDir}, args...)...)
	e2e.WaitReady(t, s.URL)
	return p
}

// newWorldWith is newWorldOn with a server the test started itself: a
// gateway, a PostgreSQL cluster, a project and its resource main-db.
func newWorldWith(t *testing.T, srv *e2e.Server) *world {
	t.Helper()
	w := &world{t: t, pg: testenv.StartPostgres(t), srv: srv}
	w.admin = e2e.NewUser(t)
	w.admin.Login(w.srv, w.srv.AdminEmail, w.srv.AdminPassword)
	w.caFile = filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(w.caFile, w.pg.CA.CertPEM, 0o644); err != nil {
		t.Fatal(err)
	}
	conn, err := pgx.Connect(context.Background(), w.pg.SuperURL(testenv.AppDatabase))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	for _, stmt := range []string{`CREATE TABLE items (id int PRIMARY KEY, name text)`, `GRANT ALL ON items TO PUBLIC`} {
		if _, err := conn.Exec(context.Background(), stmt); err != nil {
			t.Fatal(err)
		}
	}
	var gw struct{ EnrollmentToken string }
	w.admin.JSON(&gw, "", "gateways", "create", "dc1")
	w.gwDir = t.TempDir()
	w.gw = e2e.Start(t, nil, "gateway", "--domain", w.srv.URL, "--token", gw.EnrollmentToken, "--data-dir", w.gwDir)
	w.waitGateway("dc1", true)
	w.project = strings.TrimSpace(w.admin.Must("", "projects", "create", "payments"))
	w.admin.Must("", "resources", "create", "postgres", "--project-id", w.project, "--name", "main-db", "--gateway", "dc1",
		"--host", "127.0.0.1", "--port", fmt.Sprint(w.pg.Port), "--database", testenv.AppDatabase, "--ssl-ca-file", w.caFile)
	return w
}

// psqlResult is what a psql run printed and how it exited.
type psqlResult struct {
	Out  string
	Code int
}

// psql runs /usr/bin/psql with a connection string and one command, as
// root or, with asNobody, as the OS user nobody. It never waits more than
// a minute: a client that hangs fails the test.
func psql(t *testing.T, asNobody bool, conninfo, command string) psqlResult {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	args := []string{"psql", "-X", "-A", "-t", "-v", "ON_ERROR_STOP=1", conninfo, "-c", command}
	if asNobody {
		args = append([]string{"setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups"}, args...)
	}
	cmd := exec.CommandContext(ctx, args[0], args[1:]...)
	cmd.Env = append(os.Environ(), "PGCONNECT_TIMEOUT=30", "HOME=/tmp")
	cmd.Dir = "/"
	out, err := cmd.CombinedOutput()
	if ctx.Err() != nil {
		t.Fatalf("psql %q hung: %s", command, out)
	}
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatalf("running psql: %v", err)
	}
	return psqlResult{Out: string(out), Code: code}
}

// sessionOf returns the session id that `db access` printed.
func sessionOf(t *testing.T, p *e2e.Process) string {
	t.Helper()
	m := sessionIDRE.FindStringSubmatch(p.Stdout())
	if m == nil {
		t.Fatalf("no session id in %q", p.Stdout())
	}
	return m[1]
}

// waitStderr waits until the process's stderr matches re or the process
// exits; it fails the test after timeout.
func waitStderr(t *testing.T, p *e2e.Process, re *regexp.Regexp, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !re.MatchString(p.Stderr()) {
		if time.Now().After(deadline) || p.Exited() {
			t.Fatalf("stderr never matched %s (exited: %v):\n%s", re, p.Exited(), p.Stderr())
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// killServer stops the server process at once, as a crash would.
func killServer(s *e2e.Server) { s.Proc.Stop(syscall.SIGKILL) }
