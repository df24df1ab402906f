package postgres

import (
	"context"
	"crypto/subtle"
	"encoding/binary"
	"errors"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/airlockpam/airlock/internal/proxy/common"
)

// ErrSessionClosed is returned by Serve for a connection ended by
// Session.End, or served under a Session that has ended.
var ErrSessionClosed = common.ErrSessionEnded

// Bounds of the ending of a connection (Session.End). Together they keep
// the end of a connection within about a second of the decision.
const (
	// endCancelWait is how long the engine waits, after its CancelRequest,
	// for the database to answer what was running (57014, then
	// ReadyForQuery) before it terminates the backend.
	endCancelWait = 500 * time.Millisecond
	// endTerminateTimeout bounds terminating a backend over a fresh
	// connection (login included).
	endTerminateTimeout = 2 * time.Second
	// endWriteTimeout bounds the writes to a client that does not read,
	// once its session is ending.
	endWriteTimeout = 300 * time.Millisecond
	// endLinger bounds how long the client's late bytes are discarded
	// after the goodbye, so that the goodbye is not lost to a reset.
	endLinger = 250 * time.Millisecond
)

// pastDeadline makes blocked reads and writes return at once.
var pastDeadline = time.Unix(1, 0)

// secretKeyLen is the length of a synthetic cancel key: 4 bytes, as protocol
// 3.0 (the version the engine speaks with clients) requires.
const secretKeyLen = 4

// maxKeyAttempts bounds the search for a process ID not yet used in a
// session; with 2^31 candidates, a second attempt is already rare.
const maxKeyAttempts = 16

// cancelKeys is the PostgreSQL state of one session: its synthetic cancel
// keys, so that a CancelRequest only reaches queries of the same session.
// It is kept in the common.Session (Session.Value).
type cancelKeys struct {
	mu   sync.Mutex
	keys map[uint32]*cancelKey
}

// cancelKeysKey is the common.Session value key of cancelKeys.
type cancelKeysKey struct{}

// keysOf returns the cancel keys of sess, or ErrSessionClosed.
func keysOf(sess *common.Session) (*cancelKeys, error) {
	v, err := sess.Value(cancelKeysKey{}, func() (any, error) {
		return &cancelKeys{keys: make(map[uint32]*cancelKey)}, nil
	})
	if err != nil {
		return nil, err
	}
	return v.(*cancelKeys), nil
}

// Close forgets the keys, when the session ends.
func (k *cancelKeys) Close() {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.keys = nil
}

// cancelKey maps one synthetic key to the upstream connection it cancels.
type cancelKey struct {
	secret [secretKeyLen]byte
	target cancelTarget
}

// register gives target a synthetic key, unique in the session, drawn with
// random (which fills its argument with random bytes).
func (k *cancelKeys) register(random func([]byte) error, target cancelTarget) (pid uint32, secret [secretKeyLen]byte, err error) {
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
		k.mu.Lock()
		if k.keys == nil {
			k.mu.Unlock()
			return 0, secret, ErrSessionClosed
		}
		if _, taken := k.keys[pid]; !taken {
			k.keys[pid] = &cancelKey{secret: secret, target: target}
			k.mu.Unlock()
			return pid, secret, nil
		}
		k.mu.Unlock()
	}
	return 0, secret, errors.New("postgres: no free cancel key in the session")
}

func (k *cancelKeys) unregister(pid uint32) {
	k.mu.Lock()
	defer k.mu.Unlock()
	delete(k.keys, pid)
}

// lookup returns the upstream connection a client's cancel key stands for.
func (k *cancelKeys) lookup(pid uint32, secret []byte) (cancelTarget, bool) {
	k.mu.Lock()
	defer k.mu.Unlock()
	key, ok := k.keys[pid]
	if !ok || len(secret) != secretKeyLen || subtle.ConstantTimeCompare(key.secret[:], secret) != 1 {
		return cancelTarget{}, false
	}
	return key.target, true
}

// served is one client connection being served, and its upstream connection
// once there is one. It is the common.Conn that Session.End ends.
type served struct {
	e      *Engine
	client net.Conn
	cancel context.CancelFunc // ends the context of the Serve call
	cfg    Config
	log    *slog.Logger
	closed chan struct{} // closed by close

	mu       sync.Mutex
	upstream net.Conn
	isClosed bool
	ending   bool   // Session.End is ending the connection
	refusing bool   // the relay is telling the client why it refused a request
	relay    *relay // set once the connection is relayed
}

func newServed(e *Engine, client net.Conn, cancel context.CancelFunc, cfg Config, log *slog.Logger) *served {
	return &served{e: e, client: client, cancel: cancel, cfg: cfg, log: log, closed: make(chan struct{})}
}

// relay is the state of a relayed connection that its ending needs.
type relay struct {
	upstream  net.Conn
	target    cancelTarget
	backendID uint32
	clog      *connLog         // nil when nothing is recorded
	back      *backendObserver // nil when nothing is recorded
	frontDone chan struct{}    // closed when the client->server pump stops
	backDone  chan struct{}    // closed when the server->client pump stops
	backClean bool             // what the client received ends at a message boundary (after backDone)
	draining  atomic.Bool      // the server->client pump forwards no new message
	stopBack  sync.Once        // stops the server->client pump
}

// setUpstream records the upstream connection; if c is closed or ending
// already, it closes upstream and reports false.
func (c *served) setUpstream(upstream net.Conn) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.isClosed || c.ending {
		_ = upstream.Close()
		return false
	}
	c.upstream = upstream
	return true
}

