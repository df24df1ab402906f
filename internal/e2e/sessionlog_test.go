package e2e_test

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	_ "modernc.org/sqlite"

	"github.com/airlockpam/airlock/internal/e2e"
	"github.com/airlockpam/airlock/internal/testenv"
)

type logEvent struct {
	Seq        int64    `json:"seq"`
	Kind       string   `json:"kind"`
	ConnID     string   `json:"connId"`
	Statement  string   `json:"statement"`
	Params     []string `json:"params"`
	Outcome    string   `json:"outcome"`
	ErrorCode  string   `json:"errorCode"`
	Rows       int64    `json:"rows"`
	Bytes      int64    `json:"bytes"`
	DurationUS int64    `json:"durationUs"`
}

// logs reads a session's whole log as the admin.
func (w *world) logs(id string) []logEvent {
	w.t.Helper()
	out := w.admin.Must("", "sessions", "logs", id, "--output", "json")
	var evs []logEvent
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		if line == "" {
			continue
		}
		var e logEvent
		if err := json.Unmarshal([]byte(line), &e); err != nil {
			w.t.Fatalf("log line %q: %v", line, err)
		}
		evs = append(evs, e)
	}
	return evs
}

// waitLogs polls until pred holds for the session's log.
func (w *world) waitLogs(id string, timeout time.Duration, pred func([]logEvent) bool) []logEvent {
	w.t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		evs := w.logs(id)
		if pred(evs) {
			return evs
		}
		if time.Now().After(deadline) {
			w.t.Fatalf("session log never reached the expected state; it has %d events", len(evs))
		}
		time.Sleep(300 * time.Millisecond)
	}
}

func statements(evs []logEvent, kind string) []string {
	var out []string
	for _, e := range evs {
		if e.Kind == kind {
			out = append(out, e.Statement)
		}
	}
	return out
}

func TestSessionLogRecordsMasksAndVerifies(t *testing.T) {
	w := newWorld(t)
	ctx := context.Background()
	w.account("app", w.pg.SCRAMUser)
	w.admin.Must("", "projects", "update", w.project, "--log-mask-pattern", `card=\d{12,19}`)
	p, url := w.access(w.admin, "app")
	id := sessionIDRE.FindStringSubmatch(p.Stdout())[1]
	follow := w.admin.Start("sessions", "logs", id, "--follow")
	c := connect(t, url)

	if _, err := c.Exec(ctx, "SELECT 1 AS one", pgx.QueryExecModeSimpleProtocol); err != nil {
		t.Fatal(err)
	}
	var n int
	if err := c.QueryRow(ctx, "SELECT $1::int * 2", 21).Scan(&n); err != nil {
		t.Fatal(err)
	}
	c.Exec(ctx, "SELECT * FROM missing_table", pgx.QueryExecModeSimpleProtocol)
	if _, err := c.Exec(ctx, fmt.Sprintf("ALTER ROLE %s PASSWORD '%s'", w.pg.SCRAMUser.User, w.pg.SCRAMUser.Password)); err != nil {
		t.Fatal(err)
	}
	c.Exec(ctx, "SELECT 'card=4111111111111111' AS note", pgx.QueryExecModeSimpleProtocol)
	rows := [][]any{{1, "a"}, {2, "b"}, {3, "c"}}
	if _, err := c.CopyFrom(ctx, pgx.Identifier{"items"}, []string{"id", "name"}, pgx.CopyFromRows(rows)); err != nil {
		t.Fatal(err)
	}
	// A pipelined batch: 100 statements and one Sync; statement 9 fails, so
	// PostgreSQL skips the rest of the pipeline until the Sync.
	batch := &pgx.Batch{}
	for i := 0; i < 100; i++ {
		if i%10 == 9 {
			batch.Queue(fmt.Sprintf("SELECT %d / 0", i))
		} else {
			batch.Queue(fmt.Sprintf("SELECT %d", i))
		}
	}
	c.SendBatch(ctx, batch).Close()

	// --follow prints events as they come.
	follow.WaitLine(t, regexp.MustCompile(`missing_table`), 30*time.Second)

	evs := w.waitLogs(id, 30*time.Second, func(evs []logEvent) bool {
		for _, e := range evs {
			if strings.Contains(e.Statement, "SELECT 99") {
				return true
			}
		}
		return false
	})
	byStmt := map[string]logEvent{}
	for _, e := range evs {
		byStmt[e.Statement] = e
	}
	if e := byStmt["SELECT 1 AS one"]; e.Kind != "query" || e.Outcome != "SELECT 1" || e.Rows != 1 {
		t.Errorf("simple query: %+v", e)
	}
	if e := byStmt["SELECT $1::int * 2"]; e.Kind != "execute" || len(e.Params) != 1 || e.Params[0] != "21" || e.Outcome != "SELECT 1" {
		t.Errorf("extended query: %+v", e)
	}
	if e := byStmt["SELECT * FROM missing_table"]; e.ErrorCode != "42P01" {
		t.Errorf("failed query: %+v", e)
	}
	raw := w.admin.Must("", "sessions", "logs", id, "--output", "json")
	if strings.Contains(raw, w.pg.SCRAMUser.Password) || strings.Contains(raw, "4111111111111111") {
		t.Fatalf("the session log holds a password or a masked value:\n%s", raw)
	}
	masked := false
	for _, e := range evs {
		masked = masked || (strings.HasPrefix(e.Statement, "ALTER ROLE") && strings.Contains(e.Statement, "***"))
	}
	if !masked {
		t.Errorf("no masked ALTER ROLE event: %v", statements(evs, "execute"))
	}
	copyIn := false
	for _, e := range evs {
		copyIn = copyIn || (e.Kind == "copy_in" && e.Bytes > 0)
	}
	if !copyIn {
		t.Errorf("no copy_in event with its byte count")
	}
	// The batch: 100 events in order, each with its own outcome.
	var got []string
	for _, e := range evs {
		if strings.HasPrefix(e.Statement, "SELECT ") && (strings.HasSuffix(e.Statement, " / 0") || !strings.ContainsAny(e.Statement[7:], " $*'")) && e.Kind == "execute" {
			outcome := e.Outcome
			if e.ErrorCode != "" {
				outcome = e.ErrorCode
			}
			got = append(got, e.Statement+"="+outcome)
		}
	}
	if len(got) != 100 {
		t.Fatalf("batch events: %d: %v", len(got), got)
	}
	for i, g := range got {
		want := fmt.Sprintf("SELECT %d=SELECT 1", i)
		switch {
		case i == 9:
			want = "SELECT 9 / 0=22012"
		case i > 9 && i%10 == 9:
			want = fmt.Sprintf("SELECT %d / 0=skipped", i)
		case i > 9:
			want = fmt.Sprintf("SELECT %d=skipped", i)
		}
		if g != want {
			t.Errorf("batch event %d: %s, want %s", i, g, want)
		}
	}

	// Verify: whole; then remove one event and alter another in the store.
	if out := w.admin.Must("", "sessions", "verify", id); !strings.Contains(out, "whole") {
		t.Fatalf("verify: %s", out)
	}
	db, err := sql.Open("sqlite", "file:"+filepath.Join(w.srv.DataDir, "airlock.db")+"?_pragma=busy_timeout(10000)")
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if _, err := db.Exec(`UPDATE session_events SET payload_enc = (SELECT payload_enc FROM session_events WHERE session_id = $1 AND seq = 3) WHERE session_id = $1 AND seq = 5`, id); err != nil {
		t.Fatal(err)
	}
	_, errOut, code := w.admin.Run("", "sessions", "verify", id)
	if code == 0 || !strings.Contains(errOut, "event 5 was altered") {
		t.Fatalf("altered event: exit %d %s", code, errOut)
	}
	if _, err := db.Exec(`DELETE FROM session_events WHERE session_id = $1 AND seq = 2`, id); err != nil {
		t.Fatal(err)
	}
	_, errOut, code = w.admin.Run("", "sessions", "verify", id)
	if code == 0 || !strings.Contains(errOut, "event 2 was removed") {
		t.Fatalf("removed event: exit %d %s", code, errOut)
	}
	p.Stop(syscall.SIGINT)
	if code := follow.Wait(t, 30*time.Second); code != 0 {
		t.Fatalf("logs --follow did not end with the session: %d", code)
	}
}

