package postgres

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/airlockpam/airlock/internal/proxy/common"
	"github.com/airlockpam/airlock/internal/sessionlog"
	"github.com/airlockpam/airlock/internal/testenv"
	"github.com/airlockpam/airlock/internal/tunnel"
)

// paddedDrop is the attack of issue 13: a DROP TABLE hidden behind 1.1 MB
// of padding, which the session log used to keep only the first 8 KiB of.
func paddedDrop(table string) string {
	return "SELECT 1 /* " + strings.Repeat("padding ", 1100000/8) + " */; DROP TABLE " + table
}

func tableExists(t *testing.T, db testenv.Database, table string) bool {
	t.Helper()
	conn, err := pgx.Connect(testContext(t), db.SuperURL())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(testContext(t))
	var ok bool
	if err := conn.QueryRow(testContext(t), "SELECT to_regclass($1) IS NOT NULL", table).Scan(&ok); err != nil {
		t.Fatal(err)
	}
	return ok
}

// TestOversizeStatementRefused: by default a statement over the project's
// limit is not forwarded; the client is told why (54000) and the session
// log has it as refused, with its last part, where the DROP TABLE is, and
// its SHA-256.
func TestOversizeStatementRefused(t *testing.T) {
	db := testenv.SharedPostgres(t)
	superExec(t, db, "CREATE TABLE victim_refused (n int); GRANT ALL ON victim_refused TO "+db.Cluster.SCRAMUser.User)
	p, rec := startRecording(t, db, accountConfig(db, db.Cluster.SCRAMUser, verifiedTLS(db)))
	stmt := paddedDrop("victim_refused")
	sum := sha256.Sum256([]byte(stmt))
	for _, mode := range []string{"simple", "extended"} {
		t.Run(mode, func(t *testing.T) {
			conn := p.connect(t, "")
			ctx := testContext(t)
			var err error
			if mode == "simple" {
				_, err = conn.Exec(ctx, "SELECT 'before'")
				if err != nil {
					t.Fatal(err)
				}
				_, err = conn.Exec(ctx, stmt, pgx.QueryExecModeSimpleProtocol)
			} else {
				_, err = conn.Prepare(ctx, "big", stmt)
			}
			pgErr := pgError(t, err)
			want := fmt.Sprintf("airlock: statement of %d bytes is over this project's recording limit of 1048576 bytes; ask a project admin to raise it", len(stmt))
			if pgErr.Code != "54000" || pgErr.Message != want {
				t.Errorf("got %s %q, want 54000 %q", pgErr.Code, pgErr.Message, want)
			}
			if !tableExists(t, db, "victim_refused") {
				t.Fatal("the refused DROP TABLE ran")
			}
			rec.waitFor(t, sessionlog.KindDisconnect)
			var ev *sessionlog.Event
			for _, e := range rec.queries() {
				if e.Outcome == OutcomeRefused {
					ev = &e
				}
			}
			if ev == nil {
				t.Fatalf("no refused event: %v", rec.queries())
			}
			if !strings.HasPrefix(ev.Statement, "SELECT 1 /* padding") || !strings.HasSuffix(ev.Statement, "*/; DROP TABLE victim_refused") ||
				!strings.Contains(ev.Statement, fmt.Sprintf("… [%d bytes, sha256 %s] …", len(stmt), hex.EncodeToString(sum[:]))) ||
				len(ev.Statement) > 2*endsLen+200 {
				t.Errorf("refused statement recorded as %d bytes: %.80q … %q", len(ev.Statement), ev.Statement, ev.Statement[max(0, len(ev.Statement)-200):])
			}
			if ev.ErrorCode != "54000" || ev.ErrorMsg != want {
				t.Errorf("refused event error %s %q", ev.ErrorCode, ev.ErrorMsg)
			}
			*rec = memRecorder{}
		})
	}
}

