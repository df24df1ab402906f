package gateway

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/airlockpam/airlock/internal/pki"
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

// pgTarget returns the target of role r in db.
func pgTarget(db testenv.Database, r testenv.Role) *tunnel.Target {
	return &tunnel.Target{Kind: tunnel.KindPostgres, Host: db.Cluster.Host, Port: db.Cluster.Port,
		Database: db.Name, Username: r.User, Password: r.Password}
}

// dataConn opens a data stream of session h.SessionID on a, as the relay
// does, and returns a PostgreSQL connection over it, logged in through the
// gateway's engine.
func dataConn(t *testing.T, a *Agent, ca *pki.CA, serverName string, h tunnel.Header) *pgconn.PgConn {
	t.Helper()
	srv, cli := tcpPair(t)
	served := make(chan error, 1)
	go func() { served <- a.serveData(context.Background(), srv, h) }()
	t.Cleanup(func() {
		cli.Close()
		select {
		case <-served:
		case <-time.After(30 * time.Second):
			t.Error("serveData did not return")
		}
	})
	cert := clientCert(t, ca, h.SessionID, time.Now().Add(time.Hour))
	tc := tls.Client(cli, &tls.Config{Certificates: []tls.Certificate{cert}, RootCAs: ca.Pool(), ServerName: serverName, MinVersion: tls.VersionTLS13})
	cfg, err := pgconn.ParseConfig("postgres://someone@gateway/?sslmode=disable")
	if err != nil {
		t.Fatal(err)
	}
	cfg.DialFunc = func(context.Context, string, string) (net.Conn, error) { return tc, nil }
	cfg.LookupFunc = func(context.Context, string) ([]string, error) { return []string{"127.0.0.1"}, nil }
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	pg, err := pgconn.ConnectConfig(ctx, cfg)
	if err != nil {
		t.Fatalf("connect through the gateway: %v", err)
	}
	t.Cleanup(func() { pg.Conn().Close() })
	return pg
}

func queryOne(t *testing.T, pg *pgconn.PgConn, sql string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	res, err := pg.Exec(ctx, sql).ReadAll()
	if err != nil {
		return "", err
	}
	return string(res[0].Rows[0][0]), nil
}

// nextMessage reads what an idle client receives next, without sending
// anything: a client that writes to a connection its peer has closed may
// have the bytes waiting for it destroyed by the reset its write causes.
func nextMessage(pg *pgconn.PgConn) error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	msg, err := pg.ReceiveMessage(ctx)
	if err == nil {
		return fmt.Errorf("received %T, not an error", msg)
	}
	return err
}

// TestGatewayUsesEachStreamsTarget opens two connections of one session
// whose data streams carry different credentials (as after a rotation, or
// the server's re-authorization of each connection) and log settings: each
// connection is logged in with its own stream's credentials, and the
// latest settings apply to the live session.
func TestGatewayUsesEachStreamsTarget(t *testing.T) {
	db := testenv.SharedPostgres(t)
	ca := newCA(t, "org1")
	a, name := newTestAgent(t, ca)
	h := tunnel.Header{Type: tunnel.TypeData, SessionID: "s1", ExpiresAt: time.Now().Add(time.Hour).Unix()}

	h.Target = pgTarget(db, db.Cluster.SCRAMUser)
	first := dataConn(t, a, ca, name, h)
	h.Target = pgTarget(db, db.Cluster.MD5User)
	h.Target.AuthMethods = []string{tunnel.AuthMD5} // an md5 role: allowed for this resource
	h.MaskPatterns = []string{`card-\d+`}
	second := dataConn(t, a, ca, name, h)
	for pg, want := range map[*pgconn.PgConn]string{first: db.Cluster.SCRAMUser.User, second: db.Cluster.MD5User.User} {
		if got, err := queryOne(t, pg, "SELECT current_user"); err != nil || got != want {
			t.Errorf("current_user = %q, %v; want %q", got, err, want)
		}
	}
	// The second stream's log settings apply to the live session too.
	a.mu.Lock()
	s := a.sessions["s1"]
	a.mu.Unlock()
	if p := s.MaskPatterns(); len(p) != 1 || p[0].String() != `card-\d+` {
		t.Errorf("mask patterns %v after the second stream, want its own", p)
	}
}

