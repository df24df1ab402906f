package postgres

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/airlockpam/airlock/internal/proxy/common"
	"github.com/airlockpam/airlock/internal/testenv"
	"github.com/airlockpam/airlock/internal/tunnel"
)

func TestMain(m *testing.M) {
	code := m.Run()
	if err := testenv.CleanupShared(); err != nil {
		fmt.Fprintln(os.Stderr, "testenv:", err)
		if code == 0 {
			code = 1
		}
	}
	os.Exit(code)
}

// testTimeout bounds every step a test waits for; it is generous, so that a
// loaded machine does not fail a test, and finite, so that nothing hangs.
const testTimeout = 30 * time.Second

func testContext(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	t.Cleanup(cancel)
	return ctx
}

// logRecorder is a slog.Handler that keeps every record and, when the test
// ends, fails it if a record holds one of the secrets.
type logRecorder struct {
	mu      sync.Mutex
	records []string
	attrs   []slog.Attr
	parent  *logRecorder
}

func newLogger(t testing.TB, secrets ...string) (*slog.Logger, *logRecorder) {
	rec := &logRecorder{}
	t.Cleanup(func() {
		for _, line := range rec.lines() {
			for _, s := range secrets {
				if s != "" && strings.Contains(line, s) {
					t.Errorf("a log line holds a secret: %s", line)
				}
			}
		}
		if t.Failed() {
			for _, line := range rec.lines() {
				t.Logf("log: %s", line)
			}
		}
	})
	return slog.New(rec), rec
}

func (r *logRecorder) root() *logRecorder {
	if r.parent != nil {
		return r.parent.root()
	}
	return r
}

func (r *logRecorder) Enabled(context.Context, slog.Level) bool { return true }

func (r *logRecorder) Handle(_ context.Context, rec slog.Record) error {
	var b strings.Builder
	fmt.Fprintf(&b, "%s %s", rec.Level, rec.Message)
	write := func(a slog.Attr) bool {
		fmt.Fprintf(&b, " %s=%v", a.Key, a.Value.Resolve())
		return true
	}
	for _, a := range r.attrs {
		write(a)
	}
	rec.Attrs(write)
	root := r.root()
	root.mu.Lock()
	defer root.mu.Unlock()
	root.records = append(root.records, b.String())
	return nil
}

func (r *logRecorder) WithAttrs(attrs []slog.Attr) slog.Handler {
	return &logRecorder{attrs: append(append([]slog.Attr(nil), r.attrs...), attrs...), parent: r.root()}
}

func (r *logRecorder) WithGroup(string) slog.Handler { return r }

func (r *logRecorder) lines() []string {
	root := r.root()
	root.mu.Lock()
	defer root.mu.Unlock()
	return append([]string(nil), root.records...)
}

// count returns how many records have a message containing msg.
func (r *logRecorder) count(msg string) int {
	n := 0
	for _, line := range r.lines() {
		if strings.Contains(line, msg) {
			n++
		}
	}
	return n
}

// testProxy is a TCP listener whose connections Engine.Serve serves under one
// Session with one Config.
type testProxy struct {
	addr    string
	sess    *common.Session
	results chan error // what each Serve call returned
}

func startProxy(t testing.TB, eng *Engine, sess *common.Session, cfg Config) *testProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	p := &testProxy{addr: ln.Addr().String(), sess: sess, results: make(chan error, 1000)}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				err := eng.Serve(ctx, conn, sess, cfg)
				select {
				case p.results <- err:
				default:
				}
			}()
		}
	}()
	t.Cleanup(func() {
		_ = ln.Close()
		cancel()
		wg.Wait()
	})
	return p
}

// nextResult waits for the next Serve call to return.
func (p *testProxy) nextResult(t testing.TB) error {
	t.Helper()
	select {
	case err := <-p.results:
		return err
	case <-time.After(testTimeout):
		t.Fatal("Serve did not return")
		return nil
	}
}

