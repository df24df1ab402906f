package e2e_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/airlockpam/airlock/internal/e2e"
	"github.com/airlockpam/airlock/internal/testenv"
)

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "airlock-e2e")
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

// world is a server, an admin, a gateway and a PostgreSQL cluster.
type world struct {
	t       *testing.T
	srv     *e2e.Server
	admin   *e2e.User
	pg      *testenv.Postgres
	caFile  string
	project string
	gwDir   string
	gw      *e2e.Process
}

func newWorld(t *testing.T) *world { return newWorldOn(t) }

// newWorldOn starts the world with extra environment for the server (such
// as AIRLOCK_DATABASE_URL for a PostgreSQL store).
func newWorldOn(t *testing.T, serverEnv ...string) *world {
	return newWorldWith(t, e2e.StartServer(t, serverEnv...))
}

// newWorldWith starts the world on a server the test started: a
// PostgreSQL cluster with a table every role can use, a gateway dc1, a
// project and its resource main-db.
func newWorldWith(t *testing.T, srv *e2e.Server) *world {
	t.Helper()
	w := &world{t: t, pg: testenv.StartPostgres(t), srv: srv}
	w.admin = e2e.NewUser(t)
	w.admin.Login(w.srv, w.srv.AdminEmail, w.srv.AdminPassword)
	w.caFile = filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(w.caFile, w.pg.CA.CertPEM, 0o644); err != nil {
		t.Fatal(err)
	}
	// A table every role can read and write, for COPY and large results.
	conn, err := pgx.Connect(context.Background(), w.pg.SuperURL(testenv.AppDatabase))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	for _, stmt := range []string{
		`CREATE TABLE items (id int PRIMARY KEY, name text)`,
		`GRANT ALL ON items TO PUBLIC`,
	} {
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

func (w *world) waitGateway(name string, online bool) {
	w.t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		var gs []struct {
			Name   string
			Online bool
		}
		w.admin.JSON(&gs, "", "gateways", "list")
		for _, g := range gs {
			if g.Name == name && g.Online == online {
				return
			}
		}
		time.Sleep(200 * time.Millisecond)
	}
	w.t.Fatalf("gateway %s never became online=%v", name, online)
}

func (w *world) account(name string, role testenv.Role, extra ...string) {
	w.t.Helper()
	args := append([]string{"accounts", "create", "--project-id", w.project, "--resource", "main-db", "--name", name,
		"--username", role.User, "--password-stdin"}, extra...)
	w.admin.Must(role.Password, args...)
}

var urlLine = regexp.MustCompile(`^postgres://\S+@127\.0\.0\.1:\d+/\S+\?sslmode=disable$`)

// access runs `airlock db access` and returns the process and its URL.
func (w *world) access(u *e2e.User, account string, extra ...string) (*e2e.Process, string) {
	w.t.Helper()
	args := append([]string{"db", "access", "--project-id", w.project, "--resource", "main-db", "--account", account, "--domain", w.srv.URL}, extra...)
	p := u.Start(args...)
	return p, p.WaitLine(w.t, urlLine, 60*time.Second)
}

func connect(t *testing.T, url string) *pgx.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatalf("connect %s: %v", url, err)
	}
	t.Cleanup(func() { c.Close(context.Background()) })
	return c
}

