package sessionlog

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/airlockpam/airlock/internal/errs"
	"github.com/airlockpam/airlock/internal/keyring"
	"github.com/airlockpam/airlock/internal/store"
	"github.com/airlockpam/airlock/internal/testenv"
)

// fixture is a Store on a fresh database with one organization and one
// project (with its data key).
type fixture struct {
	t       testing.TB
	db      *store.DB
	st      *Store
	dataDir string // SQLite only
	project string
}

// backends run a test on SQLite and on PostgreSQL.
var backends = []struct {
	name string
	open func(t *testing.T) (dataDir, url string)
}{
	{"sqlite", func(t *testing.T) (string, string) { return t.TempDir(), "" }},
	{"postgres", func(t *testing.T) (string, string) { return "", testenv.SharedPostgres(t).SuperURL() }},
}

func forEachBackend(t *testing.T, f func(t *testing.T, fx *fixture)) {
	for _, b := range backends {
		t.Run(b.name, func(t *testing.T) {
			dataDir, url := b.open(t)
			f(t, newFixture(t, dataDir, url))
		})
	}
}

func newFixture(t testing.TB, dataDir, url string) *fixture {
	t.Helper()
	ctx := context.Background()
	db, err := store.Open(ctx, store.Config{DataDir: dataDir, DatabaseURL: url})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	root, err := keyring.ParseRootKey(keyring.GenerateRootKey())
	if err != nil {
		t.Fatal(err)
	}
	kr, err := keyring.New(ctx, db, root)
	if err != nil {
		t.Fatal(err)
	}
	fx := &fixture{t: t, db: db, st: NewStore(db, kr, time.Now), dataDir: dataDir, project: "proj-1"}
	fx.exec(`INSERT INTO organizations (id, name, created_at) VALUES ('org-1', 'org', 0)`)
	fx.exec(`INSERT INTO projects (id, org_id, name, created_at, updated_at) VALUES ($1, 'org-1', 'project', 0, 0)`, fx.project)
	if err := kr.CreateProjectKey(ctx, db, fx.project); err != nil {
		t.Fatal(err)
	}
	return fx
}

func (fx *fixture) exec(q string, args ...any) {
	fx.t.Helper()
	if _, err := fx.db.Exec(q, args...); err != nil {
		fx.t.Fatalf("%s: %v", q, err)
	}
}

// newSession adds a session row.
func (fx *fixture) newSession(id string) {
	fx.t.Helper()
	fx.exec(`INSERT INTO sessions (id, org_id, project_id, subject_kind, subject_id, subject_name, resource_id, resource_name,
		resource_kind, account_id, account_name, account_username, gateway_id, access_method, client_addr, created_at, expires_at, status)
		VALUES ($1, 'org-1', $2, 'user', 'u1', 'alice', 'r1', 'orders', 'postgres', 'a1', 'app', 'app_user', 'gw1', 'cli', '127.0.0.1', 1, 2, 'active')`,
		id, fx.project)
}

func (fx *fixture) ingest(batch []Event) int {
	fx.t.Helper()
	n, err := fx.st.Ingest(context.Background(), batch)
	if err != nil {
		fx.t.Fatalf("Ingest: %v", err)
	}
	return n
}

func (fx *fixture) listAll(session string) []Event {
	fx.t.Helper()
	var all []Event
	for {
		page, err := fx.st.List(context.Background(), session, int64(len(all)), 0)
		if err != nil {
			fx.t.Fatal(err)
		}
		if len(page) == 0 {
			return all
		}
		all = append(all, page...)
	}
}

