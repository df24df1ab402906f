package server_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/airlockpam/airlock/internal/sessionlog"
	"github.com/airlockpam/airlock/internal/store"
)

// TestSessionsEndByExpiryAndLoss drives the scheduler with the test clock:
// a session past its end is "expired"; one whose gateway has been silent for
// longer than GatewayLostAfter is "gateway_lost"; one whose CLI has been
// gone that long is "client_lost", unless it came back first; a session
// with a live gateway and CLI is left alone.
func TestSessionsEndByExpiryAndLoss(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		f := newFixture(t, b)
		ctx := context.Background()
		expired, lost, gone, back, fine := f.session(f.admin), f.session(f.admin), f.session(f.admin), f.session(f.admin), f.session(f.admin)
		// A session that ends in a minute (its end and its expiry job).
		f.exec(`UPDATE sessions SET expires_at = $1 WHERE id = $2`, store.Micros(f.e.clock.Now().Add(time.Minute)), expired)
		f.exec(`UPDATE jobs SET run_at = $1 WHERE kind = 'session.expire' AND job_key = $2`, store.Micros(f.e.clock.Now().Add(time.Minute)), expired)
		deadGW := "gw-dead"
		f.exec(`INSERT INTO gateways (id, org_id, name, last_heartbeat_at, online, created_at) VALUES ($1, $2, $1, $3, TRUE, $3)`,
			deadGW, f.org, store.Micros(f.e.clock.Now()))
		f.exec(`INSERT INTO gateway_projects (gateway_id, project_id, created_at) VALUES ($1, $2, 0)`, deadGW, f.project)
		f.exec(`UPDATE sessions SET gateway_id = $1 WHERE id = $2`, deadGW, lost)

		f.e.clock.Advance(3 * time.Minute)
		f.heartbeat()
		for _, id := range []string{expired, lost, back, fine} {
			f.e.srv.Sessions.ClientSeen(ctx, id) // their CLIs are connected
		}
		f.e.srv.Sessions.ExpireNow(ctx)
		want := map[string]string{expired: "ended/expired", lost: "ended/gateway_lost", gone: "ended/client_lost", back: "active/", fine: "active/"}
		for id, w := range want {
			if status, reason, _ := f.state(id); status+"/"+reason != w {
				t.Errorf("%s: %s/%s, want %s", id, status, reason, w)
			}
		}
		if _, _, msg := f.state(gone); !strings.Contains(msg, "CLI") {
			t.Errorf("client_lost message: %q", msg)
		}
		if acts := f.admin.auditActions("action=session.end"); len(acts) != 3 {
			t.Errorf("session ends audited: %v", acts)
		}
	})
}

// TestServerOutageEndsNoSession: the server is down for longer than
// GatewayLostAfter and ClientLostAfter while gateways and CLIs are fine.
// After it starts again, they get the whole grace period to reconnect
// before their sessions count as lost; the ones that do not come back then
// end.
func TestServerOutageEndsNoSession(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		f := newFixture(t, b)
		ctx := context.Background()
		back, gone := f.session(f.admin), f.session(f.admin)
		f.e.clock.Advance(time.Minute)
		f.e.srv.Sessions.ExpireNow(ctx)

		f.e.close()
		f.e.clock.Advance(5 * time.Minute) // the outage
		f.e.open("", "")
		f.e.srv.Sessions.ExpireNow(ctx)
		for _, id := range []string{back, gone} {
			if status, reason, _ := f.state(id); status != "active" {
				t.Fatalf("right after the restart: %s/%s", status, reason)
			}
		}
		// Within the grace period the gateway and one CLI come back.
		f.e.clock.Advance(90 * time.Second)
		f.heartbeat()
		f.e.srv.Sessions.ClientSeen(ctx, back)
		f.e.srv.Sessions.ExpireNow(ctx)
		for _, id := range []string{back, gone} {
			if status, reason, _ := f.state(id); status != "active" {
				t.Fatalf("within the grace period: %s/%s", status, reason)
			}
		}
		f.e.clock.Advance(45 * time.Second)
		f.heartbeat()
		f.e.srv.Sessions.ClientSeen(ctx, back)
		f.e.srv.Sessions.ExpireNow(ctx)
		if status, _, _ := f.state(back); status != "active" {
			t.Fatalf("the session whose CLI came back: %s", status)
		}
		if status, reason, _ := f.state(gone); status != "ended" || reason != "client_lost" {
			t.Fatalf("the session whose CLI never came back: %s/%s", status, reason)
		}
	})
}

