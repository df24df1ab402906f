package postgres

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/airlockpam/airlock/internal/proxy/common"
	"github.com/airlockpam/airlock/internal/sessionlog"
	"github.com/airlockpam/airlock/internal/testenv"
	"github.com/airlockpam/airlock/internal/tunnel"
)

// waRecorder is a recorder that takes start records (a
// sessionlog.WriteAheadRecorder): onBegin, when set, runs in Begin, before
// the statement can be forwarded, and its error fails Begin.
type waRecorder struct {
	memRecorder
	onBegin func(ev sessionlog.Event) error

	smu    sync.Mutex
	starts []sessionlog.Event
}

func (r *waRecorder) Begin(ev sessionlog.Event) error {
	if r.onBegin != nil {
		if err := r.onBegin(ev); err != nil {
			return err
		}
	}
	r.smu.Lock()
	defer r.smu.Unlock()
	r.starts = append(r.starts, ev)
	return nil
}

func (r *waRecorder) allStarts() []sessionlog.Event {
	r.smu.Lock()
	defer r.smu.Unlock()
	return append([]sessionlog.Event(nil), r.starts...)
}

// superQuery runs a query on db as the superuser and returns the first
// column of its first row.
func superQuery(t *testing.T, db testenv.Database, sql string) string {
	t.Helper()
	ctx := testContext(t)
	conn, err := pgconn.Connect(ctx, db.SuperURL())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	res, err := conn.Exec(ctx, sql).ReadAll()
	if err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
	if len(res) == 0 || len(res[0].Rows) == 0 {
		return ""
	}
	return string(res[0].Rows[0][0])
}

// The start record of each statement (a simple Query, an Execute with its
// bound values, a FunctionCall) reaches the recorder before PostgreSQL
// receives the statement: at Begin, the row the statement inserts is not
// there yet. The final event names the start. Passwords are masked in the
// start records as in the final events.
func TestWriteAheadBeforeForwarding(t *testing.T) {
	db := testenv.SharedPostgres(t)
	role := db.Cluster.SCRAMUser
	superExec(t, db, fmt.Sprintf(`CREATE TABLE wa_probe (n int);
		GRANT ALL ON wa_probe TO %[1]s;
		CREATE FUNCTION wa_insert(int) RETURNS int LANGUAGE sql AS 'INSERT INTO wa_probe VALUES ($1) RETURNING $1';
		GRANT EXECUTE ON FUNCTION wa_insert(int) TO %[1]s`, role.User))
	rec := &waRecorder{}
	var mu sync.Mutex
	var seenAtBegin []string // for each Begin: the rows of wa_probe then
	rec.onBegin = func(ev sessionlog.Event) error {
		// In the engine's goroutine: an error fails Begin, and the test.
		ctx := testContext(t)
		conn, err := pgconn.Connect(ctx, db.SuperURL())
		if err != nil {
			return err
		}
		defer conn.Close(ctx)
		res, err := conn.Exec(ctx, "SELECT coalesce(string_agg(n::text, ',' ORDER BY n), '') FROM wa_probe").ReadAll()
		if err != nil {
			return err
		}
		rows := string(res[0].Rows[0][0])
		mu.Lock()
		seenAtBegin = append(seenAtBegin, rows)
		mu.Unlock()
		return nil
	}
	log, _ := newLogger(t, role.Password)
	sess := common.NewSession("sess-wa", common.WithRecorder(rec))
	p := startProxy(t, newEngine(t, WithLogger(log)), sess, accountConfig(db, role, tunnel.TLS{}))
	conn := p.connect(t, "")
	ctx := testContext(t)

	if _, err := conn.Exec(ctx, "INSERT INTO wa_probe VALUES (1)", pgx.QueryExecModeSimpleProtocol); err != nil {
		t.Fatal(err)
	}
	if _, err := conn.Exec(ctx, "INSERT INTO wa_probe VALUES ($1)", 2); err != nil { // extended, a binary int4
		t.Fatal(err)
	}
	fe, _ := rawConnect(t, p)
	_, values := send(t, fe, &pgproto3.Query{String: "SELECT 'wa_insert'::regproc::oid"})
	var oid uint32
	if _, err := fmt.Sscan(values[0], &oid); err != nil {
		t.Fatal(err)
	}
	if _, values = send(t, fe, &pgproto3.FunctionCall{Function: oid, Arguments: [][]byte{[]byte("3")}}); len(values) != 1 || values[0] != "3" {
		t.Fatalf("function call: %v", values)
	}
	// A password, in a statement and bound to one that mentions it.
	if _, err := conn.Exec(ctx, "SELECT 1 WHERE 'x' <> 'secret-WA-0001' AND current_user <> 'PASSWORD'", pgx.QueryExecModeSimpleProtocol); err != nil {
		t.Fatal(err)
	}
	if _, err := conn.Exec(ctx, "SELECT $1::text AS password", "secret-WA-0002"); err != nil {
		t.Fatal(err)
	}
	if _, err := conn.Exec(ctx, "ALTER ROLE CURRENT_USER PASSWORD '"+role.Password+"'", pgx.QueryExecModeSimpleProtocol); err != nil {
		t.Fatal(err)
	}

	starts := rec.allStarts()
	want := []brief{
		{Kind: "query", Statement: "INSERT INTO wa_probe VALUES (1)"},
		{Kind: "execute", Statement: "INSERT INTO wa_probe VALUES ($1)", Params: "[2]"},
		{Kind: "query", Statement: "SELECT 'wa_insert'::regproc::oid"},
		{Kind: "function_call", Statement: fmt.Sprintf("function call oid %d", oid), Params: "[3]"},
		{Kind: "query", Statement: "SELECT 1 WHERE 'x' <> 'secret-WA-0001' AND current_user <> 'PASSWORD'"},
		{Kind: "execute", Statement: "SELECT $1::text AS password", Params: "[***]"},
		{Kind: "query", Statement: "ALTER ROLE CURRENT_USER PASSWORD '***'"},
	}
	if len(starts) != len(want) {
		t.Fatalf("%d start records: %v; want %d", len(starts), starts, len(want))
	}
	for i, ev := range starts {
		if got := briefOf(ev); got != want[i] {
			t.Errorf("start %d: %+v; want %+v", i, got, want[i])
		}
		if ev.ID == "" || ev.SessionID != "sess-wa" || ev.ConnID == "" || ev.Time.IsZero() || ev.Database != db.Name {
			t.Errorf("start %d lacks its identity: %+v", i, ev)
		}
	}
	mu.Lock()
	seen := append([]string(nil), seenAtBegin...)
	mu.Unlock()
	for i, rows := range []string{"", "1", "1,2", "1,2"} {
		if seen[i] != rows {
			t.Errorf("at the start of statement %d the table held %q; want %q: the statement was forwarded before its start was recorded", i, seen[i], rows)
		}
	}
	// Each final event names its start.
	byStart := map[string]sessionlog.Event{}
	for _, ev := range rec.queries() {
		byStart[ev.StartID] = ev
	}
	for i, st := range starts {
		fin, ok := byStart[st.ID]
		if !ok || fin.ID == st.ID || fin.Statement != st.Statement || fin.Outcome == "" {
			t.Errorf("start %d (%s) has no final event naming it: %+v", i, st.Statement, fin)
		}
	}
	all, _ := json.Marshal(starts)
	if bytes.Contains(all, []byte("secret-WA-0002")) || bytes.Contains(all, []byte(role.Password)) {
		t.Fatalf("a start record holds a password: %s", all)
	}
}

