package e2e_test

import (
	"context"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/airlockpam/airlock/internal/e2e"
)

var sessionIDRE = regexp.MustCompile(`Session (\S+) started`)

func TestSessionsListAndTerminate(t *testing.T) {
	w := newWorld(t)
	w.account("app", w.pg.SCRAMUser)
	w.admin.Must("", "resources", "update", "main-db", "--project-id", w.project, "--allow-auth", "md5") // the md5 account below
	w.account("legacy", w.pg.MD5User)
	w.admin.Must("member password 1", "users", "create", "--email", "dev@example.com", "--password-stdin")
	w.admin.Must("", "projects", "members", "set", "--project-id", w.project, "--email", "dev@example.com", "--role", "member")
	dev := e2e.NewUser(t)
	dev.Login(w.srv, "dev@example.com", "member password 1")

	pa, _ := w.access(w.admin, "app")
	pb, urlB := w.access(dev, "legacy")
	idA := sessionIDRE.FindStringSubmatch(pa.Stdout())[1]
	idB := sessionIDRE.FindStringSubmatch(pb.Stdout())[1]
	c := connect(t, urlB)

	type sess struct{ ID, UserName, AccountName, Status, EndReason string }
	list := func(u *e2e.User, filters ...string) []string {
		var ss []sess
		u.JSON(&ss, "", append([]string{"sessions", "list", "--project-id", w.project}, filters...)...)
		var ids []string
		for _, s := range ss {
			ids = append(ids, s.ID)
		}
		return ids
	}
	eq := func(name string, got []string, want ...string) {
		t.Helper()
		if strings.Join(got, ",") != strings.Join(want, ",") {
			t.Errorf("%s: got %v, want %v", name, got, want)
		}
	}
	eq("admin, active", list(w.admin, "--status", "active"), idB, idA)
	eq("by account", list(w.admin, "--account", "app"), idA)
	eq("by user", list(w.admin, "--user", "dev@example.com"), idB)
	eq("by resource and time", list(w.admin, "--resource", "main-db", "--from", "1h"), idB, idA)
	eq("before the sessions", list(w.admin, "--to", "1h"))
	eq("a member sees only their own", list(dev), idB)

	// A member cannot terminate; the project admin can, and the user's
	// access command says so and exits.
	if _, e, code := dev.Run("", "sessions", "terminate", idA); code == 0 || !strings.Contains(e, "no session") {
		t.Fatalf("member terminated a session: exit %d %s", code, e)
	}
	start := time.Now()
	w.admin.Must("", "sessions", "terminate", idB)
	code := pb.Wait(t, 20*time.Second)
	t.Logf("db access exited %s after termination", time.Since(start))
	if code == 0 || !strings.Contains(pb.Stderr(), "terminated by an administrator") {
		t.Fatalf("after termination: exit %d, stderr %q", code, pb.Stderr())
	}
	if err := c.Ping(context.Background()); err == nil {
		t.Fatal("a connection survived termination")
	}
	var s sess
	w.admin.JSON(&s, "", "sessions", "show", idB)
	if s.Status != "ended" || s.EndReason != "terminated" {
		t.Fatalf("terminated session: %+v", s)
	}
	eq("ended", list(w.admin, "--status", "ended"), idB)

	audit := w.admin.Must("", "audit", "list", "--action", "session.", "--project-id", w.project)
	for _, want := range []string{"session.start", "session.terminate"} {
		if !strings.Contains(audit, want) {
			t.Errorf("audit log lacks %s:\n%s", want, audit)
		}
	}
}
