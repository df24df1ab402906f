package relay

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/airlockpam/airlock/internal/api"
	"github.com/airlockpam/airlock/internal/errs"
	"github.com/airlockpam/airlock/internal/tunnel"
)

// ClientSession is what the relay needs to carry a session's connections.
type ClientSession struct {
	ID        string
	GatewayID string
	ExpiresAt time.Time
	Target    tunnel.Target
	// MaskPatterns are the project's extra session-log mask patterns.
	MaskPatterns []string
	// RedactValues: the project redacts written document values in logs.
	RedactValues bool
	// MaxStatementBytes is the project's limit on a recorded statement.
	MaxStatementBytes int64
	// OversizeStatements is what happens to a longer statement
	// (tunnel.OversizeRefuse or tunnel.OversizeRecordEnds).
	OversizeStatements string
}

// SessionAuthorizer is the session service as the relay sees it.
type SessionAuthorizer interface {
	// AuthorizeRelay checks that the caller owns the session and that it is
	// active, and returns it with its target.
	AuthorizeRelay(ctx context.Context, sessionID string) (*ClientSession, error)
	// AuthorizeConnection checks, from the store and without the caller's
	// token, that the session may open a new connection now, and returns
	// it with its current target and log settings. A session that may not
	// is ended (and its connections closed) before the refusal returns.
	AuthorizeConnection(ctx context.Context, sessionID string) (*ClientSession, error)
	// MarkStarted records the session's first connection.
	MarkStarted(ctx context.Context, sessionID string)
	// ClientSeen records that the session's CLI relay connection is up.
	ClientSeen(ctx context.Context, sessionID string)
	// EnforceAccess ends every active session whose access no longer holds.
	EnforceAccess(ctx context.Context) int
	// PresenceInterval is how often a live connection is recorded.
	PresenceInterval() time.Duration
}

// Authenticator resolves a bearer token.
type Authenticator interface {
	Authenticate(ctx context.Context, token string) (*api.Principal, error)
}

// SetAuthenticator wires the identity service in.
func (s *Service) SetAuthenticator(a Authenticator) { s.authn = a }

func writeProblem(w http.ResponseWriter, status int, msg string) {
	w.Header().Set("Content-Type", "application/problem+json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(map[string]any{"title": http.StatusText(status), "status": status, "detail": msg})
}

// ExpiryBackstop is how long after a session's end the relay closes its
// CLI connection by itself, if the session's end has not closed it.
const ExpiryBackstop = 5 * time.Second

// serveClient carries the connections of one CLI session: each multiplexed
// stream the CLI opens is joined to a new data stream to the gateway.
func (s *Service) serveClient(w http.ResponseWriter, r *http.Request) {
	// The server's middleware has read the client's address (from
	// X-Forwarded-For behind a trusted proxy).
	addr := api.ClientAddr(r.Context())
	if addr == "" {
		addr = clientHost(r)
	}
	ctx := api.WithClientAddr(r.Context(), addr)
	token, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	if !ok {
		writeProblem(w, http.StatusUnauthorized, "this endpoint needs a token: run `airlock login`")
		return
	}
	p, err := s.authn.Authenticate(ctx, strings.TrimSpace(token))
	if err != nil {
		writeProblem(w, api.Status(errs.CodeOf(err)), publicMessage(err))
		return
	}
	ctx = api.WithPrincipal(ctx, p)
	cs, err := s.sessions.AuthorizeRelay(ctx, r.PathValue("id"))
	if err != nil {
		writeProblem(w, api.Status(errs.CodeOf(err)), publicMessage(err))
		return
	}
	if !s.Connected(cs.GatewayID) {
		writeProblem(w, http.StatusServiceUnavailable, "the resource's gateway is offline: start it and check `airlock gateways list`")
		return
	}
	conn, err := tunnel.Accept(w, r)
	if err != nil {
		writeProblem(w, http.StatusBadRequest, err.Error())
		return
	}
	mux, err := tunnel.MuxServer(conn)
	if err != nil {
		conn.Close()
		return
	}
	s.addClient(cs.ID, mux)
	defer s.removeClient(cs.ID, mux)
	// A backstop: at expiry the gateway ends the session (cancelling what
	// runs and telling each client why) and the expiry job closes this
	// connection; closing it first would cut the clients before that.
	expiry := time.AfterFunc(time.Until(cs.ExpiresAt)+ExpiryBackstop, func() { mux.Close() })
	defer expiry.Stop()
	go s.recordPresence(context.WithoutCancel(ctx), cs.ID, mux)

	var started sync.Once
	for {
		st, err := mux.AcceptStream()
		if err != nil {
			return
		}
		go func() {
			// Each connection is authorized when it is opened, from the
			// store: the owner may have been removed, the login revoked or
			// the account deleted since the last one; and a changed
			// password is used at once.
			now, err := s.sessions.AuthorizeConnection(context.WithoutCancel(ctx), cs.ID)
			if err != nil {
				slog.Info("a session connection was refused", "session", cs.ID, "client", addr, "why", publicMessage(err))
				st.Close()
				return
			}
			header := tunnel.Header{SessionID: now.ID, Target: &now.Target, ExpiresAt: now.ExpiresAt.Unix(), ClientAddr: addr,
				MaskPatterns: now.MaskPatterns, RedactValues: now.RedactValues,
				MaxStatementBytes: now.MaxStatementBytes, OversizeStatements: now.OversizeStatements}
			gw, err := s.OpenData(now.GatewayID, header)
			if err != nil {
				slog.Warn("opening a gateway stream failed", "session", cs.ID, "client", addr, "err", err)
				st.Close()
				return
			}
			started.Do(func() { s.sessions.MarkStarted(context.WithoutCancel(ctx), cs.ID) })
			tunnel.Splice(st, gw)
		}()
	}
}

// recordPresence records the CLI's presence on the session while its relay
// connection is up: at connect, every presence interval while the CLI
// answers pings, and at disconnect. A CLI that stops answering is cut off,
// so that a session whose CLI is gone ends as client_lost.
func (s *Service) recordPresence(ctx context.Context, sessionID string, mux *tunnel.Mux) {
	s.sessions.ClientSeen(ctx, sessionID)
	defer s.sessions.ClientSeen(ctx, sessionID)
	t := time.NewTicker(s.sessions.PresenceInterval())
	defer t.Stop()
	for {
		select {
		case <-mux.CloseChan():
			return
		case <-t.C:
			if _, err := mux.Ping(); err != nil {
				mux.Close()
				return
			}
			s.sessions.ClientSeen(ctx, sessionID)
		}
	}
}

func publicMessage(err error) string {
	var e *errs.Error
	if errors.As(err, &e) && e.Code != errs.Internal {
		return e.Msg
	}
	return "internal error; the server log has the details"
}

func (s *Service) addClient(sessionID string, m *tunnel.Mux) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.clients[sessionID] == nil {
		s.clients[sessionID] = map[*tunnel.Mux]bool{}
	}
	s.clients[sessionID][m] = true
}

