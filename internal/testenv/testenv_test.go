package testenv

import (
	"context"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"net/smtp"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"
)

func TestMain(m *testing.M) {
	code := m.Run()
	if err := CleanupShared(); err != nil {
		fmt.Fprintf(os.Stderr, "testenv: %v\n", err)
		if code == 0 {
			code = 1
		}
	}
	os.Exit(code)
}

func testContext(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// fakeTB records what Require asks of a test instead of ending it.
type fakeTB struct {
	testing.TB
	fatal, skip string
}

func (f *fakeTB) Helper()                        {}
func (f *fakeTB) Fatalf(format string, a ...any) { f.fatal = fmt.Sprintf(format, a...) }
func (f *fakeTB) Skipf(format string, a ...any)  { f.skip = fmt.Sprintf(format, a...) }

func TestRequire(t *testing.T) {
	cases := []struct {
		name      string
		ci, force string
		err       error
		wantFatal bool
		wantSkip  bool
	}{
		{name: "no error", ci: "true", err: nil},
		{name: "local skips", err: errors.New("boom"), wantSkip: true},
		{name: "CI fails", ci: "true", err: errors.New("boom"), wantFatal: true},
		{name: "CI other value skips", ci: "1", err: errors.New("boom"), wantSkip: true},
		{name: "forced fails", force: "1", err: errors.New("boom"), wantFatal: true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Setenv("CI", tc.ci)
			t.Setenv("AIRLOCK_TEST_REQUIRE_SERVERS", tc.force)
			f := &fakeTB{TB: t}
			Require(f, "Thing", tc.err)
			if got := f.fatal != ""; got != tc.wantFatal {
				t.Errorf("fatal = %q, want fatal: %v", f.fatal, tc.wantFatal)
			}
			if got := f.skip != ""; got != tc.wantSkip {
				t.Errorf("skip = %q, want skip: %v", f.skip, tc.wantSkip)
			}
			if tc.wantSkip && !strings.Contains(f.skip, "./scripts/test") {
				t.Errorf("skip message %q lacks the install hint", f.skip)
			}
			if msg := f.fatal + f.skip; tc.err != nil && (!strings.Contains(msg, "Thing") || !strings.Contains(msg, "boom")) {
				t.Errorf("message %q does not name the server and the error", msg)
			}
		})
	}
}

func TestCAIssue(t *testing.T) {
	ca := NewCA(t)
	certPEM, keyPEM := ca.Issue(t, "127.0.0.1", "localhost", "db.example.test")
	block, _ := pem.Decode(certPEM)
	if block == nil {
		t.Fatal("certificate is not PEM")
	}
	cert, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	for _, host := range []string{"127.0.0.1", "localhost", "db.example.test"} {
		if _, err := cert.Verify(x509.VerifyOptions{DNSName: host, Roots: ca.Pool()}); err != nil {
			t.Errorf("verify for %s: %v", host, err)
		}
	}
	if _, err := cert.Verify(x509.VerifyOptions{DNSName: "other.test", Roots: ca.Pool()}); err == nil {
		t.Error("certificate verified for a host it does not name")
	}
	if _, err := cert.Verify(x509.VerifyOptions{DNSName: "localhost", Roots: NewCA(t).Pool()}); err == nil {
		t.Error("certificate verified against another CA")
	}
	if kb, _ := pem.Decode(keyPEM); kb == nil || kb.Type != "PRIVATE KEY" {
		t.Errorf("key is not a PEM PKCS #8 key")
	}

	dir := t.TempDir()
	files, err := ca.WriteFiles(dir, "localhost")
	if err != nil {
		t.Fatal(err)
	}
	info, err := os.Stat(files.KeyFile)
	if err != nil {
		t.Fatal(err)
	}
	if info.Mode().Perm() != 0o600 {
		t.Errorf("key file mode = %v, want 0600", info.Mode().Perm())
	}
}

// pgConnect connects and returns the connection, closed when t ends.
func pgConnect(t *testing.T, url string) (*pgconn.PgConn, error) {
	t.Helper()
	conn, err := pgconn.Connect(testContext(t), url)
	if err == nil {
		t.Cleanup(func() { conn.Close(context.Background()) })
	}
	return conn, err
}