// startRelay records the relay's state, before the client is greeted; it
// reports false if the connection is ending or closed already.
func (c *served) startRelay(r *relay) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.isClosed || c.ending {
		return false
	}
	c.relay = r
	return true
}

// close closes both connections; it may be called any number of times, from
// any goroutine.
func (c *served) close() {
	c.mu.Lock()
	if c.isClosed {
		c.mu.Unlock()
		return
	}
	c.isClosed = true
	upstream := c.upstream
	c.mu.Unlock()
	_ = c.client.Close()
	if upstream != nil {
		_ = upstream.Close()
	}
	close(c.closed)
}

// pumpStopped is called by each pump of the relay when it stops: unless the
// session is ending the connection (which then decides when to close), the
// other direction is closed too, so that it stops as well.
func (c *served) pumpStopped() {
	c.mu.Lock()
	ending := c.ending || c.refusing
	c.mu.Unlock()
	if !ending {
		c.close()
	}
}

func (c *served) wasEnded() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.ending
}

// Interrupt stops the connection's work upstream (common.Conn): it stops
// forwarding the client's bytes, and the server's after the message in
// flight (they are still read and recorded). If a request waits for its
// answer, it sends the database a CancelRequest for the backend and waits
// up to endCancelWait for the answer (57014, then ReadyForQuery, seen by
// the observer); if none comes, or nothing is recorded so that nothing can
// tell, it terminates the backend with pg_terminate_backend over a fresh
// connection logged in with the same credentials. It then closes the
// upstream connection, which rolls back an open transaction.
func (c *served) Interrupt(ctx context.Context) {
	c.mu.Lock()
	c.ending = true
	r := c.relay
	c.mu.Unlock()
	if r == nil {
		// Not relaying yet: stop the login in progress, if any.
		c.cancel()
		return
	}
	// Nothing more from the server reaches the client once the message in
	// flight is complete (the goodbye comes in its place), and no more
	// requests from the client reach the server.
	r.draining.Store(true)
	_ = c.client.SetWriteDeadline(time.Now().Add(endWriteTimeout))
	_ = c.client.SetReadDeadline(pastDeadline)
	_ = r.upstream.SetWriteDeadline(pastDeadline)
	select {
	case <-r.frontDone:
	case <-ctx.Done():
	}

	busy := true
	if r.clog != nil {
		idle := r.clog.idle()
		select {
		case <-idle:
			busy = false
		default:
		}
		if busy {
			r.clog.cancelling.Store(true)
			c.sendCancel(ctx, r)
			t := time.NewTimer(endCancelWait)
			select {
			case <-idle:
				busy = false
			case <-t.C:
			case <-ctx.Done():
			}
			t.Stop()
		}
	} else {
		// Nothing watches the protocol: whatever may run is stopped for
		// sure by terminating the backend.
		c.sendCancel(ctx, r)
	}
	if busy {
		c.stopBack(r)
		c.terminateBackend(ctx, r)
	}
	_ = r.upstream.Close()
}

// sendCancel asks the database to cancel what r's backend runs.
func (c *served) sendCancel(ctx context.Context, r *relay) {
	if len(r.target.secretKey) == 0 {
		return
	}
	cctx, cancel := context.WithTimeout(ctx, endCancelWait)
	defer cancel()
	if err := r.target.send(cctx); err != nil {
		c.log.Warn("could not send the cancel request of the session's end", "backend_pid", r.backendID, "error", err)
	}
}

// terminateBackend ends r's backend with pg_terminate_backend, logged in as
// the connection's own account (a role may terminate its own backends).
func (c *served) terminateBackend(ctx context.Context, r *relay) {
	tctx, cancel := context.WithTimeout(ctx, endTerminateTimeout)
	defer cancel()
	if err := terminateBackend(tctx, c.cfg, r.backendID); err != nil {
		c.log.Warn("could not terminate the backend of an ending session", "backend_pid", r.backendID, "error", err)
		return
	}
	c.log.Info("terminated the backend of an ending session", "backend_pid", r.backendID)
}

// stopBack stops the server->client pump and waits for it: nothing more
// from the server reaches the client.
func (c *served) stopBack(r *relay) {
	r.stopBack.Do(func() {
		_ = c.client.SetWriteDeadline(time.Now().Add(endWriteTimeout))
		_ = r.upstream.SetReadDeadline(pastDeadline)
	})
	<-r.backDone
}

// Goodbye sends the client a FATAL ErrorResponse with SQLSTATE 57P01
// (admin_shutdown) and message, if the server->client stream is at a
// message boundary; otherwise the client's connection is only closed
// (common.Conn).
func (c *served) Goodbye(message string) {
	c.mu.Lock()
	r := c.relay
	c.mu.Unlock()
	if r == nil {
		return
	}
	c.stopBack(r)
	if r.back == nil || !r.backClean {
		return
	}
	_ = c.client.SetWriteDeadline(time.Now().Add(endWriteTimeout))
	if err := writeErrorResponse(c.client, sqlStateAdminShutdown, message); err != nil {
		return
	}
	// Discard what the client still sends, briefly, so that closing with
	// unread input does not reset the connection before the goodbye is
	// read; a client that keeps sending is closed all the same.
	common.Linger(c.client, endLinger)
}

// Close closes both connections (common.Conn).
func (c *served) Close() { c.close() }
