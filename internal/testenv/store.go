package testenv

import (
	"context"
	"testing"

	"github.com/airlockpam/airlock/internal/keyring"
	"github.com/airlockpam/airlock/internal/store"
)

// OpenStore opens an empty embedded (SQLite) store in a temporary directory,
// with every migration applied, and a keyring on it under a new root key.
// The store is closed when the test ends.
func OpenStore(t testing.TB) (*store.DB, *keyring.Keyring) {
	t.Helper()
	ctx := context.Background()
	db, err := store.Open(ctx, store.Config{DataDir: t.TempDir()})
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
	return db, kr
}
