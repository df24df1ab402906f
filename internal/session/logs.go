package session

import (
	"context"
	"database/sql"
	"net/http"

	"github.com/danielgtaylor/huma/v2"

	"github.com/airlockpam/airlock/internal/api"
	"github.com/airlockpam/airlock/internal/errs"
	"github.com/airlockpam/airlock/internal/sessionlog"
)

// EventStore is the session log store.
type EventStore interface {
	List(ctx context.Context, sessionID string, afterSeq int64, limit int) ([]sessionlog.Event, error)
	Verify(ctx context.Context, sessionID string) (sessionlog.VerifyResult, error)
	// Reseal runs update (nil: nothing) in tx, then authenticates the
	// session's row (identity fields, times, chain head) with the
	// root-derived MAC, so `sessions verify` catches a later change.
	Reseal(ctx context.Context, tx *sql.Tx, sessionID string, update func() error) error
}

// SetEvents wires the session log store in.
func (s *Service) SetEvents(e EventStore) { s.events = e }

// Logs is a page of a session's log.
type Logs struct {
	Events []sessionlog.Event `json:"events"`
	// Next is the "after" value of the next page (the last seq returned).
	Next int64 `json:"next"`
	// Ended reports that the session has ended: once a page comes back
	// empty, no more events will come (but for ones still in a gateway's spool).
	Ended bool `json:"ended"`
}

// Logs returns a page of a session's events, oldest first.
func (s *Service) Logs(ctx context.Context, id string, after int64, limit int) (*Logs, error) {
	const op = "session.(*Service).Logs"
	x, err := s.Get(ctx, id)
	if err != nil {
		return nil, err
	}
	evs, err := s.events.List(ctx, x.ID, after, limit)
	if err != nil {
		return nil, errs.Wrap(op, errs.Unavailable, "reading the session log failed", err)
	}
	if evs == nil {
		evs = []sessionlog.Event{}
	}
	next := after
	if len(evs) > 0 {
		next = evs[len(evs)-1].Seq
	}
	return &Logs{Events: evs, Next: next, Ended: x.Status == StatusEnded}, nil
}

// Verify checks a session's hash chain (project admins).
func (s *Service) Verify(ctx context.Context, id string) (*sessionlog.VerifyResult, error) {
	const op = "session.(*Service).Verify"
	x, err := s.Get(ctx, id)
	if err != nil {
		return nil, err
	}
	if err := s.authorizeAdmin(ctx, x); err != nil {
		return nil, err
	}
	res, err := s.events.Verify(ctx, x.ID)
	if err != nil {
		return nil, errs.Wrap(op, errs.Unavailable, "verifying the session log failed", err)
	}
	return &res, nil
}

func (s *Service) registerLogs(a huma.API) {
	tags := []string{"Sessions"}
	huma.Register(a, huma.Operation{
		OperationID: "get-session-logs", Method: http.MethodGet, Path: "/api/v1/sessions/{sessionId}/logs", Tags: tags,
		Summary: "Read a session's recorded queries and commands, oldest first, a page at a time", Security: api.Secured, Errors: []int{404},
	}, func(ctx context.Context, in *struct {
		SessionID string `path:"sessionId" maxLength:"64"`
		After     int64  `query:"after" minimum:"0" doc:"return events after this seq (the previous page's next)"`
		Limit     int    `query:"limit" minimum:"1" maximum:"1000" default:"200"`
	}) (*struct{ Body *Logs }, error) {
		l, err := s.Logs(ctx, in.SessionID, in.After, in.Limit)
		return &struct{ Body *Logs }{l}, api.Err(ctx, err)
	})
	huma.Register(a, huma.Operation{
		OperationID: "verify-session-logs", Method: http.MethodGet, Path: "/api/v1/sessions/{sessionId}/verify", Tags: tags,
		Summary: "Check that a session's log is whole: no event removed or altered (project admins)", Security: api.Secured, Errors: []int{403, 404},
	}, func(ctx context.Context, in *struct {
		SessionID string `path:"sessionId" maxLength:"64"`
	}) (*struct{ Body *sessionlog.VerifyResult }, error) {
		r, err := s.Verify(ctx, in.SessionID)
		return &struct{ Body *sessionlog.VerifyResult }{r}, api.Err(ctx, err)
	})
}
