package server_test

import (
	"bytes"
	"context"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/airlockpam/airlock/internal/keyring"
	"github.com/airlockpam/airlock/internal/server"
	"github.com/airlockpam/airlock/internal/store"
)

// storeBytes returns everything the store holds, as an attacker with a copy
// of it would see it: the SQLite files, or every PostgreSQL table as text.
func (e *env) storeBytes(t *testing.T) []byte {
	t.Helper()
	if e.databaseURL == "" {
		var all []byte
		for _, name := range []string{store.SQLiteFile, store.SQLiteFile + "-wal", store.SQLiteFile + "-shm"} {
			b, err := os.ReadFile(filepath.Join(e.dataDir, name))
			if err == nil {
				all = append(all, b...)
			}
		}
		return all
	}
	db := e.sqlDB()
	rows, err := db.Query(`SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'`)
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
	if len(tables) < 5 {
		t.Fatalf("only tables %v", tables)
	}
	var all bytes.Buffer
	for _, tbl := range tables {
		rows, err := db.Query(fmt.Sprintf(`SELECT t::text FROM %q t`, tbl))
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

func TestSecretsEncryptedAtRest(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		e := start(t, b)
		admin := e.admin()
		var p map[string]any
		admin.call("POST", "/api/v1/projects", map[string]any{"name": "vault"}, &p)
		pid := p["id"].(string)
		const secret = "pg-password-7f3a9c1e-DO-NOT-LEAK"
		if st := admin.call("PUT", "/api/v1/projects/"+pid+"/secrets/DB_PASSWORD?environment=prod", map[string]any{"value": secret}, nil); st != 200 {
			t.Fatalf("set: %d %s", st, admin.problem().raw)
		}
		admin.call("PUT", "/api/v1/projects/"+pid+"/secrets/OTHER?environment=prod", map[string]any{"value": "another value"}, nil)
		var got map[string]any
		if st := admin.call("GET", "/api/v1/projects/"+pid+"/secrets/DB_PASSWORD?environment=prod", nil, &got); st != 200 || got["value"] != secret {
			t.Fatalf("get: %d %v", st, got)
		}
		// The bootstrap password is in the store only as an argon2id hash.
		raw := e.storeBytes(t)
		for _, needle := range []string{secret, adminPassword} {
			if bytes.Contains(raw, []byte(needle)) || bytes.Contains(raw, []byte(hex.EncodeToString([]byte(needle)))) {
				t.Fatalf("%q is readable in the store", needle)
			}
		}
		if !bytes.Contains(raw, []byte("DB_PASSWORD")) {
			t.Fatal("the store dump does not even hold the secret's name; the check above proves nothing")
		}

		// A ciphertext copied into another row does not open.
		_, err := e.sqlDB().Exec(`UPDATE secret_versions SET value_enc = (SELECT value_enc FROM secret_versions WHERE name = 'DB_PASSWORD') WHERE name = 'OTHER'`)
		if err != nil {
			t.Fatal(err)
		}
		if st := admin.call("GET", "/api/v1/projects/"+pid+"/secrets/OTHER?environment=prod", nil, nil); st != 500 ||
			!strings.Contains(admin.problem().Detail, "integrity check") || strings.Contains(admin.problem().raw, secret) {
			t.Fatalf("moved ciphertext: %d %s", st, admin.problem().raw)
		}

		// A server started with another root key refuses to run.
		e.close()
		wrong, _ := keyring.ParseRootKey(keyring.GenerateRootKey())
		_, err = server.New(context.Background(), server.Config{DataDir: e.dataDir, DatabaseURL: e.databaseURL, RootKey: wrong})
		if err == nil || !strings.Contains(err.Error(), "is not the one this store was created with") {
			t.Fatalf("wrong root key: %v", err)
		}
		// With the right key everything is still there.
		e.open("", "")
		if st := e.admin().call("GET", "/api/v1/projects/"+pid+"/secrets/DB_PASSWORD?environment=prod", nil, &got); st != 200 || got["value"] != secret {
			t.Fatalf("after restart: %d %v", st, got)
		}
	})
}

func TestHealthAndOpenAPI(t *testing.T) {
	e := start(t, backends()[0])
	c := e.anon()
	for _, path := range []string{"/healthz", "/readyz"} {
		if st, body := c.raw("GET", path, nil, ""); st != 200 || strings.TrimSpace(string(body)) != "ok" {
			t.Errorf("%s: %d %q", path, st, body)
		}
	}
	st, body := c.raw("GET", "/api/openapi.json", nil, "")
	if st != 200 {
		t.Fatalf("openapi: %d", st)
	}
	for _, want := range []string{`"openapi":"3.1.0"`, `"/api/v1/auth/login"`, `"/api/v1/projects/{projectId}/members"`, `"/api/v1/audit-logs"`, `"bearer"`} {
		if !strings.Contains(string(body), want) {
			t.Errorf("openapi document lacks %s", want)
		}
	}
	// The store going away makes the server unready, not dead.
	e.srv.DB.Close()
	if st, _ := c.raw("GET", "/readyz", nil, ""); st != 503 {
		t.Errorf("readyz with a closed store: %d", st)
	}
	if st, _ := c.raw("GET", "/healthz", nil, ""); st != 200 {
		t.Errorf("healthz with a closed store: %d", st)
	}
}
