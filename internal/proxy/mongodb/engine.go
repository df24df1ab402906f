package mongodb

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strconv"
	"time"

	"github.com/google/uuid"
	"go.mongodb.org/mongo-driver/v2/x/bsonx/bsoncore"
	"go.mongodb.org/mongo-driver/v2/x/mongo/driver/mnet"
	"go.mongodb.org/mongo-driver/v2/x/mongo/driver/wiremessage"

	"github.com/airlockpam/airlock/internal/proxy/common"
	"github.com/airlockpam/airlock/internal/sessionlog"
	"github.com/airlockpam/airlock/internal/tunnel"
)

// writeTimeout bounds writing an error to a client that does not read.
const writeTimeout = 5 * time.Second

// endWriteTimeout bounds writing the session's end to a client that does
// not read, so that the end stays within about a second of the decision.
const endWriteTimeout = 300 * time.Millisecond

// Outcomes of the session log besides ok, error and unacknowledged.
const (
	// OutcomeUnknown is a command whose upstream connection was closed
	// before its reply, when its session ended: the server may have done
	// it.
	OutcomeUnknown = "outcome unknown"
	// OutcomeTerminated ends a connection ended by Session.End; the
	// event's error code is the end's reason, its message the words the
	// client was told.
	OutcomeTerminated = "terminated"
)

// EngineConfig configures an Engine.
type EngineConfig struct {
	// Logger receives the engine's log lines, which never hold a password.
	// Default: slog.Default().
	Logger *slog.Logger
	// Clock gives the time of session-log events and their durations.
	// Default: time.Now.
	Clock func() time.Time
	// MessageTimeout bounds the arrival of the rest of a client message
	// once its header has come: a client that stalls half-way through a
	// message is answered with code 89 (NetworkTimeout) and cut off, and
	// the memory it held is freed. Waiting between messages is not
	// bounded. Default: DefaultMessageTimeout.
	MessageTimeout time.Duration
	// MemoryBudget bounds the bytes of client messages buffered at once,
	// across every connection that shares it (see common.Budget); a
	// message that does not fit is answered with code 146
	// (ExceededMemoryLimit) and its connection closed. A gateway passes
	// the same Budget to all its engines. Default: a Budget of
	// common.DefaultMemoryBudget for this Engine alone.
	MemoryBudget *common.Budget
	// Dial opens the TCP connections to the database's servers, for
	// served connections, the driver's monitoring and Validate alike; the
	// gateway passes one that enforces its target policy. Default: the
	// driver's own dialer.
	Dial common.DialFunc
}

// DefaultMessageTimeout is EngineConfig.MessageTimeout's default.
const DefaultMessageTimeout = 30 * time.Second

// CheckAndSetDefaults validates the configuration and fills in defaults.
func (c *EngineConfig) CheckAndSetDefaults() error {
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.Clock == nil {
		c.Clock = time.Now
	}
	if c.MessageTimeout < 0 {
		return errors.New("mongodb: the message timeout is negative: give a positive duration, or zero for the default")
	}
	if c.MessageTimeout == 0 {
		c.MessageTimeout = DefaultMessageTimeout
	}
	if c.MemoryBudget == nil {
		c.MemoryBudget = common.NewBudget(0)
	}
	return nil
}

// Option changes an EngineConfig.
type Option func(*EngineConfig)

// WithLogger sets EngineConfig.Logger.
func WithLogger(l *slog.Logger) Option { return func(c *EngineConfig) { c.Logger = l } }

// WithClock sets EngineConfig.Clock.
func WithClock(now func() time.Time) Option { return func(c *EngineConfig) { c.Clock = now } }

// WithMessageTimeout sets EngineConfig.MessageTimeout.
func WithMessageTimeout(d time.Duration) Option {
	return func(c *EngineConfig) { c.MessageTimeout = d }
}

// WithMemoryBudget sets EngineConfig.MemoryBudget.
func WithMemoryBudget(b *common.Budget) Option { return func(c *EngineConfig) { c.MemoryBudget = b } }

// WithDialer sets EngineConfig.Dial, the dialer of every upstream
// connection.
func WithDialer(d common.DialFunc) Option { return func(c *EngineConfig) { c.Dial = d } }

