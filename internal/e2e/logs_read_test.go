package e2e_test

import (
	"context"
	"encoding/json"
	"fmt"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// logRows returns the rows of `sessions logs` text output after its header,
// each with the lines under it (indented), and the header's STATEMENT
// column (in runes).
func logRows(t *testing.T, out string) (rows [][]string, col int) {
	t.Helper()
	lines := strings.Split(strings.TrimRight(out, "\n"), "\n")
	col = strings.Index(lines[0], "STATEMENT")
	if col < 0 {
		t.Fatalf("no header in:\n%s", out)
	}
	for _, l := range lines[1:] {
		if strings.HasPrefix(l, strings.Repeat(" ", col)) && len(rows) > 0 {
			rows[len(rows)-1] = append(rows[len(rows)-1], l)
			continue
		}
		rows = append(rows, []string{l})
	}
	return rows, col
}

// statementAt returns what a line holds from the STATEMENT column on.
func statementAt(line string, col int) string {
	r := []rune(line)
	if len(r) < col {
		return ""
	}
	return string(r[col:])
}

// TestSessionLogsReadWell runs two connections of one session and reads the
// log with `airlock sessions logs` and its filters: the columns line up,
// each connection has its own number, a multi-line statement keeps its
// lines under the STATEMENT column, a failed multi-statement query lists
// the tags of the statements that ran before the error, and each filter
// keeps what it says.
func TestSessionLogsReadWell(t *testing.T) {
	w := newWorld(t)
	ctx := context.Background()
	w.account("app", w.pg.SCRAMUser)
	p, url := w.access(w.admin, "app")
	id := sessionOf(t, p)
	c1 := connect(t, url)
	c2 := connect(t, url)
	simple := pgx.QueryExecModeSimpleProtocol
	if _, err := c1.Exec(ctx, "SELECT 1 AS first", simple); err != nil {
		t.Fatal(err)
	}
	if _, err := c2.Exec(ctx, "SELECT 2 AS second", simple); err != nil {
		t.Fatal(err)
	}
	time.Sleep(1100 * time.Millisecond) // --since below falls between
	mid := time.Now()
	if _, err := c1.Exec(ctx, "SELECT 1; SELECT 2; SELECT x_missing;", simple); err == nil {
		t.Fatal("x_missing exists")
	}
	if _, err := c2.Exec(ctx, "SELECT\n  3 AS third", simple); err != nil {
		t.Fatal(err)
	}
	evs := w.waitLogs(id, 30*time.Second, func(evs []logEvent) bool {
		return slices.Contains(statements(evs, "query"), "SELECT\n  3 AS third")
	})

	// The event of the failed multi-statement query.
	for _, e := range evs {
		if e.Statement == "SELECT 1; SELECT 2; SELECT x_missing;" &&
			(e.Outcome != "error after SELECT 1; SELECT 1" || e.ErrorCode != "42703" || e.Rows != 2) {
			t.Errorf("multi-statement query: %+v, want outcome %q, 42703, 2 rows", e, "error after SELECT 1; SELECT 1")
		}
	}

	out := w.admin.Must("", "sessions", "logs", id)
	t.Logf("sessions logs:\n%s", out)
	rows, col := logRows(t, out)
	row := func(stmt string) []string {
		t.Helper()
		for _, r := range rows {
			if statementAt(r[0], col) == stmt {
				return r
			}
		}
		t.Fatalf("no row whose STATEMENT is %q in:\n%s", stmt, out)
		return nil
	}
	for _, r := range rows {
		if s := statementAt(r[0], col); s == "" || strings.HasPrefix(s, " ") || []rune(r[0])[col-1] != ' ' {
			t.Errorf("row %q: its STATEMENT does not start at column %d", r[0], col)
		}
	}
	conn := func(r []string) string { return strings.Fields(r[0])[3] }
	if a, b := conn(row("SELECT 1 AS first")), conn(row("SELECT 2 AS second")); a != "#1" || b != "#2" {
		t.Errorf("the connections print as %s and %s, want #1 and #2", a, b)
	}
	if r := row("SELECT 1; SELECT 2; SELECT x_missing;"); !strings.Contains(r[0], "error after SELECT 1; SELECT 1 (42703)") ||
		len(r) < 2 || statementAt(r[1], col) != `-- column "x_missing" does not exist` || conn(r) != "#1" {
		t.Errorf("the failed multi-statement query prints as %q", r)
	}
	if r := row("SELECT"); len(r) != 2 || statementAt(r[1], col) != "  3 AS third" || conn(r) != "#2" {
		t.Errorf("the multi-line statement prints as %q", r)
	}

	// The filters.
	stmtsOf := func(args ...string) []string {
		t.Helper()
		out := w.admin.Must("", append([]string{"sessions", "logs", id}, args...)...)
		if strings.TrimSpace(out) == "(no events)" {
			return nil
		}
		rows, col := logRows(t, out)
		var got []string
		for _, r := range rows {
			got = append(got, strings.Fields(r[0])[3]+" "+strings.Fields(r[0])[4]+" "+statementAt(r[0], col))
		}
		return got
	}
	check := func(name string, got []string, want ...string) {
		t.Helper()
		if strings.Join(got, "\n") != strings.Join(want, "\n") {
			t.Errorf("%s:\n%s\nwant\n%s", name, strings.Join(got, "\n"), strings.Join(want, "\n"))
		}
	}
	connect1 := "#1 connect user=" + w.pg.SCRAMUser.User + " database=app"
	connect2 := "#2 connect user=" + w.pg.SCRAMUser.User + " database=app"
	check("--conn #2", stmtsOf("--conn", "#2"), connect2, "#2 query SELECT 2 AS second", "#2 query SELECT")
	check("--conn 1", stmtsOf("--conn", "1", "--kind", "query"), "#1 query SELECT 1 AS first", "#1 query SELECT 1; SELECT 2; SELECT x_missing;")
	check("--kind connect", stmtsOf("--kind", "connect"), connect1, connect2)
	check("--errors", stmtsOf("--errors"), "#1 query SELECT 1; SELECT 2; SELECT x_missing;")
	check("--tail 2", stmtsOf("--tail", "2"), "#1 query SELECT 1; SELECT 2; SELECT x_missing;", "#2 query SELECT")
	check("--tail 1 --conn #1", stmtsOf("--tail", "1", "--conn", "#1"), "#1 query SELECT 1; SELECT 2; SELECT x_missing;")
	check("--since", stmtsOf("--since", mid.UTC().Format(time.RFC3339Nano)), "#1 query SELECT 1; SELECT 2; SELECT x_missing;", "#2 query SELECT")
	check("--since 10m --kind query --conn #2", stmtsOf("--since", "10m", "--kind", "query", "--conn", "#2"),
		"#2 query SELECT 2 AS second", "#2 query SELECT")
	check("--since 1s after the end", stmtsOf("--since", time.Now().Add(time.Second).UTC().Format(time.RFC3339)))
	if _, e, code := w.admin.Run("", "sessions", "logs", id, "--conn", "#3"); code == 0 || !strings.Contains(e, "no connection #3 (it has 2)") {
		t.Errorf("--conn #3: exit %d %s", code, e)
	}
	// The JSON output is filtered alike.
	jsonOut := w.admin.Must("", "sessions", "logs", id, "--errors", "--output", "json")
	var ev logEvent
	if lines := strings.Split(strings.TrimSpace(jsonOut), "\n"); len(lines) != 1 || json.Unmarshal([]byte(lines[0]), &ev) != nil || ev.ErrorCode != "42703" {
		t.Errorf("--errors --output json: %s", jsonOut)
	}
}

// TestSessionLogsDisconnectOnTerminateAndExpiry: a connection ended by its
// session's end has the same disconnect outcome, terminated, whether an
// admin terminated the session or it expired; the reason is the event's
// code and the client's words its message.
func TestSessionLogsDisconnectOnTerminateAndExpiry(t *testing.T) {
	w := newWorld(t)
	w.account("app", w.pg.SCRAMUser)
	pe, urlE := w.access(w.admin, "app", "--duration", "10s")
	expiring := sessionOf(t, pe)
	pt, urlT := w.access(w.admin, "app")
	terminated := sessionOf(t, pt)
	connect(t, urlE)
	connect(t, urlT)
	w.admin.Must("", "sessions", "terminate", terminated)
	w.svWaitEnded(expiring, 60*time.Second)
	for _, tc := range []struct{ id, reason, message string }{
		{terminated, "terminated", "session terminated by an administrator"},
		{expiring, "expired", "session expired at "},
	} {
		evs := w.waitLogs(tc.id, 30*time.Second, func(evs []logEvent) bool {
			return slices.ContainsFunc(evs, func(e logEvent) bool { return e.Kind == "disconnect" })
		})
		for _, e := range evs {
			if e.Kind == "disconnect" && (e.Outcome != "terminated" || e.ErrorCode != tc.reason) {
				t.Errorf("%s: disconnect %+v, want outcome terminated with code %s", tc.reason, e, tc.reason)
			}
		}
		out := w.admin.Must("", "sessions", "logs", tc.id, "--kind", "disconnect")
		rows, col := logRows(t, out)
		if len(rows) != 1 || !strings.Contains(rows[0][0], "terminated ("+tc.reason+")") ||
			!strings.HasPrefix(statementAt(rows[0][0], col), "-- "+tc.message) {
			t.Errorf("%s: the disconnect prints as\n%s", tc.reason, out)
		}
	}
}

// TestSessionLogVisibleWithinASecond: a statement shows in `airlock
// sessions logs` shortly after its answer, and in `sessions logs --follow
// --tail 1` too. The bound is generous (20 s) so that a loaded machine cannot make
// it flake; the delays measured are logged.
func TestSessionLogVisibleWithinASecond(t *testing.T) {
	w := newWorld(t)
	ctx := context.Background()
	w.account("app", w.pg.SCRAMUser)
	p, url := w.access(w.admin, "app")
	id := sessionOf(t, p)
	c := connect(t, url)
	follow := w.admin.Start("sessions", "logs", id, "--follow", "--tail", "1") // the connect, then what comes
	var polled, followed []time.Duration
	for i := 0; i < 5; i++ {
		marker := fmt.Sprintf("visible_%d", i)
		if _, err := c.Exec(ctx, "SELECT 1 AS "+marker, pgx.QueryExecModeSimpleProtocol); err != nil {
			t.Fatal(err)
		}
		answered := time.Now()
		for !strings.Contains(w.admin.Must("", "sessions", "logs", id, "--tail", "5"), marker) {
			if time.Since(answered) > 20*time.Second {
				t.Fatalf("statement %d not in the log 20 s after its answer", i)
			}
			time.Sleep(20 * time.Millisecond)
		}
		polled = append(polled, time.Since(answered))
		follow.WaitLine(t, regexp.MustCompile(marker), 20*time.Second)
		followed = append(followed, time.Since(answered))
		time.Sleep(time.Duration(300*i) * time.Millisecond) // idle a little, as a person does
	}
	slices.Sort(polled)
	slices.Sort(followed)
	t.Logf("a statement showed in `sessions logs` %v after its answer (median %v), in --follow by %v",
		polled, polled[len(polled)/2], followed)
}
