package postgres

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/airlockpam/airlock/internal/proxy/common"
	"github.com/airlockpam/airlock/internal/testenv"
	"github.com/airlockpam/airlock/internal/tunnel"
)

// TestServeInjectsCredentials connects through the engine as each kind of
// account, with a client that knows no password and asks for another user
// and database, and checks who it is, where, and how the upstream connection
// is secured.
func TestServeInjectsCredentials(t *testing.T) {
	db := testenv.SharedPostgres(t)
	pg := db.Cluster
	tests := []struct {
		name    string
		role    testenv.Role
		tls     tunnel.TLS
		wantSSL bool
	}{
		{"scram without TLS", pg.SCRAMUser, tunnel.TLS{}, false},
		{"md5 without TLS", pg.MD5User, tunnel.TLS{}, false},
		{"scram over verified TLS", pg.SCRAMUser, verifiedTLS(db), true},
		{"TLS-only role over verified TLS", pg.TLSUser, verifiedTLS(db), true},
		{"TLS-only role over unverified TLS", pg.TLSUser, tunnel.TLS{Enabled: true}, true},
		{"md5 over unverified TLS", pg.MD5User, tunnel.TLS{Enabled: true, CAPEM: "ignored when not verifying"}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			log, _ := newLogger(t, tt.role.Password)
			p := startProxy(t, newEngine(t, WithLogger(log)), common.NewSession("s1"), accountConfig(db, tt.role, tt.tls))
			conn := p.connect(t, "airlock-test-app")
			ctx := testContext(t)

			var user, database, appName string
			var ssl bool
			err := conn.QueryRow(ctx, `SELECT current_user, current_database(), current_setting('application_name'),
				(SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid())`).Scan(&user, &database, &appName, &ssl)
			if err != nil {
				t.Fatal(err)
			}
			if user != tt.role.User || database != db.Name {
				t.Errorf("connected as %s to %s, want %s to %s", user, database, tt.role.User, db.Name)
			}
			if appName != "airlock-test-app" {
				t.Errorf("application_name = %q, want the client's", appName)
			}
			if ssl != tt.wantSSL {
				t.Errorf("upstream ssl = %v, want %v", ssl, tt.wantSSL)
			}
			var shown string
			if err := conn.QueryRow(ctx, "SHOW application_name").Scan(&shown); err != nil || shown != "airlock-test-app" {
				t.Errorf("SHOW application_name = %q, %v", shown, err)
			}
			// The client sees the server's parameters.
			if v := conn.PgConn().ParameterStatus("server_version"); !strings.HasPrefix(v, "15") {
				t.Errorf("server_version = %q", v)
			}
		})
	}
}

// TestServeRefusesLogin checks that an upstream failure reaches the client as
// an ErrorResponse that says why and holds no password, and that Serve
// returns a *ConnectError.
func TestServeRefusesLogin(t *testing.T) {
	db := testenv.SharedPostgres(t)
	pg := db.Cluster
	wrongPassword := pg.SCRAMUser
	wrongPassword.Password = "not-the-password-0123456789"
	noDB := accountConfig(db, pg.SCRAMUser, tunnel.TLS{})
	noDB.Database = "no_such_database"
	tests := []struct {
		name     string
		cfg      Config
		code     string // SQLSTATE the client gets
		wantCode string // ConnectError.Code
		contains string
	}{
		{"TLS-only role without TLS", accountConfig(db, pg.TLSUser, tunnel.TLS{}), "28000", tunnel.CodeTLS, "only over TLS"},
		{"wrong CA", accountConfig(db, pg.TLSUser, tunnel.TLS{Enabled: true, RejectUnauthorized: true, CAPEM: string(testenv.NewCA(t).CertPEM)}),
			"08006", tunnel.CodeTLS, "certificate signed by unknown authority"},
		{"wrong password", accountConfig(db, wrongPassword, tunnel.TLS{}), "28P01", tunnel.CodeAuthFailed, "wrong username or password"},
		{"missing database", noDB, "3D000", tunnel.CodeNoDatabase, `"no_such_database" does not exist`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			log, _ := newLogger(t, tt.cfg.Password)
			p := startProxy(t, newEngine(t, WithLogger(log)), common.NewSession("s1"), tt.cfg)
			_, err := pgx.Connect(testContext(t), p.clientURL("x", "", ""))
			if err == nil {
				t.Fatal("connected")
			}
			pgErr := pgError(t, err)
			if pgErr.Code != tt.code || !strings.HasPrefix(pgErr.Message, "airlock: cannot connect to the database: ") ||
				!strings.Contains(pgErr.Message, tt.contains) {
				t.Errorf("client got %s %q, want %s and %q", pgErr.Code, pgErr.Message, tt.code, tt.contains)
			}
			if strings.Contains(err.Error(), tt.cfg.Password) {
				t.Errorf("the client's error holds the password: %v", err)
			}
			var ce *ConnectError
			if serr := p.nextResult(t); !errors.As(serr, &ce) || ce.Code != tt.wantCode {
				t.Errorf("Serve returned %v, want a ConnectError with code %s", serr, tt.wantCode)
			} else if strings.Contains(ce.Error(), tt.cfg.Password) {
				t.Errorf("Serve's error holds the password: %v", ce)
			}
		})
	}
}

