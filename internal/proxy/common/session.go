package common

import (
	"context"
	"errors"
	"net"
	"regexp"
	"sync"
	"sync/atomic"

	"github.com/airlockpam/airlock/internal/sessionlog"
	"github.com/airlockpam/airlock/internal/tunnel"
)

// ErrSessionEnded is returned by an engine's Serve for a connection ended
// by Session.End, or served under a Session that has ended.
var ErrSessionEnded = errors.New("the access session has ended")

// Engine serves the client connections of one protocol. The gateway keeps
// one Engine per resource kind and hands each data stream to the Engine of
// its target's kind.
type Engine interface {
	// Kind is the resource kind the engine serves (tunnel.KindPostgres...).
	Kind() string
	// Validate tries to log in with target's credentials and says why it
	// could not, in a Result that never holds the password.
	Validate(ctx context.Context, target tunnel.Target) tunnel.Result
	// HandleConnection serves one client connection of sess, logging in
	// upstream with target's credentials, until either side closes, ctx
	// ends or sess ends. It always closes client before it returns.
	HandleConnection(ctx context.Context, client net.Conn, sess *Session, target tunnel.Target) error
	// Rotate logs in as admin (the resource's rotation account), sets the
	// password of the database user rot.Username to rot.NewPassword, then
	// logs in as that user with it. A Result with CodeDenied or a login
	// failure means the password did not change; CodeUnverified means it
	// changed but the new one did not log in; otherwise it is unknown.
	Rotate(ctx context.Context, admin tunnel.Target, rot tunnel.Rotation) tunnel.Result
}

// Conn is one client connection of a Session, as its engine serves it:
// what Session.End needs to end it. Session.End calls, for each connection
// and concurrently across connections, Interrupt, then Goodbye, then Close.
type Conn interface {
	// Interrupt stops what the connection runs upstream: it stops
	// forwarding the client's requests, asks the database to cancel the
	// request in progress and, if that does not stop it promptly, ends the
	// upstream connection's work by other means (PostgreSQL: terminating
	// the backend). It returns when nothing of the connection can still
	// change data, or when ctx ends.
	Interrupt(ctx context.Context)
	// Goodbye tells the client why its connection ends, with an error of
	// its protocol, where the protocol allows one at this point: message
	// is the text, already prefixed "airlock: ".
	Goodbye(message string)
	// Close closes the client and upstream connections. It may be called
	// any number of times.
	Close()
}

// SessionOption configures a Session.
type SessionOption func(*Session)

// WithRecorder makes the engines record the session log of every
// connection of the session into r. Without a recorder, or with a nil one,
// nothing is recorded.
func WithRecorder(r sessionlog.Recorder) SessionOption {
	return func(s *Session) { s.recorder = r }
}

// WithMaskPatterns sets the project's mask patterns: in everything
// recorded, each match of each pattern is replaced by ***. They can be
// changed while the session is live with SetMaskPatterns.
func WithMaskPatterns(patterns []*regexp.Regexp) SessionOption {
	return func(s *Session) { s.SetMaskPatterns(patterns) }
}

// WithRedactValues sets whether the values of written documents are
// redacted in the session log (MongoDB); see SetRedactValues.
func WithRedactValues(on bool) SessionOption {
	return func(s *Session) { s.redact.Store(on) }
}

// DefaultMaxStatementBytes is the limit on a recorded statement when the
// project sets none (tunnel.Header.MaxStatementBytes is 0): 1 MiB.
const DefaultMaxStatementBytes = 1 << 20

// WithStatementLimit sets the project's limit on a recorded statement, in
// bytes (0 or less: DefaultMaxStatementBytes), and what happens to a
// statement over it: tunnel.OversizeRefuse (the default, also for an empty
// or unknown policy) or tunnel.OversizeRecordEnds. They can be changed
// while the session is live with SetStatementLimit.
func WithStatementLimit(maxBytes int64, policy string) SessionOption {
	return func(s *Session) { s.SetStatementLimit(maxBytes, policy) }
}

// Session is one access session on a gateway: every client connection of
// the session, whatever its protocol, is served with the same *Session. It
// holds what the engines share (the recorder, the project's log settings,
// which may change while the session is live), the session's live
// connections, state a protocol keeps per session (Value), and the one way
// a session ends: End.
//
// A Session is safe for concurrent use.
type Session struct {
	id       string
	recorder sessionlog.Recorder
	patterns atomic.Pointer[[]*regexp.Regexp]
	redact   atomic.Bool
	limit    atomic.Pointer[statementLimit]

	mu      sync.Mutex
	ended   bool
	reason  string
	message string
	conns   map[Conn]struct{}
	gone    chan struct{} // closed when conns empties after End; nil before
	values  map[any]any
	endDone chan struct{} // closed when the first End has finished
}

// NewSession returns a live Session; id identifies it in logs and in the
// session log's events.
func NewSession(id string, opts ...SessionOption) *Session {
	s := &Session{id: id, conns: map[Conn]struct{}{}, values: map[any]any{}, endDone: make(chan struct{})}
	for _, o := range opts {
		o(s)
	}
	return s
}

// ID returns the session's identifier.
func (s *Session) ID() string { return s.id }

// Recorder returns the session's recorder, nil if nothing is recorded.
func (s *Session) Recorder() sessionlog.Recorder { return s.recorder }

