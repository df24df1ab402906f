package postgres

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"maps"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/airlockpam/airlock/internal/testenv"
	"github.com/airlockpam/airlock/internal/tunnel"
)

// fakeConn is the client side of readStartup in memory: it reads what the
// client sent and records what readStartup writes.
type fakeConn struct {
	r       *bytes.Reader
	written bytes.Buffer
}

func (c *fakeConn) Read(p []byte) (int, error)  { return c.r.Read(p) }
func (c *fakeConn) Write(p []byte) (int, error) { return c.written.Write(p) }

func encode(t testing.TB, msgs ...pgproto3.FrontendMessage) []byte {
	t.Helper()
	var b []byte
	for _, m := range msgs {
		var err error
		if b, err = m.Encode(b); err != nil {
			t.Fatal(err)
		}
	}
	return b
}

func TestReadStartup(t *testing.T) {
	params := map[string]string{"user": "u", "database": "d", "application_name": "psql", "client_encoding": "UTF8"}
	startup := &pgproto3.StartupMessage{ProtocolVersion: pgproto3.ProtocolVersion30, Parameters: params}
	query := encode(t, &pgproto3.Query{String: "SELECT 1"})
	tests := []struct {
		name        string
		in          []byte
		wantKind    openingKind
		wantWritten string
		wantMinor   uint16
		wantLeft    int // bytes left unread
	}{
		{"startup", encode(t, startup), openingStartup, "", 0, 0},
		{"SSLRequest, then startup", encode(t, &pgproto3.SSLRequest{}, startup), openingStartup, "N", 0, 0},
		{"GSSENCRequest, SSLRequest, then startup", encode(t, &pgproto3.GSSEncRequest{}, &pgproto3.SSLRequest{}, startup), openingStartup, "NN", 0, 0},
		{"protocol 3.2", encode(t, &pgproto3.StartupMessage{ProtocolVersion: pgproto3.ProtocolVersion32, Parameters: params}), openingStartup, "", 2, 0},
		{"protocol 3.7", encode(t, &pgproto3.StartupMessage{ProtocolVersion: 3<<16 | 7, Parameters: params}), openingStartup, "", 7, 0},
		{"startup followed by a query", append(encode(t, startup), query...), openingStartup, "", 0, len(query)},
		{"cancel", encode(t, &pgproto3.CancelRequest{ProcessID: 42, SecretKey: []byte{1, 2, 3, 4}}), openingCancel, "", 0, 0},
		{"SSLRequest, then cancel", encode(t, &pgproto3.SSLRequest{}, &pgproto3.CancelRequest{ProcessID: 42, SecretKey: make([]byte, 32)}), openingCancel, "N", 0, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := &fakeConn{r: bytes.NewReader(tt.in)}
			op, err := readStartup(c)
			if err != nil {
				t.Fatal(err)
			}
			if op.kind != tt.wantKind || c.written.String() != tt.wantWritten || c.r.Len() != tt.wantLeft {
				t.Errorf("kind %d, wrote %q, left %d; want %d, %q, %d", op.kind, c.written.String(), c.r.Len(),
					tt.wantKind, tt.wantWritten, tt.wantLeft)
			}
			switch op.kind {
			case openingStartup:
				if !maps.Equal(op.params, params) || op.minorVersion != tt.wantMinor {
					t.Errorf("params %v, minor %d", op.params, op.minorVersion)
				}
			case openingCancel:
				if op.processID != 42 {
					t.Errorf("process ID %d", op.processID)
				}
			}
		})
	}
}

