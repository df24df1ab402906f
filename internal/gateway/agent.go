// Package gateway is the Airlock gateway: the process that runs in the
// database's network. It enrolls once (identity.go), then keeps one outbound,
// multiplexed, mutually authenticated connection to the server (agent.go),
// reconnecting with backoff. Over it the server opens streams: validation
// requests, terminations, updates of a live session's log settings, and
// data streams, each of which carries a CLI's end-to-end mTLS connection
// that the gateway terminates and hands to the protocol engine of its
// resource's kind (proxy/postgres, proxy/mongodb), which injects the
// account's credentials.
//
// The gateway keeps one registry of live sessions (a common.Session each,
// whatever the protocol) and one engine per resource kind, both behind the
// interfaces of proxy/common. targets.go holds the --allow-targets policy,
// checked on the resolved address of every dial; renew.go renews the
// gateway's certificate before it expires. A session ends in one way, common.Session.End,
// for every reason: a terminate stream from the server (terminated by an
// administrator, ended by its user, revoked, client or gateway lost), its
// expiry on the gateway's own clock, or the gateway's shutdown. Ending
// stops the work in the database first, then tells each client why, then
// closes; the server is answered once every connection has ended.
package gateway

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"regexp"
	"sync"
	"time"

	"github.com/airlockpam/airlock/internal/pki"
	"github.com/airlockpam/airlock/internal/proxy/common"
	"github.com/airlockpam/airlock/internal/proxy/mongodb"
	"github.com/airlockpam/airlock/internal/proxy/postgres"
	"github.com/airlockpam/airlock/internal/sessionlog"
	"github.com/airlockpam/airlock/internal/tunnel"
)

// Config configures an Agent.
type Config struct {
	Identity *Identity
	// DataDir holds the gateway's identity (key, certificate, CA); the
	// renewed certificate and key are written there. Empty: certificates
	// are renewed in memory only.
	DataDir string
	// SpoolDir holds the session log spool: events are written here first
	// and deleted once the server has stored them. Required.
	SpoolDir string
	// ServerTLS configures TLS to an https:// server (RootCAs for a private
	// CA); nil uses the system roots.
	ServerTLS *tls.Config
	// Version is reported to the server.
	Version string
	// Logger; default slog.Default().
	Logger *slog.Logger
	// Now is the clock; default time.Now.
	Now func() time.Time
	// Targets restricts the addresses the gateway dials (--allow-targets);
	// nil allows every address (the dev server's built-in gateway).
	Targets *TargetPolicy
	// SpoolOptions are passed to the session log spool (size cap, sync,
	// fail open).
	SpoolOptions []sessionlog.SpoolOption
	// RenewBefore renews the gateway's certificate when less than this
	// fraction of its lifetime is left; default 1/3.
	RenewBefore float64
}

// endTimeout bounds the ending of one session: the engines end each
// connection within about a second; this only guards against a stuck one.
const endTimeout = 10 * time.Second

// Agent is a running gateway.
type Agent struct {
	cfg     Config
	log     *slog.Logger
	engines map[string]common.Engine // by resource kind
	spool   *sessionlog.Spool

	certMu sync.RWMutex
	cert   tls.Certificate // presented to the relay and to clients; renewed in place

	mu         sync.Mutex
	sessions   map[string]*liveSession
	terminated map[string]time.Time // session id -> when to forget it
	mux        *tunnel.Mux          // the live connection, nil when down
}

// liveSession is a session on this gateway, and its expiry timer.
type liveSession struct {
	*common.Session
	expires time.Time
	timer   *time.Timer
}

