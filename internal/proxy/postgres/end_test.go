package postgres

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/airlockpam/airlock/internal/proxy/common"
	"github.com/airlockpam/airlock/internal/sessionlog"
	"github.com/airlockpam/airlock/internal/testenv"
	"github.com/airlockpam/airlock/internal/tunnel"
)

const terminatedMessage = "session terminated by an administrator"

// counterTable creates a table t(id, v) with rows (id, 0) for each id,
// writable by every role, and returns a function that reads v of a row as
// the superuser.
func counterTable(t *testing.T, db testenv.Database, ids ...int) func(id int) int {
	t.Helper()
	superExec(t, db, "CREATE TABLE t (id int PRIMARY KEY, v int NOT NULL)")
	superExec(t, db, "GRANT ALL ON t TO PUBLIC")
	for _, id := range ids {
		superExec(t, db, fmt.Sprintf("INSERT INTO t VALUES (%d, 0)", id))
	}
	return func(id int) int {
		t.Helper()
		ctx := testContext(t)
		conn, err := pgx.Connect(ctx, db.SuperURL())
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close(context.Background())
		var v int
		if err := conn.QueryRow(ctx, "SELECT v FROM t WHERE id = $1", id).Scan(&v); err != nil {
			t.Fatal(err)
		}
		return v
	}
}

// checkGoodbye checks that err is the engine's FATAL 57P01 with message.
func checkGoodbye(t *testing.T, err error, message string) {
	t.Helper()
	pgErr := pgError(t, err)
	if pgErr.Severity != "FATAL" || pgErr.Code != "57P01" || pgErr.Message != "airlock: "+message {
		t.Errorf("the client got %s %s %q, want FATAL 57P01 %q", pgErr.Severity, pgErr.Code, pgErr.Message, "airlock: "+message)
	}
}

// TestEndStopsRunningStatement ends a session while an autocommit UPDATE
// sleeps: the UPDATE must never commit, the client must be told why, and
// the session log must say the statement was cancelled.
func TestEndStopsRunningStatement(t *testing.T) {
	modes := []struct {
		name string
		mode pgx.QueryExecMode
	}{
		{"simple protocol", pgx.QueryExecModeSimpleProtocol},
		{"extended protocol", pgx.QueryExecModeCacheStatement},
	}
	for _, m := range modes {
		t.Run(m.name, func(t *testing.T) {
			db := testenv.SharedPostgres(t)
			value := counterTable(t, db, 1)
			cfg := accountConfig(db, db.Cluster.SCRAMUser, tunnel.TLS{})
			p, rec := startRecording(t, db, cfg)
			conn := p.connect(t, "")
			ctx := testContext(t)

			const sleep = 4 * time.Second
			query := "UPDATE t SET v = v + 1 WHERE id = 1 AND pg_sleep(4) IS NOT NULL"
			start := time.Now()
			errc := make(chan error, 1)
			go func() {
				_, err := conn.Exec(ctx, query, m.mode)
				errc <- err
			}()
			waitForActive(t, db, query)
			endSession(p.sess)
			err := <-errc
			checkGoodbye(t, err, terminatedMessage)
			if err := p.nextResult(t); !errors.Is(err, ErrSessionClosed) {
				t.Errorf("Serve returned %v, want ErrSessionClosed", err)
			}

			// Past the moment the sleep would have ended, the row is
			// unchanged.
			time.Sleep(time.Until(start.Add(sleep + time.Second)))
			if v := value(1); v != 0 {
				t.Fatalf("v = %d after the session ended: the UPDATE committed", v)
			}

			var got *sessionlog.Event
			for _, ev := range rec.all() {
				if ev.Statement == query {
					got = &ev
				}
			}
			if got == nil || got.Outcome != OutcomeCancelled || got.ErrorCode != "57014" {
				t.Errorf("the UPDATE was recorded as %+v, want outcome %q with 57014", got, OutcomeCancelled)
			}
			evs := rec.all()
			if last := evs[len(evs)-1]; last.Kind != sessionlog.KindDisconnect || last.Outcome != OutcomeTerminated ||
				last.ErrorCode != tunnel.EndTerminated || last.ErrorMsg != terminatedMessage {
				t.Errorf("last event %+v, want a disconnect with the end's reason", last)
			}
		})
	}
}

