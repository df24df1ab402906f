package postgres

import (
	"bytes"
	"crypto/sha256"
	"fmt"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/airlockpam/airlock/internal/proxy/common"
	"github.com/airlockpam/airlock/internal/sessionlog"
	"github.com/airlockpam/airlock/internal/tunnel"
)

// memRecorder is an in-memory sessionlog.Recorder: the events it got, in
// order.
type memRecorder struct {
	mu     sync.Mutex
	events []sessionlog.Event
}

func (r *memRecorder) Record(ev sessionlog.Event) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.events = append(r.events, ev)
}

// all returns the events so far.
func (r *memRecorder) all() []sessionlog.Event {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]sessionlog.Event(nil), r.events...)
}

// queries returns the events so far but the connections' opening and end.
func (r *memRecorder) queries() []sessionlog.Event {
	var out []sessionlog.Event
	for _, ev := range r.all() {
		if ev.Kind != sessionlog.KindConnect && ev.Kind != sessionlog.KindDisconnect {
			out = append(out, ev)
		}
	}
	return out
}

// reset forgets the events so far.
func (r *memRecorder) reset() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.events = nil
}

// brief is the part of an event that tests compare exactly.
type brief struct {
	Kind, Statement, Params, Outcome, ErrorCode string
	Rows, Bytes                                 int64
}

func (b brief) String() string {
	return fmt.Sprintf("%s %q params=%s -> %s %s rows=%d bytes=%d", b.Kind, b.Statement, b.Params, b.Outcome, b.ErrorCode, b.Rows, b.Bytes)
}

func briefOf(ev sessionlog.Event) brief {
	params := ""
	if ev.Params != nil {
		params = "[" + strings.Join(ev.Params, "|") + "]"
	}
	return brief{ev.Kind, ev.Statement, params, ev.Outcome, ev.ErrorCode, ev.Rows, ev.Bytes}
}

// checkEvents compares events with want, in order, and checks the fields
// every event must have.
func checkEvents(t *testing.T, events []sessionlog.Event, want []brief) {
	t.Helper()
	var got []brief
	for _, ev := range events {
		got = append(got, briefOf(ev))
		if ev.ID == "" || ev.ConnID == "" || ev.SessionID == "" || ev.Time.IsZero() || ev.DurationUS < 0 {
			t.Errorf("incomplete event %+v", ev)
		}
	}
	n := max(len(got), len(want))
	for i := range n {
		switch {
		case i >= len(got):
			t.Errorf("event %d missing, want %s", i, want[i])
		case i >= len(want):
			t.Errorf("event %d unexpected: %s", i, got[i])
		case got[i] != want[i]:
			t.Errorf("event %d:\n got %s\nwant %s", i, got[i], want[i])
		}
	}
}

// harness drives the two observers of one connection by hand, as the relay
// does: the client's bytes, then the server's.
type harness struct {
	t     *testing.T
	rec   *memRecorder
	log   *connLog
	front *frontendObserver
	back  *backendObserver
	clock time.Time
}

func newHarness(t *testing.T, extra ...*regexp.Regexp) *harness {
	rec := &memRecorder{}
	sess := common.NewSession("sess-1", common.WithRecorder(rec), common.WithMaskPatterns(extra))
	l := newConnLog(sess, Config{Database: "db"}, "conn-1")
	h := &harness{t: t, rec: rec, log: l, clock: time.Unix(1700000000, 0)}
	l.now = func() time.Time {
		h.clock = h.clock.Add(time.Millisecond)
		return h.clock
	}
	h.front = newFrontendObserver(l)
	h.back = newBackendObserver(l)
	return h
}

