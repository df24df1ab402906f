package e2e_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/airlockpam/airlock/internal/e2e"
	"github.com/airlockpam/airlock/internal/testenv"
)

// TestRevocationEndsLiveAccess: each way of taking access away ends a
// running `db access` at once: its open connections are cut, new ones are
// refused, and the session has ended with reason revoked and a message
// naming why. The `db access` exits by itself, saying why: the session
// ended, or (when the owner's login itself went) the login was revoked.
func TestRevocationEndsLiveAccess(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	cases := []struct {
		name    string
		revoke  func(victim *e2e.User, email, resource string)
		message string
	}{
		{"removed from the project", func(_ *e2e.User, email, _ string) {
			w.admin.Must("", "projects", "members", "remove", "--project-id", w.project, "--email", email)
		}, "user removed from the project"},
		{"role lowered to viewer", func(_ *e2e.User, email, _ string) {
			w.admin.Must("", "projects", "members", "set", "--project-id", w.project, "--email", email, "--role", "viewer")
		}, "lowered to viewer"},
		{"account deleted", func(_ *e2e.User, _, resource string) {
			w.admin.Must("", "accounts", "delete", "app", "--project-id", w.project, "--resource", resource)
		}, "account deleted"},
		{"resource deleted", func(_ *e2e.User, _, resource string) {
			w.admin.Must("", "resources", "delete", resource, "--project-id", w.project)
		}, "resource deleted"},
		{"user disabled", func(_ *e2e.User, email, _ string) {
			w.admin.Must("", "users", "disable", w.svUserID(email))
		}, "user disabled"},
		{"user deleted", func(_ *e2e.User, email, _ string) {
			w.admin.Must("", "users", "delete", w.svUserID(email))
		}, "user deleted"},
		{"every token revoked", func(_ *e2e.User, email, _ string) {
			w.admin.Must("", "users", "revoke-tokens", w.svUserID(email))
		}, "login revoked"},
		{"logged out", func(victim *e2e.User, _, _ string) {
			victim.Must("", "logout")
		}, "login revoked"},
	}
	for i, tc := range cases {
		t.Logf("case %d: %s", i, tc.name)
		email := fmt.Sprintf("victim%d@example.com", i)
		resource := fmt.Sprintf("db-%d", i)
		w.svResource(resource)
		w.svAccountOn(resource, "app")
		victim := w.svMember(email, "member")
		p, url, id := w.svAccessOn(victim, resource, "app")
		c := connect(t, url)
		var one int
		if err := c.QueryRow(context.Background(), "SELECT 1").Scan(&one); err != nil {
			t.Fatalf("%s: before: %v", tc.name, err)
		}

		tc.revoke(victim, email, resource)

		// Ended when the command returned, not some time later.
		if s := w.svSession(id); s.Status != "ended" || s.EndReason != "revoked" || !strings.Contains(s.EndMessage, tc.message) {
			t.Fatalf("%s: session %+v, want ended/revoked with %q", tc.name, s, tc.message)
		}
		svClosedConn(t, c)
		svRefused(t, url)
		if code := p.Wait(t, 30*time.Second); code == 0 {
			t.Errorf("%s: db access exited 0", tc.name)
		}
		p.Stop(9)
	}
	// A disabled user's CLI cannot start again, nor log in again; the
	// server says why.
	email := "disabled@example.com"
	u := w.svMember(email, "member")
	w.svAccountOn("main-db", "app")
	w.admin.Must("", "users", "disable", w.svUserID(email))
	if _, stderr, code := u.Run("", "db", "access", "--project-id", w.project, "--resource", "main-db", "--account", "app", "--domain", w.srv.URL); code == 0 {
		t.Fatalf("a disabled user's db access started: %q", stderr)
	}
	_, stderr, code := u.Run("password of "+email, "login", "--domain", w.srv.URL, "--email", email, "--password-stdin")
	if code == 0 || !strings.Contains(stderr, "disabled") {
		t.Fatalf("a disabled user's login: exit %d %q", code, stderr)
	}
}

// TestProjectDeleteNeedsForceAndKeepsLogs: deleting a project with a live
// session is refused without --force, naming what exists; with --force the
// session ends and its log stays readable and verifiable.
func TestProjectDeleteNeedsForceAndKeepsLogs(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	w.svAccountOn("main-db", "app")
	p, url, id := w.svAccessOn(w.admin, "main-db", "app")
	c := connect(t, url)
	if _, err := c.Exec(context.Background(), "SELECT 'before the project went' AS marker"); err != nil {
		t.Fatal(err)
	}
	has := func(evs []logEvent) bool {
		for _, e := range evs {
			if strings.Contains(e.Statement, "before the project went") {
				return true
			}
		}
		return false
	}
	w.waitLogs(id, 30*time.Second, has)

	_, stderr, code := w.admin.Run("", "projects", "delete", w.project)
	if code == 0 || !strings.Contains(stderr, "--force") || !strings.Contains(stderr, "1 live session") {
		t.Fatalf("delete without --force: exit %d %q", code, stderr)
	}
	if s := w.svSession(id); s.Status != "active" {
		t.Fatalf("the refused delete ended the session: %+v", s)
	}
	w.admin.Must("", "projects", "delete", w.project, "--force")
	if s := w.svSession(id); s.Status != "ended" || s.EndReason != "revoked" || !strings.Contains(s.EndMessage, "project was deleted") {
		t.Fatalf("after delete --force: %+v", s)
	}
	svClosedConn(t, c)
	if code := p.Wait(t, 30*time.Second); code == 0 {
		t.Errorf("db access exited 0 after its project was deleted")
	}
	if !has(w.logs(id)) {
		t.Fatal("the log of the deleted project's session is gone")
	}
	if out := w.admin.Must("", "sessions", "verify", id); !strings.Contains(out, "is whole") {
		t.Fatalf("verify: %q", out)
	}
}

// TestChangedPasswordUsedAtOnce: every new connection of a running `db
// access` is authorized when it opens and gets the account's current
// credentials, so a password changed while the session runs (a rotation)
// is used by the next connection; open connections keep working.
func TestChangedPasswordUsedAtOnce(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	ctx := context.Background()
	super, err := pgx.Connect(ctx, w.pg.SuperURL(testenv.AppDatabase))
	if err != nil {
		t.Fatal(err)
	}
	defer super.Close(ctx)
	if _, err := super.Exec(ctx, `CREATE ROLE rotating LOGIN PASSWORD 'first password 1'`); err != nil {
		t.Fatal(err)
	}
	w.admin.Must("first password 1", "accounts", "create", "--project-id", w.project, "--resource", "main-db", "--name", "rot",
		"--username", "rotating", "--password-stdin")
	_, url, _ := w.svAccessOn(w.admin, "main-db", "rot")
	before := connect(t, url)

	if _, err := super.Exec(ctx, `ALTER ROLE rotating PASSWORD 'second password 2'`); err != nil {
		t.Fatal(err)
	}
	w.admin.Must("second password 2", "accounts", "update", "rot", "--project-id", w.project, "--password-stdin")

	after := connect(t, url)
	for name, c := range map[string]*pgx.Conn{"the new connection": after, "the open connection": before} {
		var user string
		if err := c.QueryRow(ctx, "SELECT current_user").Scan(&user); err != nil || user != "rotating" {
			t.Fatalf("%s: %q %v", name, user, err)
		}
	}
}