func TestSessionLogSurvivesStoreOutageAndGatewayKill(t *testing.T) {
	// The server's store is its own PostgreSQL, with synchronous commit so
	// that a stop loses nothing it reported as committed.
	storePG := testenv.StartPostgres(t, testenv.WithPostgresSetting("synchronous_commit", "on"))
	w := newWorldOn(t, "AIRLOCK_DATABASE_URL="+storePG.SuperURL(testenv.AppDatabase))
	ctx := context.Background()
	w.account("app", w.pg.SCRAMUser)
	p, url := w.access(w.admin, "app")
	id := sessionIDRE.FindStringSubmatch(p.Stdout())[1]
	c := connect(t, url)

	// 1. The store is down for 30 seconds while 1,000 queries run.
	if err := storePG.Stop(); err != nil {
		t.Fatal(err)
	}
	down := time.Now()
	for i := 0; i < 1000; i++ {
		if _, err := c.Exec(ctx, fmt.Sprintf("SELECT %d AS outage", i), pgx.QueryExecModeSimpleProtocol); err != nil {
			t.Fatalf("query %d during the outage: %v", i, err)
		}
	}
	// 2. While it is still down, the gateway is killed; its spool is on disk.
	time.Sleep(time.Second)
	w.gw.Stop(syscall.SIGKILL)
	time.Sleep(time.Until(down.Add(30 * time.Second)))
	if err := storePG.Start(); err != nil {
		t.Fatal(err)
	}
	w.gw = e2e.Start(t, nil, "gateway", "--data-dir", w.gwDir)

	evs := w.waitLogs(id, 90*time.Second, func(evs []logEvent) bool { return len(statements(evs, "query")) >= 1000 })
	count := map[string]int{}
	for _, s := range statements(evs, "query") {
		count[s]++
	}
	for i := 0; i < 1000; i++ {
		if n := count[fmt.Sprintf("SELECT %d AS outage", i)]; n != 1 {
			t.Errorf("query %d is in the log %d times", i, n)
		}
	}
	if out := w.admin.Must("", "sessions", "verify", id); !strings.Contains(out, "whole") {
		t.Fatalf("verify: %s", out)
	}
}