func pgQuery(t *testing.T, conn *pgconn.PgConn, sql string) string {
	t.Helper()
	res := conn.ExecParams(testContext(t), sql, nil, nil, nil, nil).Read()
	if res.Err != nil {
		t.Fatalf("%s: %v", sql, res.Err)
	}
	if len(res.Rows) != 1 || len(res.Rows[0]) != 1 {
		t.Fatalf("%s: got %d rows, want one value", sql, len(res.Rows))
	}
	return string(res.Rows[0][0])
}

func pgCode(err error) string {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		return pgErr.Code
	}
	return ""
}

func TestPostgres(t *testing.T) {
	start := time.Now()
	p := StartPostgres(t)
	t.Logf("cluster started in %v at %s", time.Since(start).Round(time.Millisecond), p.Addr())

	t.Run("roles log in", func(t *testing.T) {
		for _, tc := range []struct {
			role    Role
			sslmode string
		}{
			{p.SCRAMUser, "disable"},
			{p.SCRAMUser, "verify-full"},
			{p.MD5User, "disable"},
			{p.MD5User, "verify-full"},
			{p.TLSUser, "verify-full"},
			{p.TLSUser, "require"},
		} {
			conn, err := pgConnect(t, p.URL(tc.role.User, tc.role.Password, AppDatabase, tc.sslmode))
			if err != nil {
				t.Errorf("%s with sslmode=%s: %v", tc.role.User, tc.sslmode, err)
				continue
			}
			if got := pgQuery(t, conn, "SELECT current_user"); got != tc.role.User {
				t.Errorf("current_user = %q, want %q", got, tc.role.User)
			}
			wantSSL := tc.sslmode != "disable"
			if got := pgQuery(t, conn, "SELECT ssl::text FROM pg_stat_ssl WHERE pid = pg_backend_pid()"); got != fmt.Sprint(wantSSL) {
				t.Errorf("%s with sslmode=%s: ssl = %s", tc.role.User, tc.sslmode, got)
			}
		}
	})

	t.Run("passwords are stored as intended", func(t *testing.T) {
		conn, err := pgConnect(t, p.SuperURL("postgres"))
		if err != nil {
			t.Fatal(err)
		}
		for user, prefix := range map[string]string{
			SCRAMUserName: "SCRAM-SHA-256$",
			TLSUserName:   "SCRAM-SHA-256$",
			MD5UserName:   "md5",
		} {
			got := pgQuery(t, conn, fmt.Sprintf("SELECT rolpassword FROM pg_authid WHERE rolname = '%s'", user))
			if !strings.HasPrefix(got, prefix) {
				t.Errorf("%s password is stored as %.14q…, want prefix %q", user, got, prefix)
			}
		}
	})

	t.Run("tls_user is refused without TLS", func(t *testing.T) {
		_, err := pgConnect(t, p.URL(p.TLSUser.User, p.TLSUser.Password, AppDatabase, "disable"))
		if err == nil {
			t.Fatal("tls_user connected without TLS")
		}
		if code := pgCode(err); code != "28000" {
			t.Errorf("SQLSTATE = %q, want 28000 (rejected by pg_hba.conf): %v", code, err)
		}
	})

	t.Run("wrong password", func(t *testing.T) {
		for _, r := range []Role{p.SCRAMUser, p.MD5User, p.TLSUser} {
			_, err := pgConnect(t, p.URL(r.User, "wrong-"+r.Password, AppDatabase, "verify-full"))
			if code := pgCode(err); code != "28P01" {
				t.Errorf("%s: SQLSTATE = %q, want 28P01: %v", r.User, code, err)
			}
		}
	})

	t.Run("verify-full needs the right CA", func(t *testing.T) {
		other := NewCA(t)
		path := filepath.Join(t.TempDir(), "other-ca.crt")
		if err := os.WriteFile(path, other.CertPEM, 0o644); err != nil {
			t.Fatal(err)
		}
		u, err := url.Parse(p.URL(p.SCRAMUser.User, p.SCRAMUser.Password, AppDatabase, "verify-full"))
		if err != nil {
			t.Fatal(err)
		}
		q := u.Query()
		q.Set("sslrootcert", path)
		u.RawQuery = q.Encode()
		if _, err := pgConnect(t, u.String()); err == nil {
			t.Fatal("verify-full accepted a server certificate from another CA")
		}
	})

	t.Run("roles can create tables in app", func(t *testing.T) {
		for _, r := range []Role{p.SCRAMUser, p.MD5User, p.TLSUser} {
			conn, err := pgConnect(t, p.URL(r.User, r.Password, AppDatabase, "verify-full"))
			if err != nil {
				t.Fatal(err)
			}
			if _, err := conn.Exec(testContext(t), "CREATE TABLE t_"+r.User+" (id int)").ReadAll(); err != nil {
				t.Errorf("%s: create table: %v", r.User, err)
			}
		}
	})

	t.Run("CreateDatabase", func(t *testing.T) {
		db := p.CreateDatabase(t, "second")
		conn, err := pgConnect(t, db.URL(p.SCRAMUser, "verify-full"))
		if err != nil {
			t.Fatal(err)
		}
		if got := pgQuery(t, conn, "SELECT current_database()"); got != "second" {
			t.Errorf("current_database = %q", got)
		}
	})

	t.Run("stop and start", func(t *testing.T) {
		url := p.URL(p.SCRAMUser.User, p.SCRAMUser.Password, AppDatabase, "verify-full")
		oldPID, port := p.PID(), p.Port
		if oldPID == 0 {
			t.Fatal("no PID while running")
		}
		if err := p.Stop(); err != nil {
			t.Fatal(err)
		}
		if err := p.Stop(); err != nil {
			t.Fatalf("second Stop: %v", err)
		}
		if processAlive(oldPID) {
			t.Errorf("postmaster %d still alive after Stop", oldPID)
		}
		if _, err := pgConnect(t, url); err == nil {
			t.Fatal("connected to a stopped server")
		}
		start := time.Now()
		if err := p.Start(); err != nil {
			t.Fatal(err)
		}
		t.Logf("restarted in %v", time.Since(start).Round(time.Millisecond))
		if p.Port != port {
			t.Errorf("port changed from %d to %d", port, p.Port)
		}
		if p.PID() == 0 || p.PID() == oldPID {
			t.Errorf("PID after restart = %d (before: %d)", p.PID(), oldPID)
		}
		conn, err := pgConnect(t, url)
		if err != nil {
			t.Fatalf("connect after restart: %v", err)
		}
		if got := pgQuery(t, conn, "SELECT 1"); got != "1" {
			t.Errorf("SELECT 1 = %q", got)
		}
	})
}

