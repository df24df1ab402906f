package pam_test

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/airlockpam/airlock/internal/errs"
	"github.com/airlockpam/airlock/internal/store"
)

// noneContain fails the test if any response body so far, or any audit
// row, holds one of the secrets.
func (e *env) noneContain(secrets ...string) {
	e.t.Helper()
	e.mu.Lock()
	bodies := append([]string(nil), e.bodies...)
	e.mu.Unlock()
	rows := e.auditRows()
	for _, s := range secrets {
		for _, b := range bodies {
			if strings.Contains(b, s) {
				e.t.Errorf("a response body holds a password: %.300s", b)
			}
		}
		for _, r := range rows {
			if strings.Contains(r, s) {
				e.t.Errorf("an audit row holds a password: %s", r)
			}
		}
	}
}

// storeBytes returns what someone with the store's files or database sees
// of the resources and accounts tables.
func (e *env) storeBytes() []byte {
	e.t.Helper()
	var out bytes.Buffer
	if e.db.Dialect == store.SQLite {
		for _, name := range []string{store.SQLiteFile, store.SQLiteFile + "-wal"} {
			b, err := os.ReadFile(filepath.Join(e.dataDir, name))
			if err != nil && !os.IsNotExist(err) {
				e.t.Fatal(err)
			}
			out.Write(b)
		}
		return out.Bytes()
	}
	for _, q := range []string{`SELECT t::text FROM resources t`, `SELECT t::text FROM accounts t`, `SELECT t::text FROM account_metadata t`,
		`SELECT encode(password_enc, 'escape') FROM accounts`, `SELECT encode(rotation_password_enc, 'escape') FROM resources WHERE rotation_password_enc IS NOT NULL`} {
		rows, err := e.db.QueryContext(context.Background(), q)
		if err != nil {
			e.t.Fatalf("%s: %v", q, err)
		}
		for rows.Next() {
			var s string
			if err := rows.Scan(&s); err != nil {
				e.t.Fatal(err)
			}
			out.WriteString(s + "\n")
		}
		rows.Close()
	}
	return out.Bytes()
}

func TestPasswordsStaySecret(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		e := start(t, b)
		pg := e.target.Cluster
		owner := e.createUser("owner@example.com")
		pid := owner.project("payments")
		base := "/api/v1/projects/" + pid
		const rotation = "rotation-Pa55-zebra-91"
		res := e.pgResource("orders-db")
		res["rotationUsername"], res["rotationPassword"] = "rotator", rotation
		owner.must(201, "POST", base+"/resources", res, nil)
		var app, rep map[string]any
		owner.must(201, "POST", base+"/accounts", map[string]any{"resource": "orders-db", "name": "app",
			"username": pg.SCRAMUser.User, "password": pg.SCRAMUser.Password, "metadata": map[string]string{"env": "prod"}}, &app)
		owner.must(201, "POST", base+"/accounts", map[string]any{"resource": "orders-db", "name": "reporting",
			"username": pg.MD5User.User, "password": pg.MD5User.Password}, &rep)
		owner.must(200, "PATCH", base+"/accounts/app", map[string]any{"password": pg.SCRAMUser.Password, "description": "x"}, nil)
		owner.fails(422, "", "PATCH", base+"/accounts/app", map[string]any{"password": "wrong-password-xyz"})
		owner.must(200, "GET", base+"/accounts", nil, nil)
		owner.must(200, "GET", base+"/resources/orders-db", nil, nil)
		owner.must(200, "GET", "/api/v1/audit-logs?projectId="+pid, nil, nil)

		// Not in any response, not in the audit log.
		secrets := []string{pg.SCRAMUser.Password, pg.MD5User.Password, rotation, "wrong-password-xyz"}
		e.noneContain(secrets...)

		// Not in the store: the columns hold ciphertexts.
		if e.db.Dialect == store.SQLite {
			if _, err := e.db.Exec(`PRAGMA wal_checkpoint(TRUNCATE)`); err != nil {
				t.Fatal(err)
			}
		}
		raw := e.storeBytes()
		if !bytes.Contains(raw, []byte("orders-db")) {
			t.Fatalf("the store dump does not hold the resource; the check below would prove nothing")
		}
		for _, s := range secrets {
			if bytes.Contains(raw, []byte(s)) {
				t.Errorf("the store holds a password in plain text")
			}
		}

		// A ciphertext moved to another row does not open.
		if _, err := e.db.Exec(`UPDATE accounts SET password_enc = (SELECT password_enc FROM accounts WHERE name = 'app') WHERE name = 'reporting'`); err != nil {
			t.Fatal(err)
		}
		if _, _, _, err := e.pam.TargetFor(owner.ctx(), pid, "orders-db", "reporting"); !errs.Is(err, errs.DataLoss) {
			t.Errorf("a moved ciphertext: %v", err)
		}

		// Deleting the resource deletes its accounts and their metadata.
		owner.must(204, "DELETE", base+"/resources/orders-db", nil, nil)
		if n := count(t, e.db, `SELECT COUNT(*) FROM accounts`); n != 0 {
			t.Errorf("%d accounts outlived their resource", n)
		}
		if n := count(t, e.db, `SELECT COUNT(*) FROM account_metadata`); n != 0 {
			t.Errorf("%d metadata rows outlived their account", n)
		}
		owner.fails(404, "", "GET", base+"/accounts/app", nil)
		var list []map[string]any
		owner.must(200, "GET", base+"/accounts", nil, &list)
		if len(list) != 0 {
			t.Errorf("accounts of a deleted resource: %v", list)
		}
		e.noneContain(secrets...)

		// Deleting the project deletes its resources.
		owner.must(201, "POST", base+"/resources", e.pgResource("again"), nil)
		owner.must(204, "DELETE", base, nil, nil)
		if n := count(t, e.db, `SELECT COUNT(*) FROM resources`); n != 0 {
			t.Errorf("%d resources outlived their project", n)
		}
	})
}
