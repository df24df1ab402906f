package secretrotation_test

import (
	"context"
	"fmt"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/airlockpam/airlock/internal/api"
	"github.com/airlockpam/airlock/internal/appconn"
	"github.com/airlockpam/airlock/internal/errs"
	"github.com/airlockpam/airlock/internal/jobs"
	"github.com/airlockpam/airlock/internal/keyring"
	"github.com/airlockpam/airlock/internal/project"
	"github.com/airlockpam/airlock/internal/secretrotation"
	"github.com/airlockpam/airlock/internal/secrets"
	"github.com/airlockpam/airlock/internal/store"
	"github.com/airlockpam/airlock/internal/testenv"
)

func TestMain(m *testing.M) {
	code := m.Run()
	testenv.CleanupShared()
	os.Exit(code)
}

// clock is a moved clock.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time  { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) Set(t time.Time) { c.mu.Lock(); c.t = t; c.mu.Unlock() }

type fixture struct {
	db      *store.DB
	pg      testenv.Database
	ctx     context.Context
	proj    string
	clock   *clock
	secrets *secrets.Service
	conns   *appconn.Service
	svc     *secretrotation.Service
	sched   *jobs.Scheduler
	conn    string // the app connection's name
	uid     string // alice's user id
	u1, u2  string
}

// services builds the services on a store, as a server does.
func services(db *store.DB, kr *keyring.Keyring, now func() time.Time) (*project.Service, *secrets.Service, *appconn.Service, *secretrotation.Service) {
	projects := project.New(db, kr, now)
	sec := secrets.New(db, kr, projects)
	sec.SetClock(now)
	conns := appconn.New(appconn.Config{DB: db, Keyring: kr, Projects: projects, Guard: &appconn.Guard{AllowInternal: true}, Now: now})
	svc := secretrotation.New(secretrotation.Config{DB: db, Keyring: kr, Projects: projects, Secrets: sec, Conns: conns, Now: now})
	return projects, sec, conns, svc
}

