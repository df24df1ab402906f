package postgres

import (
	"errors"
	"io"
	"net"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/airlockpam/airlock/internal/proxy/common"
	"github.com/airlockpam/airlock/internal/testenv"
	"github.com/airlockpam/airlock/internal/tunnel"
)

// TestCancel cancels a running query through the engine as psql's Ctrl+C
// does: a new connection to the proxy with the synthetic key.
func TestCancel(t *testing.T) {
	db := testenv.SharedPostgres(t)
	pg := db.Cluster
	tests := []struct {
		name string
		cfg  Config
	}{
		{"plain upstream", accountConfig(db, pg.SCRAMUser, tunnel.TLS{})},
		{"TLS upstream", accountConfig(db, pg.TLSUser, verifiedTLS(db))},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			log, rec := newLogger(t, tt.cfg.Password)
			p := startProxy(t, newEngine(t, WithLogger(log)), common.NewSession("s1"), tt.cfg)
			conn := p.connect(t, "")
			ctx := testContext(t)

			query := "SELECT pg_sleep(30), " + itoa(uint32(i))
			errc := make(chan error, 1)
			start := time.Now()
			go func() {
				_, err := conn.Exec(ctx, query)
				errc <- err
			}()
			waitForActive(t, db, query)
			if err := conn.PgConn().CancelRequest(ctx); err != nil {
				t.Fatalf("CancelRequest: %v", err)
			}
			err := <-errc
			elapsed := time.Since(start)
			t.Logf("query canceled after %s", elapsed)
			if pgErr := pgError(t, err); pgErr.Code != "57014" {
				t.Errorf("query failed with %s %s, want 57014", pgErr.Code, pgErr.Message)
			}
			if elapsed > 10*time.Second {
				t.Errorf("the cancel took %s", elapsed)
			}
			if n := rec.count("forwarded a cancel request"); n != 1 {
				t.Errorf("%d cancels forwarded, want 1", n)
			}
			// The connection goes on.
			if err := conn.Ping(ctx); err != nil {
				t.Errorf("after the cancel: %v", err)
			}
		})
	}
}

// TestCancelIgnored sends cancels that must not work: a wrong secret, an
// unknown process ID, and a right key sent to another session.
func TestCancelIgnored(t *testing.T) {
	db := testenv.SharedPostgres(t)
	cfg := accountConfig(db, db.Cluster.SCRAMUser, tunnel.TLS{})
	log, rec := newLogger(t, cfg.Password)
	eng := newEngine(t, WithLogger(log))
	a := startProxy(t, eng, common.NewSession("a"), cfg)
	b := startProxy(t, eng, common.NewSession("b"), cfg)
	conn := a.connect(t, "")
	ctx := testContext(t)

	const query = "SELECT pg_sleep(30), 'ignored'"
	errc := make(chan error, 1)
	go func() {
		_, err := conn.Exec(ctx, query)
		errc <- err
	}()
	backend := waitForActive(t, db, query)

	pid, key := conn.PgConn().PID(), conn.PgConn().SecretKey()
	wrongKey := append([]byte(nil), key...)
	wrongKey[0] ^= 0xff
	tests := []struct {
		name string
		addr string
		pid  uint32
		key  []byte
	}{
		{"wrong secret", a.addr, pid, wrongKey},
		{"unknown process ID", a.addr, pid ^ 1, key},
		{"longer key", a.addr, pid, append(append([]byte(nil), key...), 0)},
		{"other session", b.addr, pid, key},
		{"real backend key", a.addr, backend, key},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			sendCancel(t, tt.addr, tt.pid, tt.key)
			if err := map[string]*testProxy{a.addr: a, b.addr: b}[tt.addr].nextResult(t); err != nil {
				t.Errorf("Serve returned %v for a cancel request", err)
			}
			if n := rec.count("forwarded a cancel request"); n != 0 {
				t.Fatalf("a cancel was forwarded")
			}
			if !isActive(t, db, backend) {
				t.Fatal("the query is no longer running")
			}
		})
	}
	select {
	case err := <-errc:
		t.Fatalf("the query ended: %v", err)
	default:
	}

	// The right key to the right session works.
	sendCancel(t, a.addr, pid, key)
	if pgErr := pgError(t, <-errc); pgErr.Code != "57014" {
		t.Errorf("query failed with %s, want 57014", pgErr.Code)
	}
}

// sendCancel sends a CancelRequest to addr and waits until the engine closes
// the connection, which it does once it has dealt with the request.
func sendCancel(t testing.TB, addr string, pid uint32, key []byte) {
	t.Helper()
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(testTimeout))
	buf, err := (&pgproto3.CancelRequest{ProcessID: pid, SecretKey: key}).Encode(nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := conn.Write(buf); err != nil {
		t.Fatal(err)
	}
	if n, err := conn.Read(make([]byte, 1)); err != io.EOF {
		t.Fatalf("after a cancel request: read %d bytes, %v; want EOF", n, err)
	}
}

// TestSessionClose checks that closing a session ends all its connections,
// idle or running a query, and refuses new ones, while another session's
// connection goes on.
func TestSessionClose(t *testing.T) {
	db := testenv.SharedPostgres(t)
	cfg := accountConfig(db, db.Cluster.SCRAMUser, tunnel.TLS{})
	eng := newEngine(t)
	sess, other := common.NewSession("closing"), common.NewSession("other")
	p := startProxy(t, eng, sess, cfg)
	q := startProxy(t, eng, other, cfg)
	idle := p.connect(t, "")
	busy := p.connect(t, "")
	survivor := q.connect(t, "")
	ctx := testContext(t)
	if n := sess.Conns(); n != 2 {
		t.Errorf("Conns() = %d, want 2", n)
	}

	const query = "SELECT pg_sleep(30), 'session close'"
	errc := make(chan error, 1)
	go func() {
		_, err := busy.Exec(ctx, query)
		errc <- err
	}()
	waitForActive(t, db, query)

	start := time.Now()
	endSession(sess)
	for range 2 {
		if err := p.nextResult(t); !errors.Is(err, ErrSessionClosed) {
			t.Errorf("Serve returned %v, want ErrSessionClosed", err)
		}
	}
	if err := <-errc; err == nil {
		t.Error("the running query succeeded")
	}
	t.Logf("the running query ended %s after Close", time.Since(start))
	if err := idle.Ping(ctx); err == nil {
		t.Error("the idle connection still works")
	}
	if n := sess.Conns(); n != 0 {
		t.Errorf("Conns() = %d after Close", n)
	}
	if _, err := pgx.Connect(ctx, p.clientURL("x", "", "")); err == nil {
		t.Error("a new connection was served after Close")
	}
	if err := p.nextResult(t); !errors.Is(err, ErrSessionClosed) {
		t.Errorf("Serve returned %v for a new connection, want ErrSessionClosed", err)
	}
	if err := survivor.Ping(ctx); err != nil {
		t.Errorf("another session's connection: %v", err)
	}
	endSession(sess) // a second End does nothing
}
