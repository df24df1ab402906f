package session

import (
	"context"
	"log/slog"
	"time"

	"github.com/airlockpam/airlock/internal/audit"
	"github.com/airlockpam/airlock/internal/store"
)

// RunExpiry ends sessions whose time is up, every interval, until ctx ends.
// Each expired row is claimed by one UPDATE ... RETURNING, so several server
// replicas never end the same session twice.
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

// GatewayLostAfter is how long a session's gateway may stay disconnected
// before the session ends with reason gateway_lost. A shorter outage (a
// restart, a network blip) only interrupts connections.
const GatewayLostAfter = 2 * time.Minute

// ExpireNow ends every session that is due: past its end, or whose gateway
// has been gone for GatewayLostAfter. RunExpiry calls it every interval.
func (s *Service) ExpireNow(ctx context.Context) { s.expireDue(ctx) }

func (s *Service) expireDue(ctx context.Context) {
	now := s.now()
	s.endWhere(ctx, Expired, "session expiry", `SELECT id FROM sessions WHERE status = $1 AND expires_at <= $2`,
		StatusActive, store.Micros(now))
	s.endWhere(ctx, GatewayLost, "gateway lost", `SELECT s.id FROM sessions s JOIN gateways g ON g.id = s.gateway_id
		WHERE s.status = $1 AND g.last_heartbeat_at < $2 AND s.created_at < $2`,
		StatusActive, store.Micros(now.Add(-GatewayLostAfter)))
}

// endWhere ends the sessions the query selects, for reason.
func (s *Service) endWhere(ctx context.Context, reason, actor, query string, args ...any) {
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
		ev := audit.Entry{ActorKind: "system", ActorID: "scheduler", ActorName: actor, Action: "session.end", Outcome: audit.Success}
		if _, err := s.finish(ctx, id, reason, ev); err != nil {
			slog.Warn("ending a session failed", "session", id, "reason", reason, "err", err)
		}
	}
}