func openStore(t *testing.T, dir, rootKey string) (*store.DB, *keyring.Keyring) {
	t.Helper()
	db, err := store.Open(context.Background(), store.Config{DataDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	root, err := keyring.ParseRootKey(rootKey)
	if err != nil {
		t.Fatal(err)
	}
	kr, err := keyring.New(context.Background(), db, root)
	if err != nil {
		t.Fatal(err)
	}
	return db, kr
}

func newFixture(t *testing.T, start time.Time) *fixture {
	t.Helper()
	return newFixtureIn(t, t.TempDir(), keyring.GenerateRootKey(), start)
}

func newFixtureIn(t *testing.T, dir, rootKey string, start time.Time) *fixture {
	t.Helper()
	db, kr := openStore(t, dir, rootKey)
	if _, err := db.Exec(`INSERT INTO organizations (id, name, created_at) VALUES ('org', 'org', 0)`); err != nil {
		t.Fatal(err)
	}
	uid := uuid.NewString()
	if _, err := db.Exec(`INSERT INTO users (id, org_id, email, password_hash, created_at, updated_at) VALUES ($1, 'org', 'alice@example.com', 'x', 0, 0)`, uid); err != nil {
		t.Fatal(err)
	}
	f := &fixture{db: db, pg: testenv.SharedPostgres(t), clock: &clock{t: start}}
	f.ctx = api.WithPrincipal(context.Background(), &api.Principal{Kind: api.SubjectUser, ID: uid, OrgID: "org", Name: "alice@example.com"})
	f.uid = uid
	var projects *project.Service
	projects, f.secrets, f.conns, f.svc = services(db, kr, f.clock.Now)
	p, err := projects.Create(f.ctx, "payments", "", "")
	if err != nil {
		t.Fatal(err)
	}
	f.proj = p.ID
	f.sched = jobs.New(db, jobs.WithClock(f.clock.Now))
	f.svc.UseJobs(f.sched)

	// The rotator may change other users' passwords; the two users take turns.
	sfx := strings.ReplaceAll(uuid.NewString()[:8], "-", "")
	rot := "rotator_" + sfx
	f.u1, f.u2 = "orders_a_"+sfx, "orders_b_"+sfx
	f.super(t, fmt.Sprintf(`CREATE ROLE %s LOGIN CREATEROLE PASSWORD 'rotator-pw'`, rot))
	f.super(t, fmt.Sprintf(`CREATE ROLE %s LOGIN PASSWORD 'initial-a'`, f.u1))
	f.super(t, fmt.Sprintf(`CREATE ROLE %s LOGIN PASSWORD 'initial-b'`, f.u2))
	f.conn = "orders-db"
	if _, err := f.conns.Create(f.ctx, appconn.CreateInput{Name: f.conn, Method: "username-and-password", ProjectID: f.proj, Credentials: appconn.Credentials{
		Host: f.pg.Cluster.Host, Port: f.pg.Cluster.Port, Database: f.pg.Name, Username: rot, Password: "rotator-pw",
		SSLEnabled: true, SSLRejectUnauthorized: true, SSLCertificate: string(f.pg.Cluster.CA.CertPEM)}}); err != nil {
		t.Fatal(err)
	}
	if _, err := f.secrets.CreateFolder(f.ctx, f.proj, secrets.Place{Environment: "prod", Path: "/db/orders"}); err != nil {
		t.Fatal(err)
	}
	return f
}

func (f *fixture) super(t *testing.T, stmt string) {
	t.Helper()
	conn, err := pgx.Connect(context.Background(), f.pg.SuperURL())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	if _, err := conn.Exec(context.Background(), stmt); err != nil {
		t.Fatal(err)
	}
}

func (f *fixture) logsIn(user, password string) bool {
	conn, err := pgx.Connect(context.Background(), f.pg.Cluster.URL(user, password, f.pg.Name, "verify-full"))
	if err != nil {
		return false
	}
	conn.Close(context.Background())
	return true
}

var orders = secrets.Place{Environment: "prod", Path: "/db/orders"}

// published returns the mapped secrets' values, as `airlock run` gets them.
func (f *fixture) published(t *testing.T) (string, string) {
	t.Helper()
	list, err := f.secrets.Reveal(f.ctx, f.proj, orders)
	if err != nil {
		t.Fatal(err)
	}
	var u, p string
	for _, s := range list {
		switch s.Name {
		case "PGUSER":
			u = *s.Value
		case "PGPASSWORD":
			p = *s.Value
		}
	}
	return u, p
}

func (f *fixture) input(name string) secretrotation.CreateInput {
	return secretrotation.CreateInput{Name: name, ProjectID: f.proj, Connection: f.conn, Environment: "prod", SecretPath: "/db/orders",
		RotationInterval: 1, RotateAt: "03:00", TimeZone: "Europe/Berlin", AutoRotation: true,
		Parameters: secretrotation.Parameters{Username1: f.u1, Username2: f.u2}, SecretsMapping: secretrotation.SecretsMapping{Username: "PGUSER", Password: "PGPASSWORD"}}
}

// runDue moves the clock to the rotation's next time and runs due jobs.
func (f *fixture) runDue(t *testing.T, name string) time.Time {
	t.Helper()
	r, err := f.svc.Resolve(f.ctx, f.proj, name)
	if err != nil || r.NextRotationAt == nil {
		t.Fatalf("the rotation has no next time: %+v %v", r, err)
	}
	next := *r.NextRotationAt
	f.clock.Set(next.Add(time.Second))
	f.sched.RunDue(context.Background())
	f.sched.Wait()
	return next
}

// TestRotationOverSeveralPeriods: with the clock moved from one due time
// to the next across the spring daylight-saving change in Berlin, each
// rotation publishes the other user with a new password that logs in, the
// previous credentials still log in until the rotation after, and every
// rotation happens at 03:00 Berlin time (02:00 UTC before the change,
// 01:00 UTC after).
func TestRotationOverSeveralPeriods(t *testing.T) {
	berlin, _ := time.LoadLocation("Europe/Berlin")
	f := newFixture(t, time.Date(2026, 3, 26, 12, 0, 0, 0, berlin))
	r, err := f.svc.Create(f.ctx, f.input("orders-creds"))
	if err != nil {
		t.Fatal(err)
	}
	if r.ActiveUsername != f.u1 || r.RotationStatus != "ok" {
		t.Fatalf("after create: %+v", r)
	}
	u, p := f.published(t)
	if u != f.u1 || !f.logsIn(u, p) {
		t.Fatalf("the first published credentials (%s) do not log in", u)
	}
	var history [][2]string
	history = append(history, [2]string{u, p})
	for i := 0; i < 4; i++ {
		at := f.runDue(t, "orders-creds")
		if local := at.In(berlin); local.Hour() != 3 || local.Minute() != 0 {
			t.Fatalf("rotation %d ran at %s, want 03:00 Berlin time", i+1, local)
		}
		u, p := f.published(t)
		prev := history[len(history)-1]
		if u == prev[0] {
			t.Fatalf("rotation %d did not alternate the users: %s again", i+1, u)
		}
		if !f.logsIn(u, p) {
			t.Fatalf("rotation %d: the published credentials of %s do not log in", i+1, u)
		}
		if !f.logsIn(prev[0], prev[1]) {
			t.Fatalf("rotation %d: the previous credentials of %s stopped working", i+1, prev[0])
		}
		if len(history) >= 2 {
			if old := history[len(history)-2]; f.logsIn(old[0], old[1]) {
				t.Fatalf("rotation %d: the credentials from two rotations ago still log in", i+1)
			}
		}
		history = append(history, [2]string{u, p})
	}
	// The due times: the 27th and 28th at 03:00 CET (02:00 UTC), then the
	// 29th and 30th at 03:00 CEST (01:00 UTC).
	r, _ = f.svc.Resolve(f.ctx, f.proj, "orders-creds")
	if r.LastRotatedAt == nil || r.NextRotationAt == nil || r.NextRotationAt.UTC().Hour() != 1 {
		t.Fatalf("after the change: next %v", r.NextRotationAt)
	}
}

func TestNextRotationAcrossDST(t *testing.T) {
	berlin, _ := time.LoadLocation("Europe/Berlin")
	ny, _ := time.LoadLocation("America/New_York")
	for _, tc := range []struct {
		last     time.Time
		days     int
		at, zone string
		want     time.Time
	}{
		{time.Date(2026, 3, 28, 3, 0, 0, 0, berlin), 1, "03:00", "Europe/Berlin", time.Date(2026, 3, 29, 1, 0, 0, 0, time.UTC)},
		{time.Date(2026, 3, 27, 3, 0, 0, 0, berlin), 1, "03:00", "Europe/Berlin", time.Date(2026, 3, 28, 2, 0, 0, 0, time.UTC)},
		{time.Date(2026, 10, 24, 2, 0, 0, 0, berlin), 7, "02:00", "Europe/Berlin", time.Date(2026, 10, 31, 1, 0, 0, 0, time.UTC)},
		{time.Date(2026, 11, 1, 23, 30, 0, 0, ny), 1, "02:00", "America/New_York", time.Date(2026, 11, 2, 7, 0, 0, 0, time.UTC)},
		{time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC), 30, "00:00", "UTC", time.Date(2026, 3, 31, 0, 0, 0, 0, time.UTC)},
	} {
		if got := secretrotation.NextRotation(tc.last, tc.days, tc.at, tc.zone); !got.Equal(tc.want) {
			t.Errorf("NextRotation(%s, %d, %s %s) = %s, want %s", tc.last, tc.days, tc.at, tc.zone, got.UTC(), tc.want)
		}
	}
}

// TestKilledBetweenChangeAndPublish: a rotation stopped after the database
// took the new password and before the secrets were written leaves the
// published credentials as they were, working; the next run publishes the
// new password, which logs in.
func TestKilledBetweenChangeAndPublish(t *testing.T) {
	f := newFixture(t, time.Date(2026, 6, 1, 12, 0, 0, 0, time.UTC))
	if _, err := f.svc.Create(f.ctx, f.input("orders-creds")); err != nil {
		t.Fatal(err)
	}
	u0, p0 := f.published(t)
	f.svc.SetAfterPasswordChange(func() error { return fmt.Errorf("killed") })
	if _, err := f.svc.RotateNow(f.ctx, f.proj, "orders-creds"); err == nil {
		t.Fatal("the stopped rotation reported success")
	}
	u, p := f.published(t)
	if u != u0 || p != p0 || !f.logsIn(u, p) {
		t.Fatal("a stopped rotation changed or broke the published credentials")
	}
	r, _ := f.svc.Resolve(f.ctx, f.proj, "orders-creds")
	if r.RotationStatus != "failed" || !strings.Contains(r.LastRotationMessage, "not yet published") {
		t.Fatalf("the failure is not recorded: %+v", r)
	}
	f.svc.SetAfterPasswordChange(nil)
	if _, err := f.svc.RotateNow(f.ctx, f.proj, "orders-creds"); err != nil {
		t.Fatal(err)
	}
	u, p = f.published(t)
	if u == u0 || !f.logsIn(u, p) || !f.logsIn(u0, p0) {
		t.Fatalf("after recovery: %s (logs in %v), previous %s (logs in %v)", u, f.logsIn(u, p), u0, f.logsIn(u0, p0))
	}
}

// TestPreconditions: bad input is refused before any password changes.
func TestPreconditions(t *testing.T) {
	f := newFixture(t, time.Date(2026, 6, 1, 12, 0, 0, 0, time.UTC))
	if _, err := f.secrets.Set(f.ctx, f.proj, orders, "TAKEN", "x"); err != nil {
		t.Fatal(err)
	}
	weak := "weak_" + strings.ReplaceAll(uuid.NewString()[:8], "-", "")
	f.super(t, fmt.Sprintf(`CREATE ROLE %s LOGIN PASSWORD 'weak-pw'`, weak))
	if _, err := f.conns.Create(f.ctx, appconn.CreateInput{Name: "weak", Method: "username-and-password", ProjectID: f.proj, Credentials: appconn.Credentials{
		Host: f.pg.Cluster.Host, Port: f.pg.Cluster.Port, Database: f.pg.Name, Username: weak, Password: "weak-pw"}}); err != nil {
		t.Fatal(err)
	}
	// Each is refused with a message that names the problem.
	for what, c := range map[string]struct {
		mod  func(*secretrotation.CreateInput)
		want string
	}{
		"not a slug":          {func(in *secretrotation.CreateInput) { in.Name = "Orders Creds" }, "slug"},
		"interval 0":          {func(in *secretrotation.CreateInput) { in.RotationInterval = 0 }, "from 1 to 365"},
		"interval 366":        {func(in *secretrotation.CreateInput) { in.RotationInterval = 366 }, "from 1 to 365"},
		"rotate-at 25:00":     {func(in *secretrotation.CreateInput) { in.RotateAt = "25:00" }, "HH:MM"},
		"rotate-at noon":      {func(in *secretrotation.CreateInput) { in.RotateAt = "noon" }, "HH:MM"},
		"unknown zone":        {func(in *secretrotation.CreateInput) { in.TimeZone = "Mars/Olympus" }, "unknown time zone Mars/Olympus"},
		"the same user twice": {func(in *secretrotation.CreateInput) { in.Parameters.Username2 = in.Parameters.Username1 }, "two different database users"},
		"an unknown user":     {func(in *secretrotation.CreateInput) { in.Parameters.Username2 = "nobody_here" }, "\"nobody_here\" does not exist"},
		"a secret in use":     {func(in *secretrotation.CreateInput) { in.SecretsMapping.Password = "TAKEN" }, "TAKEN is already in use"},
		"no such folder":      {func(in *secretrotation.CreateInput) { in.SecretPath = "/db/nope" }, "no folder /db/nope"},
		"no such connection":  {func(in *secretrotation.CreateInput) { in.Connection = "nope" }, "no app connection"},
		"no CREATEROLE":       {func(in *secretrotation.CreateInput) { in.Connection = "weak" }, "needs CREATEROLE"},
	} {
		in := f.input("orders-creds")
		c.mod(&in)
		_, err := f.svc.Create(f.ctx, in)
		if err == nil || errs.Is(err, errs.Internal) || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v, want a clear error saying %q", what, err, c.want)
		}
	}
	if !f.logsIn(f.u1, "initial-a") || !f.logsIn(f.u2, "initial-b") {
		t.Fatal("a refused rotation changed a password")
	}
	if list, _ := f.svc.List(f.ctx, f.proj); len(list) != 0 {
		t.Fatalf("a refused rotation was saved: %+v", list)
	}
}