// TestEndIsIdempotentAndScoped: ending an ended session answers it as it
// is (no 409, no second audit event); a member ends their own session but
// terminates no one's; an admin of another project learns nothing.
func TestEndIsIdempotentAndScoped(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		f := newFixture(t, b)
		dev := f.member("dev@example.com", "member")
		peer := f.member("peer@example.com", "member")
		outsider := f.e.createUser("outsider@example.com")
		var other struct{ ID string }
		outsider.call("POST", "/api/v1/projects", map[string]any{"name": "other"}, &other)

		mine := f.session(dev)
		f.mustCall(peer, "POST", "/api/v1/sessions/"+mine+"/terminate", nil, 404)
		f.mustCall(peer, "POST", "/api/v1/sessions/"+mine+"/end", nil, 404)
		f.mustCall(outsider, "POST", "/api/v1/sessions/"+mine+"/terminate", nil, 404)
		f.mustCall(dev, "POST", "/api/v1/sessions/"+mine+"/terminate", nil, 403)

		var first, again struct {
			Status, EndReason string
			EndedAt           time.Time
		}
		if st := dev.call("POST", "/api/v1/sessions/"+mine+"/end", nil, &first); st != 200 || first.Status != "ended" || first.EndReason != "ended_by_user" {
			t.Fatalf("end: %d %+v", st, first)
		}
		f.e.clock.Advance(time.Minute)
		if st := dev.call("POST", "/api/v1/sessions/"+mine+"/end", nil, &again); st != 200 || again != first {
			t.Fatalf("ending again: %d %+v, want %+v", st, again, first)
		}
		if st := f.admin.call("POST", "/api/v1/sessions/"+mine+"/terminate", nil, &again); st != 200 || again != first {
			t.Fatalf("terminating an ended session: %d %+v", st, again)
		}
		if acts := f.admin.auditActions("action=session."); len(acts) != 1 {
			t.Fatalf("audit events of the session: %v", acts)
		}

		theirs := f.session(peer)
		var s struct{ Status, EndReason string }
		if st := f.admin.call("POST", "/api/v1/sessions/"+theirs+"/terminate", nil, &s); st != 200 || s.EndReason != "terminated" {
			t.Fatalf("admin terminate: %d %+v", st, s)
		}
	})
}

// TestProjectDeleteKeepsLogs: deleting a project with sessions is refused
// without force, saying what exists and how to go on; with force its live
// sessions end and its session logs stay readable and verifiable by
// organization admins (its data key outlives it). Deleting an account
// likewise keeps its sessions' logs.
func TestProjectDeleteKeepsLogs(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		f := newFixture(t, b)
		ctx := context.Background()
		projAdmin := f.member("lead@example.com", "admin")
		live := f.session(f.admin)
		now := f.e.clock.Now()
		var batch []sessionlog.Event
		for i, stmt := range []string{"SELECT 1", "UPDATE t SET x = 2"} {
			batch = append(batch, sessionlog.Event{ID: newV7(t), SessionID: live, Time: now.Add(time.Duration(i) * time.Second),
				ConnID: "c1", Kind: "query", Statement: stmt, Outcome: "SELECT 1"})
		}
		if _, err := f.e.srv.Events.Ingest(ctx, batch); err != nil {
			t.Fatal(err)
		}
		// The account goes first: its session ends, its log stays.
		f.mustCall(f.admin, "DELETE", "/api/v1/projects/"+f.project+"/accounts/"+f.account, nil, 204)
		var logs struct{ Events []struct{ Statement string } }
		if st := f.admin.call("GET", "/api/v1/sessions/"+live+"/logs", nil, &logs); st != 200 || len(logs.Events) != 2 {
			t.Fatalf("logs after the account's deletion: %d %d", st, len(logs.Events))
		}
		live2 := f.sessionOn(f.admin, f.project, f.resource, f.account) // a session still running

		if st := projAdmin.call("DELETE", "/api/v1/projects/"+f.project, nil, nil); st != 409 {
			t.Fatalf("delete without force: %d", st)
		}
		for _, want := range []string{"1 live session", "2 recorded session", "--force"} {
			if !strings.Contains(projAdmin.problem().Detail, want) {
				t.Errorf("the refusal does not say %q: %s", want, projAdmin.problem().Detail)
			}
		}
		f.mustCall(projAdmin, "DELETE", "/api/v1/projects/"+f.project+"?force=true", nil, 204)
		if status, reason, msg := f.state(live2); status != "ended" || reason != "revoked" || !strings.Contains(msg, "project was deleted") {
			t.Fatalf("the live session after the project's deletion: %s/%s %q", status, reason, msg)
		}
		// Org admins still read, list and verify; the project's former admin
		// does not (the project is gone).
		if st := f.admin.call("GET", "/api/v1/sessions/"+live+"/logs", nil, &logs); st != 200 || len(logs.Events) != 2 || logs.Events[1].Statement != "UPDATE t SET x = 2" {
			t.Fatalf("logs after the project's deletion: %d %+v", st, logs)
		}
		var v struct{ OK bool }
		if st := f.admin.call("GET", "/api/v1/sessions/"+live+"/verify", nil, &v); st != 200 || !v.OK {
			t.Fatalf("verify after the project's deletion: %d %+v %s", st, v, f.admin.problem().raw)
		}
		var list []struct{ ID string }
		if st := f.admin.call("GET", "/api/v1/projects/"+f.project+"/sessions", nil, &list); st != 200 || len(list) != 2 {
			t.Fatalf("list after the project's deletion: %d %v", st, list)
		}
		f.mustCall(projAdmin, "GET", "/api/v1/sessions/"+live+"/logs", nil, 404)
		if acts := f.admin.auditActions("action=project.delete"); len(acts) != 1 {
			t.Errorf("project.delete audited: %v", acts)
		}
		// An empty project needs no force.
		empty := f.newProject("empty")
		f.mustCall(f.admin, "DELETE", "/api/v1/projects/"+empty, nil, 204)
	})
}
