package relay

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/danielgtaylor/huma/v2"

	"github.com/airlockpam/airlock/internal/api"
	"github.com/airlockpam/airlock/internal/errs"
	"github.com/airlockpam/airlock/internal/pki"
	"github.com/airlockpam/airlock/internal/store"
	"github.com/airlockpam/airlock/internal/tunnel"
)

// HeartbeatInterval is how often the server pings each gateway (more often
// when the session service's presence interval is shorter).
const HeartbeatInterval = 10 * time.Second

// Config configures the relay service.
type Config struct {
	DB  *store.DB
	PKI *pki.Manager
	// Now is the clock; default time.Now.
	Now func() time.Time
	// Sessions authorizes CLI relay connections; set after construction
	// with SetSessions (the session service depends on the relay).
	Sessions SessionAuthorizer
	// GatewayCertTTL is the lifetime of the certificates gateways get at
	// enrollment and renewal; default GatewayCertTTL (365 days). Gateways
	// renew theirs when a third of it is left.
	GatewayCertTTL time.Duration
}

// Service is the relay.
type Service struct {
	db      *store.DB
	pki     *pki.Manager
	now     func() time.Time
	certTTL time.Duration

	mu       sync.Mutex
	gateways map[string]*gatewayConn         // gateway id -> live connection here
	clients  map[string]map[*tunnel.Mux]bool // session id -> CLI connections here
	sessions SessionAuthorizer
	authn    Authenticator
	events   EventSink
	// onConnect are called (each in its own goroutine) when a gateway
	// connects to this server.
	onConnect []func(gatewayID string)
}

// OnGatewayConnected adds f to the functions called, in a goroutine of
// their own, each time a gateway connects to this server (rotations that
// wait for it run then). Call it before serving.
func (s *Service) OnGatewayConnected(f func(gatewayID string)) {
	s.mu.Lock()
	s.onConnect = append(s.onConnect, f)
	s.mu.Unlock()
}

// GatewayOnline reports whether the gateway is connected to this server
// or, by its recent heartbeats in the store, to another server replica.
func (s *Service) GatewayOnline(ctx context.Context, gatewayID string) (bool, error) {
	if s.Connected(gatewayID) {
		return true, nil
	}
	var online bool
	var heartbeat int64
	err := s.db.QueryRowContext(ctx, `SELECT online, last_heartbeat_at FROM gateways WHERE id = $1`, gatewayID).Scan(&online, &heartbeat)
	if errors.Is(err, sql.ErrNoRows) {
		return false, nil
	}
	if err != nil {
		return false, errs.Wrap("relay.(*Service).GatewayOnline", errs.Unavailable, "reading the gateway's state failed", err)
	}
	return online && store.Micros(s.now())-heartbeat < OnlineWindow.Microseconds(), nil
}

type gatewayConn struct {
	id   string
	mux  *tunnel.Mux
	addr string
}

// New returns a relay service.
func New(cfg Config) *Service {
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.GatewayCertTTL <= 0 {
		cfg.GatewayCertTTL = GatewayCertTTL
	}
	return &Service{db: cfg.DB, pki: cfg.PKI, now: cfg.Now, certTTL: cfg.GatewayCertTTL, sessions: cfg.Sessions,
		gateways: map[string]*gatewayConn{}, clients: map[string]map[*tunnel.Mux]bool{}}
}

// SetSessions wires the session service in.
func (s *Service) SetSessions(a SessionAuthorizer) { s.sessions = a }

// Register adds the gateway API operations and the two upgrade endpoints.
func (s *Service) Register(a huma.API, mux *http.ServeMux) {
	s.registerGatewayAPI(a)
	s.registerGatewayProjects(a)
	mux.HandleFunc("GET /api/v1/relay/gateway", s.serveGateway)
	mux.HandleFunc("GET /api/v1/relay/sessions/{id}", s.serveClient)
}

