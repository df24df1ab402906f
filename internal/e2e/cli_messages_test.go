package e2e_test

import (
	"strings"
	"testing"
	"time"

	"github.com/airlockpam/airlock/internal/e2e"
)

// cmRefused runs the binary as u and fails the test unless it exits 1 with
// every one of wants in its standard error and nothing on standard output.
func cmRefused(t *testing.T, u *e2e.User, stdin string, wants []string, args ...string) string {
	t.Helper()
	out, errOut, code := u.Run(stdin, args...)
	if code != 1 {
		t.Fatalf("airlock %s: exit %d, want 1\nstdout: %s\nstderr: %s", strings.Join(args, " "), code, out, errOut)
	}
	for _, w := range wants {
		if !strings.Contains(errOut, w) {
			t.Fatalf("airlock %s: stderr lacks %q:\n%s", strings.Join(args, " "), w, errOut)
		}
	}
	return errOut
}

// TestCLIMistypedSubcommandSaysSo: a mistyped command under a group says
// that the command is unknown and names the nearest one, instead of
// complaining about the flags that follow it or printing the group's help
// with exit 0.
func TestCLIMistypedSubcommandSaysSo(t *testing.T) {
	u := e2e.NewUser(t)
	cmRefused(t, u, "", []string{`unknown command "acces" for "airlock db"`, "did you mean access?"},
		"db", "acces", "--project-id", "P", "--resource", "R", "--account", "A")
	cmRefused(t, u, "", []string{`unknown command "acces" for "airlock db"`, "did you mean access?"}, "db", "acces")
	cmRefused(t, u, "", []string{`unknown command "postgre" for "airlock resources create"`, "did you mean postgres?"},
		"resources", "create", "postgre", "--project-id", "P", "--name", "n")
	cmRefused(t, u, "", []string{`unknown command "lst" for "airlock projects members"`, "list"},
		"projects", "members", "lst", "--project-id", "P")
	cmRefused(t, u, "", []string{`unknown command "logn" for "airlock"`, "did you mean login?"}, "logn", "--domain", "http://127.0.0.1:1")
	// A mistyped flag of a group is still a flag error.
	cmRefused(t, u, "", []string{"unknown flag: --projct-id"}, "db", "--projct-id", "P")
	// The group alone still prints its help.
	if out := u.Must("", "db"); !strings.Contains(out, "access") {
		t.Fatalf("airlock db: %s", out)
	}
}

// TestCLIProjectByName: --project-id takes a project's name as well as its
// id, wherever it appears; a name that matches none of the user's projects
// says so and how to find them, and changes nothing.
func TestCLIProjectByName(t *testing.T) {
	srv := e2e.StartServer(t)
	admin := e2e.NewUser(t)
	admin.Login(srv, srv.AdminEmail, srv.AdminPassword)
	id := strings.TrimSpace(admin.Must("", "projects", "create", "payments"))

	// The name reaches the project: an empty project's resources, its
	// members, its sessions, the project itself and its audit events.
	if out := admin.Must("", "resources", "list", "--project-id", "payments"); !strings.Contains(out, "(none)") {
		t.Fatalf("resources list by name: %s", out)
	}
	if out := admin.Must("", "projects", "members", "list", "--project-id", "payments"); !strings.Contains(out, srv.AdminEmail) {
		t.Fatalf("members list by name: %s", out)
	}
	admin.Must("", "sessions", "list", "--project-id", "payments")
	if out := admin.Must("", "projects", "get", "payments"); !strings.Contains(out, id) {
		t.Fatalf("projects get by name: %s", out)
	}
	if out := admin.Must("", "audit", "list", "--project-id", "payments", "--action", "project.create"); !strings.Contains(out, id) {
		t.Fatalf("audit list by name: %s", out)
	}
	// db access by name goes as far as the resource, which does not exist.
	cmRefused(t, admin, "", []string{"starting a session on account app of resource orders-db"},
		"db", "access", "--project-id", "payments", "--resource", "orders-db", "--account", "app")

	// A name that matches nothing says so, names the way to find projects,
	// and creates nothing.
	for _, args := range [][]string{
		{"resources", "list", "--project-id", "paymnts"},
		{"db", "access", "--project-id", "paymnts", "--resource", "orders-db", "--account", "app"},
		{"resources", "create", "postgres", "--project-id", "paymnts", "--name", "orders-db", "--gateway", "local",
			"--host", "127.0.0.1", "--database", "orders"},
		{"gateways", "allow-project", "local", "--project-id", "paymnts"},
	} {
		cmRefused(t, admin, "", []string{`no project named "paymnts" among your projects`, "`airlock projects list`"}, args...)
	}
	if out := admin.Must("", "resources", "list", "--project-id", id); !strings.Contains(out, "(none)") {
		t.Fatalf("a refused create changed something: %s", out)
	}
}