// MaskPatterns returns the project's mask patterns as they are now. The
// slice must not be changed.
func (s *Session) MaskPatterns() []*regexp.Regexp {
	if p := s.patterns.Load(); p != nil {
		return *p
	}
	return nil
}

// SetMaskPatterns replaces the mask patterns; every connection applies
// them from its next statement on.
func (s *Session) SetMaskPatterns(patterns []*regexp.Regexp) {
	p := append([]*regexp.Regexp(nil), patterns...)
	s.patterns.Store(&p)
}

// RedactValues reports whether the values of written documents are
// redacted in the session log.
func (s *Session) RedactValues() bool { return s.redact.Load() }

// SetRedactValues turns the redaction of written values on or off, from
// each connection's next command on.
func (s *Session) SetRedactValues(on bool) { s.redact.Store(on) }

// statementLimit is a project's limit on recorded statements.
type statementLimit struct {
	maxBytes int64
	policy   string
}

// SetStatementLimit replaces the limit on a recorded statement (maxBytes
// in bytes, 0 or less for DefaultMaxStatementBytes) and the policy for a
// statement over it (tunnel.OversizeRefuse, also for an empty or unknown
// policy, or tunnel.OversizeRecordEnds); every connection applies them
// from its next statement on.
func (s *Session) SetStatementLimit(maxBytes int64, policy string) {
	if maxBytes <= 0 {
		maxBytes = DefaultMaxStatementBytes
	}
	if policy != tunnel.OversizeRecordEnds {
		policy = tunnel.OversizeRefuse
	}
	s.limit.Store(&statementLimit{maxBytes: maxBytes, policy: policy})
}

// MaxStatementBytes returns the limit on a recorded statement, in bytes:
// DefaultMaxStatementBytes unless the project set another.
func (s *Session) MaxStatementBytes() int64 {
	if l := s.limit.Load(); l != nil {
		return l.maxBytes
	}
	return DefaultMaxStatementBytes
}

// OversizeStatements returns what happens to a statement over
// MaxStatementBytes: tunnel.OversizeRefuse (the default) or
// tunnel.OversizeRecordEnds.
func (s *Session) OversizeStatements() string {
	if l := s.limit.Load(); l != nil {
		return l.policy
	}
	return tunnel.OversizeRefuse
}

// RecorderErr returns why the session's recorder cannot persist events
// now, when it implements sessionlog.HealthReporter and says so; nil
// otherwise. While it is not nil, the engines refuse the session's new
// statements (fail closed), and forward nothing.
func (s *Session) RecorderErr() error {
	if h, ok := s.recorder.(sessionlog.HealthReporter); ok {
		return h.Err()
	}
	return nil
}

// Add starts tracking c, a connection about to be served; it returns
// ErrSessionEnded if the session has ended.
func (s *Session) Add(c Conn) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ended {
		return ErrSessionEnded
	}
	s.conns[c] = struct{}{}
	return nil
}

// Remove stops tracking c; its engine calls it when c's Serve returns.
func (s *Session) Remove(c Conn) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.conns, c)
	if len(s.conns) == 0 && s.gone != nil {
		close(s.gone)
		s.gone = nil
	}
}

// Conns returns the number of client connections being served.
func (s *Session) Conns() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.conns)
}

// Ended reports whether End was called.
func (s *Session) Ended() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.ended
}

// EndReason returns why the session ended (a tunnel.End* constant) and
// the words its clients were told; empty while it is live.
func (s *Session) EndReason() (reason, message string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.reason, s.message
}

// Value returns the protocol state stored under key, creating it with
// create on first use. State that has a Close() method is closed when the
// session ends. It returns ErrSessionEnded once the session has ended.
func (s *Session) Value(key any, create func() (any, error)) (any, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ended {
		return nil, ErrSessionEnded
	}
	if v, ok := s.values[key]; ok {
		return v, nil
	}
	v, err := create()
	if err != nil {
		return nil, err
	}
	s.values[key] = v
	return v, nil
}

// End ends the session, once, for reason (a tunnel.End* constant), telling
// every client message (prefixed "airlock: " on the way): it refuses new
// connections, then, for every connection at once, interrupts its work
// upstream, says goodbye to its client and closes it (see Conn), waits
// until every connection's Serve has returned, and closes the protocol
// state. It returns when all that is done or ctx ends. A second End does
// not change the reason; it waits for the first to finish, or for ctx.
func (s *Session) End(ctx context.Context, reason, message string) {
	s.mu.Lock()
	if s.ended {
		s.mu.Unlock()
		select {
		case <-s.endDone:
		case <-ctx.Done():
		}
		return
	}
	s.ended = true
	s.reason, s.message = reason, message
	conns := make([]Conn, 0, len(s.conns))
	for c := range s.conns {
		conns = append(conns, c)
	}
	gone := make(chan struct{})
	if len(s.conns) == 0 {
		close(gone)
	} else {
		s.gone = gone
	}
	values := s.values
	s.values = nil
	s.mu.Unlock()
	defer close(s.endDone)

	goodbye := "airlock: " + message
	var wg sync.WaitGroup
	for _, c := range conns {
		wg.Go(func() {
			c.Interrupt(ctx)
			c.Goodbye(goodbye)
			c.Close()
		})
	}
	wg.Wait()
	select {
	case <-gone:
	case <-ctx.Done():
	}
	for _, v := range values {
		if cl, ok := v.(interface{ Close() }); ok {
			cl.Close()
		}
	}
}
