package appconn_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"testing"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/airlockpam/airlock/internal/api"
	"github.com/airlockpam/airlock/internal/appconn"
	"github.com/airlockpam/airlock/internal/errs"
	"github.com/airlockpam/airlock/internal/project"
	"github.com/airlockpam/airlock/internal/store"
	"github.com/airlockpam/airlock/internal/testenv"
)

func TestMain(m *testing.M) {
	code := m.Run()
	testenv.CleanupShared()
	os.Exit(code)
}

type fixture struct {
	db    *store.DB
	svc   *appconn.Service
	pg    testenv.Database
	ctx   context.Context
	proj  string
	guard *appconn.Guard
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	db, kr := testenv.OpenStore(t)
	if _, err := db.Exec(`INSERT INTO organizations (id, name, created_at) VALUES ('org', 'org', 0)`); err != nil {
		t.Fatal(err)
	}
	id := uuid.NewString()
	if _, err := db.Exec(`INSERT INTO users (id, org_id, email, password_hash, created_at, updated_at) VALUES ($1, 'org', 'alice@example.com', 'x', 0, 0)`, id); err != nil {
		t.Fatal(err)
	}
	ctx := api.WithPrincipal(context.Background(), &api.Principal{Kind: api.SubjectUser, ID: id, OrgID: "org", Name: "alice@example.com"})
	projects := project.New(db, kr, nil)
	p, err := projects.Create(ctx, "payments", "", "")
	if err != nil {
		t.Fatal(err)
	}
	g := &appconn.Guard{AllowInternal: true}
	return &fixture{db: db, pg: testenv.SharedPostgres(t), ctx: ctx, proj: p.ID, guard: g,
		svc: appconn.New(appconn.Config{DB: db, Keyring: kr, Projects: projects, Guard: g})}
}

