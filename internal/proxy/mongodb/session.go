package mongodb

import (
	"context"
	"net"
	"sync"
	"time"

	"go.mongodb.org/mongo-driver/v2/x/mongo/driver/topology"

	"github.com/airlockpam/airlock/internal/proxy/common"
)

// ErrSessionClosed is returned by Serve for a connection ended by
// Session.End, or served under a Session that has ended.
var ErrSessionClosed = common.ErrSessionEnded

// disconnectTimeout bounds the closing of a Session's topologies.
const disconnectTimeout = 5 * time.Second

// pastDeadline makes blocked reads return at once.
var pastDeadline = time.Unix(1, 0)

// topologies is the MongoDB state of one session: the driver topologies its
// connections draw their upstream connections from, one per Config, so
// that server discovery and monitoring happen once, not per connection (a
// rotated password makes a new one). It is kept in the common.Session
// (Session.Value) and disconnected when the session ends.
type topologies struct {
	mu    sync.Mutex
	topos map[string]*topology.Topology
}

// topologiesKey is the common.Session value key of topologies.
type topologiesKey struct{}

// topologyFor returns the session's topology for cfg, creating and
// connecting it (which starts the driver's monitoring, in the background)
// on first use.
func topologyFor(sess *common.Session, cfg Config, dial common.DialFunc) (*topology.Topology, error) {
	v, err := sess.Value(topologiesKey{}, func() (any, error) {
		return &topologies{topos: map[string]*topology.Topology{}}, nil
	})
	if err != nil {
		return nil, err
	}
	ts := v.(*topologies)
	key := cfg.key()
	ts.mu.Lock()
	defer ts.mu.Unlock()
	if ts.topos == nil {
		return nil, ErrSessionClosed
	}
	if t, ok := ts.topos[key]; ok {
		return t, nil
	}
	t, err := newTopology(cfg, dial)
	if err != nil {
		return nil, err
	}
	ts.topos[key] = t
	return t, nil
}

// Close disconnects the topologies, closing their upstream connections.
func (ts *topologies) Close() {
	ts.mu.Lock()
	topos := ts.topos
	ts.topos = nil
	ts.mu.Unlock()
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

// newTopology builds and connects a driver topology for cfg, whose
// connections are opened with dial (nil: the driver's own dialer).
func newTopology(cfg Config, dial common.DialFunc) (*topology.Topology, error) {
	opts, err := cfg.clientOptions()
	if err != nil {
		return nil, err
	}
	if dial != nil {
		opts.SetDialer(dialer(dial))
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

// served is one client connection being served: the common.Conn that
// Session.End ends. The connection's own goroutine (clientConn.run) does
// all the writing to the client; ending it interrupts that goroutine's
// upstream work, which then answers a pending request with the session's
// end and stops.
type served struct {
	client net.Conn
	cancel context.CancelFunc // ends the upstream work of the connection
	done   chan struct{}      // closed when the connection's loop has stopped

	mu     sync.Mutex
	closed bool
	ending bool // Session.End is ending the connection
}

// close closes the client connection; the upstream one follows when the
// Serve call ends. It may be called any number of times, from any
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

// setReadDeadline sets the client connection's read deadline, unless
// Session.End is ending the connection: Interrupt's deadline, in the past,
// stays.
func (c *served) setReadDeadline(t time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.ending {
		return
	}
	_ = c.client.SetReadDeadline(t)
}

// dialer adapts a common.DialFunc to the driver's options.ContextDialer.
type dialer common.DialFunc

func (d dialer) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	return d(ctx, network, addr)
}

func (c *served) wasEnded() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.ending
}

// Interrupt stops the connection's work (common.Conn): no further request
// is read from the client, and the upstream connection is closed under the
// request in progress, if any (the driver closes a connection whose
// operation's context ends), so that the server stops it; the connection's
// loop then answers that request with the session's end. It returns when
// the loop has stopped, or ctx ends.
func (c *served) Interrupt(ctx context.Context) {
	c.mu.Lock()
	c.ending = true
	_ = c.client.SetReadDeadline(pastDeadline)
	c.mu.Unlock()
	// A reply being relayed to a client that does not read must not hold
	// the end up.
	_ = c.client.SetWriteDeadline(time.Now().Add(endWriteTimeout))
	c.cancel()
	select {
	case <-c.done:
	case <-ctx.Done():
	}
}

// Goodbye does nothing more (common.Conn): the MongoDB protocol has no
// message a server sends unasked, so a client is told why only in the
// reply to a pending request, which Interrupt's loop has sent.
func (c *served) Goodbye(string) {}

// Close closes the client connection (common.Conn).
func (c *served) Close() { c.close() }