// TestMappedSecretsOwned: the mapped secrets cannot be changed by hand, and
// the connection cannot be deleted, while the rotation exists.
func TestMappedSecretsOwned(t *testing.T) {
	f := newFixture(t, time.Date(2026, 6, 1, 12, 0, 0, 0, time.UTC))
	if _, err := f.svc.Create(f.ctx, f.input("orders-creds")); err != nil {
		t.Fatal(err)
	}
	for _, err := range []error{
		func() error { _, err := f.secrets.Set(f.ctx, f.proj, orders, "PGPASSWORD", "mine"); return err }(),
		f.secrets.Delete(f.ctx, f.proj, orders, "PGUSER"),
		func() error { _, err := f.secrets.Restore(f.ctx, f.proj, orders, "PGPASSWORD", 1); return err }(),
	} {
		if !errs.Is(err, errs.Conflict) || !strings.Contains(err.Error(), "orders-creds") {
			t.Errorf("a hand edit of a mapped secret: %v, want a conflict naming the rotation", err)
		}
	}
	c, _ := f.conns.GetByName(f.ctx, f.proj, f.conn)
	if err := f.conns.Delete(f.ctx, c.ID); !errs.Is(err, errs.Conflict) || !strings.Contains(err.Error(), "orders-creds") {
		t.Fatalf("deleting the rotation's connection: %v", err)
	}
	creds, err := f.svc.Credentials(f.ctx, f.proj, "orders-creds")
	if err != nil || creds.Active != f.u1 || creds.Accounts[0].Password == "" || !f.logsIn(f.u1, creds.Accounts[0].Password) {
		t.Fatalf("Credentials = %+v, %v", creds, err)
	}
	u, p := f.published(t)
	if err := f.svc.Delete(f.ctx, f.proj, "orders-creds", false, true); err != nil {
		t.Fatal(err)
	}
	if f.logsIn(u, p) {
		t.Fatal("the published credentials still log in after a delete that revokes them")
	}
	if _, err := f.secrets.Set(f.ctx, f.proj, orders, "PGPASSWORD", "mine"); err != nil {
		t.Fatalf("after the rotation is gone the secret is an ordinary one: %v", err)
	}
}

