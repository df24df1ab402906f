package mongodb

import (
	"context"
	"errors"
	"net"
	"regexp"
	"sync"
	"time"

	"go.mongodb.org/mongo-driver/v2/x/mongo/driver/topology"

	"github.com/airlockpam/airlock/internal/sessionlog"
)

// ErrSessionClosed is returned by Serve for a connection ended by
// Session.Close, or served under a Session already closed.
var ErrSessionClosed = errors.New("mongodb: the access session is closed")

// disconnectTimeout bounds the closing of a Session's topologies.
const disconnectTimeout = 5 * time.Second

// Session is one access session. Every client connection of the session is
// served with the same *Session, which holds the driver topologies its
// connections draw their upstream connections from (one per Config, so
// that server discovery and monitoring happen once, not per connection) and
// its open connections, so that Close can end them all.
//
// A Session is safe for concurrent use.
type Session struct {
	id           string
	recorder     sessionlog.Recorder // nil: nothing is recorded
	redact       bool
	maskPatterns []*regexp.Regexp

	mu     sync.Mutex
	closed bool
	conns  map[*served]struct{}
	topos  map[string]*topology.Topology
}

// SessionOption configures a Session.
type SessionOption func(*Session)

// WithRecorder makes the engine record the session log of every connection
// of the session into r: the connection's opening and end, and each command
// with its outcome (see the package documentation). Without a recorder, or
// with a nil one, nothing is recorded.
func WithRecorder(r sessionlog.Recorder) SessionOption {
	return func(s *Session) { s.recorder = r }
}

// WithRedactValues, when on, replaces the values of the documents a
// command writes (insert's documents, update's u, findAndModify's update)
// with "***" in the recorded statements, keeping their field names. The pwd
// of createUser and updateUser is masked whatever this says.
func WithRedactValues(on bool) SessionOption {
	return func(s *Session) { s.redact = on }
}

// WithMaskPatterns adds the project's mask patterns: in everything recorded
// (statements and error messages), each match of each pattern is replaced
// by ***.
func WithMaskPatterns(patterns []*regexp.Regexp) SessionOption {
	return func(s *Session) { s.maskPatterns = append([]*regexp.Regexp(nil), patterns...) }
}

// NewSession returns an open Session; id identifies it in logs and in the
// session log's events.
func NewSession(id string, opts ...SessionOption) *Session {
	s := &Session{
		id:    id,
		conns: make(map[*served]struct{}),
		topos: make(map[string]*topology.Topology),
	}
	for _, o := range opts {
		o(s)
	}
	return s
}

// ID returns the session's identifier.
func (s *Session) ID() string { return s.id }

// Close ends the session: it closes every connection served under it, at
// once (their Serve calls then return ErrSessionClosed), disconnects its
// topologies (closing their upstream connections), and makes Serve refuse
// any new connection. Closing a closed Session does nothing.
func (s *Session) Close() {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return
	}
	s.closed = true
	conns := s.conns
	topos := s.topos
	s.conns = nil
	s.topos = nil
	s.mu.Unlock()
	for c := range conns {
		c.terminate()
	}
	if len(topos) == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), disconnectTimeout)
	defer cancel()
	var wg sync.WaitGroup
	for _, t := range topos {
		wg.Go(func() { _ = t.Disconnect(ctx) })
	}
	wg.Wait()
}

// Closed reports whether Close was called.
func (s *Session) Closed() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.closed
}

// Conns returns the number of client connections being served under the
// session.
func (s *Session) Conns() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.conns)
}

func (s *Session) add(c *served) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return false
	}
	s.conns[c] = struct{}{}
	return true
}

func (s *Session) remove(c *served) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.conns, c)
}

// topology returns the session's topology for cfg, creating and connecting
// it (which starts the driver's monitoring, in the background) on first
// use.
func (s *Session) topology(cfg Config) (*topology.Topology, error) {
	key := cfg.key()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil, ErrSessionClosed
	}
	if t, ok := s.topos[key]; ok {
		return t, nil
	}
	t, err := newTopology(cfg)
	if err != nil {
		return nil, err
	}
	s.topos[key] = t
	return t, nil
}

// newTopology builds and connects a driver topology for cfg.
func newTopology(cfg Config) (*topology.Topology, error) {
	opts, err := cfg.clientOptions()
	if err != nil {
		return nil, err
	}
	tc, err := topology.NewConfig(opts, nil) // no cluster clock: the client gossips its own
	if err != nil {
		return nil, redactErr(err, cfg.Password)
	}
	t, err := topology.New(tc)
	if err != nil {
		return nil, redactErr(err, cfg.Password)
	}
	if err := t.Connect(); err != nil {
		return nil, redactErr(err, cfg.Password)
	}
	return t, nil
}

// served is one client connection being served.
type served struct {
	client net.Conn
	cancel context.CancelFunc // ends the context of the Serve call

	mu         sync.Mutex
	closed     bool
	terminated bool // closed by Session.Close
}

// close closes the client connection; the upstream one follows when the
// Serve context ends. It may be called any number of times, from any
// goroutine.
func (c *served) close() {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return
	}
	c.closed = true
	c.mu.Unlock()
	_ = c.client.Close()
}

// terminate closes the connection on behalf of Session.Close.
func (c *served) terminate() {
	c.mu.Lock()
	c.terminated = true
	c.mu.Unlock()
	c.cancel()
	c.close()
}

func (c *served) wasTerminated() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.terminated
}
