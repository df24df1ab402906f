package postgres

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/airlockpam/airlock/internal/proxy/common"
	"github.com/airlockpam/airlock/internal/sessionlog"
	"github.com/airlockpam/airlock/internal/tunnel"
)

// Defaults of EngineConfig.
const (
	// DefaultStartupTimeout bounds the client's opening: from the
	// connection to its StartupMessage or CancelRequest.
	DefaultStartupTimeout = 30 * time.Second
	// DefaultCancelTimeout bounds the forwarding of one CancelRequest.
	DefaultCancelTimeout = 10 * time.Second
	// DefaultMessageTimeout bounds the rest of a client's message once its
	// header is read.
	DefaultMessageTimeout = 30 * time.Second
)

// writeTimeout bounds writing a greeting or an error to a client that does
// not read.
const writeTimeout = 5 * time.Second

// EngineConfig configures an Engine.
type EngineConfig struct {
	// Logger receives the engine's log lines, which never hold a password
	// or a cancel key. Default: slog.Default().
	Logger *slog.Logger
	// StartupTimeout bounds the client's opening packets, so that a silent
	// client does not hold a connection. Default: DefaultStartupTimeout.
	StartupTimeout time.Duration
	// CancelTimeout bounds the forwarding of a CancelRequest to the
	// database. Default: DefaultCancelTimeout.
	CancelTimeout time.Duration
	// Random is the source of the synthetic cancel keys. Default:
	// crypto/rand.Reader. It need not be safe for concurrent use.
	Random io.Reader
	// Dial opens every connection to a database: the logins of served
	// connections and of Validate, cancel requests and the terminations
	// of backends. The gateway passes one that enforces its target
	// policy. Default: nil, a net.Dialer (Config.Dial).
	Dial common.DialFunc
	// MaxBufferedBytes bounds the bytes held for large client messages
	// (64 KiB and more, gathered to be recorded) across all connections:
	// while it is spent, a new large message is refused (SQLSTATE 53200)
	// and its connection ends. Default: DefaultMaxBufferedBytes.
	MaxBufferedBytes int64
	// MessageTimeout bounds how long a client may take to send the rest of
	// a message it has started (its 5-byte header read): a client that
	// stops in the middle of a message has its connection closed. An idle
	// client, between messages, is not timed. Default:
	// DefaultMessageTimeout.
	MessageTimeout time.Duration
}