// serveGateway accepts a gateway's connection: an HTTP upgrade, then mutual
// TLS with certificates of the organization's CA, then the multiplexer (tunnel.Mux).
func (s *Service) serveGateway(w http.ResponseWriter, r *http.Request) {
	orgID := r.URL.Query().Get("org")
	ca, err := s.pki.ForOrg(r.Context(), orgID)
	if err != nil || orgID == "" {
		http.Error(w, "unknown organization", http.StatusNotFound)
		return
	}
	relayCert, err := ca.RelayCertificate()
	if err != nil {
		http.Error(w, "relay certificate unavailable", http.StatusInternalServerError)
		return
	}
	raw, err := tunnel.Accept(w, r)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	tconn := tls.Server(raw, &tls.Config{
		Certificates: []tls.Certificate{*relayCert},
		ClientAuth:   tls.RequireAndVerifyClientCert,
		ClientCAs:    ca.Pool(),
		MinVersion:   tls.VersionTLS13,
	})
	hctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	if err := tconn.HandshakeContext(hctx); err != nil {
		slog.Warn("gateway TLS handshake failed", "remote", r.RemoteAddr, "err", err)
		raw.Close()
		return
	}
	leaf := tconn.ConnectionState().PeerCertificates[0]
	id, err := s.checkGatewayCert(hctx, orgID, leaf)
	if err != nil {
		slog.Warn("gateway refused", "remote", r.RemoteAddr, "err", err)
		tconn.Close()
		return
	}
	mux, err := tunnel.MuxClient(tconn)
	if err != nil {
		tconn.Close()
		return
	}
	s.serveGatewayMux(id, clientHost(r), r.Header.Get("X-Airlock-Version"), mux)
}

// AttachGateway serves mux as the live connection of gateway id, as if the
// gateway had connected and authenticated (for an in-process gateway, and
// for tests that play the gateway's side). It returns when the connection
// ends.
func (s *Service) AttachGateway(id, version string, mux *tunnel.Mux) {
	s.serveGatewayMux(id, "in-process", version, mux)
}

// serveGatewayMux registers an authenticated gateway connection, serves the
// streams the gateway opens and heartbeats it until the connection ends.
func (s *Service) serveGatewayMux(id, addr, version string, mux *tunnel.Mux) {
	gc := &gatewayConn{id: id, mux: mux, addr: addr}
	s.mu.Lock()
	if old := s.gateways[id]; old != nil {
		old.mux.Close()
	}
	s.gateways[id] = gc
	hooks := append([]func(string){}, s.onConnect...)
	s.mu.Unlock()
	slog.Info("gateway connected", "gateway", id, "remote", gc.addr)
	for _, f := range hooks {
		go f(id)
	}
	go s.acceptGatewayStreams(gc)
	s.heartbeat(gc, version)
}

func clientHost(r *http.Request) string {
	if h, _, err := net.SplitHostPort(r.RemoteAddr); err == nil {
		return h
	}
	return r.RemoteAddr
}

// checkGatewayCert accepts only the certificate last issued to an existing gateway.
func (s *Service) checkGatewayCert(ctx context.Context, orgID string, leaf *x509.Certificate) (string, error) {
	id := pki.IDFromCert(leaf, "gateway")
	if id == "" {
		return "", errors.New("not a gateway certificate")
	}
	var serial string
	err := s.db.QueryRowContext(ctx, `SELECT cert_serial FROM gateways WHERE id = $1 AND org_id = $2`, id, orgID).Scan(&serial)
	if errors.Is(err, sql.ErrNoRows) {
		return "", fmt.Errorf("gateway %s is not registered (deleted?)", id)
	}
	if err != nil {
		return "", err
	}
	if serial != leaf.SerialNumber.Text(16) {
		return "", fmt.Errorf("gateway %s presented a replaced certificate", id)
	}
	return id, nil
}

