package secrets_test

import (
	"bytes"
	"context"
	"errors"
	"os"
	"testing"

	"github.com/google/uuid"

	"github.com/airlockpam/airlock/internal/api"
	"github.com/airlockpam/airlock/internal/errs"
	"github.com/airlockpam/airlock/internal/keyring"
	"github.com/airlockpam/airlock/internal/project"
	"github.com/airlockpam/airlock/internal/secrets"
	"github.com/airlockpam/airlock/internal/store"
	"github.com/airlockpam/airlock/internal/testenv"
)

type fixture struct {
	db       *store.DB
	svc      *secrets.Service
	projects *project.Service
}

func TestMain(m *testing.M) {
	code := m.Run()
	testenv.CleanupShared()
	os.Exit(code)
}

// onEachStore runs f on an SQLite store and on a PostgreSQL one.
func onEachStore(t *testing.T, f func(t *testing.T, fx *fixture)) {
	for _, b := range []struct {
		name string
		cfg  func(t *testing.T) store.Config
	}{
		{"sqlite", func(t *testing.T) store.Config { return store.Config{DataDir: t.TempDir()} }},
		{"postgres", func(t *testing.T) store.Config {
			return store.Config{DatabaseURL: testenv.SharedPostgres(t).SuperURL()}
		}},
	} {
		t.Run(b.name, func(t *testing.T) {
			ctx := context.Background()
			db, err := store.Open(ctx, b.cfg(t))
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { db.Close() })
			root, _ := keyring.ParseRootKey(keyring.GenerateRootKey())
			kr, err := keyring.New(ctx, db, root)
			if err != nil {
				t.Fatal(err)
			}
			f(t, newFixtureOn(t, db, kr))
		})
	}
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	db, kr := testenv.OpenStore(t)
	return newFixtureOn(t, db, kr)
}

func newFixtureOn(t *testing.T, db *store.DB, kr *keyring.Keyring) *fixture {
	t.Helper()
	if _, err := db.Exec(`INSERT INTO organizations (id, name, created_at) VALUES ('org', 'org', 0)`); err != nil {
		t.Fatal(err)
	}
	projects := project.New(db, kr, nil)
	return &fixture{db: db, svc: secrets.New(db, kr, projects), projects: projects}
}

func (f *fixture) user(t *testing.T, email string) context.Context {
	t.Helper()
	id := uuid.NewString()
	if _, err := f.db.Exec(`INSERT INTO users (id, org_id, email, password_hash, created_at, updated_at)
		VALUES ($1, 'org', $2, 'x', 0, 0)`, id, email); err != nil {
		t.Fatal(err)
	}
	return api.WithPrincipal(context.Background(), &api.Principal{Kind: api.SubjectUser, ID: id, OrgID: "org", Name: email})
}

func (f *fixture) project(t *testing.T, ctx context.Context, name string) string {
	t.Helper()
	p, err := f.projects.Create(ctx, name, "", "")
	if err != nil {
		t.Fatal(err)
	}
	return p.ID
}

// at is the root folder of an environment.
func at(env string) secrets.Place { return secrets.Place{Environment: env, Path: "/"} }

// value returns a reader of a Get's answer that fails t unless it holds a value.
func value(t *testing.T) func(*secrets.Secret, error) string {
	return func(s *secrets.Secret, err error) string {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		if s.Value == nil {
			t.Fatal("no value")
		}
		return *s.Value
	}
}

func TestSetGetVersions(t *testing.T) {
	onEachStore(t, func(t *testing.T, f *fixture) {
		alice := f.user(t, "alice@example.com")
		pid := f.project(t, alice, "payments")

		s1, err := f.svc.Set(alice, pid, at("prod"), "DB_PASSWORD", "first-s3cret")
		if err != nil {
			t.Fatal(err)
		}
		if s1.Version != 1 || s1.Value != nil || s1.UpdatedBy != "alice@example.com" {
			t.Fatalf("Set = %+v", s1)
		}
		s2, err := f.svc.Set(alice, pid, at("prod"), "DB_PASSWORD", "second-s3cret")
		if err != nil || s2.Version != 2 {
			t.Fatalf("second Set = %+v, %v", s2, err)
		}
		if _, err := f.svc.Set(alice, pid, at("dev"), "DB_PASSWORD", "dev-s3cret"); err != nil {
			t.Fatal(err)
		}
		got, err := f.svc.Get(alice, pid, at("prod"), "DB_PASSWORD", 0)
		if v := value(t)(got, err); v != "second-s3cret" || got.Version != 2 {
			t.Fatalf("Get = %q v%d, want the newest version", v, got.Version)
		}
		if v := value(t)(f.svc.Get(alice, pid, at("dev"), "DB_PASSWORD", 0)); v != "dev-s3cret" {
			t.Fatalf("environments are not apart: dev holds %q", v)
		}

		// Values are stored sealed.
		rows, err := f.db.Query(`SELECT value_enc FROM secret_versions`)
		if err != nil {
			t.Fatal(err)
		}
		defer rows.Close()
		for rows.Next() {
			var b []byte
			if err := rows.Scan(&b); err != nil {
				t.Fatal(err)
			}
			if bytes.Contains(b, []byte("s3cret")) {
				t.Fatal("a value is stored in the clear")
			}
		}

		list, err := f.svc.List(alice, pid, at("prod"))
		if err != nil || len(list) != 1 || list[0].Name != "DB_PASSWORD" || list[0].Version != 2 || list[0].Value != nil {
			t.Fatalf("List = %+v, %v; want one entry, version 2, no value", list, err)
		}

		if err := f.svc.Delete(alice, pid, at("prod"), "DB_PASSWORD"); err != nil {
			t.Fatal(err)
		}
		if _, err := f.svc.Get(alice, pid, at("prod"), "DB_PASSWORD", 0); !errs.Is(err, errs.NotFound) {
			t.Fatalf("a deleted secret: %v, want not found", err)
		}
		if list, _ := f.svc.List(alice, pid, at("prod")); len(list) != 0 {
			t.Fatalf("a deleted secret is listed: %+v", list)
		}
		s3, err := f.svc.Set(alice, pid, at("prod"), "DB_PASSWORD", "third-s3cret")
		if err != nil || s3.Version != 4 {
			t.Fatalf("writing after a delete: %+v %v; want version 4 (versions are never reused)", s3, err)
		}
	})
}