func TestReadStartupErrors(t *testing.T) {
	tests := []struct {
		name    string
		in      []byte
		wantErr error  // errors.Is
		wantMsg string // in the error
	}{
		{"nothing", nil, io.EOF, ""},
		{"part of a length", []byte{0, 0}, io.ErrUnexpectedEOF, ""},
		{"part of a packet", []byte{0, 0, 0, 20, 0, 3, 0, 0}, io.ErrUnexpectedEOF, ""},
		{"huge length", []byte{0x7f, 0xff, 0xff, 0xff}, ErrInvalidStartup, "invalid length 2147483647"},
		{"one byte over the limit", []byte{0, 0, 0x27, 0x11}, ErrInvalidStartup, "invalid length 10001"},
		{"negative length", []byte{0x80, 0, 0, 0}, ErrInvalidStartup, "invalid length -2147483648"},
		{"protocol 1.0", []byte{0, 0, 0, 8, 0, 1, 0, 0}, ErrInvalidStartup, "unsupported frontend protocol 1.0"},
		{"GSSENCRequest twice", []byte{0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x30, 0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x30}, ErrInvalidStartup, "GSSENCRequest sent twice"},
		{"long CancelRequest", append([]byte{0, 0, 1, 20, 0x04, 0xd2, 0x16, 0x2e}, make([]byte, 272)...), ErrInvalidStartup, "too long"},
		{"bad last byte", []byte{0, 0, 0, 14, 0, 3, 0, 0, 'a', 0, 'b', 0, 'c', 'd'}, ErrInvalidStartup, "StartupMessage"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			op, err := readStartup(&fakeConn{r: bytes.NewReader(tt.in)})
			if op != nil || !errors.Is(err, tt.wantErr) || !strings.Contains(errString(err), tt.wantMsg) {
				t.Errorf("readStartup = %v, %v; want %v with %q", op, err, tt.wantErr, tt.wantMsg)
			}
		})
	}
}

func errString(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

func TestRuntimeParams(t *testing.T) {
	op := &opening{params: map[string]string{
		"user": "mallory", "database": "postgres", "replication": "true", "_pq_.x": "1", "": "empty",
		"application_name": "psql", "client_encoding": "UTF8", "options": "-c statement_timeout=5s", "DateStyle": "ISO",
	}}
	want := map[string]string{"application_name": "psql", "client_encoding": "UTF8", "options": "-c statement_timeout=5s", "DateStyle": "ISO"}
	if got := op.runtimeParams(); !maps.Equal(got, want) {
		t.Errorf("runtimeParams() = %v, want %v", got, want)
	}
	if got := op.protocolOptions(); len(got) != 1 || got[0] != "_pq_.x" || !op.needsNegotiation() {
		t.Errorf("protocol options %v", got)
	}
}

// FuzzStartup feeds arbitrary bytes to readStartup as a client's opening. It
// checks that readStartup neither panics nor reads, writes or accepts more
// than the protocol's bounds allow, that what it accepts survives a round
// trip, and that its errors make a valid ErrorResponse.
func FuzzStartup(f *testing.F) {
	params := map[string]string{"user": "u", "database": "d", "application_name": "psql"}
	seeds := [][]byte{
		encode(f, &pgproto3.StartupMessage{ProtocolVersion: pgproto3.ProtocolVersion30, Parameters: params}),
		encode(f, &pgproto3.SSLRequest{}, &pgproto3.StartupMessage{ProtocolVersion: pgproto3.ProtocolVersion32, Parameters: params}),
		encode(f, &pgproto3.GSSEncRequest{}, &pgproto3.SSLRequest{}, &pgproto3.CancelRequest{ProcessID: 7, SecretKey: []byte{1, 2, 3, 4}}),
		{0x7f, 0xff, 0xff, 0xff, 0, 3, 0, 0},
		{0, 0, 0, 9, 0, 3, 0, 0, 0},
		{0x16, 0x03, 0x01, 0x00, 0x10},
	}
	for _, s := range seeds {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		c := &fakeConn{r: bytes.NewReader(data)}
		op, err := readStartup(c)
		read := len(data) - c.r.Len()
		if max := (maxEncryptionRequests + 1) * maxStartupPacketLen; read > max {
			t.Fatalf("read %d bytes, more than %d", read, max)
		}
		if c.written.Len() > maxEncryptionRequests || strings.Trim(c.written.String(), "N") != "" {
			t.Fatalf("wrote %q", c.written.String())
		}
		if err != nil {
			if op != nil {
				t.Fatal("an opening and an error")
			}
			var se *startupError
			if !errors.As(err, &se) && !errors.Is(err, io.EOF) && !errors.Is(err, io.ErrUnexpectedEOF) {
				t.Fatalf("unexpected error %T %v", err, err)
			}
			var out bytes.Buffer
			if err := writeErrorResponse(&out, sqlStateProtocolViolation, "airlock: "+err.Error()); err != nil {
				t.Fatal(err)
			}
			msg, rerr := pgproto3.NewFrontend(&out, io.Discard).Receive()
			if e, ok := msg.(*pgproto3.ErrorResponse); rerr != nil || !ok || e.Code != sqlStateProtocolViolation {
				t.Fatalf("ErrorResponse does not decode: %v %v", msg, rerr)
			}
			return
		}
		switch op.kind {
		case openingStartup:
			if len(op.params) == 0 {
				t.Fatal("a startup without parameters")
			}
			for k := range op.runtimeParams() {
				if k == "user" || k == "database" || k == "replication" || strings.HasPrefix(k, "_pq_.") {
					t.Fatalf("runtime parameter %q passed on", k)
				}
			}
			again, err := readStartup(&fakeConn{r: bytes.NewReader(encode(t, &pgproto3.StartupMessage{
				ProtocolVersion: pgproto3.ProtocolVersion30, Parameters: op.params}))})
			if err != nil || !maps.Equal(again.params, op.params) {
				t.Fatalf("round trip: %v, %v != %v", err, again, op.params)
			}
		case openingCancel:
			if n := len(op.secretKey); n < 4 || n > 256 {
				t.Fatalf("secret key of %d bytes", n)
			}
		default:
			t.Fatalf("kind %d", op.kind)
		}
	})
}

