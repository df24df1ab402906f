package store_test

import (
	"context"
	"testing"

	"github.com/airlockpam/airlock/internal/store"
)

// TestSQLiteCommitsAreDurable checks the settings every pooled SQLite
// connection runs with. A transaction's commit must reach the disk before it
// returns: the server acknowledges session-log uploads after the commit, and
// the gateway then deletes its copy, so a commit that a power loss could
// still undo (WAL with synchronous=NORMAL) would lose audit events.
func TestSQLiteCommitsAreDurable(t *testing.T) {
	ctx := context.Background()
	db, err := store.Open(ctx, store.Config{DataDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	db.SetMaxIdleConns(4)
	// Hold several connections at once, so that more than one is checked.
	for i := 0; i < 4; i++ {
		conn, err := db.Conn(ctx)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		var mode string
		var sync int
		if err := conn.QueryRowContext(ctx, "PRAGMA journal_mode").Scan(&mode); err != nil {
			t.Fatal(err)
		}
		if err := conn.QueryRowContext(ctx, "PRAGMA synchronous").Scan(&sync); err != nil {
			t.Fatal(err)
		}
		if mode != "wal" || sync != 2 {
			t.Errorf("connection %d: journal_mode %s, synchronous %d; want wal and 2 (FULL)", i, mode, sync)
		}
	}
}