func TestPostgresCleanupStopsServer(t *testing.T) {
	var pid int
	var dir string
	t.Run("inner", func(t *testing.T) {
		p := StartPostgres(t)
		pid, dir = p.PID(), p.DataDir
	})
	if processAlive(pid) {
		t.Errorf("postmaster %d still alive after the test ended", pid)
	}
	if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("data directory %s not removed: %v", dir, err)
	}
}

func TestSharedPostgres(t *testing.T) {
	names := map[string]bool{}
	var cluster *Postgres
	for i := range 2 {
		t.Run(fmt.Sprint(i), func(t *testing.T) {
			db := SharedPostgres(t)
			if cluster != nil && db.Cluster != cluster {
				t.Error("SharedPostgres started a second cluster")
			}
			cluster = db.Cluster
			if names[db.Name] {
				t.Errorf("database %s handed out twice", db.Name)
			}
			names[db.Name] = true
			conn, err := pgConnect(t, db.URL(db.Cluster.SCRAMUser, "verify-full"))
			if err != nil {
				t.Fatal(err)
			}
			if got := pgQuery(t, conn, "SELECT current_database()"); got != db.Name {
				t.Errorf("current_database = %q, want %q", got, db.Name)
			}
			// The same table in each test's database: no clash.
			if _, err := conn.Exec(testContext(t), "CREATE TABLE items (id int)").ReadAll(); err != nil {
				t.Fatal(err)
			}
		})
	}
	if cluster == nil {
		return
	}
	conn, err := pgConnect(t, cluster.SuperURL("postgres"))
	if err != nil {
		t.Fatal(err)
	}
	for name := range names {
		if got := pgQuery(t, conn, fmt.Sprintf("SELECT count(*) FROM pg_database WHERE datname = '%s'", name)); got != "0" {
			t.Errorf("database %s not dropped after its test", name)
		}
	}
}