// Engine serves MongoDB client connections with credential injection. One
// Engine serves any number of connections of any number of sessions at
// once.
type Engine struct {
	cfg EngineConfig
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
	return &Engine{cfg: cfg}, nil
}

// ConnectError is Serve's error when the deployment could not be reached
// or refused the login. Code and Message classify it as Validate does;
// Message never holds the password.
type ConnectError struct {
	Code    string // a tunnel.Code* constant
	Message string
	Err     error // the cause, from the driver
}

func (e *ConnectError) Error() string {
	return "mongodb: cannot connect to the database: " + e.Message
}

func (e *ConnectError) Unwrap() error { return e.Err }

// Serve serves one client connection of sess: it reads the client's
// messages, answers the handshake and the client's own authentication
// itself, and forwards every other command on an upstream connection
// authenticated with cfg's credentials, until either side closes, ctx ends
// or sess ends. The upstream connection is made at the client's first
// message and closed (not returned to the driver's pool) at the end. Serve
// always closes client before it returns.
//
// It returns nil when the client closed the connection, ErrSessionClosed
// when sess ended it, ctx's error when ctx ended, a *ProtocolError when
// the client broke the protocol (or stalled in a message, or sent one that
// the memory budget cannot hold), and a *ConnectError when the deployment
// could not be reached or refused the login. In those last two cases the
// client is sent an error reply first, where the protocol allows one.
func (e *Engine) Serve(ctx context.Context, client net.Conn, sess *common.Session, cfg Config) error {
	if sess == nil {
		_ = client.Close()
		return errors.New("mongodb: Serve needs a Session")
	}
	parent := ctx
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()

	c := &served{client: client, cancel: cancel, done: make(chan struct{})}
	if err := sess.Add(c); err != nil {
		_ = client.Close()
		return err
	}
	defer sess.Remove(c)
	defer c.close()
	// The end of the caller's context closes the client at once; the
	// connection's own context is also ended by Session.End, which then
	// lets the loop answer a pending request first.
	stop := context.AfterFunc(parent, c.close)
	defer stop()

	connID := uuid.Must(uuid.NewV7()).String()
	cc := &clientConn{
		e:       e,
		ctx:     ctx,
		served:  c,
		sess:    sess,
		cfg:     cfg,
		log:     e.cfg.Logger.With("session", sess.ID(), "conn", connID, "client", common.RemoteAddr(client)),
		maxSize: DefaultMaxMessageSize,
	}
	if sess.Recorder() != nil {
		cc.rec = newRecorder(sess.Recorder(), sess, connID)
	}
	err := cc.run()
	close(c.done)
	cc.closeUpstream()
	terminated := c.wasEnded()
	if cc.rec != nil && cc.connected {
		outcome, code, msg := "ok", "", ""
		switch {
		case terminated:
			outcome = OutcomeTerminated
			code, msg = sess.EndReason()
		case err != nil && parent.Err() == nil:
			outcome, msg = "error", err.Error()
		}
		cc.rec.connection(sessionlog.KindDisconnect, e.cfg.Clock(), cfg.authDatabase(), outcome, code, msg)
	}
	switch {
	case terminated:
		return ErrSessionClosed
	case parent.Err() != nil:
		return parent.Err()
	}
	return err
}

// Kind returns tunnel.KindMongoDB (common.Engine).
func (e *Engine) Kind() string { return tunnel.KindMongoDB }

// Validate tries to log in with target's credentials (common.Engine).
func (e *Engine) Validate(ctx context.Context, target tunnel.Target) tunnel.Result {
	return validate(ctx, ConfigFromTarget(target), e.cfg.Dial)
}

// HandleConnection serves client with target's credentials
// (common.Engine): see Serve.
func (e *Engine) HandleConnection(ctx context.Context, client net.Conn, sess *common.Session, target tunnel.Target) error {
	return e.Serve(ctx, client, sess, ConfigFromTarget(target))
}

// clientConn is the state of one client connection.
type clientConn struct {
	e      *Engine
	ctx    context.Context
	served *served
	sess   *common.Session
	cfg    Config
	log    *slog.Logger
	rec    *recorder // nil: nothing is recorded

	upstream  *mnet.Connection
	connected bool  // the upstream connection was made once
	maxSize   int32 // the largest client message accepted
}