// CheckAndSetDefaults validates the configuration and fills in defaults.
func (c *EngineConfig) CheckAndSetDefaults() error {
	if c.StartupTimeout < 0 {
		return fmt.Errorf("postgres: negative startup timeout %s", c.StartupTimeout)
	}
	if c.MessageTimeout < 0 {
		return fmt.Errorf("postgres: negative message timeout %s", c.MessageTimeout)
	}
	if c.MessageTimeout == 0 {
		c.MessageTimeout = DefaultMessageTimeout
	}
	if c.MaxBufferedBytes < 0 {
		return fmt.Errorf("postgres: negative buffer budget %d", c.MaxBufferedBytes)
	}
	if c.MaxBufferedBytes == 0 {
		c.MaxBufferedBytes = DefaultMaxBufferedBytes
	}
	if c.CancelTimeout < 0 {
		return fmt.Errorf("postgres: negative cancel timeout %s", c.CancelTimeout)
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.StartupTimeout == 0 {
		c.StartupTimeout = DefaultStartupTimeout
	}
	if c.CancelTimeout == 0 {
		c.CancelTimeout = DefaultCancelTimeout
	}
	if c.Random == nil {
		c.Random = rand.Reader
	}
	return nil
}

// Option changes an EngineConfig.
type Option func(*EngineConfig)

// WithLogger sets EngineConfig.Logger.
func WithLogger(l *slog.Logger) Option { return func(c *EngineConfig) { c.Logger = l } }

// WithStartupTimeout sets EngineConfig.StartupTimeout.
func WithStartupTimeout(d time.Duration) Option {
	return func(c *EngineConfig) { c.StartupTimeout = d }
}

// WithCancelTimeout sets EngineConfig.CancelTimeout.
func WithCancelTimeout(d time.Duration) Option {
	return func(c *EngineConfig) { c.CancelTimeout = d }
}

// WithDialer sets EngineConfig.Dial: the dialer of every connection to a
// database (logins, Validate, cancels, terminations).
func WithDialer(d common.DialFunc) Option { return func(c *EngineConfig) { c.Dial = d } }

// WithMessageTimeout sets EngineConfig.MessageTimeout.
func WithMessageTimeout(d time.Duration) Option {
	return func(c *EngineConfig) { c.MessageTimeout = d }
}

// WithMaxBufferedBytes sets EngineConfig.MaxBufferedBytes.
func WithMaxBufferedBytes(n int64) Option { return func(c *EngineConfig) { c.MaxBufferedBytes = n } }

// WithRandom sets EngineConfig.Random.
func WithRandom(r io.Reader) Option { return func(c *EngineConfig) { c.Random = r } }

// Engine serves PostgreSQL client connections with credential injection. One
// Engine serves any number of connections of any number of sessions at
// once.
type Engine struct {
	cfg EngineConfig

	randMu sync.Mutex // serializes reads of cfg.Random
	budget *byteBudget
}

// NewEngine returns an Engine configured by opts.
func NewEngine(opts ...Option) (*Engine, error) {
	var cfg EngineConfig
	for _, o := range opts {
		o(&cfg)
	}
	if err := cfg.CheckAndSetDefaults(); err != nil {
		return nil, err
	}
	return &Engine{cfg: cfg, budget: &byteBudget{max: cfg.MaxBufferedBytes}}, nil
}

// ConnectError is Serve's error when the database could not be reached or
// refused the login. Code and Message classify it as Validate does; Message
// never holds the password.
type ConnectError struct {
	Code    string // a tunnel.Code* constant
	Message string
	Err     error // the cause, from pgconn
}

func (e *ConnectError) Error() string {
	return "postgres: cannot connect to the database: " + e.Message
}

func (e *ConnectError) Unwrap() error { return e.Err }

// Serve serves one client connection of sess: it reads the client's opening,
// logs in to the database described by cfg, and relays bytes until either
// side closes, ctx ends or sess ends (see common.Session.End). It always
// closes client before it returns.
//
// It returns nil when the connection ended normally (the client or the server
// closed it, or the opening was a CancelRequest), ErrSessionClosed when sess
// ended it, ctx's error when ctx ended, an error wrapping ErrInvalidStartup
// when the client broke the protocol in its opening, and a *ConnectError when
// the database could not be reached or refused the login. In those last two
// cases the client is sent an ErrorResponse first.
func (e *Engine) Serve(ctx context.Context, client net.Conn, sess *common.Session, cfg Config) error {
	if sess == nil {
		_ = client.Close()
		return errors.New("postgres: Serve needs a Session")
	}
	if cfg.Dial == nil {
		cfg.Dial = e.cfg.Dial
	}
	parent := ctx
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()

	log := e.cfg.Logger.With("session", sess.ID(), "client", common.RemoteAddr(client))
	c := newServed(e, client, cancel, cfg, log)
	if err := sess.Add(c); err != nil {
		_ = client.Close()
		return err
	}
	defer sess.Remove(c)
	defer c.close()
	stop := context.AfterFunc(ctx, c.close)
	defer stop()

	err := e.serve(ctx, c, sess, cfg, log)
	if c.wasEnded() {
		// The session's end says goodbye to the client and closes the
		// connection: it is not closed under it.
		<-c.closed
		return ErrSessionClosed
	}
	switch {
	case parent.Err() != nil:
		return parent.Err()
	}
	return err
}

// Kind returns tunnel.KindPostgres (common.Engine).
func (e *Engine) Kind() string { return tunnel.KindPostgres }

// Validate tries to log in with target's credentials (common.Engine).
func (e *Engine) Validate(ctx context.Context, target tunnel.Target) tunnel.Result {
	return Validate(ctx, e.config(target))
}

// config returns the Config of target, with the engine's dialer.
func (e *Engine) config(target tunnel.Target) Config {
	cfg := ConfigFromTarget(target)
	if cfg.Dial == nil {
		cfg.Dial = e.cfg.Dial
	}
	return cfg
}

// HandleConnection serves client with target's credentials
// (common.Engine): see Serve.
func (e *Engine) HandleConnection(ctx context.Context, client net.Conn, sess *common.Session, target tunnel.Target) error {
	return e.Serve(ctx, client, sess, e.config(target))
}

func (e *Engine) serve(ctx context.Context, c *served, sess *common.Session, cfg Config, log *slog.Logger) error {
	_ = c.client.SetDeadline(time.Now().Add(e.cfg.StartupTimeout))
	op, err := readStartup(c.client)
	if err != nil {
		return e.rejectStartup(ctx, c.client, log, err)
	}
	_ = c.client.SetDeadline(time.Time{})
	if op.kind == openingCancel {
		e.forwardCancel(ctx, sess, op, log)
		return nil
	}
	return e.proxy(ctx, c, sess, cfg, op, log)
}

// rejectStartup answers a broken opening with an ErrorResponse, when the
// connection is still usable, and returns Serve's error.
func (e *Engine) rejectStartup(ctx context.Context, client net.Conn, log *slog.Logger, err error) error {
	if ctx.Err() != nil {
		return ctx.Err()
	}
	var se *startupError
	switch {
	case errors.As(err, &se):
	case errors.Is(err, io.EOF):
		// Connected and closed without a byte: a port check, not a
		// protocol error.
		log.Debug("client closed the connection before its startup packet")
		return nil
	case errors.Is(err, io.ErrUnexpectedEOF):
		se = &startupError{reason: "the client closed the connection in the middle of a packet"}
	case isNetTimeout(err):
		se = &startupError{reason: fmt.Sprintf("no complete startup packet within %s", e.cfg.StartupTimeout)}
	default:
		// The connection itself failed (reset...): nobody to answer.
		log.Debug("could not read the client's startup packet", "error", err)
		return fmt.Errorf("postgres: read the client's startup packet: %w", err)
	}
	e.refuse(client, sqlStateProtocolViolation, "airlock: "+se.Error())
	common.LingerClose(client)
	log.Warn("rejected the client's opening", "reason", se.reason)
	return se
}

// forwardCancel sends the cancel a client asked for to the database, if its
// key is one of the session's; it ignores any other key, as PostgreSQL does.
func (e *Engine) forwardCancel(ctx context.Context, sess *common.Session, op *opening, log *slog.Logger) {
	keys, err := keysOf(sess)
	if err != nil {
		log.Debug("ignored a cancel request: the session has ended")
		return
	}
	target, ok := keys.lookup(op.processID, op.secretKey)
	if !ok {
		log.Debug("ignored a cancel request with an unknown key")
		return
	}
	if len(target.secretKey) == 0 {
		// The server sent no BackendKeyData: it cannot be asked to cancel.
		log.Info("ignored a cancel request: the database gave no cancel key", "upstream", target.address)
		return
	}
	ctx, cancel := context.WithTimeout(ctx, e.cfg.CancelTimeout)
	defer cancel()
	if err := target.send(ctx); err != nil {
		log.Warn("could not forward a cancel request", "upstream", target.address, "error", err)
		return
	}
	log.Info("forwarded a cancel request", "upstream", target.address, "backend_pid", target.processID)
}

// proxy logs in upstream for the client, greets the client and relays.
func (e *Engine) proxy(ctx context.Context, c *served, sess *common.Session, cfg Config, op *opening, log *slog.Logger) error {
	log = log.With("upstream", cfg)
	start := time.Now()
	var clog *connLog
	if sess.Recorder() != nil {
		clog = newConnLog(sess, cfg, uuid.Must(uuid.NewV7()).String())
		clog.budget = e.budget
		log = log.With("conn", clog.connID)
	}
	// refused records a login that failed, in the session log.
	refused := func(sqlState, msg string) {
		if clog != nil {
			clog.emitConn(sessionlog.KindConnect, start, time.Now(), OutcomeError, sqlState, "cannot connect to the database: "+msg)
		}
	}
	if clog != nil {
		clog.client = op.clientRequest()
	}
	if r := op.check(cfg.Database, cfg.User, cfg.Resource); r != nil {
		e.refuse(c.client, r.code, r.message)
		log.Info("refused what the client asked for", "code", r.code, "reason", r.message)
		if clog != nil {
			clog.emitConn(sessionlog.KindConnect, start, time.Now(), OutcomeError, r.code, r.message)
		}
		return r
	}
	pc, err := cfg.PgConnConfig()
	if err != nil {
		msg := redact(err.Error(), cfg.Password)
		e.refuse(c.client, sqlStateConnectionFailure, "airlock: cannot connect to the database: "+msg)
		log.Error("the resource's settings are invalid", "error", msg)
		refused(sqlStateConnectionFailure, msg)
		return &ConnectError{Code: tunnel.CodeInvalid, Message: msg, Err: err}
	}
	pc.RuntimeParams = op.runtimeParams()

	// The login (TLS, SCRAM) runs on a short-lived goroutine, so that the
	// one relaying for the connection's lifetime keeps a small stack.
	var pg *pgconn.PgConn
	tunnel.OnOwnStack(func() { pg, err = pgconn.ConnectConfig(ctx, pc) })
	if err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		f := describeConnectError(cfg, err)
		e.refuse(c.client, f.sqlState, "airlock: cannot connect to the database: "+f.message)
		log.Warn("could not connect to the database", "code", f.code, "error", f.message)
		refused(f.sqlState, f.message)
		return &ConnectError{Code: f.code, Message: f.message, Err: err}
	}
	hc, err := hijack(ctx, pg)
	if err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		f := describeConnectError(cfg, err)
		e.refuse(c.client, f.sqlState, "airlock: cannot connect to the database: "+f.message)
		log.Warn("could not take over the database connection", "error", f.message)
		refused(f.sqlState, f.message)
		return &ConnectError{Code: f.code, Message: f.message, Err: err}
	}
	upstream := hc.Conn
	if !c.setUpstream(upstream) {
		return ErrSessionClosed // Serve returns the precise reason
	}

	keys, err := keysOf(sess)
	if err != nil {
		return err
	}
	target := newCancelTarget(hc)
	pid, secret, err := keys.register(e.random, target)
	if err != nil {
		if !errors.Is(err, ErrSessionClosed) {
			e.refuse(c.client, sqlStateInternalError, "airlock: internal error: cannot create a cancel key")
			log.Error("could not create a cancel key", "error", err)
		}
		return fmt.Errorf("postgres: register the cancel key: %w", err)
	}
	defer keys.unregister(pid)

	// The relay's state is known before the client is greeted, so that a
	// session ending from now on waits for the greeting and then says
	// goodbye after it, at a message boundary.
	r := &relay{
		upstream:  upstream,
		target:    target,
		backendID: hc.PID,
		clog:      clog,
		frontDone: make(chan struct{}),
		backDone:  make(chan struct{}),
	}
	if !c.startRelay(r) {
		return ErrSessionClosed
	}
	_ = c.client.SetWriteDeadline(time.Now().Add(writeTimeout))
	if _, err := c.client.Write(greeting(op, hc, pid, secret)); err != nil {
		close(r.frontDone)
		close(r.backDone) // backClean stays false: no goodbye after a broken greeting
		return fmt.Errorf("postgres: greet the client: %w", err)
	}
	_ = c.client.SetWriteDeadline(time.Time{})

	log.Info("client connected", "backend_pid", hc.PID, "tls", hc.TLSConfig != nil,
		"application_name", op.params["application_name"], "connect_time", time.Since(start).Round(time.Millisecond))
	if clog != nil {
		clog.emitConn(sessionlog.KindConnect, start, time.Now(), OutcomeOK, "", "")
	}
	fromClient, toClient, err := e.relay(c, r)
	if clog != nil {
		outcome, code, msg := OutcomeOK, "", ""
		switch {
		case c.wasEnded():
			outcome = OutcomeTerminated
			code, msg = sess.EndReason()
		case err != nil:
			outcome, msg = OutcomeError, strings.TrimPrefix(err.Error(), "postgres: ")
			log.Warn("closed a connection the session log cannot follow", "error", err)
		}
		clog.emitConn(sessionlog.KindDisconnect, start, time.Now(), outcome, code, msg)
	}
	log.Info("client disconnected", "bytes_from_client", fromClient, "bytes_to_client", toClient,
		"duration", time.Since(start).Round(time.Millisecond))
	return nil
}

