package e2e_test

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/airlockpam/airlock/internal/testenv"
)

// pghService is a TCP service on loopback for the attacks of issue 13: it
// hands each connection to serve and keeps every byte it received.
type pghService struct {
	port  int
	mu    sync.Mutex
	got   bytes.Buffer
	conns int
}

func pghStartService(t *testing.T, serve func(net.Conn)) *pghService {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &pghService{port: ln.Addr().(*net.TCPAddr).Port}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			s.mu.Lock()
			s.conns++
			s.mu.Unlock()
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				_ = c.SetDeadline(time.Now().Add(time.Minute))
				serve(&pghRecConn{Conn: c, s: s})
			}()
		}
	}()
	t.Cleanup(func() { _ = ln.Close(); wg.Wait() })
	return s
}

func (s *pghService) received() ([]byte, int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return bytes.Clone(s.got.Bytes()), s.conns
}

type pghRecConn struct {
	net.Conn
	s *pghService
}

func (c *pghRecConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	c.s.mu.Lock()
	c.s.got.Write(p[:n])
	c.s.mu.Unlock()
	return n, err
}

// pghCleartextServer is a rogue PostgreSQL server (pgx's example/pgfortune
// shape) that asks for the password in cleartext.
func pghCleartextServer(c net.Conn) {
	be := pgproto3.NewBackend(c, c)
	for {
		m, err := be.ReceiveStartupMessage()
		if err != nil {
			return
		}
		if _, ok := m.(*pgproto3.SSLRequest); ok {
			_, _ = c.Write([]byte{'N'})
			continue
		}
		break
	}
	be.Send(&pgproto3.AuthenticationCleartextPassword{})
	if be.Flush() != nil {
		return
	}
	be.SetAuthType(pgproto3.AuthTypeCleartextPassword)
	if _, err := be.Receive(); err != nil {
		return
	}
	be.Send(&pgproto3.ErrorResponse{Severity: "FATAL", Code: "28P01", Message: "password authentication failed"})
	_ = be.Flush()
}

// pghNoPasswordMessage fails the test if got holds anything but opening
// packets (StartupMessage, SSLRequest): a PasswordMessage or the password.
func pghNoPasswordMessage(t *testing.T, got []byte, password string) {
	t.Helper()
	if password != "" && bytes.Contains(got, []byte(password)) {
		t.Fatalf("the rogue server received the password")
	}
	rest := got
	for len(rest) >= 8 {
		n := int(binary.BigEndian.Uint32(rest))
		code := binary.BigEndian.Uint32(rest[4:8])
		if n < 8 || n > len(rest) || (code != 196608 && code != 80877103) {
			break
		}
		rest = rest[n:]
	}
	if len(rest) > 0 {
		t.Fatalf("after its opening packets the rogue server received %q", rest)
	}
}

// pghSessionID returns the id of the session db access started.
func pghSessionID(t *testing.T, stdout string) string {
	t.Helper()
	m := regexp.MustCompile(`Session (\S+) started`).FindStringSubmatch(stdout)
	if m == nil {
		t.Fatalf("no session id in %q", stdout)
	}
	return m[1]
}

// TestPGHRogueServerGetsNoPassword is the attack of issue 13 through the
// real binaries: a resource pointed at a server of the attacker's that
// asks for the password in cleartext. Neither the validation login of a new
// account nor, if the server lets a resource's port change, the login of a
// session sends it a byte of the password; both say why.
func TestPGHRogueServerGetsNoPassword(t *testing.T) {
	w := newWorld(t)
	rogue := pghStartService(t, pghCleartextServer)

	w.admin.Must("", "resources", "create", "postgres", "--project-id", w.project, "--name", "rogue-db", "--gateway", "dc1",
		"--host", "127.0.0.1", "--port", fmt.Sprint(rogue.port), "--database", testenv.AppDatabase, "--ssl-enabled=false")
	_, errOut, code := w.admin.Run(w.pg.SCRAMUser.Password, "accounts", "create", "--project-id", w.project, "--resource", "rogue-db",
		"--name", "victim", "--username", w.pg.SCRAMUser.User, "--password-stdin")
	if code == 0 || !strings.Contains(errOut, "cleartext password authentication") {
		t.Errorf("account creation against the rogue server: exit %d, %q", code, errOut)
	}
	got, conns := rogue.received()
	if conns == 0 {
		t.Fatal("the validation never reached the rogue server")
	}
	pghNoPasswordMessage(t, got, w.pg.SCRAMUser.Password)

	// The port of a resource with an account moved to the rogue server.
	w.account("app", w.pg.SCRAMUser)
	_, errOut, code = w.admin.Run("", "resources", "update", "main-db", "--project-id", w.project,
		"--port", fmt.Sprint(rogue.port), "--ssl-enabled=false")
	if code != 0 {
		t.Logf("the server refused to move the resource: %s", errOut)
		return
	}
	p, url := w.access(w.admin, "app")
	defer p.Stop(2)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	_, err := pgconn.Connect(ctx, url)
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) || !strings.Contains(pgErr.Message, "cleartext password authentication") {
		t.Errorf("client error %v, want one about cleartext password authentication", err)
	}
	got, _ = rogue.received()
	pghNoPasswordMessage(t, got, w.pg.SCRAMUser.Password)
}

