// Package server is the Airlock control plane: it opens the store, checks the
// root key, creates the first admin, and serves the API (huma, with its
// generated OpenAPI 3.1 document at /api/openapi.json), the web UI (package
// web) at /, /healthz and /readyz.
// Domain packages own their operations; this package only wires them.
package server

import (
	"context"
	"crypto/tls"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"strings"
	"time"

	"github.com/danielgtaylor/huma/v2"
	"github.com/danielgtaylor/huma/v2/adapters/humago"

	"github.com/airlockpam/airlock/internal/api"
	"github.com/airlockpam/airlock/internal/appconn"
	"github.com/airlockpam/airlock/internal/audit"
	"github.com/airlockpam/airlock/internal/auth"
	"github.com/airlockpam/airlock/internal/errs"
	"github.com/airlockpam/airlock/internal/jobs"
	"github.com/airlockpam/airlock/internal/keyring"
	"github.com/airlockpam/airlock/internal/mfa"
	"github.com/airlockpam/airlock/internal/pam"
	"github.com/airlockpam/airlock/internal/pki"
	"github.com/airlockpam/airlock/internal/project"
	"github.com/airlockpam/airlock/internal/relay"
	"github.com/airlockpam/airlock/internal/secretrotation"
	"github.com/airlockpam/airlock/internal/secrets"
	"github.com/airlockpam/airlock/internal/server/apidocs"
	"github.com/airlockpam/airlock/internal/session"
	"github.com/airlockpam/airlock/internal/sessionlog"
	"github.com/airlockpam/airlock/internal/store"
	"github.com/airlockpam/airlock/internal/version"
	"github.com/airlockpam/airlock/internal/web"
)

// Config configures a server.
type Config struct {
	// Listen is the address to serve on, e.g. 127.0.0.1:8720.
	Listen string
	// DataDir holds the SQLite store (when DatabaseURL is empty).
	DataDir string
	// DatabaseURL selects a PostgreSQL store.
	DatabaseURL string
	// TLSCert and TLSKey, both set, make the server speak HTTPS.
	TLSCert, TLSKey string
	// RootKey wraps the data keys; required.
	RootKey *keyring.RootKey
	// BootstrapEmail and BootstrapPassword create the first admin when the
	// store has no user; ignored afterwards.
	BootstrapEmail, BootstrapPassword string
	// TrustProxyHeaders takes the client address from X-Forwarded-For; set
	// it only behind a proxy that overwrites that header.
	TrustProxyHeaders bool
	// Auth tunes the identity service (clock, token lifetimes, lockout).
	Auth auth.Config
	// GatewayLostAfter is how long a session's gateway may stay
	// disconnected before the session ends as gateway_lost; default
	// session.GatewayLostAfter (2 minutes).
	GatewayLostAfter time.Duration
	// ClientLostAfter is how long a session's CLI may stay disconnected
	// from the relay before the session ends as client_lost; default
	// session.ClientLostAfter (2 minutes).
	ClientLostAfter time.Duration
	// GatewayCertLifetime is the lifetime of gateway certificates; default
	// relay.GatewayCertTTL (365 days). Gateways renew theirs when a third
	// of it is left, so a shorter one limits how long a stolen gateway key
	// is of use.
	GatewayCertLifetime time.Duration
	// SMTPURL, smtp://user:pass@host:port or smtps://..., is where MFA
	// email codes are sent; empty: no email codes (see DevMailLog).
	SMTPURL string
	// PublicURL is the URL users reach the server at (scheme and host, no
	// path): passkeys are bound to its host, and MFA approval links start
	// with it. Default: the server's own listen URL (a loopback address
	// becomes localhost, as browsers take no IP address for passkeys).
	PublicURL string
	// DevMailLog, without SMTPURL, writes email codes to the log instead
	// (`airlock dev` only: a development fallback).
	DevMailLog bool
}

