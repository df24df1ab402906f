package server_test

import (
	"net/http"
	"strings"
	"testing"
	"time"
)

func TestLoginRefreshLogout(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		e := start(t, b)
		c := e.admin()
		var me map[string]any
		if st := c.call("GET", "/api/v1/auth/me", nil, &me); st != 200 || me["name"] != adminEmail || me["orgAdmin"] != true {
			t.Fatalf("me: %d %v", st, me)
		}

		// Refresh rotates the pair; the old access token stays valid until
		// it expires, the old refresh token is spent.
		oldRefresh := c.pair["refreshToken"].(string)
		var pair map[string]any
		if st := e.anon().call("POST", "/api/v1/auth/refresh", map[string]any{"refreshToken": oldRefresh}, &pair); st != 200 {
			t.Fatalf("refresh: %d", st)
		}
		fresh := &client{e: e, token: pair["accessToken"].(string)}
		if st := fresh.call("GET", "/api/v1/auth/me", nil, nil); st != 200 {
			t.Fatalf("refreshed token refused: %d", st)
		}
		// Presenting the spent refresh token again revokes the whole login.
		anon := e.anon()
		if st := anon.call("POST", "/api/v1/auth/refresh", map[string]any{"refreshToken": oldRefresh}, nil); st != 401 {
			t.Fatalf("reused refresh token: status %d, want 401", st)
		}
		if !strings.Contains(anon.problem().Detail, "already used") {
			t.Errorf("reuse message: %q", anon.problem().Detail)
		}
		if st := fresh.call("GET", "/api/v1/auth/me", nil, nil); st != 401 {
			t.Fatalf("token of a login whose refresh token was reused still works: %d", st)
		}

		// Logout revokes the access and refresh tokens of that login only.
		c2, other := e.admin(), e.admin()
		if st := c2.call("POST", "/api/v1/auth/logout", nil, nil); st != 204 {
			t.Fatalf("logout: %d", st)
		}
		if st := c2.call("GET", "/api/v1/auth/me", nil, nil); st != 401 || !strings.Contains(c2.problem().Detail, "revoked") {
			t.Fatalf("after logout: %d %q", st, c2.problem().Detail)
		}
		if st := e.anon().call("POST", "/api/v1/auth/refresh", map[string]any{"refreshToken": c2.pair["refreshToken"]}, nil); st != 401 {
			t.Fatalf("refresh after logout: %d", st)
		}
		if st := other.call("GET", "/api/v1/auth/me", nil, nil); st != 200 {
			t.Fatalf("another login was logged out too: %d", st)
		}

		// Access tokens expire.
		e.clock.Advance(16 * time.Minute)
		if st := other.call("GET", "/api/v1/auth/me", nil, nil); st != 401 || !strings.Contains(other.problem().Detail, "expired") {
			t.Fatalf("expired token: %d %q", st, other.problem().Detail)
		}
		acts := e.admin().auditActions("action=auth.")
		for _, want := range []string{"auth.login:success", "auth.logout:success", "auth.refresh_reuse:failure"} {
			if !contains(acts, want) {
				t.Errorf("audit log lacks %s: %v", want, acts)
			}
		}
	})
}

func TestBadTokens(t *testing.T) {
	e := start(t, backends()[0])
	other := start(t, backends()[0]) // another installation: another organization
	foreign := other.admin().token
	for name, header := range map[string]string{
		"none":       "",
		"forged":     "Bearer alk_" + strings.Repeat("A", 43),
		"not bearer": "Basic YWRtaW46YWRtaW4=",
		"garbage":    "Bearer x",
		"foreign":    "Bearer " + foreign,
	} {
		c := e.anon()
		c.authHeader = header
		st := c.call("GET", "/api/v1/projects", nil, nil)
		if st != 401 {
			t.Errorf("%s: status %d, want 401", name, st)
		}
		if c.problem().Detail == "" {
			t.Errorf("%s: no message", name)
		}
	}
}