// TestGreeting speaks the protocol by hand, for a client that asks for
// protocol 3.0 and one that asks for 3.2 with a protocol option, and checks
// every byte the client receives before ReadyForQuery: nothing from the
// server's authentication exchange, and no password.
func TestGreeting(t *testing.T) {
	db := testenv.SharedPostgres(t)
	pg := db.Cluster
	tests := []struct {
		name            string
		role            testenv.Role
		version         uint32
		params          map[string]string
		wantNegotiation bool
	}{
		{"md5 with protocol 3.0", pg.MD5User, pgproto3.ProtocolVersion30, nil, false},
		{"scram with protocol 3.0", pg.SCRAMUser, pgproto3.ProtocolVersion30, nil, false},
		{"scram with protocol 3.2", pg.SCRAMUser, pgproto3.ProtocolVersion32, nil, true},
		{"protocol 3.0 with an option", pg.SCRAMUser, pgproto3.ProtocolVersion30, map[string]string{"_pq_.something": "1"}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := startProxy(t, newEngine(t), common.NewSession("s1"), accountConfig(db, tt.role, tunnel.TLS{}))
			conn, err := net.Dial("tcp", p.addr)
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			_ = conn.SetDeadline(time.Now().Add(testTimeout))
			var received bytes.Buffer
			fe := pgproto3.NewFrontend(io.TeeReader(conn, &received), conn)

			params := map[string]string{"user": "mallory", "database": db.Name}
			for k, v := range tt.params {
				params[k] = v
			}
			fe.Send(&pgproto3.StartupMessage{ProtocolVersion: tt.version, Parameters: params})
			if err := fe.Flush(); err != nil {
				t.Fatal(err)
			}
			var types []string
			var key *pgproto3.BackendKeyData
		read:
			for {
				msg, err := fe.Receive()
				if err != nil {
					t.Fatalf("after %v: %v", types, err)
				}
				switch m := msg.(type) {
				case *pgproto3.NegotiateProtocolVersion:
					types = append(types, "NegotiateProtocolVersion")
					if m.NewestMinorProtocol != 0 {
						t.Errorf("offered protocol 3.%d", m.NewestMinorProtocol)
					}
				case *pgproto3.AuthenticationOk:
					types = append(types, "AuthenticationOk")
				case *pgproto3.ParameterStatus:
					if types[len(types)-1] != "ParameterStatus" {
						types = append(types, "ParameterStatus")
					}
				case *pgproto3.BackendKeyData:
					types = append(types, "BackendKeyData")
					key = &pgproto3.BackendKeyData{ProcessID: m.ProcessID, SecretKey: append([]byte(nil), m.SecretKey...)}
				case *pgproto3.ReadyForQuery:
					types = append(types, "ReadyForQuery")
					break read
				default:
					t.Fatalf("unexpected %T after %v", msg, types)
				}
			}
			want := "AuthenticationOk ParameterStatus BackendKeyData ReadyForQuery"
			if tt.wantNegotiation {
				want = "NegotiateProtocolVersion " + want
			}
			if got := strings.Join(types, " "); got != want {
				t.Errorf("greeting = %s, want %s", got, want)
			}
			if key == nil || key.ProcessID == 0 || key.ProcessID > 1<<31-1 || len(key.SecretKey) != 4 {
				t.Errorf("BackendKeyData = %+v, want a positive process ID and a 4-byte key", key)
			}
			if bytes.Contains(received.Bytes(), []byte(tt.role.Password)) {
				t.Error("the client received the password")
			}

			// A query works, as the account, not as the user the client
			// named.
			fe.Send(&pgproto3.Query{String: "SELECT current_user || ' ' || pg_backend_pid()::text || ' ' || current_setting('application_name')"})
			if err := fe.Flush(); err != nil {
				t.Fatal(err)
			}
			var row string
			for {
				msg, err := fe.Receive()
				if err != nil {
					t.Fatal(err)
				}
				if d, ok := msg.(*pgproto3.DataRow); ok {
					row = string(d.Values[0])
				}
				if e, ok := msg.(*pgproto3.ErrorResponse); ok {
					t.Fatalf("query failed: %s", e.Message)
				}
				if _, ok := msg.(*pgproto3.ReadyForQuery); ok {
					break
				}
			}
			if !strings.HasPrefix(row, tt.role.User+" ") {
				t.Errorf("query ran as %q, want %s", row, tt.role.User)
			}
			if key != nil && strings.Contains(row, " "+itoa(key.ProcessID)+" ") {
				t.Errorf("the synthetic process ID is the real one: %s", row)
			}
			fe.Send(&pgproto3.Terminate{})
			_ = fe.Flush()
			if err := p.nextResult(t); err != nil {
				t.Errorf("Serve returned %v after a Terminate", err)
			}
		})
	}
}

