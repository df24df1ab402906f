package session_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/airlockpam/airlock/internal/session"
	"github.com/airlockpam/airlock/internal/sessionlog"
)

// logWorld is a world whose session of bob's has a log of 30 events over
// two connections, a and b, one second apart: connect a, connect b, then
// queries taking turns (every fifth one failing), then the disconnects.
func logWorld(t *testing.T) (w *world, id, connA, connB string, base time.Time) {
	t.Helper()
	w = newWorld(t)
	store := sessionlog.NewStore(w.db, w.kr, w.clock.Now)
	w.sessions.SetEvents(store)
	id = w.start(t, w.bob, time.Hour)
	connA, connB = uuid.Must(uuid.NewV7()).String(), uuid.Must(uuid.NewV7()).String()
	base = w.clock.Now()
	var evs []sessionlog.Event
	add := func(conn, kind, stmt, outcome, code string) {
		evs = append(evs, sessionlog.Event{ID: uuid.Must(uuid.NewV7()).String(), SessionID: id, ConnID: conn, Kind: kind,
			Time: base.Add(time.Duration(len(evs)) * time.Second), Statement: stmt, Outcome: outcome, ErrorCode: code})
	}
	add(connA, sessionlog.KindConnect, "user=a", "ok", "")
	add(connB, sessionlog.KindConnect, "user=b", "ok", "")
	for i := 0; len(evs) < 28; i++ {
		conn := connA
		if i%2 == 1 {
			conn = connB
		}
		if i%5 == 4 {
			add(conn, sessionlog.KindQuery, fmt.Sprintf("SELECT %d/0", i), "error", "22012")
		} else {
			add(conn, sessionlog.KindQuery, fmt.Sprintf("SELECT %d", i), "SELECT 1", "")
		}
	}
	add(connA, sessionlog.KindDisconnect, "", "ok", "")
	add(connB, sessionlog.KindDisconnect, "", "outcome unknown", "")
	if _, err := store.Ingest(context.Background(), evs); err != nil {
		t.Fatal(err)
	}
	return w, id, connA, connB, base
}

// seqs lists the events' seq numbers.
func seqs(evs []sessionlog.Event) string {
	var b strings.Builder
	for i, e := range evs {
		if i > 0 {
			b.WriteByte(' ')
		}
		fmt.Fprint(&b, e.Seq)
	}
	return b.String()
}