// TestMissedRotationsRunOnce: a server that was down for several periods
// rotates once at its next start, and the next rotation is the next
// rotate-at to come, not a catch-up of every missed one.
func TestMissedRotationsRunOnce(t *testing.T) {
	f := newFixture(t, time.Date(2026, 6, 1, 12, 0, 0, 0, time.UTC))
	in := f.input("orders-creds")
	in.TimeZone = "UTC"
	if _, err := f.svc.Create(f.ctx, in); err != nil {
		t.Fatal(err)
	}
	f.clock.Set(time.Date(2026, 6, 6, 10, 0, 0, 0, time.UTC))
	f.sched.RunDue(context.Background())
	f.sched.Wait()
	h, err := f.secrets.History(f.ctx, f.proj, orders, "PGUSER")
	if err != nil || len(h) != 2 {
		t.Fatalf("PGUSER history after five missed days: %+v, %v; want one rotation after the first", h, err)
	}
	r, _ := f.svc.Resolve(f.ctx, f.proj, "orders-creds")
	if want := time.Date(2026, 6, 7, 3, 0, 0, 0, time.UTC); r.NextRotationAt == nil || !r.NextRotationAt.Equal(want) {
		t.Fatalf("next rotation %v, want %s", r.NextRotationAt, want)
	}
	if r.ActiveUsername != f.u2 {
		t.Fatalf("active user %s, want %s", r.ActiveUsername, f.u2)
	}
}