// New returns an Agent.
func New(cfg Config) (*Agent, error) {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	log := cfg.Logger.With("gateway", cfg.Identity.Name)
	// Every upstream connection of every engine (served, validation,
	// cancel) goes through the target policy, checked on the resolved
	// address at dial time.
	dial := targetDialer(cfg.Targets)
	pg, err := postgres.NewEngine(postgres.WithLogger(log), postgres.WithDialer(dial))
	if err != nil {
		return nil, err
	}
	mongo, err := mongodb.NewEngine(mongodb.WithLogger(log), mongodb.WithDialer(dial))
	if err != nil {
		return nil, err
	}
	if cfg.SpoolDir == "" {
		return nil, errors.New("gateway: no spool directory")
	}
	spool, err := sessionlog.OpenSpool(cfg.SpoolDir, append([]sessionlog.SpoolOption{sessionlog.WithLogger(log)}, cfg.SpoolOptions...)...)
	if err != nil {
		return nil, fmt.Errorf("opening the session log spool in %s: %w", cfg.SpoolDir, err)
	}
	engines := map[string]common.Engine{}
	for _, e := range []common.Engine{pg, mongo} {
		engines[e.Kind()] = e
	}
	return &Agent{cfg: cfg, log: log, engines: engines, spool: spool, cert: cfg.Identity.cert,
		sessions: map[string]*liveSession{}, terminated: map[string]time.Time{}}, nil
}

// Close releases the spool, writing what it still holds in memory.
func (a *Agent) Close() error { return a.spool.Close() }

// Connected reports whether the agent has a live connection to the server.
func (a *Agent) Connected() bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.mux != nil && !a.mux.IsClosed()
}

// Run keeps the connection to the server until ctx ends, reconnecting with
// exponential backoff (1 s doubling to 30 s, with jitter).
func (a *Agent) Run(ctx context.Context) error {
	go func() {
		// Delivers spooled events whenever connected; retries otherwise.
		if err := a.spool.Run(ctx, a); err != nil && ctx.Err() == nil {
			a.log.Error("session log delivery stopped", "err", err)
		}
	}()
	backoff := time.Second
	for {
		start := time.Now()
		err := a.connectOnce(ctx)
		if ctx.Err() != nil {
			a.endAll()
			return nil
		}
		if time.Since(start) > time.Minute {
			backoff = time.Second
		}
		wait := backoff/2 + rand.N(backoff/2+1)
		a.log.Warn("connection to the server lost; reconnecting", "err", err, "in", wait.Round(time.Millisecond))
		select {
		case <-ctx.Done():
			a.endAll()
			return nil
		case <-time.After(wait):
		}
		backoff = min(backoff*2, 30*time.Second)
	}
}

func (a *Agent) connectOnce(ctx context.Context) error {
	id := a.cfg.Identity
	hdr := http.Header{"X-Airlock-Version": {a.cfg.Version}}
	dctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	raw, err := tunnel.Dial(dctx, id.Domain, "/api/v1/relay/gateway?org="+url.QueryEscape(id.OrgID), hdr, a.cfg.ServerTLS)
	if err != nil {
		cancel()
		return err
	}
	tc := tls.Client(raw, &tls.Config{
		Certificates: []tls.Certificate{a.currentCert()},
		RootCAs:      id.caPool,
		ServerName:   pki.RelayServerName,
		MinVersion:   tls.VersionTLS13,
	})
	err = tc.HandshakeContext(dctx)
	cancel()
	if err != nil {
		raw.Close()
		return fmt.Errorf("mutual TLS with the relay failed (was this gateway deleted or re-enrolled elsewhere?): %w", err)
	}
	mux, err := tunnel.MuxServer(tc)
	if err != nil {
		tc.Close()
		return err
	}
	defer mux.Close()
	a.setMux(mux)
	defer a.setMux(nil)
	a.log.Info("connected to the server", "domain", id.Domain)
	go a.renewLoop(ctx, mux)
	go func() {
		select {
		case <-ctx.Done():
			// Shutting down: the sessions' clients are told so while
			// the connection that reaches them is still up.
			a.endAll()
			mux.Close()
		case <-mux.CloseChan():
		}
	}()
	for {
		st, err := mux.AcceptStream()
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			return err
		}
		go a.handle(ctx, st)
	}
}

func (a *Agent) setMux(m *tunnel.Mux) {
	a.mu.Lock()
	a.mux = m
	a.mu.Unlock()
}