// heartbeat pings the gateway and records each answer until the connection ends.
func (s *Service) heartbeat(gc *gatewayConn, version string) {
	defer func() {
		s.mu.Lock()
		last := s.gateways[gc.id] == gc
		if last {
			delete(s.gateways, gc.id)
		}
		s.mu.Unlock()
		gc.mux.Close()
		if last {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			if _, err := s.db.ExecContext(ctx, `UPDATE gateways SET online = FALSE WHERE id = $1`, gc.id); err != nil {
				slog.Warn("recording a gateway disconnect failed", "gateway", gc.id, "err", err)
			}
		}
		slog.Info("gateway disconnected", "gateway", gc.id)
	}()
	record := func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if _, err := s.db.ExecContext(ctx, `UPDATE gateways SET last_heartbeat_at = $1, online = TRUE, remote_addr = $2, version = $3 WHERE id = $4`,
			store.Micros(s.now()), gc.addr, version, gc.id); err != nil {
			slog.Warn("recording a gateway heartbeat failed", "gateway", gc.id, "err", err)
		}
	}
	record()
	every := HeartbeatInterval
	if s.sessions != nil {
		every = min(every, s.sessions.PresenceInterval())
	}
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-gc.mux.CloseChan():
			return
		case <-t.C:
			if _, err := gc.mux.Ping(); err != nil {
				return
			}
			record()
		}
	}
}

func (s *Service) disconnect(gatewayID string) {
	s.mu.Lock()
	gc := s.gateways[gatewayID]
	delete(s.gateways, gatewayID)
	s.mu.Unlock()
	if gc != nil {
		gc.mux.Close()
	}
}

// Connected reports whether the gateway has a live connection to this server.
func (s *Service) Connected(gatewayID string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	gc := s.gateways[gatewayID]
	return gc != nil && !gc.mux.IsClosed()
}

func (s *Service) open(gatewayID string, h tunnel.Header) (*tunnel.Stream, error) {
	const op = "relay.(*Service).open"
	s.mu.Lock()
	gc := s.gateways[gatewayID]
	s.mu.Unlock()
	if gc == nil || gc.mux.IsClosed() {
		return nil, errs.E(op, errs.Unavailable, "the resource's gateway is offline: start it (`airlock gateway --data-dir ...`) and check `airlock gateways list`")
	}
	st, err := gc.mux.OpenStream()
	if err != nil {
		return nil, errs.Wrap(op, errs.Unavailable, "the gateway connection failed; try again", err)
	}
	st.SetWriteDeadline(time.Now().Add(10 * time.Second))
	if err := tunnel.WriteFrame(st, h); err != nil {
		st.Close()
		return nil, errs.Wrap(op, errs.Unavailable, "the gateway connection failed; try again", err)
	}
	st.SetWriteDeadline(time.Time{})
	return st, nil
}

// request sends a request stream and reads its result.
func (s *Service) request(ctx context.Context, gatewayID string, h tunnel.Header) (tunnel.Result, error) {
	st, err := s.open(gatewayID, h)
	if err != nil {
		return tunnel.Result{}, err
	}
	defer st.Close()
	deadline := time.Now().Add(30 * time.Second)
	if dl, ok := ctx.Deadline(); ok && dl.Before(deadline) {
		deadline = dl
	}
	st.SetReadDeadline(deadline)
	var res tunnel.Result
	if err := tunnel.ReadFrame(st, &res); err != nil {
		return tunnel.Result{}, errs.Wrap("relay.request", errs.Unavailable, "the gateway did not answer in time; check its log", err)
	}
	return res, nil
}

// Rotate asks the gateway to set the password of rot.Username as admin
// (the resource's rotation account) and to log in with it. The Result says
// what happened (OK, or a tunnel.Code* with words for an administrator); an
// error means the gateway could not be asked or did not answer, when the
// password may or may not have changed.
func (s *Service) Rotate(ctx context.Context, gatewayID string, admin tunnel.Target, rot tunnel.Rotation) (tunnel.Result, error) {
	return s.request(ctx, gatewayID, tunnel.Header{Type: tunnel.TypeRotate, Target: &admin, Rotation: &rot})
}

