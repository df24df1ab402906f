package e2e_test

import (
	"database/sql"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/airlockpam/airlock/internal/e2e"
	"github.com/airlockpam/airlock/internal/secretrotation"
	"github.com/airlockpam/airlock/internal/testenv"
)

// TestSecretsRotationScheduleCLI: a daily dual-user rotation driven by its
// schedule alone, in the real server, over several periods. The test moves
// time the only way a running server lets it: it makes the rotation's job
// due now in the store, as the passing of a day would; the server's
// scheduler then rotates on its own. After every scheduled rotation,
// `airlock run -- psql` logs in as the other user, the previous
// credentials still log in, those from two rotations ago do not, and the
// next rotation is due again a day later, at the rotate-at time.
func TestSecretsRotationScheduleCLI(t *testing.T) {
	pg := testenv.SharedPostgres(t)
	srv := e2e.StartServer(t, "AIRLOCK_ALLOW_INTERNAL_IP_CONNECTIONS=true")
	admin := e2e.NewUser(t)
	admin.Login(srv, srv.AdminEmail, srv.AdminPassword)
	project := strings.TrimSpace(admin.Must("", "projects", "create", "billing"))
	pgRole(t, pg, "sched_rotator", "sched-rotator-pw")
	pgRoleExec(t, pg, `ALTER ROLE sched_rotator WITH CREATEROLE`)
	pgRole(t, pg, "billing_a", "initial-a")
	pgRole(t, pg, "billing_b", "initial-b")
	caFile := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(caFile, pg.Cluster.CA.CertPEM, 0o644); err != nil {
		t.Fatal(err)
	}
	admin.Must("sched-rotator-pw\n", "app-connections", "create", "postgres", "--project-id", project, "--name", "billing-db", "--host", "127.0.0.1",
		"--port", fmt.Sprint(pg.Cluster.Port), "--database", pg.Name, "--username", "sched_rotator", "--password-stdin", "--ssl-ca-file", caFile)
	admin.Must("", "secrets", "folders", "create", "/db/billing", "--project-id", project, "--env", "prod")
	at := []string{"--project-id", project, "--env", "prod", "--path", "/db/billing"}
	admin.Must("", "secret-rotations", "create", "postgres-credentials", "--project-id", project, "--name", "billing-creds", "--connection", "billing-db",
		"--env", "prod", "--path", "/db/billing", "--interval", "1", "--rotate-at", "02:00", "--timezone", "Europe/Berlin",
		"--username1", "billing_a", "--username2", "billing_b", "--username-secret", "PGUSER", "--password-secret", "PGPASSWORD")

	admin.Env = []string{"PGHOST=127.0.0.1", "PGPORT=" + fmt.Sprint(pg.Cluster.Port), "PGDATABASE=" + pg.Name, "PGSSLMODE=verify-full",
		"PGSSLROOTCERT=" + caFile, "PGCONNECT_TIMEOUT=30"}
	whoami := func() string {
		t.Helper()
		out := admin.Must("", append(append([]string{"run"}, at...), "--", "psql", "-X", "-A", "-t", "-c", "select current_user")...)
		return strings.TrimSpace(out)
	}
	published := func() (string, string) {
		t.Helper()
		var m map[string]string
		admin.JSON(&m, "", append([]string{"export", "--format", "json"}, at...)...)
		return m["PGUSER"], m["PGPASSWORD"]
	}
	type rotation struct {
		LastRotatedAt  *time.Time `json:"lastRotatedAt"`
		NextRotationAt *time.Time `json:"nextRotationAt"`
		RotationStatus string     `json:"rotationStatus"`
		ActiveUsername string     `json:"activeUsername"`
	}
	get := func() rotation {
		t.Helper()
		var r struct {
			SecretRotation rotation `json:"secretRotation"`
		}
		admin.JSON(&r, "", "secret-rotations", "get", "billing-creds", "--project-id", project)
		return r.SecretRotation
	}

	db, err := sql.Open("sqlite", "file:"+filepath.Join(srv.DataDir, "airlock.db")+"?_pragma=busy_timeout(10000)")
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	// makeDue is a day passing: the job's due time is now.
	makeDue := func() {
		t.Helper()
		res, err := db.Exec(`UPDATE jobs SET run_at = $1 WHERE kind = $2`, time.Now().Add(-time.Second).UnixMicro(), secretrotation.KindRotate)
		if err != nil {
			t.Fatal(err)
		}
		if n, _ := res.RowsAffected(); n != 1 {
			t.Fatalf("%d jobs of the rotation in the store, want 1", n)
		}
	}

	if got := whoami(); got != "billing_a" {
		t.Fatalf("after create, psql logs in as %q, want billing_a", got)
	}
	berlin, _ := time.LoadLocation("Europe/Berlin")
	history := [][2]string{}
	u, p := published()
	history = append(history, [2]string{u, p})
	want := "billing_b"
	for i := 1; i <= 3; i++ {
		before := get()
		makeDue()
		var after rotation
		deadline := time.Now().Add(60 * time.Second)
		for {
			after = get()
			if after.LastRotatedAt != nil && (before.LastRotatedAt == nil || after.LastRotatedAt.After(*before.LastRotatedAt)) {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("period %d: the scheduler did not rotate within a minute of the due time: %+v", i, after)
			}
			time.Sleep(200 * time.Millisecond)
		}
		if after.RotationStatus != "ok" || after.ActiveUsername != want {
			t.Fatalf("period %d: status %q, active %q; want ok and %s", i, after.RotationStatus, after.ActiveUsername, want)
		}
		if got := whoami(); got != want {
			t.Fatalf("period %d: psql logs in as %q, want %s", i, got, want)
		}
		prev := history[len(history)-1]
		if !pgLogsIn(pg, prev[0], prev[1]) {
			t.Fatalf("period %d: the previous credentials of %s stopped working", i, prev[0])
		}
		if len(history) >= 2 {
			if old := history[len(history)-2]; pgLogsIn(pg, old[0], old[1]) {
				t.Fatalf("period %d: the credentials from two rotations ago still log in", i)
			}
		}
		u, p := published()
		history = append(history, [2]string{u, p})
		// The schedule moved on by itself: due again within a day, at 02:00 Berlin time.
		if after.NextRotationAt == nil || !after.NextRotationAt.After(time.Now()) || after.NextRotationAt.After(time.Now().Add(25*time.Hour)) {
			t.Fatalf("period %d: next rotation %v, want within the next day", i, after.NextRotationAt)
		}
		if local := after.NextRotationAt.In(berlin); local.Hour() != 2 || local.Minute() != 0 {
			t.Fatalf("period %d: next rotation at %s, want 02:00 Berlin time", i, local)
		}
		if want == "billing_a" {
			want = "billing_b"
		} else {
			want = "billing_a"
		}
	}
}
