package server_test

import (
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/airlockpam/airlock/internal/errs"
	"github.com/airlockpam/airlock/internal/tunnel"
)

// TestRevocationEndsLiveSessions: each way of taking access away ends the
// live sessions it concerns at once (when the API call returns), with
// reason revoked and a message naming why, and leaves every other session
// alone. The session can then open no new connection.
func TestRevocationEndsLiveSessions(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		f := newFixture(t, b)
		bystander := f.member("bystander@example.com", "member")
		cases := []struct {
			name string
			// revoke takes access away from victim (whose session is sid).
			revoke  func(f *fixture, victim *client, sid string)
			reason  string
			message string
			audit   string
		}{
			{"removed from the project", func(f *fixture, v *client, _ string) {
				_, id := v.me()
				f.mustCall(f.admin, "DELETE", "/api/v1/projects/"+f.project+"/members/user/"+id, nil, 204)
			}, "revoked", "user removed from the project", "project.member.remove"},
			{"role lowered to viewer", func(f *fixture, v *client, _ string) {
				f.setRole(v.email, "viewer")
			}, "revoked", "role in the project lowered to viewer", "project.member.set"},
			{"user disabled", func(f *fixture, v *client, _ string) {
				_, id := v.me()
				f.mustCall(f.admin, "POST", "/api/v1/users/"+id+"/disable", nil, 200)
			}, "revoked", "user disabled", "user.disable"},
			{"user deleted", func(f *fixture, v *client, _ string) {
				_, id := v.me()
				f.mustCall(f.admin, "DELETE", "/api/v1/users/"+id, nil, 204)
			}, "revoked", "user deleted", "user.delete"},
			{"all tokens revoked by an admin", func(f *fixture, v *client, _ string) {
				_, id := v.me()
				f.mustCall(f.admin, "POST", "/api/v1/users/"+id+"/revoke-tokens", nil, 204)
			}, "revoked", "login revoked", "user.revoke_tokens"},
			{"logged out", func(f *fixture, v *client, _ string) {
				f.mustCall(v, "POST", "/api/v1/auth/logout", nil, 204)
			}, "revoked", "login revoked", "auth.logout"},
			{"refresh token reused", func(f *fixture, v *client, _ string) {
				refresh := map[string]any{"refreshToken": v.pair["refreshToken"]}
				f.mustCall(f.e.anon(), "POST", "/api/v1/auth/refresh", refresh, 200)
				f.mustCall(f.e.anon(), "POST", "/api/v1/auth/refresh", refresh, 401)
			}, "revoked", "login revoked", "auth.refresh_reuse"},
			{"account deleted", func(f *fixture, v *client, sid string) {
				f.mustCall(f.admin, "DELETE", "/api/v1/projects/"+f.project+"/accounts/"+f.ownAccount(sid), nil, 204)
			}, "revoked", "account deleted", "account.delete"},
			{"resource deleted", func(f *fixture, v *client, sid string) {
				f.mustCall(f.admin, "DELETE", "/api/v1/projects/"+f.project+"/resources/"+f.ownResource(sid), nil, 204)
			}, "revoked", "resource deleted", "resource.delete"},
		}
		for i, tc := range cases {
			t.Run(strings.ReplaceAll(tc.name, " ", "_"), func(t *testing.T) {
				f := f.with(t)
				email := "victim" + string(rune('a'+i)) + "@example.com"
				victim := f.member(email, "member")
				// The victim's own account, so deleting it touches no one else.
				res, acc := f.newAccount(f.project, "db-"+string(rune('a'+i)), "app", "pw")
				sid := f.sessionOn(victim, f.project, res, acc)
				// Someone else's session in the same project stays.
				other := f.sessionOn(bystander, f.project, f.resource, f.account)

				tc.revoke(f, victim, sid)

				status, reason, msg := f.state(sid)
				if status != "ended" || reason != tc.reason || !strings.Contains(msg, tc.message) {
					t.Fatalf("victim's session: %s/%s %q, want ended/%s with %q", status, reason, msg, tc.reason, tc.message)
				}
				if status, _, _ := f.state(other); status != "active" {
					t.Fatalf("a bystander's session ended too")
				}
				_, err := f.e.srv.Sessions.AuthorizeConnection(context.Background(), sid)
				if !errs.Is(err, errs.Conflict) || !strings.Contains(err.Error(), tc.message) {
					t.Fatalf("a new connection of the revoked session: %v", err)
				}
				if acts := f.admin.auditActions("action=" + tc.audit); len(acts) == 0 {
					t.Errorf("no %s audit event", tc.audit)
				}
			})
		}
	})
}

