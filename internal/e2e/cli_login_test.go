package e2e_test

import (
	"context"
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/airlockpam/airlock/internal/e2e"
)

// storedRefreshToken reads the refresh token in a user's credentials file
// ("" while the file is being replaced or is gone).
func storedRefreshToken(u *e2e.User) string {
	var c struct{ RefreshToken string }
	b, err := os.ReadFile(filepath.Join(u.Config, "credentials.json"))
	if err != nil || json.Unmarshal(b, &c) != nil {
		return ""
	}
	return c.RefreshToken
}

// loginTrouble matches what the CLI says when it loses its login (a
// failed attempt to reach the server while refreshing is not that).
var loginTrouble = regexp.MustCompile("login (was revoked|has expired|is no longer valid)|run `airlock login")

// TestCLISharedLoginSurvivesManyRefreshes: with 2-second access tokens, a
// running db access (checking its session twice a second) and two other
// processes calling `sessions list` and `sessions show` in loops share one
// login through many refresh cycles. Nobody is logged out, the server never
// sees a refresh token reused, and the proxy still takes new connections.
func TestCLISharedLoginSurvivesManyRefreshes(t *testing.T) {
	w := newWorldWith(t, startServerArgs(t, "--access-token-ttl", "2s"))
	w.account("app", w.pg.SCRAMUser)
	p, url := w.access(w.admin, "app", "--check-interval", "500ms")
	id := sessionOf(t, p)
	held := connect(t, url)

	// 40 refreshes of a 2 s token are 80 s of token life: with 15-minute
	// tokens, 10 hours of clock.
	const refreshes = 40
	seen := map[string]bool{storedRefreshToken(w.admin): true}
	var mu sync.Mutex
	done := make(chan struct{})
	var wg sync.WaitGroup
	failures := make(chan string, 100)
	for _, args := range [][]string{
		{"sessions", "list", "--project-id", w.project, "--status", "active"},
		{"sessions", "show", id},
	} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-done:
					return
				default:
				}
				out, errOut, code := w.admin.Run("", args...)
				if code != 0 || !strings.Contains(out, id) {
					failures <- strings.Join(args, " ") + ": " + errOut + out
					return
				}
				if tok := storedRefreshToken(w.admin); tok != "" {
					mu.Lock()
					seen[tok] = true
					mu.Unlock()
				}
			}
		}()
	}
	for {
		mu.Lock()
		n := len(seen)
		mu.Unlock()
		if n > refreshes || len(failures) > 0 || p.Exited() {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	close(done)
	wg.Wait()
	close(failures)
	for f := range failures {
		t.Errorf("a command failed while sharing the login: %s", f)
	}
	if p.Exited() {
		t.Fatalf("db access exited: %s", p.Stderr())
	}
	t.Logf("%d refresh tokens seen", len(seen))

	if loginTrouble.MatchString(p.Stderr()) {
		t.Errorf("db access complained about its login:\n%s", p.Stderr())
	}
	if audit := w.admin.Must("", "audit", "list", "--action", "auth.refresh_reuse"); strings.Contains(audit, "auth.refresh_reuse") {
		t.Errorf("the server saw a refresh token reused:\n%s", audit)
	}
	ctx := context.Background()
	if err := held.Ping(ctx); err != nil {
		t.Errorf("the connection held throughout: %v", err)
	}
	if r := psql(t, false, url, "SELECT 'still-logged-in'"); r.Code != 0 || !strings.Contains(r.Out, "still-logged-in") {
		t.Fatalf("a new connection after the refreshes: exit %d: %s", r.Code, r.Out)
	}
}

// TestCLISessionsEnd: the owner ends their session from another terminal;
// db access says so and exits; ending it again is not an error and says
// when and why it ended.
func TestCLISessionsEnd(t *testing.T) {
	w := newWorld(t)
	w.account("app", w.pg.SCRAMUser)
	w.admin.Must("member password 1", "users", "create", "--email", "dev@example.com", "--password-stdin")
	w.admin.Must("", "projects", "members", "set", "--project-id", w.project, "--email", "dev@example.com", "--role", "member")
	dev := e2e.NewUser(t)
	dev.Login(w.srv, "dev@example.com", "member password 1")

	p, url := w.access(dev, "app")
	id := sessionOf(t, p)
	c := connect(t, url)

	// Someone else's session is not theirs to end.
	if _, e, code := dev.Run("", "sessions", "end", "00000000-0000-7000-8000-000000000000"); code == 0 || !strings.Contains(e, "no session") {
		t.Fatalf("ending an unknown session: exit %d: %s", code, e)
	}

	out := dev.Must("", "sessions", "end", id)
	if !strings.Contains(out, "Session "+id+" ended") {
		t.Fatalf("sessions end printed %q", out)
	}
	if code := p.Wait(t, 30*time.Second); code == 0 || !strings.Contains(p.Stderr(), "the session was ended by its owner") {
		t.Fatalf("db access after sessions end: exit %d, stderr %q", code, p.Stderr())
	}
	if err := c.Ping(context.Background()); err == nil {
		t.Fatal("a connection survived the end of its session")
	}
	var s struct{ Status, EndReason string }
	dev.JSON(&s, "", "sessions", "show", id)
	if s.Status != "ended" || s.EndReason != "ended_by_user" {
		t.Fatalf("ended session: %+v", s)
	}

	out, errOut, code := dev.Run("", "sessions", "end", id)
	if code != 0 || !regexp.MustCompile(`Session \S+ had already ended: it was ended by its owner at \d{4}-`).MatchString(out) {
		t.Fatalf("ending it again: exit %d: %s%s", code, out, errOut)
	}
}

// TestCLIRevokedLoginEndsAccess: a db access whose login is revoked says
// so, closes its connections and exits non-zero: after `airlock logout` in
// the same config directory (the file is gone), and after the login is
// revoked on the server while the file stays.
func TestCLIRevokedLoginEndsAccess(t *testing.T) {
	w := newWorld(t)
	w.account("app", w.pg.SCRAMUser)
	w.admin.Must("member password 1", "users", "create", "--email", "dev@example.com", "--password-stdin")
	w.admin.Must("", "projects", "members", "set", "--project-id", w.project, "--email", "dev@example.com", "--role", "member")

	t.Run("logout in the same config directory", func(t *testing.T) {
		dev := e2e.NewUser(t)
		dev.Login(w.srv, "dev@example.com", "member password 1")
		p, url := w.access(dev, "app", "--check-interval", "500ms")
		c := connect(t, url)
		dev.Must("", "logout")
		code := p.Wait(t, 60*time.Second)
		if code == 0 || !strings.Contains(p.Stderr(), "your login was revoked (`airlock logout` removed it from this machine): run `airlock login`") {
			t.Fatalf("db access after logout: exit %d, stderr %q", code, p.Stderr())
		}
		if err := c.Ping(context.Background()); err == nil {
			t.Fatal("a connection survived the revoked login")
		}
	})
	t.Run("revoked on the server", func(t *testing.T) {
		dev := e2e.NewUser(t)
		dev.Login(w.srv, "dev@example.com", "member password 1")
		p, url := w.access(dev, "app", "--check-interval", "500ms")
		c := connect(t, url)
		// Revoke the login on the server only, as an administrator's
		// revocation would: the credentials file stays.
		var creds struct{ AccessToken string }
		b, err := os.ReadFile(filepath.Join(dev.Config, "credentials.json"))
		if err != nil || json.Unmarshal(b, &creds) != nil {
			t.Fatalf("credentials: %v", err)
		}
		req, _ := http.NewRequest(http.MethodPost, w.srv.URL+"/api/v1/auth/logout", nil)
		req.Header.Set("Authorization", "Bearer "+creds.AccessToken)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode >= 300 {
			t.Fatalf("logout: %d", resp.StatusCode)
		}
		code := p.Wait(t, 60*time.Second)
		if code == 0 || !strings.Contains(p.Stderr(), "your login was revoked (logged out elsewhere, or by an administrator): run `airlock login`") {
			t.Fatalf("db access after revocation: exit %d, stderr %q", code, p.Stderr())
		}
		if err := c.Ping(context.Background()); err == nil {
			t.Fatal("a connection survived the revoked login")
		}
		if strings.Contains(p.Stderr(), creds.AccessToken) {
			t.Fatal("db access printed its token")
		}
	})
}

// TestCLIReconnectsAfterServerOutage: the server is killed while a db
// access runs with 2-second tokens. New connections during the outage are
// refused at once with the reason (not left hanging); the proxy keeps
// retrying without spending its login, reconnects when the server is back,
// and serves new connections again.
func TestCLIReconnectsAfterServerOutage(t *testing.T) {
	srv := startServerArgs(t, "--access-token-ttl", "2s")
	w := newWorldWith(t, srv)
	w.account("app", w.pg.SCRAMUser)
	p, url := w.access(w.admin, "app", "--check-interval", "500ms")
	id := sessionOf(t, p)

	killServer(srv)
	waitStderr(t, p, regexp.MustCompile(`lost the connection to the Airlock server`), 30*time.Second)
	r := psql(t, false, url, "SELECT 1")
	if r.Code == 0 || !strings.Contains(r.Out, "airlock: airlock db access lost its connection to the Airlock server and is reconnecting") {
		t.Fatalf("psql during the outage: exit %d: %s", r.Code, r.Out)
	}
	// Several reconnect attempts and token lifetimes pass while the
	// server is away (AIRLOCK_TEST_OUTAGE=3m for the full length that
	// issue 12 names).
	outage := 12 * time.Second
	if v := os.Getenv("AIRLOCK_TEST_OUTAGE"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil {
			t.Fatalf("AIRLOCK_TEST_OUTAGE=%q: %v", v, err)
		}
		outage = d
	}
	time.Sleep(outage)
	if p.Exited() {
		t.Fatalf("db access gave up during the outage: %s", p.Stderr())
	}

	srv.Proc = runServer(t, srv, "--access-token-ttl", "2s")
	waitStderr(t, p, regexp.MustCompile(`airlock: connected again after [0-9hms.]+;`), 60*time.Second)
	outageLines(t, p)
	w.waitGateway("dc1", true)
	deadline := time.Now().Add(60 * time.Second)
	for {
		r = psql(t, false, url, "SELECT 'back-again'")
		if r.Code == 0 && strings.Contains(r.Out, "back-again") {
			break
		}
		if time.Now().After(deadline) || p.Exited() {
			t.Fatalf("psql after the outage: exit %d: %s\nstderr: %s", r.Code, r.Out, p.Stderr())
		}
		time.Sleep(500 * time.Millisecond)
	}
	var s struct{ Status string }
	w.admin.JSON(&s, "", "sessions", "show", id)
	if s.Status != "active" {
		t.Fatalf("the session after the outage: %+v", s)
	}
	if loginTrouble.MatchString(p.Stderr()) {
		t.Fatalf("db access complained about its login:\n%s", p.Stderr())
	}
}