// TestCLIDomainHints: after a logout, "not logged in" names the server just
// used; a loopback --domain without a scheme asks which one was meant.
func TestCLIDomainHints(t *testing.T) {
	srv := e2e.StartServer(t)
	u := e2e.NewUser(t)
	cmRefused(t, u, "", []string{"you are not logged in", "airlock login --domain https://airlock.example.com"}, "projects", "list")
	u.Login(srv, srv.AdminEmail, srv.AdminPassword)
	u.Must("", "logout")
	cmRefused(t, u, "", []string{"you are not logged in: run `airlock login --domain " + srv.URL + "`"}, "projects", "list")

	addr := strings.TrimPrefix(srv.URL, "http://")
	cmRefused(t, u, srv.AdminPassword, []string{"--domain needs a scheme: did you mean http://" + addr, "or https://" + addr + "?"},
		"login", "--domain", addr, "--email", srv.AdminEmail, "--password-stdin")
	cmRefused(t, u, "", []string{"you are not logged in"}, "projects", "list")
}

// TestCLIResourceErrorsNameFlags: the server's refusals of a resource's
// settings reach the CLI user with the CLI's flags in them, not the API's
// field names, and nothing is created.
func TestCLIResourceErrorsNameFlags(t *testing.T) {
	srv := e2e.StartServer(t)
	admin := e2e.NewUser(t)
	admin.Login(srv, srv.AdminEmail, srv.AdminPassword)
	admin.Must("", "projects", "create", "payments")
	mongo := func(uri string) []string {
		return []string{"resources", "create", "mongodb", "--project-id", "payments", "--name", "docs", "--gateway", "local",
			"--connection-string", uri}
	}
	for _, uri := range []string{"mongodb://db.example.com/?tls=true", "mongodb://db.example.com/?tlsCAFile=/etc/ca.pem", "mongodb://db.example.com/?ssl=false"} {
		e := cmRefused(t, admin, "", []string{"--connection-string: remove the TLS options",
			"--ssl-enabled, --ssl-reject-unauthorized and --ssl-ca-file"}, mongo(uri)...)
		for _, api := range []string{"sslEnabled", "sslRejectUnauthorized", "sslCaPem", "connectionString"} {
			if strings.Contains(e, api) {
				t.Fatalf("%s: the error names the API field %s: %s", uri, api, e)
			}
		}
	}
	cmRefused(t, admin, "", []string{"--database"}, mongo("mongodb://db.example.com/sales")...)
	cmRefused(t, admin, "", []string{"--host: give the host without a port: the port goes in --port"},
		"resources", "create", "postgres", "--project-id", "payments", "--name", "pg", "--gateway", "local",
		"--host", "db.example.com:5433", "--database", "orders")
	if out := admin.Must("", "resources", "list", "--project-id", "payments"); !strings.Contains(out, "(none)") {
		t.Fatalf("a refused resource was created: %s", out)
	}
}

// cmGateway starts a gateway named name for srv and waits until it is
// online.
func cmGateway(t *testing.T, srv *e2e.Server, admin *e2e.User, name string) {
	t.Helper()
	var gw struct{ EnrollmentToken string }
	admin.JSON(&gw, "", "gateways", "create", name)
	e2e.Start(t, nil, "gateway", "--domain", srv.URL, "--token", gw.EnrollmentToken, "--data-dir", t.TempDir())
	deadline := time.Now().Add(30 * time.Second)
	for !strings.Contains(admin.Must("", "gateways", "list"), "online") {
		if time.Now().After(deadline) {
			t.Fatal("the gateway did not come online")
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// TestCLIUnresolvableMongoHost: a MongoDB host that does not resolve is
// reported as such to an organization admin, not as a connection string
// that cannot be parsed; anyone else learns only that it cannot be reached.
// (The names end in .invalid, which no resolver answers.)
func TestCLIUnresolvableMongoHost(t *testing.T) {
	srv := e2e.StartServer(t)
	admin := e2e.NewUser(t)
	admin.Login(srv, srv.AdminEmail, srv.AdminPassword)
	cmGateway(t, srv, admin, "dc1")
	admin.Must("", "projects", "create", "docs")
	admin.Must("project admin pw 1", "users", "create", "--email", "pa@example.com", "--password-stdin")
	admin.Must("", "projects", "members", "set", "--project-id", "docs", "--email", "pa@example.com", "--role", "admin")
	projectAdmin := e2e.NewUser(t)
	projectAdmin.Login(srv, "pa@example.com", "project admin pw 1")

	for _, tc := range []struct{ name, uri string }{
		{"srv", "mongodb+srv://cluster0.airlock-test.invalid/"},
		{"plain", "mongodb://db.airlock-test.invalid:27017/"},
	} {
		host := strings.TrimSuffix(strings.Split(tc.uri, "://")[1], "/")
		host = strings.TrimSuffix(host, ":27017")
		admin.Must("", "resources", "create", "mongodb", "--project-id", "docs", "--name", tc.name, "--gateway", "dc1",
			"--connection-string", tc.uri, "--ssl-enabled=false")
		account := []string{"accounts", "create", "--project-id", "docs", "--resource", tc.name, "--name", "app",
			"--username", "app", "--password-stdin"}
		e := cmRefused(t, admin, "app password 1", []string{"cannot resolve host " + host}, account...)
		if strings.Contains(e, "pars") || strings.Contains(e, "invalid MongoDB resource") || strings.Contains(e, "app password 1") {
			t.Fatalf("%s: %s", tc.name, e)
		}
		e = cmRefused(t, projectAdmin, "app password 1", []string{"the credentials were not saved: cannot reach"}, account...)
		if strings.Contains(e, "resolve") || strings.Contains(e, "app password 1") {
			t.Fatalf("%s: a project admin sees the gateway's words: %s", tc.name, e)
		}
	}
}