// clientURL is what a client of the CLI's local proxy uses: no password, no
// TLS, a user of its own choosing (ignored) and a database (none if empty).
func (p *testProxy) clientURL(user, db, appName string) string {
	q := url.Values{}
	q.Set("sslmode", "disable")
	if appName != "" {
		q.Set("application_name", appName)
	}
	u := url.URL{Scheme: "postgres", User: url.User(user), Host: p.addr, Path: "/" + db, RawQuery: q.Encode()}
	return u.String()
}

func (p *testProxy) connect(t testing.TB, appName string) *pgx.Conn {
	t.Helper()
	conn, err := pgx.Connect(testContext(t), p.clientURL("someone_else", "", appName))
	if err != nil {
		t.Fatalf("connect through the proxy: %v", err)
	}
	t.Cleanup(func() { _ = conn.Close(context.Background()) })
	return conn
}

// newEngine returns an Engine that logs to a recorder, which the test prints
// if it fails; opts may replace the logger.
func newEngine(t testing.TB, opts ...Option) *Engine {
	t.Helper()
	log, _ := newLogger(t)
	eng, err := NewEngine(append([]Option{WithLogger(log)}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	return eng
}

// accountConfig returns the Config of role r in db, with TLS as given.
// The md5 role's account allows md5 authentication, as an organization
// admin would for a legacy server.
func accountConfig(db testenv.Database, r testenv.Role, tlsSetting tunnel.TLS) Config {
	cfg := Config{
		Host:     db.Cluster.Host,
		Port:     db.Cluster.Port,
		Database: db.Name,
		User:     r.User,
		Password: r.Password,
		TLS:      tlsSetting,
	}
	if r.User == testenv.MD5UserName {
		cfg.AuthMethods = []string{tunnel.AuthMD5}
	}
	return cfg
}

func verifiedTLS(db testenv.Database) tunnel.TLS {
	return tunnel.TLS{Enabled: true, RejectUnauthorized: true, CAPEM: string(db.Cluster.CA.CertPEM)}
}

// pgError returns err's *pgconn.PgError, failing the test if there is none.
func pgError(t testing.TB, err error) *pgconn.PgError {
	t.Helper()
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) {
		t.Fatalf("error %v (%T) is not a PostgreSQL error", err, err)
	}
	return pgErr
}

// waitForActive waits until a backend of the cluster runs query, as seen by
// the superuser, and returns its process ID.
func waitForActive(t testing.TB, db testenv.Database, query string) uint32 {
	t.Helper()
	ctx := testContext(t)
	conn, err := pgconn.Connect(ctx, db.SuperURL())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	for {
		res := conn.ExecParams(ctx, "SELECT pid FROM pg_stat_activity WHERE state = 'active' AND query = $1",
			[][]byte{[]byte(query)}, nil, nil, nil).Read()
		if res.Err != nil {
			t.Fatalf("read pg_stat_activity: %v", res.Err)
		}
		if len(res.Rows) > 0 {
			var pid uint32
			if _, err := fmt.Sscan(string(res.Rows[0][0]), &pid); err != nil {
				t.Fatal(err)
			}
			return pid
		}
		select {
		case <-ctx.Done():
			t.Fatalf("no backend ran %q", query)
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// isActive reports whether backend pid is running a query.
func isActive(t testing.TB, db testenv.Database, pid uint32) bool {
	t.Helper()
	ctx := testContext(t)
	conn, err := pgconn.Connect(ctx, db.SuperURL())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	rows, err := conn.Exec(ctx, fmt.Sprintf("SELECT state FROM pg_stat_activity WHERE pid = %d", pid)).ReadAll()
	if err != nil {
		t.Fatal(err)
	}
	return len(rows[0].Rows) == 1 && string(rows[0].Rows[0][0]) == "active"
}

// endSession ends sess as an administrator's termination does.
func endSession(sess *common.Session) {
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	sess.End(ctx, tunnel.EndTerminated, "session terminated by an administrator")
}