func TestPostgresAccessEndToEnd(t *testing.T) {
	w := newWorld(t)
	ctx := context.Background()
	w.account("app", w.pg.SCRAMUser, "--description", "application user", "--metadata", "env=prod", "--metadata", "team=payments")
	// An md5 server gets no password until an organization admin allows
	// md5 for the resource.
	_, stderr, code := w.admin.Run(w.pg.MD5User.Password, "accounts", "create", "--project-id", w.project, "--resource", "main-db",
		"--name", "legacy", "--username", w.pg.MD5User.User, "--password-stdin")
	if code == 0 || !strings.Contains(stderr, "md5") {
		t.Fatalf("an md5 account without --allow-auth md5: exit %d, %q", code, stderr)
	}
	w.admin.Must("", "resources", "update", "main-db", "--project-id", w.project, "--allow-auth", "md5")
	w.account("legacy", w.pg.MD5User)
	w.account("secure", w.pg.TLSUser)

	// No listing or response ever holds a password.
	listing := w.admin.Must("", "accounts", "list", "--project-id", w.project, "--output", "json")
	for _, r := range w.pg.Roles() {
		if strings.Contains(listing, r.Password) {
			t.Fatalf("account listing shows the password of %s", r.User)
		}
	}

	// SCRAM, MD5 and TLS-only roles all work through the gateway; the
	// account's user wins over the one the client names.
	for _, tc := range []struct{ account, user string }{{"app", w.pg.SCRAMUser.User}, {"legacy", w.pg.MD5User.User}, {"secure", w.pg.TLSUser.User}} {
		t.Run(tc.account, func(t *testing.T) {
			p, url := w.access(w.admin, tc.account, "--duration", "30m")
			other := strings.Replace(url, "postgres://"+tc.user+"@", "postgres://someone_else@", 1)
			other += "&application_name=e2e-check"
			c := connect(t, other)
			var user, db, app string
			if err := c.QueryRow(ctx, "SELECT current_user, current_database(), current_setting('application_name')").Scan(&user, &db, &app); err != nil {
				t.Fatal(err)
			}
			if user != tc.user || db != testenv.AppDatabase || app != "e2e-check" {
				t.Fatalf("got user %s db %s app %s", user, db, app)
			}
			var ssl bool
			if err := c.QueryRow(ctx, "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()").Scan(&ssl); err != nil || !ssl {
				t.Fatalf("upstream connection is not TLS (ssl=%v, err=%v) though the resource requires it", ssl, err)
			}
			p.Stop(syscall.SIGINT)
			if code := p.Wait(t, 20*time.Second); code != 0 {
				t.Fatalf("db access exited %d after Ctrl+C: %s", code, p.Stderr())
			}
		})
	}

	p, url := w.access(w.admin, "app")
	sessionID := regexp.MustCompile(`Session (\S+) started`).FindStringSubmatch(p.Stdout())
	if sessionID == nil {
		t.Fatalf("no session id in %q", p.Stdout())
	}
	c := connect(t, url)

	t.Run("simple and extended protocol", func(t *testing.T) {
		var n int
		if err := c.QueryRow(ctx, "SELECT $1::int + 1", 41).Scan(&n); err != nil || n != 42 {
			t.Fatalf("extended: %d %v", n, err)
		}
		if err := c.QueryRow(ctx, "SELECT 41 + 1", pgx.QueryExecModeSimpleProtocol).Scan(&n); err != nil || n != 42 {
			t.Fatalf("simple: %d %v", n, err)
		}
		if _, err := c.Exec(ctx, "SELECT * FROM no_such_table"); err == nil || !strings.Contains(err.Error(), "42P01") {
			t.Fatalf("error passthrough: %v", err)
		}
		if err := c.Ping(ctx); err != nil {
			t.Fatalf("connection unusable after an error: %v", err)
		}
	})

	t.Run("copy in and out", func(t *testing.T) {
		rows := make([][]any, 5000)
		for i := range rows {
			rows[i] = []any{i, fmt.Sprintf("item-%d", i)}
		}
		n, err := c.CopyFrom(ctx, pgx.Identifier{"items"}, []string{"id", "name"}, pgx.CopyFromRows(rows))
		if err != nil || n != 5000 {
			t.Fatalf("copy from: %d %v", n, err)
		}
		var buf strings.Builder
		tag, err := c.PgConn().CopyTo(ctx, &buf, "COPY items TO STDOUT")
		if err != nil || tag.RowsAffected() != 5000 || !strings.Contains(buf.String(), "4999\titem-4999") {
			t.Fatalf("copy to: %v %v", tag, err)
		}
	})

	t.Run("100 MB result", func(t *testing.T) {
		rows, err := c.Query(ctx, "SELECT repeat('x', 1024) FROM generate_series(1, 102400)")
		if err != nil {
			t.Fatal(err)
		}
		var total, count int
		for rows.Next() {
			total += len(rows.RawValues()[0])
			count++
		}
		if rows.Err() != nil || count != 102400 || total != 100<<20 {
			t.Fatalf("streamed %d rows, %d bytes, err %v", count, total, rows.Err())
		}
	})

	t.Run("cancel", func(t *testing.T) {
		errc := make(chan error, 1)
		go func() {
			_, err := c.Exec(ctx, "SELECT pg_sleep(30)")
			errc <- err
		}()
		time.Sleep(500 * time.Millisecond) // let the query start
		start := time.Now()
		if err := c.PgConn().CancelRequest(ctx); err != nil {
			t.Fatal(err)
		}
		select {
		case err := <-errc:
			var pgErr *pgconn.PgError
			if !errors.As(err, &pgErr) || pgErr.Code != "57014" || !strings.Contains(pgErr.Message, "canceling statement due to user request") {
				t.Fatalf("cancelled query: %v", err)
			}
			t.Logf("cancel took %s", time.Since(start))
		case <-time.After(15 * time.Second):
			t.Fatal("the query was not cancelled")
		}
	})

	t.Run("50 concurrent connections", func(t *testing.T) {
		var wg sync.WaitGroup
		errs := make(chan error, 50)
		for i := 0; i < 50; i++ {
			wg.Add(1)
			go func(i int) {
				defer wg.Done()
				cctx, cancel := context.WithTimeout(ctx, 60*time.Second)
				defer cancel()
				cc, err := pgx.Connect(cctx, url)
				if err != nil {
					errs <- err
					return
				}
				defer cc.Close(ctx)
				var got int
				if err := cc.QueryRow(cctx, "SELECT $1::int FROM pg_sleep(0.2)", i).Scan(&got); err != nil || got != i {
					errs <- fmt.Errorf("conn %d: %d %v", i, got, err)
				}
			}(i)
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Error(err)
		}
	})

	t.Run("malformed bytes end one connection only", func(t *testing.T) {
		port := regexp.MustCompile(`127\.0\.0\.1:(\d+)`).FindStringSubmatch(url)[1]
		for _, junk := range [][]byte{
			[]byte("GET / HTTP/1.1\r\n\r\n"),
			{0x7f, 0xff, 0xff, 0xff, 0, 3, 0, 0}, // a length prefix of 2 GB
			{0, 0, 0, 8, 0, 3},                   // stops mid-message
		} {
			raw, err := net.Dial("tcp", "127.0.0.1:"+port)
			if err != nil {
				t.Fatal(err)
			}
			raw.Write(junk)
			if junk[len(junk)-1] == 3 && len(junk) == 6 {
				raw.(*net.TCPConn).CloseWrite()
			}
			raw.SetReadDeadline(time.Now().Add(40 * time.Second))
			io.ReadAll(raw) // the gateway answers (an ErrorResponse where it can) and closes
			raw.Close()
		}
		if err := c.Ping(ctx); err != nil {
			t.Fatalf("a healthy connection died with the malformed ones: %v", err)
		}
		if w.gw.Exited() {
			t.Fatal("the gateway exited")
		}
	})

	// Ctrl+C ends the session: connections close and the end is recorded.
	p.Stop(syscall.SIGINT)
	if code := p.Wait(t, 20*time.Second); code != 0 || !strings.Contains(p.Stdout(), "Session ended.") {
		t.Fatalf("exit %d, stdout %q", code, p.Stdout())
	}
	if err := c.Ping(ctx); err == nil {
		t.Fatal("a connection survived the end of its session")
	}
	var s struct {
		Status, EndReason string
		EndedAt           *time.Time
		Duration          string
	}
	w.admin.JSON(&s, "", "sessions", "show", sessionID[1])
	if s.Status != "ended" || s.EndReason != "ended_by_user" || s.EndedAt == nil || s.Duration == "" {
		t.Fatalf("session after Ctrl+C: %+v", s)
	}
}