// TestGatewayTerminateStream ends a session through a terminate stream, as
// the server sends it: the clients are told the server's words, the answer
// comes once the connections have ended, and the session refuses new data
// streams. Without words, the gateway derives them from the reason.
func TestGatewayTerminateStream(t *testing.T) {
	db := testenv.SharedPostgres(t)
	ca := newCA(t, "org1")
	a, name := newTestAgent(t, ca)
	target := pgTarget(db, db.Cluster.SCRAMUser)
	tests := []struct {
		reason, message, want string
	}{
		{tunnel.EndTerminated, "session terminated by an administrator", "airlock: session terminated by an administrator"},
		{tunnel.EndRevoked, "", "airlock: session revoked: its access was withdrawn"},
	}
	for i, tt := range tests {
		t.Run(tt.reason, func(t *testing.T) {
			id := fmt.Sprintf("term-%d", i)
			h := tunnel.Header{Type: tunnel.TypeData, SessionID: id, Target: target, ExpiresAt: time.Now().Add(time.Hour).Unix()}
			pg := dataConn(t, a, ca, name, h)
			if _, err := queryOne(t, pg, "SELECT 1"); err != nil {
				t.Fatal(err)
			}
			res := request(t, a, tunnel.Header{Type: tunnel.TypeTerminate, SessionID: id, Reason: tt.reason, Message: tt.message})
			if !res.OK {
				t.Fatalf("terminate answered %+v", res)
			}
			err := nextMessage(pg)
			var pgErr *pgconn.PgError
			if !errors.As(err, &pgErr) || pgErr.Code != "57P01" || pgErr.Message != tt.want {
				t.Fatalf("after the end the client got %v, want FATAL 57P01 %q", err, tt.want)
			}
			if err := a.serveData(context.Background(), nopConn{}, h); err == nil || !strings.Contains(err.Error(), "terminated") {
				t.Errorf("a data stream of the ended session: %v", err)
			}
			// Ending it again is answered OK and changes nothing.
			if res := request(t, a, tunnel.Header{Type: tunnel.TypeTerminate, SessionID: id, Reason: tunnel.EndExpired}); !res.OK {
				t.Errorf("a second terminate answered %+v", res)
			}
		})
	}
}

// TestGatewayShutdownEndsSessions ends every live session as the gateway
// stops, and tells the clients so.
func TestGatewayShutdownEndsSessions(t *testing.T) {
	db := testenv.SharedPostgres(t)
	ca := newCA(t, "org1")
	a, name := newTestAgent(t, ca)
	h := tunnel.Header{Type: tunnel.TypeData, SessionID: "stop", Target: pgTarget(db, db.Cluster.SCRAMUser), ExpiresAt: time.Now().Add(time.Hour).Unix()}
	pg := dataConn(t, a, ca, name, h)
	a.endAll()
	err := nextMessage(pg)
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) || pgErr.Code != "57P01" || pgErr.Message != "airlock: the gateway is shutting down" {
		t.Fatalf("after the shutdown the client got %v", err)
	}
}

// TestGatewayUpdateStream changes the log settings of a live session.
func TestGatewayUpdateStream(t *testing.T) {
	ca := newCA(t, "org1")
	a, _ := newTestAgent(t, ca)
	s := a.session("live", time.Now().Add(time.Hour), nil, false)
	res := request(t, a, tunnel.Header{Type: tunnel.TypeUpdate, SessionID: "live", MaskPatterns: []string{`card-\d+`}, RedactValues: true})
	if !res.OK {
		t.Fatalf("update answered %+v", res)
	}
	if p := s.MaskPatterns(); len(p) != 1 || p[0].String() != `card-\d+` || !s.RedactValues() {
		t.Errorf("after the update: patterns %v, redact %v", p, s.RedactValues())
	}
	// A data stream carries the current settings too.
	if a.session("live", time.Now().Add(time.Hour), nil, false) != s || len(s.MaskPatterns()) != 0 || s.RedactValues() {
		t.Errorf("a data stream's settings were not applied: %v %v", s.MaskPatterns(), s.RedactValues())
	}
	if res := request(t, a, tunnel.Header{Type: tunnel.TypeUpdate, SessionID: "not-here"}); !res.OK {
		t.Errorf("update of a session not live here answered %+v", res)
	}
}