// TestOversizeStatementRecordEnds: with OversizeRecordEnds the statement
// runs and its event shows its ends and hash: the DROP TABLE is visible.
func TestOversizeStatementRecordEnds(t *testing.T) {
	db := testenv.SharedPostgres(t)
	superExec(t, db, "CREATE TABLE victim_ends (n int); ALTER TABLE victim_ends OWNER TO "+db.Cluster.SCRAMUser.User)
	cfg := accountConfig(db, db.Cluster.SCRAMUser, verifiedTLS(db))
	cfg.OversizeStatements = tunnel.OversizeRecordEnds
	p, rec := startRecording(t, db, cfg)
	conn := p.connect(t, "")
	stmt := paddedDrop("victim_ends")
	if _, err := conn.Exec(testContext(t), stmt, pgx.QueryExecModeSimpleProtocol); err != nil {
		t.Fatal(err)
	}
	if tableExists(t, db, "victim_ends") {
		t.Fatal("the DROP TABLE did not run")
	}
	sum := sha256.Sum256([]byte(stmt))
	evs := rec.queries()
	if len(evs) != 1 {
		t.Fatalf("%d events", len(evs))
	}
	ev := evs[0]
	if ev.Outcome != "SELECT 1; DROP TABLE" || !strings.HasSuffix(ev.Statement, "DROP TABLE victim_ends") ||
		!strings.Contains(ev.Statement, fmt.Sprintf("… [%d bytes, sha256 %s] …", len(stmt), hex.EncodeToString(sum[:]))) {
		t.Errorf("recorded %q … %q, outcome %q", ev.Statement[:40], ev.Statement[max(0, len(ev.Statement)-200):], ev.Outcome)
	}
	// A project limit above the default records a large statement whole.
	cfg.MaxStatementBytes = 4 << 20
	p2, rec2 := startRecording(t, db, cfg)
	conn2 := p2.connect(t, "")
	whole := "SELECT 1 /* " + strings.Repeat("x", 2<<20) + " */"
	if _, err := conn2.Exec(testContext(t), whole, pgx.QueryExecModeSimpleProtocol); err != nil {
		t.Fatal(err)
	}
	if evs := rec2.queries(); len(evs) != 1 || evs[0].Statement != whole {
		t.Errorf("a statement under a raised limit was not recorded whole")
	}
}

// unhealthyRecorder is a recorder that cannot persist (a full spool).
type unhealthyRecorder struct {
	memRecorder
	broken atomic.Bool
}

func (r *unhealthyRecorder) Err() error {
	if r.broken.Load() {
		return errors.New("the spool is full (2 MiB cap)")
	}
	return nil
}

// TestFailClosedWhenLogUnwritable: while the recorder reports it cannot
// persist, a new statement is not forwarded and the client is told why;
// once it can, statements run again.
func TestFailClosedWhenLogUnwritable(t *testing.T) {
	db := testenv.SharedPostgres(t)
	superExec(t, db, "CREATE TABLE victim_health (n int); GRANT ALL ON victim_health TO "+db.Cluster.SCRAMUser.User)
	rec := &unhealthyRecorder{}
	log, _ := newLogger(t)
	sess := common.NewSession("sess-health", common.WithRecorder(rec))
	p := startProxy(t, newEngine(t, WithLogger(log)), sess, accountConfig(db, db.Cluster.SCRAMUser, verifiedTLS(db)))
	conn := p.connect(t, "")
	ctx := testContext(t)
	if _, err := conn.Exec(ctx, "SELECT 1"); err != nil {
		t.Fatal(err)
	}
	rec.broken.Store(true)
	_, err := conn.Exec(ctx, "DROP TABLE victim_health")
	pgErr := pgError(t, err)
	if pgErr.Code != sqlStateIOError || !strings.Contains(pgErr.Message, "the session log cannot be written") ||
		!strings.Contains(pgErr.Message, "the spool is full") {
		t.Errorf("got %s %q", pgErr.Code, pgErr.Message)
	}
	if !tableExists(t, db, "victim_health") {
		t.Fatal("a statement ran while the session log could not be written")
	}
	for _, ev := range rec.queries() {
		if strings.Contains(ev.Statement, "DROP") {
			t.Errorf("recorded as forwarded: %v", briefOf(ev))
		}
	}
	rec.broken.Store(false)
	conn2 := p.connect(t, "")
	if _, err := conn2.Exec(ctx, "SELECT 1"); err != nil {
		t.Errorf("after the log recovered: %v", err)
	}
}

