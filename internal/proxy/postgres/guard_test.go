package postgres

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/airlockpam/airlock/internal/proxy/common"
	"github.com/airlockpam/airlock/internal/tunnel"
)

// fakeService is a TCP service for attack tests: each connection is handed
// to serve, and every byte any connection sent is kept.
type fakeService struct {
	addr  string
	mu    sync.Mutex
	got   bytes.Buffer
	conns int
}

func startFakeService(t *testing.T, serve func(conn net.Conn)) *fakeService {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &fakeService{addr: ln.Addr().String()}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			s.mu.Lock()
			s.conns++
			s.mu.Unlock()
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer conn.Close()
				_ = conn.SetDeadline(time.Now().Add(testTimeout))
				serve(&recordingConn{Conn: conn, s: s})
			}()
		}
	}()
	t.Cleanup(func() { _ = ln.Close(); wg.Wait() })
	return s
}

// settled returns what the service received once it holds at least n
// whole StartupMessages (the service reads concurrently with the engine's
// end of the connection), or after a few seconds.
func (s *fakeService) settled(n int) []byte {
	deadline := time.Now().Add(5 * time.Second)
	for {
		got, _ := s.received()
		if countStartups(got) >= n || time.Now().After(deadline) {
			return got
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// countStartups counts the whole StartupMessages at the start of b.
func countStartups(b []byte) int {
	n := 0
	for len(b) >= 8 {
		l := int(binary.BigEndian.Uint32(b))
		if l < 8 || l > len(b) || !bytes.Equal(b[4:8], []byte{0, 3, 0, 0}) {
			break
		}
		b = b[l:]
		n++
	}
	return n
}

func (s *fakeService) received() ([]byte, int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return bytes.Clone(s.got.Bytes()), s.conns
}

// recordingConn keeps what the peer sent in its fakeService.
type recordingConn struct {
	net.Conn
	s *fakeService
}

func (c *recordingConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	c.s.mu.Lock()
	c.s.got.Write(p[:n])
	c.s.mu.Unlock()
	return n, err
}

// rogueConfig is an account whose resource points at addr.
func rogueConfig(t *testing.T, addr string, methods ...string) Config {
	t.Helper()
	host, port, _ := net.SplitHostPort(addr)
	var p int
	for _, c := range port {
		p = p*10 + int(c-'0')
	}
	return Config{Host: host, Port: p, Database: "app", User: "app_rw", Password: "s3cret-Rogue-Pa55", AuthMethods: methods,
		ConnectTimeout: 5 * time.Second}
}

// rogueServer is a fake PostgreSQL server (as pgx's example/pgfortune)
// that asks for auth and, if a password comes, refuses the login.
func rogueServer(auth pgproto3.BackendMessage) func(net.Conn) {
	return func(conn net.Conn) {
		be := pgproto3.NewBackend(conn, conn)
		if _, err := be.ReceiveStartupMessage(); err != nil {
			return
		}
		be.Send(auth)
		if be.Flush() != nil {
			return
		}
		be.SetAuthType(authTypeOf(auth))
		if _, err := be.Receive(); err != nil {
			return
		}
		be.Send(&pgproto3.ErrorResponse{Severity: "FATAL", Code: "28P01", Message: "password authentication failed"})
		_ = be.Flush()
	}
}

func authTypeOf(m pgproto3.BackendMessage) uint32 {
	switch m.(type) {
	case *pgproto3.AuthenticationMD5Password:
		return pgproto3.AuthTypeMD5Password
	default:
		return pgproto3.AuthTypeCleartextPassword
	}
}

// TestRogueServerGetsNoPassword is the attack of issue 13: a resource
// pointed at a server of the attacker's, which asks for the password in
// cleartext (or as MD5). Without the admin's permission the server receives
// no byte of a PasswordMessage, and the login fails saying why; with it,
// the password is sent.
func TestRogueServerGetsNoPassword(t *testing.T) {
	for _, tt := range []struct {
		name   string
		auth   pgproto3.BackendMessage
		method string
		words  string
	}{
		{"cleartext", &pgproto3.AuthenticationCleartextPassword{}, tunnel.AuthCleartext, "asked for cleartext password authentication, which this resource does not allow"},
		{"md5", &pgproto3.AuthenticationMD5Password{Salt: [4]byte{1, 2, 3, 4}}, tunnel.AuthMD5, "asked for MD5 password authentication, which this resource does not allow"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			srv := startFakeService(t, rogueServer(tt.auth))
			cfg := rogueConfig(t, srv.addr)

			// Validation.
			res := Validate(testContext(t), cfg)
			if res.OK || res.Code != tunnel.CodeAuthFailed || !strings.Contains(res.Message, tt.words) ||
				!strings.Contains(res.Message, "organization admin can allow") {
				t.Errorf("Validate = %+v, want auth_failed saying %q", res, tt.words)
			}
			// A served connection.
			eng := newEngine(t)
			p := startProxy(t, eng, common.NewSession("s1"), cfg)
			_, err := pgconn.Connect(testContext(t), p.clientURL("x", "", ""))
			var pgErr *pgconn.PgError
			if !errors.As(err, &pgErr) || !strings.Contains(pgErr.Message, tt.words) {
				t.Errorf("client error = %v, want one saying %q", err, tt.words)
			}
			var ce *ConnectError
			if err := p.nextResult(t); !errors.As(err, &ce) || ce.Code != tunnel.CodeAuthFailed {
				t.Errorf("Serve = %v, want a ConnectError auth_failed", err)
			}
			got := srv.settled(2)
			if _, conns := srv.received(); conns != 2 {
				t.Errorf("%d connections reached the server, want 2", conns)
			}
			if bytes.Contains(got, []byte(cfg.Password)) {
				t.Errorf("the rogue server received the password: %q", got)
			}
			if rest := skipStartups(t, got, 2); len(rest) > 0 {
				t.Errorf("after the StartupMessages the rogue server received %q", rest)
			}

			// Allowed by an admin: the password goes.
			allowed := rogueConfig(t, srv.addr, tt.method)
			res = Validate(testContext(t), allowed)
			if res.Code != tunnel.CodeAuthFailed || !strings.Contains(res.Message, "wrong username or password") {
				t.Errorf("Validate with %s allowed = %+v, want the server's refusal of the password", tt.method, res)
			}
			got = srv.settled(3)
			if rest := skipStartups(t, got, 3); len(rest) == 0 || rest[0] != 'p' {
				t.Errorf("with %s allowed, no password message was sent: %q", tt.method, rest)
			}
		})
	}
}

// TestNotPostgresUpstream: a resource pointed at a service that does not
// speak PostgreSQL (mail, web, noise) ends the login at its first answer:
// the service receives the StartupMessage and nothing else, nothing is
// allocated by the length its bytes would declare, and the client and the
// validation get an error that says what is wrong without the service's
// banner.
func TestNotPostgresUpstream(t *testing.T) {
	for _, tt := range []struct {
		name  string
		serve func(net.Conn)
	}{
		{"smtp", func(c net.Conn) {
			_, _ = io.WriteString(c, "220 mail.internal ESMTP Postfix\r\n")
			_, _ = io.Copy(io.Discard, c)
		}},
		{"http", func(c net.Conn) {
			buf := make([]byte, 1)
			_, _ = c.Read(buf)
			_, _ = io.WriteString(c, "HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
			_, _ = io.Copy(io.Discard, c)
		}},
		{"noise", func(c net.Conn) {
			_, _ = c.Write([]byte{'R', 0x7f, 0xff, 0xff, 0xff, 1, 2, 3})
			_, _ = io.Copy(io.Discard, c)
		}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			srv := startFakeService(t, tt.serve)
			cfg := rogueConfig(t, srv.addr)
			res := Validate(testContext(t), cfg)
			if res.OK || res.Code != tunnel.CodeUnreachable || !strings.Contains(res.Message, "is not a PostgreSQL server") ||
				strings.Contains(res.Message, "Postfix") || strings.Contains(res.Message, "Bad Request") {
				t.Errorf("Validate = %+v, want unreachable: not a PostgreSQL server", res)
			}
			eng := newEngine(t)
			p := startProxy(t, eng, common.NewSession("s1"), cfg)
			_, err := pgconn.Connect(testContext(t), p.clientURL("x", "", "probe"))
			var pgErr *pgconn.PgError
			if !errors.As(err, &pgErr) || !strings.Contains(pgErr.Message, "is not a PostgreSQL server") {
				t.Errorf("client error = %v, want one saying the service is not a PostgreSQL server", err)
			}
			_ = p.nextResult(t)
			got := srv.settled(2)
			// Two StartupMessages (validation, client), and not a byte
			// more: not even pgconn's Terminate.
			if rest := skipStartups(t, got, 2); len(rest) > 0 {
				t.Errorf("after the StartupMessages the service received %q", rest)
			}
		})
	}
}

// skipStartups returns what follows the first n StartupMessages of got,
// failing the test if got does not start with them.
func skipStartups(t *testing.T, got []byte, n int) []byte {
	t.Helper()
	rest := got
	for range n {
		if len(rest) < 8 {
			t.Fatalf("received %q, want %d StartupMessages first", got, n)
		}
		l := int(binary.BigEndian.Uint32(rest))
		if l > len(rest) || !bytes.Equal(rest[4:8], []byte{0, 3, 0, 0}) {
			t.Fatalf("received %q, want %d StartupMessages first", got, n)
		}
		rest = rest[l:]
	}
	return rest
}

// TestStartupParamsSmuggling: a client startup parameter with CR/LF (to
// smuggle a line to a line-based service behind the resource) or of an
// absurd length is refused with a FATAL 08P01 naming it; the service never
// sees a connection.
func TestStartupParamsSmuggling(t *testing.T) {
	var lines []string
	var mu sync.Mutex
	srv := startFakeService(t, func(c net.Conn) {
		b, _ := io.ReadAll(c)
		mu.Lock()
		lines = append(lines, strings.Split(string(b), "\n")...)
		mu.Unlock()
	})
	cfg := rogueConfig(t, srv.addr)
	eng := newEngine(t)
	p := startProxy(t, eng, common.NewSession("s1"), cfg)
	for _, tt := range []struct {
		name, param, value, words string
	}{
		{"LF", "application_name", "x\nFLUSHALL", `the startup parameter "application_name" contains the control character 0x0A`},
		{"CRLF", "options", "-c a=b\r\nQUIT", `the startup parameter "options" contains the control character 0x0D`},
		{"control in a name", "evil\rname", "v", `the startup parameter name "evil\rname" contains the control character 0x0D`},
		{"long value", "application_name", strings.Repeat("a", 5000), `the startup parameter "application_name" is 5000 bytes long`},
		{"long name", strings.Repeat("n", 200), "v", `a startup parameter name of 200 bytes`},
	} {
		t.Run(tt.name, func(t *testing.T) {
			conn, err := net.Dial("tcp", p.addr)
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			fe := pgproto3.NewFrontend(conn, conn)
			fe.Send(&pgproto3.StartupMessage{ProtocolVersion: pgproto3.ProtocolVersion30,
				Parameters: map[string]string{"user": "x", tt.param: tt.value}})
			if err := fe.Flush(); err != nil {
				t.Fatal(err)
			}
			_ = conn.SetReadDeadline(time.Now().Add(testTimeout))
			msg, err := fe.Receive()
			er, ok := msg.(*pgproto3.ErrorResponse)
			if err != nil || !ok || er.Severity != "FATAL" || er.Code != sqlStateProtocolViolation || !strings.Contains(er.Message, tt.words) {
				t.Errorf("got %#v, %v; want FATAL 08P01 saying %q", msg, err, tt.words)
			}
			if err := p.nextResult(t); !errors.Is(err, ErrInvalidStartup) {
				t.Errorf("Serve = %v, want ErrInvalidStartup", err)
			}
		})
	}
	got, conns := srv.received()
	if conns != 0 || len(got) != 0 {
		t.Errorf("the service got %d connections and %q", conns, got)
	}
	mu.Lock()
	defer mu.Unlock()
	for _, l := range lines {
		if strings.Contains(l, "FLUSHALL") || strings.Contains(l, "QUIT") {
			t.Errorf("a smuggled line reached the service: %q", l)
		}
	}
}

// TestWithDialer: the engine's dialer opens the upstream connections of
// validation and of served connections.
func TestWithDialer(t *testing.T) {
	srv := startFakeService(t, rogueServer(&pgproto3.AuthenticationCleartextPassword{}))
	var mu sync.Mutex
	var dialed []string
	dial := func(ctx context.Context, network, addr string) (net.Conn, error) {
		mu.Lock()
		dialed = append(dialed, addr)
		mu.Unlock()
		if strings.HasSuffix(addr, ":1") {
			return nil, errors.New("the gateway's target policy does not allow 127.0.0.1:1")
		}
		return (&net.Dialer{}).DialContext(ctx, network, addr)
	}
	eng := newEngine(t, WithDialer(dial))
	target := tunnel.Target{Kind: tunnel.KindPostgres, Host: "127.0.0.1", Port: 1, Database: "d", Username: "u", Password: "Dialer-Test-Password"}
	if res := eng.Validate(testContext(t), target); res.OK || !strings.Contains(res.Message, "target policy does not allow") {
		t.Errorf("Validate = %+v, want the dialer's refusal", res)
	}
	p := startProxy(t, eng, common.NewSession("s1"), rogueConfig(t, srv.addr))
	_, _ = pgconn.Connect(testContext(t), p.clientURL("x", "", ""))
	_ = p.nextResult(t)
	mu.Lock()
	defer mu.Unlock()
	if len(dialed) != 2 || dialed[1] != srv.addr {
		t.Errorf("dialed %q, want 127.0.0.1:1 then %s", dialed, srv.addr)
	}
}