func TestLogsFilters(t *testing.T) {
	w, id, connA, connB, base := logWorld(t)
	tests := []struct {
		name      string
		q         session.LogQuery
		want      string // seqs
		next      int64
		more      bool
		restrictN int // maxLogScan, 0: the default
	}{
		{"first page", session.LogQuery{Limit: 5}, "1 2 3 4 5", 5, true, 0},
		{"next page", session.LogQuery{After: 25, Limit: 5}, "26 27 28 29 30", 30, true, 0},
		{"past the end", session.LogQuery{After: 30, Limit: 5}, "", 30, false, 0},
		{"one connection", session.LogQuery{Conn: connB}, "2 4 6 8 10 12 14 16 18 20 22 24 26 28 30", 30, false, 0},
		{"one connection, a page", session.LogQuery{Conn: connA, Limit: 3}, "1 3 5", 5, true, 0},
		{"one connection, the next page", session.LogQuery{Conn: connA, After: 5, Limit: 3}, "7 9 11", 11, true, 0},
		{"kinds", session.LogQuery{Kinds: []string{"connect", "disconnect"}}, "1 2 29 30", 30, false, 0},
		{"errors", session.LogQuery{Errors: true}, "7 12 17 22 27 30", 30, false, 0},
		{"errors of a connection", session.LogQuery{Errors: true, Conn: connA}, "7 17 27", 30, false, 0},
		{"since", session.LogQuery{Since: base.Add(25 * time.Second)}, "26 27 28 29 30", 30, false, 0},
		{"since and kind", session.LogQuery{Since: base.Add(10 * time.Second), Kinds: []string{"disconnect"}}, "29 30", 30, false, 0},
		{"nothing matches", session.LogQuery{Conn: "no-such-connection"}, "", 30, false, 0},
		{"the scan stops at its bound", session.LogQuery{Kinds: []string{"disconnect"}}, "", 10, true, 10},
		{"and goes on from there", session.LogQuery{After: 10, Kinds: []string{"disconnect"}}, "29", 29, true, 19},
		{"tail", session.LogQuery{Tail: 3}, "28 29 30", 30, false, 0},
		{"tail longer than the log", session.LogQuery{Tail: 100}, seqRange(1, 30), 30, false, 0},
		{"tail after", session.LogQuery{Tail: 100, After: 27}, "28 29 30", 30, false, 0},
		{"tail of errors", session.LogQuery{Tail: 2, Errors: true}, "27 30", 30, false, 0},
		{"tail of a connection", session.LogQuery{Tail: 4, Conn: connA}, "23 25 27 29", 30, false, 0},
		{"tail of connects", session.LogQuery{Tail: 5, Kinds: []string{"connect"}}, "1 2", 30, false, 0},
		{"search a statement", session.LogQuery{Search: "/0"}, "7 12 17 22 27", 30, false, 0},
		{"search ignores case", session.LogQuery{Search: "USER=b"}, "2", 30, false, 0},
		{"search an error code", session.LogQuery{Search: "22012", Conn: connB}, "12 22", 30, false, 0},
		{"search, the tail", session.LogQuery{Search: "/0", Tail: 2}, "22 27", 30, false, 0},
		{"search finds nothing", session.LogQuery{Search: "drop table"}, "", 30, false, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.restrictN > 0 {
				defer session.SetMaxLogScan(tt.restrictN)()
			}
			l, err := w.sessions.Logs(w.bob, id, tt.q)
			if err != nil {
				t.Fatal(err)
			}
			if got := seqs(l.Events); got != tt.want || l.Next != tt.next || l.More != tt.more {
				t.Errorf("events %q next %d more %v; want %q next %d more %v", got, l.Next, l.More, tt.want, tt.next, tt.more)
			}
		})
	}

	// The project's admin reads it too; bad bounds are refused.
	if _, err := w.sessions.Logs(w.alice, id, session.LogQuery{Errors: true}); err != nil {
		t.Fatalf("the project admin reads the log: %v", err)
	}
	for _, q := range []session.LogQuery{{After: -1}, {Limit: 1001}, {Tail: -1}, {Tail: 1001}, {Search: strings.Repeat("x", 201)}} {
		if _, err := w.sessions.Logs(w.bob, id, q); err == nil {
			t.Errorf("Logs(%+v) accepted", q)
		}
	}
}

func seqRange(from, to int) string {
	var parts []string
	for i := from; i <= to; i++ {
		parts = append(parts, fmt.Sprint(i))
	}
	return strings.Join(parts, " ")
}

// TestLogsFiltersNeverHideDamage: an event that fails its integrity check
// cannot be read, so no filter can tell it does not match: it is listed.
func TestLogsFiltersNeverHideDamage(t *testing.T) {
	w, id, _, connB, _ := logWorld(t)
	w.exec(t, `UPDATE session_events SET payload_enc = (SELECT payload_enc FROM session_events WHERE session_id = $1 AND seq = 5)
		WHERE session_id = $1 AND seq = 3`, id)
	for _, q := range []session.LogQuery{{Conn: connB, Limit: 3}, {Kinds: []string{"disconnect"}}, {Errors: true, Tail: 100}} {
		l, err := w.sessions.Logs(w.bob, id, q)
		if err != nil {
			t.Fatal(err)
		}
		damaged := false
		for _, e := range l.Events {
			damaged = damaged || (e.Seq == 3 && e.Damaged != "")
		}
		if !damaged {
			t.Errorf("Logs(%+v) = %s: the damaged event 3 is not listed", q, seqs(l.Events))
		}
	}
}
