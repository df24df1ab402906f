package project_test

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/google/uuid"

	"github.com/airlockpam/airlock/internal/api"
	"github.com/airlockpam/airlock/internal/errs"
	"github.com/airlockpam/airlock/internal/project"
	"github.com/airlockpam/airlock/internal/store"
	"github.com/airlockpam/airlock/internal/testenv"
)

type fixture struct {
	db  *store.DB
	svc *project.Service
	// revocations counts calls of the OnAccessRevoked hook.
	revocations int
}

// newFixture opens a SQLite store with organizations "org" and "other".
func newFixture(t *testing.T) *fixture {
	t.Helper()
	db, kr := testenv.OpenStore(t)
	for _, org := range []string{"org", "other"} {
		if _, err := db.Exec(`INSERT INTO organizations (id, name, created_at) VALUES ($1, $1, 0)`, org); err != nil {
			t.Fatal(err)
		}
	}
	f := &fixture{db: db, svc: project.New(db, kr, nil)}
	f.svc.OnAccessRevoked(func(context.Context) { f.revocations++ })
	return f
}

// user adds a user to org and returns a context acting as it.
func (f *fixture) user(t *testing.T, org, email string, orgAdmin bool) context.Context {
	t.Helper()
	id := uuid.NewString()
	if _, err := f.db.Exec(`INSERT INTO users (id, org_id, email, password_hash, org_admin, created_at, updated_at)
		VALUES ($1, $2, $3, 'x', $4, 0, 0)`, id, org, email, orgAdmin); err != nil {
		t.Fatal(err)
	}
	return api.WithPrincipal(context.Background(), &api.Principal{Kind: api.SubjectUser, ID: id, OrgID: org, Name: email, OrgAdmin: orgAdmin})
}

func msg(err error) string {
	var e *errs.Error
	if errors.As(err, &e) {
		return e.Msg
	}
	return ""
}

func TestRoles(t *testing.T) {
	for r, ok := range map[project.Role]bool{
		project.RoleViewer: true, project.RoleMember: true, project.RoleAdmin: true,
		"": false, "owner": false, "Admin": false,
	} {
		if r.Valid() != ok {
			t.Errorf("Role(%q).Valid() = %v", r, !ok)
		}
	}
}

// TestAuthorize checks the one rule every project-scoped call starts with:
// roles rank viewer < member < admin, organization admins act as admins,
// and a non-member cannot tell the project exists.
func TestAuthorize(t *testing.T) {
	f := newFixture(t)
	alice := f.user(t, "org", "alice@example.com", false)
	bob := f.user(t, "org", "bob@example.com", false)
	carol := f.user(t, "org", "carol@example.com", false)
	dana := f.user(t, "org", "dana@example.com", false)
	root := f.user(t, "org", "root@example.com", true)
	outsider := f.user(t, "other", "eve@example.com", true) // admin of another organization

	p, err := f.svc.Create(alice, "payments", "", "")
	if err != nil {
		t.Fatal(err)
	}
	if p.Role != project.RoleAdmin {
		t.Fatalf("the creator's role is %q, want admin", p.Role)
	}
	if _, err := f.svc.SetMember(alice, p.ID, "BOB@example.com ", "", project.RoleViewer); err != nil {
		t.Fatal(err)
	}
	if _, err := f.svc.SetMember(alice, p.ID, "carol@example.com", "", project.RoleMember); err != nil {
		t.Fatal(err)
	}

	_, missingErr := f.svc.Authorize(alice, uuid.NewString(), project.RoleViewer)
	if !errs.Is(missingErr, errs.NotFound) {
		t.Fatalf("a project that does not exist: %v", missingErr)
	}

	type want int
	const (
		ok want = iota
		forbidden
		notFound
	)
	for _, tc := range []struct {
		name   string
		ctx    context.Context
		need   project.Role
		want   want
		asRole project.Role
	}{
		{"admin needs admin", alice, project.RoleAdmin, ok, project.RoleAdmin},
		{"member needs viewer", carol, project.RoleViewer, ok, project.RoleMember},
		{"member needs member", carol, project.RoleMember, ok, project.RoleMember},
		{"member needs admin", carol, project.RoleAdmin, forbidden, ""},
		{"viewer needs viewer", bob, project.RoleViewer, ok, project.RoleViewer},
		{"viewer needs member", bob, project.RoleMember, forbidden, ""},
		{"viewer needs admin", bob, project.RoleAdmin, forbidden, ""},
		{"non-member needs viewer", dana, project.RoleViewer, notFound, ""},
		{"org admin, not a member", root, project.RoleAdmin, ok, project.RoleAdmin},
		{"admin of another organization", outsider, project.RoleViewer, notFound, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := f.svc.Authorize(tc.ctx, p.ID, tc.need)
			switch tc.want {
			case ok:
				if err != nil || got.ID != p.ID || got.Role != tc.asRole {
					t.Fatalf("Authorize = %+v, %v; want the project as %s", got, err, tc.asRole)
				}
			case forbidden:
				if !errs.Is(err, errs.Forbidden) || !strings.Contains(msg(err), "needs the "+string(tc.need)+" role") {
					t.Fatalf("Authorize: %v, want forbidden naming the role", err)
				}
			case notFound:
				// Word for word what a project that does not exist gets.
				if !errs.Is(err, errs.NotFound) || msg(err) != msg(missingErr) {
					t.Fatalf("Authorize: %v, want %v", err, missingErr)
				}
			}
		})
	}

	if _, err := f.svc.Authorize(context.Background(), p.ID, project.RoleViewer); !errs.Is(err, errs.Unauthenticated) {
		t.Fatalf("an anonymous caller: %v, want unauthenticated", err)
	}
	if _, err := f.svc.Authorize(alice, "payments", project.RoleViewer); !errs.Is(err, errs.NotFound) {
		t.Fatalf("a project id that is not a UUID: %v, want not found", err)
	}
}

