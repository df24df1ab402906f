package tunnel

import (
	"encoding/binary"
	"net"
	"sync"

	"github.com/hashicorp/yamux"
)

// MuxClient starts the client end of a multiplexed session over conn, with
// YamuxConfig and one write per data frame (see frameConn).
func MuxClient(conn net.Conn) (*yamux.Session, error) {
	return yamux.Client(newFrameConn(conn), YamuxConfig())
}

// MuxServer starts the server end of a multiplexed session over conn, with
// YamuxConfig and one write per data frame (see frameConn).
func MuxServer(conn net.Conn) (*yamux.Session, error) {
	return yamux.Server(newFrameConn(conn), YamuxConfig())
}

// The parts of yamux's frame header that frameConn reads (yamux's spec.md):
// version, type, flags (2 bytes), stream id (4), length (4).
const (
	yamuxHeaderSize = 12
	yamuxVersion    = 0
	yamuxTypeData   = 0
)

// maxJoined bounds the buffer frameConn joins a header and its body in. A
// larger body is written after its header in a write of its own, where one
// more write is small beside the body's.
const maxJoined = 32 << 10

// frameConn is the connection under a yamux session. yamux's send loop
// writes each frame's 12-byte header and then its body in a second write;
// over TLS every write is a record and a system call of its own, so a small
// query crossed each link as two records. frameConn holds a data frame's
// header back and writes it together with the body that follows, so the
// bytes on the wire are unchanged but each small frame costs one record and
// one write.
//
// yamux writes from its send loop only; the mutex guards against anything
// else writing.
type frameConn struct {
	net.Conn

	mu   sync.Mutex
	hdr  [yamuxHeaderSize]byte
	held bool   // hdr holds a data frame's header, not yet written
	buf  []byte // header + body, reused
}

func newFrameConn(c net.Conn) *frameConn { return &frameConn{Conn: c} }

func (c *frameConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.held {
		c.held = false
		body := binary.BigEndian.Uint32(c.hdr[8:12])
		if uint32(len(p)) == body && len(p)+yamuxHeaderSize <= maxJoined {
			c.buf = append(append(c.buf[:0], c.hdr[:]...), p...)
			n, err := c.Conn.Write(c.buf)
			return max(n-yamuxHeaderSize, 0), err
		}
		// Not the body announced (or a large one): write the header as
		// yamux would have, then p.
		if _, err := c.Conn.Write(c.hdr[:]); err != nil {
			return 0, err
		}
	}
	if len(p) == yamuxHeaderSize && p[0] == yamuxVersion && p[1] == yamuxTypeData && binary.BigEndian.Uint32(p[8:12]) > 0 {
		copy(c.hdr[:], p)
		c.held = true
		return len(p), nil
	}
	return c.Conn.Write(p)
}
