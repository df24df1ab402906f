package postgres

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/airlockpam/airlock/internal/proxy/common"
	"github.com/airlockpam/airlock/internal/sessionlog"
	"github.com/airlockpam/airlock/internal/testenv"
	"github.com/airlockpam/airlock/internal/tunnel"
)

// startRecording starts a proxy whose session records into an in-memory
// recorder, write-ahead (as into the gateway's spool): the recorder
// returned holds the final events; when the test ends, each that names a
// start record must name one of the same kind and, for a simple Query or
// a FunctionCall, the same statement.
func startRecording(t *testing.T, db testenv.Database, cfg Config, opts ...common.SessionOption) (*testProxy, *memRecorder) {
	t.Helper()
	rec := &waRecorder{}
	log, _ := newLogger(t, cfg.Password)
	sess := common.NewSession("sess-"+db.Name, append([]common.SessionOption{common.WithRecorder(rec)}, opts...)...)
	p := startProxy(t, newEngine(t, WithLogger(log)), sess, cfg)
	t.Cleanup(func() { checkStarts(t, rec) })
	return p, &rec.memRecorder
}

// checkStarts checks that each final event that names a start record
// names one of rec's, of its kind (and statement, but for an Execute,
// whose start the client side describes before the server confirms its
// statement), and that no start is named twice.
func checkStarts(t *testing.T, rec *waRecorder) {
	t.Helper()
	starts := map[string]sessionlog.Event{}
	for _, st := range rec.allStarts() {
		starts[st.ID] = st
	}
	named := map[string]bool{}
	for _, ev := range rec.all() {
		if ev.StartID == "" {
			continue
		}
		st, ok := starts[ev.StartID]
		switch {
		case !ok:
			t.Errorf("event %+v names no start record", briefOf(ev))
		case named[ev.StartID]:
			t.Errorf("two final events name the start %+v", briefOf(st))
		case ev.Kind == sessionlog.KindQuery || ev.Kind == sessionlog.KindFunctionCall:
			if st.Kind != ev.Kind || st.Statement != ev.Statement {
				t.Errorf("event %+v names the start %+v", briefOf(ev), briefOf(st))
			}
		case ev.Kind == sessionlog.KindExecute && st.Kind != ev.Kind:
			t.Errorf("event %+v names the start %+v", briefOf(ev), briefOf(st))
		case ev.Kind == sessionlog.KindExecute && ev.Outcome != OutcomeError && ev.Outcome != OutcomeSkipped &&
			(st.Statement != ev.Statement || fmt.Sprint(st.Params) != fmt.Sprint(ev.Params)):
			t.Errorf("event %+v names the start %+v", briefOf(ev), briefOf(st))
		}
		named[ev.StartID] = true
	}
}

// superExec runs statements on db as the superuser.
func superExec(t *testing.T, db testenv.Database, sql string) {
	t.Helper()
	ctx := testContext(t)
	conn, err := pgconn.Connect(ctx, db.SuperURL())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	if _, err := conn.Exec(ctx, sql).ReadAll(); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
}