func (a *Agent) handle(ctx context.Context, st net.Conn) {
	defer st.Close()
	st.SetReadDeadline(time.Now().Add(15 * time.Second))
	var h tunnel.Header
	if err := tunnel.ReadFrame(st, &h); err != nil {
		a.log.Warn("reading a stream header failed", "err", err)
		return
	}
	st.SetReadDeadline(time.Time{})
	switch h.Type {
	case tunnel.TypeValidate:
		res := a.validate(ctx, h.Target)
		tunnel.WriteFrame(st, res)
	case tunnel.TypeRotate:
		res := a.rotate(ctx, h.Target, h.Rotation)
		tunnel.WriteFrame(st, res)
	case tunnel.TypeCheckRoles:
		tunnel.WriteFrame(st, a.checkRoles(ctx, h.Target, h.Roles))
	case tunnel.TypeTerminate:
		if h.SessionID == "" {
			tunnel.WriteFrame(st, tunnel.Result{Code: tunnel.CodeInvalid, Message: "terminate: no session id"})
			return
		}
		a.terminate(context.WithoutCancel(ctx), h.SessionID, h.Reason, h.Message)
		tunnel.WriteFrame(st, tunnel.Result{OK: true})
	case tunnel.TypeUpdate:
		a.update(h)
		tunnel.WriteFrame(st, tunnel.Result{OK: true})
	case tunnel.TypeData:
		if err := a.serveData(ctx, st, h); err != nil && !errors.Is(err, net.ErrClosed) {
			a.log.Info("connection ended", "session", h.SessionID, "client", h.ClientAddr, "err", err)
		}
	default:
		a.log.Warn("unknown stream type", "type", h.Type)
	}
}

func (a *Agent) validate(ctx context.Context, t *tunnel.Target) tunnel.Result {
	if t == nil {
		return tunnel.Result{Code: tunnel.CodeInvalid, Message: "no target"}
	}
	e, ok := a.engines[t.Kind]
	if !ok {
		return tunnel.Result{Code: tunnel.CodeInvalid, Message: fmt.Sprintf("this gateway does not support %q resources yet", t.Kind)}
	}
	if err := a.checkTarget(ctx, *t); err != nil {
		return tunnel.Result{Code: tunnel.CodeUnreachable, Message: err.Error()}
	}
	vctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	return e.Validate(vctx, *t)
}

// rotate changes a database user's password as the resource's rotation
// account (tunnel.TypeRotate), through the target policy like every dial.
func (a *Agent) rotate(ctx context.Context, admin *tunnel.Target, rot *tunnel.Rotation) tunnel.Result {
	if admin == nil || rot == nil {
		return tunnel.Result{Code: tunnel.CodeInvalid, Message: "rotate: no target or no rotation"}
	}
	e, ok := a.engines[admin.Kind]
	if !ok {
		return tunnel.Result{Code: tunnel.CodeInvalid, Message: fmt.Sprintf("this gateway does not support %q resources", admin.Kind)}
	}
	if err := a.checkTarget(ctx, *admin); err != nil {
		return tunnel.Result{Code: tunnel.CodeUnreachable, Message: err.Error()}
	}
	rctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	res := e.Rotate(rctx, *admin, *rot)
	a.log.Info("rotated a password", "resource", admin.ResourceID, "username", rot.Username, "ok", res.OK, "code", res.Code)
	return res
}

// roleChecker is an engine that checks the users a rotation would change
// (the PostgreSQL engine).
type roleChecker interface {
	CheckRoles(ctx context.Context, admin tunnel.Target, roles []string) tunnel.Result
}

// checkRoles checks, changing nothing, that roles exist and that admin's
// user may change their passwords (tunnel.TypeCheckRoles), through the
// target policy like every dial.
func (a *Agent) checkRoles(ctx context.Context, admin *tunnel.Target, roles []string) tunnel.Result {
	if admin == nil {
		return tunnel.Result{Code: tunnel.CodeInvalid, Message: "check-roles: no target"}
	}
	rc, ok := a.engines[admin.Kind].(roleChecker)
	if !ok {
		return tunnel.Result{Code: tunnel.CodeInvalid, Message: fmt.Sprintf("this gateway cannot check the users of %q resources", admin.Kind)}
	}
	if err := a.checkTarget(ctx, *admin); err != nil {
		return tunnel.Result{Code: tunnel.CodeUnreachable, Message: err.Error()}
	}
	cctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	return rc.CheckRoles(cctx, *admin, roles)
}