// role creates a login role with a password and returns its name.
func (f *fixture) role(t *testing.T, password string) string {
	t.Helper()
	name := "app_" + strings.ReplaceAll(uuid.NewString()[:8], "-", "")
	f.super(t, fmt.Sprintf(`CREATE ROLE %s LOGIN PASSWORD '%s'`, name, password))
	return name
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

// logsIn says whether user logs in with password.
func (f *fixture) logsIn(user, password string) bool {
	conn, err := pgx.Connect(context.Background(), f.pg.Cluster.URL(user, password, f.pg.Name, "verify-full"))
	if err != nil {
		return false
	}
	conn.Close(context.Background())
	return true
}

func (f *fixture) creds(user, password string) appconn.Credentials {
	return appconn.Credentials{Host: f.pg.Cluster.Host, Port: f.pg.Cluster.Port, Database: f.pg.Name, Username: user, Password: password,
		SSLEnabled: true, SSLRejectUnauthorized: true, SSLCertificate: string(f.pg.Cluster.CA.CertPEM)}
}

func (f *fixture) count(t *testing.T) int {
	t.Helper()
	var n int
	if err := f.db.QueryRow(`SELECT COUNT(*) FROM app_connections`).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

func TestCreateGetUpdateDelete(t *testing.T) {
	f := newFixture(t)
	user := f.role(t, "orig-pw-1")
	// A wrong password: refused, nothing saved.
	_, err := f.svc.Create(f.ctx, appconn.CreateInput{Name: "orders", Method: "username-and-password", ProjectID: f.proj, Credentials: f.creds(user, "wrong")})
	if !errs.Is(err, errs.Invalid) || !strings.Contains(err.Error(), "not saved") || f.count(t) != 0 {
		t.Fatalf("a wrong password: %v (%d saved)", err, f.count(t))
	}
	for _, bad := range []appconn.CreateInput{
		{Name: "Orders", Method: "username-and-password", ProjectID: f.proj, Credentials: f.creds(user, "orig-pw-1")},
		{Name: "orders", Method: "iam", ProjectID: f.proj, Credentials: f.creds(user, "orig-pw-1")},
		{Name: "orders", Method: "username-and-password", ProjectID: f.proj, Credentials: f.creds(user, "")},
	} {
		if _, err := f.svc.Create(f.ctx, bad); !errs.Is(err, errs.Invalid) {
			t.Errorf("Create(%+v): %v, want invalid", bad, err)
		}
	}
	c, err := f.svc.Create(f.ctx, appconn.CreateInput{Name: "orders", Method: "username-and-password", ProjectID: f.proj, Credentials: f.creds(user, "orig-pw-1")})
	if err != nil {
		t.Fatal(err)
	}
	if c.Version != 1 || c.App != "postgres" || c.Credentials.Password != "" || c.OrgID != "org" || c.IsPlatformManagedCredentials {
		t.Fatalf("Create = %+v", c)
	}
	if _, err := f.svc.Create(f.ctx, appconn.CreateInput{Name: "orders", Method: "username-and-password", ProjectID: f.proj, Credentials: f.creds(user, "orig-pw-1")}); !errs.Is(err, errs.Conflict) {
		t.Fatalf("a second connection of that name: %v", err)
	}
	if g, err := f.svc.GetByName(f.ctx, f.proj, "orders"); err != nil || g.ID != c.ID {
		t.Fatalf("GetByName = %+v, %v", g, err)
	}
	if l, err := f.svc.List(f.ctx, f.proj); err != nil || len(l) != 1 || l[0].Credentials.Password != "" {
		t.Fatalf("List = %+v, %v", l, err)
	}
	// An update with a wrong password changes nothing; a right one does.
	bad := f.creds(user, "wrong")
	if _, err := f.svc.Update(f.ctx, c.ID, appconn.UpdateInput{Credentials: &bad}); !errs.Is(err, errs.Invalid) {
		t.Fatalf("an update with a wrong password: %v", err)
	}
	name := "orders-db"
	if u, err := f.svc.Update(f.ctx, c.ID, appconn.UpdateInput{Name: &name}); err != nil || u.Version != 2 || u.Name != "orders-db" {
		t.Fatalf("Update = %+v, %v", u, err)
	}
	noPw := f.creds(user, "")
	if u, err := f.svc.Update(f.ctx, c.ID, appconn.UpdateInput{Credentials: &noPw}); err != nil || u.Version != 3 {
		t.Fatalf("an update keeping the stored password: %+v, %v", u, err)
	}
	got, _ := f.svc.Get(f.ctx, c.ID)
	if _, pw, err := f.svc.Login(f.ctx, got); err != nil || pw != "orig-pw-1" {
		t.Fatalf("Login after updates: %q, %v", pw, err)
	}
	f.svc.SetUsedBy(func(context.Context, string) (string, error) { return "secret rotation orders-creds", nil })
	if err := f.svc.Delete(f.ctx, c.ID); !errs.Is(err, errs.Conflict) || !strings.Contains(err.Error(), "orders-creds") {
		t.Fatalf("deleting a connection in use: %v, want conflict naming the rotation", err)
	}
	f.svc.SetUsedBy(nil)
	if err := f.svc.Delete(f.ctx, c.ID); err != nil || f.count(t) != 0 {
		t.Fatalf("Delete: %v", err)
	}
}

// TestPlatformManaged: the user gets a new password that only the server
// holds; the original no longer logs in; the credentials cannot change.
func TestPlatformManaged(t *testing.T) {
	f := newFixture(t)
	user := f.role(t, "orig-pw-2")
	c, err := f.svc.Create(f.ctx, appconn.CreateInput{Name: "managed", Method: "username-and-password", IsPlatformManagedCredentials: true,
		ProjectID: f.proj, Credentials: f.creds(user, "orig-pw-2")})
	if err != nil {
		t.Fatal(err)
	}
	if f.logsIn(user, "orig-pw-2") {
		t.Fatal("the original password still logs in")
	}
	_, pw, err := f.svc.Login(f.ctx, c)
	if err != nil || pw == "orig-pw-2" || !f.logsIn(user, pw) {
		t.Fatalf("the stored password: %v (logs in: %v)", err, f.logsIn(user, pw))
	}
	other := f.creds(user, "x")
	if _, err := f.svc.Update(f.ctx, c.ID, appconn.UpdateInput{Credentials: &other}); !errs.Is(err, errs.Invalid) {
		t.Fatalf("changing a platform-managed connection's credentials: %v", err)
	}
}

// TestPlatformManagedSaveFails: when saving the new password fails after
// the database took it, the new password is still stored (pending) and the
// next use settles it: it logs in, the original does not.
func TestPlatformManagedSaveFails(t *testing.T) {
	f := newFixture(t)
	user := f.role(t, "orig-pw-3")
	f.svc.SetAfterPasswordChange(func() error { return errors.New("injected: the store went away") })
	_, err := f.svc.Create(f.ctx, appconn.CreateInput{Name: "managed", Method: "username-and-password", IsPlatformManagedCredentials: true,
		ProjectID: f.proj, Credentials: f.creds(user, "orig-pw-3")})
	if err == nil || !strings.Contains(err.Error(), "pending") {
		t.Fatalf("Create with a failing save: %v", err)
	}
	f.svc.SetAfterPasswordChange(nil)
	if f.logsIn(user, "orig-pw-3") {
		t.Fatal("the original password still logs in")
	}
	c, err := f.svc.GetByName(f.ctx, f.proj, "managed")
	if err != nil {
		t.Fatal(err)
	}
	_, pw, err := f.svc.Login(f.ctx, c)
	if err != nil || !f.logsIn(user, pw) {
		t.Fatalf("after the failed save the stored password does not log in: %v", err)
	}
	var pending int
	f.db.QueryRow(`SELECT COUNT(*) FROM app_connections WHERE pending_password_enc IS NOT NULL`).Scan(&pending)
	if pending != 0 {
		t.Fatal("the pending password was not promoted")
	}
}

// TestInternalAddressRefused: without the setting the server does not log
// in to the test PostgreSQL on 127.0.0.1, and saves nothing.
func TestInternalAddressRefused(t *testing.T) {
	f := newFixture(t)
	f.guard.AllowInternal = false
	user := f.role(t, "orig-pw-4")
	_, err := f.svc.Create(f.ctx, appconn.CreateInput{Name: "local", Method: "username-and-password", ProjectID: f.proj, Credentials: f.creds(user, "orig-pw-4")})
	if !errs.Is(err, errs.Invalid) || !strings.Contains(err.Error(), appconn.AllowInternalEnv) || f.count(t) != 0 {
		t.Fatalf("127.0.0.1 without the setting: %v", err)
	}
}
