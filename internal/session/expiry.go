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

func (s *Service) expireDue(ctx context.Context) {
	rows, err := s.db.QueryContext(ctx, `SELECT id FROM sessions WHERE status = $1 AND expires_at <= $2`, StatusActive, store.Micros(s.now()))
	if err != nil {
		slog.Warn("looking for expired sessions failed", "err", err)
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
		ev := audit.Entry{ActorKind: "system", ActorID: "scheduler", ActorName: "session expiry", Action: "session.end", Outcome: audit.Success}
		if _, err := s.finish(ctx, id, Expired, ev); err != nil {
			slog.Warn("expiring a session failed", "session", id, "err", err)
		}
	}
}
