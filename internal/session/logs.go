package session

import (
	"context"
	"database/sql"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"time"
	"unicode/utf8"

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
	// Next is the "after" value of the next page: the last seq read (with
	// a filter, the last one looked at, which may not be listed).
	Next int64 `json:"next"`
	// More reports that the page stopped at its limit, or at the most
	// events one request reads to filter, and not at the end of the log
	// as stored: ask again from Next at once for the rest.
	More bool `json:"more"`
	// Ended reports that the session has ended: once a page comes back
	// empty, no more events will come (but for ones still in a gateway's spool).
	Ended bool `json:"ended"`
}

// LogQuery selects the events of a session's log that Logs returns, oldest
// first. The zero value lists from the start, DefaultLogLimit at a time.
type LogQuery struct {
	// After lists the events after this seq (the previous page's Next).
	After int64
	// Limit is the most events of the page (1 to sessionlog.MaxListLimit;
	// 0 means DefaultLogLimit).
	Limit int
	// Tail, when positive (at most sessionlog.MaxListLimit), lists the last
	// Tail events after After that match the filters instead, still oldest
	// first; Limit is then ignored.
	Tail int

	// The filters; an event must pass them all. A damaged event (one that
	// fails its integrity check) passes every filter: it cannot be read,
	// and is never hidden.

	// Conn keeps the events of this connection (its id).
	Conn string
	// Kinds keeps the events of these kinds (sessionlog.KindQuery...).
	Kinds []string
	// Errors keeps the events that failed or whose outcome is not known:
	// see Failed.
	Errors bool
	// Since keeps the events at or after this time (the time a request was
	// sent, a connection opened or ended).
	Since time.Time
	// Search keeps the events whose statement, parameters, command,
	// collection, outcome or error holds this text, ignoring case. The
	// events are sealed in the store, so the server searches what it
	// opens.
	Search string
}

// MaxSearchLen bounds LogQuery.Search.
const MaxSearchLen = 200

// DefaultLogLimit is the page size of Logs when LogQuery.Limit is 0.
const DefaultLogLimit = 200

// maxLogScan bounds the events one filtered page reads: past it, the page
// ends with More set, so that a rare filter over a long log costs several
// short requests rather than one long one. A variable for tests.
var maxLogScan = 20_000

// filtered reports whether q filters events.
func (q *LogQuery) filtered() bool {
	return q.Conn != "" || len(q.Kinds) > 0 || q.Errors || !q.Since.IsZero() || q.Search != ""
}

// match reports whether ev passes q's filters.
func (q *LogQuery) match(ev *sessionlog.Event) bool {
	switch {
	case ev.Damaged != "":
		return true
	case q.Conn != "" && ev.ConnID != q.Conn:
		return false
	case len(q.Kinds) > 0 && !slices.Contains(q.Kinds, ev.Kind):
		return false
	case q.Errors && !Failed(ev):
		return false
	case !q.Since.IsZero() && ev.Time.Before(q.Since):
		return false
	case q.Search != "" && !holds(ev, q.Search):
		return false
	}
	return true
}

// holds reports whether an event's words hold text, ignoring case.
func holds(ev *sessionlog.Event, text string) bool {
	has := func(s string) bool { return s != "" && containsFold(s, text) }
	if has(ev.Statement) || has(ev.Command) || has(ev.Collection) || has(ev.Outcome) || has(ev.ErrorMsg) || has(ev.ErrorCode) {
		return true
	}
	return slices.ContainsFunc(ev.Params, has)
}

// containsFold is strings.Contains ignoring case (Unicode simple folding).
func containsFold(s, sub string) bool {
	if len(sub) == 0 {
		return true
	}
	for i := 0; i+len(sub) <= len(s); {
		if strings.EqualFold(s[i:i+len(sub)], sub) {
			return true
		}
		_, n := utf8.DecodeRuneInString(s[i:])
		i += n
	}
	return false
}

// Failed reports whether an event records something that failed or whose
// outcome is not known: an error (a SQLSTATE or MongoDB code), a refusal,
// a cancel, a statement cut off by its connection's end ("outcome
// unknown"), a connection refused or ended by its session's end (whose
// code is the end's reason).
func Failed(ev *sessionlog.Event) bool {
	return ev.ErrorCode != "" || ev.Damaged != "" ||
		strings.HasPrefix(ev.Outcome, "error") || strings.HasPrefix(ev.Outcome, "outcome unknown")
}

