package e2e_test

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/airlockpam/airlock/internal/e2e"
)

// crashEvent is an event of `airlock sessions logs --output json`, with
// the fields the crash test reads.
type crashEvent struct {
	ID        string   `json:"id"`
	StartID   string   `json:"startId"`
	Kind      string   `json:"kind"`
	Statement string   `json:"statement"`
	Params    []string `json:"params"`
	Outcome   string   `json:"outcome"`
	ErrorMsg  string   `json:"errorMessage"`
}

// crashStatements is how many statements TestCrashLosesNoAnsweredStatement
// runs before it kills the gateway.
const crashStatements = 1200

// TestCrashLosesNoAnsweredStatement: `kill -9` of the gateway right after
// its client got the answers to N statements (simple queries, and INSERTs
// through the extended protocol with bound values), then a restart on the
// same data directory: the session log holds every one of the N, as its
// final event, or, for those whose answer the gateway had not yet written,
// as its start record with outcome "outcome unknown". None is missing
// (issue 13, write-ahead session events).
func TestCrashLosesNoAnsweredStatement(t *testing.T) {
	w := newWorld(t)
	ctx := context.Background()
	w.account("app", w.pg.SCRAMUser)
	p, url := w.access(w.admin, "app")
	id := sessionIDRE.FindStringSubmatch(p.Stdout())[1]
	c := connect(t, url)

	// What the log must hold for statement i: its text, and for an INSERT
	// the value bound to its name.
	const insert = "INSERT INTO items (id, name) VALUES ($1, $2)"
	isInsert := func(i int) bool { return i%4 == 3 }
	for i := range crashStatements {
		var err error
		if isInsert(i) {
			_, err = c.Exec(ctx, insert, 100_000+i, fmt.Sprintf("crash-%d", i))
		} else {
			_, err = c.Exec(ctx, fmt.Sprintf("SELECT %d AS crash", i), pgx.QueryExecModeSimpleProtocol)
		}
		if err != nil {
			t.Fatalf("statement %d: %v", i, err)
		}
	}
	// Every statement was answered: kill the gateway at once, before its
	// spool's next batch is written.
	w.gw.Stop(syscall.SIGKILL)
	w.gw = e2e.Start(t, nil, "gateway", "--data-dir", w.gwDir)

	keyOf := func(e crashEvent) (int, bool) {
		var i int
		switch {
		case e.Kind == "query" && strings.HasSuffix(e.Statement, " AS crash"):
			if _, err := fmt.Sscanf(e.Statement, "SELECT %d AS crash", &i); err != nil {
				return 0, false
			}
		case e.Kind == "execute" && e.Statement == insert && len(e.Params) == 2:
			if _, err := fmt.Sscanf(e.Params[1], "crash-%d", &i); err != nil {
				return 0, false
			}
		default:
			return 0, false
		}
		return i, true
	}
	var evs []crashEvent
	found := map[int][]crashEvent{}
	deadline := time.Now().Add(90 * time.Second)
	for {
		evs = crashLogs(t, w, id)
		clear(found)
		for _, e := range evs {
			if i, ok := keyOf(e); ok {
				found[i] = append(found[i], e)
			}
		}
		if len(found) >= crashStatements || time.Now().After(deadline) {
			break
		}
		time.Sleep(500 * time.Millisecond)
	}
	unknown := 0
	var missing []int
	for i := range crashStatements {
		got := found[i]
		if len(got) == 0 {
			missing = append(missing, i)
			continue
		}
		// One event per statement: its final one, or its start as
		// "outcome unknown"; never both, never a start left "running".
		if len(got) != 1 {
			t.Errorf("statement %d is in the log %d times: %+v", i, len(got), got)
			continue
		}
		e := got[0]
		switch {
		case e.Outcome == "outcome unknown":
			unknown++
			if !strings.Contains(e.ErrorMsg, "gateway stopped") {
				t.Errorf("statement %d: outcome unknown without saying why: %+v", i, e)
			}
		case isInsert(i) && e.Outcome != "INSERT 0 1", !isInsert(i) && e.Outcome != "SELECT 1":
			t.Errorf("statement %d: outcome %q: %+v", i, e.Outcome, e)
		case e.StartID == "" || e.StartID == e.ID:
			// The server keeps the final event's link to its start.
			t.Errorf("statement %d: the final event names no start record: %+v", i, e)
		}
		if isInsert(i) && e.Params[0] != fmt.Sprint(100_000+i) {
			t.Errorf("statement %d: bound values %q", i, e.Params)
		}
	}
	if len(missing) > 0 {
		t.Fatalf("%d of %d answered statements are missing from the session log after kill -9 (%d events in it): %v",
			len(missing), crashStatements, len(evs), missing[:min(len(missing), 20)])
	}
	t.Logf("%d statements in the log after kill -9; %d of them as outcome unknown", crashStatements, unknown)
	if out := w.admin.Must("", "sessions", "verify", id); !strings.Contains(out, "whole") {
		t.Fatalf("verify: %s", out)
	}
}

// crashLogs reads a session's whole log as the admin.
func crashLogs(t *testing.T, w *world, id string) []crashEvent {
	t.Helper()
	out := w.admin.Must("", "sessions", "logs", id, "--output", "json")
	var evs []crashEvent
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		if line == "" {
			continue
		}
		var e crashEvent
		if err := json.Unmarshal([]byte(line), &e); err != nil {
			t.Fatalf("log line %q: %v", line, err)
		}
		evs = append(evs, e)
	}
	return evs
}