func (cc *clientConn) client() net.Conn { return cc.served.client }

// run reads and answers the client's messages until the connection ends.
func (cc *clientConn) run() error {
	budget := cc.e.cfg.MemoryBudget
	startBody := func() { cc.served.setReadDeadline(time.Now().Add(cc.e.cfg.MessageTimeout)) }
	for {
		msg, err := readMessage(cc.client(), readLimits{maxSize: cc.maxSize, budget: budget, startBody: startBody})
		cc.served.setReadDeadline(time.Time{})
		if err != nil {
			return cc.readFailed(err)
		}
		err = cc.handleMessage(msg)
		budget.Release(int64(cap(msg)))
		if err != nil {
			return err
		}
	}
}

// handleMessage parses and answers one client message.
func (cc *clientConn) handleMessage(msg []byte) error {
	req, err := parseRequest(msg)
	if err != nil {
		var pe *ProtocolError
		if errors.As(err, &pe) {
			return cc.refuse(pe)
		}
		return err
	}
	return cc.handle(req)
}

// readFailed ends the connection after a failed read of a client message:
// the client left, broke the protocol, or stalled in a message.
func (cc *clientConn) readFailed(err error) error {
	var pe *ProtocolError
	var be *bodyError
	switch {
	case errors.As(err, &pe):
		return cc.refuse(pe)
	case errors.Is(err, io.EOF):
		return nil
	case cc.ctx.Err() != nil || cc.served.wasEnded():
		return cc.ctx.Err()
	case errors.As(err, &be) && common.IsNetTimeout(err):
		return cc.refuse(&ProtocolError{
			Reason: fmt.Sprintf("the rest of a message of %d bytes did not arrive within %s (%d bytes came): the connection is closed",
				be.h.length, cc.e.cfg.MessageTimeout, be.got),
			Code: codeNetworkTimeout, RequestID: be.h.requestID, Answerable: true, Legacy: be.h.opCode == opQuery,
		})
	}
	return fmt.Errorf("mongodb: read the client's message: %w", err)
}

// refuse answers a message the engine cannot accept with an error, when
// the header could be read, and closes the connection.
func (cc *clientConn) refuse(pe *ProtocolError) error {
	cc.log.Warn("rejected a client message", "reason", pe.Reason)
	if pe.Answerable {
		code := pe.Code
		if code == 0 {
			code = codeProtocolError
		}
		doc := errorDoc(code, codeName(code), "airlock: "+pe.Reason)
		_ = cc.client().SetWriteDeadline(time.Now().Add(writeTimeout))
		_ = cc.writeDoc(pe.Legacy, pe.RequestID, doc)
	}
	common.LingerClose(cc.client())
	return pe
}

// writeDoc sends the client a reply of the engine's own to the request
// requestID: an OP_REPLY for an OP_QUERY (legacy), an OP_MSG otherwise.
func (cc *clientConn) writeDoc(legacy bool, requestID int32, doc bsoncore.Document) error {
	var b []byte
	if legacy {
		b = appendReply(nil, wiremessage.NextRequestID(), requestID, doc)
	} else {
		b = appendMsg(nil, wiremessage.NextRequestID(), requestID, doc)
	}
	_, err := cc.client().Write(b)
	return err
}

// answer sends doc as the reply to req, unless req expects none.
func (cc *clientConn) answer(req *request, doc bsoncore.Document) error {
	if req.moreToCome() {
		return nil
	}
	if err := cc.writeDoc(req.opCode == opQuery, req.requestID, doc); err != nil {
		return fmt.Errorf("mongodb: write to the client: %w", err)
	}
	return nil
}

// handle answers one client request.
func (cc *clientConn) handle(req *request) error {
	if req.dup != "" {
		return cc.refuseDuplicate(req)
	}
	if isAuthCommand(req.command) {
		return cc.refuseAuth(req)
	}
	if !isHello(req.command) {
		// The handshake changes nothing and is not recorded: a client
		// connects, and hears why on its first command.
		if err := cc.sess.RecorderErr(); err != nil {
			return cc.refuseUnrecordable(req, err)
		}
	}
	if cc.upstream == nil {
		if err := cc.connect(req); err != nil {
			return err
		}
	}
	switch {
	case isHello(req.command):
		return cc.hello(req)
	case req.opCode == opQuery:
		return cc.legacyCommand(req)
	}
	return cc.forward(req)
}