// CheckAndSetDefaults validates cfg.
func (c *Config) CheckAndSetDefaults() error {
	const op = "server.Config"
	if c.Listen == "" {
		c.Listen = "127.0.0.1:8720"
	}
	if c.RootKey == nil {
		return errs.E(op, errs.Invalid, "no root key: "+keyring.HowToMakeKey)
	}
	if (c.TLSCert == "") != (c.TLSKey == "") {
		return errs.E(op, errs.Invalid, "give both --tls-cert and --tls-key, or neither")
	}
	if c.GatewayLostAfter < 0 || (c.GatewayLostAfter > 0 && c.GatewayLostAfter < time.Second) {
		return errs.E(op, errs.Invalid, "--gateway-lost-after must be at least 1s (default 2m)")
	}
	if c.ClientLostAfter < 0 || (c.ClientLostAfter > 0 && c.ClientLostAfter < time.Second) {
		return errs.E(op, errs.Invalid, "--client-lost-after must be at least 1s (default 2m)")
	}
	if c.GatewayCertLifetime < 0 || (c.GatewayCertLifetime > 0 && c.GatewayCertLifetime < time.Minute) {
		return errs.E(op, errs.Invalid, "--gateway-certificate-lifetime must be at least 1m (default 8760h, a year)")
	}
	if c.SMTPURL != "" {
		if _, err := mfa.ParseSMTPURL(c.SMTPURL); err != nil {
			return errs.E(op, errs.Invalid, err.Error())
		}
	}
	if c.PublicURL != "" {
		if _, _, err := mfa.PublicOrigin(c.PublicURL); err != nil {
			return errs.E(op, errs.Invalid, "--public-url: "+err.Error())
		}
	}
	if c.DatabaseURL == "" && c.DataDir == "" {
		return errs.E(op, errs.Invalid, "give --data-dir (embedded store) or --database-url (PostgreSQL)")
	}
	return nil
}

// Server is a running control plane.
type Server struct {
	cfg      Config
	DB       *store.DB
	Keyring  *keyring.Keyring
	Auth     *auth.Service
	Projects *project.Service
	Secrets  *secrets.Service
	// AppConns are the server's own database logins (app connections).
	AppConns *appconn.Service
	// Rotations are the dual-user credential rotations of secrets.
	Rotations *secretrotation.Service
	PKI       *pki.Manager
	Relay     *relay.Service
	Sessions  *session.Service
	MFA       *mfa.Service
	// Jobs runs the durable jobs (session expiry) on this replica.
	Jobs   *jobs.Scheduler
	PAM    *pam.Service
	Events *sessionlog.Store
	// Audit reads, verifies and seals the admin audit log.
	Audit   *audit.Repository
	API     huma.API
	handler http.Handler
	// Bootstrapped is true when this start created the first admin.
	Bootstrapped bool
}

// New opens the store and builds the server. Close releases it.
func New(ctx context.Context, cfg Config) (*Server, error) {
	if err := cfg.CheckAndSetDefaults(); err != nil {
		return nil, err
	}
	db, err := store.Open(ctx, store.Config{DataDir: cfg.DataDir, DatabaseURL: cfg.DatabaseURL})
	if err != nil {
		return nil, err
	}
	s := &Server{cfg: cfg, DB: db}
	if err := s.init(ctx); err != nil {
		db.Close()
		return nil, err
	}
	return s, nil
}