// TestDeclaredHugeMessagesBounded is the memory attack of issue 13 against
// PostgreSQL: 50 connections each declare a 48 MB message and send only
// its first bytes. The engine's heap grows by a few MB at most, whatever
// the declaration, and each connection is closed once it has stalled for
// the message timeout.
func TestDeclaredHugeMessagesBounded(t *testing.T) {
	db := testenv.SharedPostgres(t)
	for _, recorded := range []bool{true, false} {
		t.Run(fmt.Sprintf("recorded=%v", recorded), func(t *testing.T) {
			log, _ := newLogger(t)
			var opts []common.SessionOption
			if recorded {
				opts = append(opts, common.WithRecorder(&memRecorder{}))
			}
			eng := newEngine(t, WithLogger(log), WithMessageTimeout(8*time.Second))
			p := startProxy(t, eng, common.NewSession("sess-mem", opts...), accountConfig(db, db.Cluster.SCRAMUser, verifiedTLS(db)))

			const conns, declared = 50, 48 << 20
			var before runtime.MemStats
			runtime.GC()
			runtime.ReadMemStats(&before)
			var clients []net.Conn
			for range conns {
				c, err := net.Dial("tcp", p.addr)
				if err != nil {
					t.Fatal(err)
				}
				defer c.Close()
				fe := pgproto3.NewFrontend(c, c)
				fe.Send(&pgproto3.StartupMessage{ProtocolVersion: pgproto3.ProtocolVersion30, Parameters: map[string]string{"user": "x"}})
				if err := fe.Flush(); err != nil {
					t.Fatal(err)
				}
				_ = c.SetReadDeadline(time.Now().Add(testTimeout))
				for {
					msg, err := fe.Receive()
					if err != nil {
						t.Fatal(err)
					}
					if _, ok := msg.(*pgproto3.ReadyForQuery); ok {
						break
					}
				}
				// A Query declaring 48 MB, and its first 64 KiB.
				hdr := make([]byte, 5, 5+64<<10)
				hdr[0] = 'Q'
				binary.BigEndian.PutUint32(hdr[1:], declared+4)
				hdr = append(hdr, strings.Repeat("SELECT 1 ", (64<<10)/9)...)
				if _, err := c.Write(hdr); err != nil {
					t.Fatal(err)
				}
				clients = append(clients, c)
			}
			time.Sleep(200 * time.Millisecond) // let the engine read what was sent
			var after runtime.MemStats
			runtime.GC()
			runtime.ReadMemStats(&after)
			grew := int64(after.HeapAlloc) - int64(before.HeapAlloc)
			t.Logf("heap grew by %d KiB for %d connections declaring %d MB each", grew>>10, conns, declared>>20)
			if grew > 16<<20 {
				t.Errorf("the heap grew by %d MB for %d stalled connections", grew>>20, conns)
			}
			// Stalled mid-message: each connection is closed.
			for _, c := range clients {
				_ = c.SetReadDeadline(time.Now().Add(testTimeout))
				buf := make([]byte, 1024)
				for {
					if _, err := c.Read(buf); err != nil {
						var ne net.Error
						if errors.As(err, &ne) && ne.Timeout() {
							t.Fatal("a stalled connection was not closed")
						}
						break
					}
				}
			}
		})
	}
}

// TestStatementOverLimitEnds checks the recorded form of a statement over
// the limit, with the observer alone: ends, size, hash, and a password in
// it masked (the last part withheld).
func TestStatementOverLimitEnds(t *testing.T) {
	h := newHarness(t)
	h.log.oversize = tunnel.OversizeRecordEnds
	h.log.maxStatement = 10000
	stmt := "ALTER ROLE x PASSWORD '" + strings.Repeat("s", 20000) + "'"
	// Cut at every 997 bytes, so that the statement's parts cross chunks.
	b := encode(t, &pgproto3.Query{String: stmt})
	for len(b) > 0 {
		n := min(997, len(b))
		if err := h.front.observe(b[:n]); err != nil {
			t.Fatal(err)
		}
		b = b[n:]
	}
	h.server(errResp("42622", "too long"), rfq)
	evs := h.rec.all()
	if len(evs) != 1 {
		t.Fatalf("%d events", len(evs))
	}
	sum := sha256.Sum256([]byte(stmt))
	want := "ALTER ROLE x PASSWORD '***'" + fmt.Sprintf("… [%d bytes, sha256 %s] …", len(stmt), hex.EncodeToString(sum[:])) +
		"[last part withheld: the statement mentions a password]"
	if evs[0].Statement != want {
		t.Errorf("recorded %q\nwant %q", evs[0].Statement, want)
	}
	if cap(h.front.scan.buf) > retainLen {
		t.Errorf("the client side keeps a buffer of %d bytes", cap(h.front.scan.buf))
	}
}