func TestSharedPostgresParallel(t *testing.T) {
	for i := range 4 {
		t.Run(fmt.Sprint(i), func(t *testing.T) {
			t.Parallel()
			db := SharedPostgres(t)
			conn, err := pgConnect(t, db.URL(db.Cluster.MD5User, "disable"))
			if err != nil {
				t.Fatal(err)
			}
			if _, err := conn.Exec(testContext(t), "CREATE TABLE items (id int); INSERT INTO items VALUES (1)").ReadAll(); err != nil {
				t.Fatal(err)
			}
		})
	}
}

func mongoClient(t *testing.T, opts *options.ClientOptions) *mongo.Client {
	t.Helper()
	c, err := mongo.Connect(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Disconnect(context.Background()) })
	return c
}

func TestFerretDB(t *testing.T) {
	for _, tc := range []struct {
		name string
		opts []FerretOption
	}{
		{"plain", nil},
		{"TLS", []FerretOption{WithTLS()}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			start := time.Now()
			f := StartFerretDB(t, tc.opts...)
			t.Logf("FerretDB started in %v at %s", time.Since(start).Round(time.Millisecond), f.Addr())
			if f.TLS != (tc.name == "TLS") || (f.TLS && f.CA == nil) {
				t.Fatalf("TLS = %v, CA = %v", f.TLS, f.CA)
			}

			for _, u := range []MongoUser{f.Admin, f.SCRAM256User, f.SCRAM1User} {
				c := mongoClient(t, f.ClientOptions(u))
				coll := c.Database("testenv").Collection("items")
				if _, err := coll.InsertOne(testContext(t), bson.D{{Key: "by", Value: u.User}}); err != nil {
					t.Errorf("%s with %s: insert: %v", u.User, u.Mechanism, err)
					continue
				}
				n, err := coll.CountDocuments(testContext(t), bson.D{{Key: "by", Value: u.User}})
				if err != nil || n != 1 {
					t.Errorf("%s: count = %d, %v", u.User, n, err)
				}
			}

			// The URI alone (plus credentials) must be enough to connect.
			c := mongoClient(t, options.Client().ApplyURI(f.URI()).SetAuth(f.SCRAM256User.Credential()).
				SetServerSelectionTimeout(10*time.Second))
			if err := c.Ping(testContext(t), nil); err != nil {
				t.Errorf("connect with URI() %s: %v", f.URI(), err)
			}

			for _, tc := range []struct {
				u    MongoUser
				want string // in the error
			}{
				{MongoUser{f.SCRAM256User.User, "wrong", MechanismSCRAMSHA256, "admin"}, "AuthenticationFailed"},
				{MongoUser{f.SCRAM1User.User, "wrong", MechanismSCRAMSHA1, "admin"}, "AuthenticationFailed"},
				{MongoUser{"nobody", "wrong", MechanismSCRAMSHA256, "admin"}, "AuthenticationFailed"},
				// A user may log in only with the mechanisms it was created with.
				{MongoUser{f.SCRAM1User.User, f.SCRAM1User.Password, MechanismSCRAMSHA256, "admin"}, "MechanismUnavailable"},
				{MongoUser{f.SCRAM256User.User, f.SCRAM256User.Password, MechanismSCRAMSHA1, "admin"}, "MechanismUnavailable"},
			} {
				c := mongoClient(t, f.ClientOptions(tc.u).SetServerSelectionTimeout(3*time.Second))
				err := c.Ping(testContext(t), nil)
				if err == nil {
					t.Errorf("%s with %s and password %q: logged in", tc.u.User, tc.u.Mechanism, tc.u.Password)
				} else if !strings.Contains(err.Error(), tc.want) {
					t.Errorf("%s with %s: want %s, got %v", tc.u.User, tc.u.Mechanism, tc.want, err)
				}
			}

			// Without credentials, a write is refused.
			anon := mongoClient(t, f.ClientOptions(MongoUser{}))
			_, err := anon.Database("testenv").Collection("items").InsertOne(testContext(t), bson.D{{Key: "x", Value: 1}})
			if err == nil || !strings.Contains(err.Error(), "Unauthorized") {
				t.Errorf("write without credentials: want Unauthorized, got %v", err)
			}
		})
	}
}