// checkChain checks that session holds exactly the ids in want (in any
// order unless ordered), at seqs 1..len(want), and verifies.
func (fx *fixture) checkChain(session string, want int) []Event {
	fx.t.Helper()
	all := fx.listAll(session)
	if len(all) != want {
		fx.t.Fatalf("session %s holds %d events, want %d", session, len(all), want)
	}
	seen := map[string]bool{}
	for i, ev := range all {
		if ev.Seq != int64(i+1) {
			fx.t.Fatalf("event %d has seq %d", i+1, ev.Seq)
		}
		if seen[ev.ID] {
			fx.t.Fatalf("event %s stored twice", ev.ID)
		}
		seen[ev.ID] = true
	}
	res, err := fx.st.Verify(context.Background(), session)
	if err != nil || !res.OK || res.Events != int64(want) {
		fx.t.Fatalf("Verify: %+v %v", res, err)
	}
	return all
}

func events(session string, g, from, to int) []Event {
	var out []Event
	for i := from; i < to; i++ {
		out = append(out, testEvent(session, g, i))
	}
	return out
}

func TestStoreIngestIsIdempotent(t *testing.T) {
	forEachBackend(t, func(t *testing.T, fx *fixture) {
		fx.newSession("s1")
		fx.newSession("s2")
		if n := fx.ingest(events("s1", 0, 0, 100)); n != 100 {
			t.Fatalf("first batch: %d stored", n)
		}
		// Sent again in part, with duplicates inside the batch, and mixed
		// with another session.
		batch := events("s1", 0, 50, 150)
		batch = append(batch, events("s1", 0, 0, 10)...)
		batch = append(batch, testEvent("s1", 0, 149), testEvent("s1", 0, 149))
		batch = append(batch, events("s2", 1, 0, 20)...)
		if n := fx.ingest(batch); n != 70 {
			t.Fatalf("second batch: %d stored, want 70", n)
		}
		if n := fx.ingest(batch); n != 0 {
			t.Fatalf("the same batch again: %d stored, want 0", n)
		}
		all := fx.checkChain("s1", 150)
		for i, ev := range all {
			want := testEvent("s1", 0, i)
			if ev.ID != want.ID || ev.Statement != want.Statement || !ev.Time.Equal(want.Time) || ev.Kind != KindQuery {
				t.Fatalf("event %d: %+v", i+1, ev)
			}
		}
		fx.checkChain("s2", 20)

		page, err := fx.st.List(context.Background(), "s1", 100, 20)
		if err != nil || len(page) != 20 || page[0].Seq != 101 || page[19].Seq != 120 {
			t.Fatalf("List after 100, 20: %d events, %v", len(page), err)
		}
		if page, err := fx.st.List(context.Background(), "nope", 0, 10); err != nil || len(page) != 0 {
			t.Fatalf("List of an unknown session: %v %v", page, err)
		}
	})
}

func TestStoreConcurrentIngest(t *testing.T) {
	forEachBackend(t, func(t *testing.T, fx *fixture) {
		fx.newSession("s1")
		const writers, batches, perBatch = 2, 20, 25
		var wg sync.WaitGroup
		errc := make(chan error, writers)
		for g := range writers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for b := range batches {
					batch := events("s1", g, b*perBatch, (b+1)*perBatch)
					// Both writers also send the same events, as two server
					// replicas would with a retried upload.
					batch = append(batch, events("s1", 9, b*5, b*5+5)...)
					if _, err := fx.st.Ingest(context.Background(), batch); err != nil {
						errc <- err
						return
					}
				}
			}()
		}
		wg.Wait()
		close(errc)
		for err := range errc {
			t.Fatal(err)
		}
		fx.checkChain("s1", writers*batches*perBatch+batches*5)
	})
}

func TestStoreRejectsWhatItCannotStore(t *testing.T) {
	forEachBackend(t, func(t *testing.T, fx *fixture) {
		fx.newSession("s1")
		batch := events("s1", 0, 0, 5)
		batch = append(batch, testEvent("ghost", 0, 100))
		noID := testEvent("s1", 0, 101)
		noID.ID = ""
		batch = append(batch, noID)
		n, err := fx.st.Ingest(context.Background(), batch)
		var rej *RejectedError
		if n != 5 || !errors.As(err, &rej) || len(rej.Rejected) != 2 || errs.CodeOf(err) != errs.Invalid {
			t.Fatalf("Ingest: %d, %v", n, err)
		}
		if msg := err.Error(); !strings.Contains(msg, `session "ghost": no such session`) || !strings.Contains(msg, "has no id") {
			t.Fatalf("the error does not name the rejected events: %s", msg)
		}
		fx.checkChain("s1", 5)
	})
}