// TestLargeBindValuesRecorded: a Bind larger than maxDecodeLen, cut in
// chunks of any size, has its values recorded as a small Bind's would be:
// text cut at maxParamLen, binary ones decoded by type or shown in
// hexadecimal, NULL as NULL.
func TestLargeBindValuesRecorded(t *testing.T) {
	bigText := strings.Repeat("y", 1536<<10)
	bigBin := make([]byte, 20<<10)
	for i := range bigBin {
		bigBin[i] = byte(i)
	}
	for _, chunk := range []int{7, 1000, 1 << 16} {
		t.Run(fmt.Sprint(chunk), func(t *testing.T) {
			h := newHarness(t)
			msgs := encode(t,
				&pgproto3.Parse{Name: "s", Query: "SELECT $1::text, $2::int4, $3::text, $4::bytea, $5::text", ParameterOIDs: []uint32{25, 23, 25, 17, 25}},
				&pgproto3.Bind{PreparedStatement: "s", ParameterFormatCodes: []int16{0, 1, 0, 1, 0},
					Parameters: [][]byte{[]byte(bigText), {0, 0, 0, 42}, nil, bigBin, []byte("small")}},
				&pgproto3.Execute{}, &pgproto3.Sync{})
			for b := msgs; len(b) > 0; {
				n := min(chunk, len(b))
				if err := h.front.observe(b[:n]); err != nil {
					t.Fatal(err)
				}
				b = b[n:]
			}
			h.server(parseOK, bindOK, row, tag("SELECT 1"), rfq)
			evs := h.rec.all()
			if len(evs) != 1 {
				t.Fatalf("%d events", len(evs))
			}
			want := []string{strings.Repeat("y", maxParamLen) + fmt.Sprintf("… [%d bytes]", len(bigText)), "42", "NULL",
				`\x` + hex.EncodeToString(bigBin[:maxParamLen/2]) + fmt.Sprintf("… [%d bytes]", len(bigBin)), "small"}
			if got := evs[0].Params; fmt.Sprint(got) != fmt.Sprint(want) {
				t.Errorf("params %.300q\nwant %.300q", got, want)
			}
		})
	}
}

// TestOverallBufferBudget: across connections, the engine holds no more
// than its budget for large messages; a message that would go over it is
// refused (53200) and the budget is given back when a connection ends in
// the middle of its message.
func TestOverallBufferBudget(t *testing.T) {
	db := testenv.SharedPostgres(t)
	log, _ := newLogger(t)
	rec := &memRecorder{}
	eng := newEngine(t, WithLogger(log), WithMaxBufferedBytes(1<<20))
	p := startProxy(t, eng, common.NewSession("sess-budget", common.WithRecorder(rec)), accountConfig(db, db.Cluster.SCRAMUser, verifiedTLS(db)))
	stmt := "SELECT length('" + strings.Repeat("b", 800<<10) + "')"

	// A connection that holds 800 KiB of the budget: its message stalls.
	staller, err := net.Dial("tcp", p.addr)
	if err != nil {
		t.Fatal(err)
	}
	fe := pgproto3.NewFrontend(staller, staller)
	fe.Send(&pgproto3.StartupMessage{ProtocolVersion: pgproto3.ProtocolVersion30, Parameters: map[string]string{"user": "x"}})
	if err := fe.Flush(); err != nil {
		t.Fatal(err)
	}
	_ = staller.SetReadDeadline(time.Now().Add(testTimeout))
	for {
		msg, err := fe.Receive()
		if err != nil {
			t.Fatal(err)
		}
		if _, ok := msg.(*pgproto3.ReadyForQuery); ok {
			break
		}
	}
	full := encode(t, &pgproto3.Query{String: stmt})
	if _, err := staller.Write(full[:100<<10]); err != nil {
		t.Fatal(err)
	}
	time.Sleep(200 * time.Millisecond)

	conn := p.connect(t, "")
	_, err = conn.Exec(testContext(t), stmt, pgx.QueryExecModeSimpleProtocol)
	if pgErr := pgError(t, err); pgErr.Code != sqlStateOutOfMemory || !strings.Contains(pgErr.Message, "too many large statements") {
		t.Errorf("over the budget: %s %q", pgErr.Code, pgErr.Message)
	}

	_ = staller.Close()
	deadline := time.Now().Add(testTimeout)
	for eng.budget.used.Load() != 0 {
		if time.Now().After(deadline) {
			t.Fatalf("the budget was not given back: %d bytes held", eng.budget.used.Load())
		}
		time.Sleep(10 * time.Millisecond)
	}
	conn2 := p.connect(t, "")
	var n int
	if err := conn2.QueryRow(testContext(t), stmt, pgx.QueryExecModeSimpleProtocol).Scan(&n); err != nil || n != 800<<10 {
		t.Errorf("after the budget was given back: %d, %v", n, err)
	}
}