func TestCheckStartup(t *testing.T) {
	tests := []struct {
		name     string
		params   map[string]string
		database string // the resource's
		wantCode string // "" for none
		wantMsg  string
	}{
		{"no database", map[string]string{"user": "anyone"}, "app", "", ""},
		{"empty database", map[string]string{"user": "anyone", "database": ""}, "app", "", ""},
		{"the resource's database", map[string]string{"user": "anyone", "database": "app"}, "app", "", ""},
		{"another database", map[string]string{"user": "anyone", "database": "postgres"}, "app", "28000",
			`airlock: this access is to database "app" of resource "payments-db", not "postgres"; connect with dbname=app`},
		{"the user's name, as libpq sends without a dbname", map[string]string{"user": "alice", "database": "alice"}, "app", "28000",
			`not "alice"; connect with dbname=app`},
		{"case matters, as in PostgreSQL", map[string]string{"database": "App"}, "app", "28000", `not "App"`},
		{"no resource database: the account's user", map[string]string{"user": "anyone", "database": "app_rw"}, "", "", ""},
		{"no resource database, another asked", map[string]string{"database": "app"}, "", "28000", `database "app_rw"`},
		{"a name to quote", map[string]string{"database": "x"}, "my db", "28000", `connect with dbname='my db'`},
		{"replication=database", map[string]string{"database": "app", "replication": "database"}, "app", "0A000",
			"airlock: replication connections are not supported through Airlock (the client asked for replication=database); connect without replication"},
		{"replication=true", map[string]string{"replication": "true"}, "app", "0A000", "replication connections are not supported"},
		{"replication=on", map[string]string{"replication": "on"}, "app", "0A000", "replication=on"},
		{"replication=yes", map[string]string{"replication": "yes"}, "app", "0A000", "replication=yes"},
		{"replication=1", map[string]string{"replication": "1"}, "app", "0A000", "replication=1"},
		{"replication=anything else", map[string]string{"replication": "maybe"}, "app", "0A000", "replication=maybe"},
		{"replication=false", map[string]string{"replication": "false"}, "app", "", ""},
		{"replication=off", map[string]string{"replication": "OFF"}, "app", "", ""},
		{"replication=no", map[string]string{"replication": "no"}, "app", "", ""},
		{"replication=0", map[string]string{"replication": "0"}, "app", "", ""},
		{"replication=f", map[string]string{"replication": "f"}, "app", "", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			op := &opening{kind: openingStartup, params: tt.params}
			r := op.check(tt.database, "app_rw", "payments-db")
			switch {
			case tt.wantCode == "" && r != nil:
				t.Fatalf("refused: %s %s", r.code, r.message)
			case tt.wantCode == "":
			case r == nil:
				t.Fatalf("not refused, want %s", tt.wantCode)
			case r.code != tt.wantCode || !strings.Contains(r.message, tt.wantMsg):
				t.Fatalf("refused with %s %q, want %s and %q", r.code, r.message, tt.wantCode, tt.wantMsg)
			}
		})
	}
	// Without the resource's name, the message leaves it out.
	op := &opening{kind: openingStartup, params: map[string]string{"database": "x"}}
	if r := op.check("app", "app_rw", ""); r == nil || !strings.HasPrefix(r.message, `airlock: this access is to database "app", not "x"`) {
		t.Fatalf("without a resource name: %+v", r)
	}
}