func TestStoreVerifyDetectsTampering(t *testing.T) {
	cases := []struct {
		name     string
		tamper   func(fx *fixture, s string)
		firstBad int64
		problem  string
	}{
		{"intact", func(fx *fixture, s string) {}, 0, ""},
		{"an event removed", func(fx *fixture, s string) {
			fx.exec(`DELETE FROM session_events WHERE session_id = $1 AND seq = 17`, s)
		}, 17, "event 17 was removed"},
		{"several events removed", func(fx *fixture, s string) {
			fx.exec(`DELETE FROM session_events WHERE session_id = $1 AND seq BETWEEN 17 AND 19`, s)
		}, 17, "events 17 to 19 were removed"},
		{"the last event removed", func(fx *fixture, s string) {
			fx.exec(`DELETE FROM session_events WHERE session_id = $1 AND seq = 30`, s)
		}, 30, "event 30 was removed: the log ends at event 29 but the session recorded 30"},
		{"a payload byte changed", func(fx *fixture, s string) {
			var b []byte
			if err := fx.db.QueryRow(`SELECT payload_enc FROM session_events WHERE session_id = $1 AND seq = 23`, s).Scan(&b); err != nil {
				fx.t.Fatal(err)
			}
			b[len(b)/2] ^= 0x01
			fx.exec(`UPDATE session_events SET payload_enc = $1 WHERE session_id = $2 AND seq = 23`, b, s)
		}, 23, "event 23 was altered: its content fails its integrity check"},
		{"another event's payload copied in", func(fx *fixture, s string) {
			fx.exec(`UPDATE session_events SET payload_enc = (SELECT payload_enc FROM session_events WHERE session_id = $1 AND seq = 24)
				WHERE session_id = $1 AND seq = 23`, s)
		}, 23, "event 23 was altered: its content fails its integrity check"},
		{"the kind column changed", func(fx *fixture, s string) {
			fx.exec(`UPDATE session_events SET kind = 'connect' WHERE session_id = $1 AND seq = 5`, s)
		}, 5, "event 5 was altered: its stored time or kind differs from its sealed content"},
		{"a hash changed", func(fx *fixture, s string) {
			fx.exec(`UPDATE session_events SET hash = prev_hash WHERE session_id = $1 AND seq = 10`, s)
		}, 10, "event 10 was altered: its hash does not match its content"},
		{"the head wound back", func(fx *fixture, s string) {
			fx.exec(`UPDATE sessions SET event_count = 29,
				last_event_hash = (SELECT hash FROM session_events WHERE session_id = $1 AND seq = 29) WHERE id = $1`, s)
		}, 30, "the session's chain head was wound back: it records 29 events but 1 more are stored"},
		{"the head hash changed", func(fx *fixture, s string) {
			fx.exec(`UPDATE sessions SET last_event_hash = (SELECT hash FROM session_events WHERE session_id = $1 AND seq = 29) WHERE id = $1`, s)
		}, 30, "the session's chain head does not match event 30"},
		// Consistent in itself: only the MAC tells.
		{"events cut off the end", func(fx *fixture, s string) {
			fx.exec(`DELETE FROM session_events WHERE session_id = $1 AND seq > 27`, s)
			fx.exec(`UPDATE sessions SET event_count = 27,
				last_event_hash = (SELECT hash FROM session_events WHERE session_id = $1 AND seq = 27) WHERE id = $1`, s)
		}, 27, "the session was altered in the store"},
		{"re-attributed to another user", func(fx *fixture, s string) {
			fx.exec(`UPDATE sessions SET subject_id = 'u-other', subject_name = 'mallory@example.com' WHERE id = $1`, s)
		}, 30, "the session was altered in the store"},
		{"another client address", func(fx *fixture, s string) {
			fx.exec(`UPDATE sessions SET client_addr = '10.9.9.9' WHERE id = $1`, s)
		}, 30, "the session was altered in the store"},
		{"its MAC removed", func(fx *fixture, s string) {
			fx.exec(`UPDATE sessions SET log_mac = NULL WHERE id = $1`, s)
		}, 30, "the session's log is not authenticated"},
	}
	forEachBackend(t, func(t *testing.T, fx *fixture) {
		for i, tc := range cases {
			t.Run(tc.name, func(t *testing.T) {
				fx.t = t
				s := fmt.Sprintf("s%d", i)
				fx.newSession(s)
				fx.ingest(events(s, 0, 0, 12))
				fx.ingest(events(s, 0, 12, 30))
				tc.tamper(fx, s)
				res, err := fx.st.Verify(context.Background(), s)
				if err != nil {
					t.Fatal(err)
				}
				cut := tc.name == "the head wound back" || tc.name == "events cut off the end"
				if res.OK != (tc.firstBad == 0) || res.FirstBad != tc.firstBad || !strings.HasPrefix(res.Problem, tc.problem) ||
					res.Events != 30 && !cut || res.OK != res.Authenticated {
					t.Fatalf("Verify: %+v, want first bad %d, problem %q", res, tc.firstBad, tc.problem)
				}
				t.Logf("%+v", res)
			})
		}
		t.Run("an altered event is listed as damaged, the others whole", func(t *testing.T) {
			fx.t = t
			fx.newSession("sx")
			fx.ingest(events("sx", 0, 0, 3))
			fx.exec(`UPDATE session_events SET payload_enc = (SELECT payload_enc FROM session_events WHERE session_id = 'sx' AND seq = 1)
				WHERE session_id = 'sx' AND seq = 2`)
			got, err := fx.st.List(context.Background(), "sx", 0, 10)
			if err != nil {
				t.Fatalf("List: %v", err)
			}
			if len(got) != 3 || got[0].Damaged != "" || got[2].Damaged != "" || got[0].Statement == "" || got[2].Statement == "" ||
				got[1].Seq != 2 || got[1].Statement != "" || !strings.Contains(got[1].Damaged, "event 2 of session sx failed its integrity check") {
				t.Fatalf("List: %+v", got)
			}
		})
		t.Run("unknown session", func(t *testing.T) {
			if _, err := fx.st.Verify(context.Background(), "nope"); !errs.Is(err, errs.NotFound) {
				t.Fatalf("Verify: %v", err)
			}
		})
	})
}