// TestMembership: the member rules that keep access honest.
func TestMembership(t *testing.T) {
	f := newFixture(t)
	alice := f.user(t, "org", "alice@example.com", false)
	bob := f.user(t, "org", "bob@example.com", false)
	root := f.user(t, "org", "root@example.com", true)
	f.user(t, "other", "eve@example.com", false)
	p, err := f.svc.Create(alice, "payments", "", "")
	if err != nil {
		t.Fatal(err)
	}
	aliceID := api.PrincipalFrom(alice).ID
	bobID := api.PrincipalFrom(bob).ID

	if _, err := f.svc.SetMember(alice, p.ID, "eve@example.com", "", project.RoleMember); !errs.Is(err, errs.Invalid) {
		t.Fatalf("adding a user of another organization: %v, want invalid", err)
	}
	if _, err := f.svc.SetMember(alice, p.ID, "bob@example.com", "", "owner"); !errs.Is(err, errs.Invalid) {
		t.Fatalf("an unknown role: %v, want invalid", err)
	}
	if _, err := f.svc.SetMember(alice, p.ID, "root@example.com", "", project.RoleViewer); !errs.Is(err, errs.Forbidden) {
		t.Fatalf("a project admin changing an org admin's membership: %v, want forbidden", err)
	}

	before := f.revocations
	if _, err := f.svc.SetMember(alice, p.ID, "bob@example.com", "", project.RoleMember); err != nil {
		t.Fatal(err)
	}
	if f.revocations != before {
		t.Fatal("granting a role revoked access")
	}
	// A member cannot manage members.
	if _, err := f.svc.SetMember(bob, p.ID, "bob@example.com", "", project.RoleAdmin); !errs.Is(err, errs.Forbidden) {
		t.Fatalf("a member made itself admin: %v", err)
	}
	// The last admin cannot step down or be removed.
	if _, err := f.svc.SetMember(alice, p.ID, "alice@example.com", "", project.RoleMember); !errs.Is(err, errs.Conflict) {
		t.Fatalf("the last admin stepped down: %v, want conflict", err)
	}
	if err := f.svc.RemoveMember(root, p.ID, api.SubjectUser, aliceID); !errs.Is(err, errs.Conflict) {
		t.Fatalf("the last admin was removed: %v, want conflict", err)
	}

	// Lowering a member to viewer and removing one take access away: the
	// live sessions' check runs after each.
	if _, err := f.svc.SetMember(alice, p.ID, "bob@example.com", "", project.RoleViewer); err != nil {
		t.Fatal(err)
	}
	if f.revocations != before+1 {
		t.Fatalf("lowering a member to viewer: %d revocation checks, want 1", f.revocations-before)
	}
	if _, err := f.svc.Authorize(bob, p.ID, project.RoleMember); !errs.Is(err, errs.Forbidden) {
		t.Fatalf("a viewer still uses the project: %v", err)
	}
	if err := f.svc.RemoveMember(alice, p.ID, api.SubjectUser, bobID); err != nil {
		t.Fatal(err)
	}
	if f.revocations != before+2 {
		t.Fatal("removing a member did not check live sessions")
	}
	if _, err := f.svc.Authorize(bob, p.ID, project.RoleViewer); !errs.Is(err, errs.NotFound) {
		t.Fatalf("a removed member still sees the project: %v", err)
	}
	if err := f.svc.RemoveMember(alice, p.ID, api.SubjectUser, bobID); !errs.Is(err, errs.NotFound) {
		t.Fatalf("removing a non-member: %v, want not found", err)
	}
}

