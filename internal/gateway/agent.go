// Package gateway is the Airlock gateway: the process that runs in the
// database's network. It enrolls once (identity.go), then keeps one outbound,
// multiplexed, mutually authenticated connection to the server (agent.go),
// reconnecting with backoff. Over it the server opens streams: validation
// requests, terminations, and data streams, each of which carries a CLI's
// end-to-end mTLS connection that the gateway terminates and hands to the
// protocol engine (proxy/postgres), which injects the account's credentials.
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
	"github.com/airlockpam/airlock/internal/proxy/mongodb"
	"github.com/airlockpam/airlock/internal/proxy/postgres"
	"github.com/airlockpam/airlock/internal/sessionlog"
	"github.com/airlockpam/airlock/internal/tunnel"
)

// Config configures an Agent.
type Config struct {
	Identity *Identity
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
}

// Agent is a running gateway.
type Agent struct {
	cfg   Config
	log   *slog.Logger
	pg    *postgres.Engine
	mongo *mongodb.Engine
	spool *sessionlog.Spool

	mu         sync.Mutex
	sessions   map[string]*liveSession
	terminated map[string]time.Time // session id -> when to forget it
	mux        *tunnel.Mux          // the live connection, nil when down
}

// liveSession is a session's state on this gateway: one per protocol
// engine (a session uses one, by its resource's kind), and its expiry timer.
type liveSession struct {
	pg    *postgres.Session
	mongo *mongodb.Session
	timer *time.Timer
}

func (s *liveSession) close() {
	s.timer.Stop()
	s.pg.Close()
	s.mongo.Close()
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
	pg, err := postgres.NewEngine(postgres.WithLogger(log))
	if err != nil {
		return nil, err
	}
	mongo, err := mongodb.NewEngine(mongodb.WithLogger(log))
	if err != nil {
		return nil, err
	}
	if cfg.SpoolDir == "" {
		return nil, errors.New("gateway: no spool directory")
	}
	spool, err := sessionlog.OpenSpool(cfg.SpoolDir, sessionlog.WithLogger(log))
	if err != nil {
		return nil, fmt.Errorf("opening the session log spool in %s: %w", cfg.SpoolDir, err)
	}
	return &Agent{cfg: cfg, log: log, pg: pg, mongo: mongo, spool: spool, sessions: map[string]*liveSession{}, terminated: map[string]time.Time{}}, nil
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
			a.closeAll()
			return nil
		}
		if time.Since(start) > time.Minute {
			backoff = time.Second
		}
		wait := backoff/2 + rand.N(backoff/2+1)
		a.log.Warn("connection to the server lost; reconnecting", "err", err, "in", wait.Round(time.Millisecond))
		select {
		case <-ctx.Done():
			a.closeAll()
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
		Certificates: []tls.Certificate{id.cert},
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
	go func() {
		select {
		case <-ctx.Done():
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
	case tunnel.TypeTerminate:
		a.terminate(h.SessionID)
		tunnel.WriteFrame(st, tunnel.Result{OK: true})
	case tunnel.TypeData:
		if err := a.serveData(ctx, st, h); err != nil && !errors.Is(err, net.ErrClosed) {
			a.log.Info("connection ended", "session", h.SessionID, "err", err)
		}
	default:
		a.log.Warn("unknown stream type", "type", h.Type)
	}
}

func (a *Agent) validate(ctx context.Context, t *tunnel.Target) tunnel.Result {
	if t == nil {
		return tunnel.Result{Code: tunnel.CodeInvalid, Message: "no target"}
	}
	switch t.Kind {
	case tunnel.KindPostgres:
		vctx, cancel := context.WithTimeout(ctx, 20*time.Second)
		defer cancel()
		return postgres.Validate(vctx, postgres.ConfigFromTarget(*t))
	case tunnel.KindMongoDB:
		vctx, cancel := context.WithTimeout(ctx, 20*time.Second)
		defer cancel()
		return mongodb.Validate(vctx, mongodb.ConfigFromTarget(*t))
	default:
		return tunnel.Result{Code: tunnel.CodeInvalid, Message: fmt.Sprintf("this gateway does not support %q resources yet", t.Kind)}
	}
}

// serveData terminates the CLI's mTLS and serves the database protocol.
func (a *Agent) serveData(ctx context.Context, st net.Conn, h tunnel.Header) error {
	if h.Target == nil || h.SessionID == "" {
		return errors.New("data stream without a session")
	}
	if a.isTerminated(h.SessionID) {
		return fmt.Errorf("session %s was terminated", h.SessionID)
	}
	id := a.cfg.Identity
	tc := tls.Server(st, &tls.Config{
		Certificates: []tls.Certificate{id.cert},
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
	sess := a.session(h.SessionID, expires, h.MaskPatterns, h.RedactValues)
	if sess == nil {
		return fmt.Errorf("session %s has ended", h.SessionID)
	}
	switch h.Target.Kind {
	case tunnel.KindPostgres:
		return a.pg.Serve(ctx, tc, sess.pg, postgres.ConfigFromTarget(*h.Target))
	case tunnel.KindMongoDB:
		return a.mongo.Serve(ctx, tc, sess.mongo, mongodb.ConfigFromTarget(*h.Target))
	default:
		return fmt.Errorf("unsupported resource kind %q", h.Target.Kind)
	}
}

// session returns the live session, creating it with a timer that closes
// every connection at expiry; nil if it has expired or was terminated.
func (a *Agent) session(id string, expires time.Time, masks []string, redact bool) *liveSession {
	a.mu.Lock()
	defer a.mu.Unlock()
	if _, dead := a.terminated[id]; dead {
		return nil
	}
	if s := a.sessions[id]; s != nil {
		return s
	}
	left := expires.Sub(a.cfg.Now())
	if left <= 0 {
		return nil
	}
	var patterns []*regexp.Regexp
	for _, m := range masks {
		if re, err := regexp.Compile(m); err == nil { // the server validated them
			patterns = append(patterns, re)
		}
	}
	s := &liveSession{
		pg:    postgres.NewSession(id, postgres.WithRecorder(a.spool), postgres.WithMaskPatterns(patterns)),
		mongo: mongodb.NewSession(id, mongodb.WithRecorder(a.spool), mongodb.WithMaskPatterns(patterns), mongodb.WithRedactValues(redact)),
	}
	s.timer = time.AfterFunc(left, func() {
		a.log.Info("session expired; closing its connections", "session", id)
		a.terminate(id)
	})
	a.sessions[id] = s
	return s
}

func (a *Agent) isTerminated(id string) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	_, ok := a.terminated[id]
	return ok
}

// terminate closes every connection of a session and refuses new ones.
func (a *Agent) terminate(id string) {
	a.mu.Lock()
	s := a.sessions[id]
	delete(a.sessions, id)
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
	if s != nil {
		s.close()
	}
}

func (a *Agent) closeAll() {
	a.mu.Lock()
	ss := a.sessions
	a.sessions = map[string]*liveSession{}
	a.mu.Unlock()
	for _, s := range ss {
		s.close()
	}
}
