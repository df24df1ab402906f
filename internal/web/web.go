package web

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/airlockpam/airlock/internal/api"
	"github.com/airlockpam/airlock/internal/audit"
	"github.com/airlockpam/airlock/internal/errs"
	"github.com/airlockpam/airlock/internal/mfa"
	"github.com/airlockpam/airlock/internal/pam"
	"github.com/airlockpam/airlock/internal/project"
	"github.com/airlockpam/airlock/internal/relay"
	"github.com/airlockpam/airlock/internal/session"
	"github.com/airlockpam/airlock/internal/webconsole"
)

// Defaults of Config.
const (
	// DefaultIdleTimeout ends a web session nobody used for this long.
	DefaultIdleTimeout = 30 * time.Minute
	// DefaultMaxLifetime ends a web session this long after its login,
	// however busy.
	DefaultMaxLifetime = 12 * time.Hour
)

// Config configures the UI. The services are the server's own.
type Config struct {
	Auth     Authenticator
	Projects *project.Service
	PAM      *pam.Service
	Sessions *session.Service
	Relay    *relay.Service
	Audit    *audit.Repository
	// Machines manages machine identities (the identity service).
	Machines MachineIdentities
	// API is the server's API handler; logging out calls its logout
	// operation in-process, so that the login's tokens are revoked,
	// audited and its sessions ended exactly as `airlock logout` does.
	API http.Handler
	// Now is the clock; default time.Now.
	Now func() time.Time
	// Secure marks the session cookie Secure (with the __Host- prefix);
	// set it when the server speaks TLS. A request that came over TLS gets
	// a Secure cookie anyway.
	Secure bool
	// TrustProxyHeaders takes X-Forwarded-Proto: https as a request that
	// came over TLS (a Secure cookie, https in the Access command); set it
	// only behind a proxy that overwrites that header.
	TrustProxyHeaders bool
	// IdleTimeout ends a session unused for this long; default 30 minutes.
	IdleTimeout time.Duration
	// MaxLifetime ends a session this long after its login; default 12
	// hours (and never later than the login's refresh token).
	MaxLifetime time.Duration
	// ConsoleIdleTimeout ends a web SQL console unused for this long;
	// default webconsole.DefaultIdleTimeout (10 minutes).
	ConsoleIdleTimeout time.Duration
	// Version is shown in the footer.
	Version string
}

// CheckAndSetDefaults validates cfg and fills in defaults.
func (c *Config) CheckAndSetDefaults() error {
	if c.Auth == nil || c.API == nil {
		return errs.E("web.Config", errs.Internal, "the web UI needs the identity service and the API handler")
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	if c.IdleTimeout <= 0 {
		c.IdleTimeout = DefaultIdleTimeout
	}
	if c.MaxLifetime <= 0 {
		c.MaxLifetime = DefaultMaxLifetime
	}
	return nil
}

// Handler serves the UI.
type Handler struct {
	cfg      Config
	sessions *sessionStore
	mux      *http.ServeMux
	handler  http.Handler
	pages    *pages
	consoles *webconsole.Manager
	sec      secretsDeps  // the secrets pages' services (UseSecrets)
	mfa      *mfa.Service // the MFA pages' service (UseMFA)
	pending  pendingLogins
}

// New returns the UI's handler.
func New(cfg Config) (*Handler, error) {
	if err := cfg.CheckAndSetDefaults(); err != nil {
		return nil, err
	}
	pg, err := parsePages()
	if err != nil {
		return nil, err
	}
	h := &Handler{cfg: cfg, sessions: newSessionStore(cfg.Now, cfg.IdleTimeout, cfg.MaxLifetime), mux: http.NewServeMux(), pages: pg}
	if cfg.Sessions != nil && cfg.Relay != nil {
		if h.consoles, err = webconsole.New(webconsole.Config{Sessions: cfg.Sessions, Dial: cfg.Relay.DialSession,
			IdleTimeout: cfg.ConsoleIdleTimeout}); err != nil {
			return nil, err
		}
	}
	h.routes()
	cop := http.NewCrossOriginProtection()
	cop.SetDenyHandler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h.errorPage(w, r, http.StatusForbidden, "This request came from another site and was refused.")
	}))
	h.handler = securityHeaders(cop.Handler(http.HandlerFunc(h.dispatch)))
	return h, nil
}

// ServeHTTP serves the UI.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) { h.handler.ServeHTTP(w, r) }

// dispatch answers paths the UI does not have with an HTML error page:
// 405 when the server has the path for other methods (POST /healthz),
// else 404.
func (h *Handler) dispatch(w http.ResponseWriter, r *http.Request) {
	if _, pattern := h.mux.Handler(r); pattern == "" {
		var allow []string
		if mux, ok := h.cfg.API.(*http.ServeMux); ok {
			allow = allowed(mux, r)
		}
		if allow = append(allow, allowed(h.mux, r)...); len(allow) > 0 {
			w.Header().Set("Allow", strings.Join(allow, ", "))
			h.errorPage(w, r, http.StatusMethodNotAllowed, "This page does not take that kind of request.")
			return
		}
		h.errorPage(w, r, http.StatusNotFound, "There is no page here.")
		return
	}
	h.mux.ServeHTTP(w, r)
}

// reqInfo is what a signed-in request carries.
type reqInfo struct {
	p  *api.Principal
	ws *webSession
}

type infoKey struct{}

func infoFrom(ctx context.Context) *reqInfo {
	ri, _ := ctx.Value(infoKey{}).(*reqInfo)
	return ri
}