// refuseAuth answers a client's own authentication command with an error.
func (cc *clientConn) refuseAuth(req *request) error {
	now := cc.e.cfg.Clock()
	if cc.rec != nil {
		p := cc.rec.begin(req, now)
		p.res = result{outcome: "error", code: "18", msg: authMessage}
		cc.rec.finish(p, now)
	}
	return cc.answer(req, errorDoc(codeAuthenticationFailed, "AuthenticationFailed", authMessage))
}

// refuseDuplicate answers a command that has a top-level field twice
// with an error, records the refusal (its statement, with both fields
// unless they are bookkeeping such as $db, and the field named in the
// error message) and forwards nothing: the server could read the other of
// the two (two $db: the log would name one database and the command run
// in the other).
func (cc *clientConn) refuseDuplicate(req *request) error {
	msg := fmt.Sprintf("airlock: the command document has the field %q more than once: it is refused, since the database and the session log could read different values; send each field once", req.dup)
	cc.refuseCommand(req, codeBadValue, msg)
	return cc.answer(req, errorDoc(codeBadValue, "BadValue", msg))
}

// refuseUnrecordable answers a command of a session whose log cannot be
// written with an error that says why, and forwards nothing (fail
// closed).
func (cc *clientConn) refuseUnrecordable(req *request, cause error) error {
	msg := "airlock: the session log cannot be written (" + cause.Error() + "): new commands are refused until it can; nothing was run"
	cc.log.Warn("refused a command: the session log cannot be written", "command", req.command, "reason", cause.Error())
	cc.refuseCommand(req, codeInternalError, msg)
	return cc.answer(req, errorDoc(codeInternalError, "InternalError", msg))
}

// refuseOversize answers a command whose statement is over the session's
// MaxStatementBytes (when the project refuses such commands) with an
// error, records the refusal with the statement's ends and hash (p), and
// forwards nothing.
func (cc *clientConn) refuseOversize(req *request, p *pending) error {
	msg := fmt.Sprintf("airlock: command of %d bytes is over this project's recording limit of %d bytes: it is refused; send it in smaller parts (fewer documents per batch), or ask an administrator to raise the limit",
		p.stmtLen, cc.sess.MaxStatementBytes())
	p.res = result{outcome: "error", code: strconv.Itoa(codeBSONObjectTooLarge), msg: msg}
	cc.rec.finish(p, cc.e.cfg.Clock())
	return cc.answer(req, errorDoc(codeBSONObjectTooLarge, "BSONObjectTooLarge", msg))
}

// refuseCommand records a command refused before it was forwarded, when
// it is recorded: with its statement (ends and hash, if over the limit),
// outcome error, code and msg.
func (cc *clientConn) refuseCommand(req *request, code int32, msg string) {
	if cc.rec == nil {
		return
	}
	now := cc.e.cfg.Clock()
	p := cc.rec.begin(req, now)
	p.res = result{outcome: "error", code: strconv.Itoa(int(code)), msg: msg}
	cc.rec.finish(p, now)
}

// connect makes the upstream connection. On failure, the client's request
// is answered with the reason and the connection ends.
func (cc *clientConn) connect(req *request) error {
	at := cc.e.cfg.Clock()
	conn, err := cc.dial()
	if err != nil {
		if cc.served.wasEnded() {
			return cc.interrupted(req, nil)
		}
		if cc.ctx.Err() != nil {
			return cc.ctx.Err()
		}
		var f connectFailure
		if errors.Is(err, ErrSessionClosed) {
			return err
		}
		f = describeConnectError(cc.cfg, err)
		cc.log.Warn("cannot connect to the database", "code", f.code, "reason", f.message)
		if cc.rec != nil {
			cc.rec.connection(sessionlog.KindConnect, at, cc.cfg.authDatabase(), "error", f.code, f.message)
		}
		_ = cc.client().SetWriteDeadline(time.Now().Add(writeTimeout))
		_ = cc.answer(req, errorDoc(f.mongoCode, codeName(f.mongoCode), "airlock: cannot connect to the database: "+f.message))
		return &ConnectError{Code: f.code, Message: f.message, Err: redactErr(err, cc.cfg.Password)}
	}
	cc.upstream = conn
	cc.connected = true
	if m := conn.Description().MaxMessageSize; m > 0 && m <= 1<<30 {
		cc.maxSize = int32(m)
	}
	if cc.rec != nil {
		cc.rec.connection(sessionlog.KindConnect, at, cc.cfg.authDatabase(), "ok", "", "")
	}
	return nil
}