// hijack takes the raw connection over from pgconn, with nothing left in
// pgconn's read buffers, and clears the deadlines pgconn may have set.
func hijack(ctx context.Context, pg *pgconn.PgConn) (*pgconn.HijackedConn, error) {
	if err := pg.SyncConn(ctx); err != nil {
		closeCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), closeTimeout)
		defer cancel()
		_ = pg.Close(closeCtx)
		return nil, err
	}
	hc, err := pg.Hijack()
	if err != nil {
		_ = pg.Conn().Close()
		return nil, err
	}
	hc.Conn = unwrapGuard(hc.Conn)
	_ = hc.Conn.SetDeadline(time.Time{})
	return hc, nil
}

// greeting returns what the client receives in place of the server's
// authentication exchange: NegotiateProtocolVersion if the client asked for
// more than protocol 3.0, AuthenticationOk, the server's ParameterStatus
// values, the synthetic BackendKeyData and ReadyForQuery.
func greeting(op *opening, hc *pgconn.HijackedConn, pid uint32, secret [secretKeyLen]byte) []byte {
	buf := make([]byte, 0, 1024)
	if op.needsNegotiation() {
		buf, _ = (&pgproto3.NegotiateProtocolVersion{NewestMinorProtocol: 0, UnrecognizedOptions: op.protocolOptions()}).Encode(buf)
	}
	buf, _ = (&pgproto3.AuthenticationOk{}).Encode(buf)
	names := make([]string, 0, len(hc.ParameterStatuses))
	for name := range hc.ParameterStatuses {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		buf, _ = (&pgproto3.ParameterStatus{Name: name, Value: hc.ParameterStatuses[name]}).Encode(buf)
	}
	buf, _ = (&pgproto3.BackendKeyData{ProcessID: pid, SecretKey: secret[:]}).Encode(buf)
	txStatus := hc.TxStatus
	if txStatus == 0 {
		txStatus = 'I'
	}
	buf, _ = (&pgproto3.ReadyForQuery{TxStatus: txStatus}).Encode(buf)
	return buf
}