// encodeBackend is encode for the server's messages.
func encodeBackend(t testing.TB, msgs ...pgproto3.BackendMessage) []byte {
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

func (h *harness) client(msgs ...pgproto3.FrontendMessage) {
	h.t.Helper()
	if err := h.front.observe(encode(h.t, msgs...)); err != nil {
		h.t.Fatal(err)
	}
}

func (h *harness) server(msgs ...pgproto3.BackendMessage) {
	h.t.Helper()
	if err := h.back.observe(encodeBackend(h.t, msgs...)); err != nil {
		h.t.Fatal(err)
	}
}

func tag(s string) *pgproto3.CommandComplete {
	return &pgproto3.CommandComplete{CommandTag: []byte(s)}
}

func errResp(code, msg string) *pgproto3.ErrorResponse {
	return &pgproto3.ErrorResponse{Severity: "ERROR", Code: code, Message: msg}
}

var (
	rfq      = &pgproto3.ReadyForQuery{TxStatus: 'I'}
	row      = &pgproto3.DataRow{Values: [][]byte{[]byte("1")}}
	sync_    = &pgproto3.Sync{}
	parseOK  = &pgproto3.ParseComplete{}
	bindOK   = &pgproto3.BindComplete{}
	closeOK  = &pgproto3.CloseComplete{}
	noData   = &pgproto3.NoData{}
	rowDesc  = &pgproto3.RowDescription{Fields: []pgproto3.FieldDescription{{Name: []byte("x"), DataTypeOID: 23, DataTypeSize: 4}}}
	execute  = &pgproto3.Execute{}
	describe = &pgproto3.Describe{ObjectType: 'P'}
)

func bind(stmt string, params ...string) *pgproto3.Bind {
	b := &pgproto3.Bind{PreparedStatement: stmt}
	for _, p := range params {
		b.Parameters = append(b.Parameters, []byte(p))
	}
	return b
}

// TestObserverProtocol plays protocol exchanges through the observers and
// checks the events, exactly: every pairing rule of the package
// documentation.
func TestObserverProtocol(t *testing.T) {
	t.Run("simple query, one and several statements", func(t *testing.T) {
		h := newHarness(t)
		h.client(&pgproto3.Query{String: "SELECT 1"})
		h.server(rowDesc, row, tag("SELECT 1"), rfq)
		h.client(&pgproto3.Query{String: "INSERT INTO t VALUES (1), (2); SELECT x FROM t; UPDATE t SET x = 3"})
		h.server(tag("INSERT 0 2"), rowDesc, row, row, tag("SELECT 2"), tag("UPDATE 2"), rfq)
		h.client(&pgproto3.Query{String: ""})
		h.server(&pgproto3.EmptyQueryResponse{}, rfq)
		h.client(&pgproto3.Query{String: "SELECT 1; SELECT 1/0; SELECT 3"})
		h.server(rowDesc, row, tag("SELECT 1"), errResp("22012", "division by zero"), rfq)
		checkEvents(t, h.rec.all(), []brief{
			{Kind: "query", Statement: "SELECT 1", Outcome: "SELECT 1", Rows: 1},
			{Kind: "query", Statement: "INSERT INTO t VALUES (1), (2); SELECT x FROM t; UPDATE t SET x = 3", Outcome: "INSERT 0 2; SELECT 2; UPDATE 2", Rows: 6},
			{Kind: "query", Statement: "", Outcome: "empty"},
			{Kind: "query", Statement: "SELECT 1; SELECT 1/0; SELECT 3", Outcome: "error after SELECT 1", ErrorCode: "22012", Rows: 1},
		})
		if ev := h.rec.all()[3]; ev.ErrorMsg != "division by zero" || ev.DurationUS <= 0 || ev.Database != "db" {
			t.Errorf("error event %+v", ev)
		}
	})

	t.Run("extended, unnamed and named statements", func(t *testing.T) {
		h := newHarness(t)
		// pgx's ExecParams: unnamed statement, text and binary values.
		h.client(&pgproto3.Parse{Query: "SELECT $1::int + $2::int, $3::text"},
			&pgproto3.Bind{ParameterFormatCodes: []int16{0, 1, 0}, Parameters: [][]byte{[]byte("20"), {0, 0, 0, 22}, nil}},
			describe, execute, sync_)
		h.server(parseOK, bindOK, rowDesc, row, tag("SELECT 1"), rfq)
		// A named statement prepared once, run twice, then replaced
		// unnamed statement by later Parse.
		h.client(&pgproto3.Parse{Name: "s1", Query: "INSERT INTO t VALUES ($1)"}, &pgproto3.Describe{ObjectType: 'S', Name: "s1"}, sync_)
		h.server(parseOK, &pgproto3.ParameterDescription{ParameterOIDs: []uint32{23}}, noData, rfq)
		h.client(bind("s1", "1"), execute, sync_)
		h.server(bindOK, tag("INSERT 0 1"), rfq)
		h.client(&pgproto3.Parse{Query: "SELECT 2"}, bind(""), execute, bind("s1", "2"), execute, sync_)
		h.server(parseOK, bindOK, row, tag("SELECT 1"), bindOK, tag("INSERT 0 1"), rfq)
		// Closed: an Execute of it is unknown.
		h.client(&pgproto3.Close{ObjectType: 'S', Name: "s1"}, sync_, bind("s1", "3"), execute, sync_)
		h.server(closeOK, rfq, errResp("26000", `prepared statement "s1" does not exist`), rfq)
		checkEvents(t, h.rec.all(), []brief{
			{Kind: "execute", Statement: "SELECT $1::int + $2::int, $3::text", Params: `[20|\x00000016|NULL]`, Outcome: "SELECT 1", Rows: 1},
			{Kind: "execute", Statement: "INSERT INTO t VALUES ($1)", Params: "[1]", Outcome: "INSERT 0 1", Rows: 1},
			{Kind: "execute", Statement: "SELECT 2", Outcome: "SELECT 1", Rows: 1},
			{Kind: "execute", Statement: "INSERT INTO t VALUES ($1)", Params: "[2]", Outcome: "INSERT 0 1", Rows: 1},
			{Kind: "execute", Statement: `[unknown prepared statement "s1"]`, Params: "[3]", Outcome: "error", ErrorCode: "26000"},
		})
	})

	t.Run("pipeline with a failure: the rest is skipped", func(t *testing.T) {
		h := newHarness(t)
		var msgs []pgproto3.FrontendMessage
		for i := range 5 {
			msgs = append(msgs, bind("ins", fmt.Sprint(i)), describe, execute)
		}
		h.client(&pgproto3.Parse{Name: "ins", Query: "INSERT INTO t VALUES ($1)"}, sync_)
		h.server(parseOK, rfq)
		h.client(append(msgs, sync_)...)
		h.server(bindOK, noData, tag("INSERT 0 1"), bindOK, noData, errResp("23505", "duplicate key"), rfq)
		h.client(bind("ins", "9"), execute, sync_)
		h.server(bindOK, tag("INSERT 0 1"), rfq)
		stmt := "INSERT INTO t VALUES ($1)"
		checkEvents(t, h.rec.all(), []brief{
			{Kind: "execute", Statement: stmt, Params: "[0]", Outcome: "INSERT 0 1", Rows: 1},
			{Kind: "execute", Statement: stmt, Params: "[1]", Outcome: "error", ErrorCode: "23505"},
			{Kind: "execute", Statement: stmt, Params: "[2]", Outcome: "skipped"},
			{Kind: "execute", Statement: stmt, Params: "[3]", Outcome: "skipped"},
			{Kind: "execute", Statement: stmt, Params: "[4]", Outcome: "skipped"},
			{Kind: "execute", Statement: stmt, Params: "[9]", Outcome: "INSERT 0 1", Rows: 1},
		})
	})

	t.Run("errors at Parse and Bind", func(t *testing.T) {
		h := newHarness(t)
		// Prepared alone (pgx's Prepare): the failed Parse is recorded.
		h.client(&pgproto3.Parse{Name: "bad", Query: "SELEC 1"}, &pgproto3.Describe{ObjectType: 'S', Name: "bad"}, sync_)
		h.server(errResp("42601", `syntax error at or near "SELEC"`), rfq)
		// In a pipeline, the error is the next Execute's; the later
		// statements, skipped, keep their own text.
		h.client(&pgproto3.Parse{Query: "SELECT $1::int"}, bind("", "x"), describe, execute,
			&pgproto3.Parse{Query: "SELECT 2"}, bind(""), execute, sync_)
		h.server(parseOK, errResp("22P02", "invalid input syntax for type integer"), rfq)
		h.client(&pgproto3.Parse{Query: "SELEC 3"}, bind(""), execute, sync_)
		h.server(errResp("42601", "syntax error"), rfq)
		// The unnamed statement died with the failed Parse.
		h.client(bind(""), execute, sync_)
		h.server(errResp("26000", "unnamed prepared statement does not exist"), rfq)
		// A named statement cannot be redefined: the server keeps the
		// first text, and so does the log.
		h.client(&pgproto3.Parse{Name: "s", Query: "SELECT 'first'"}, sync_)
		h.server(parseOK, rfq)
		h.client(&pgproto3.Parse{Name: "s", Query: "SELECT 'second'"}, bind("s"), execute, sync_)
		h.server(errResp("42P05", `prepared statement "s" already exists`), rfq)
		h.client(bind("s"), execute, sync_)
		h.server(bindOK, row, tag("SELECT 1"), rfq)
		checkEvents(t, h.rec.all(), []brief{
			{Kind: "execute", Statement: "SELEC 1", Outcome: "error", ErrorCode: "42601"},
			{Kind: "execute", Statement: "SELECT $1::int", Params: "[x]", Outcome: "error", ErrorCode: "22P02"},
			{Kind: "execute", Statement: "SELECT 2", Outcome: "skipped"},
			{Kind: "execute", Statement: "SELEC 3", Outcome: "error", ErrorCode: "42601"},
			{Kind: "execute", Statement: `[unknown prepared statement ""]`, Outcome: "error", ErrorCode: "26000"},
			{Kind: "execute", Statement: "SELECT 'second'", Outcome: "error", ErrorCode: "42P05"},
			{Kind: "execute", Statement: "SELECT 'first'", Outcome: "SELECT 1", Rows: 1},
		})
	})

	t.Run("prepared statements beyond the limit", func(t *testing.T) {
		h := newHarness(t)
		text := "SELECT '" + strings.Repeat("x", maxDecodeLen-100) + "'"
		n := maxStatementBytes/len(text) + 1
		for i := range n {
			h.client(&pgproto3.Parse{Name: fmt.Sprint("s", i), Query: text}, sync_)
			h.server(parseOK, rfq)
		}
		h.client(bind("s0"), execute, bind(fmt.Sprint("s", n-1)), execute, sync_)
		h.server(bindOK, row, tag("SELECT 1"), bindOK, row, tag("SELECT 1"), rfq)
		checkEvents(t, h.rec.all(), []brief{
			{Kind: "execute", Statement: text, Outcome: "prepared"},
			{Kind: "execute", Statement: text, Outcome: "SELECT 1", Rows: 1},
			{Kind: "execute", Statement: fmt.Sprintf("[prepared statement \"s%d\", recorded when it was prepared]", n-1), Outcome: "SELECT 1", Rows: 1},
		})
		if h.back.state.bytes > maxStatementBytes {
			t.Errorf("%d bytes of statements held", h.back.state.bytes)
		}
	})

	t.Run("a simple query drops the unnamed statement", func(t *testing.T) {
		h := newHarness(t)
		h.client(&pgproto3.Parse{Query: "SELECT 1"}, sync_, &pgproto3.Query{String: "SELECT 2"}, bind(""), execute, sync_)
		h.server(parseOK, rfq, row, tag("SELECT 1"), rfq, errResp("26000", "unnamed prepared statement does not exist"), rfq)
		checkEvents(t, h.rec.all(), []brief{
			{Kind: "query", Statement: "SELECT 2", Outcome: "SELECT 1", Rows: 1},
			{Kind: "execute", Statement: `[unknown prepared statement ""]`, Outcome: "error", ErrorCode: "26000"},
		})
	})

	t.Run("row limit: PortalSuspended", func(t *testing.T) {
		h := newHarness(t)
		limited := &pgproto3.Execute{MaxRows: 2}
		h.client(&pgproto3.Parse{Query: "SELECT generate_series(1, 5)"}, bind(""), limited, limited, limited, sync_)
		h.server(parseOK, bindOK, row, row, &pgproto3.PortalSuspended{}, row, row, &pgproto3.PortalSuspended{}, row, tag("SELECT 1"), rfq)
		stmt := "SELECT generate_series(1, 5)"
		checkEvents(t, h.rec.all(), []brief{
			{Kind: "execute", Statement: stmt, Outcome: "suspended", Rows: 2},
			{Kind: "execute", Statement: stmt, Outcome: "suspended", Rows: 2},
			{Kind: "execute", Statement: stmt, Outcome: "SELECT 1", Rows: 1},
		})
	})

	t.Run("empty statement in the extended protocol", func(t *testing.T) {
		h := newHarness(t)
		h.client(&pgproto3.Parse{Query: ""}, bind(""), execute, sync_)
		h.server(parseOK, bindOK, &pgproto3.EmptyQueryResponse{}, rfq)
		checkEvents(t, h.rec.all(), []brief{{Kind: "execute", Statement: "", Outcome: "empty"}})
	})

	t.Run("function call", func(t *testing.T) {
		h := newHarness(t)
		h.client(&pgproto3.FunctionCall{Function: 177, ArgFormatCodes: []uint16{0}, Arguments: [][]byte{[]byte("20"), []byte("22")}, ResultFormatCode: 0})
		h.server(&pgproto3.FunctionCallResponse{Result: []byte("42")}, rfq)
		h.client(&pgproto3.FunctionCall{Function: 1, ArgFormatCodes: []uint16{1}, Arguments: [][]byte{{1, 2}, nil}})
		h.server(errResp("42883", "function with OID 1 does not exist"), rfq)
		checkEvents(t, h.rec.all(), []brief{
			{Kind: "function_call", Statement: "function call oid 177", Params: "[20|22]", Outcome: "ok"},
			{Kind: "function_call", Statement: "function call oid 1", Params: `[\x0102|NULL]`, Outcome: "error", ErrorCode: "42883"},
		})
	})

	t.Run("COPY in and out, in simple and extended queries", func(t *testing.T) {
		h := newHarness(t)
		h.client(&pgproto3.Query{String: "COPY t FROM STDIN"})
		h.server(&pgproto3.CopyInResponse{})
		h.client(&pgproto3.CopyData{Data: []byte("1\tsecret-a\n")}, &pgproto3.CopyData{Data: []byte("2\tsecret-b\n")}, &pgproto3.CopyDone{})
		h.server(tag("COPY 2"), rfq)
		h.client(&pgproto3.Query{String: "COPY t TO STDOUT"})
		h.server(&pgproto3.CopyOutResponse{}, &pgproto3.CopyData{Data: []byte("1\tsecret-a\n")}, &pgproto3.CopyDone{}, tag("COPY 1"), rfq)
		h.client(&pgproto3.Query{String: "COPY t FROM STDIN"})
		h.server(&pgproto3.CopyInResponse{})
		h.client(&pgproto3.CopyData{Data: []byte("bad\n")}, &pgproto3.CopyFail{Message: "client gave up"})
		h.server(errResp("57014", "COPY from stdin failed: client gave up"), rfq)
		h.client(&pgproto3.Parse{Query: "COPY t TO STDOUT"}, bind(""), execute, sync_)
		h.server(parseOK, bindOK, &pgproto3.CopyOutResponse{}, &pgproto3.CopyData{Data: []byte("12345")}, &pgproto3.CopyDone{}, tag("COPY 1"), rfq)
		checkEvents(t, h.rec.all(), []brief{
			{Kind: "copy_in", Statement: "COPY t FROM STDIN", Outcome: "COPY 2", Rows: 2, Bytes: 22},
			{Kind: "copy_out", Statement: "COPY t TO STDOUT", Outcome: "COPY 1", Rows: 1, Bytes: 11},
			{Kind: "copy_in", Statement: "COPY t FROM STDIN", Outcome: "error", ErrorCode: "57014", Bytes: 4},
			{Kind: "copy_out", Statement: "COPY t TO STDOUT", Outcome: "COPY 1", Rows: 1, Bytes: 5},
		})
	})

	t.Run("pipelined COPY data is the COPY's", func(t *testing.T) {
		h := newHarness(t)
		// The client sends everything at once, before the server
		// answers anything.
		h.client(&pgproto3.Query{String: "COPY t FROM STDIN"}, &pgproto3.CopyData{Data: []byte("12345")}, &pgproto3.CopyDone{},
			&pgproto3.Query{String: "COPY t FROM STDIN"}, &pgproto3.CopyData{Data: []byte("123")}, &pgproto3.CopyDone{})
		h.server(&pgproto3.CopyInResponse{}, tag("COPY 1"), rfq, &pgproto3.CopyInResponse{}, tag("COPY 1"), rfq)
		checkEvents(t, h.rec.all(), []brief{
			{Kind: "copy_in", Statement: "COPY t FROM STDIN", Outcome: "COPY 1", Rows: 1, Bytes: 5},
			{Kind: "copy_in", Statement: "COPY t FROM STDIN", Outcome: "COPY 1", Rows: 1, Bytes: 3},
		})
	})

	t.Run("SQL PREPARE, DEALLOCATE and cursors", func(t *testing.T) {
		h := newHarness(t)
		h.client(&pgproto3.Query{String: "PREPARE q(int) AS SELECT $1"})
		h.server(tag("PREPARE"), rfq)
		h.client(bind("q", "7"), execute, sync_)
		h.server(bindOK, row, tag("SELECT 1"), rfq)
		h.client(&pgproto3.Parse{Name: "s", Query: "SELECT 'old'"}, sync_)
		h.server(parseOK, rfq)
		h.client(&pgproto3.Query{String: "DEALLOCATE s; PREPARE s AS SELECT 'new'"})
		h.server(tag("DEALLOCATE"), tag("PREPARE"), rfq)
		h.client(bind("s"), execute, sync_)
		h.server(bindOK, row, tag("SELECT 1"), rfq)
		h.client(&pgproto3.Query{String: "BEGIN"})
		h.server(tag("BEGIN"), &pgproto3.ReadyForQuery{TxStatus: 'T'})
		h.client(&pgproto3.Query{String: `DECLARE "C" CURSOR FOR SELECT 1`})
		h.server(tag("DECLARE CURSOR"), &pgproto3.ReadyForQuery{TxStatus: 'T'})
		h.client(&pgproto3.Execute{Portal: "C"}, sync_)
		h.server(row, tag("SELECT 1"), &pgproto3.ReadyForQuery{TxStatus: 'T'})
		checkEvents(t, h.rec.all(), []brief{
			{Kind: "query", Statement: "PREPARE q(int) AS SELECT $1", Outcome: "PREPARE"},
			{Kind: "execute", Statement: "PREPARE q(int) AS SELECT $1", Params: "[7]", Outcome: "SELECT 1", Rows: 1},
			{Kind: "query", Statement: "DEALLOCATE s; PREPARE s AS SELECT 'new'", Outcome: "DEALLOCATE; PREPARE"},
			{Kind: "execute", Statement: `[unknown prepared statement "s"]`, Outcome: "SELECT 1", Rows: 1},
			{Kind: "query", Statement: "BEGIN", Outcome: "BEGIN"},
			{Kind: "query", Statement: `DECLARE "C" CURSOR FOR SELECT 1`, Outcome: "DECLARE CURSOR"},
			{Kind: "execute", Statement: `DECLARE "C" CURSOR FOR SELECT 1`, Outcome: "SELECT 1", Rows: 1},
		})
	})

	t.Run("connection closed with requests pending", func(t *testing.T) {
		h := newHarness(t)
		h.client(&pgproto3.Query{String: "SELECT pg_sleep(60)"}, &pgproto3.Query{String: "SELECT 2"})
		h.client(&pgproto3.Parse{Query: "SELECT 3"}, bind(""), execute, sync_)
		h.back.finish()
		checkEvents(t, h.rec.all(), []brief{
			{Kind: "query", Statement: "SELECT pg_sleep(60)", Outcome: "outcome unknown"},
			{Kind: "query", Statement: "SELECT 2", Outcome: "outcome unknown"},
			{Kind: "execute", Statement: "SELECT 3", Outcome: "outcome unknown"},
		})
	})

	t.Run("closed in the middle of a COPY", func(t *testing.T) {
		h := newHarness(t)
		h.client(&pgproto3.Query{String: "COPY t FROM STDIN"})
		h.server(&pgproto3.CopyInResponse{})
		h.client(&pgproto3.CopyData{Data: []byte("1234")}, &pgproto3.CopyData{Data: []byte("56")})
		h.back.finish()
		checkEvents(t, h.rec.all(), []brief{{Kind: "copy_in", Statement: "COPY t FROM STDIN", Outcome: "outcome unknown", Bytes: 6}})
	})

	t.Run("closed after an error, before the Sync", func(t *testing.T) {
		h := newHarness(t)
		h.client(&pgproto3.Parse{Query: "SELECT 1/0"}, bind(""), execute, bind(""), execute, &pgproto3.Flush{})
		h.server(parseOK, bindOK, errResp("22012", "division by zero"))
		h.back.finish()
		checkEvents(t, h.rec.all(), []brief{
			{Kind: "execute", Statement: "SELECT 1/0", Outcome: "error", ErrorCode: "22012"},
			{Kind: "execute", Statement: "SELECT 1/0", Outcome: "skipped"},
		})
	})

	t.Run("a simple query failing after two statements ran", func(t *testing.T) {
		h := newHarness(t)
		h.client(&pgproto3.Query{String: "SELECT 1; SELECT 2; SELECT x_missing;"})
		h.server(rowDesc, row, tag("SELECT 1"), rowDesc, row, tag("SELECT 1"), errResp("42703", `column "x_missing" does not exist`), rfq)
		// Cut off after its first statement: what ran is known, the rest not.
		h.client(&pgproto3.Query{String: "INSERT INTO t VALUES (1); SELECT pg_sleep(60)"})
		h.server(tag("INSERT 0 1"))
		h.back.finish()
		checkEvents(t, h.rec.all(), []brief{
			{Kind: "query", Statement: "SELECT 1; SELECT 2; SELECT x_missing;", Outcome: "error after SELECT 1; SELECT 1", ErrorCode: "42703", Rows: 2},
			{Kind: "query", Statement: "INSERT INTO t VALUES (1); SELECT pg_sleep(60)", Outcome: "outcome unknown after INSERT 0 1", Rows: 1},
		})
		if ev := h.rec.all()[0]; ev.ErrorMsg != `column "x_missing" does not exist` {
			t.Errorf("error message %q", ev.ErrorMsg)
		}
	})

	t.Run("killed by the server mid-query", func(t *testing.T) {
		h := newHarness(t)
		h.client(&pgproto3.Query{String: "SELECT pg_sleep(60)"})
		h.server(&pgproto3.ErrorResponse{Severity: "FATAL", Code: "57P01", Message: "terminating connection due to administrator command"})
		h.back.finish()
		checkEvents(t, h.rec.all(), []brief{
			{Kind: "query", Statement: "SELECT pg_sleep(60)", Outcome: "error", ErrorCode: "57P01"},
		})
	})

	t.Run("a failed implicit commit at Sync", func(t *testing.T) {
		h := newHarness(t)
		h.client(&pgproto3.Parse{Query: "INSERT INTO d VALUES (1)"}, bind(""), execute, sync_)
		h.server(parseOK, bindOK, tag("INSERT 0 1"), errResp("23503", "violates foreign key constraint"), rfq)
		checkEvents(t, h.rec.all(), []brief{
			{Kind: "execute", Statement: "INSERT INTO d VALUES (1)", Outcome: "INSERT 0 1", Rows: 1},
			{Kind: "execute", Statement: "[implicit commit at Sync]", Outcome: "error", ErrorCode: "23503"},
		})
	})
}

// TestObserverMasking checks that nothing recorded holds a password: the
// statement, the values bound to a statement that mentions one, and an
// error message that quotes it; and that the project's patterns apply to
// all of them.
func TestObserverMasking(t *testing.T) {
	card := regexp.MustCompile(`\b\d{4}-\d{4}-\d{4}-\d{4}\b`)
	h := newHarness(t, card)
	h.client(&pgproto3.Query{String: "ALTER ROLE bob PASSWORD 'hunter2-secret'"})
	h.server(tag("ALTER ROLE"), rfq)
	h.client(&pgproto3.Query{String: "ALTER ROLE bob PASSWORD hunter3secret"})
	h.server(errResp("42601", `syntax error at or near "hunter3secret"`), rfq)
	h.client(&pgproto3.Parse{Query: "UPDATE users SET password = $1 WHERE id = $2"}, bind("", "hunter4-secret", "7"), execute, sync_)
	h.server(parseOK, bindOK, tag("UPDATE 1"), rfq)
	h.client(&pgproto3.Parse{Query: "INSERT INTO cards VALUES ($1, '1234-5678-9012-3456')"}, bind("", "card 1111-2222-3333-4444"), execute, sync_)
	h.server(parseOK, bindOK, errResp("23505", "Key (n)=(1234-5678-9012-3456) already exists."), rfq)
	checkEvents(t, h.rec.all(), []brief{
		{Kind: "query", Statement: "ALTER ROLE bob PASSWORD '***'", Outcome: "ALTER ROLE"},
		{Kind: "query", Statement: "ALTER ROLE bob PASSWORD ***", Outcome: "error", ErrorCode: "42601"},
		{Kind: "execute", Statement: "UPDATE users SET password = $1 WHERE id = $2", Params: "[***|***]", Outcome: "UPDATE 1", Rows: 1},
		{Kind: "execute", Statement: "INSERT INTO cards VALUES ($1, '***')", Params: "[card ***]", Outcome: "error", ErrorCode: "23505"},
	})
	evs := h.rec.all()
	if got := evs[1].ErrorMsg; got != `syntax error at or near "***"` {
		t.Errorf("error message %q", got)
	}
	if got := evs[3].ErrorMsg; got != "Key (n)=(***) already exists." {
		t.Errorf("error message %q", got)
	}
}

// TestObserverLargeMessages checks the limits: a statement over the
// recording limit streams through (the project records the ends of such
// statements) and is recorded by its ends, size and hash; a Bind larger
// than maxDecodeLen has its values recorded like a small one's; large parameter values are
// cut.
func TestObserverLargeMessages(t *testing.T) {
	h := newHarness(t)
	h.log.oversize = tunnel.OversizeRecordEnds
	big := "SELECT '" + strings.Repeat("x", maxDecodeLen) + "'"
	h.client(&pgproto3.Query{String: big})
	h.server(row, tag("SELECT 1"), rfq)
	h.client(&pgproto3.Parse{Name: "big", Query: big}, bind("big"), execute, sync_)
	h.server(parseOK, bindOK, row, tag("SELECT 1"), rfq)
	h.client(&pgproto3.Parse{Query: "SELECT $1, $2"}, &pgproto3.Bind{ParameterFormatCodes: []int16{0, 1},
		Parameters: [][]byte{bytes.Repeat([]byte("y"), 5000), bytes.Repeat([]byte{0xab}, 5000)}}, execute, sync_)
	h.server(parseOK, bindOK, row, tag("SELECT 1"), rfq)
	h.client(&pgproto3.Parse{Query: "INSERT INTO b VALUES ($1)"}, &pgproto3.Bind{Parameters: [][]byte{bytes.Repeat([]byte("z"), 2*maxDecodeLen)}}, execute, sync_)
	h.server(parseOK, bindOK, tag("INSERT 0 1"), rfq)
	// A password literal cut by the truncation is still masked.
	h.client(&pgproto3.Query{String: "ALTER ROLE x PASSWORD '" + strings.Repeat("s", 2*maxDecodeLen) + "'"})
	h.server(errResp("42622", "too long"), rfq)

	evs := h.rec.all()
	if len(evs) != 5 {
		t.Fatalf("%d events", len(evs))
	}
	sum := sha256.Sum256([]byte(big))
	for _, ev := range evs[:2] {
		if !strings.HasPrefix(ev.Statement, "SELECT 'xxx") || !strings.HasSuffix(ev.Statement, "xxx'") ||
			!strings.Contains(ev.Statement, fmt.Sprintf("x… [%d bytes, sha256 %x] …x", len(big), sum)) || len(ev.Statement) > 2*endsLen+100 {
			t.Errorf("statement of %d bytes: %.40q...%q", len(ev.Statement), ev.Statement, ev.Statement[max(len(ev.Statement)-60, 0):])
		}
		if ev.Outcome != "SELECT 1" {
			t.Errorf("outcome %q", ev.Outcome)
		}
	}
	p := evs[2].Params
	if len(p) != 2 || p[0] != strings.Repeat("y", maxParamLen)+"… [5000 bytes]" ||
		p[1] != `\x`+strings.Repeat("ab", maxParamLen/2)+"… [5000 bytes]" {
		t.Errorf("params %.80q", p)
	}
	if p := evs[3].Params; len(p) != 1 || p[0] != strings.Repeat("z", maxParamLen)+fmt.Sprintf("… [%d bytes]", 2*maxDecodeLen) || evs[3].Statement != "INSERT INTO b VALUES ($1)" {
		t.Errorf("large Bind: %q %.80q", evs[3].Statement, p)
	}
	if s := evs[4].Statement; !strings.HasPrefix(s, "ALTER ROLE x PASSWORD '***'… [") ||
		!strings.HasSuffix(s, "[last part withheld: the statement mentions a password]") || strings.Contains(s, "sss") {
		t.Errorf("truncated password statement: %.100q", s)
	}
	if c := cap(h.front.scan.buf); c > retainLen {
		t.Errorf("the client side keeps a buffer of %d bytes", c)
	}
}

// TestObserverChunking feeds the same exchange cut at every byte and in
// chunks of every small size: the events do not depend on how the bytes
// arrive.
func TestObserverChunking(t *testing.T) {
	var front, back []byte
	front = append(front, encode(t,
		&pgproto3.Query{String: "SELECT 1"},
		&pgproto3.Parse{Name: "s", Query: "SELECT $1::text"}, bind("s", "v"), describe, execute, sync_,
		&pgproto3.Query{String: "COPY t FROM STDIN"}, &pgproto3.CopyData{Data: []byte("abc")}, &pgproto3.CopyDone{})...)
	back = append(back, encodeBackend(t,
		rowDesc, row, tag("SELECT 1"), rfq,
		parseOK, bindOK, rowDesc, row, tag("SELECT 1"), rfq,
		&pgproto3.CopyInResponse{}, tag("COPY 1"), rfq)...)
	want := []brief{
		{Kind: "query", Statement: "SELECT 1", Outcome: "SELECT 1", Rows: 1},
		{Kind: "execute", Statement: "SELECT $1::text", Params: "[v]", Outcome: "SELECT 1", Rows: 1},
		{Kind: "copy_in", Statement: "COPY t FROM STDIN", Outcome: "COPY 1", Rows: 1, Bytes: 3},
	}
	feed := func(obs chunkObserver, b []byte, size int) {
		for len(b) > 0 {
			n := min(size, len(b))
			if err := obs.observe(b[:n]); err != nil {
				t.Fatal(err)
			}
			b = b[n:]
		}
	}
	for size := 1; size <= 12; size++ {
		h := newHarness(t)
		feed(h.front, front, size)
		feed(h.back, back, size)
		checkEvents(t, h.rec.all(), want)
	}
}

// TestObserverBrokenStream checks that a length below 4 stops the relay.
func TestObserverBrokenStream(t *testing.T) {
	h := newHarness(t)
	bad := []byte{'Q', 0, 0, 0, 3}
	if err := h.front.observe(bad); err != errBadFrame {
		t.Errorf("observe = %v, want errBadFrame", err)
	}
	if err := h.front.observe([]byte("more")); err != errBadFrame {
		t.Errorf("after a bad frame: %v", err)
	}
}

// TestObserverTooManyPending checks that a client that pipelines without
// reading is cut off at maxPending requests.
func TestObserverTooManyPending(t *testing.T) {
	h := newHarness(t)
	chunk := bytes.Repeat(encode(t, sync_), 4096)
	var err error
	for i := 0; i <= maxPending/4096 && err == nil; i++ {
		err = h.front.observe(chunk)
	}
	if err != errTooManyPending {
		t.Errorf("observe = %v, want errTooManyPending", err)
	}
}

// TestRowsOf checks the row counts taken from command tags.
func TestRowsOf(t *testing.T) {
	for tag, want := range map[string]int64{
		"INSERT 0 3": 3, "UPDATE 2": 2, "DELETE 0": 0, "SELECT 5": 5, "COPY 10": 10, "MERGE 4": 4,
		"FETCH 7": 7, "MOVE 1": 1, "CREATE TABLE": 0, "ALTER ROLE": 0, "": 0, "SELECT x": 0,
	} {
		if got := rowsOf(tag); got != want {
			t.Errorf("rowsOf(%q) = %d, want %d", tag, got, want)
		}
	}
}

// TestObserverNoAllocations checks the hot path: the messages the session
// log ignores (DataRow above all) cost no allocation.
func TestObserverNoAllocations(t *testing.T) {
	h := newHarness(t)
	h.client(&pgproto3.Query{String: "SELECT x FROM big"})
	h.server(rowDesc)
	var chunk []byte
	for range 200 {
		chunk, _ = (&pgproto3.DataRow{Values: [][]byte{bytes.Repeat([]byte("v"), 100), nil}}).Encode(chunk)
	}
	allocs := testing.AllocsPerRun(100, func() {
		// Cut anywhere, as the network does.
		for i := 0; i < len(chunk); i += 1000 {
			if err := h.back.observe(chunk[i:min(i+1000, len(chunk))]); err != nil {
				t.Fatal(err)
			}
		}
	})
	if allocs != 0 {
		t.Errorf("%v allocations per 200 DataRows", allocs)
	}
	var copyData []byte
	for range 100 {
		copyData, _ = (&pgproto3.CopyData{Data: bytes.Repeat([]byte("c"), 300)}).Encode(copyData)
	}
	if allocs := testing.AllocsPerRun(100, func() { _ = h.front.observe(copyData) }); allocs != 0 {
		t.Errorf("%v allocations per 100 CopyData", allocs)
	}
}

// BenchmarkObserverSelect1 measures what recording costs one extended
// query, SELECT 1 as pgx sends it, without the network: both directions'
// observers and the event.
func BenchmarkObserverSelect1(b *testing.B) {
	rec := &countingRecorder{}
	l := newConnLog(common.NewSession("s", common.WithRecorder(rec)), Config{}, "c")
	front, back := newFrontendObserver(l), newBackendObserver(l)
	prepare := encode(b, &pgproto3.Parse{Name: "stmtcache_1", Query: "SELECT 1"}, &pgproto3.Describe{ObjectType: 'S', Name: "stmtcache_1"}, sync_)
	prepared := encodeBackend(b, parseOK, &pgproto3.ParameterDescription{}, rowDesc, rfq)
	query := encode(b, &pgproto3.Bind{PreparedStatement: "stmtcache_1", ResultFormatCodes: []int16{1}}, describe, execute, sync_)
	answer := encodeBackend(b, bindOK, rowDesc, row, tag("SELECT 1"), rfq)
	if front.observe(prepare) != nil || back.observe(prepared) != nil {
		b.Fatal("prepare")
	}
	b.ReportAllocs()
	for b.Loop() {
		if err := front.observe(query); err != nil {
			b.Fatal(err)
		}
		if err := back.observe(answer); err != nil {
			b.Fatal(err)
		}
	}
	if rec.n.Load() < int64(b.N) {
		b.Fatalf("%d events for %d queries", rec.n.Load(), b.N)
	}
}

// BenchmarkObserverLargeResult measures the server side observer's
// throughput on a result of 1,000-byte rows, in 32 KiB chunks as the relay
// reads them.
func BenchmarkObserverLargeResult(b *testing.B) {
	l := newConnLog(common.NewSession("s", common.WithRecorder(&countingRecorder{})), Config{}, "c")
	back := newBackendObserver(l)
	var rows []byte
	for range 1000 {
		rows, _ = (&pgproto3.DataRow{Values: [][]byte{bytes.Repeat([]byte("x"), 1000)}}).Encode(rows)
	}
	l.queue = append(l.queue, &pending{kind: pendingQuery, stmt: &statement{}})
	const chunk = 32 << 10 // a large ReadBuffer
	b.SetBytes(int64(len(rows)))
	b.ReportAllocs()
	for b.Loop() {
		for i := 0; i < len(rows); i += chunk {
			if err := back.observe(rows[i:min(i+chunk, len(rows))]); err != nil {
				b.Fatal(err)
			}
		}
	}
}