func TestLockoutAndRateLimit(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		e := start(t, b)
		alice := e.createUser("alice@example.com")
		_ = alice
		anon := e.anon()
		for i := 0; i < 5; i++ {
			if st := anon.call("POST", "/api/v1/auth/login", map[string]any{"email": "alice@example.com", "password": "wrong password!"}, nil); st != 401 {
				t.Fatalf("attempt %d: %d", i, st)
			}
		}
		// Locked now: even the right password is refused, and the answer is
		// the one an unknown email gets (it mentions locking for both), so
		// that it does not tell that the account exists.
		st := anon.call("POST", "/api/v1/auth/login", map[string]any{"email": "alice@example.com", "password": "password-of-alice@example.com"}, nil)
		locked := anon.problem().raw
		if st != 401 || !strings.Contains(anon.problem().Detail, "locked") {
			t.Fatalf("locked account: %d %q", st, anon.problem().Detail)
		}
		if st := anon.call("POST", "/api/v1/auth/login", map[string]any{"email": "nobody@example.com", "password": "password-of-alice@example.com"}, nil); st != 401 ||
			anon.problem().raw != locked {
			t.Fatalf("an unknown email and a locked account answer differently: %d %s\n%s", st, anon.problem().raw, locked)
		}
		admin := e.admin()
		if acts := admin.auditActions("action=user.lock"); len(acts) != 1 {
			t.Fatalf("lock not audited once: %v", acts)
		}
		if acts := admin.auditActions("action=auth.login&actor=alice@example.com"); len(acts) < 6 || acts[0] != "auth.login:failure" {
			t.Fatalf("failed logins not audited: %v", acts)
		}
		// The lock lifts by itself after its duration.
		e.clock.Advance(16 * time.Minute)
		e.login("alice@example.com", "password-of-alice@example.com")

		// An admin can lift it earlier.
		for i := 0; i < 5; i++ {
			anon.call("POST", "/api/v1/auth/login", map[string]any{"email": "alice@example.com", "password": "wrong password!"}, nil)
		}
		admin = e.admin() // the earlier token expired with the clock move
		var users []map[string]any
		admin.call("GET", "/api/v1/users", nil, &users)
		var aliceID string
		for _, u := range users {
			if u["email"] == "alice@example.com" {
				aliceID = u["id"].(string)
				if u["lockedUntil"] == nil {
					t.Errorf("users list does not show the lock")
				}
			}
		}
		if st := admin.call("POST", "/api/v1/users/"+aliceID+"/unlock", nil, nil); st != 204 {
			t.Fatalf("unlock: %d", st)
		}
		e.login("alice@example.com", "password-of-alice@example.com")

		// Per-account rate limit: an unknown account is never locked, but is throttled.
		var last int
		for i := 0; i < 12; i++ {
			last = anon.call("POST", "/api/v1/auth/login", map[string]any{"email": "nobody@example.com", "password": "whatever-password"}, nil)
		}
		if last != 429 || !strings.Contains(anon.problem().Detail, "too many login attempts") {
			t.Fatalf("rate limit: %d %q", last, anon.problem().Detail)
		}
		req, _ := http.NewRequest("POST", e.http.URL+"/api/v1/auth/login", strings.NewReader(`{"email":"nobody@example.com","password":"x"}`))
		req.Header.Set("Content-Type", "application/json")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 429 || resp.Header.Get("Retry-After") == "" {
			t.Fatalf("throttled answer: %d, Retry-After %q", resp.StatusCode, resp.Header.Get("Retry-After"))
		}
	})
}

func TestMachineIdentity(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		e := start(t, b)
		admin := e.admin()
		var m map[string]any
		if st := admin.call("POST", "/api/v1/machine-identities", map[string]any{"name": "ci-deploy"}, &m); st != 201 {
			t.Fatalf("create: %d %s", st, admin.problem().raw)
		}
		var list []map[string]any
		admin.call("GET", "/api/v1/machine-identities", nil, &list)
		if len(list) != 1 || list[0]["clientSecret"] != nil {
			t.Fatalf("list shows a secret or the wrong entries: %v", list)
		}
		anon := e.anon()
		if st := anon.call("POST", "/api/v1/auth/machine-login", map[string]any{"clientId": m["clientId"], "clientSecret": "alks_wrong"}, nil); st != 401 {
			t.Fatalf("wrong secret: %d", st)
		}
		var pair map[string]any
		if st := anon.call("POST", "/api/v1/auth/machine-login", map[string]any{"clientId": m["clientId"], "clientSecret": m["clientSecret"]}, &pair); st != 200 {
			t.Fatalf("machine login: %d %s", st, anon.problem().raw)
		}
		bot := &client{e: e, token: pair["accessToken"].(string)}
		var me map[string]any
		bot.call("GET", "/api/v1/auth/me", nil, &me)
		if me["kind"] != "machine" || me["name"] != "ci-deploy" || me["orgAdmin"] != false {
			t.Fatalf("me: %v", me)
		}
		// Not an org admin: it cannot create users.
		if st := bot.call("POST", "/api/v1/users", map[string]any{"email": "x@example.com", "password": "long enough password"}, nil); st != 403 {
			t.Fatalf("machine created a user: %d", st)
		}
		// Deleting it revokes its tokens at once.
		if st := admin.call("DELETE", "/api/v1/machine-identities/"+m["id"].(string), nil, nil); st != 204 {
			t.Fatalf("delete: %d", st)
		}
		if st := bot.call("GET", "/api/v1/auth/me", nil, nil); st != 401 {
			t.Fatalf("deleted machine identity still authenticated: %d", st)
		}
	})
}

func TestBootstrapOnlyOnce(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		e := start(t, b)
		e.close()
		e.open("intruder@example.com", "another long password")
		if st := e.anon().call("POST", "/api/v1/auth/login", map[string]any{"email": "intruder@example.com", "password": "another long password"}, nil); st != 401 {
			t.Fatalf("a second bootstrap created a user: %d", st)
		}
		var users []map[string]any
		e.admin().call("GET", "/api/v1/users", nil, &users)
		if len(users) != 1 {
			t.Fatalf("users after second bootstrap: %v", users)
		}
	})
}
