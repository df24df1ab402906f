package session

import (
	"context"
	"log/slog"
	"time"

	"github.com/airlockpam/airlock/internal/jobs"
	"github.com/airlockpam/airlock/internal/store"
)

// KindExpire is the job (package jobs) that ends a session when it
// expires: scheduled with the session, in the same transaction, due at its
// end, and cancelled when the session ends otherwise. Each runs on one
// server replica, in its own goroutine, so a gateway slow to confirm one
// end holds up no other.
const KindExpire = "session.expire"

// UseJobs registers the session expiry job with sch, which then ends
// sessions when they expire; ExpireNow runs the due ones at once.
func (s *Service) UseJobs(sch *jobs.Scheduler) {
	s.jobs = sch
	sch.Register(jobs.Kind{Name: KindExpire, Lease: time.Minute, RetryMin: time.Second, RetryMax: 30 * time.Second,
		Handler: func(ctx context.Context, j jobs.Job) (time.Time, error) {
			if _, err := s.finish(ctx, j.Key, Expired, "", systemEnd("session expiry")); err != nil {
				return time.Time{}, err
			}
			return time.Time{}, nil
		}})
}

// RunExpiry ends sessions whose access no longer holds, whose gateway or
// CLI is gone (and, without UseJobs, that are past their end), every
// interval, until ctx ends. Each row is ended by one conditional UPDATE,
// so several server replicas never end the same session twice.
func (s *Service) RunExpiry(ctx context.Context, interval time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			s.expireDue(ctx)
		}
	}
}

// GatewayLostAfter is how long, by default, a session's gateway may stay
// disconnected before the session ends with reason gateway_lost. A shorter
// outage (a restart, a network blip) only interrupts connections.
const GatewayLostAfter = 2 * time.Minute

// ClientLostAfter is how long, by default, a session's CLI (`airlock db
// access`) may stay disconnected from the relay before the session ends
// with reason client_lost: it was killed, or its machine went to sleep.
const ClientLostAfter = 2 * time.Minute

// liveness holds how long a session's gateway and CLI may be gone.
type liveness struct {
	gatewayLostAfter, clientLostAfter time.Duration
}

// SetLiveness changes how long a session's gateway and CLI may stay
// disconnected before the session ends as gateway_lost or client_lost
// (defaults GatewayLostAfter and ClientLostAfter); zero keeps a default.
func (s *Service) SetLiveness(gatewayLostAfter, clientLostAfter time.Duration) {
	if gatewayLostAfter > 0 {
		s.gatewayLostAfter = gatewayLostAfter
	}
	if clientLostAfter > 0 {
		s.clientLostAfter = clientLostAfter
	}
}

// PresenceInterval is how often a live gateway or CLI connection should be
// recorded so that neither counts as lost while it is up: every 20 s, or
// more often when a lost-after setting is short.
func (s *Service) PresenceInterval() time.Duration {
	d := 20 * time.Second
	for _, after := range []time.Duration{s.gatewayLostAfter, s.clientLostAfter} {
		d = min(d, after/4)
	}
	return max(d, 100*time.Millisecond)
}

// ExpireNow ends every session that is due: past its end (the due expiry
// jobs, run and waited for), whose access no longer holds (EnforceAccess),
// whose gateway has been gone for gatewayLostAfter, or whose CLI has been
// gone for clientLostAfter.
func (s *Service) ExpireNow(ctx context.Context) {
	if s.jobs != nil {
		s.jobs.RunDue(ctx)
		s.jobs.Wait()
	}
	s.expireDue(ctx)
}

func (s *Service) expireDue(ctx context.Context) {
	now := s.now()
	if s.jobs == nil {
		s.endWhere(ctx, Expired, "", "session expiry", `SELECT id FROM sessions WHERE status = $1 AND expires_at <= $2`,
			StatusActive, store.Micros(now))
	}
	s.EnforceAccess(ctx)
	// After this process starts, gateways and CLIs get the whole grace
	// period to reconnect: their last heartbeat is old because the server
	// was down, not because they were.
	up := now.Sub(s.started)
	if up >= s.gatewayLostAfter {
		cutoff := store.Micros(now.Add(-s.gatewayLostAfter))
		s.endWhere(ctx, GatewayLost, "unreachable for more than "+s.gatewayLostAfter.String(), "gateway lost",
			`SELECT s.id FROM sessions s JOIN gateways g ON g.id = s.gateway_id
			WHERE s.status = $1 AND g.last_heartbeat_at < $2 AND s.created_at < $2`, StatusActive, cutoff)
	}
	if up >= s.clientLostAfter {
		cutoff := store.Micros(now.Add(-s.clientLostAfter))
		s.endWhere(ctx, ClientLost, "no connection from it for more than "+s.clientLostAfter.String(), "client lost",
			`SELECT id FROM sessions WHERE status = $1 AND access_method IN ($2, $3) AND client_seen_at < $4 AND created_at < $4`,
			StatusActive, accessCLI, accessWeb, cutoff)
	}
}

// endWhere ends the sessions the query selects, for reason.
func (s *Service) endWhere(ctx context.Context, reason, detail, actor, query string, args ...any) {
	rows, err := s.db.QueryContext(ctx, query, args...)
	if err != nil {
		slog.Warn("looking for sessions to end failed", "reason", reason, "err", err)
		return
	}
	var ids []string
	for rows.Next() {
		var id string
		if rows.Scan(&id) == nil {
			ids = append(ids, id)
		}
	}
	rows.Close()
	for _, id := range ids {
		if _, err := s.finish(ctx, id, reason, detail, systemEnd(actor)); err != nil {
			slog.Warn("ending a session failed", "session", id, "reason", reason, "err", err)
		}
	}
}