func TestEndMessage(t *testing.T) {
	at := time.Date(2026, 12, 3, 16, 0, 0, 0, time.FixedZone("x", 3600))
	tests := map[string]string{
		tunnel.EndExpired:     "session expired at 2026-12-03T15:00:00Z",
		tunnel.EndTerminated:  "session terminated by an administrator",
		tunnel.EndGatewayStop: "the gateway is shutting down",
		"something new":       "session ended",
	}
	for reason, want := range tests {
		if got := endMessage(reason, at); got != want {
			t.Errorf("endMessage(%q) = %q, want %q", reason, got, want)
		}
	}
}

// request sends one request stream to a, as the server does, and returns
// the answer.
func request(t *testing.T, a *Agent, h tunnel.Header) tunnel.Result {
	t.Helper()
	srv, cli := tcpPair(t)
	defer cli.Close()
	go a.handle(context.Background(), srv)
	_ = cli.SetDeadline(time.Now().Add(30 * time.Second))
	if err := tunnel.WriteFrame(cli, h); err != nil {
		t.Fatal(err)
	}
	var res tunnel.Result
	if err := tunnel.ReadFrame(cli, &res); err != nil {
		t.Fatalf("reading the answer: %v", err)
	}
	return res
}

// TestGatewayMalformedStream sends a stream whose header is not one: it is
// closed, and the gateway goes on serving other streams.
func TestGatewayMalformedStream(t *testing.T) {
	ca := newCA(t, "org1")
	a, _ := newTestAgent(t, ca)
	for _, junk := range [][]byte{[]byte("\x00\x00\x00\x05{{{{{"), []byte("\xff\xff\xff\xffabc"), []byte("GET / HTTP/1.1\r\n\r\n")} {
		srv, cli := tcpPair(t)
		done := make(chan struct{})
		go func() { a.handle(context.Background(), srv); close(done) }()
		_, _ = cli.Write(junk)
		_ = cli.SetReadDeadline(time.Now().Add(30 * time.Second))
		if n, err := cli.Read(make([]byte, 1)); err == nil {
			t.Errorf("%q: the gateway answered %d bytes", junk, n)
		}
		<-done
		cli.Close()
	}
	if res := request(t, a, tunnel.Header{Type: tunnel.TypeUpdate, SessionID: "x"}); !res.OK {
		t.Errorf("after malformed streams: %+v", res)
	}
}

// TestGatewayConcurrentEnds ends one session twice at once, as the server's
// expiry may race the gateway's own timer: neither is answered before the
// session's connections have ended.
func TestGatewayConcurrentEnds(t *testing.T) {
	db := testenv.SharedPostgres(t)
	ca := newCA(t, "org1")
	a, name := newTestAgent(t, ca)
	h := tunnel.Header{Type: tunnel.TypeData, SessionID: "twice", Target: pgTarget(db, db.Cluster.SCRAMUser), ExpiresAt: time.Now().Add(time.Hour).Unix()}
	pg := dataConn(t, a, ca, name, h)
	a.mu.Lock()
	s := a.sessions["twice"]
	a.mu.Unlock()
	running := make(chan error, 1)
	go func() {
		_, err := queryOne(t, pg, "SELECT pg_sleep(30)::text")
		running <- err
	}()
	// The sleep is running once the server says so.
	waitActive(t, db, "SELECT pg_sleep(30)::text")

	conns := make(chan int, 2)
	go func() {
		a.terminate(context.Background(), "twice", tunnel.EndExpired, "")
		conns <- s.Conns()
	}()
	go func() {
		request(t, a, tunnel.Header{Type: tunnel.TypeTerminate, SessionID: "twice", Reason: tunnel.EndExpired, Message: "session expired"})
		conns <- s.Conns()
	}()
	for range 2 {
		if n := <-conns; n != 0 {
			t.Errorf("an end returned with %d connections still served", n)
		}
	}
	if err := <-running; err == nil {
		t.Error("the sleep survived the session")
	}
}

// waitActive waits until a backend of db runs query.
func waitActive(t *testing.T, db testenv.Database, query string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := pgconn.Connect(ctx, db.SuperURL())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	for {
		res := conn.ExecParams(ctx, "SELECT count(*) FROM pg_stat_activity WHERE state = 'active' AND query = $1",
			[][]byte{[]byte(query)}, nil, nil, nil).Read()
		if res.Err != nil {
			t.Fatal(res.Err)
		}
		if string(res.Rows[0][0]) != "0" {
			return
		}
		select {
		case <-ctx.Done():
			t.Fatalf("no backend ran %q", query)
		case <-time.After(20 * time.Millisecond):
		}
	}
}