func itoa(n uint32) string { return strconv.FormatUint(uint64(n), 10) }

// TestQueries runs the simple and extended query protocols, a transaction
// and results larger than the relay's buffers through the engine.
func TestQueries(t *testing.T) {
	db := testenv.SharedPostgres(t)
	p := startProxy(t, newEngine(t), common.NewSession("s1"), accountConfig(db, db.Cluster.SCRAMUser, verifiedTLS(db)))
	conn := p.connect(t, "")
	ctx := testContext(t)

	tests := []struct {
		name string
		mode pgx.QueryExecMode
	}{
		{"simple protocol", pgx.QueryExecModeSimpleProtocol},
		{"extended protocol", pgx.QueryExecModeCacheStatement},
		{"extended protocol, described each time", pgx.QueryExecModeDescribeExec},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var sum int
			var text string
			err := conn.QueryRow(ctx, "SELECT $1::int + $2::int, $3::text || '!'", tt.mode, 20, 22, "it's").Scan(&sum, &text)
			if err != nil || sum != 42 || text != "it's!" {
				t.Errorf("got %d %q %v", sum, text, err)
			}
			var big string
			if err := conn.QueryRow(ctx, "SELECT repeat('x', $1::int)", tt.mode, 1<<20).Scan(&big); err != nil || len(big) != 1<<20 {
				t.Errorf("got %d bytes, %v", len(big), err)
			}
		})
	}

	t.Run("transaction", func(t *testing.T) {
		if _, err := conn.Exec(ctx, "CREATE TABLE t (id int PRIMARY KEY, payload text)"); err != nil {
			t.Fatal(err)
		}
		tx, err := conn.Begin(ctx)
		if err != nil {
			t.Fatal(err)
		}
		rows := make([][]any, 1000)
		for i := range rows {
			rows[i] = []any{i, strings.Repeat("y", 100)}
		}
		if n, err := tx.CopyFrom(ctx, pgx.Identifier{"t"}, []string{"id", "payload"}, pgx.CopyFromRows(rows)); err != nil || n != 1000 {
			t.Fatalf("COPY: %d, %v", n, err)
		}
		if err := tx.Commit(ctx); err != nil {
			t.Fatal(err)
		}
		var n int
		if err := conn.QueryRow(ctx, "SELECT count(*) FROM t").Scan(&n); err != nil || n != 1000 {
			t.Errorf("count = %d, %v", n, err)
		}
		_, err = conn.Exec(ctx, "INSERT INTO t VALUES (1, 'duplicate')")
		if pgErr := pgError(t, err); pgErr.Code != "23505" {
			t.Errorf("duplicate key: %s", pgErr.Code)
		}
		// The connection is still usable after an error.
		if err := conn.Ping(ctx); err != nil {
			t.Error(err)
		}
	})
}

