package postgres

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"sync/atomic"

	"github.com/jackc/pgx/v5/pgconn"
)

// maxLoginMessageLen bounds one message of the server during the login
// (authentication requests, ParameterStatus, BackendKeyData, notices and
// errors), its 4-byte length included: real ones are a few hundred bytes.
// Without it, the first bytes of a service that is not PostgreSQL ("220 "
// of an SMTP banner) read as a message length would make pgconn allocate
// hundreds of megabytes.
const maxLoginMessageLen = 64 << 10

// ErrNotPostgres marks a login that ended because the server's answers are
// not PostgreSQL protocol messages: the address is some other service.
var ErrNotPostgres = errors.New("the server did not answer as a PostgreSQL server")

// notPostgresError says what in the server's answer was not PostgreSQL. It
// never holds the server's bytes, so that a login cannot be used to read
// the banners of the services of the gateway's network.
type notPostgresError struct{ reason string }

func (e *notPostgresError) Error() string { return ErrNotPostgres.Error() + ": " + e.reason }
func (e *notPostgresError) Unwrap() error { return ErrNotPostgres }

// loginState is shared by the connections of one pgconn.Config: once a
// login has found a service that is not PostgreSQL, the config's dialer
// refuses to connect to it again (as pgconn would, to send a
// CancelRequest).
type loginState struct {
	notPostgres atomic.Bool
}

// wrap is pgconn's AfterNetConnect hook: it wraps the connection (after
// TLS, if any) in a loginGuard.
func (s *loginState) wrap(_ context.Context, _ *pgconn.Config, conn net.Conn) (net.Conn, error) {
	return &loginGuard{Conn: conn, state: s}, nil
}

// loginGuard checks, as the server's bytes pass to pgconn, that they are
// PostgreSQL messages of the kinds a login is answered with, each of a
// bounded length, up to the first ReadyForQuery; after that it only passes
// bytes on. On the first byte that is not, Read fails with a
// *notPostgresError and the connection is closed, so pgconn sends nothing
// more (the StartupMessage, built by the engine from the account and the
// client's checked parameters, is all the service received).
//
// It keeps 5 bytes of state and no buffer.
type loginGuard struct {
	net.Conn
	state *loginState

	done   bool    // a ReadyForQuery has passed
	hdr    [5]byte // a message header split across reads
	hdrN   int
	left   int // body bytes of the current message still to come
	typ    byte
	failed error
}

// Read implements net.Conn.
func (g *loginGuard) Read(p []byte) (int, error) {
	if g.failed != nil {
		return 0, g.failed
	}
	n, err := g.Conn.Read(p)
	if g.done || n == 0 {
		return n, err
	}
	if cerr := g.check(p[:n]); cerr != nil {
		g.failed = cerr
		g.state.notPostgres.Store(true)
		_ = g.Conn.Close()
		return 0, cerr
	}
	return n, err
}

// check follows the message framing through b.
func (g *loginGuard) check(b []byte) error {
	for len(b) > 0 && !g.done {
		if g.left > 0 {
			n := min(g.left, len(b))
			g.left -= n
			b = b[n:]
			if g.left == 0 && g.typ == 'Z' {
				g.done = true
			}
			continue
		}
		n := copy(g.hdr[g.hdrN:], b)
		g.hdrN += n
		b = b[n:]
		if g.hdrN < len(g.hdr) {
			return nil
		}
		g.hdrN = 0
		g.typ = g.hdr[0]
		length := int64(int32(binary.BigEndian.Uint32(g.hdr[1:])))
		switch g.typ {
		case 'R', 'E', 'N', 'v', 'S', 'K', 'Z':
		default:
			return &notPostgresError{reason: fmt.Sprintf("its answer to the login starts a message of unknown type 0x%02x", g.typ)}
		}
		if length < 4 || length > maxLoginMessageLen {
			return &notPostgresError{reason: fmt.Sprintf("its answer to the login declares a message of %d bytes", length)}
		}
		g.left = int(length) - 4
		if g.left == 0 && g.typ == 'Z' {
			g.done = true
		}
	}
	return nil
}

// unwrapGuard returns the connection under a loginGuard, once the login is
// over, so that the relay reads the socket directly.
func unwrapGuard(conn net.Conn) net.Conn {
	if g, ok := conn.(*loginGuard); ok && g.done && g.hdrN == 0 && g.left == 0 && g.failed == nil {
		return g.Conn
	}
	return conn
}
