package keyring_test

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/airlockpam/airlock/internal/keyring"
	"github.com/airlockpam/airlock/internal/store"
)

func newKeyring(t *testing.T) (*keyring.Keyring, *store.DB, string) {
	t.Helper()
	ctx := context.Background()
	dir := t.TempDir()
	db, err := store.Open(ctx, store.Config{DataDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	key := keyring.GenerateRootKey()
	root, err := keyring.ParseRootKey(key)
	if err != nil {
		t.Fatal(err)
	}
	kr, err := keyring.New(ctx, db, root)
	if err != nil {
		t.Fatal(err)
	}
	// Data keys belong to projects; the foreign key wants the rows.
	for _, p := range []string{"p1", "p2"} {
		if _, err := db.Exec(`INSERT INTO organizations (id, name, created_at) VALUES ($1, 'o', 0) ON CONFLICT DO NOTHING`, "org"); err != nil {
			t.Fatal(err)
		}
		if _, err := db.Exec(`INSERT INTO projects (id, org_id, name, created_at, updated_at) VALUES ($1, 'org', $1, 0, 0)`, p); err != nil {
			t.Fatal(err)
		}
		if err := kr.CreateProjectKey(ctx, db, p); err != nil {
			t.Fatal(err)
		}
	}
	return kr, db, key
}

func TestSealOpen(t *testing.T) {
	ctx := context.Background()
	kr, _, _ := newKeyring(t)
	ct, err := kr.Seal(ctx, "p1", "account:a1", []byte("s3cret"))
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(ct), "s3cret") {
		t.Fatal("ciphertext holds the plaintext")
	}
	pt, err := kr.Open(ctx, "p1", "account:a1", ct)
	if err != nil || string(pt) != "s3cret" {
		t.Fatalf("open: %q %v", pt, err)
	}
	ct2, _ := kr.Seal(ctx, "p1", "account:a1", []byte("s3cret"))
	if string(ct2) == string(ct) {
		t.Fatal("two seals of the same value are equal: nonces repeat")
	}
	tampered := append([]byte(nil), ct...)
	tampered[len(tampered)-1] ^= 1
	for name, try := range map[string]func() error{
		"another row":     func() error { _, err := kr.Open(ctx, "p1", "account:a2", ct); return err },
		"another project": func() error { _, err := kr.Open(ctx, "p2", "account:a1", ct); return err },
		"tampered":        func() error { _, err := kr.Open(ctx, "p1", "account:a1", tampered); return err },
		"truncated":       func() error { _, err := kr.Open(ctx, "p1", "account:a1", ct[:10]); return err },
		"no project key":  func() error { _, err := kr.Open(ctx, "p3", "account:a1", ct); return err },
	} {
		if err := try(); err == nil {
			t.Errorf("%s: opened", name)
		}
	}
}

func TestWrongRootKey(t *testing.T) {
	_, db, _ := newKeyring(t)
	other, _ := keyring.ParseRootKey(keyring.GenerateRootKey())
	_, err := keyring.New(context.Background(), db, other)
	if err == nil || !strings.Contains(err.Error(), "not the one this store was created with") {
		t.Fatalf("wrong root key: %v", err)
	}
}

func TestRootKeySources(t *testing.T) {
	if _, err := keyring.LoadRootKey("", ""); err == nil || !strings.Contains(err.Error(), "openssl rand -base64 32") {
		t.Errorf("no key: %v", err)
	}
	if _, err := keyring.LoadRootKey("not base64!", ""); err == nil || !strings.Contains(err.Error(), "not valid base64") {
		t.Errorf("bad key: %v", err)
	}
	path := filepath.Join(t.TempDir(), "root.key")
	k1, created, err := keyring.LoadOrCreateRootKeyFile(path)
	if err != nil || !created {
		t.Fatal(err)
	}
	fi, _ := os.Stat(path)
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("key file mode %v", fi.Mode().Perm())
	}
	k2, created, err := keyring.LoadOrCreateRootKeyFile(path)
	if err != nil || created || k2.ID() != k1.ID() {
		t.Fatalf("reload: %v %v", created, err)
	}
	if _, err := keyring.LoadRootKey(keyring.GenerateRootKey(), path); err == nil {
		t.Error("both sources accepted")
	}
}

func TestDeriveKey(t *testing.T) {
	k1, _, _ := newKeyring(t)
	k2, _, _ := newKeyring(t)
	a, err := k1.DeriveKey(keyring.LabelSessionLogMAC)
	if err != nil {
		t.Fatal(err)
	}
	again, _ := k1.DeriveKey(keyring.LabelSessionLogMAC)
	other, _ := k1.DeriveKey(keyring.LabelAuditLogMAC)
	otherRoot, _ := k2.DeriveKey(keyring.LabelSessionLogMAC)
	if len(a) != 32 || !bytes.Equal(a, again) || bytes.Equal(a, other) || bytes.Equal(a, otherRoot) {
		t.Fatal("derived keys must be 32 bytes, stable, and differ by label and by root key")
	}
	if _, err := k1.DeriveKey(""); err == nil {
		t.Fatal("an empty label was accepted")
	}
}

func TestNewPassword(t *testing.T) {
	seen := map[string]bool{}
	for range 100 {
		pw, err := keyring.NewPassword()
		if err != nil {
			t.Fatal(err)
		}
		if len(pw) != 32 || strings.Trim(pw, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789") != "" {
			t.Fatalf("NewPassword() = %q: want 32 letters and digits", pw)
		}
		if seen[pw] {
			t.Fatalf("NewPassword() repeated %q", pw)
		}
		seen[pw] = true
	}
}