func (s *Server) init(ctx context.Context) error {
	var err error
	if s.Keyring, err = keyring.New(ctx, s.DB, s.cfg.RootKey); err != nil {
		return err
	}
	authCfg := s.cfg.Auth
	authCfg.DB = s.DB
	if s.Auth, err = auth.New(authCfg); err != nil {
		return err
	}
	if err := s.bootstrap(ctx); err != nil {
		return err
	}
	s.Projects = project.New(s.DB, s.Keyring, authCfg.Now)
	s.Secrets = secrets.New(s.DB, s.Keyring, s.Projects)
	if authCfg.Now != nil {
		s.Secrets.SetClock(authCfg.Now)
	}
	s.PKI = pki.NewManager(s.DB, s.Keyring, authCfg.Now)
	s.Relay = relay.New(relay.Config{DB: s.DB, PKI: s.PKI, Now: authCfg.Now, GatewayCertTTL: s.cfg.GatewayCertLifetime})
	s.Relay.SetAuthenticator(s.Auth)
	if s.PAM, err = pam.New(pam.Config{DB: s.DB, Keyring: s.Keyring, Projects: s.Projects,
		Validator: s.Relay, Gateways: s.Relay, Rotator: s.Relay, Presence: s.Relay, Now: authCfg.Now,
		BeforePromote: crashBeforePromote()}); err != nil {
		return err
	}
	s.AppConns = appconn.New(appconn.Config{DB: s.DB, Keyring: s.Keyring, Projects: s.Projects, Relay: s.Relay, Now: authCfg.Now,
		Guard: &appconn.Guard{AllowInternal: os.Getenv(appconn.AllowInternalEnv) == "true", Forbidden: storeAddrs(ctx, s.cfg.DatabaseURL)}})
	s.Sessions = session.New(s.DB, s.Projects, s.PKI, s.Relay, s.targets, authCfg.Now)
	s.Sessions.SetCurrentTargets(s.currentTarget)
	if s.MFA, err = mfa.New(mfa.Config{DB: s.DB, Keyring: s.Keyring, Mailer: s.mailer(), Now: authCfg.Now,
		PublicURL: s.cfg.PublicURL}); err != nil {
		return err
	}
	s.Sessions.SetMFA(s.MFA.Gate)
	s.Auth.SetLoginMFA(s.MFA.LoginGate)
	s.Sessions.SetLiveness(s.cfg.GatewayLostAfter, s.cfg.ClientLostAfter)
	s.Jobs = jobs.New(s.DB, jobs.WithClock(authCfg.Now))
	s.Sessions.UseJobs(s.Jobs)
	s.PAM.UseJobs(s.Jobs)
	s.Relay.OnGatewayConnected(func(gatewayID string) {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		s.PAM.GatewayConnected(ctx, gatewayID)
	})
	s.Rotations = secretrotation.New(secretrotation.Config{DB: s.DB, Keyring: s.Keyring, Projects: s.Projects, Secrets: s.Secrets,
		Conns: s.AppConns, Now: authCfg.Now})
	s.Rotations.UseJobs(s.Jobs)
	s.Rotations.SetMailer(s.rotationMailer())
	s.Relay.SetSessions(s.Sessions)
	// Every change that may take access away ends the live sessions that
	// lost it as soon as it commits (the expiry job checks again each tick).
	revoked := func(ctx context.Context) { s.Sessions.EnforceAccess(ctx) }
	s.Auth.OnAccessRevoked(revoked)
	s.Projects.OnAccessRevoked(revoked)
	s.PAM.OnAccessRevoked(revoked)
	s.Projects.OnLogSettingsChanged(func(ctx context.Context, projectID string) {
		go s.Sessions.PushSettings(context.WithoutCancel(ctx), projectID)
	})
	s.Events = sessionlog.NewStore(s.DB, s.Keyring, authCfg.Now)
	s.Relay.SetEventSink(s.Events)
	s.Sessions.SetEvents(s.Events)
	auditKey, err := s.Keyring.DeriveKey(keyring.LabelAuditLogMAC)
	if err != nil {
		return err
	}
	s.Audit = audit.NewRepository(s.DB, audit.WithMACKey(auditKey))

	mux := http.NewServeMux()
	cfg := huma.DefaultConfig("Airlock API", version.Version)
	cfg.Info.Description = "Privileged access management for PostgreSQL and MongoDB. " +
		"Authenticate with POST /api/v1/auth/login and send the access token as `Authorization: Bearer <token>`."
	cfg.OpenAPIPath = "/api/openapi"
	cfg.DocsPath = "" // served below from embedded files, not a CDN
	cfg.SchemasPath = "/api/schemas"
	cfg.CreateHooks = nil // no $schema links in response bodies
	cfg.RejectUnknownQueryParameters = true
	cfg.Components.SecuritySchemes = map[string]*huma.SecurityScheme{
		api.BearerAuth: {Type: "http", Scheme: "bearer", Description: "an access token from /api/v1/auth/login"},
	}
	a := humago.New(mux, cfg)
	a.UseMiddleware(s.authenticate(a))
	s.API = a
	s.Auth.Register(a)
	s.Projects.Register(a)
	s.Secrets.Register(a)
	s.AppConns.Register(a)
	s.Rotations.Register(a)
	s.Relay.Register(a, mux)
	s.Sessions.Register(a)
	s.MFA.Register(a)
	s.PAM.Register(a)
	audit.Register(a, s.Audit, func(ctx context.Context, projectID string) error {
		_, err := s.Projects.Authorize(ctx, projectID, project.RoleAdmin)
		return err
	})
	apidocs.Register(mux, "/api/docs", "/api/openapi.json")
	// Paths under /api/ that no operation takes answer problem+json; every
	// other unknown path is the web UI's (HTML).
	mux.Handle("/api/", web.APIFallback(mux))
	ui, err := web.New(web.Config{Auth: s.Auth, Projects: s.Projects, PAM: s.PAM, Sessions: s.Sessions, Relay: s.Relay,
		Audit: s.Audit, Machines: s.Auth, API: mux, Now: authCfg.Now, Secure: s.cfg.TLSCert != "", TrustProxyHeaders: s.cfg.TrustProxyHeaders, Version: version.Version})
	if err != nil {
		return err
	}
	ui.UseSecrets(s.Secrets, s.AppConns, s.Rotations)
	ui.UseMFA(s.MFA)
	mux.Handle("/", ui)
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain")
		fmt.Fprintln(w, "ok")
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		ctx, cancel := context.WithTimeout(r.Context(), 3*time.Second)
		defer cancel()
		w.Header().Set("Content-Type", "text/plain")
		if err := s.DB.Ping(ctx); err != nil {
			slog.Warn("readiness check failed", "err", err)
			w.WriteHeader(http.StatusServiceUnavailable)
			fmt.Fprintln(w, "store unreachable")
			return
		}
		fmt.Fprintln(w, "ok")
	})
	s.handler = s.withClientAddr(mux)
	return nil
}