// TestScheduledFailureRetriesWithBackoff: a scheduled rotation that fails
// keeps the published credentials working, records its error and is
// retried later, each time after a longer delay; once the cause is fixed,
// the retry rotates.
func TestScheduledFailureRetriesWithBackoff(t *testing.T) {
	f := newFixture(t, time.Date(2026, 6, 1, 12, 0, 0, 0, time.UTC))
	if _, err := f.svc.Create(f.ctx, f.input("orders-creds")); err != nil {
		t.Fatal(err)
	}
	r, err := f.svc.Resolve(f.ctx, f.proj, "orders-creds")
	if err != nil {
		t.Fatal(err)
	}
	u0, p0 := f.published(t)
	// The next rotation gives the inactive user a new password and logs in
	// with it: that login fails now.
	f.super(t, fmt.Sprintf(`ALTER ROLE %s NOLOGIN`, f.u2))
	f.runDue(t, "orders-creds")
	retryAfter := func() (jobs.Status, time.Duration) {
		t.Helper()
		st, err := jobs.Get(f.ctx, f.db, f.clock.Now(), secretrotation.KindRotate, r.ID)
		if err != nil {
			t.Fatal(err)
		}
		return st, st.RunAt.Sub(f.clock.Now())
	}
	st1, d1 := retryAfter()
	if st1.Attempts != 1 || st1.LastError == "" || d1 <= 0 || d1 > time.Hour {
		t.Fatalf("after a failed run: %+v, retried in %s", st1, d1)
	}
	if got, _ := f.svc.Resolve(f.ctx, f.proj, "orders-creds"); got.RotationStatus != "failed" || got.LastRotationMessage == "" {
		t.Fatalf("the failed rotation shows %q %q", got.RotationStatus, got.LastRotationMessage)
	}
	if u, p := f.published(t); u != u0 || p != p0 || !f.logsIn(u0, p0) {
		t.Fatal("a failed rotation changed or broke the published credentials")
	}
	// The retry, when due, fails again and waits longer.
	f.clock.Set(st1.RunAt.Add(time.Second))
	f.sched.RunDue(context.Background())
	f.sched.Wait()
	st2, d2 := retryAfter()
	if st2.Attempts != 2 || d2 <= d1 {
		t.Fatalf("after a second failure: %+v, retried in %s (the first waited %s)", st2, d2, d1)
	}
	// Fixed: the next retry rotates to user 2.
	f.super(t, fmt.Sprintf(`ALTER ROLE %s LOGIN`, f.u2))
	f.clock.Set(st2.RunAt.Add(time.Second))
	f.sched.RunDue(context.Background())
	f.sched.Wait()
	u, p := f.published(t)
	if u != f.u2 || u == u0 || !f.logsIn(u, p) || !f.logsIn(u0, p0) {
		t.Fatalf("after the fix the published user is %s (logs in %v); the previous still logs in: %v", u, f.logsIn(u, p), f.logsIn(u0, p0))
	}
	if got, _ := f.svc.Resolve(f.ctx, f.proj, "orders-creds"); got.RotationStatus != "ok" {
		t.Fatalf("after the fix the rotation shows %q %q", got.RotationStatus, got.LastRotationMessage)
	}
}