// relay copies bytes both ways, each direction in its own goroutine, until
// one direction ends, then closes both connections so that the other ends
// too (unless the session is ending the connection, which then closes it
// itself). With a session log (r.clog), it relays while observing the
// protocol to record it: each direction reads into a pooled buffer
// whatever the connection has, lets its observer see the messages in it
// and forwards the whole chunk in one write. The client side queues each
// request before it forwards it, so the server side always finds the
// request an answer belongs to. It returns the bytes copied from and to the
// client, and the observer's error if one stopped the relay (a client that
// pipelines too much, a broken stream).
func (e *Engine) relay(c *served, r *relay) (fromClient, toClient int64, err error) {
	var front, back chunkObserver
	var backObs *backendObserver
	if r.clog != nil {
		front = newFrontendObserver(r.clog)
		backObs = newBackendObserver(r.clog)
		back = backObs
		r.back = backObs
	}
	var backErr error
	go func() {
		defer close(r.backDone)
		if backObs != nil {
			toClient, r.backClean, backErr = pumpBack(c.client, r, backObs)
		} else {
			toClient, r.backClean, backErr = pump(c.client, r.upstream, back)
		}
		c.pumpStopped()
	}()
	var fo frontObserver = frameObserver{scan: &scanner{decode: &noDecode}}
	if front != nil {
		fo = front.(*frontendObserver)
	}
	fromClient, err = e.pumpFront(r.upstream, c.client, r, fo)
	if front != nil {
		front.(*frontendObserver).releaseBudget()
	}
	close(r.frontDone)
	var rf *refusal
	if errors.As(err, &rf) {
		c.refuse(r, rf)
	}
	c.pumpStopped()
	<-r.backDone
	if backObs != nil {
		backObs.finish()
	}
	if err == nil {
		err = backErr
	}
	return fromClient, toClient, err
}