func (cc *clientConn) dial() (*mnet.Connection, error) {
	topo, err := topologyFor(cc.sess, cc.cfg, cc.e.cfg.Dial)
	if err != nil {
		return nil, err
	}
	return acquire(cc.ctx, topo, cc.cfg)
}

func codeName(code int32) string {
	switch code {
	case codeAuthenticationFailed:
		return "AuthenticationFailed"
	case codeProtocolError:
		return "ProtocolError"
	case codeNetworkTimeout:
		return "NetworkTimeout"
	case codeExceededMemoryLimit:
		return "ExceededMemoryLimit"
	}
	return "HostUnreachable"
}

// closeUpstream closes the upstream connection for good.
func (cc *clientConn) closeUpstream() {
	if cc.upstream != nil {
		expire(cc.upstream)
		cc.upstream = nil
	}
}

// maxStrayReplies bounds the replies skipped while waiting for the one to a
// request.
const maxStrayReplies = 64

// roundTrip sends one message upstream and reads its reply.
func (cc *clientConn) roundTrip(msg []byte) (*reply, []byte, error) {
	_, reqID, _, _, _, _ := wiremessage.ReadHeader(msg)
	if err := cc.upstream.Write(cc.ctx, msg); err != nil {
		return nil, nil, cc.upstreamFailed(err)
	}
	return cc.readReply(reqID)
}

// readReply reads the server's reply to the message requestID (a request,
// or the previous reply of an exhaust stream), by its responseTo. A reply
// to anything else is skipped: some servers (FerretDB) answer a request
// sent with moreToCome, whose client expects no answer.
func (cc *clientConn) readReply(requestID int32) (*reply, []byte, error) {
	for range maxStrayReplies {
		raw, err := cc.upstream.Read(cc.ctx)
		if err != nil {
			return nil, nil, cc.upstreamFailed(err)
		}
		rp, err := parseReply(raw)
		if err != nil {
			return nil, nil, fmt.Errorf("mongodb: the server's reply cannot be read: %w", err)
		}
		if rp.responseTo == requestID {
			return rp, raw, nil
		}
		cc.log.Debug("skipped a server reply to another request", "responseTo", rp.responseTo, "want", requestID)
	}
	return nil, nil, fmt.Errorf("mongodb: the server sent %d replies to other requests than %d", maxStrayReplies, requestID)
}

func (cc *clientConn) upstreamFailed(err error) error {
	if cc.ctx.Err() != nil {
		return cc.ctx.Err()
	}
	return fmt.Errorf("mongodb: the connection to the database broke: %w", redactErr(err, cc.cfg.Password))
}

// hello forwards a client's handshake, rewritten, and answers with the
// server's reply, rewritten (see rewriteHelloRequest and
// rewriteHelloReply). It is not recorded.
func (cc *clientConn) hello(req *request) error {
	body := rewriteHelloRequest(req)
	rp, _, err := cc.roundTrip(appendMsg(nil, wiremessage.NextRequestID(), 0, body))
	if err != nil {
		if cc.served.wasEnded() {
			return cc.interrupted(req, nil)
		}
		_ = cc.answer(req, errorDoc(codeHostUnreachable, "HostUnreachable", "airlock: "+err.Error()))
		return err
	}
	return cc.answer(req, rewriteHelloReply(req.command, rp.body))
}

// legacyCommand forwards an OP_QUERY command as an OP_MSG and answers with
// an OP_REPLY.
func (cc *clientConn) legacyCommand(req *request) error {
	p := cc.begin(req)
	if cc.refusesOversize(p) {
		return cc.refuseOversize(req, p)
	}
	if err := cc.writeAhead(p); err != nil {
		return cc.refuseUnrecordable(req, err)
	}
	rp, _, err := cc.roundTrip(appendMsg(nil, wiremessage.NextRequestID(), 0, commandBody(req)))
	if err != nil {
		if cc.served.wasEnded() {
			return cc.interrupted(req, p)
		}
		cc.fail(p, err)
		_ = cc.answer(req, errorDoc(codeHostUnreachable, "HostUnreachable", "airlock: "+err.Error()))
		return err
	}
	if err := cc.answer(req, rp.body); err != nil {
		cc.fail(p, err)
		return err
	}
	if p != nil {
		p.res.add(rp.body)
		cc.rec.finish(p, cc.e.cfg.Clock())
	}
	return nil
}