// page wraps a handler of a page or form that needs a signed-in user: it
// resolves the web session to its principal (in the context, as the API
// does), and refuses a state-changing request without the session's CSRF
// token. A request without a live session goes to the login page.
func (h *Handler) page(f http.HandlerFunc) http.HandlerFunc {
	return h.pageLimit(maxFormBytes, f)
}

// consoleBodyLimit bounds what a console's page may post: SQL of up to
// webconsole.MaxSQLBytes, escaped in JSON; the console reads one byte
// more, to tell a longer body.
const consoleBodyLimit = 6*webconsole.MaxSQLBytes + 1

// backgroundHeader marks a request a page makes on its own (static/app.js),
// which does not count as use for the idle timeout.
const backgroundHeader = "X-Airlock-Background"

// pageLimit is page with a limit on the body of a state-changing request.
func (h *Handler) pageLimit(limit int64, f http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		id := h.sessionCookie(r)
		ws, expired := h.sessions.get(id, r.Header.Get(backgroundHeader) != "")
		if expired != nil {
			h.revoke(r.Context(), expired)
		}
		if ws == nil {
			h.toLogin(w, r, expired != nil)
			return
		}
		p, _, err := ws.principal(r.Context(), h.cfg.Auth, h.cfg.Now())
		if err != nil {
			h.sessions.remove(id)
			if !errs.Is(err, errs.Unauthenticated) && !errs.Is(err, errs.Forbidden) {
				errs.Log(r.Context(), err)
			}
			h.toLogin(w, r, true)
			return
		}
		if !safeMethod(r.Method) {
			r.Body = http.MaxBytesReader(w, r.Body, limit)
			tok := r.Header.Get("X-CSRF-Token")
			if tok == "" {
				tok = r.PostFormValue("csrf")
			}
			if !ws.checkCSRF(tok) {
				h.errorPage(w, r, http.StatusForbidden, "This form has expired or did not come from this page: go back, reload and try again.")
				return
			}
		}
		ctx := api.WithPrincipal(r.Context(), p)
		ctx = context.WithValue(ctx, infoKey{}, &reqInfo{p: p, ws: ws})
		f(w, r.WithContext(ctx))
	}
}

func safeMethod(m string) bool {
	return m == http.MethodGet || m == http.MethodHead || m == http.MethodOptions
}

// toLogin sends a request without a live session to the login page; a
// page asked for by GET is returned to after login.
func (h *Handler) toLogin(w http.ResponseWriter, r *http.Request, expired bool) {
	if expired {
		h.clearSessionCookie(w, r)
	}
	q := url.Values{}
	if r.Method == http.MethodGet && localPath(r.URL.RequestURI()) {
		q.Set("next", r.URL.RequestURI())
	}
	if expired {
		q.Set("expired", "1")
	}
	target := "/login"
	if len(q) > 0 {
		target += "?" + q.Encode()
	}
	http.Redirect(w, r, target, http.StatusSeeOther)
}

// localPath accepts only a path of this site as a place to return to.
func localPath(p string) bool {
	return strings.HasPrefix(p, "/") && !strings.HasPrefix(p, "//") && !strings.HasPrefix(p, "/\\") &&
		!strings.HasPrefix(p, "/login") && !strings.HasPrefix(p, "/logout")
}

// revoke logs a web session's login out through the API (tokens revoked,
// audited, its sessions ended). Failures are logged: the browser's
// session is gone either way.
func (h *Handler) revoke(ctx context.Context, ws *webSession) {
	ws.mu.Lock()
	defer ws.mu.Unlock()
	token := ws.tokens.AccessToken
	if !h.cfg.Now().Before(ws.tokens.AccessExpiresAt.Add(-refreshEarly)) {
		pair, err := h.cfg.Auth.Refresh(ctx, ws.tokens.RefreshToken)
		if err != nil {
			return // the login is already over (revoked or expired)
		}
		ws.tokens, token = pair, pair.AccessToken
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, "/api/v1/auth/logout", nil)
	if err != nil {
		return
	}
	req.Header.Set("Authorization", "Bearer "+token)
	rec := &statusRecorder{header: http.Header{}}
	h.cfg.API.ServeHTTP(rec, req)
	if rec.status != http.StatusNoContent {
		slog.WarnContext(ctx, "revoking a web session's login failed", "status", rec.status)
	}
}

// statusRecorder is a ResponseWriter that keeps only the status.
type statusRecorder struct {
	header http.Header
	status int
}

func (s *statusRecorder) Header() http.Header { return s.header }
func (s *statusRecorder) Write(b []byte) (int, error) {
	if s.status == 0 {
		s.status = http.StatusOK
	}
	return len(b), nil
}
func (s *statusRecorder) WriteHeader(code int) {
	if s.status == 0 {
		s.status = code
	}
}

// sweep ends the sessions past their idle timeout or lifetime.
func (h *Handler) sweep(ctx context.Context) {
	for _, ws := range h.sessions.sweep() {
		h.revoke(ctx, ws)
	}
}

// userError turns a domain error into a status and a message safe to show.
func userError(ctx context.Context, err error) (int, string) {
	var e *errs.Error
	if !errors.As(err, &e) || e.Code == errs.Internal {
		slog.ErrorContext(ctx, "web request failed", "err", err)
		return http.StatusInternalServerError, "Something went wrong on the server; its log has the details."
	}
	if e.Code == errs.Unavailable || e.Code == errs.DataLoss {
		slog.WarnContext(ctx, "dependency unavailable", "err", err)
	}
	return api.Status(e.Code), e.Msg
}
