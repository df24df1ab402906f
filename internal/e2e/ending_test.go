package e2e_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/airlockpam/airlock/internal/testenv"
)

// TestEndingTerminateStopsTheWork terminates a session while an autocommit
// UPDATE sleeps in PostgreSQL: the client is told why, the statement is
// stopped in the database and never commits, and the session log records
// it as cancelled.
func TestEndingTerminateStopsTheWork(t *testing.T) {
	w := newWorld(t)
	counters := w.counterTable(1)
	w.account("app", w.pg.SCRAMUser)
	p, url := w.access(w.admin, "app")
	id := sessionIDRE.FindStringSubmatch(p.Stdout())[1]
	c := connect(t, url)

	query, start, errc := w.sleepingUpdate(c, 8)
	// psql, too, runs a statement of the session.
	const psqlQuery = "SELECT pg_sleep(30), 'psql'"
	psql := exec.Command("/usr/lib/postgresql/15/bin/psql", "-X", "-c", psqlQuery, url)
	var psqlOut strings.Builder
	psql.Stdout, psql.Stderr = &psqlOut, &psqlOut
	if err := psql.Start(); err != nil {
		t.Fatal(err)
	}
	psqlDone := make(chan error, 1)
	go func() { psqlDone <- psql.Wait() }()
	w.waitForActive(psqlQuery)
	w.admin.Must("", "sessions", "terminate", id)

	err := waitErr(t, errc)
	checkGoodbye(t, err, "terminated by an administrator")
	select {
	case err := <-psqlDone:
		if err == nil || !strings.Contains(psqlOut.String(), "FATAL:  airlock: session terminated by an administrator") {
			t.Errorf("psql: %v, output %q; want the FATAL of the termination", err, psqlOut.String())
		}
	case <-time.After(60 * time.Second):
		_ = psql.Process.Kill()
		t.Error("psql still runs after the termination")
	}
	if n := w.activeCount(query); n != 0 {
		t.Errorf("%d backends still run the UPDATE after the session ended", n)
	}
	// Past the moment the sleep would have ended, the row is unchanged.
	time.Sleep(time.Until(start.Add(9 * time.Second)))
	if v := counters(1); v != 0 {
		t.Fatalf("v = %d: the UPDATE of the terminated session committed", v)
	}
	if code := p.Wait(t, 20*time.Second); code == 0 {
		t.Errorf("db access exited 0 after termination")
	}
	w.waitOutcome(id, query, "cancelled")
}

// TestEndingExpiryStopsTheWork lets a session expire while one connection
// runs an autocommit UPDATE that sleeps past the expiry and another holds a
// row lock in an open transaction: neither survives the session. The
// UPDATE never commits and the lock is released.
func TestEndingExpiryStopsTheWork(t *testing.T) {
	w := newWorld(t)
	counters := w.counterTable(1, 2)
	w.account("app", w.pg.SCRAMUser)
	p, url := w.access(w.admin, "app", "--duration", "10s")
	started := time.Now()
	id := sessionIDRE.FindStringSubmatch(p.Stdout())[1]
	busy := connect(t, url)
	locker := connect(t, url)
	ctx := context.Background()

	tx, err := locker.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(ctx, "UPDATE counters SET v = v + 1 WHERE id = 2"); err != nil {
		t.Fatal(err)
	}
	query, _, errc := w.sleepingUpdate(busy, 15)

	err = waitErr(t, errc)
	checkGoodbye(t, err, "expired")
	t.Logf("the UPDATE ended %s after the session started", time.Since(started).Round(time.Millisecond))

	// The lock is free: another connection takes it at once.
	super, err := pgx.Connect(ctx, w.pg.SuperURL(testenv.AppDatabase))
	if err != nil {
		t.Fatal(err)
	}
	defer super.Close(ctx)
	if _, err := super.Exec(ctx, "SET lock_timeout = '3s'"); err != nil {
		t.Fatal(err)
	}
	if _, err := super.Exec(ctx, "UPDATE counters SET v = v + 10 WHERE id = 2"); err != nil {
		t.Fatalf("the expired session's row lock is still held: %v", err)
	}
	if v := counters(2); v != 10 {
		t.Errorf("v = %d, want 10: the expired session's transaction was not rolled back", v)
	}
	// The idle locker has been told why: it reads it without sending
	// anything (a write to the closed connection could reset it first).
	_, err = locker.PgConn().ReceiveMessage(ctx)
	checkGoodbye(t, err, "expired")

	// Past the moment the sleep would have ended, the row is unchanged.
	time.Sleep(time.Until(started.Add(17 * time.Second)))
	if v := counters(1); v != 0 {
		t.Fatalf("v = %d: the UPDATE of the expired session committed", v)
	}
	p.Wait(t, 40*time.Second)
	w.waitOutcome(id, query, "cancelled")
}

// TestEndingGatewayShutdown stops the gateway while an autocommit UPDATE
// sleeps: the gateway ends its sessions first, so the statement never
// commits and the client is told why.
func TestEndingGatewayShutdown(t *testing.T) {
	w := newWorld(t)
	counters := w.counterTable(1)
	w.account("app", w.pg.SCRAMUser)
	_, url := w.access(w.admin, "app")
	c := connect(t, url)

	_, start, errc := w.sleepingUpdate(c, 8)
	w.gw.Stop(syscall.SIGTERM)

	checkGoodbye(t, waitErr(t, errc), "the gateway is shutting down")
	time.Sleep(time.Until(start.Add(9 * time.Second)))
	if v := counters(1); v != 0 {
		t.Fatalf("v = %d: the UPDATE committed after the gateway stopped", v)
	}
}

