package e2e_test

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/airlockpam/airlock/internal/e2e"
	"github.com/airlockpam/airlock/internal/testenv"
)

// An --allow-targets that does not parse stops the gateway before anything
// else, and says which entry is wrong.
func TestGatewayRefusesAnAllowTargetsThatDoesNotParse(t *testing.T) {
	u := e2e.NewUser(t)
	for value, want := range map[string]string{
		"10.0.0.0/8,bogus": `entry 2 ("bogus")`,
		"10.0.0.0/33":      `entry 1 ("10.0.0.0/33")`,
		"10.0.0.0/8:70000": "bad port",
		"192.168.0.0/16,,": "entry 2",
	} {
		_, stderr, code := u.Run("", "gateway", "--allow-targets", value, "--data-dir", t.TempDir(), "--domain", "http://127.0.0.1:1")
		if code == 0 || !strings.Contains(stderr, "--allow-targets") || !strings.Contains(stderr, want) {
			t.Errorf("--allow-targets %q: exit %d, stderr %q; want a refusal naming %s", value, code, stderr, want)
		}
	}
}

// lghStartGateway registers a gateway and starts it with env and args, the
// token given as tokenHow says: "env" or "file".
func lghStartGateway(t *testing.T, srv *e2e.Server, admin *e2e.User, name, tokenHow string, env []string) (*e2e.Process, string) {
	t.Helper()
	var gw struct{ EnrollmentToken string }
	admin.JSON(&gw, "", "gateways", "create", name)
	args := []string{"gateway", "--domain", srv.URL, "--data-dir", t.TempDir()}
	switch tokenHow {
	case "env":
		env = append(env, "AIRLOCK_GATEWAY_TOKEN="+gw.EnrollmentToken)
	case "file":
		f := filepath.Join(t.TempDir(), "token")
		if err := os.WriteFile(f, []byte(gw.EnrollmentToken+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		args = append(args, "--token-file", f)
	}
	return e2e.Start(t, env, args...), gw.EnrollmentToken
}

func lghWaitOnline(t *testing.T, admin *e2e.User, name string) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		var gs []struct {
			Name   string
			Online bool
		}
		admin.JSON(&gs, "", "gateways", "list")
		for _, g := range gs {
			if g.Name == name && g.Online {
				return
			}
		}
		time.Sleep(200 * time.Millisecond)
	}
	t.Fatalf("gateway %s never came online", name)
}

// The enrollment token is taken from a file or the environment; it is not in
// the gateway's command line, which every local user can read. (The
// environment a process started with stays readable in /proc/PID/environ,
// but only to its own user and root.)
func TestGatewayTokenStaysOffTheCommandLine(t *testing.T) {
	srv := e2e.StartServer(t)
	admin := e2e.NewUser(t)
	admin.Login(srv, srv.AdminEmail, srv.AdminPassword)
	for _, how := range []string{"env", "file"} {
		name := "gw-" + how
		p, token := lghStartGateway(t, srv, admin, name, how, nil)
		lghWaitOnline(t, admin, name)
		pid := p.Cmd.Process.Pid
		for _, f := range []string{"cmdline"} {
			b, err := os.ReadFile(fmt.Sprintf("/proc/%d/%s", pid, f))
			if err != nil {
				t.Fatal(err)
			}
			if bytes.Contains(b, []byte(token)) {
				t.Errorf("token from %s: the gateway's /proc/%d/%s holds the enrollment token", how, pid, f)
			}
		}
		if strings.Contains(p.Stderr(), token) || strings.Contains(p.Stdout(), token) {
			t.Errorf("token from %s: the gateway logged its enrollment token", how)
		}
	}
}

// With the default policy a gateway does not reach its own loopback: an
// account of a resource on 127.0.0.1 cannot be validated through it, and
// the words say why.
func TestGatewayDefaultPolicyRefusesItsLoopback(t *testing.T) {
	pg := testenv.StartPostgres(t)
	srv := e2e.StartServer(t)
	admin := e2e.NewUser(t)
	admin.Login(srv, srv.AdminEmail, srv.AdminPassword)
	// An empty value is the default policy.
	gw, _ := lghStartGateway(t, srv, admin, "strict", "env", []string{"AIRLOCK_GATEWAY_ALLOW_TARGETS="})
	lghWaitOnline(t, admin, "strict")
	caFile := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(caFile, pg.CA.CertPEM, 0o644); err != nil {
		t.Fatal(err)
	}
	project := strings.TrimSpace(admin.Must("", "projects", "create", "p"))
	admin.Must("", "resources", "create", "postgres", "--project-id", project, "--name", "local", "--gateway", "strict",
		"--host", "127.0.0.1", "--port", fmt.Sprint(pg.Port), "--database", testenv.AppDatabase, "--ssl-ca-file", caFile)
	role := pg.SCRAMUser
	_, stderr, code := admin.Run(role.Password, "accounts", "create", "--project-id", project, "--resource", "local", "--name", "app",
		"--username", role.User, "--password-stdin")
	if code == 0 || !strings.Contains(stderr, "cannot reach") {
		t.Fatalf("accounts create through a gateway that may not reach loopback: exit %d, stderr %q", code, stderr)
	}
	if !strings.Contains(gw.Stderr(), "allow_targets") {
		t.Errorf("the gateway does not log its target policy:\n%s", gw.Stderr())
	}
}