// TestEndWithoutRecorder ends a session that records nothing, while an
// UPDATE sleeps: with no observer to see the cancel's answer, the engine
// terminates the backend, and the UPDATE never commits.
func TestEndWithoutRecorder(t *testing.T) {
	db := testenv.SharedPostgres(t)
	value := counterTable(t, db, 1)
	cfg := accountConfig(db, db.Cluster.TLSUser, verifiedTLS(db))
	log, rec := newLogger(t, cfg.Password)
	sess := common.NewSession("no-recorder")
	p := startProxy(t, newEngine(t, WithLogger(log)), sess, cfg)
	conn := p.connect(t, "")
	ctx := testContext(t)

	query := "UPDATE t SET v = v + 1 WHERE id = 1 AND pg_sleep(4) IS NOT NULL"
	start := time.Now()
	errc := make(chan error, 1)
	go func() {
		_, err := conn.Exec(ctx, query)
		errc <- err
	}()
	pid := waitForActive(t, db, query)
	endSession(sess)
	if err := <-errc; err == nil {
		t.Fatal("the UPDATE succeeded")
	}
	if n := rec.count("terminated the backend of an ending session"); n != 1 {
		t.Errorf("%d backends terminated, want 1", n)
	}
	if isActive(t, db, pid) {
		t.Error("the backend still runs")
	}
	time.Sleep(time.Until(start.Add(5 * time.Second)))
	if v := value(1); v != 0 {
		t.Fatalf("v = %d after the session ended: the UPDATE committed", v)
	}
}

// TestEndReleasesLocks ends a session whose transaction holds a row lock:
// the transaction is rolled back and another connection gets the lock.
func TestEndReleasesLocks(t *testing.T) {
	db := testenv.SharedPostgres(t)
	value := counterTable(t, db, 2)
	cfg := accountConfig(db, db.Cluster.SCRAMUser, tunnel.TLS{})
	p, rec := startRecording(t, db, cfg)
	conn := p.connect(t, "")
	ctx := testContext(t)

	tx, err := conn.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(ctx, "UPDATE t SET v = v + 1 WHERE id = 2"); err != nil {
		t.Fatal(err)
	}
	endSession(p.sess)

	other, err := pgx.Connect(ctx, db.SuperURL())
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close(context.Background())
	if _, err := other.Exec(ctx, "SET lock_timeout = '5s'"); err != nil {
		t.Fatal(err)
	}
	if _, err := other.Exec(ctx, "UPDATE t SET v = v + 10 WHERE id = 2"); err != nil {
		t.Fatalf("the row lock outlived the session: %v", err)
	}
	if v := value(2); v != 10 {
		t.Errorf("v = %d, want 10: the ended transaction was not rolled back", v)
	}
	// The idle client has been told why: it reads it without sending
	// anything (a write to the closed connection could reset it first).
	_, err = conn.PgConn().ReceiveMessage(ctx)
	checkGoodbye(t, err, terminatedMessage)
	for _, ev := range rec.all() {
		if ev.Outcome == OutcomeUnknown || ev.Outcome == "aborted" {
			t.Errorf("event %+v: nothing was running", ev)
		}
	}
}

// TestEndUpdatesMaskPatterns changes the project's mask patterns of a live
// session: the next statement is recorded with them.
func TestEndUpdatesMaskPatterns(t *testing.T) {
	db := testenv.SharedPostgres(t)
	cfg := accountConfig(db, db.Cluster.SCRAMUser, tunnel.TLS{})
	p, rec := startRecording(t, db, cfg)
	conn := p.connect(t, "")
	ctx := testContext(t)

	if _, err := conn.Exec(ctx, "SELECT 'card-1234'"); err != nil {
		t.Fatal(err)
	}
	p.sess.SetMaskPatterns([]*regexp.Regexp{regexp.MustCompile(`card-\d+`)})
	if _, err := conn.Exec(ctx, "SELECT 'card-5678'", pgx.QueryExecModeSimpleProtocol); err != nil {
		t.Fatal(err)
	}
	if _, err := conn.Exec(ctx, "SELECT $1::text", "card-9999"); err != nil {
		t.Fatal(err)
	}
	var all []string
	for _, ev := range rec.all() {
		all = append(all, ev.Statement+" "+strings.Join(ev.Params, ","))
	}
	joined := strings.Join(all, "\n")
	if !strings.Contains(joined, "card-1234") {
		t.Errorf("the statement before the change was masked:\n%s", joined)
	}
	if strings.Contains(joined, "card-5678") || strings.Contains(joined, "card-9999") {
		t.Errorf("a statement after the change was not masked:\n%s", joined)
	}
}