// serveData terminates the CLI's mTLS and serves the database protocol.
func (a *Agent) serveData(ctx context.Context, st net.Conn, h tunnel.Header) error {
	if h.Target == nil || h.SessionID == "" {
		return errors.New("data stream without a session")
	}
	if a.isTerminated(h.SessionID) {
		return fmt.Errorf("session %s was terminated", h.SessionID)
	}
	engine, ok := a.engines[h.Target.Kind]
	if !ok {
		return fmt.Errorf("unsupported resource kind %q", h.Target.Kind)
	}
	if err := a.checkTarget(ctx, *h.Target); err != nil {
		return err
	}
	id := a.cfg.Identity
	tc := tls.Server(st, &tls.Config{
		Certificates: []tls.Certificate{a.currentCert()},
		ClientAuth:   tls.RequireAndVerifyClientCert,
		ClientCAs:    id.caPool,
		MinVersion:   tls.VersionTLS13,
		VerifyConnection: func(cs tls.ConnectionState) error {
			leaf := cs.PeerCertificates[0]
			if got := pki.IDFromCert(leaf, "session"); got != h.SessionID {
				return fmt.Errorf("the client certificate is for session %q, not %q", got, h.SessionID)
			}
			return nil
		},
	})
	var err error
	tunnel.OnOwnStack(func() {
		hctx, cancel := context.WithTimeout(ctx, 15*time.Second)
		err = tc.HandshakeContext(hctx)
		cancel()
	})
	if err != nil {
		return fmt.Errorf("client TLS refused: %w", err)
	}
	defer tc.Close()
	expires := time.Unix(h.ExpiresAt, 0)
	sess := a.session(h.SessionID, expires, compilePatterns(h.MaskPatterns), h.RedactValues)
	if sess == nil {
		return fmt.Errorf("session %s has ended", h.SessionID)
	}
	sess.SetStatementLimit(h.MaxStatementBytes, h.OversizeStatements)
	// The engine's context outlives the gateway's own: at shutdown the
	// session is ended (and its clients told why) before the connection
	// to the server closes.
	return engine.HandleConnection(context.WithoutCancel(ctx), &clientConn{Conn: tc, addr: h.ClientAddr}, sess.Session, *h.Target)
}

// clientConn is a client's connection as the engines see it: its remote
// address, which their log lines carry, is the client's as the server saw
// it (Header.ClientAddr), not the server's, which relays the stream.
type clientConn struct {
	*tls.Conn
	addr string
}

func (c *clientConn) RemoteAddr() net.Addr {
	if c.addr == "" {
		return c.Conn.RemoteAddr()
	}
	return clientAddr(c.addr)
}

// clientAddr is a client's address as the server reported it.
type clientAddr string

func (a clientAddr) Network() string { return "tcp" }
func (a clientAddr) String() string  { return string(a) }

// compilePatterns compiles the project's mask patterns, which the server
// has validated; one that does not compile is left out.
func compilePatterns(masks []string) []*regexp.Regexp {
	var patterns []*regexp.Regexp
	for _, m := range masks {
		if re, err := regexp.Compile(m); err == nil {
			patterns = append(patterns, re)
		}
	}
	return patterns
}

// session returns the live session, creating it with a timer that ends it
// at expiry; nil if it has expired or was terminated. Every data stream
// carries the project's current log settings: they apply to a live session
// from its next statement on.
func (a *Agent) session(id string, expires time.Time, patterns []*regexp.Regexp, redact bool) *liveSession {
	a.mu.Lock()
	defer a.mu.Unlock()
	if _, dead := a.terminated[id]; dead {
		return nil
	}
	if s := a.sessions[id]; s != nil {
		s.SetMaskPatterns(patterns)
		s.SetRedactValues(redact)
		return s
	}
	left := expires.Sub(a.cfg.Now())
	if left <= 0 {
		return nil
	}
	s := &liveSession{expires: expires, Session: common.NewSession(id, common.WithRecorder(a.spool),
		common.WithMaskPatterns(patterns), common.WithRedactValues(redact))}
	s.timer = time.AfterFunc(left, func() {
		a.log.Info("session expired; ending it", "session", id)
		a.terminate(context.Background(), id, tunnel.EndExpired, "")
	})
	a.sessions[id] = s
	return s
}