func TestPostgresSessionExpiry(t *testing.T) {
	w := newWorld(t)
	w.account("app", w.pg.SCRAMUser)
	p, url := w.access(w.admin, "app", "--duration", "10s")
	c := connect(t, url)
	if err := c.Ping(context.Background()); err != nil {
		t.Fatal(err)
	}
	if code := p.Wait(t, 40*time.Second); code != 0 || !strings.Contains(p.Stdout(), "expired") {
		t.Fatalf("at expiry: exit %d, stdout %q", code, p.Stdout())
	}
	if err := c.Ping(context.Background()); err == nil {
		t.Fatal("a connection survived expiry")
	}
	// New connections are refused: nothing listens any more.
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if cc, err := pgx.Connect(ctx, url); err == nil {
		cc.Close(ctx)
		t.Fatal("connected after expiry")
	}
}

func TestAccountValidationAndAccessErrors(t *testing.T) {
	w := newWorld(t)
	try := func(stdin string, args ...string) string {
		t.Helper()
		_, errOut, code := w.admin.Run(stdin, args...)
		if code == 0 {
			t.Fatalf("airlock %v succeeded", args)
		}
		return errOut
	}
	create := func(name, user string, extra ...string) []string {
		return append([]string{"accounts", "create", "--project-id", w.project, "--resource", "main-db", "--name", name,
			"--username", user, "--password-stdin"}, extra...)
	}
	if e := try("wrong password", create("bad", w.pg.SCRAMUser.User)...); !strings.Contains(e, "wrong username or password") {
		t.Errorf("wrong password: %s", e)
	}
	// A resource whose CA is not the database's: TLS verification fails, and says why.
	other := testenv.NewCA(t)
	wrongCA := filepath.Join(t.TempDir(), "wrong.pem")
	os.WriteFile(wrongCA, other.CertPEM, 0o644)
	w.admin.Must("", "resources", "create", "postgres", "--project-id", w.project, "--name", "wrong-ca", "--gateway", "dc1",
		"--host", "127.0.0.1", "--port", fmt.Sprint(w.pg.Port), "--database", testenv.AppDatabase, "--ssl-ca-file", wrongCA)
	e := try(w.pg.SCRAMUser.Password, "accounts", "create", "--project-id", w.project, "--resource", "wrong-ca", "--name", "x",
		"--username", w.pg.SCRAMUser.User, "--password-stdin")
	if !strings.Contains(e, "certificate") {
		t.Errorf("wrong CA: %s", e)
	}
	if strings.Contains(e, w.pg.SCRAMUser.Password) {
		t.Errorf("the error shows the password: %s", e)
	}
	var accounts []json.RawMessage
	w.admin.JSON(&accounts, "", "accounts", "list", "--project-id", w.project)
	if len(accounts) != 0 {
		t.Fatalf("failed validations saved accounts: %s", accounts)
	}

	w.account("app", w.pg.SCRAMUser)
	access := func(args ...string) string {
		return try("", append([]string{"db", "access", "--project-id", w.project}, args...)...)
	}
	if e := access("--resource", "nope", "--account", "app"); !strings.Contains(e, "nope") {
		t.Errorf("unknown resource: %s", e)
	}
	if e := access("--resource", "main-db", "--account", "nope"); !strings.Contains(e, "nope") {
		t.Errorf("unknown account: %s", e)
	}
	if e := access("--resource", "main-db", "--account", "app", "--duration", "9h"); !strings.Contains(e, "maximum") {
		t.Errorf("duration past the maximum: %s", e)
	}
	if e := access("--resource", "main-db", "--account", "app", "--duration", "soon"); !strings.Contains(e, "30m") {
		t.Errorf("bad duration: %s", e)
	}
	// Another project's account is invisible.
	p2 := strings.TrimSpace(w.admin.Must("", "projects", "create", "other"))
	if e := try("", "db", "access", "--project-id", p2, "--resource", "main-db", "--account", "app"); !strings.Contains(e, "main-db") {
		t.Errorf("account of another project: %s", e)
	}
	// A member who is not in the project learns nothing.
	w.admin.Must("outsider password", "users", "create", "--email", "out@example.com", "--password-stdin")
	out := e2e.NewUser(t)
	out.Login(w.srv, "out@example.com", "outsider password")
	if _, e, code := out.Run("", "db", "access", "--project-id", w.project, "--resource", "main-db", "--account", "app"); code == 0 || !strings.Contains(e, "not found") {
		t.Errorf("outsider: exit %d %s", code, e)
	}

	// The gateway goes offline: a clear error; restarted with the same data
	// directory it needs no token.
	w.gw.Stop(syscall.SIGTERM)
	w.waitGateway("dc1", false)
	if e := access("--resource", "main-db", "--account", "app"); !strings.Contains(e, "offline") {
		t.Errorf("gateway offline: %s", e)
	}
	if e := try(w.pg.SCRAMUser.Password, create("app2", w.pg.SCRAMUser.User)...); !strings.Contains(e, "offline") {
		t.Errorf("validation with the gateway offline: %s", e)
	}
	e2e.Start(t, nil, "gateway", "--data-dir", w.gwDir)
	w.waitGateway("dc1", true)
	_, url := w.access(w.admin, "app")
	connect(t, url)
}