// chunkObserver sees each chunk of one direction before it is forwarded.
type chunkObserver interface {
	observe(chunk []byte) error
}

// pump copies src to dst through a tunnel.ReadBuffer (2 KiB while the
// connection idles, none for the database's socket), showing each chunk to
// obs first when obs is not nil. It returns the bytes written, whether every
// chunk read was written whole, and obs's error, if it stopped the copy;
// the connections' own errors end the copy but are not returned, as they
// are the normal end of a connection.
func pump(dst io.Writer, src io.Reader, obs chunkObserver) (int64, bool, error) {
	var rb tunnel.ReadBuffer
	defer rb.Release()
	var written int64
	for {
		p, rerr := rb.ReadOnce(src)
		if len(p) > 0 {
			if obs != nil {
				if err := obs.observe(p); err != nil {
					return written, false, err
				}
			}
			w, werr := dst.Write(p)
			written += int64(w)
			if werr != nil {
				return written, false, nil
			}
		}
		if rerr != nil {
			return written, true, nil
		}
		rb.Adapt(len(p))
	}
}

// frontObserver sees each chunk of the client's bytes before it is
// forwarded, and says how much of it to forward.
type frontObserver interface {
	observeFront(chunk []byte) (int, error)
	midMessage() bool
}

// noDecode is the decode set of a scanner that only follows the framing.
var noDecode [256]bool