// CheckRoles asks the gateway to check, changing nothing, that each of
// roles exists and that admin's user may change its password
// (postgres.CheckRoles). The Result says what was found; an error means
// the gateway could not be asked or did not answer.
func (s *Service) CheckRoles(ctx context.Context, gatewayID string, admin tunnel.Target, roles []string) (tunnel.Result, error) {
	return s.request(ctx, gatewayID, tunnel.Header{Type: tunnel.TypeCheckRoles, Target: &admin, Roles: roles})
}

// Validate asks the gateway to log in with the target's credentials. A
// refusal is an Invalid error saying why. Only an organization admin gets
// the gateway's own words (which may quote the far end: a banner, a TLS
// detail); anyone else learns that the login was refused, that the
// database does not exist, or that the endpoint cannot be reached, so that a
// gateway cannot be used to explore its network.
func (s *Service) Validate(ctx context.Context, gatewayID string, t tunnel.Target) error {
	const op = "relay.(*Service).Validate"
	res, err := s.request(ctx, gatewayID, tunnel.Header{Type: tunnel.TypeValidate, Target: &t})
	if err != nil {
		return err
	}
	if res.OK {
		return nil
	}
	code := errs.Invalid
	if res.Code == tunnel.CodeInternal {
		code = errs.Unavailable
	}
	if p := api.PrincipalFrom(ctx); p != nil && p.OrgAdmin {
		return errs.E(op, code, "the credentials were not saved: the gateway could not log in to "+t.String()+": "+res.Message)
	}
	var why string
	switch res.Code {
	case tunnel.CodeAuthFailed:
		why = "the database refused the login of " + strconv.Quote(t.Username) + ": the username or password is wrong"
	case tunnel.CodeNoDatabase:
		why = "the database " + strconv.Quote(t.Database) + " does not exist there"
	default:
		why = "cannot reach " + targetEndpoint(t)
	}
	return errs.E(op, code, "the credentials were not saved: "+why+" (an organization admin sees the gateway's full answer)")
}

// targetEndpoint is where t points, as HOST:PORT or the hosts of a MongoDB
// connection string, without anything else of it.
func targetEndpoint(t tunnel.Target) string {
	if t.Kind == tunnel.KindMongoDB {
		_, rest, _ := strings.Cut(t.URI, "://")
		if i := strings.IndexAny(rest, "/?"); i >= 0 {
			rest = rest[:i]
		}
		return rest
	}
	return net.JoinHostPort(t.Host, strconv.Itoa(t.Port))
}

// OpenData opens a data stream for a session connection on the gateway.
func (s *Service) OpenData(gatewayID string, h tunnel.Header) (net.Conn, error) {
	h.Type = tunnel.TypeData
	return s.open(gatewayID, h)
}

// UpdateOnGateway sends a live session new settings (h.SessionID,
// h.MaskPatterns, h.RedactValues): the gateway applies them from the
// session's next statement on.
func (s *Service) UpdateOnGateway(ctx context.Context, gatewayID string, h tunnel.Header) error {
	const op = "relay.(*Service).UpdateOnGateway"
	h.Type = tunnel.TypeUpdate
	res, err := s.request(ctx, gatewayID, h)
	if err != nil {
		return err
	}
	if !res.OK {
		return errs.E(op, errs.Unavailable, "the gateway did not apply the settings: "+res.Message)
	}
	return nil
}

// TerminateOnGateway tells the gateway to end a session: cancel what runs on
// each of its connections, tell each client why (message), and close them.
func (s *Service) TerminateOnGateway(ctx context.Context, gatewayID, sessionID, reason, message string) error {
	_, err := s.request(ctx, gatewayID, tunnel.Header{Type: tunnel.TypeTerminate, SessionID: sessionID, Reason: reason, Message: message})
	return err
}
