package e2e_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"

	"github.com/airlockpam/airlock/internal/e2e"
	"github.com/airlockpam/airlock/internal/testenv"
)

// tlsURLLine is the verify-full URL `db access` prints for PostgreSQL.
var tlsURLLine = regexp.MustCompile(`^TLS:\s+(postgres://\S+\?sslmode=verify-full&sslrootcert=(\S+))$`)

// mongoTLSURLLine is the TLS URL `db access` prints for MongoDB.
var mongoTLSURLLine = regexp.MustCompile(`^TLS:\s+(mongodb://127\.0\.0\.1:\d+/\?directConnection=true&tls=true&tlsCAFile=(\S+))$`)

// checkCAFile fails unless path is a file of the user's config directory
// holding one certificate and no key.
func checkCAFile(t *testing.T, u *e2e.User, path string) {
	t.Helper()
	if filepath.Dir(path) != u.Config {
		t.Fatalf("the CA file %s is not in the config directory %s", path, u.Config)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Count(string(b), "BEGIN CERTIFICATE") != 1 || strings.Contains(string(b), "PRIVATE KEY") {
		t.Fatalf("the CA file holds more than a certificate:\n%s", b)
	}
}

// noKeyOnDisk fails if a private key is in a file of dir.
func noKeyOnDisk(t *testing.T, dir string) {
	t.Helper()
	filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return nil
		}
		if b, _ := os.ReadFile(p); strings.Contains(string(b), "PRIVATE KEY") {
			t.Errorf("%s holds a private key", p)
		}
		return nil
	})
}

// TestAccessTLSPostgres: clients that insist on TLS work through the
// local proxy: psql with sslmode=require, pgx with verify-full and the CA
// file that db access writes and prints; verify-full without that file
// fails in the client, and db access names the file; plain connections
// still work.
func TestAccessTLSPostgres(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	w.account("app", w.pg.SCRAMUser)
	p, url := w.access(w.admin, "app")
	m := tlsURLLine.FindStringSubmatch(p.WaitLine(t, tlsURLLine, 10*time.Second)) // printed after the URL
	tlsURL, caFile := m[1], m[2]
	checkCAFile(t, w.admin, caFile)
	p.WaitLine(t, regexp.MustCompile(regexp.QuoteMeta("(sslmode=require works too; to verify, the CA certificate is "+caFile+")")), 10*time.Second)

	// psql with sslmode=require.
	require := strings.Replace(url, "sslmode=disable", "sslmode=require", 1)
	r := psql(t, false, require, "SELECT 'tls-' || current_user")
	if r.Code != 0 || !strings.Contains(r.Out, "tls-"+w.pg.SCRAMUser.User) {
		t.Fatalf("psql sslmode=require: exit %d: %s\nstderr: %s", r.Code, r.Out, p.Stderr())
	}
	if r := psql(t, false, require, `\conninfo`); r.Code != 0 || !strings.Contains(r.Out, "SSL connection") {
		t.Fatalf("psql sslmode=require is not on TLS: exit %d: %s", r.Code, r.Out)
	}

	// The owner check still comes first: another OS user asking for TLS
	// is refused, with the reason in its psql, and nothing runs.
	other := psql(t, true, require, "INSERT INTO items VALUES (667, 'nobody-over-tls')")
	if other.Code == 0 || !strings.Contains(other.Out, "FATAL:  airlock: this proxy serves only root (uid 0), who started `airlock db access`; you are nobody (uid 65534)") {
		t.Fatalf("nobody's psql with sslmode=require: exit %d: %s", other.Code, other.Out)
	}
	waitStderr(t, p, regexp.MustCompile(`Warning: refused a connection from nobody \(uid 65534\)`), 10*time.Second)

	// pgx with verify-full and the CA file.
	ctx := context.Background()
	c := connect(t, tlsURL)
	if _, ok := c.PgConn().Conn().(*tls.Conn); !ok {
		t.Fatalf("pgx verify-full: the connection is a %T, not TLS", c.PgConn().Conn())
	}
	var user string
	if err := c.QueryRow(ctx, "SELECT current_user").Scan(&user); err != nil || user != w.pg.SCRAMUser.User {
		t.Fatalf("pgx verify-full: %q %v", user, err)
	}

	// verify-full without the CA file: the client refuses the certificate
	// (its message is its own), and db access says which file to give it.
	noRoot := strings.Replace(url, "sslmode=disable", "sslmode=verify-full", 1)
	cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	_, err := pgx.Connect(cctx, noRoot)
	cancel()
	var ua x509.UnknownAuthorityError
	if !errors.As(err, &ua) {
		t.Fatalf("pgx verify-full without sslrootcert: %v", err)
	}
	waitStderr(t, p, regexp.MustCompile(regexp.QuoteMeta("a client does not trust this proxy's TLS certificate: give it the CA certificate "+caFile)), 10*time.Second)

	// Plain connections still work.
	plain := connect(t, url)
	if _, ok := plain.PgConn().Conn().(*tls.Conn); ok {
		t.Fatal("sslmode=disable got TLS")
	}
	if err := plain.QueryRow(ctx, "SELECT current_user").Scan(&user); err != nil {
		t.Fatalf("plain: %v", err)
	}

	var n int
	if err := plain.QueryRow(ctx, "SELECT count(*) FROM items WHERE id = 667").Scan(&n); err != nil || n != 0 {
		t.Fatalf("nobody's statement: count %d, %v", n, err)
	}

	noKeyOnDisk(t, w.admin.Config)
	p.Stop(syscall.SIGINT)
	if code := p.Wait(t, 20*time.Second); code != 0 {
		t.Fatalf("db access exited %d", code)
	}
	if _, err := os.Stat(caFile); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("the CA file outlived its session: %v", err)
	}
}

