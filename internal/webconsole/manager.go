package webconsole

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"log/slog"
	"net"
	"sync"
	"time"

	"github.com/airlockpam/airlock/internal/api"
	"github.com/airlockpam/airlock/internal/errs"
	"github.com/airlockpam/airlock/internal/pki"
	"github.com/airlockpam/airlock/internal/session"
)

// Sessions is the session service as the console uses it.
type Sessions interface {
	CreateWeb(ctx context.Context, projectID, resource, account, duration, csrPEM string, opts ...session.CreateOption) (*session.Created, error)
	Get(ctx context.Context, id string) (*session.Session, error)
	EndWeb(ctx context.Context, id, why string) error
	// ClientSeen records that the session's client (this console) is up;
	// a web session not seen for a while (the server that held its
	// console stopped) ends as client_lost.
	ClientSeen(ctx context.Context, id string)
	// PresenceInterval is how often ClientSeen is called.
	PresenceInterval() time.Duration
}

// Dialer opens a connection of a session through the relay
// (relay.(*Service).DialSession).
type Dialer func(ctx context.Context, sessionID, clientAddr string) (net.Conn, error)

// Config configures a Manager.
type Config struct {
	Sessions Sessions
	Dial     Dialer
	// Now is the clock; default time.Now.
	Now func() time.Time
	// IdleTimeout ends a console unused for this long; default 10 minutes.
	IdleTimeout time.Duration
	// StatementTimeout is the connection's statement_timeout when Open is
	// given none (the project's setting); default 30 s.
	StatementTimeout time.Duration
	// Duration is how long a console's session lasts at most; default 1
	// hour, capped by the project's maximum session.
	Duration time.Duration
	// CheckEvery is how often each console checks that its session is
	// still active; default 1 s.
	CheckEvery time.Duration
}

// CheckAndSetDefaults validates cfg and fills in defaults.
func (c *Config) CheckAndSetDefaults() error {
	if c.Sessions == nil || c.Dial == nil {
		return errs.E("webconsole.Config", errs.Internal, "the web console needs the session service and the relay")
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	if c.IdleTimeout <= 0 {
		c.IdleTimeout = DefaultIdleTimeout
	}
	if c.StatementTimeout <= 0 {
		c.StatementTimeout = DefaultStatementTimeout
	}
	if c.Duration <= 0 {
		c.Duration = DefaultDuration
	}
	if c.CheckEvery <= 0 {
		c.CheckEvery = time.Second
	}
	return nil
}

// Manager holds the live consoles of this server.
type Manager struct {
	cfg Config

	mu       sync.Mutex
	consoles map[string]*Console
}

// New returns a Manager.
func New(cfg Config) (*Manager, error) {
	if err := cfg.CheckAndSetDefaults(); err != nil {
		return nil, err
	}
	return &Manager{cfg: cfg, consoles: map[string]*Console{}}, nil
}

// IdleTimeout is how long an unused console lives.
func (m *Manager) IdleTimeout() time.Duration { return m.cfg.IdleTimeout }

// Open starts a web session for the caller (in ctx) on a PostgreSQL
// account and connects to it through the relay. webSession names the
// browser login the console belongs to. maxSession is the project's
// maximum session (the console's session lasts the shorter of it and
// Config.Duration). statementTimeout is the project's console statement
// timeout (zero: Config.StatementTimeout).
func (m *Manager) Open(ctx context.Context, projectID, resource, account, webSession string, maxSession, statementTimeout time.Duration,
	opts ...session.CreateOption) (*Console, error) {
	const op = "webconsole.(*Manager).Open"
	p, err := api.MustPrincipal(ctx)
	if err != nil {
		return nil, err
	}
	key, csr, err := pki.NewKeyAndCSR("airlock web console")
	if err != nil {
		return nil, errs.Wrap(op, errs.Internal, "making the session key failed", err)
	}
	d := m.cfg.Duration
	if maxSession > 0 && maxSession < d {
		d = maxSession
	}
	cs, err := m.cfg.Sessions.CreateWeb(ctx, projectID, resource, account, d.String(), string(csr), opts...)
	if err != nil {
		return nil, err
	}
	sid, addr := cs.Session.ID, api.ClientAddr(ctx)
	dial := func(ctx context.Context) (net.Conn, error) { return m.cfg.Dial(ctx, sid, addr) }
	cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
	defer cancel()
	if statementTimeout <= 0 {
		statementTimeout = m.cfg.StatementTimeout
	}
	conn, err := connect(cctx, dial, key, cs.ClientCertificate, cs.CACertificate, cs.GatewayServerName, cs.Username, cs.Database, statementTimeout)
	if err != nil {
		m.endSession(p, sid, "the web console could not connect")
		var e *errs.Error
		if errors.As(err, &e) {
			return nil, e
		}
		return nil, errs.Wrap(op, errs.Unavailable, "connecting through the gateway failed: "+err.Error(), err)
	}
	c := &Console{
		ID: randomID(), SessionID: sid, ProjectID: cs.Session.ProjectID, ResourceID: cs.Session.ResourceID,
		ResourceName: cs.Session.ResourceName, AccountName: cs.Session.AccountName, Username: cs.Username, Database: cs.Database,
		ExpiresAt: cs.Session.ExpiresAt, StatementTimeout: statementTimeout, owner: p, web: webSession, conn: conn, opened: m.cfg.Now(), lastUsed: m.cfg.Now(),
		done: make(chan struct{}),
	}
	m.mu.Lock()
	m.consoles[c.ID] = c
	m.mu.Unlock()
	go m.watch(c)
	slog.Info("web console opened", "session", sid, "user", p.Name)
	return c, nil
}

// Get returns a live console of the principal's browser login.
func (m *Manager) Get(id string, p *api.Principal, webSession string) (*Console, error) {
	m.mu.Lock()
	c := m.consoles[id]
	m.mu.Unlock()
	if c == nil || !c.Owns(p, webSession) {
		return nil, errs.E("webconsole.(*Manager).Get", errs.NotFound, "this console has ended: open Web Access again")
	}
	return c, nil
}

// End ends a console and its session (reason ended_by_user, with why in
// the session's end message). Ending an ended console does nothing.
func (m *Manager) End(c *Console, why string) {
	if !c.markEnded(why) {
		return
	}
	// The session ends first: its gateway cancels what runs and closes
	// the connection, as for a CLI's Ctrl+C; then the console closes.
	m.endSession(c.owner, c.SessionID, why)
	m.release(c)
}

// EndAll ends every console of a browser login (it logged out).
func (m *Manager) EndAll(webSession, why string) {
	if m == nil {
		return
	}
	m.mu.Lock()
	var list []*Console
	for _, c := range m.consoles {
		if c.web == webSession {
			list = append(list, c)
		}
	}
	m.mu.Unlock()
	for _, c := range list {
		m.End(c, why)
	}
}

// close closes a console whose session has ended elsewhere.
func (m *Manager) close(c *Console, why string) {
	if c.markEnded(why) {
		m.release(c)
	}
}

// markEnded records that the console ends, and why; it reports whether
// this call is the one that ends it.
func (c *Console) markEnded(why string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.ended {
		return false
	}
	c.ended, c.endWhy = true, why
	return true
}

// release forgets an ended console, tells its page (Done) and closes its
// connection.
func (m *Manager) release(c *Console) {
	close(c.done)
	m.mu.Lock()
	delete(m.consoles, c.ID)
	m.mu.Unlock()
	if c.conn != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_ = c.conn.Close(ctx)
	}
}

