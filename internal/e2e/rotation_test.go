package e2e_test

import (
	"context"
	"encoding/json"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/airlockpam/airlock/internal/e2e"
	"github.com/airlockpam/airlock/internal/testenv"
)

// Rotation through the real binaries: an admin rotates an account's
// password now; the old password no longer logs in, and the new one, which
// nobody has seen, does: `db access` connects with it. PostgreSQL's
// statement log (log_statement=all) holds no password, only a SCRAM
// verifier. With the gateway down the rotation fails, says why and leaves
// a password that logs in; with it back, it works.
func TestRotationThroughTheGateway(t *testing.T) {
	w := newWorld(t)
	ctx := context.Background()
	super, err := pgx.Connect(ctx, w.pg.SuperURL(testenv.AppDatabase))
	if err != nil {
		t.Fatal(err)
	}
	defer super.Close(ctx)
	const first, rotatorPw = "first-app-Pa55-word", "rotator-Pa55-word"
	for _, stmt := range []string{
		`CREATE ROLE rot_app LOGIN PASSWORD '` + first + `'`,
		`CREATE ROLE rotator LOGIN CREATEROLE PASSWORD '` + rotatorPw + `'`,
		`GRANT SELECT ON items TO rot_app`,
		`ALTER SYSTEM SET log_statement = 'all'`,
		`SELECT pg_reload_conf()`,
	} {
		if _, err := super.Exec(ctx, stmt); err != nil {
			t.Fatalf("%s: %v", stmt, err)
		}
	}
	logsIn := func(password string) bool {
		c, err := pgx.Connect(ctx, w.pg.URL("rot_app", password, testenv.AppDatabase, "verify-full"))
		if err != nil {
			return false
		}
		c.Close(ctx)
		return true
	}

	// Bad input first: no rotation account yet.
	_, errOut, code := w.admin.Run(first, "accounts", "create", "--project-id", w.project, "--resource", "main-db", "--name", "app",
		"--username", "rot_app", "--password-stdin", "--rotation-interval", "7d")
	if code == 0 || !strings.Contains(errOut, "no rotation account") || !strings.Contains(errOut, "--rotation-username") {
		t.Fatalf("rotation without a rotation account: exit %d: %s", code, errOut)
	}
	// A wrong rotation password is refused before it is saved.
	if _, errOut, code := w.admin.Run("wrong-password", "resources", "update", "main-db", "--project-id", w.project,
		"--rotation-username", "rotator", "--rotation-password-stdin"); code == 0 || !strings.Contains(errOut, "rotator") {
		t.Fatalf("a wrong rotation password: exit %d: %s", code, errOut)
	}
	w.admin.Must(rotatorPw, "resources", "update", "main-db", "--project-id", w.project,
		"--rotation-username", "rotator", "--rotation-password-stdin")
	w.admin.Must(first, "accounts", "create", "--project-id", w.project, "--resource", "main-db", "--name", "app",
		"--username", "rot_app", "--password-stdin", "--rotation-interval", "7d")

	out := w.admin.Must("", "accounts", "rotate", "app", "--project-id", w.project)
	if !strings.Contains(out, "every 7d, ok") {
		t.Fatalf("accounts rotate printed: %s", out)
	}
	if logsIn(first) {
		t.Fatal("the old password still logs in after a rotation")
	}
	// The new password is nowhere to be seen, yet db access uses it.
	p, url := w.access(w.admin, "app")
	var user string
	if err := connect(t, url).QueryRow(ctx, "SELECT current_user").Scan(&user); err != nil || user != "rot_app" {
		t.Fatalf("db access after the rotation: %q %v", user, err)
	}
	p.Stop(syscall.SIGINT)

	log, err := os.ReadFile(w.pg.LogPath)
	if err != nil {
		t.Fatal(err)
	}
	var alter string
	for _, l := range strings.Split(string(log), "\n") {
		if strings.Contains(l, "ALTER ROLE") && strings.Contains(l, "rot_app") {
			alter = l
		}
	}
	if !strings.Contains(alter, "SCRAM-SHA-256$4096:") {
		t.Fatalf("PostgreSQL's statement log does not show the rotation as a SCRAM verifier: %q", alter)
	}

	// The gateway is down: the rotation waits for it (status waiting, and
	// why), and the stored password still logs in through db access once
	// it is back; the waiting rotation then runs by itself.
	w.gw.Stop(syscall.SIGINT)
	w.waitGateway("dc1", false)
	_, errOut, code = w.admin.Run("", "accounts", "rotate", "app", "--project-id", w.project)
	if code == 0 || !strings.Contains(errOut, "gateway") {
		t.Fatalf("rotation with the gateway down: exit %d: %s", code, errOut)
	}
	var acct struct {
		Rotation struct{ Status, LastError string }
	}
	w.admin.JSON(&acct, "", "accounts", "get", "app", "--project-id", w.project)
	if acct.Rotation.Status != "waiting" || !strings.Contains(acct.Rotation.LastError, "waiting for gateway dc1: it is offline") {
		t.Fatalf("after a failed rotation: %+v", acct.Rotation)
	}
	w.gw = e2e.Start(t, nil, "gateway", "--data-dir", w.gwDir)
	w.waitGateway("dc1", true)
	_, url = w.access(w.admin, "app")
	if err := connect(t, url).QueryRow(ctx, "SELECT current_user").Scan(&user); err != nil {
		t.Fatalf("db access after the failed rotation: %v", err)
	}
	// The waiting rotation runs by itself, promptly, once the gateway is
	// back (at its connection, or at the latest at the next 10 s retry; a
	// backoff would wait 30 s and more).
	soon := time.Now().Add(15 * time.Second)
	for {
		w.admin.JSON(&acct, "", "accounts", "get", "app", "--project-id", w.project)
		if acct.Rotation.Status == "ok" {
			break
		}
		if time.Now().After(soon) {
			t.Fatalf("the waiting rotation did not run within 15 s of the gateway's return: %+v", acct.Rotation)
		}
		time.Sleep(300 * time.Millisecond)
	}
	// Another rotate works too.
	deadline := time.Now().Add(90 * time.Second)
	for {
		raw := w.admin.Must("", "accounts", "get", "app", "--project-id", w.project, "--output", "json")
		if err := json.Unmarshal([]byte(raw), &acct); err != nil {
			t.Fatal(err)
		}
		if acct.Rotation.Status == "ok" {
			break
		}
		if _, _, code := w.admin.Run("", "accounts", "rotate", "app", "--project-id", w.project); code == 0 {
			continue
		}
		if time.Now().After(deadline) {
			t.Fatalf("the rotation never worked again after the gateway came back: %+v", acct.Rotation)
		}
		time.Sleep(2 * time.Second)
	}
	for _, l := range strings.Split(w.admin.Must("", "audit", "list", "--action", "account.rotate"), "\n") {
		if strings.Contains(l, "Pa55") {
			t.Fatalf("the audit log holds a password: %s", l)
		}
	}
}
