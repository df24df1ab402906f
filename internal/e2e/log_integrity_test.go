package e2e_test

import (
	"context"
	"database/sql"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// lghStore opens the server's SQLite store beside it, as someone with write
// access to the store (and not the root key) would.
func lghStore(t *testing.T, w *world) *sql.DB {
	t.Helper()
	db, err := sql.Open("sqlite", "file:"+filepath.Join(w.srv.DataDir, "airlock.db")+"?_pragma=busy_timeout(10000)")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

func lghExec(t *testing.T, db *sql.DB, q string, args ...any) {
	t.Helper()
	if _, err := db.Exec(q, args...); err != nil {
		t.Fatal(err)
	}
}

// A session re-attributed to another user in the store, and a session whose
// last events were cut off with its chain head wound back to match (a chain
// consistent in itself), are both reported by `airlock sessions verify`:
// the session's identity fields and head carry a MAC from a key derived from
// the root key, which the store does not hold.
func TestSessionVerifyCatchesTruncationAndReattribution(t *testing.T) {
	w := newWorld(t)
	w.account("app", w.pg.SCRAMUser)
	p, url := w.access(w.admin, "app")
	id := sessionIDRE.FindStringSubmatch(p.Stdout())[1]
	c := connect(t, url)
	for i := range 10 {
		if _, err := c.Exec(context.Background(), fmt.Sprintf("SELECT %d", i)); err != nil {
			t.Fatal(err)
		}
	}
	w.waitLogs(id, 30*time.Second, func(evs []logEvent) bool {
		n := 0
		for _, e := range evs {
			if strings.HasPrefix(e.Statement, "SELECT ") {
				n++
			}
		}
		return n == 10
	})
	if out := w.admin.Must("", "sessions", "verify", id); !strings.Contains(out, "whole") {
		t.Fatalf("verify: %s", out)
	}
	db := lghStore(t, w)

	// Re-attribution: the session now names another user.
	var subjectID, subjectName string
	if err := db.QueryRow(`SELECT subject_id, subject_name FROM sessions WHERE id = $1`, id).Scan(&subjectID, &subjectName); err != nil {
		t.Fatal(err)
	}
	lghExec(t, db, `UPDATE sessions SET subject_id = 'u-mallory', subject_name = 'mallory@example.com' WHERE id = $1`, id)
	_, errOut, code := w.admin.Run("", "sessions", "verify", id)
	if code == 0 || !strings.Contains(errOut, "altered in the store") {
		t.Fatalf("re-attributed session: exit %d %s", code, errOut)
	}
	lghExec(t, db, `UPDATE sessions SET subject_id = $1, subject_name = $2 WHERE id = $3`, subjectID, subjectName, id)
	if out := w.admin.Must("", "sessions", "verify", id); !strings.Contains(out, "whole") {
		t.Fatalf("verify after restoring the user: %s", out)
	}

	// Truncation: the last three events go, and the head is wound back to
	// the new last event.
	var count int64
	if err := db.QueryRow(`SELECT event_count FROM sessions WHERE id = $1`, id).Scan(&count); err != nil {
		t.Fatal(err)
	}
	keep := count - 3
	lghExec(t, db, `DELETE FROM session_events WHERE session_id = $1 AND seq > $2`, id, keep)
	lghExec(t, db, `UPDATE sessions SET event_count = $1,
		last_event_hash = (SELECT hash FROM session_events WHERE session_id = $2 AND seq = $1) WHERE id = $2`, keep, id)
	_, errOut, code = w.admin.Run("", "sessions", "verify", id)
	if code == 0 || !strings.Contains(errOut, "altered in the store") {
		t.Fatalf("truncated session: exit %d %s", code, errOut)
	}
}

// The admin audit log, checked through the real server: whole, `airlock
// audit verify` says so; an entry altered in the store (an actor's name
// rewritten to hide who created a project) makes it exit 1 and name the
// entry, although the attacker could write the store.
func TestAuditVerifyCatchesAnAlteredEntry(t *testing.T) {
	w := newWorld(t)
	if out := w.admin.Must("", "audit", "verify"); !strings.HasPrefix(out, "OK: ") {
		t.Fatalf("audit verify of an untouched log: %q", out)
	}
	db := lghStore(t, w)
	var id string
	if err := db.QueryRow(`SELECT id FROM audit_logs WHERE action = 'project.create'`).Scan(&id); err != nil {
		t.Fatal(err)
	}
	lghExec(t, db, `UPDATE audit_logs SET actor_name = 'someone-else@example.com' WHERE id = $1`, id)
	out, _, code := w.admin.Run("", "audit", "verify")
	if code == 0 || !strings.HasPrefix(out, "TAMPERED: ") {
		t.Fatalf("audit verify after an entry was altered: exit %d, %q", code, out)
	}
}