// TestLogoutEndsOnlyThatLoginsSessions: a user logged in on two machines
// logs out on one; the session started there ends, the other goes on.
func TestLogoutEndsOnlyThatLoginsSessions(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		f := newFixture(t, b)
		laptop := f.member("dev@example.com", "member")
		desktop := f.e.login("dev@example.com", "password-of-dev@example.com")
		onLaptop, onDesktop := f.session(laptop), f.session(desktop)
		f.mustCall(laptop, "POST", "/api/v1/auth/logout", nil, 204)
		if status, reason, msg := f.state(onLaptop); status != "ended" || reason != "revoked" || !strings.Contains(msg, "login revoked") {
			t.Fatalf("the logged-out login's session: %s/%s %q", status, reason, msg)
		}
		if status, _, _ := f.state(onDesktop); status != "active" {
			t.Fatalf("the other login's session: %s", status)
		}
	})
}

// TestRevokedUserIsLockedOut: a disabled user cannot log in, refresh, or
// use a token issued before; enabled again, they log in.
func TestRevokedUserIsLockedOut(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		f := newFixture(t, b)
		u := f.member("dev@example.com", "member")
		_, id := u.me()
		f.mustCall(f.admin, "POST", "/api/v1/users/"+id+"/disable", nil, 200)
		if st := u.call("GET", "/api/v1/auth/me", nil, nil); st != 401 || !strings.Contains(u.problem().Detail, "disabled") {
			t.Fatalf("a disabled user's token: %d %s", st, u.problem().raw)
		}
		c := f.e.anon()
		if st := c.call("POST", "/api/v1/auth/login", map[string]any{"email": "dev@example.com", "password": "password-of-dev@example.com"}, nil); st != 403 ||
			!strings.Contains(c.problem().Detail, "disabled") {
			t.Fatalf("a disabled user logs in: %d %s", st, c.problem().raw)
		}
		if st := c.call("POST", "/api/v1/auth/login", map[string]any{"email": "dev@example.com", "password": "a wrong password"}, nil); st != 401 {
			t.Fatalf("a wrong password for a disabled user says more than a wrong password: %d %s", st, c.problem().raw)
		}
		if st := c.call("POST", "/api/v1/auth/refresh", map[string]any{"refreshToken": u.pair["refreshToken"]}, nil); st != 401 {
			t.Fatalf("a disabled user refreshes: %d", st)
		}
		// Neither the admin nor the last admin can be disabled or deleted.
		_, adminID := f.admin.me()
		f.mustCall(f.admin, "POST", "/api/v1/users/"+adminID+"/disable", nil, 409)
		f.mustCall(f.admin, "DELETE", "/api/v1/users/"+adminID, nil, 409)
		// Only organization admins act on users.
		other := f.member("other@example.com", "admin")
		f.mustCall(other, "POST", "/api/v1/users/"+id+"/enable", nil, 403)
		f.mustCall(f.admin, "POST", "/api/v1/users/"+id+"/enable", nil, 200)
		f.e.login("dev@example.com", "password-of-dev@example.com")
		if acts := f.admin.auditActions("action=user."); !contains(acts, "user.disable:success") || !contains(acts, "user.enable:success") {
			t.Errorf("audit: %v", acts)
		}
	})
}

// TestMachineIdentityDeletedEndsItsSessions: a CI job's running session ends
// when its machine identity is deleted.
func TestMachineIdentityDeletedEndsItsSessions(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		f := newFixture(t, b)
		var m struct{ ID, ClientID, ClientSecret string }
		if st := f.admin.call("POST", "/api/v1/machine-identities", map[string]any{"name": "ci"}, &m); st != 201 {
			t.Fatalf("create machine identity: %d", st)
		}
		f.mustCall(f.admin, "PUT", "/api/v1/projects/"+f.project+"/members", map[string]any{"machineIdentityId": m.ID, "role": "member"}, 200)
		ci := f.e.anon()
		var pair map[string]any
		if st := ci.call("POST", "/api/v1/auth/machine-login", map[string]any{"clientId": m.ClientID, "clientSecret": m.ClientSecret}, &pair); st != 200 {
			t.Fatalf("machine login: %d", st)
		}
		ci.token = pair["accessToken"].(string)
		sid := f.session(ci)
		if _, err := f.e.srv.Sessions.AuthorizeConnection(context.Background(), sid); err != nil {
			t.Fatalf("the machine's session before: %v", err)
		}
		f.mustCall(f.admin, "DELETE", "/api/v1/machine-identities/"+m.ID, nil, 204)
		if status, reason, msg := f.state(sid); status != "ended" || reason != "revoked" || !strings.Contains(msg, "machine identity deleted") {
			t.Fatalf("after deleting the machine identity: %s/%s %q", status, reason, msg)
		}
	})
}

