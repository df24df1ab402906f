package server_test

import (
	"context"
	"testing"
	"time"

	"github.com/airlockpam/airlock/internal/store"
)

// TestSessionsEndByExpiryAndGatewayLoss drives the scheduler with the test
// clock: a session past its end is "expired"; one whose gateway has been
// silent for longer than the grace period is "gateway_lost"; a session with
// a live gateway is left alone.
func TestSessionsEndByExpiryAndGatewayLoss(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		e := start(t, b)
		admin := e.admin()
		var p map[string]any
		admin.call("POST", "/api/v1/projects", map[string]any{"name": "p"}, &p)
		db := e.sqlDB()
		now := e.clock.Now()
		var org string
		if err := db.QueryRow(`SELECT id FROM organizations`).Scan(&org); err != nil {
			t.Fatal(err)
		}
		for _, g := range []struct {
			id        string
			heartbeat time.Time
		}{{"gw-live", now.Add(3 * time.Minute)}, {"gw-gone", now}} {
			if _, err := db.Exec(`INSERT INTO gateways (id, org_id, name, last_heartbeat_at, online, created_at) VALUES ($1, $2, $1, $3, TRUE, $4)`,
				g.id, org, store.Micros(g.heartbeat), store.Micros(now)); err != nil {
				t.Fatal(err)
			}
		}
		for _, s := range []struct {
			id, gateway string
			expires     time.Time
		}{{"s-expired", "gw-live", now.Add(time.Minute)}, {"s-lost", "gw-gone", now.Add(time.Hour)}, {"s-fine", "gw-live", now.Add(time.Hour)}} {
			if _, err := db.Exec(`INSERT INTO sessions (id, org_id, project_id, subject_kind, subject_id, subject_name, resource_id, resource_name,
				resource_kind, account_id, account_name, account_username, gateway_id, access_method, client_addr, created_at, expires_at, status)
				VALUES ($1, $2, $3, 'user', 'u', 'u', 'r', 'r', 'postgres', 'a', 'a', 'a', $4, 'cli', '', $5, $6, 'active')`,
				s.id, org, p["id"], s.gateway, store.Micros(now), store.Micros(s.expires)); err != nil {
				t.Fatal(err)
			}
		}
		e.clock.Advance(3 * time.Minute)
		e.srv.Sessions.ExpireNow(context.Background())
		for id, want := range map[string]string{"s-expired": "ended/expired", "s-lost": "ended/gateway_lost", "s-fine": "active/"} {
			var status, reason string
			if err := db.QueryRow(`SELECT status, end_reason FROM sessions WHERE id = $1`, id).Scan(&status, &reason); err != nil {
				t.Fatal(err)
			}
			if status+"/"+reason != want {
				t.Errorf("%s: %s/%s, want %s", id, status, reason, want)
			}
		}
		if acts := e.admin().auditActions("action=session.end"); len(acts) != 2 {
			t.Errorf("session ends audited: %v", acts)
		}
	})
}