// frameObserver follows the framing of the client's messages when nothing
// is recorded, so that a client stalled in the middle of a message is
// timed out all the same.
type frameObserver struct{ scan *scanner }

func (o frameObserver) observeFront(chunk []byte) (int, error) {
	return len(chunk), o.scan.feed(chunk, o)
}
func (o frameObserver) midMessage() bool                { return !o.scan.atBoundary() }
func (o frameObserver) message(byte, []byte, int) error { return nil }

// errStalled ends a connection whose client stopped in the middle of a
// message for longer than EngineConfig.MessageTimeout.
var errStalled = errors.New("postgres: the client stopped sending in the middle of a message")

// pumpFront copies the client's bytes to the server through a
// tunnel.ReadBuffer, showing each chunk to obs first and forwarding only
// what obs allows. While the client is in the middle of a message, each
// read must come within EngineConfig.MessageTimeout, or the relay stops
// with errStalled; between messages, the client may idle as long as it
// likes. It returns the bytes forwarded and obs's error (a *refusal, a
// broken stream) or errStalled; the connections' own errors end the copy
// but are not returned.
func (e *Engine) pumpFront(dst io.Writer, src net.Conn, r *relay, obs frontObserver) (int64, error) {
	var rb tunnel.ReadBuffer
	defer rb.Release()
	var written int64
	timed := false // a read deadline is set
	for {
		p, rerr := rb.ReadOnce(src)
		if len(p) > 0 {
			fwd, err := obs.observeFront(p)
			if fwd > 0 {
				w, werr := dst.Write(p[:fwd])
				written += int64(w)
				if werr != nil {
					return written, nil
				}
			}
			if err != nil {
				return written, err
			}
			changed := true
			switch mid := obs.midMessage(); {
			case mid:
				_ = src.SetReadDeadline(time.Now().Add(e.cfg.MessageTimeout))
				timed = true
			case timed:
				_ = src.SetReadDeadline(time.Time{})
				timed = false
			default:
				changed = false
			}
			if changed && r.draining.Load() {
				// The session's end has stopped the reads (Interrupt),
				// which the deadline just set must not undo.
				return written, nil
			}
		}
		if rerr != nil {
			if timed && isNetTimeout(rerr) && !r.draining.Load() {
				return written, errStalled
			}
			return written, nil
		}
		rb.Adapt(len(p))
	}
}