func TestCreateValidates(t *testing.T) {
	f := newFixture(t)
	alice := f.user(t, "org", "alice@example.com", false)
	bob := f.user(t, "org", "bob@example.com", false)
	for _, tc := range []struct{ name, max, field string }{
		{"", "", "body.name"},
		{" padded", "", "body.name"},
		{"tab\there", "", "body.name"},
		{strings.Repeat("n", 65), "", "body.name"},
		{"ok", "30s", "body.maxSessionDuration"},
		{"ok", "721h", "body.maxSessionDuration"},
		{"ok", "forever", "body.maxSessionDuration"},
	} {
		_, err := f.svc.Create(alice, tc.name, "", tc.max)
		var e *errs.Error
		if !errors.As(err, &e) || e.Code != errs.Invalid || e.Field != tc.field {
			t.Errorf("Create(%q, max %q): %v, want invalid %s", tc.name, tc.max, err, tc.field)
		}
	}
	p, err := f.svc.Create(alice, "ok", "", "90m")
	if err != nil || p.MaxSession.Minutes() != 90 {
		t.Fatalf("Create with a 90m maximum: %+v %v", p, err)
	}
	// Names are unique in the organization, and the refusal is the same
	// whether or not the caller can see the project holding the name.
	_, err = f.svc.Create(bob, "ok", "", "")
	if !errs.Is(err, errs.Conflict) || msg(err) != project.NameTaken {
		t.Fatalf("a taken name: %v", err)
	}
}

// TestConsoleStatementTimeout: a project's browser-console statement
// timeout is 30s until its admins change it within 1s to 1h; a bad value
// names the field and changes nothing.
func TestConsoleStatementTimeout(t *testing.T) {
	f := newFixture(t)
	alice := f.user(t, "org", "alice@example.com", false)
	p, err := f.svc.Create(alice, "ops", "", "")
	if err != nil {
		t.Fatal(err)
	}
	if p.ConsoleTimeout != project.DefaultConsoleStatementTimeout || p.ConsoleStatementTimeout != "30s" {
		t.Fatalf("a new project's console timeout: %v %q", p.ConsoleTimeout, p.ConsoleStatementTimeout)
	}
	for _, bad := range []string{"0s", "500ms", "61m", "soon"} {
		_, err := f.svc.Update(alice, p.ID, project.ProjectUpdate{ConsoleStatementTimeout: &bad})
		var e *errs.Error
		if !errors.As(err, &e) || e.Code != errs.Invalid || e.Field != "body.consoleStatementTimeout" {
			t.Errorf("timeout %q: %v, want invalid body.consoleStatementTimeout", bad, err)
		}
	}
	five := "5m"
	if _, err := f.svc.Update(alice, p.ID, project.ProjectUpdate{ConsoleStatementTimeout: &five}); err != nil {
		t.Fatal(err)
	}
	got, err := f.svc.Authorize(alice, p.ID, project.RoleViewer)
	if err != nil || got.ConsoleTimeout.Minutes() != 5 || got.ConsoleStatementTimeout != "5m0s" {
		t.Fatalf("after setting 5m: %+v %v", got, err)
	}
}
