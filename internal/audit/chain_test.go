package audit

import (
	"context"
	"database/sql"
	"fmt"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/airlockpam/airlock/internal/keyring"
	"github.com/airlockpam/airlock/internal/store"
	"github.com/airlockpam/airlock/internal/testenv"
)

func TestMain(m *testing.M) {
	code := m.Run()
	testenv.CleanupShared()
	os.Exit(code)
}

type chainFixture struct {
	db   *store.DB
	repo *Repository
	org  string
}

func forEachStore(t *testing.T, f func(t *testing.T, fx *chainFixture)) {
	for _, b := range []struct {
		name string
		cfg  func(t *testing.T) store.Config
	}{
		{"sqlite", func(t *testing.T) store.Config { return store.Config{DataDir: t.TempDir()} }},
		{"postgres", func(t *testing.T) store.Config {
			return store.Config{DatabaseURL: testenv.SharedPostgres(t).SuperURL()}
		}},
	} {
		t.Run(b.name, func(t *testing.T) {
			ctx := context.Background()
			db, err := store.Open(ctx, b.cfg(t))
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { db.Close() })
			root, _ := keyring.ParseRootKey(keyring.GenerateRootKey())
			kr, err := keyring.New(ctx, db, root)
			if err != nil {
				t.Fatal(err)
			}
			key, err := kr.DeriveKey(keyring.LabelAuditLogMAC)
			if err != nil {
				t.Fatal(err)
			}
			f(t, &chainFixture{db: db, repo: NewRepository(db, WithMACKey(key)), org: "org-" + uuid.NewString()})
		})
	}
}

func (fx *chainFixture) record(t *testing.T, n int) {
	t.Helper()
	for i := range n {
		ev := Entry{OrgID: fx.org, ActorKind: "user", ActorID: "u1", ActorName: "alice", Action: "project.create",
			TargetKind: "project", TargetID: fmt.Sprint("p", i), At: time.Now(), Details: map[string]any{"i": i}}
		if err := RecordNow(context.Background(), fx.db, ev); err != nil {
			t.Fatal(err)
		}
	}
}

func (fx *chainFixture) exec(t *testing.T, q string, args ...any) {
	t.Helper()
	if _, err := fx.db.Exec(q, args...); err != nil {
		t.Fatal(err)
	}
}

// Each tampering of the store is reported by Verify, including those that
// leave a consistent chain (cut off the end below the authenticated head).
func TestAuditVerifyDetectsTampering(t *testing.T) {
	cases := []struct {
		name     string
		tamper   func(t *testing.T, fx *chainFixture)
		firstBad int64
		problem  string
	}{
		{"intact", func(*testing.T, *chainFixture) {}, 0, ""},
		{"an entry altered", func(t *testing.T, fx *chainFixture) {
			fx.exec(t, `UPDATE audit_logs SET actor_name = 'mallory' WHERE org_id = $1 AND seq = 4`, fx.org)
		}, 4, "audit entry 4 was altered"},
		{"an entry removed", func(t *testing.T, fx *chainFixture) {
			fx.exec(t, `DELETE FROM audit_logs WHERE org_id = $1 AND seq = 3`, fx.org)
		}, 3, "entry 3 was removed"},
		{"the end cut off, the head wound back to match", func(t *testing.T, fx *chainFixture) {
			fx.exec(t, `DELETE FROM audit_logs WHERE org_id = $1 AND seq > 6`, fx.org)
			fx.exec(t, `UPDATE audit_heads SET seq = 6, hash = (SELECT hash FROM audit_logs WHERE org_id = $1 AND seq = 6) WHERE org_id = $1`, fx.org)
		}, 7, "entries 7 to 8 were cut off the end"},
		{"the authenticated head rewritten too", func(t *testing.T, fx *chainFixture) {
			fx.exec(t, `DELETE FROM audit_logs WHERE org_id = $1 AND seq > 6`, fx.org)
			fx.exec(t, `UPDATE audit_heads SET seq = 6, sealed_seq = 6, hash = (SELECT hash FROM audit_logs WHERE org_id = $1 AND seq = 6),
				sealed_hash = (SELECT hash FROM audit_logs WHERE org_id = $1 AND seq = 6) WHERE org_id = $1`, fx.org)
		}, 6, "the audit log's authenticated head was altered"},
	}
	forEachStore(t, func(t *testing.T, fx *chainFixture) {
		base := fx.org
		for i, tc := range cases {
			t.Run(tc.name, func(t *testing.T) {
				fx.org = fmt.Sprintf("%s-%d", base, i)
				fx.record(t, 8)
				if res, err := fx.repo.Verify(context.Background(), fx.org); err != nil || !res.OK || res.Authenticated != 8 {
					t.Fatalf("before tampering: %+v, %v", res, err)
				}
				tc.tamper(t, fx)
				res, err := fx.repo.Verify(context.Background(), fx.org)
				if err != nil {
					t.Fatal(err)
				}
				if res.OK != (tc.firstBad == 0) || res.FirstBad != tc.firstBad || !strings.Contains(res.Problem, tc.problem) {
					t.Fatalf("Verify: %+v; want first bad %d, problem %q", res, tc.firstBad, tc.problem)
				}
			})
		}
	})
}

// An altered entry is listed, marked damaged; the page is not lost.
func TestAuditListMarksDamagedEntries(t *testing.T) {
	forEachStore(t, func(t *testing.T, fx *chainFixture) {
		fx.record(t, 3)
		fx.exec(t, `UPDATE audit_logs SET target_id = 'other' WHERE org_id = $1 AND seq = 2`, fx.org)
		got, err := fx.repo.List(context.Background(), Filter{OrgID: fx.org})
		if err != nil {
			t.Fatal(err)
		}
		if len(got) != 3 || got[0].Damaged != "" || got[1].Damaged == "" || got[2].Damaged != "" || got[1].Seq != 2 {
			t.Fatalf("List: %+v", got)
		}
	})
}

// Concurrent writers of one organization still make one chain.
func TestAuditChainUnderConcurrency(t *testing.T) {
	forEachStore(t, func(t *testing.T, fx *chainFixture) {
		var wg sync.WaitGroup
		for range 4 {
			wg.Go(func() { fx.record(t, 10) })
		}
		wg.Wait()
		// A change and its entry commit together, or neither does.
		_ = fx.db.InTx(context.Background(), func(tx *sql.Tx) error {
			if err := Record(context.Background(), tx, Entry{OrgID: fx.org, Action: "x.rolled_back", ActorKind: "system"}); err != nil {
				t.Fatal(err)
			}
			return fmt.Errorf("roll back")
		})
		res, err := fx.repo.Verify(context.Background(), fx.org)
		if err != nil || !res.OK || res.Entries != 40 {
			t.Fatalf("Verify: %+v, %v", res, err)
		}
	})
}