// refuse ends a connection whose client sent a request the engine does not
// forward: once the answers to the client's earlier requests have reached
// it (up to refuseWait), the server's bytes stop, and, at a message
// boundary, the client is sent a FATAL ErrorResponse with rf's code and
// message; then both connections are closed.
func (c *served) refuse(r *relay, rf *refusal) {
	if r.clog != nil {
		t := time.NewTimer(refuseWait)
		select {
		case <-r.clog.idle():
		case <-r.backDone:
		case <-t.C:
		}
		t.Stop()
	}
	c.mu.Lock()
	ending := c.ending
	c.refusing = !ending // the server->client pump stops without closing
	c.mu.Unlock()
	if ending {
		return // the session's end says goodbye
	}
	defer c.close()
	r.draining.Store(true)
	c.stopBack(r)
	if !r.backClean {
		return
	}
	_ = c.client.SetWriteDeadline(time.Now().Add(endWriteTimeout))
	if err := writeErrorResponse(c.client, rf.code, rf.message); err != nil {
		return
	}
	common.Linger(c.client, endLinger)
}

// refuseWait bounds the wait for the answers to the requests a client sent
// before one the engine refuses.
const refuseWait = 5 * time.Second

// pumpBack is pump for the observed server->client direction, which can
// be drained: once r.draining is set (the session is ending), the
// server's bytes are still read and observed, so that the answer to the
// engine's cancel is recorded, but only those that complete the message in
// flight are written; the client receives nothing more from the server,
// and the stream stays at a message boundary for the engine's goodbye. The
// second result reports whether what the client received ends at a
// message boundary.
func pumpBack(dst io.Writer, r *relay, obs *backendObserver) (int64, bool, error) {
	var rb tunnel.ReadBuffer
	defer rb.Release()
	var written int64
	drained := false // what the client received ends at a boundary, and nothing more goes
	for {
		p, rerr := rb.ReadOnce(r.upstream)
		if len(p) > 0 {
			out := p
			if drained {
				out = nil
			} else if r.draining.Load() {
				out = p[:obs.scan.toBoundary(p)]
				drained = len(out) < len(p)
			}
			if err := obs.observe(p); err != nil {
				return written, false, err
			}
			if len(out) == len(p) && r.draining.Load() && obs.scan.atBoundary() {
				drained = true
			}
			if len(out) > 0 {
				w, werr := dst.Write(out)
				written += int64(w)
				if werr != nil {
					return written, false, nil
				}
			}
		}
		if rerr != nil {
			return written, drained || obs.scan.atBoundary(), nil
		}
		rb.Adapt(len(p))
	}
}

// random fills b from cfg.Random.
func (e *Engine) random(b []byte) error {
	e.randMu.Lock()
	defer e.randMu.Unlock()
	if _, err := io.ReadFull(e.cfg.Random, b); err != nil {
		return fmt.Errorf("postgres: read random bytes: %w", err)
	}
	return nil
}

// refuse sends the client a FATAL ErrorResponse, best effort: the connection
// is closed next whatever happens.
func (e *Engine) refuse(client net.Conn, sqlState, message string) {
	_ = client.SetWriteDeadline(time.Now().Add(writeTimeout))
	_ = writeErrorResponse(client, sqlState, message)
}

// writeErrorResponse writes one FATAL ErrorResponse to w.
func writeErrorResponse(w io.Writer, sqlState, message string) error {
	msg := pgproto3.ErrorResponse{
		Severity:            "FATAL",
		SeverityUnlocalized: "FATAL",
		Code:                sqlState,
		Message:             strings.ReplaceAll(message, "\x00", ""),
	}
	buf, err := msg.Encode(nil)
	if err != nil {
		return err
	}
	_, err = w.Write(buf)
	return err
}