// TestAccessTLSMongoDB: a MongoDB driver with tls=true and the CA file
// runs commands through the local proxy; one without the CA is refused by
// its own verification; the plain URL still works.
func TestAccessTLSMongoDB(t *testing.T) {
	t.Parallel()
	ferret := testenv.StartFerretDB(t)
	srv := e2e.StartServer(t)
	admin := e2e.NewUser(t)
	admin.Login(srv, srv.AdminEmail, srv.AdminPassword)
	var gw struct{ EnrollmentToken string }
	admin.JSON(&gw, "", "gateways", "create", "dc1")
	e2e.Start(t, nil, "gateway", "--domain", srv.URL, "--token", gw.EnrollmentToken, "--data-dir", t.TempDir())
	project := strings.TrimSpace(admin.Must("", "projects", "create", "mongo"))
	deadline := time.Now().Add(30 * time.Second)
	for !strings.Contains(admin.Must("", "gateways", "list"), "online") {
		if time.Now().After(deadline) {
			t.Fatal("gateway not online")
		}
		time.Sleep(200 * time.Millisecond)
	}
	admin.Must("", "resources", "create", "mongodb", "--project-id", project, "--name", "docs", "--gateway", "dc1",
		"--connection-string", fmt.Sprintf("mongodb://127.0.0.1:%d/", ferret.Port), "--ssl-enabled=false")
	admin.Must(ferret.SCRAM256User.Password, "accounts", "create", "--project-id", project, "--resource", "docs", "--name", "app",
		"--username", ferret.SCRAM256User.User, "--password-stdin")

	p := admin.Start("db", "access", "--project-id", project, "--resource", "docs", "--account", "app")
	url := p.WaitLine(t, mongoURLLine, 60*time.Second)
	m := mongoTLSURLLine.FindStringSubmatch(p.WaitLine(t, mongoTLSURLLine, 10*time.Second))
	tlsURL, caFile := m[1], m[2]
	checkCAFile(t, admin, caFile)

	ctx := context.Background()
	run := func(uri string) error {
		t.Helper()
		c, err := mongo.Connect(options.Client().ApplyURI(uri).SetServerSelectionTimeout(10 * time.Second))
		if err != nil {
			return err
		}
		defer c.Disconnect(ctx)
		coll := c.Database("shop").Collection("tls_orders")
		if _, err := coll.InsertOne(ctx, bson.D{{Key: "via", Value: uri}}); err != nil {
			return err
		}
		return coll.FindOne(ctx, bson.D{{Key: "via", Value: uri}}).Err()
	}
	if err := run(tlsURL); err != nil {
		t.Fatalf("tls=true&tlsCAFile: %v\nstderr: %s", err, p.Stderr())
	}
	// Without the CA file the driver does not trust the proxy: proof that
	// the connection above was TLS, verified against the session's CA.
	noCA := strings.Replace(url, "directConnection=true", "directConnection=true&tls=true", 1)
	if err := run(noCA); err == nil || !strings.Contains(err.Error(), "certificate") {
		t.Fatalf("tls=true without the CA file: %v", err)
	}
	waitStderr(t, p, regexp.MustCompile(regexp.QuoteMeta("tlsCAFile="+caFile)), 10*time.Second)
	if err := run(url); err != nil {
		t.Fatalf("plain: %v", err)
	}
	noKeyOnDisk(t, admin.Config)
}