func TestStoreEncryptsEvents(t *testing.T) {
	forEachBackend(t, func(t *testing.T, fx *fixture) {
		fx.newSession("s-enc")
		const statement = "UPDATE cards SET number = '4111-1111-DO-NOT-LEAK' WHERE id = $1"
		const param = "param-7f3a9c1e-DO-NOT-LEAK"
		ev := testEvent("s-enc", 0, 0)
		ev.Kind, ev.Statement, ev.Params = KindExecute, statement, []string{param}
		fx.ingest(append([]Event{ev}, events("s-enc", 0, 1, 50)...))
		raw := fx.storeBytes()
		for _, needle := range []string{statement, param, "DO-NOT-LEAK", "FROM t WHERE writer"} {
			if bytes.Contains(raw, []byte(needle)) || bytes.Contains(raw, []byte(hex.EncodeToString([]byte(needle)))) {
				t.Fatalf("%q is readable in the store", needle)
			}
		}
		if !bytes.Contains(raw, []byte("s-enc")) || !bytes.Contains(raw, []byte(ev.ID)) {
			t.Fatal("the store dump does not even hold the session and event ids; the check above proves nothing")
		}
		got := fx.listAll("s-enc")
		if got[0].Statement != statement || got[0].Params[0] != param {
			t.Fatalf("read back: %+v", got[0])
		}
	})
}