func (m *Manager) endSession(p *api.Principal, sessionID, why string) {
	ctx, cancel := context.WithTimeout(api.WithPrincipal(context.Background(), p), 10*time.Second)
	defer cancel()
	if err := m.cfg.Sessions.EndWeb(ctx, sessionID, why); err != nil {
		slog.Warn("ending a web console's session failed", "session", sessionID, "err", err)
	}
}

// watch ends a console that is idle too long, and closes one whose
// session ended elsewhere (expiry, terminate, logout, revocation).
func (m *Manager) watch(c *Console) {
	t := time.NewTicker(m.cfg.CheckEvery)
	defer t.Stop()
	var seen time.Time
	for {
		select {
		case <-c.done:
			return
		case <-t.C:
		}
		c.mu.Lock()
		idle := m.cfg.Now().Sub(c.lastUsed)
		orphan := !c.attached && m.cfg.Now().Sub(c.opened) >= AttachTimeout
		c.mu.Unlock()
		if orphan {
			m.End(c, "the web console's page never connected")
			return
		}
		if idle >= m.cfg.IdleTimeout && c.run.TryLock() {
			c.run.Unlock()
			m.End(c, "the web console was idle for "+m.cfg.IdleTimeout.String())
			return
		}
		ctx, cancel := context.WithTimeout(api.WithPrincipal(context.Background(), c.owner), 5*time.Second)
		if time.Since(seen) >= m.cfg.Sessions.PresenceInterval() {
			m.cfg.Sessions.ClientSeen(ctx, c.SessionID)
			seen = time.Now()
		}
		s, err := m.cfg.Sessions.Get(ctx, c.SessionID)
		cancel()
		switch {
		case err != nil && (errs.Is(err, errs.NotFound) || errs.Is(err, errs.Unauthenticated) || errs.Is(err, errs.Forbidden)):
			m.close(c, "the session is no longer available to you")
			return
		case err != nil:
			continue // the store is busy: try again
		case s.Status != session.StatusActive:
			why := s.EndMessage
			if why == "" {
				why = session.EndMessage(s.EndReason, s.ExpiresAt)
			}
			m.close(c, why)
			return
		}
	}
}

func randomID() string {
	b := make([]byte, 24)
	_, _ = rand.Read(b)
	return base64.RawURLEncoding.EncodeToString(b)
}
