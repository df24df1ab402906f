package e2e_test

import (
	"context"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/airlockpam/airlock/internal/e2e"
	"github.com/airlockpam/airlock/internal/testenv"
)

// TestScheduledRotationOnTwoServers runs two `airlock server` processes on
// one PostgreSQL store, with the gateway connected to the first only.
// Three times, the account's rotation job is made due in the store (the
// clock moved by a day); each due rotation runs exactly once, whichever
// replica claims it (a replica that claims a job whose gateway is
// connected to the other hands it over), the audit log has one
// account.rotate per period and no failure, and `db access` through the
// second replica connects with the newest password.
func TestScheduledRotationOnTwoServers(t *testing.T) {
	storePG := testenv.StartPostgres(t)
	storeURL := storePG.SuperURL(testenv.AppDatabase)
	a := e2e.StartServer(t, "AIRLOCK_DATABASE_URL="+storeURL)
	b := a.Replica(t)
	w := newWorldWith(t, a)
	ctx := context.Background()
	super, err := pgx.Connect(ctx, w.pg.SuperURL(testenv.AppDatabase))
	if err != nil {
		t.Fatal(err)
	}
	defer super.Close(ctx)
	for _, stmt := range []string{
		`CREATE ROLE rep_app LOGIN PASSWORD 'first-app-Pa55'`,
		`CREATE ROLE rep_rotator LOGIN CREATEROLE PASSWORD 'rotator-Pa55'`,
		`GRANT SELECT ON items TO rep_app`,
	} {
		if _, err := super.Exec(ctx, stmt); err != nil {
			t.Fatalf("%s: %v", stmt, err)
		}
	}
	w.admin.Must("rotator-Pa55", "resources", "update", "main-db", "--project-id", w.project,
		"--rotation-username", "rep_rotator", "--rotation-password-stdin")
	w.admin.Must("first-app-Pa55", "accounts", "create", "--project-id", w.project, "--resource", "main-db", "--name", "app",
		"--username", "rep_app", "--password-stdin", "--rotation-interval", "1d")
	store, err := pgx.Connect(ctx, storeURL)
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close(ctx)
	// The admin on the second replica.
	onB := e2e.NewUser(t)
	onB.Login(b, b.AdminEmail, b.AdminPassword)

	type rotation struct {
		Status        string
		LastRotatedAt *time.Time
		NextDueAt     *time.Time
		LastError     string
	}
	get := func(u *e2e.User) rotation {
		var acct struct{ Rotation rotation }
		u.JSON(&acct, "", "accounts", "get", "app", "--project-id", w.project)
		return acct.Rotation
	}
	var last time.Time
	for period := 1; period <= 3; period++ {
		before := get(onB)
		if before.NextDueAt == nil || time.Until(*before.NextDueAt) < 23*time.Hour {
			t.Fatalf("period %d: the next rotation is not a day away: %+v", period, before)
		}
		// A day passes: the job is due now.
		if _, err := store.Exec(ctx, `UPDATE jobs SET run_at = $1 WHERE kind = 'account.rotate'`, time.Now().UnixMicro()); err != nil {
			t.Fatal(err)
		}
		deadline := time.Now().Add(60 * time.Second)
		for {
			r := get(w.admin)
			if r.LastRotatedAt != nil && r.LastRotatedAt.After(last) && r.Status == "ok" {
				last = *r.LastRotatedAt
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("period %d: the due rotation did not run: %+v\nserver A:\n%s\nserver B:\n%s", period, r,
					tail(a.Proc.Stderr()), tail(b.Proc.Stderr()))
			}
			time.Sleep(300 * time.Millisecond)
		}
		// Let both replicas poll a few more times: nothing runs again.
		time.Sleep(3 * time.Second)
		var ok, failed int
		if err := store.QueryRow(ctx, `SELECT
				COUNT(*) FILTER (WHERE outcome = 'success'), COUNT(*) FILTER (WHERE outcome = 'failure')
			FROM audit_logs WHERE action = 'account.rotate'`).Scan(&ok, &failed); err != nil {
			t.Fatal(err)
		}
		if ok != period || failed != 0 {
			t.Fatalf("period %d: %d successful and %d failed account.rotate audit entries, want %d and 0\nserver A:\n%s\nserver B:\n%s",
				period, ok, failed, period, tail(a.Proc.Stderr()), tail(b.Proc.Stderr()))
		}
	}
	// The old password no longer logs in; db access uses the newest one
	// (through the replica the gateway is connected to: the relay does not
	// join streams across replicas yet).
	if c, err := pgx.Connect(ctx, w.pg.URL("rep_app", "first-app-Pa55", testenv.AppDatabase, "verify-full")); err == nil {
		c.Close(ctx)
		t.Fatal("the first password still logs in after three rotations")
	}
	p, url := w.access(w.admin, "app")
	var user string
	if err := connect(t, url).QueryRow(ctx, "SELECT current_user").Scan(&user); err != nil || user != "rep_app" {
		t.Fatalf("db access after the rotations: %q %v", user, err)
	}
	p.Stop(syscall.SIGINT)
}

// tail is the end of a process's output, for a failure message.
func tail(s string) string {
	if len(s) > 3000 {
		return "..." + s[len(s)-3000:]
	}
	return s
}