// storeBytes returns everything the store holds, as someone with a copy of
// it would see it: the SQLite files, or every PostgreSQL table as text.
func (fx *fixture) storeBytes() []byte {
	t := fx.t
	t.Helper()
	if fx.dataDir != "" {
		var all []byte
		for _, name := range []string{store.SQLiteFile, store.SQLiteFile + "-wal", store.SQLiteFile + "-shm"} {
			if b, err := os.ReadFile(filepath.Join(fx.dataDir, name)); err == nil {
				all = append(all, b...)
			}
		}
		return all
	}
	rows, err := fx.db.Query(`SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'`)
	if err != nil {
		t.Fatal(err)
	}
	var tables []string
	for rows.Next() {
		var n string
		rows.Scan(&n)
		tables = append(tables, n)
	}
	rows.Close()
	var all bytes.Buffer
	for _, tbl := range tables {
		rows, err := fx.db.Query(fmt.Sprintf(`SELECT t::text FROM %q t`, tbl))
		if err != nil {
			t.Fatal(err)
		}
		for rows.Next() {
			var s string
			rows.Scan(&s)
			all.WriteString(s)
		}
		rows.Close()
	}
	return all.Bytes()
}

// TestSpoolDeliversThroughStoreOutage runs a spool whose uploader stores
// into PostgreSQL, stops PostgreSQL for a few seconds while events keep
// coming, and checks that every event arrives exactly once after it is back.
func TestSpoolDeliversThroughStoreOutage(t *testing.T) {
	// testenv's clusters run with synchronous_commit off, which loses the
	// last commits when Stop kills the server: the store would then forget
	// events it acknowledged. A real store runs with it on.
	pg := testenv.StartPostgres(t, testenv.WithPostgresSetting("synchronous_commit", "on"))
	fx := newFixture(t, "", pg.SuperURL(testenv.AppDatabase))
	fx.newSession("s1")

	var mu sync.Mutex
	var failures, outageFailures int
	down := false
	up := UploaderFunc(func(ctx context.Context, b Batch) error {
		batch, err := b.Events()
		if err != nil {
			return err
		}
		ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		_, err = fx.st.Ingest(ctx, batch)
		if err != nil {
			mu.Lock()
			failures++
			if down {
				outageFailures++
			}
			mu.Unlock()
		}
		return err
	})
	sp := openSpool(t, t.TempDir(), WithBackoff(100*time.Millisecond, time.Second), WithUploadBatch(50, 0))
	runSpool(t, sp, up)

	record := func(g, from, to int) {
		var wg sync.WaitGroup
		for w := range 3 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := from; i < to; i++ {
					sp.Record(testEvent("s1", g+w, i))
					time.Sleep(time.Millisecond)
				}
			}()
		}
		wg.Wait()
	}
	record(0, 0, 100) // 300 events while the store is up
	waitFor(t, "the first events to be stored", 20*time.Second, func() bool { return sp.Pending() == 0 })

	if err := pg.Stop(); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	down = true
	mu.Unlock()
	stoppedAt := time.Now()
	record(3, 0, 100) // 300 more while it is down
	time.Sleep(3*time.Second - time.Since(stoppedAt))
	if sp.Pending() != 300 {
		t.Fatalf("%d events pending while the store is down, want 300", sp.Pending())
	}
	mu.Lock()
	down = false
	retried := outageFailures
	mu.Unlock()
	if retried < 3 {
		t.Fatalf("only %d failed uploads during the outage: the spool did not keep retrying", retried)
	}
	if err := pg.Start(); err != nil {
		t.Fatal(err)
	}
	restartedAt := time.Now()
	waitFor(t, "the spool to drain after the store came back", 30*time.Second, func() bool { return sp.Pending() == 0 })
	t.Logf("outage %v with %d failed uploads; drained %v after the restart", restartedAt.Sub(stoppedAt).Round(time.Millisecond),
		retried, time.Since(restartedAt).Round(time.Millisecond))

	var total, distinct, maxSeq int64
	if err := fx.db.QueryRow(`SELECT COUNT(*), COUNT(DISTINCT id), MAX(seq) FROM session_events WHERE session_id = 's1'`).
		Scan(&total, &distinct, &maxSeq); err != nil {
		t.Fatal(err)
	}
	if total != 600 || distinct != 600 || maxSeq != 600 {
		t.Fatalf("stored %d events (%d distinct, last seq %d), want 600", total, distinct, maxSeq)
	}
	fx.checkChain("s1", 600)
}