// waitFor waits until an event of the given kind is recorded: the events of
// a connection's end are recorded once both its directions have stopped,
// after the client may have seen the end. (Serve's return is no signal:
// pgx sends a CancelRequest, on a connection of its own, when a connection
// breaks in the middle of a query.)
func (r *memRecorder) waitFor(t *testing.T, kind string) {
	t.Helper()
	deadline := time.Now().Add(testTimeout)
	for {
		for _, ev := range r.all() {
			if ev.Kind == kind {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("no %s event in %v", kind, r.all())
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// rawConnect opens a connection to the proxy that speaks the protocol by
// hand, and reads the greeting.
func rawConnect(t *testing.T, p *testProxy) (*pgproto3.Frontend, net.Conn) {
	t.Helper()
	conn, err := net.Dial("tcp", p.addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	_ = conn.SetDeadline(time.Now().Add(testTimeout))
	fe := pgproto3.NewFrontend(conn, conn)
	fe.Send(&pgproto3.StartupMessage{ProtocolVersion: pgproto3.ProtocolVersion30, Parameters: map[string]string{"user": "x"}})
	readUntilReady(t, fe)
	return fe, conn
}

// send sends msgs and returns the server's messages up to ReadyForQuery,
// as type names, and the DataRow values.
func send(t *testing.T, fe *pgproto3.Frontend, msgs ...pgproto3.FrontendMessage) ([]string, []string) {
	t.Helper()
	for _, m := range msgs {
		fe.Send(m)
	}
	return readUntilReady(t, fe)
}

func readUntilReady(t *testing.T, fe *pgproto3.Frontend) (types, values []string) {
	t.Helper()
	if err := fe.Flush(); err != nil {
		t.Fatal(err)
	}
	for {
		msg, err := fe.Receive()
		if err != nil {
			t.Fatalf("after %v: %v", types, err)
		}
		types = append(types, strings.TrimPrefix(fmt.Sprintf("%T", msg), "*pgproto3."))
		switch m := msg.(type) {
		case *pgproto3.DataRow:
			values = append(values, string(m.Values[0]))
		case *pgproto3.FunctionCallResponse:
			values = append(values, string(m.Result))
		case *pgproto3.ReadyForQuery:
			return types, values
		}
	}
}

// TestRecordQueries runs simple and extended queries, failing ones among
// them, through a recording engine and checks the events, exactly.
func TestRecordQueries(t *testing.T) {
	db := testenv.SharedPostgres(t)
	p, rec := startRecording(t, db, accountConfig(db, db.Cluster.SCRAMUser, tunnel.TLS{}))
	conn := p.connect(t, "")
	ctx := testContext(t)
	pg := conn.PgConn()

	start := time.Now()
	// Simple protocol: one statement, several, an error.
	if _, err := pg.Exec(ctx, "CREATE TABLE t (id int PRIMARY KEY, v text)").ReadAll(); err != nil {
		t.Fatal(err)
	}
	if _, err := pg.Exec(ctx, "INSERT INTO t VALUES (1, 'a'), (2, 'b'); SELECT * FROM t; UPDATE t SET v = 'c' WHERE id = 2").ReadAll(); err != nil {
		t.Fatal(err)
	}
	_, err := pg.Exec(ctx, "SELEC 1").ReadAll()
	if pgErr := pgError(t, err); pgErr.Code != "42601" {
		t.Fatal(err)
	}
	if _, err := pg.Exec(ctx, "SELECT pg_sleep(0.05)").ReadAll(); err != nil {
		t.Fatal(err)
	}
	// Extended protocol: text and binary parameters, NULL. The Parse
	// gives no types and nothing describes the statement: the binary
	// value stays in hexadecimal.
	res := pg.ExecParams(ctx, "SELECT $1::int + $2::int, $3::text IS NULL", [][]byte{[]byte("20"), {0, 0, 0, 22}, nil},
		nil, []int16{0, 1, 0}, nil).Read()
	if res.Err != nil || string(res.Rows[0][0]) != "42" {
		t.Fatalf("%v %q", res.Err, res.Rows)
	}
	// A constraint violation, with pgx's prepared statements and binary
	// values, decoded by the types of the statement's description.
	_, err = conn.Exec(ctx, "INSERT INTO t VALUES ($1, $2)", 1, "dup")
	if pgErr := pgError(t, err); pgErr.Code != "23505" {
		t.Fatal(err)
	}
	var v string
	if err := conn.QueryRow(ctx, "SELECT v FROM t WHERE id = $1", 2).Scan(&v); err != nil || v != "c" {
		t.Fatalf("%q %v", v, err)
	}
	if err := conn.QueryRow(ctx, "SELECT v FROM t WHERE id = $1", 1).Scan(&v); err != nil || v != "a" {
		t.Fatalf("%q %v", v, err)
	}
	// A syntax error in the extended protocol.
	_, err = conn.Exec(ctx, "SELECT $1 FRM t", 1)
	if pgErr := pgError(t, err); pgErr.Code != "42601" {
		t.Fatal(err)
	}

	events := rec.queries()
	checkEvents(t, events, []brief{
		{Kind: "query", Statement: "CREATE TABLE t (id int PRIMARY KEY, v text)", Outcome: "CREATE TABLE"},
		{Kind: "query", Statement: "INSERT INTO t VALUES (1, 'a'), (2, 'b'); SELECT * FROM t; UPDATE t SET v = 'c' WHERE id = 2",
			Outcome: "INSERT 0 2; SELECT 2; UPDATE 1", Rows: 5},
		{Kind: "query", Statement: "SELEC 1", Outcome: "error", ErrorCode: "42601"},
		{Kind: "query", Statement: "SELECT pg_sleep(0.05)", Outcome: "SELECT 1", Rows: 1},
		{Kind: "execute", Statement: "SELECT $1::int + $2::int, $3::text IS NULL", Params: `[20|\x00000016|NULL]`, Outcome: "SELECT 1", Rows: 1},
		{Kind: "execute", Statement: "INSERT INTO t VALUES ($1, $2)", Params: `[1|dup]`, Outcome: "error", ErrorCode: "23505"},
		{Kind: "execute", Statement: "SELECT v FROM t WHERE id = $1", Params: `[2]`, Outcome: "SELECT 1", Rows: 1},
		{Kind: "execute", Statement: "SELECT v FROM t WHERE id = $1", Params: `[1]`, Outcome: "SELECT 1", Rows: 1},
		{Kind: "execute", Statement: "SELECT $1 FRM t", Outcome: "error", ErrorCode: "42601"},
	})
	if len(events) != 9 {
		return
	}
	if e := events[2]; e.ErrorMsg != `syntax error at or near "SELEC"` {
		t.Errorf("error message %q", e.ErrorMsg)
	}
	if e := events[5]; !strings.Contains(e.ErrorMsg, "duplicate key value violates unique constraint") {
		t.Errorf("error message %q", e.ErrorMsg)
	}
	if d := events[3].DurationUS; d < 50_000 || d > 10_000_000 {
		t.Errorf("pg_sleep(0.05) took %d µs", d)
	}
	conns := map[string]bool{}
	for i, e := range events {
		conns[e.ConnID] = true
		if e.Time.Before(start.Add(-time.Second)) || e.Time.After(time.Now()) || e.Database != db.Name || e.SessionID != "sess-"+db.Name {
			t.Errorf("event %d: %+v", i, e)
		}
		if i > 0 && e.Time.Before(events[i-1].Time) {
			t.Errorf("event %d is older than the one before", i)
		}
	}
	if len(conns) != 1 {
		t.Errorf("connection ids %v", conns)
	}
}

// TestRecordConnections checks the events of a connection's opening and end,
// for two connections, a failed login and a session closed.
func TestRecordConnections(t *testing.T) {
	db := testenv.SharedPostgres(t)
	cfg := accountConfig(db, db.Cluster.SCRAMUser, tunnel.TLS{})
	p, rec := startRecording(t, db, cfg)
	ctx := testContext(t)

	a := p.connect(t, "")
	b := p.connect(t, "")
	if _, err := a.Exec(ctx, "SELECT 1"); err != nil {
		t.Fatal(err)
	}
	if _, err := b.Exec(ctx, "SELECT 2"); err != nil {
		t.Fatal(err)
	}
	if err := a.Close(ctx); err != nil {
		t.Fatal(err)
	}
	if err := p.nextResult(t); err != nil {
		t.Fatal(err)
	}
	endSession(p.sess)
	if err := p.nextResult(t); !errors.Is(err, ErrSessionClosed) {
		t.Fatalf("Serve returned %v", err)
	}

	byConn := map[string][]brief{}
	var order []string
	for _, e := range rec.all() {
		if _, ok := byConn[e.ConnID]; !ok {
			order = append(order, e.ConnID)
		}
		byConn[e.ConnID] = append(byConn[e.ConnID], briefOf(e))
	}
	if len(order) != 2 {
		t.Fatalf("events of %d connections: %v", len(order), byConn)
	}
	checkBriefs := func(got, want []brief) {
		t.Helper()
		if fmt.Sprint(got) != fmt.Sprint(want) {
			t.Errorf("got  %v\nwant %v", got, want)
		}
	}
	checkBriefs(byConn[order[0]], []brief{
		{Kind: "connect", Statement: "user=someone_else", Outcome: "ok"},
		{Kind: "query", Statement: "SELECT 1", Outcome: "SELECT 1", Rows: 1},
		{Kind: "disconnect", Outcome: "ok"},
	})
	checkBriefs(byConn[order[1]], []brief{
		{Kind: "connect", Statement: "user=someone_else", Outcome: "ok"},
		{Kind: "query", Statement: "SELECT 2", Outcome: "SELECT 1", Rows: 1},
		{Kind: "disconnect", Outcome: "terminated", ErrorCode: "terminated"},
	})

	// A login the database refuses.
	wrong := cfg
	wrong.Password = "not-the-password-0123456789"
	p2, rec2 := startRecording(t, db, wrong)
	if _, err := pgx.Connect(ctx, p2.clientURL("x", "", "")); err == nil {
		t.Fatal("connected")
	}
	_ = p2.nextResult(t)
	evs := rec2.all()
	if len(evs) != 1 || evs[0].Kind != "connect" || evs[0].Outcome != "error" || evs[0].ErrorCode != "28P01" ||
		!strings.Contains(evs[0].ErrorMsg, "wrong username or password") || strings.Contains(evs[0].ErrorMsg, wrong.Password) {
		t.Errorf("events of a refused login: %+v", evs)
	}
}

// TestRecordBatch sends pgx batches of 100 pipelined statements, some of
// which fail: after the first error PostgreSQL skips everything up to the
// Sync, and the log says so, statement by statement, in order.
func TestRecordBatch(t *testing.T) {
	db := testenv.SharedPostgres(t)
	p, rec := startRecording(t, db, accountConfig(db, db.Cluster.SCRAMUser, tunnel.TLS{}))
	ctx := testContext(t)
	connect := func(mode pgx.QueryExecMode) *pgx.Conn {
		cc, err := pgx.ParseConfig(p.clientURL("x", "", ""))
		if err != nil {
			t.Fatal(err)
		}
		cc.DefaultQueryExecMode = mode
		conn, err := pgx.ConnectConfig(ctx, cc)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = conn.Close(context.Background()) })
		return conn
	}
	conn := connect(pgx.QueryExecModeCacheStatement)
	if _, err := conn.Exec(ctx, "CREATE TABLE t (id int PRIMARY KEY)"); err != nil {
		t.Fatal(err)
	}

	modes := []struct {
		name string
		mode pgx.QueryExecMode
	}{
		{"prepared statements", pgx.QueryExecModeCacheStatement},
		{"unnamed statements", pgx.QueryExecModeExec},
	}
	for m, mode := range modes {
		t.Run(mode.name, func(t *testing.T) {
			conn := connect(mode.mode)
			base := 1000 * (m + 1)
			batch := &pgx.Batch{}
			var want []brief
			failed := false
			for i := range 100 {
				id := base + i
				if i == 29 || i == 59 {
					id = base // a duplicate key
				}
				// pgx sends int4 in binary when it prepares the
				// statements, in text otherwise: the same in the log.
				param := fmt.Sprint(id)
				if i%10 == 5 {
					batch.Queue("SELECT $1::int", id)
					w := brief{Kind: "execute", Statement: "SELECT $1::int", Params: "[" + param + "]", Outcome: "SELECT 1", Rows: 1}
					if failed {
						w.Outcome, w.Rows = "skipped", 0
					}
					want = append(want, w)
					continue
				}
				batch.Queue("INSERT INTO t VALUES ($1)", id)
				w := brief{Kind: "execute", Statement: "INSERT INTO t VALUES ($1)", Params: "[" + param + "]", Outcome: "INSERT 0 1", Rows: 1}
				switch {
				case failed:
					w.Outcome, w.Rows = "skipped", 0
				case id == base && i > 0:
					w.Outcome, w.Rows, w.ErrorCode = "error", 0, "23505"
					failed = true
				}
				want = append(want, w)
			}
			rec.reset()
			err := conn.SendBatch(ctx, batch).Close()
			if pgErr := pgError(t, err); pgErr.Code != "23505" {
				t.Fatal(err)
			}
			checkEvents(t, rec.queries(), want)
			// The whole batch was one implicit transaction, rolled back.
			var n int
			if err := conn.QueryRow(ctx, "SELECT count(*) FROM t").Scan(&n); err != nil || n != 0 {
				t.Errorf("%d rows, %v", n, err)
			}
		})
	}

	t.Run("a statement that does not prepare", func(t *testing.T) {
		rec.reset()
		batch := &pgx.Batch{}
		batch.Queue("SELECT 1")
		batch.Queue("SELECT * FROM no_such_table")
		err := conn.SendBatch(ctx, batch).Close()
		if pgErr := pgError(t, err); pgErr.Code != "42P01" {
			t.Fatal(err)
		}
		// pgx prepares both, in one pipeline, and stops there.
		checkEvents(t, rec.queries(), []brief{
			{Kind: "execute", Statement: "SELECT * FROM no_such_table", Outcome: "error", ErrorCode: "42P01"},
		})
	})
}

// TestRecordPreparedStatements reuses named prepared statements and checks
// that each Execute is recorded with the right text and values.
func TestRecordPreparedStatements(t *testing.T) {
	db := testenv.SharedPostgres(t)
	p, rec := startRecording(t, db, accountConfig(db, db.Cluster.SCRAMUser, tunnel.TLS{}))
	conn := p.connect(t, "")
	ctx := testContext(t)
	if _, err := conn.Prepare(ctx, "add", "SELECT $1::int + $2::int"); err != nil {
		t.Fatal(err)
	}
	if _, err := conn.Prepare(ctx, "upper", "SELECT upper($1::text)"); err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		var n int
		var s string
		if err := conn.QueryRow(ctx, "add", i, 10).Scan(&n); err != nil || n != i+10 {
			t.Fatal(n, err)
		}
		if err := conn.QueryRow(ctx, "upper", fmt.Sprint("v", i)).Scan(&s); err != nil {
			t.Fatal(err)
		}
	}
	if err := conn.Deallocate(ctx, "add"); err != nil {
		t.Fatal(err)
	}
	// The same name, another statement.
	if _, err := conn.Prepare(ctx, "add", "SELECT $1::int - $2::int"); err != nil {
		t.Fatal(err)
	}
	var n int
	if err := conn.QueryRow(ctx, "add", 5, 3).Scan(&n); err != nil || n != 2 {
		t.Fatal(n, err)
	}
	var want []brief
	for i := range 3 {
		want = append(want,
			brief{Kind: "execute", Statement: "SELECT $1::int + $2::int", Params: fmt.Sprintf(`[%d|10]`, i), Outcome: "SELECT 1", Rows: 1},
			brief{Kind: "execute", Statement: "SELECT upper($1::text)", Params: fmt.Sprintf("[v%d]", i), Outcome: "SELECT 1", Rows: 1})
	}
	// pgx deallocates with a Close message: no event of its own.
	want = append(want,
		brief{Kind: "execute", Statement: "SELECT $1::int - $2::int", Params: `[5|3]`, Outcome: "SELECT 1", Rows: 1})
	got := rec.queries()
	checkEvents(t, got, want)
}

// TestRecordCopy copies data in and out and checks that the events count its
// bytes and hold none of it.
func TestRecordCopy(t *testing.T) {
	db := testenv.SharedPostgres(t)
	p, rec := startRecording(t, db, accountConfig(db, db.Cluster.SCRAMUser, verifiedTLS(db)))
	conn := p.connect(t, "")
	ctx := testContext(t)
	if _, err := conn.Exec(ctx, "CREATE TABLE c (id int, secret text)"); err != nil {
		t.Fatal(err)
	}
	const marker = "copy-data-must-not-be-logged"
	var in bytes.Buffer
	for i := range 1000 {
		fmt.Fprintf(&in, "%d\t%s-%d\n", i, marker, i)
	}
	inLen := int64(in.Len())
	pg := conn.PgConn()
	if tag, err := pg.CopyFrom(ctx, bytes.NewReader(in.Bytes()), "COPY c FROM STDIN"); err != nil || tag.RowsAffected() != 1000 {
		t.Fatal(tag, err)
	}
	var out bytes.Buffer
	if tag, err := pg.CopyTo(ctx, &out, "COPY c TO STDOUT"); err != nil || tag.RowsAffected() != 1000 {
		t.Fatal(tag, err)
	}
	if int64(out.Len()) != inLen {
		t.Fatalf("copied out %d bytes, in %d", out.Len(), inLen)
	}
	// pgx's CopyFrom, binary, inside a transaction.
	rows := [][]any{{1, marker}, {2, marker}}
	if n, err := conn.CopyFrom(ctx, pgx.Identifier{"c"}, []string{"id", "secret"}, pgx.CopyFromRows(rows)); err != nil || n != 2 {
		t.Fatal(n, err)
	}
	// A COPY that fails half-way.
	bad := bytes.NewBufferString("1\tok\nnot-a-number\t" + marker + "\n")
	_, err := pg.CopyFrom(ctx, bad, "COPY c FROM STDIN")
	if pgErr := pgError(t, err); pgErr.Code != "22P02" {
		t.Fatal(err)
	}

	events := rec.queries()
	if len(events) != 5 {
		t.Fatalf("%d events: %v", len(events), events)
	}
	checkEvents(t, events[:3], []brief{
		{Kind: "query", Statement: "CREATE TABLE c (id int, secret text)", Outcome: "CREATE TABLE"},
		{Kind: "copy_in", Statement: "COPY c FROM STDIN", Outcome: "COPY 1000", Rows: 1000, Bytes: inLen},
		{Kind: "copy_out", Statement: "COPY c TO STDOUT", Outcome: "COPY 1000", Rows: 1000, Bytes: inLen},
	})
	if e := events[3]; e.Kind != "copy_in" || !strings.HasPrefix(e.Statement, `copy "c" ( "id", "secret" ) from stdin binary`) ||
		e.Outcome != "COPY 2" || e.Rows != 2 || e.Bytes < int64(2*len(marker)) {
		t.Errorf("pgx CopyFrom: %s", briefOf(e))
	}
	if e := events[4]; e.Kind != "copy_in" || e.Outcome != "error" || e.ErrorCode != "22P02" || e.Bytes == 0 {
		t.Errorf("failed COPY: %s", briefOf(e))
	}
	all, _ := json.Marshal(rec.all())
	if bytes.Contains(all, []byte(marker)) {
		t.Error("an event holds COPY data")
	}
}

// TestRecordRawProtocol speaks the protocol by hand for what drivers do not
// send: an Execute with a row limit, a FunctionCall, an empty query.
func TestRecordRawProtocol(t *testing.T) {
	db := testenv.SharedPostgres(t)
	p, rec := startRecording(t, db, accountConfig(db, db.Cluster.SCRAMUser, tunnel.TLS{}))
	fe, _ := rawConnect(t, p)

	limited := &pgproto3.Execute{MaxRows: 2}
	types, values := send(t, fe, &pgproto3.Parse{Query: "SELECT generate_series(1, 5)"}, &pgproto3.Bind{},
		limited, limited, limited, &pgproto3.Sync{})
	want := "ParseComplete BindComplete DataRow DataRow PortalSuspended DataRow DataRow PortalSuspended DataRow CommandComplete ReadyForQuery"
	if got := strings.Join(types, " "); got != want || strings.Join(values, ",") != "1,2,3,4,5" {
		t.Fatalf("got %s %v", got, values)
	}

	_, values = send(t, fe, &pgproto3.Query{String: "SELECT 'int4pl'::regproc::oid"})
	var oid uint32
	if _, err := fmt.Sscan(values[0], &oid); err != nil {
		t.Fatal(err)
	}
	_, values = send(t, fe, &pgproto3.FunctionCall{Function: oid, Arguments: [][]byte{[]byte("20"), []byte("22")}})
	if len(values) != 1 || values[0] != "42" {
		t.Fatalf("function call: %v", values)
	}
	types, _ = send(t, fe, &pgproto3.Query{String: ""})
	if strings.Join(types, " ") != "EmptyQueryResponse ReadyForQuery" {
		t.Fatalf("empty query: %v", types)
	}
	// Pipelined simple queries, sent at once.
	for _, q := range []string{"SELECT 1", "SELECT 1/0", "SELECT 3"} {
		fe.Send(&pgproto3.Query{String: q})
	}
	readUntilReady(t, fe)
	readUntilReady(t, fe)
	readUntilReady(t, fe)

	stmt := "SELECT generate_series(1, 5)"
	checkEvents(t, rec.queries(), []brief{
		{Kind: "execute", Statement: stmt, Outcome: "suspended", Rows: 2},
		{Kind: "execute", Statement: stmt, Outcome: "suspended", Rows: 2},
		{Kind: "execute", Statement: stmt, Outcome: "SELECT 1", Rows: 1},
		{Kind: "query", Statement: "SELECT 'int4pl'::regproc::oid", Outcome: "SELECT 1", Rows: 1},
		{Kind: "function_call", Statement: fmt.Sprintf("function call oid %d", oid), Params: "[20|22]", Outcome: "ok"},
		{Kind: "query", Statement: "", Outcome: "empty"},
		{Kind: "query", Statement: "SELECT 1", Outcome: "SELECT 1", Rows: 1},
		{Kind: "query", Statement: "SELECT 1/0", Outcome: "error", ErrorCode: "22012"},
		{Kind: "query", Statement: "SELECT 3", Outcome: "SELECT 1", Rows: 1},
	})
}

// TestRecordPasswordMasking changes a role's password through the engine:
// the session log shows it masked, and the database got it unmasked.
func TestRecordPasswordMasking(t *testing.T) {
	db := testenv.SharedPostgres(t)
	role := testenv.Role{User: "pw_" + db.Name, Password: "old-Password-0001"}
	superExec(t, db, fmt.Sprintf(`CREATE ROLE %q LOGIN PASSWORD '%s'`, role.User, role.Password))
	t.Cleanup(func() { superExec(t, db, fmt.Sprintf(`DROP ROLE IF EXISTS %q`, role.User)) })

	cfg := accountConfig(db, role, tunnel.TLS{})
	p, rec := startRecording(t, db, cfg)
	conn := p.connect(t, "")
	ctx := testContext(t)

	const simple, extended = "new-Secret-0002", "new-Secret-0003"
	// Simple protocol (pgx sends a statement without arguments so).
	if _, err := conn.Exec(ctx, "ALTER ROLE CURRENT_USER PASSWORD '"+simple+"'"); err != nil {
		t.Fatal(err)
	}
	checkLogin(t, db, role.User, simple, true)
	// Extended protocol, an E'' string.
	if res := conn.PgConn().ExecParams(ctx, "ALTER ROLE CURRENT_USER WITH ENCRYPTED PASSWORD E'"+extended+"'", nil, nil, nil, nil).Read(); res.Err != nil {
		t.Fatal(res.Err)
	}
	checkLogin(t, db, role.User, extended, true)
	checkLogin(t, db, role.User, simple, false)
	// A statement that fails with the password in the error message.
	_, err := conn.Exec(ctx, "ALTER ROLE CURRENT_USER PASSWORD unquotedSecret0004")
	if pgErr := pgError(t, err); pgErr.Code != "42601" || !strings.Contains(pgErr.Message, "unquotedSecret0004") {
		t.Fatalf("%v", err)
	}

	checkEvents(t, rec.queries(), []brief{
		{Kind: "query", Statement: "ALTER ROLE CURRENT_USER PASSWORD '***'", Outcome: "ALTER ROLE"},
		{Kind: "execute", Statement: "ALTER ROLE CURRENT_USER WITH ENCRYPTED PASSWORD '***'", Outcome: "ALTER ROLE"},
		{Kind: "query", Statement: "ALTER ROLE CURRENT_USER PASSWORD ***", Outcome: "error", ErrorCode: "42601"},
	})
	all, _ := json.Marshal(rec.all())
	for _, secret := range []string{simple, extended, "unquotedSecret0004"} {
		if bytes.Contains(all, []byte(secret)) {
			t.Errorf("the session log holds %s: %s", secret, all)
		}
	}
}

// checkLogin checks whether user can log in to db directly with password.
func checkLogin(t *testing.T, db testenv.Database, user, password string, want bool) {
	t.Helper()
	conn, err := pgconn.Connect(testContext(t), db.Cluster.URL(user, password, db.Name, "disable"))
	if err == nil {
		_ = conn.Close(context.Background())
	}
	if (err == nil) != want {
		t.Errorf("login of %s with %s: %v, want success %v", user, password, err, want)
	}
}

// TestRecordInterrupted ends connections in the middle of a query: the
// client goes away (the query is recorded as outcome unknown), the server kills the
// backend (recorded with its error), a cancel (recorded with its error).
func TestRecordInterrupted(t *testing.T) {
	db := testenv.SharedPostgres(t)
	cfg := accountConfig(db, db.Cluster.SCRAMUser, tunnel.TLS{})
	p, rec := startRecording(t, db, cfg)
	ctx := testContext(t)

	run := func(conn *pgx.Conn, query string) chan error {
		errc := make(chan error, 1)
		go func() {
			_, err := conn.Exec(ctx, query)
			errc <- err
		}()
		return errc
	}

	t.Run("client gone", func(t *testing.T) {
		rec.reset()
		conn := p.connect(t, "")
		const query = "SELECT pg_sleep(30), 'client gone'"
		errc := run(conn, query)
		waitForActive(t, db, query)
		_ = conn.PgConn().Conn().Close()
		<-errc
		rec.waitFor(t, sessionlog.KindDisconnect)
		checkEvents(t, rec.queries(), []brief{{Kind: "query", Statement: query, Outcome: "outcome unknown"}})
		if evs := rec.all(); evs[len(evs)-1].Kind != "disconnect" {
			t.Errorf("last event %+v", evs[len(evs)-1])
		}
	})

	t.Run("backend terminated", func(t *testing.T) {
		rec.reset()
		conn := p.connect(t, "")
		const query = "SELECT pg_sleep(30), 'terminated'"
		errc := run(conn, query)
		pid := waitForActive(t, db, query)
		superExec(t, db, fmt.Sprintf("SELECT pg_terminate_backend(%d)", pid))
		<-errc
		rec.waitFor(t, sessionlog.KindDisconnect)
		checkEvents(t, rec.queries(), []brief{{Kind: "query", Statement: query, Outcome: "error", ErrorCode: "57P01"}})
	})

	t.Run("canceled", func(t *testing.T) {
		rec.reset()
		conn := p.connect(t, "")
		const query = "SELECT pg_sleep(30), 'canceled'"
		errc := run(conn, query)
		waitForActive(t, db, query)
		if err := conn.PgConn().CancelRequest(ctx); err != nil {
			t.Fatal(err)
		}
		if pgErr := pgError(t, <-errc); pgErr.Code != "57014" {
			t.Fatal(pgErr)
		}
		if _, err := conn.Exec(ctx, "SELECT 'after'"); err != nil {
			t.Fatal(err)
		}
		checkEvents(t, rec.queries(), []brief{
			{Kind: "query", Statement: query, Outcome: "error", ErrorCode: "57014"},
			{Kind: "query", Statement: "SELECT 'after'", Outcome: "SELECT 1", Rows: 1},
		})
	})
}

// TestRecordLargeResults moves results and statements larger than the relay's
// buffers and than maxDecodeLen through a recording engine.
func TestRecordLargeResults(t *testing.T) {
	db := testenv.SharedPostgres(t)
	p, rec := startRecording(t, db, accountConfig(db, db.Cluster.SCRAMUser, verifiedTLS(db)))
	conn := p.connect(t, "")
	ctx := testContext(t)

	var n, total int
	if err := conn.QueryRow(ctx, "SELECT count(*), sum(length(x)) FROM (SELECT repeat('x', 1000) AS x FROM generate_series(1, 10000)) s").Scan(&n, &total); err != nil {
		t.Fatal(err)
	}
	rows, err := conn.Query(ctx, "SELECT repeat('x', 1000) FROM generate_series(1, 10000)", pgx.QueryExecModeSimpleProtocol)
	if err != nil {
		t.Fatal(err)
	}
	got := 0
	for rows.Next() {
		got++
	}
	if rows.Err() != nil || got != 10000 {
		t.Fatal(got, rows.Err())
	}
	big := strings.Repeat("y", 3<<20)
	var l int
	if err := conn.QueryRow(ctx, "SELECT length($1::text)", big).Scan(&l); err != nil || l != len(big) {
		t.Fatal(l, err)
	}
	evs := rec.queries()
	if len(evs) != 3 {
		t.Fatalf("%d events", len(evs))
	}
	if e := evs[1]; e.Outcome != "SELECT 10000" || e.Rows != 10000 {
		t.Errorf("large result: %s", briefOf(e))
	}
	if e := evs[2]; e.Statement != "SELECT length($1::text)" || len(e.Params) != 1 || e.Params[0] != strings.Repeat("y", maxParamLen)+fmt.Sprintf("… [%d bytes]", len(big)) {
		t.Errorf("large parameter: %.200s", briefOf(e))
	}
}