func (s *Service) removeClient(sessionID string, m *tunnel.Mux) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.clients[sessionID], m)
	if len(s.clients[sessionID]) == 0 {
		delete(s.clients, sessionID)
	}
	m.Close()
}

// CloseSession ends a session's connections: first the gateway cancels what
// runs upstream and tells each client why (reason, one of tunnel.End*, and
// message, in words for the client), then the session's CLI connections on
// this server are closed. The order matters: a CLI connection cut first would
// leave the database finishing (and committing) a statement nobody may run
// any more.
func (s *Service) CloseSession(ctx context.Context, sessionID, gatewayID, reason, message string) {
	if err := s.TerminateOnGateway(ctx, gatewayID, sessionID, reason, message); err != nil && !errs.Is(err, errs.Unavailable) {
		slog.Warn("telling the gateway to close a session failed", "session", sessionID, "err", err)
	}
	s.mu.Lock()
	var muxes []*tunnel.Mux
	for m := range s.clients[sessionID] {
		muxes = append(muxes, m)
	}
	s.mu.Unlock()
	for _, m := range muxes {
		m.Close()
	}
}

// DialSession opens one connection of a session whose client is this
// server (the web console, access method web), as a CLI's relay stream
// would: the connection is authorized from the store (AuthorizeConnection),
// a data stream to the session's gateway is opened with the same header, and
// the session is marked started. The caller checks the session's owner
// first, and speaks TLS with the session's client certificate over the
// returned stream, as the CLI does; clientAddr is the browser's address.
func (s *Service) DialSession(ctx context.Context, sessionID, clientAddr string) (net.Conn, error) {
	now, err := s.sessions.AuthorizeConnection(ctx, sessionID)
	if err != nil {
		return nil, err
	}
	if !s.Connected(now.GatewayID) {
		return nil, errs.E("relay.(*Service).DialSession", errs.Unavailable, "the resource's gateway is offline: start it and check `airlock gateways list`")
	}
	header := tunnel.Header{SessionID: now.ID, Target: &now.Target, ExpiresAt: now.ExpiresAt.Unix(), ClientAddr: clientAddr,
		MaskPatterns: now.MaskPatterns, RedactValues: now.RedactValues,
		MaxStatementBytes: now.MaxStatementBytes, OversizeStatements: now.OversizeStatements}
	gw, err := s.OpenData(now.GatewayID, header)
	if err != nil {
		return nil, err
	}
	s.sessions.MarkStarted(context.WithoutCancel(ctx), sessionID)
	return gw, nil
}