// BenchmarkIngest stores batches of 250 events (a gateway's 50 ms flush at
// 5,000 queries per second) on the embedded store; ns/op is per event.
func BenchmarkIngest(b *testing.B) {
	fx := newFixture(b, b.TempDir(), "")
	fx.newSession("s-bench")
	const batch = 250
	evs := make([]Event, batch)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i += batch {
		for j := range evs {
			evs[j] = testEvent("s-bench", 0, i+j)
		}
		if _, err := fx.st.Ingest(context.Background(), evs[:min(batch, b.N-i)]); err != nil {
			b.Fatal(err)
		}
	}
}

// Ending a session through Reseal keeps it authenticated, its end time
// included; an end set without Reseal leaves the end time uncovered (said
// so) but the rest checked; a re-attribution before Reseal is not blessed by
// it.
func TestStoreResealOnEnd(t *testing.T) {
	forEachBackend(t, func(t *testing.T, fx *fixture) {
		fx.t = t
		ctx := context.Background()
		end := func(s string) {
			err := fx.db.InTx(ctx, func(tx *sql.Tx) error {
				return fx.st.Reseal(ctx, tx, s, func() error {
					_, err := tx.ExecContext(ctx, `UPDATE sessions SET ended_at = 99, status = 'ended' WHERE id = $1`, s)
					return err
				})
			})
			if err != nil {
				t.Fatal(err)
			}
		}
		verify := func(s string) VerifyResult {
			res, err := fx.st.Verify(ctx, s)
			if err != nil {
				t.Fatal(err)
			}
			return res
		}
		fx.newSession("e1")
		fx.ingest(events("e1", 0, 0, 5))
		end("e1")
		if res := verify("e1"); !res.OK || !res.Authenticated || res.EndUnauthenticated {
			t.Fatalf("ended through Reseal: %+v", res)
		}
		fx.exec(`UPDATE sessions SET ended_at = 50 WHERE id = 'e1'`)
		if res := verify("e1"); res.OK {
			t.Fatalf("a changed end time passed: %+v", res)
		}

		fx.newSession("e2")
		fx.ingest(events("e2", 0, 0, 5))
		fx.exec(`UPDATE sessions SET ended_at = 99, status = 'ended' WHERE id = 'e2'`)
		if res := verify("e2"); !res.OK || !res.EndUnauthenticated {
			t.Fatalf("ended without Reseal: %+v", res)
		}
		// Events after the end seal it, end time included.
		fx.ingest(events("e2", 0, 5, 6))
		if res := verify("e2"); !res.OK || res.EndUnauthenticated {
			t.Fatalf("after events that followed the end: %+v", res)
		}

		fx.newSession("e3")
		fx.ingest(events("e3", 0, 0, 5))
		fx.exec(`UPDATE sessions SET subject_id = 'u-other' WHERE id = 'e3'`)
		end("e3")
		fx.ingest(events("e3", 0, 5, 8))
		if res := verify("e3"); res.OK {
			t.Fatalf("a re-attribution was blessed by a later seal: %+v", res)
		}
	})
}
