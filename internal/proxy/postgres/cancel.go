package postgres

import (
	"context"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"strconv"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"
)

// cancelTarget is what it takes to cancel the query running on one upstream
// connection: the server's address as that connection reached it, its TLS
// settings, and the real backend key.
type cancelTarget struct {
	network, address string
	tlsConfig        *tls.Config // nil when the connection is not TLS
	dial             pgconn.DialFunc
	processID        uint32
	secretKey        []byte
}

// send opens a new connection to the server and sends it a CancelRequest for
// the target's backend, over TLS when the target connection uses TLS (the
// key is never sent in the clear when TLS is required). It returns once the
// server has closed the connection, which it does after reading the request,
// or when ctx ends.
func (t cancelTarget) send(ctx context.Context) error {
	conn, err := t.dial(ctx, t.network, t.address)
	if err != nil {
		return fmt.Errorf("dial %s: %w", t.address, err)
	}
	defer conn.Close()
	stop := context.AfterFunc(ctx, func() { _ = conn.SetDeadline(time.Unix(1, 0)) })
	defer stop()

	if t.tlsConfig != nil {
		var req [8]byte
		binary.BigEndian.PutUint32(req[0:4], 8)
		binary.BigEndian.PutUint32(req[4:8], sslRequestCode)
		if _, err := conn.Write(req[:]); err != nil {
			return fmt.Errorf("send SSLRequest: %w", err)
		}
		var answer [1]byte
		if _, err := io.ReadFull(conn, answer[:]); err != nil {
			return fmt.Errorf("read the answer to SSLRequest: %w", err)
		}
		if answer[0] != 'S' {
			return errors.New("the server refused TLS for the cancel request")
		}
		tlsConn := tls.Client(conn, t.tlsConfig.Clone())
		if err := tlsConn.HandshakeContext(ctx); err != nil {
			return fmt.Errorf("TLS handshake: %w", err)
		}
		defer tlsConn.Close()
		conn = tlsConn
	}

	msg := pgproto3.CancelRequest{ProcessID: t.processID, SecretKey: t.secretKey}
	buf, err := msg.Encode(nil)
	if err != nil {
		return err
	}
	if _, err := conn.Write(buf); err != nil {
		return fmt.Errorf("send CancelRequest: %w", err)
	}
	// The server answers nothing and closes the connection once it has
	// read the request, as libpq waits for.
	_, _ = conn.Read(buf[:1])
	return nil
}

// newCancelTarget returns the cancel target of a hijacked upstream
// connection.
func newCancelTarget(hc *pgconn.HijackedConn) cancelTarget {
	addr := hc.Conn.RemoteAddr()
	key := make([]byte, len(hc.SecretKey))
	copy(key, hc.SecretKey)
	return cancelTarget{
		network:   addr.Network(),
		address:   addr.String(),
		tlsConfig: hc.TLSConfig,
		dial:      hc.Config.DialFunc,
		processID: hc.PID,
		secretKey: key,
	}
}

// terminateBackend ends backend pid with pg_terminate_backend, over a new
// connection logged in with cfg's credentials: a role may terminate its own
// backends. It waits for the backend to exit (up to a second, PostgreSQL 14
// and later), so that nothing it ran can commit after it returns. Its
// errors never hold the password.
func terminateBackend(ctx context.Context, cfg Config, pid uint32) error {
	pc, err := cfg.PgConnConfig()
	if err != nil {
		return errors.New(redact(err.Error(), cfg.Password))
	}
	pc.RuntimeParams = map[string]string{"application_name": "airlock-gateway"}
	pg, err := pgconn.ConnectConfig(ctx, pc)
	if err != nil {
		return fmt.Errorf("connect to terminate the backend: %s", redact(err.Error(), cfg.Password))
	}
	defer func() {
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), closeTimeout)
		defer cancel()
		_ = pg.Close(cctx)
	}()
	arg := [][]byte{[]byte(strconv.FormatUint(uint64(pid), 10))}
	res := pg.ExecParams(ctx, "SELECT pg_terminate_backend($1::int, 1000)", arg, nil, nil, nil).Read()
	var pgErr *pgconn.PgError
	if errors.As(res.Err, &pgErr) && pgErr.Code == "42883" {
		// Before PostgreSQL 14: no timeout argument.
		res = pg.ExecParams(ctx, "SELECT pg_terminate_backend($1::int)", arg, nil, nil, nil).Read()
	}
	if res.Err != nil {
		return fmt.Errorf("pg_terminate_backend(%d): %s", pid, redact(res.Err.Error(), cfg.Password))
	}
	if len(res.Rows) != 1 || string(res.Rows[0][0]) != "t" {
		return fmt.Errorf("pg_terminate_backend(%d) did not confirm the backend's end", pid)
	}
	return nil
}