// TestSealedToTheRow: a ciphertext copied to another row, or to another
// project, does not open there; the reader is told, not handed garbage.
func TestSealedToTheRow(t *testing.T) {
	f := newFixture(t)
	alice := f.user(t, "alice@example.com")
	pid := f.project(t, alice, "payments")
	other := f.project(t, alice, "billing")
	for _, s := range []struct{ project, name, value string }{
		{pid, "A", "value-of-a"}, {pid, "B", "value-of-b"}, {other, "C", "value-of-c"},
	} {
		if _, err := f.svc.Set(alice, s.project, at("prod"), s.name, s.value); err != nil {
			t.Fatal(err)
		}
	}
	copyValue := func(from, to string) {
		t.Helper()
		if _, err := f.db.Exec(`UPDATE secret_versions SET value_enc = (SELECT value_enc FROM secret_versions WHERE name = $1) WHERE name = $2`, from, to); err != nil {
			t.Fatal(err)
		}
	}
	copyValue("A", "B")
	_, err := f.svc.Get(alice, pid, at("prod"), "B", 0)
	if !errs.Is(err, errs.DataLoss) {
		t.Fatalf("a value moved to another row: %v, want data loss", err)
	}
	if v := value(t)(f.svc.Get(alice, pid, at("prod"), "A", 0)); v != "value-of-a" {
		t.Fatalf("the original row reads %q", v)
	}
	copyValue("A", "C")
	if _, err := f.svc.Get(alice, other, at("prod"), "C", 0); !errs.Is(err, errs.DataLoss) {
		t.Fatalf("a value moved to another project: %v, want data loss", err)
	}
}

func TestWhoMayRead(t *testing.T) {
	f := newFixture(t)
	alice := f.user(t, "alice@example.com")
	viewer := f.user(t, "viewer@example.com")
	stranger := f.user(t, "stranger@example.com")
	pid := f.project(t, alice, "payments")
	if _, err := f.projects.SetMember(alice, pid, "viewer@example.com", "", project.RoleViewer); err != nil {
		t.Fatal(err)
	}
	if _, err := f.svc.Set(alice, pid, at("prod"), "TOKEN", "s3cret"); err != nil {
		t.Fatal(err)
	}
	// A viewer sees names, not values, and cannot write.
	if list, err := f.svc.List(viewer, pid, at("prod")); err != nil || len(list) != 1 {
		t.Fatalf("a viewer's List = %+v, %v", list, err)
	}
	if _, err := f.svc.Get(viewer, pid, at("prod"), "TOKEN", 0); !errs.Is(err, errs.Forbidden) {
		t.Fatalf("a viewer read a value: %v", err)
	}
	if _, err := f.svc.Set(viewer, pid, at("prod"), "TOKEN", "mine"); !errs.Is(err, errs.Forbidden) {
		t.Fatalf("a viewer wrote a secret: %v", err)
	}
	if err := f.svc.Delete(viewer, pid, at("prod"), "TOKEN"); !errs.Is(err, errs.Forbidden) {
		t.Fatalf("a viewer deleted a secret: %v", err)
	}
	// A non-member learns nothing.
	if _, err := f.svc.List(stranger, pid, at("prod")); !errs.Is(err, errs.NotFound) {
		t.Fatalf("a non-member listed secrets: %v", err)
	}
	if _, err := f.svc.Get(stranger, pid, at("prod"), "TOKEN", 0); !errs.Is(err, errs.NotFound) {
		t.Fatalf("a non-member read a secret: %v", err)
	}
}

func TestNamesValidated(t *testing.T) {
	f := newFixture(t)
	alice := f.user(t, "alice@example.com")
	pid := f.project(t, alice, "payments")
	for _, tc := range []struct{ env, name, field string }{
		{"Prod", "A", "query.environment"},
		{"-prod", "A", "query.environment"},
		{"prod", "1A", "path.name"},
		{"prod", "A B", "path.name"},
		{"prod", "../A", "path.name"},
	} {
		_, err := f.svc.Set(alice, pid, at(tc.env), tc.name, "v")
		var e *errs.Error
		if !errs.Is(err, errs.Invalid) || !errors.As(err, &e) || e.Field != tc.field {
			t.Errorf("Set(%q, %q): %v, want invalid %s", tc.env, tc.name, err, tc.field)
		}
	}
	// No environment: the project's first one (the API before environments).
	if sec, err := f.svc.Set(alice, pid, at(""), "NO_ENV", "v"); err != nil || sec.Environment != "dev" {
		t.Fatalf("Set without an environment = %+v, %v; want dev", sec, err)
	}
	if _, err := f.svc.CreateEnvironment(alice, pid, "prod-eu", "Production (EU)"); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"_X", "a.b-c_9"} {
		if _, err := f.svc.Set(alice, pid, at("prod-eu"), name, "v"); err != nil {
			t.Errorf("Set(%q): %v", name, err)
		}
	}
}