// TestPGHStartupSmuggling: a startup parameter with CR/LF is refused by the
// gateway with 08P01 naming it, and a line-based service behind the
// resource never receives the smuggled line.
func TestPGHStartupSmuggling(t *testing.T) {
	w := newWorld(t)
	var mu sync.Mutex
	var lines []string
	svc := pghStartService(t, func(c net.Conn) {
		b, _ := io.ReadAll(c)
		mu.Lock()
		lines = append(lines, strings.Split(string(b), "\n")...)
		mu.Unlock()
	})
	w.account("app", w.pg.SCRAMUser)
	target := "the database"
	if _, errOut, code := w.admin.Run("", "resources", "update", "main-db", "--project-id", w.project,
		"--port", fmt.Sprint(svc.port), "--ssl-enabled=false"); code != 0 {
		t.Logf("the server refused to move the resource (%s): the parameter is checked against the database", errOut)
	} else {
		target = "the line service"
	}
	p, url := w.access(w.admin, "app")
	defer p.Stop(2)
	for _, tc := range []struct{ param, value, name string }{
		{"application_name", "x\r\nFLUSHALL", "application_name"},
		{"options", "-c a=b\nQUIT", "options"},
	} {
		cfg, err := pgconn.ParseConfig(url)
		if err != nil {
			t.Fatal(err)
		}
		cfg.RuntimeParams[tc.param] = tc.value
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		_, err = pgconn.ConnectConfig(ctx, cfg)
		cancel()
		var pgErr *pgconn.PgError
		if !errors.As(err, &pgErr) || pgErr.Code != "08P01" || !strings.Contains(pgErr.Message, `"`+tc.name+`"`) {
			t.Errorf("%s with a control character reaching %s: %v, want 08P01 naming it", tc.param, target, err)
		}
	}
	got, conns := svc.received()
	if conns != 0 || len(got) != 0 {
		t.Errorf("the line service got %d connections and %q", conns, got)
	}
	mu.Lock()
	defer mu.Unlock()
	for _, l := range lines {
		if strings.Contains(l, "FLUSHALL") || strings.Contains(l, "QUIT") {
			t.Errorf("a smuggled line reached the service: %q", l)
		}
	}
}

// TestPGHPaddedDropRefused is the 1.1 MB padded DROP TABLE of issue 13:
// the gateway refuses it (54000), the table stays, and the session log has
// the refused statement with its last part, where the DROP TABLE is.
func TestPGHPaddedDropRefused(t *testing.T) {
	w := newWorld(t)
	w.account("app", w.pg.SCRAMUser)
	ctx := context.Background()
	super, err := pgx.Connect(ctx, w.pg.SuperURL(testenv.AppDatabase))
	if err != nil {
		t.Fatal(err)
	}
	defer super.Close(ctx)
	if _, err := super.Exec(ctx, "CREATE TABLE pgh_victim (n int); ALTER TABLE pgh_victim OWNER TO "+w.pg.SCRAMUser.User); err != nil {
		t.Fatal(err)
	}
	p, url := w.access(w.admin, "app")
	defer p.Stop(2)
	id := pghSessionID(t, p.Stdout())
	c := connect(t, url)
	stmt := "SELECT 1 /* " + strings.Repeat("padding ", 1100000/8) + " */; DROP TABLE pgh_victim"
	_, err = c.Exec(ctx, stmt, pgx.QueryExecModeSimpleProtocol)
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) || pgErr.Code != "54000" || !strings.Contains(pgErr.Message, "recording limit") {
		t.Fatalf("padded DROP TABLE: %v, want 54000 over the recording limit", err)
	}
	var exists bool
	if err := super.QueryRow(ctx, "SELECT to_regclass('pgh_victim') IS NOT NULL").Scan(&exists); err != nil || !exists {
		t.Fatalf("the refused DROP TABLE ran (exists=%v, %v)", exists, err)
	}
	evs := w.waitLogs(id, 30*time.Second, func(evs []logEvent) bool {
		for _, e := range evs {
			if e.Outcome == "refused" {
				return true
			}
		}
		return false
	})
	for _, e := range evs {
		if e.Outcome == "refused" {
			if !strings.HasSuffix(e.Statement, "DROP TABLE pgh_victim") || !strings.Contains(e.Statement, fmt.Sprintf("[%d bytes, sha256 ", len(stmt))) ||
				e.ErrorCode != "54000" {
				t.Errorf("refused event: %s … %q (%s)", e.Statement[:30], e.Statement[max(0, len(e.Statement)-80):], e.ErrorCode)
			}
		}
	}
}