// TestServeContext checks that ending Serve's context ends the connection.
func TestServeContext(t *testing.T) {
	db := testenv.SharedPostgres(t)
	eng := newEngine(t)
	client, server := net.Pipe()
	defer client.Close()
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() {
		errc <- eng.Serve(ctx, server, common.NewSession("s"), accountConfig(db, db.Cluster.SCRAMUser, tunnel.TLS{}))
	}()
	cfg, err := pgconn.ParseConfig("host=127.0.0.1 sslmode=disable user=x")
	if err != nil {
		t.Fatal(err)
	}
	cfg.DialFunc = func(context.Context, string, string) (net.Conn, error) { return client, nil }
	pgc, err := pgconn.ConnectConfig(testContext(t), cfg)
	if err != nil {
		t.Fatal(err)
	}
	cancel()
	select {
	case err := <-errc:
		if !errors.Is(err, context.Canceled) {
			t.Errorf("Serve returned %v, want context.Canceled", err)
		}
	case <-time.After(testTimeout):
		t.Fatal("Serve did not return")
	}
	if _, err := pgc.Exec(testContext(t), "SELECT 1").ReadAll(); err == nil {
		t.Error("the connection still works")
	}
}

// TestMalformedOpenings sends broken opening packets, each of which must end
// its own connection, with an ErrorResponse when one can be sent, while a
// healthy connection of the same session goes on working.
func TestMalformedOpenings(t *testing.T) {
	db := testenv.SharedPostgres(t)
	cfg := accountConfig(db, db.Cluster.SCRAMUser, tunnel.TLS{})
	eng := newEngine(t, WithStartupTimeout(500*time.Millisecond))
	p := startProxy(t, eng, common.NewSession("s1"), cfg)
	healthy := p.connect(t, "")
	ctx := testContext(t)

	startup := func(version uint32, params ...string) []byte {
		var b []byte
		b = append(b, 0, 0, 0, 0)
		b = be32(b, version)
		for _, s := range params {
			b = append(b, s...)
			b = append(b, 0)
		}
		b = append(b, 0)
		n := len(b)
		b[0], b[1], b[2], b[3] = byte(n>>24), byte(n>>16), byte(n>>8), byte(n)
		return b
	}
	sslRequest := []byte{0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f}
	random := make([]byte, 300)
	for i := range random {
		random[i] = byte(i*7919 + 13) // fixed, arbitrary bytes
	}
	tests := []struct {
		name      string
		send      []byte
		closeSend bool   // half-close after sending
		wantError string // in the ErrorResponse; empty: none expected
	}{
		{"random bytes", random, false, "invalid length"},
		{"huge length", append([]byte{0x7f, 0xff, 0xff, 0xff}, bytes.Repeat([]byte{'a'}, 100)...), false, "invalid length 2147483647"},
		{"negative length", []byte{0xff, 0xff, 0xff, 0xf0, 0, 3, 0, 0}, false, "invalid length -16"},
		{"length too small", []byte{0, 0, 0, 4}, false, "invalid length 4"},
		{"truncated packet", startup(pgproto3.ProtocolVersion30, "user", "x")[:10], true, "in the middle of a packet"},
		{"truncated length", []byte{0, 0}, true, "in the middle of a packet"},
		{"silent client", nil, false, "no complete startup packet within"},
		{"stalled mid-packet", startup(pgproto3.ProtocolVersion30, "user", "x")[:10], false, "no complete startup packet within"},
		{"protocol 2.0", startup(2 << 16), false, "unsupported frontend protocol 2.0"},
		{"protocol 4.0", startup(4<<16, "user", "x"), false, "unsupported frontend protocol 4.0"},
		{"unterminated parameters", []byte{0, 0, 0, 13, 0, 3, 0, 0, 'u', 's', 'e', 'r', 0}, false, "StartupMessage"},
		{"no parameters", startup(pgproto3.ProtocolVersion30), false, "StartupMessage"},
		{"SSLRequest twice", append(append([]byte(nil), sslRequest...), sslRequest...), false, "SSLRequest sent twice"},
		{"SSLRequest with extra bytes", []byte{0, 0, 0, 9, 0x04, 0xd2, 0x16, 0x2f, 0}, false, "SSLRequest of 9 bytes"},
		{"short CancelRequest", []byte{0, 0, 0, 10, 0x04, 0xd2, 0x16, 0x2e, 0, 1}, false, "CancelRequest"},
		{"HTTP request", []byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n"), false, "invalid length"},
		{"TLS ClientHello", []byte{0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03, 0x03}, false, "started TLS directly"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			conn, err := net.Dial("tcp", p.addr)
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			_ = conn.SetDeadline(time.Now().Add(testTimeout))
			if _, err := conn.Write(tt.send); err != nil {
				t.Fatal(err)
			}
			if tt.closeSend {
				_ = conn.(*net.TCPConn).CloseWrite()
			}
			got, err := io.ReadAll(conn)
			if err != nil {
				t.Fatalf("read: %v", err)
			}
			_ = conn.Close() // as a client does on EOF; the engine stops lingering
			if bytes.HasPrefix(got, []byte("N")) && bytes.HasPrefix(tt.send, sslRequest) {
				got = got[1:] // the answer to the first SSLRequest
			}
			fe := pgproto3.NewFrontend(bytes.NewReader(got), io.Discard)
			msg, err := fe.Receive()
			if err != nil {
				t.Fatalf("no ErrorResponse in %q: %v", got, err)
			}
			e, ok := msg.(*pgproto3.ErrorResponse)
			if !ok || e.Code != "08P01" || !strings.HasPrefix(e.Message, "airlock: invalid startup packet: ") ||
				!strings.Contains(e.Message, tt.wantError) {
				t.Errorf("got %T %+v, want 08P01 with %q", msg, msg, tt.wantError)
			}
			if _, err := fe.Receive(); err == nil {
				t.Error("more after the ErrorResponse")
			}
			if err := p.nextResult(t); !errors.Is(err, ErrInvalidStartup) {
				t.Errorf("Serve returned %v, want ErrInvalidStartup", err)
			}
			if err := healthy.Ping(ctx); err != nil {
				t.Fatalf("the healthy connection: %v", err)
			}
		})
	}

	t.Run("closed without a byte", func(t *testing.T) {
		conn, err := net.Dial("tcp", p.addr)
		if err != nil {
			t.Fatal(err)
		}
		_ = conn.Close()
		if err := p.nextResult(t); err != nil {
			t.Errorf("Serve returned %v", err)
		}
	})

	t.Run("many at once", func(t *testing.T) {
		var wg sync.WaitGroup
		for i := range 50 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				conn, err := net.Dial("tcp", p.addr)
				if err != nil {
					t.Error(err)
					return
				}
				defer conn.Close()
				_ = conn.SetDeadline(time.Now().Add(testTimeout))
				_, _ = conn.Write(tests[i%len(tests)].send)
				_, _ = io.ReadAll(conn)
			}()
		}
		var healthyErr error
		for range 5 {
			if err := healthy.Ping(ctx); err != nil {
				healthyErr = err
			}
		}
		wg.Wait()
		for range 50 {
			_ = p.nextResult(t)
		}
		if healthyErr != nil {
			t.Errorf("the healthy connection: %v", healthyErr)
		}
	})
}

func be32(b []byte, v uint32) []byte {
	return append(b, byte(v>>24), byte(v>>16), byte(v>>8), byte(v))
}