func TestClientRequest(t *testing.T) {
	op := &opening{params: map[string]string{"user": "alice", "database": "my db", "application_name": "psql",
		"client_encoding": "UTF8", "replication": "database"}}
	if got, want := op.clientRequest(), "user=alice database='my db' replication=database application_name=psql"; got != want {
		t.Errorf("clientRequest() = %q, want %q", got, want)
	}
	op = &opening{params: map[string]string{"user": `o'brien\`, "database": ""}}
	if got, want := op.clientRequest(), `user='o\'brien\\' database=''`; got != want {
		t.Errorf("clientRequest() = %q, want %q", got, want)
	}
}

// TestServeRefusesWhatAccessDoesNotGive connects through a recording engine
// asking for another database, and for replication: each is refused with a
// FATAL that says why, before any login, and recorded as a failed connect
// with what the client asked for. The resource's database, or none, is
// served as the account, whatever user the client names.
func TestServeRefusesWhatAccessDoesNotGive(t *testing.T) {
	db := testenv.SharedPostgres(t)
	cfg := accountConfig(db, db.Cluster.SCRAMUser, tunnel.TLS{})
	cfg.Resource = "payments-db"
	p, rec := startRecording(t, db, cfg)
	ctx := testContext(t)

	_, err := pgx.Connect(ctx, p.clientURL("mallory", "postgres", ""))
	pgErr := pgError(t, err)
	want := `airlock: this access is to database "` + db.Name + `" of resource "payments-db", not "postgres"; connect with dbname=` + db.Name
	if pgErr.Severity != "FATAL" || pgErr.Code != "28000" || pgErr.Message != want {
		t.Errorf("another database: %s %s %q, want FATAL 28000 %q", pgErr.Severity, pgErr.Code, pgErr.Message, want)
	}
	if err := p.nextResult(t); err == nil {
		t.Error("Serve returned nil for a refused connection")
	}

	cc, err := pgconn.ParseConfig(p.clientURL("mallory", db.Name, ""))
	if err != nil {
		t.Fatal(err)
	}
	cc.RuntimeParams["replication"] = "database"
	_, err = pgconn.ConnectConfig(ctx, cc)
	if pgErr := pgError(t, err); pgErr.Code != "0A000" || !strings.Contains(pgErr.Message, "replication connections are not supported through Airlock") {
		t.Errorf("replication: %s %q", pgErr.Code, pgErr.Message)
	}
	_ = p.nextResult(t)

	for _, dbname := range []string{db.Name, ""} {
		conn, err := pgx.Connect(ctx, p.clientURL("mallory", dbname, "psql"))
		if err != nil {
			t.Fatalf("database %q: %v", dbname, err)
		}
		var user, current string
		if err := conn.QueryRow(ctx, "SELECT current_user, current_database()").Scan(&user, &current); err != nil {
			t.Fatal(err)
		}
		if user != cfg.User || current != db.Name {
			t.Errorf("database %q: connected as %s to %s", dbname, user, current)
		}
		conn.Close(ctx)
		_ = p.nextResult(t)
	}

	var connects []brief
	for _, ev := range rec.all() {
		if ev.Kind == "connect" {
			connects = append(connects, brief{Kind: ev.Kind, Statement: ev.Statement, Outcome: ev.Outcome, ErrorCode: ev.ErrorCode})
			if ev.Database != db.Name {
				t.Errorf("connect event's database %q, want the resource's", ev.Database)
			}
		}
	}
	wantConnects := []brief{
		{Kind: "connect", Statement: "user=mallory database=postgres", Outcome: "error", ErrorCode: "28000"},
		{Kind: "connect", Statement: "user=mallory database=" + db.Name + " replication=database", Outcome: "error", ErrorCode: "0A000"},
		{Kind: "connect", Statement: "user=mallory database=" + db.Name + " application_name=psql", Outcome: "ok"},
		{Kind: "connect", Statement: "user=mallory application_name=psql", Outcome: "ok"},
	}
	if fmt.Sprint(connects) != fmt.Sprint(wantConnects) {
		t.Errorf("connect events:\n got  %v\n want %v", connects, wantConnects)
	}
}