func TestFerretDBTLSRefusesPlain(t *testing.T) {
	f := StartFerretDB(t, WithTLS())
	opts := options.Client().ApplyURI("mongodb://" + f.Addr() + "/").SetAuth(f.Admin.Credential()).
		SetServerSelectionTimeout(2 * time.Second)
	if err := mongoClient(t, opts).Ping(testContext(t), nil); err == nil {
		t.Error("a client without TLS talked to the TLS port")
	}
	pid := f.PID()
	if err := f.Stop(); err != nil {
		t.Fatal(err)
	}
	if processAlive(pid) {
		t.Errorf("FerretDB %d alive after Stop", pid)
	}
}

func TestMailpit(t *testing.T) {
	start := time.Now()
	m := StartMailpit(t)
	t.Logf("mailpit started in %v, SMTP %s, API %s", time.Since(start).Round(time.Millisecond), m.SMTPAddr(), m.APIURL)
	if got := m.Messages(t); len(got) != 0 {
		t.Fatalf("new mailpit has %d messages", len(got))
	}

	body := "To: alice@example.test\r\n" +
		"From: airlock@example.test\r\n" +
		"Subject: Your login code\r\n" +
		"\r\n" +
		"Your code is 493817.\r\n"
	if err := smtp.SendMail(m.SMTPAddr(), nil, "airlock@example.test", []string{"alice@example.test"}, []byte(body)); err != nil {
		t.Fatalf("send mail: %v", err)
	}

	msgs := m.Messages(t)
	if len(msgs) != 1 {
		t.Fatalf("got %d messages, want 1", len(msgs))
	}
	msg := msgs[0]
	if msg.Subject != "Your login code" {
		t.Errorf("subject = %q", msg.Subject)
	}
	if len(msg.To) != 1 || msg.To[0].Address != "alice@example.test" {
		t.Errorf("to = %+v", msg.To)
	}
	if msg.From.Address != "airlock@example.test" {
		t.Errorf("from = %+v", msg.From)
	}
	if text := m.Text(t, msg.ID); !strings.Contains(text, "Your code is 493817.") {
		t.Errorf("text body = %q", text)
	}

	got := m.WaitForMessage(t, 5*time.Second, func(m Message) bool { return m.Subject == "Your login code" })
	if got.ID != msg.ID {
		t.Errorf("WaitForMessage returned %s, want %s", got.ID, msg.ID)
	}
	m.DeleteAll(t)
	if got := m.Messages(t); len(got) != 0 {
		t.Errorf("%d messages after DeleteAll", len(got))
	}
}

// TestWatchdogCleansUpAfterCrash runs a copy of the test binary that starts
// servers and then dies by SIGKILL, without running its cleanups, and checks
// that the watchdogs stop the servers and remove their files.
func TestWatchdogCleansUpAfterCrash(t *testing.T) {
	if os.Getenv("TESTENV_CRASH_HELPER") == "1" {
		p := StartPostgres(t)
		m := StartMailpit(t)
		fmt.Printf("\nSERVERS %d %s %d %s\n", p.PID(), p.baseDir, m.proc.pid(), m.baseDir)
		_ = os.Stdout.Sync()
		_ = syscall.Kill(os.Getpid(), syscall.SIGKILL)
		select {} // not reached
	}

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, os.Args[0], "-test.run=^TestWatchdogCleansUpAfterCrash$", "-test.count=1")
	cmd.Env = append(os.Environ(), "TESTENV_CRASH_HELPER=1")
	cmd.WaitDelay = 10 * time.Second
	out, _ := cmd.CombinedOutput() // it dies by SIGKILL: an error is expected
	var pgPID, mpPID int
	var pgDir, mpDir string
	for line := range strings.Lines(string(out)) {
		if _, err := fmt.Sscanf(line, "SERVERS %d %s %d %s", &pgPID, &pgDir, &mpPID, &mpDir); err == nil {
			break
		}
	}
	if pgPID == 0 || mpPID == 0 {
		Require(t, "the crash helper's servers", fmt.Errorf("helper did not report its servers:\n%s", out))
		return
	}

	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		if !processAlive(pgPID) && !processAlive(mpPID) && !exists(pgDir) && !exists(mpDir) {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Errorf("after the test binary died: postgres %d alive=%v, dir %s exists=%v; mailpit %d alive=%v, dir %s exists=%v",
		pgPID, processAlive(pgPID), pgDir, exists(pgDir), mpPID, processAlive(mpPID), mpDir, exists(mpDir))
	// Do not leave them behind.
	killGroup(pgPID, syscall.SIGKILL)
	killGroup(mpPID, syscall.SIGKILL)
}

func exists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}