// mailer returns where MFA email codes go: the SMTP server, the log in
// development, or nowhere.
func (s *Server) mailer() mfa.Mailer {
	if s.cfg.SMTPURL != "" {
		m, _ := mfa.ParseSMTPURL(s.cfg.SMTPURL) // checked in CheckAndSetDefaults
		slog.Info("MFA email codes are sent through SMTP", "smtp", m.Redacted())
		return m
	}
	if s.cfg.DevMailLog {
		slog.Warn("no SMTP configured: MFA email codes are written to this log (a development fallback; set --smtp-url to send them)")
		return mfa.LogMailer{}
	}
	slog.Info("no SMTP configured (--smtp-url): MFA email codes cannot be sent; users need TOTP for accounts that require MFA")
	return nil
}

func (s *Server) bootstrap(ctx context.Context) error {
	has, err := s.Auth.HasUsers(ctx)
	if err != nil {
		return errs.Wrap("server.bootstrap", errs.Unavailable, "reading users failed", err)
	}
	switch {
	case has && s.cfg.BootstrapEmail != "":
		slog.Info("users already exist; the bootstrap admin settings (AIRLOCK_BOOTSTRAP_EMAIL, AIRLOCK_BOOTSTRAP_PASSWORD) are ignored")
	case !has && s.cfg.BootstrapEmail == "":
		slog.Warn("the store has no user yet: set AIRLOCK_BOOTSTRAP_EMAIL and AIRLOCK_BOOTSTRAP_PASSWORD to create the first admin")
	case !has:
		created, err := s.Auth.Bootstrap(ctx, s.cfg.BootstrapEmail, s.cfg.BootstrapPassword)
		if err != nil {
			return err
		}
		s.Bootstrapped = created
		if created {
			slog.Info("created the first organization admin", "email", strings.ToLower(s.cfg.BootstrapEmail))
		}
	}
	return nil
}

// authenticate resolves the bearer token of every API request and refuses
// secured operations without a valid one.
func (s *Server) authenticate(a huma.API) func(huma.Context, func(huma.Context)) {
	return func(ctx huma.Context, next func(huma.Context)) {
		secured := len(ctx.Operation().Security) > 0
		h := ctx.Header("Authorization")
		if h == "" {
			if secured {
				_ = huma.WriteErr(a, ctx, http.StatusUnauthorized, "this endpoint needs a token: run `airlock login` or send Authorization: Bearer <token>")
				return
			}
			next(ctx)
			return
		}
		token, ok := strings.CutPrefix(h, "Bearer ")
		if !ok {
			_ = huma.WriteErr(a, ctx, http.StatusUnauthorized, "the Authorization header must be `Bearer <token>`")
			return
		}
		p, err := s.Auth.Authenticate(ctx.Context(), strings.TrimSpace(token))
		if err != nil {
			var e *errs.Error
			status, msg := http.StatusInternalServerError, "internal error"
			if errors.As(err, &e) && e.Code != errs.Internal {
				status, msg = api.Status(e.Code), e.Msg
			}
			if status >= 500 {
				errs.Log(ctx.Context(), err)
			}
			_ = huma.WriteErr(a, ctx, status, msg)
			return
		}
		next(huma.WithContext(ctx, api.WithPrincipal(ctx.Context(), p)))
	}
}

// withClientAddr records the client address in the request context.
func (s *Server) withClientAddr(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		addr := r.RemoteAddr
		if host, _, err := net.SplitHostPort(addr); err == nil {
			addr = host
		}
		if s.cfg.TrustProxyHeaders {
			if xff := r.Header.Get("X-Forwarded-For"); xff != "" {
				addr = strings.TrimSpace(strings.Split(xff, ",")[0])
			}
		}
		next.ServeHTTP(w, r.WithContext(api.WithClientAddr(r.Context(), addr)))
	})
}