// forward relays an OP_MSG command as it came and the server's replies as
// they come: one, or, for an exhaust cursor (the client set
// exhaustAllowed), every reply up to the one without moreToCome. A request
// with moreToCome (a write with w: 0) has no reply.
func (cc *clientConn) forward(req *request) error {
	p := cc.begin(req)
	if cc.refusesOversize(p) {
		return cc.refuseOversize(req, p)
	}
	if err := cc.writeAhead(p); err != nil {
		return cc.refuseUnrecordable(req, err)
	}
	if err := cc.upstream.Write(cc.ctx, req.raw); err != nil {
		if cc.served.wasEnded() {
			return cc.interrupted(req, p)
		}
		err = cc.upstreamFailed(err)
		cc.fail(p, err)
		if !req.moreToCome() {
			_ = cc.answer(req, errorDoc(codeHostUnreachable, "HostUnreachable", "airlock: "+err.Error()))
		}
		return err
	}
	if req.moreToCome() {
		if p != nil {
			p.res.outcome = "unacknowledged"
			cc.rec.finish(p, cc.e.cfg.Clock())
		}
		return nil
	}
	want := req.requestID
	for {
		rp, raw, err := cc.readReply(want)
		if err != nil {
			if cc.served.wasEnded() {
				return cc.interrupted(req, p)
			}
			cc.fail(p, err)
			return err
		}
		if _, err := cc.client().Write(raw); err != nil {
			err = fmt.Errorf("mongodb: write to the client: %w", err)
			cc.fail(p, err)
			return err
		}
		if p != nil {
			p.res.add(rp.body)
		}
		if !rp.moreToCome {
			break
		}
		want = rp.requestID
	}
	if p != nil {
		cc.rec.finish(p, cc.e.cfg.Clock())
	}
	return nil
}

// interrupted answers req, whose upstream work the session's end cut
// short (the upstream connection was closed under it), with an error that
// says why (code 11601, Interrupted, which drivers do not retry), and
// records p with outcome unknown: the server may have done it.
func (cc *clientConn) interrupted(req *request, p *pending) error {
	_, msg := cc.sess.EndReason()
	text := "airlock: " + msg
	if p != nil {
		p.res = result{outcome: OutcomeUnknown, code: strconv.Itoa(codeInterrupted), msg: text}
		cc.rec.finish(p, cc.e.cfg.Clock())
	}
	if !req.moreToCome() {
		_ = cc.client().SetWriteDeadline(time.Now().Add(endWriteTimeout))
		_ = cc.answer(req, errorDoc(codeInterrupted, "Interrupted", text))
	}
	return ErrSessionClosed
}

// begin starts the event of req, if it is recorded.
func (cc *clientConn) begin(req *request) *pending {
	if cc.rec == nil || !isRecorded(req.command) {
		return nil
	}
	return cc.rec.begin(req, cc.e.cfg.Clock())
}

// writeAhead writes the start record of p, a recorded command, before it
// is forwarded, when the session's recorder takes start records.
func (cc *clientConn) writeAhead(p *pending) error {
	if p == nil {
		return nil
	}
	return cc.rec.writeAhead(p)
}

// refusesOversize reports whether the command of p must be refused: its
// statement is over the session's limit and the project refuses such
// commands (tunnel.OversizeRefuse) rather than record their ends.
func (cc *clientConn) refusesOversize(p *pending) bool {
	return p != nil && p.over && cc.sess.OversizeStatements() != tunnel.OversizeRecordEnds
}

// fail records p as ended by err.
func (cc *clientConn) fail(p *pending, err error) {
	if p == nil {
		return
	}
	p.res.outcome = "error"
	p.res.msg = err.Error()
	cc.rec.finish(p, cc.e.cfg.Clock())
}