// counterTable creates counters(id, v) with a row (id, 0) for each id,
// writable by every role, and returns a function that reads v of a row as
// the superuser.
func (w *world) counterTable(ids ...int) func(id int) int {
	t := w.t
	t.Helper()
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, w.pg.SuperURL(testenv.AppDatabase))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	stmts := []string{`CREATE TABLE counters (id int PRIMARY KEY, v int NOT NULL)`, `GRANT ALL ON counters TO PUBLIC`}
	for _, id := range ids {
		stmts = append(stmts, fmt.Sprintf("INSERT INTO counters VALUES (%d, 0)", id))
	}
	for _, s := range stmts {
		if _, err := conn.Exec(ctx, s); err != nil {
			t.Fatal(err)
		}
	}
	return func(id int) int {
		t.Helper()
		conn, err := pgx.Connect(ctx, w.pg.SuperURL(testenv.AppDatabase))
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close(ctx)
		var v int
		if err := conn.QueryRow(ctx, "SELECT v FROM counters WHERE id = $1", id).Scan(&v); err != nil {
			t.Fatal(err)
		}
		return v
	}
}

// activeCount returns how many backends run query.
func (w *world) activeCount(query string) int {
	w.t.Helper()
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, w.pg.SuperURL(testenv.AppDatabase))
	if err != nil {
		w.t.Fatal(err)
	}
	defer conn.Close(ctx)
	var n int
	if err := conn.QueryRow(ctx, "SELECT count(*) FROM pg_stat_activity WHERE query = $1 AND state = 'active'", query).Scan(&n); err != nil {
		w.t.Fatal(err)
	}
	return n
}

// waitForActive waits until a backend runs query.
func (w *world) waitForActive(query string) {
	w.t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for w.activeCount(query) == 0 {
		if time.Now().After(deadline) {
			w.t.Fatalf("no backend ran %q", query)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// waitOutcome waits until the session log of session id holds statement
// with outcome.
func (w *world) waitOutcome(id, statement, outcome string) {
	w.t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	var got []string
	for time.Now().Before(deadline) {
		out := w.admin.Must("", "sessions", "logs", id, "--output", "json")
		got = got[:0]
		for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
			var ev struct{ Statement, Outcome string }
			if err := json.Unmarshal([]byte(line), &ev); err != nil {
				w.t.Fatalf("session log line %q: %v", line, err)
			}
			if ev.Statement == statement {
				got = append(got, ev.Outcome)
				if ev.Outcome == outcome {
					return
				}
			}
		}
		time.Sleep(200 * time.Millisecond)
	}
	w.t.Errorf("the session log records %q with outcomes %v, want %q", statement, got, outcome)
}

// waitErr waits for the result of a statement ended by the session's end.
func waitErr(t *testing.T, errc <-chan error) error {
	t.Helper()
	select {
	case err := <-errc:
		return err
	case <-time.After(60 * time.Second):
		t.Fatal("the statement is still running")
		return nil
	}
}

// checkGoodbye checks that err is the gateway's FATAL 57P01 and says why.
func checkGoodbye(t *testing.T, err error, why string) {
	t.Helper()
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) {
		t.Fatalf("the client got %v, want a FATAL that says %q", err, why)
	}
	if pgErr.Severity != "FATAL" || pgErr.Code != "57P01" || !strings.HasPrefix(pgErr.Message, "airlock: ") ||
		!strings.Contains(pgErr.Message, why) {
		t.Fatalf("the client got %s %s %q, want FATAL 57P01 saying %q", pgErr.Severity, pgErr.Code, pgErr.Message, why)
	}
}

// sleepingUpdate starts, on c, an autocommit UPDATE of row 1 of the
// counters table that sleeps for seconds before it can commit, and returns
// once PostgreSQL runs it: the statement, when it started, and where its
// error (or nil) arrives.
func (w *world) sleepingUpdate(c *pgx.Conn, seconds int) (string, time.Time, <-chan error) {
	query := fmt.Sprintf("UPDATE counters SET v = v + 1 WHERE id = 1 AND pg_sleep(%d) IS NOT NULL", seconds)
	start := time.Now()
	errc := make(chan error, 1)
	go func() {
		_, err := c.Exec(context.Background(), query)
		errc <- err
	}()
	w.waitForActive(query)
	return query, start, errc
}

// TestEndingCtrlCStopsTheWork: the user presses Ctrl+C in `db access`
// while an autocommit UPDATE sleeps in PostgreSQL. Ending by the user is an
// ending like any other: the statement is cancelled in the database before
// the local connections close, so it never commits, and the client is told
// why.
func TestEndingCtrlCStopsTheWork(t *testing.T) {
	w := newWorld(t)
	counters := w.counterTable(1)
	w.account("app", w.pg.SCRAMUser)
	p, url := w.access(w.admin, "app")
	id := sessionIDRE.FindStringSubmatch(p.Stdout())[1]
	c := connect(t, url)

	query, start, errc := w.sleepingUpdate(c, 8)
	p.Stop(syscall.SIGINT)

	err := waitErr(t, errc)
	checkGoodbye(t, err, "ended by its owner")
	time.Sleep(time.Until(start.Add(9 * time.Second)))
	if v := counters(1); v != 0 {
		t.Fatalf("v = %d: the UPDATE of the session its owner ended committed", v)
	}
	w.waitOutcome(id, query, "cancelled")
}