// Handler returns the server's HTTP handler.
func (s *Server) Handler() http.Handler { return s.handler }

// Serve serves on ln until ctx ends, then shuts down gracefully.
func (s *Server) Serve(ctx context.Context, ln net.Listener) error {
	hs := &http.Server{
		Handler:           s.handler,
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       2 * time.Minute,
		ErrorLog:          slog.NewLogLogger(slog.Default().Handler(), slog.LevelWarn),
	}
	if s.cfg.TLSCert != "" {
		cert, err := tls.LoadX509KeyPair(s.cfg.TLSCert, s.cfg.TLSKey)
		if err != nil {
			return errs.Wrap("server.Serve", errs.Invalid, "loading the TLS certificate and key failed", err)
		}
		ln = tls.NewListener(ln, &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12, NextProtos: []string{"h2", "http/1.1"}})
	}
	errc := make(chan error, 1)
	go func() { errc <- hs.Serve(ln) }()
	go s.Jobs.Run(ctx)
	go s.Sessions.RunExpiry(ctx, time.Second)
	go s.sealAuditLog(ctx, AuditSealInterval)
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	return hs.Shutdown(sctx)
}

// AuditSealInterval is how often the server authenticates the head of each
// organization's audit log. Entries written after the last seal and then
// removed together with a head wound back are the one tampering `airlock
// audit verify` cannot see; the interval bounds that window.
const AuditSealInterval = time.Minute

// sealAuditLog seals every organization's audit log now and then every
// interval until ctx ends. A chain that does not check out is left
// unsealed (verify reports it) and logged.
func (s *Server) sealAuditLog(ctx context.Context, interval time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		rows, err := s.DB.QueryContext(ctx, `SELECT id FROM organizations`)
		if err == nil {
			var orgs []string
			for rows.Next() {
				var id string
				if rows.Scan(&id) == nil {
					orgs = append(orgs, id)
				}
			}
			rows.Close()
			for _, org := range orgs {
				if err := s.Audit.Seal(ctx, org); err != nil && ctx.Err() == nil {
					slog.Warn("sealing the audit log failed", "org", org, "err", err)
				}
			}
		} else if ctx.Err() == nil {
			slog.Warn("listing organizations to seal their audit logs failed", "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// Listen opens the configured address.
func (s *Server) Listen() (net.Listener, error) {
	ln, err := net.Listen("tcp", s.cfg.Listen)
	if err != nil {
		return nil, errs.Wrap("server.Listen", errs.Unavailable, fmt.Sprintf("cannot listen on %s (is another process using it? pick another with --listen)", s.cfg.Listen), err)
	}
	if s.cfg.PublicURL == "" {
		// Passkeys and approval links use the listen URL.
		if err := s.MFA.SetPublicURL(s.Scheme() + "://" + ln.Addr().String()); err != nil {
			slog.Warn("passkeys are off: set --public-url", "err", err)
		}
	}
	return ln, nil
}

// Scheme is "https" when the server terminates TLS, else "http".
func (s *Server) Scheme() string {
	if s.cfg.TLSCert != "" {
		return "https"
	}
	return "http"
}

// Close releases the store.
func (s *Server) Close() error { return s.DB.Close() }

// OrgID returns the organization this installation serves ("" before the
// first admin exists).
func (s *Server) OrgID(ctx context.Context) (string, error) {
	var id string
	err := s.DB.QueryRowContext(ctx, `SELECT id FROM organizations ORDER BY created_at, id LIMIT 1`).Scan(&id)
	if errors.Is(err, sql.ErrNoRows) {
		return "", nil
	}
	return id, err
}

// storeAddrs are the addresses of the PostgreSQL store, which app
// connections may never point at (none for SQLite).
func storeAddrs(ctx context.Context, databaseURL string) []netip.AddrPort {
	addrs, err := appconn.StoreAddrs(ctx, databaseURL)
	if err != nil {
		errs.Log(ctx, err)
	}
	return addrs
}

// crashBeforePromote is the test-only hook of pam.CrashBeforePromoteEnv:
// the process exits between a password change and its promotion, as a
// crash there would.
func crashBeforePromote() func() {
	if os.Getenv(pam.CrashBeforePromoteEnv) != "1" {
		return nil
	}
	slog.Warn("test hook: this server exits in every rotation before promoting the new password (" + pam.CrashBeforePromoteEnv + ")")
	return func() {
		slog.Error("test hook: exiting between the password change and its promotion")
		os.Exit(86)
	}
}