// TestGatewayDeletedEndsItsSessions: deleting a gateway ends its sessions at
// once, as gateway_lost with a message, instead of leaving them active.
func TestGatewayDeletedEndsItsSessions(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		f := newFixture(t, b)
		sid := f.session(f.admin)
		f.mustCall(f.admin, "DELETE", "/api/v1/gateways/"+f.gateway, nil, 204)
		if status, reason, msg := f.state(sid); status != "ended" || reason != "gateway_lost" || !strings.Contains(msg, "the gateway was deleted") {
			t.Fatalf("after deleting the gateway: %s/%s %q", status, reason, msg)
		}
	})
}

// TestEachConnectionIsAuthorizedFromTheStore: a new connection of a session
// gets the account's current password and the project's current log
// settings, needs no valid access token (the CLI's may have expired), and a
// revocation written by another replica (straight into the store) is caught
// by the next connection and by the expiry job.
func TestEachConnectionIsAuthorizedFromTheStore(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		f := newFixture(t, b)
		dev := f.member("dev@example.com", "member")
		sid := f.session(dev)
		ctx := context.Background()
		cs, err := f.e.srv.Sessions.AuthorizeConnection(ctx, sid)
		if err != nil || cs.Target.Password != "first password" || cs.GatewayID != f.gateway {
			t.Fatalf("first connection: %v %+v", err, cs)
		}
		// The password changes (a rotation): the next connection uses the new one.
		f.exec(`UPDATE accounts SET password_enc = $1 WHERE id = $2`, f.seal(f.project, f.account, "second password"), f.account)
		f.mustCall(f.admin, "PATCH", "/api/v1/projects/"+f.project, map[string]any{"logMaskPatterns": []string{"card-[0-9]+"}, "logRedactValues": true}, 200)
		_, devID := dev.me()
		f.e.clock.Advance(30 * time.Minute) // the CLI's access token has expired
		cs, err = f.e.srv.Sessions.AuthorizeConnection(ctx, sid)
		if err != nil || cs.Target.Password != "second password" || len(cs.MaskPatterns) != 1 || !cs.RedactValues {
			t.Fatalf("after a password and settings change: %v", err)
		}
		// Another replica removes the member: the next connection is refused
		// and the session ends.
		f.exec(`DELETE FROM project_members WHERE subject_id = $1`, devID)
		if _, err := f.e.srv.Sessions.AuthorizeConnection(ctx, sid); !errs.Is(err, errs.Conflict) || !strings.Contains(err.Error(), "removed from the project") {
			t.Fatalf("after removal: %v", err)
		}
		if status, reason, _ := f.state(sid); status != "ended" || reason != "revoked" {
			t.Fatalf("after removal: %s/%s", status, reason)
		}
		// The expiry job catches a revocation nobody announced.
		f.admin = f.e.admin()
		dev = f.e.login("dev@example.com", "password-of-dev@example.com")
		f.setRole("dev@example.com", "member")
		sid2 := f.session(dev)
		f.exec(`UPDATE users SET disabled = TRUE WHERE id = $1`, devID)
		f.heartbeat()
		f.e.srv.Sessions.ExpireNow(ctx)
		if status, reason, msg := f.state(sid2); status != "ended" || reason != "revoked" || !strings.Contains(msg, "user disabled") {
			t.Fatalf("after an unannounced disable: %s/%s %q", status, reason, msg)
		}
		// An org admin who is not a member of the project may use it.
		if _, err := f.e.srv.Sessions.AuthorizeConnection(ctx, f.session(f.admin)); err != nil {
			t.Fatalf("org admin: %v", err)
		}
	})
}

func (f *fixture) mustCall(c *client, method, path string, body any, want int) {
	f.t.Helper()
	if st := c.call(method, path, body, nil); st != want {
		f.t.Fatalf("%s %s: %d, want %d: %s", method, path, st, want, c.problem().raw)
	}
}

func (f *fixture) ownAccount(sid string) string {
	var id string
	if err := f.e.sqlDB().QueryRow(`SELECT account_id FROM sessions WHERE id = $1`, sid).Scan(&id); err != nil {
		f.t.Fatal(err)
	}
	return id
}

func (f *fixture) ownResource(sid string) string {
	var id string
	if err := f.e.sqlDB().QueryRow(`SELECT resource_id FROM sessions WHERE id = $1`, sid).Scan(&id); err != nil {
		f.t.Fatal(err)
	}
	return id
}

