package postgres

import (
	"context"
	"crypto/subtle"
	"encoding/binary"
	"errors"
	"net"
	"regexp"
	"sync"

	"github.com/airlockpam/airlock/internal/sessionlog"
)

// ErrSessionClosed is returned by Serve for a connection ended by
// Session.Close, or served under a Session already closed.
var ErrSessionClosed = errors.New("postgres: the access session is closed")

// secretKeyLen is the length of a synthetic cancel key: 4 bytes, as protocol
// 3.0 (the version the engine speaks with clients) requires.
const secretKeyLen = 4

// maxKeyAttempts bounds the search for a process ID not yet used in a
// session; with 2^31 candidates, a second attempt is already rare.
const maxKeyAttempts = 16

// Session is one access session. Every client connection of the session is
// served with the same *Session, which holds the session's synthetic cancel
// keys, so that a CancelRequest only reaches queries of the same session, and
// its open connections, so that Close can end them all.
//
// A Session is safe for concurrent use.
type Session struct {
	id           string
	recorder     sessionlog.Recorder // nil: nothing is recorded
	maskPatterns []*regexp.Regexp

	mu     sync.Mutex
	closed bool
	conns  map[*served]struct{}
	keys   map[uint32]*cancelKey
}

// SessionOption configures a Session.
type SessionOption func(*Session)

// WithRecorder makes the engine record the session log of every connection
// of the session into r: the connection's opening and end, and each query
// with its outcome (see the package documentation). Without a recorder, or
// with a nil one, the engine copies bytes without looking at them.
func WithRecorder(r sessionlog.Recorder) SessionOption {
	return func(s *Session) { s.recorder = r }
}

// WithMaskPatterns adds the project's mask patterns: in everything recorded
// (statements, parameter values, error messages), each match of each pattern
// is replaced by ***, after the passwords are masked (see MaskStatement).
func WithMaskPatterns(patterns []*regexp.Regexp) SessionOption {
	return func(s *Session) { s.maskPatterns = append([]*regexp.Regexp(nil), patterns...) }
}

// NewSession returns an open Session; id identifies it in logs and in the
// session log's events.
func NewSession(id string, opts ...SessionOption) *Session {
	s := &Session{
		id:    id,
		conns: make(map[*served]struct{}),
		keys:  make(map[uint32]*cancelKey),
	}
	for _, o := range opts {
		o(s)
	}
	return s
}

// ID returns the session's identifier.
func (s *Session) ID() string { return s.id }

// Close ends the session: it closes every connection served under it, at
// once (their Serve calls then return ErrSessionClosed), forgets its cancel
// keys, and makes Serve refuse any new connection. Closing a closed Session
// does nothing.
func (s *Session) Close() {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return
	}
	s.closed = true
	conns := s.conns
	s.conns = nil
	s.keys = nil
	s.mu.Unlock()
	for c := range conns {
		c.terminate()
	}
}

// Closed reports whether Close was called.
func (s *Session) Closed() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.closed
}

// Conns returns the number of client connections being served under the
// session, cancel requests included.
func (s *Session) Conns() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.conns)
}

// add starts tracking c; it reports false if the session is closed.
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

// cancelKey maps one synthetic key to the upstream connection it cancels.
type cancelKey struct {
	secret [secretKeyLen]byte
	target cancelTarget
}

// register gives target a synthetic key, unique in the session, drawn with
// random (which fills its argument with random bytes).
func (s *Session) register(random func([]byte) error, target cancelTarget) (pid uint32, secret [secretKeyLen]byte, err error) {
	var b [4 + secretKeyLen]byte
	for range maxKeyAttempts {
		if err := random(b[:]); err != nil {
			return 0, secret, err
		}
		// A positive int32, as PostgreSQL's own process IDs are: some
		// clients store the ID in a signed integer.
		pid = binary.BigEndian.Uint32(b[:4]) & 0x7fffffff
		if pid == 0 {
			continue
		}
		copy(secret[:], b[4:])
		s.mu.Lock()
		if s.closed {
			s.mu.Unlock()
			return 0, secret, ErrSessionClosed
		}
		if _, taken := s.keys[pid]; !taken {
			s.keys[pid] = &cancelKey{secret: secret, target: target}
			s.mu.Unlock()
			return pid, secret, nil
		}
		s.mu.Unlock()
	}
	return 0, secret, errors.New("postgres: no free cancel key in the session")
}

func (s *Session) unregister(pid uint32) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.keys, pid)
}

// lookup returns the upstream connection a client's cancel key stands for.
func (s *Session) lookup(pid uint32, secret []byte) (cancelTarget, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	k, ok := s.keys[pid]
	if !ok || len(secret) != secretKeyLen || subtle.ConstantTimeCompare(k.secret[:], secret) != 1 {
		return cancelTarget{}, false
	}
	return k.target, true
}

// served is one client connection being served, and its upstream connection
// once there is one.
type served struct {
	client net.Conn
	cancel context.CancelFunc // ends the context of the Serve call

	mu         sync.Mutex
	upstream   net.Conn
	closed     bool
	terminated bool // closed by Session.Close
}

// setUpstream records the upstream connection; if c is closed already, it
// closes upstream and reports false.
func (c *served) setUpstream(upstream net.Conn) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		_ = upstream.Close()
		return false
	}
	c.upstream = upstream
	return true
}

// close closes both connections; it may be called any number of times, from
// any goroutine.
func (c *served) close() {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return
	}
	c.closed = true
	upstream := c.upstream
	c.mu.Unlock()
	_ = c.client.Close()
	if upstream != nil {
		_ = upstream.Close()
	}
}

// terminate closes the connection on behalf of Session.Close and stops a
// connection attempt in progress.
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
