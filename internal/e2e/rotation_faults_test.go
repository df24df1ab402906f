package e2e_test

import (
	"context"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/airlockpam/airlock/internal/e2e"
	"github.com/airlockpam/airlock/internal/pam"
	"github.com/airlockpam/airlock/internal/testenv"
)

// TestRotationFaults injects a fault at each step of a rotation, through
// the real binaries, and checks after each that the account still logs in
// through `db access` (with whichever password the database holds):
//   - the database is down when the rotation runs (it fails, says the
//     database cannot be reached, and works once the database is back);
//   - the gateway is killed while rotations run (at several moments);
//   - the server is killed between the ALTER ROLE and the promotion of the
//     new password (the test-only hook pam.CrashBeforePromoteEnv): after a
//     restart, the pending password is found to log in and kept.
//
// The server runs on a PostgreSQL store so that the test can end the dead
// server's job lease instead of waiting for it to expire.
func TestRotationFaults(t *testing.T) {
	storePG := testenv.StartPostgres(t)
	storeURL := storePG.SuperURL(testenv.AppDatabase)
	w := newWorldOn(t, "AIRLOCK_DATABASE_URL="+storeURL)
	ctx := context.Background()
	super, err := pgx.Connect(ctx, w.pg.SuperURL(testenv.AppDatabase))
	if err != nil {
		t.Fatal(err)
	}
	for _, stmt := range []string{
		`CREATE ROLE flt_app LOGIN PASSWORD 'first-app-Pa55'`,
		`CREATE ROLE flt_rotator LOGIN CREATEROLE PASSWORD 'rotator-Pa55'`,
		`GRANT SELECT ON items TO flt_app`,
	} {
		if _, err := super.Exec(ctx, stmt); err != nil {
			t.Fatalf("%s: %v", stmt, err)
		}
	}
	super.Close(ctx)
	store, err := pgx.Connect(ctx, storeURL)
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close(ctx)
	w.admin.Must("rotator-Pa55", "resources", "update", "main-db", "--project-id", w.project,
		"--rotation-username", "flt_rotator", "--rotation-password-stdin")
	w.admin.Must("first-app-Pa55", "accounts", "create", "--project-id", w.project, "--resource", "main-db", "--name", "app",
		"--username", "flt_app", "--password-stdin", "--rotation-interval", "7d")

	type rotation struct{ Status, LastError string }
	get := func() rotation {
		var acct struct{ Rotation rotation }
		w.admin.JSON(&acct, "", "accounts", "get", "app", "--project-id", w.project)
		return acct.Rotation
	}
	// logsIn checks the account through db access.
	logsIn := func(step string) {
		t.Helper()
		p, url := w.access(w.admin, "app")
		c, err := pgx.Connect(ctx, url)
		if err != nil {
			t.Fatalf("%s: db access does not log in: %v\nserver:\n%s", step, err, tail(w.srv.Proc.Stderr()))
		}
		var user string
		err = c.QueryRow(ctx, "SELECT current_user").Scan(&user)
		c.Close(ctx)
		p.Stop(syscall.SIGINT)
		if err != nil || user != "flt_app" {
			t.Fatalf("%s: db access: %q %v", step, user, err)
		}
	}
	// rotateUntilOK rotates until a rotation reports ok.
	rotateUntilOK := func(step string) {
		t.Helper()
		deadline := time.Now().Add(90 * time.Second)
		for {
			if _, _, code := w.admin.Run("", "accounts", "rotate", "app", "--project-id", w.project); code == 0 && get().Status == "ok" {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: the rotation never worked again: %+v\nserver:\n%s", step, get(), tail(w.srv.Proc.Stderr()))
			}
			time.Sleep(time.Second)
		}
	}
	// settled waits until no attempt is pending or waiting: an attempt cut
	// short is settled as soon as the gateway is back (the pending password
	// is tried, then the current one).
	settled := func(step string) {
		t.Helper()
		deadline := time.Now().Add(90 * time.Second)
		for {
			var pending string
			if err := store.QueryRow(ctx, `SELECT pending_attempt FROM accounts WHERE name = 'app'`).Scan(&pending); err != nil {
				t.Fatal(err)
			}
			if r := get(); pending == "" && r.Status != "waiting" && r.Status != "rotating" {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: the interrupted rotation was never settled: %+v\nserver:\n%s", step, get(), tail(w.srv.Proc.Stderr()))
			}
			time.Sleep(300 * time.Millisecond)
		}
	}
	rotateUntilOK("the first rotation")
	logsIn("the first rotation")

	// 1. The database is down.
	if err := w.pg.Stop(); err != nil {
		t.Fatal(err)
	}
	_, errOut, code := w.admin.Run("", "accounts", "rotate", "app", "--project-id", w.project)
	if code == 0 || !strings.Contains(errOut, "failed") {
		t.Fatalf("rotation with the database down: exit %d: %s", code, errOut)
	}
	if r := get(); r.Status != "failed" || r.LastError == "" {
		t.Fatalf("after a rotation with the database down: %+v", r)
	}
	if err := w.pg.Start(); err != nil {
		t.Fatal(err)
	}
	logsIn("the database back")
	rotateUntilOK("the database back")
	logsIn("a rotation after the database came back")

	// 2. The gateway is killed while a rotation runs, at several moments.
	for _, delay := range []time.Duration{0, 2 * time.Millisecond, 10 * time.Millisecond, 40 * time.Millisecond} {
		rot := w.admin.Start("accounts", "rotate", "app", "--project-id", w.project)
		time.Sleep(delay)
		w.gw.Stop(syscall.SIGKILL)
		rot.Wait(t, 120*time.Second)
		w.gw = e2e.Start(t, nil, "gateway", "--data-dir", w.gwDir)
		w.waitGateway("dc1", true)
		settled("the gateway killed " + delay.String() + " into a rotation")
		logsIn("the gateway killed " + delay.String() + " into a rotation")
	}
	rotateUntilOK("after the gateway kills")
	logsIn("after the gateway kills")

	// 3. The server is killed between the ALTER ROLE and the promotion.
	interrupted := func() int {
		var n int
		if err := store.QueryRow(ctx, `SELECT COUNT(*) FROM audit_logs WHERE action = 'account.rotate' AND outcome = 'success'
			AND details LIKE '%interrupted rotation%'`).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	before := interrupted()
	w.srv.Proc.Stop(syscall.SIGTERM)
	w.srv.Proc = e2e.Start(t, []string{"AIRLOCK_ROOT_KEY=" + w.srv.RootKey, "AIRLOCK_DATABASE_URL=" + storeURL, pam.CrashBeforePromoteEnv + "=1"},
		"server", "--listen", strings.TrimPrefix(w.srv.URL, "http://"), "--data-dir", w.srv.DataDir)
	e2e.WaitReady(t, w.srv.URL)
	w.waitGateway("dc1", true)
	crashed := w.srv.Proc
	_, _, _ = w.admin.Run("", "accounts", "rotate", "app", "--project-id", w.project)
	if code := crashed.Wait(t, 60*time.Second); code != 86 {
		t.Fatalf("the server with the crash hook exited %d, want 86:\n%s", code, tail(crashed.Stderr()))
	}
	var pending string
	if err := store.QueryRow(ctx, `SELECT pending_attempt FROM accounts WHERE name = 'app'`).Scan(&pending); err != nil || pending == "" {
		t.Fatalf("no pending password after the crash (%q, %v)", pending, err)
	}
	// The dead server's lease is over (as it would be after two minutes).
	if _, err := store.Exec(ctx, `UPDATE jobs SET lease_until = 1 WHERE kind = 'account.rotate'`); err != nil {
		t.Fatal(err)
	}
	w.srv.Restart(t)
	w.waitGateway("dc1", true)
	deadline := time.Now().Add(90 * time.Second)
	for {
		if err := store.QueryRow(ctx, `SELECT pending_attempt FROM accounts WHERE name = 'app'`).Scan(&pending); err != nil {
			t.Fatal(err)
		}
		if pending == "" && get().Status == "ok" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the interrupted rotation was never settled: %+v\nserver:\n%s", get(), tail(w.srv.Proc.Stderr()))
		}
		time.Sleep(500 * time.Millisecond)
	}
	if n := interrupted() - before; n != 1 {
		t.Fatalf("%d new audit entries say the interrupted rotation's password was kept, want 1", n)
	}
	logsIn("the server killed between ALTER and promote")
}