// Logs returns a page of a session's events, oldest first, that match q.
// Filters are applied here, on the server, so only what matches is sent;
// a tail reads the log back from its end (the session's event count) and
// stops once it has enough.
func (s *Service) Logs(ctx context.Context, id string, q LogQuery) (*Logs, error) {
	const op = "session.(*Service).Logs"
	switch {
	case q.After < 0:
		return nil, errs.InvalidField(op, "after", "the sequence number to list after must not be negative")
	case q.Limit < 0 || q.Limit > sessionlog.MaxListLimit:
		return nil, errs.InvalidField(op, "limit", fmt.Sprintf("the page size must be between 1 and %d", sessionlog.MaxListLimit))
	case q.Tail < 0 || q.Tail > sessionlog.MaxListLimit:
		return nil, errs.InvalidField(op, "tail", fmt.Sprintf("the tail must be between 1 and %d events", sessionlog.MaxListLimit))
	case len(q.Search) > MaxSearchLen:
		return nil, errs.InvalidField(op, "search", fmt.Sprintf("the search text must be at most %d bytes", MaxSearchLen))
	}
	if q.Limit == 0 {
		q.Limit = DefaultLogLimit
	}
	x, err := s.Get(ctx, id)
	if err != nil {
		return nil, err
	}
	var l *Logs
	if q.Tail > 0 {
		l, err = s.tail(ctx, x.ID, q)
	} else {
		l, err = s.page(ctx, x.ID, q)
	}
	if err != nil {
		return nil, errs.Wrap(op, errs.Unavailable, "reading the session log failed", err)
	}
	l.Ended = x.Status == StatusEnded
	return l, nil
}

// page lists the first q.Limit events after q.After that match q.
func (s *Service) page(ctx context.Context, id string, q LogQuery) (*Logs, error) {
	l := &Logs{Events: []sessionlog.Event{}, Next: q.After}
	if !q.filtered() {
		evs, err := s.events.List(ctx, id, q.After, q.Limit)
		if err != nil {
			return nil, err
		}
		if len(evs) > 0 {
			l.Events, l.Next = evs, evs[len(evs)-1].Seq
		}
		l.More = len(evs) == q.Limit
		return l, nil
	}
	for scanned := 0; ; {
		evs, err := s.events.List(ctx, id, l.Next, sessionlog.MaxListLimit)
		if err != nil {
			return nil, err
		}
		for i := range evs {
			if evs[i].Seq <= l.Next {
				continue // not expected: the store lists after Next
			}
			if q.match(&evs[i]) {
				l.Events = append(l.Events, evs[i])
			}
			l.Next = evs[i].Seq
			scanned++
			if len(l.Events) == q.Limit || scanned >= maxLogScan {
				l.More = true
				return l, nil
			}
		}
		if len(evs) < sessionlog.MaxListLimit {
			return l, nil // the end of the log as stored
		}
	}
}

// tail lists the last q.Tail events after q.After that match q, reading
// back from the session's event count.
func (s *Service) tail(ctx context.Context, id string, q LogQuery) (*Logs, error) {
	var head int64
	if err := s.db.QueryRowContext(ctx, `SELECT event_count FROM sessions WHERE id = $1`, id).Scan(&head); err != nil {
		return nil, err
	}
	l := &Logs{Events: []sessionlog.Event{}, Next: max(q.After, head)}
	var found [][]sessionlog.Event // windows of matches, newest first
	n := 0
	for hi := head; hi > q.After && n < q.Tail; {
		lo := max(q.After, hi-int64(sessionlog.MaxListLimit))
		if !q.filtered() {
			lo = max(q.After, hi-int64(q.Tail-n))
		}
		evs, err := s.events.List(ctx, id, lo, int(hi-lo))
		if err != nil {
			return nil, err
		}
		var match []sessionlog.Event
		for i := range evs {
			if evs[i].Seq > lo && evs[i].Seq <= hi && q.match(&evs[i]) {
				match = append(match, evs[i])
			}
		}
		found = append(found, match)
		n += len(match)
		hi = lo
	}
	for i := len(found) - 1; i >= 0; i-- {
		l.Events = append(l.Events, found[i]...)
	}
	if extra := len(l.Events) - q.Tail; extra > 0 {
		l.Events = l.Events[extra:]
	}
	return l, nil
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
		Summary: "Read a session's recorded queries and commands, oldest first, a page at a time; filtered on the server", Security: api.Secured, Errors: []int{404},
	}, func(ctx context.Context, in *struct {
		SessionID string    `path:"sessionId" maxLength:"64"`
		After     int64     `query:"after" minimum:"0" doc:"return events after this seq (the previous page's next)"`
		Limit     int       `query:"limit" minimum:"1" maximum:"1000" default:"200"`
		Tail      int       `query:"tail" minimum:"0" maximum:"1000" doc:"return the last N matching events (after 'after'), oldest first, instead of the first 'limit'"`
		Conn      string    `query:"conn" maxLength:"64" doc:"only the events of this connection (its id)"`
		Kind      []string  `query:"kind" maxItems:"16" doc:"only events of these kinds (query, execute, function_call, copy_in, copy_out, command, connect, disconnect), comma-separated"`
		Errors    bool      `query:"errors" doc:"only events that failed or whose outcome is not known: an error code, a refusal, a cancel, 'outcome unknown', a connection refused or ended by the session's end"`
		Since     time.Time `query:"since" doc:"only events at or after this RFC 3339 time"`
		Search    string    `query:"search" maxLength:"200" doc:"only events whose statement, parameters, command, collection, outcome or error holds this text (ignoring case)"`
	}) (*struct{ Body *Logs }, error) {
		l, err := s.Logs(ctx, in.SessionID, LogQuery{After: in.After, Limit: in.Limit, Tail: in.Tail,
			Conn: in.Conn, Kinds: in.Kind, Errors: in.Errors, Since: in.Since, Search: in.Search})
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