// TestGatewayIsToldWhy: a revoked session's gateway is told to end it, with
// reason revoked and the message its clients get, before the API call
// returns; a project's new log settings reach the gateway of each of its
// live sessions; deleting a gateway ends its sessions on it first.
func TestGatewayIsToldWhy(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		f := newFixture(t, b)
		g := f.attachGateway()
		dev := f.member("dev@example.com", "member")
		revoked, live := f.session(dev), f.session(f.admin)
		_, devID := dev.me()
		f.mustCall(f.admin, "DELETE", "/api/v1/projects/"+f.project+"/members/user/"+devID, nil, 204)
		hs := g.got(tunnel.TypeTerminate, revoked)
		if len(hs) != 1 || hs[0].Reason != tunnel.EndRevoked || hs[0].Message != "session ended: access was revoked: user removed from the project" {
			t.Fatalf("terminate streams for the revoked session: %+v", hs)
		}
		if hs := g.got(tunnel.TypeTerminate, live); len(hs) != 0 {
			t.Fatalf("the live session was terminated: %+v", hs)
		}

		f.mustCall(f.admin, "PATCH", "/api/v1/projects/"+f.project, map[string]any{"logMaskPatterns": []string{"card-[0-9]+"}, "logRedactValues": true}, 200)
		deadline := time.Now().Add(30 * time.Second)
		for len(g.got(tunnel.TypeUpdate, live)) == 0 && time.Now().Before(deadline) {
			time.Sleep(20 * time.Millisecond)
		}
		up := g.got(tunnel.TypeUpdate, live)
		if len(up) != 1 || len(up[0].MaskPatterns) != 1 || up[0].MaskPatterns[0] != "card-[0-9]+" || !up[0].RedactValues {
			t.Fatalf("update streams for the live session: %+v", up)
		}
		if up := g.got(tunnel.TypeUpdate, revoked); len(up) != 0 {
			t.Fatalf("an ended session was updated: %+v", up)
		}

		f.mustCall(f.admin, "DELETE", "/api/v1/gateways/"+f.gateway, nil, 204)
		hs = g.got(tunnel.TypeTerminate, live)
		if len(hs) != 1 || hs[0].Reason != tunnel.EndGatewayLost || !strings.Contains(hs[0].Message, "the gateway was deleted") {
			t.Fatalf("terminate streams after the gateway's deletion: %+v", hs)
		}
	})
}

// TestRelayAuthorizesEachStream: a CLI relay connection that is already up
// gets no new gateway stream once its owner is removed from the project,
// even when the removal was written by another replica (no hook ran here,
// and no expiry job runs in this test): the next stream is refused, the
// session ends, and its gateway is told.
func TestRelayAuthorizesEachStream(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		f := newFixture(t, b)
		g := f.attachGateway()
		dev := f.member("dev@example.com", "member")
		sid := f.session(dev)
		ctx := context.Background()
		conn, err := tunnel.Dial(ctx, f.e.http.URL, "/api/v1/relay/sessions/"+sid, http.Header{"Authorization": {"Bearer " + dev.token}}, nil)
		if err != nil {
			t.Fatal(err)
		}
		mux, _ := tunnel.MuxClient(conn)
		defer mux.Close()
		open := func() {
			st, err := mux.OpenStream()
			if err == nil {
				_, _ = st.Write([]byte{0})
			}
		}
		waitFor := func(what string, cond func() bool) {
			t.Helper()
			deadline := time.Now().Add(30 * time.Second)
			for !cond() {
				if time.Now().After(deadline) {
					t.Fatalf("waiting for %s", what)
				}
				time.Sleep(10 * time.Millisecond)
			}
		}
		open()
		waitFor("the first data stream", func() bool { return len(g.got(tunnel.TypeData, sid)) == 1 })
		if h := g.got(tunnel.TypeData, sid)[0]; h.Target == nil || h.Target.Password != "first password" {
			t.Fatalf("first data stream: %+v", h.Target)
		}
		var seen int64
		if err := f.e.sqlDB().QueryRow(`SELECT client_seen_at FROM sessions WHERE id = $1`, sid).Scan(&seen); err != nil || seen == 0 {
			t.Fatalf("the CLI's presence was not recorded: %d %v", seen, err)
		}

		_, devID := dev.me()
		f.exec(`DELETE FROM project_members WHERE subject_id = $1`, devID)
		open()
		waitFor("the session's end", func() bool { status, _, _ := f.state(sid); return status == "ended" })
		if _, reason, msg := f.state(sid); reason != "revoked" || !strings.Contains(msg, "user removed from the project") {
			t.Fatalf("after removal: %s %q", reason, msg)
		}
		if n := len(g.got(tunnel.TypeData, sid)); n != 1 {
			t.Fatalf("%d data streams reached the gateway, want 1", n)
		}
		if n := len(g.got(tunnel.TypeTerminate, sid)); n != 1 {
			t.Fatalf("%d terminate streams reached the gateway, want 1", n)
		}
		waitFor("the relay connection to close", func() bool { return mux.IsClosed() })
	})
}