// update applies new log settings to a live session, from each of its
// connections' next statement on; a session not live here is left alone.
func (a *Agent) update(h tunnel.Header) {
	a.mu.Lock()
	s := a.sessions[h.SessionID]
	a.mu.Unlock()
	if s == nil {
		return
	}
	s.SetMaskPatterns(compilePatterns(h.MaskPatterns))
	s.SetRedactValues(h.RedactValues)
	s.SetStatementLimit(h.MaxStatementBytes, h.OversizeStatements)
	a.log.Info("updated the log settings of a live session", "session", h.SessionID)
}

func (a *Agent) isTerminated(id string) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	_, ok := a.terminated[id]
	return ok
}

// endMessage is what a session's clients are told when the server gives
// no words of its own for reason.
func endMessage(reason string, expires time.Time) string {
	switch reason {
	case tunnel.EndExpired:
		if expires.IsZero() {
			return "session expired"
		}
		return "session expired at " + expires.UTC().Format(time.RFC3339)
	case tunnel.EndTerminated:
		return "session terminated by an administrator"
	case tunnel.EndByUser:
		return "session ended by its user"
	case tunnel.EndRevoked:
		return "session revoked: its access was withdrawn"
	case tunnel.EndClientLost:
		return "session ended: its client was gone for too long"
	case tunnel.EndGatewayLost:
		return "session ended: its gateway was gone for too long"
	case tunnel.EndGatewayStop:
		return "the gateway is shutting down"
	}
	return "session ended"
}

// terminate ends a session for reason, telling its clients message (or,
// when empty, words derived from the reason), refuses its new connections,
// and returns once every connection of it has ended (or endTimeout has
// passed). Ending a session that has ended already, or that is not live
// here, changes nothing but remembers it as ended.
func (a *Agent) terminate(ctx context.Context, id, reason, message string) {
	if reason == "" {
		reason = tunnel.EndTerminated
	}
	a.mu.Lock()
	// The session stays in the registry until it has ended, so that a
	// second ending (the server's expiry racing the gateway's own timer)
	// also waits for its connections to end before it is answered.
	s := a.sessions[id]
	now := a.cfg.Now()
	// Remember it past any session's end (projects allow at most 30 days);
	// after that its certificate has expired and TLS refuses it anyway.
	a.terminated[id] = now.Add(31 * 24 * time.Hour)
	for k, forget := range a.terminated {
		if now.After(forget) {
			delete(a.terminated, k)
		}
	}
	a.mu.Unlock()
	if s == nil {
		return
	}
	s.timer.Stop()
	if message == "" {
		var expires time.Time
		if reason == tunnel.EndExpired {
			expires = s.expires
		}
		message = endMessage(reason, expires)
	}
	ctx, cancel := context.WithTimeout(ctx, endTimeout)
	defer cancel()
	start := time.Now()
	first := !s.Ended()
	s.End(ctx, reason, message)
	a.mu.Lock()
	if a.sessions[id] == s {
		delete(a.sessions, id)
	}
	a.mu.Unlock()
	if first {
		a.log.Info("session ended", "session", id, "reason", reason, "took", time.Since(start).Round(time.Millisecond))
	}
}

// endAll ends every live session, as the gateway shuts down.
func (a *Agent) endAll() {
	a.mu.Lock()
	ids := make([]string, 0, len(a.sessions))
	for id := range a.sessions {
		ids = append(ids, id)
	}
	a.mu.Unlock()
	var wg sync.WaitGroup
	for _, id := range ids {
		wg.Go(func() { a.terminate(context.Background(), id, tunnel.EndGatewayStop, "") })
	}
	wg.Wait()
}