// TestEndClientKeepsSending ends a session whose client ignores the FATAL
// and keeps sending: its connection is closed all the same.
func TestEndClientKeepsSending(t *testing.T) {
	db := testenv.SharedPostgres(t)
	cfg := accountConfig(db, db.Cluster.SCRAMUser, tunnel.TLS{})
	p, _ := startRecording(t, db, cfg)
	fe, conn := rawConnect(t, p)

	stop := make(chan struct{})
	sent := make(chan error, 1)
	go func() {
		q, _ := (&pgproto3.Query{String: "SELECT 1"}).Encode(nil)
		for {
			select {
			case <-stop:
				sent <- nil
				return
			default:
			}
			if _, err := conn.Write(q); err != nil {
				sent <- err
				return
			}
		}
	}()
	defer close(stop)
	endSession(p.sess)
	if err := p.nextResult(t); !errors.Is(err, ErrSessionClosed) {
		t.Errorf("Serve returned %v, want ErrSessionClosed", err)
	}
	// The client reads what it was sent, then the end of the connection.
	_ = conn.SetReadDeadline(time.Now().Add(testTimeout))
	for {
		msg, err := fe.Receive()
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				t.Fatal("the connection stays open")
			}
			break
		}
		if e, ok := msg.(*pgproto3.ErrorResponse); ok && e.Code != "57P01" {
			t.Errorf("unexpected error %s %s", e.Code, e.Message)
		}
	}
	select {
	case err := <-sent:
		if err == nil {
			t.Fatal("the client could write until the test stopped it")
		}
	case <-time.After(testTimeout):
		t.Fatal("the client can still write")
	}
}

// TestEndDuringLargeResult ends a session while a large result streams to
// the client: the rows stop at a message boundary and the client reads the
// goodbye as the query's error, not a broken stream.
func TestEndDuringLargeResult(t *testing.T) {
	db := testenv.SharedPostgres(t)
	cfg := accountConfig(db, db.Cluster.SCRAMUser, verifiedTLS(db))
	p, rec := startRecording(t, db, cfg)
	conn := p.connect(t, "")
	ctx := testContext(t)

	const query = "SELECT repeat('x', 1000) FROM generate_series(1, 10000000)"
	rows, err := conn.Query(ctx, query)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for rows.Next() {
		n++
		if n == 1000 {
			go endSession(p.sess)
		}
	}
	checkGoodbye(t, rows.Err(), terminatedMessage)
	if n >= 10000000 {
		t.Fatal("the whole result arrived")
	}
	for _, ev := range rec.all() {
		if ev.Statement == query && ev.Outcome != OutcomeCancelled && ev.Outcome != OutcomeUnknown {
			t.Errorf("the query was recorded as %q", ev.Outcome)
		}
	}
}

// TestEndDuringCopyIn ends a session in the middle of a COPY FROM STDIN:
// none of the rows sent so far is committed, and the client is told why.
func TestEndDuringCopyIn(t *testing.T) {
	db := testenv.SharedPostgres(t)
	counterTable(t, db)
	cfg := accountConfig(db, db.Cluster.SCRAMUser, tunnel.TLS{})
	p, rec := startRecording(t, db, cfg)
	conn := p.connect(t, "")
	ctx := testContext(t)

	pr, pw := io.Pipe()
	defer pw.Close()
	errc := make(chan error, 1)
	go func() {
		_, err := conn.PgConn().CopyFrom(ctx, pr, "COPY t FROM STDIN")
		errc <- err
	}()
	for i := range 1000 {
		if _, err := fmt.Fprintf(pw, "%d\t%d\n", i, i); err != nil {
			t.Fatal(err)
		}
	}
	// The rows have reached the server once it holds them in its COPY.
	waitForActive(t, db, "COPY t FROM STDIN")
	endSession(p.sess)
	checkGoodbye(t, <-errc, terminatedMessage)

	superConn, err := pgx.Connect(ctx, db.SuperURL())
	if err != nil {
		t.Fatal(err)
	}
	defer superConn.Close(context.Background())
	var n int
	if err := superConn.QueryRow(ctx, "SELECT count(*) FROM t").Scan(&n); err != nil {
		t.Fatal(err)
	}
	if n != 0 {
		t.Errorf("%d rows of the ended COPY were committed", n)
	}
	for _, ev := range rec.all() {
		if ev.Statement == "COPY t FROM STDIN" && ev.Outcome != OutcomeCancelled && ev.Outcome != OutcomeUnknown {
			t.Errorf("the COPY was recorded as %q", ev.Outcome)
		}
	}
}