// When Begin fails (the spool cannot take the start), the statement is
// refused with the recorder's words and forwarded to nothing: simple and
// extended protocol alike; the refusal is recorded.
func TestWriteAheadFailureRefuses(t *testing.T) {
	db := testenv.SharedPostgres(t)
	role := db.Cluster.SCRAMUser
	superExec(t, db, "CREATE TABLE victim_wa (n int); GRANT ALL ON victim_wa TO "+role.User)
	rec := &waRecorder{}
	var failing sync.Map
	rec.onBegin = func(ev sessionlog.Event) error {
		if _, ok := failing.Load(ev.Statement); ok {
			return &sessionlog.SpoolError{Full: true}
		}
		return nil
	}
	log, _ := newLogger(t, role.Password)
	sess := common.NewSession("sess-wa-fail", common.WithRecorder(rec))
	p := startProxy(t, newEngine(t, WithLogger(log)), sess, accountConfig(db, role, tunnel.TLS{}))
	ctx := testContext(t)

	for _, mode := range []pgx.QueryExecMode{pgx.QueryExecModeSimpleProtocol, pgx.QueryExecModeCacheStatement} {
		t.Run(mode.String(), func(t *testing.T) {
			conn := p.connect(t, "")
			if _, err := conn.Exec(ctx, "SELECT 1", mode); err != nil {
				t.Fatal(err)
			}
			stmt := "INSERT INTO victim_wa VALUES (1)"
			failing.Store(stmt, true)
			_, err := conn.Exec(ctx, stmt, mode)
			pgErr := pgError(t, err)
			if pgErr.Code != sqlStateIOError || !strings.Contains(pgErr.Message, "the session log cannot be written") ||
				!strings.Contains(pgErr.Message, "spool is full") {
				t.Errorf("got %s %q", pgErr.Code, pgErr.Message)
			}
			if n := superQuery(t, db, "SELECT count(*) FROM victim_wa"); n != "0" {
				t.Fatalf("the refused statement ran: %s rows", n)
			}
			refused := false
			for _, ev := range rec.queries() {
				if ev.Statement == stmt {
					if ev.Outcome != OutcomeRefused || ev.ErrorCode != sqlStateIOError || ev.StartID != "" {
						t.Errorf("recorded as %+v", ev)
					}
					refused = true
				}
			}
			if !refused {
				t.Errorf("the refusal is not recorded: %v", rec.queries())
			}
			rec.reset()
		})
	}
}
