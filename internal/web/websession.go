package web

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"net/http"
	"sync"
	"time"

	"github.com/airlockpam/airlock/internal/api"
	"github.com/airlockpam/airlock/internal/auth"
)

// Authenticator is what the UI needs of the identity service
// (*auth.Service).
type Authenticator interface {
	Login(ctx context.Context, email, password string) (auth.TokenPair, error)
	Refresh(ctx context.Context, raw string) (auth.TokenPair, error)
	Authenticate(ctx context.Context, raw string) (*api.Principal, error)
}

// MachineIdentities is what the machine identities page needs of the
// identity service.
type MachineIdentities interface {
	ListMachineIdentities(ctx context.Context) ([]auth.MachineIdentity, error)
	CreateMachineIdentity(ctx context.Context, name string) (auth.NewMachineIdentity, error)
	DeleteMachineIdentity(ctx context.Context, id string) error
}

// Cookie names: under TLS the __Host- prefix makes the browser refuse a
// cookie that is not Secure, has a Domain or another Path.
const (
	cookieName       = "airlock_session"
	secureCookieName = "__Host-airlock_session"
)

// refreshEarly is how long before its expiry an access token is refreshed.
const refreshEarly = time.Minute

// webSession is one signed-in browser. Its tokens never leave the server.
type webSession struct {
	mu       sync.Mutex // held while the tokens are used or refreshed
	tokens   auth.TokenPair
	csrf     string
	key      string // its key in the store: names it to the web console
	created  time.Time
	lastSeen time.Time
}

// sessionStore keeps web sessions in memory, keyed by the SHA-256 of the
// cookie value (a copy of the map does not give the cookies away). A
// restart signs everyone out; several server replicas need sticky
// sessions (see docs/web.md).
type sessionStore struct {
	mu      sync.Mutex
	m       map[string]*webSession
	now     func() time.Time
	idle    time.Duration
	maxLife time.Duration
}

func newSessionStore(now func() time.Time, idle, maxLife time.Duration) *sessionStore {
	return &sessionStore{m: map[string]*webSession{}, now: now, idle: idle, maxLife: maxLife}
}

func randomToken() string {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		panic("crypto/rand failed: " + err.Error())
	}
	return base64.RawURLEncoding.EncodeToString(b)
}

func storeKey(cookie string) string {
	h := sha256.Sum256([]byte(cookie))
	return hex.EncodeToString(h[:])
}

// create stores a new session for tokens and returns its cookie value.
func (s *sessionStore) create(tokens auth.TokenPair) (string, *webSession) {
	id := randomToken()
	now := s.now()
	ws := &webSession{tokens: tokens, csrf: randomToken(), key: storeKey(id), created: now, lastSeen: now}
	s.mu.Lock()
	s.m[storeKey(id)] = ws
	s.mu.Unlock()
	return id, ws
}

// get returns the live session of a cookie value and marks it seen. A
// session past its idle timeout or lifetime is removed and returned as
// expired, so that its tokens can be revoked. A request the page makes on
// its own (background, such as a live session's refresh) does not count as
// use, so an open page does not keep an unattended login alive.
func (s *sessionStore) get(id string, background bool) (ws *webSession, expired *webSession) {
	if id == "" || len(id) > 100 {
		return nil, nil
	}
	key := storeKey(id)
	now := s.now()
	s.mu.Lock()
	defer s.mu.Unlock()
	ws = s.m[key]
	if ws == nil {
		return nil, nil
	}
	if now.Sub(ws.lastSeen) > s.idle || now.Sub(ws.created) > s.maxLife {
		delete(s.m, key)
		return nil, ws
	}
	if !background {
		ws.lastSeen = now
	}
	return ws, nil
}

// remove drops the session of a cookie value and returns it (nil if none).
func (s *sessionStore) remove(id string) *webSession {
	key := storeKey(id)
	s.mu.Lock()
	defer s.mu.Unlock()
	ws := s.m[key]
	delete(s.m, key)
	return ws
}

// sweep removes and returns the sessions past their idle timeout or
// lifetime.
func (s *sessionStore) sweep() []*webSession {
	now := s.now()
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []*webSession
	for k, ws := range s.m {
		if now.Sub(ws.lastSeen) > s.idle || now.Sub(ws.created) > s.maxLife {
			delete(s.m, k)
			out = append(out, ws)
		}
	}
	return out
}

// checkCSRF reports whether token is the session's synchronizer token.
func (ws *webSession) checkCSRF(token string) bool {
	return token != "" && subtle.ConstantTimeCompare([]byte(token), []byte(ws.csrf)) == 1
}

// principal returns the session's caller: it refreshes the access token
// when due and authenticates it, so a revoked login or a disabled user is
// refused at its next request.
func (ws *webSession) principal(ctx context.Context, a Authenticator, now time.Time) (*api.Principal, string, error) {
	ws.mu.Lock()
	defer ws.mu.Unlock()
	if !now.Before(ws.tokens.AccessExpiresAt.Add(-refreshEarly)) {
		pair, err := a.Refresh(ctx, ws.tokens.RefreshToken)
		if err != nil {
			return nil, "", err
		}
		ws.tokens = pair
	}
	p, err := a.Authenticate(ctx, ws.tokens.AccessToken)
	if err != nil {
		return nil, "", err
	}
	return p, ws.tokens.AccessToken, nil
}

// cookieNameFor returns the cookie name of a request: the __Host- one
// under TLS.
func (h *Handler) cookieNameFor(r *http.Request) string {
	if h.secure(r) {
		return secureCookieName
	}
	return cookieName
}

// secure reports whether r came over TLS (to this server, or to a trusted
// proxy in front of it).
func (h *Handler) secure(r *http.Request) bool {
	return h.cfg.Secure || r.TLS != nil || (h.cfg.TrustProxyHeaders && r.Header.Get("X-Forwarded-Proto") == "https")
}

func (h *Handler) setSessionCookie(w http.ResponseWriter, r *http.Request, value string) {
	http.SetCookie(w, &http.Cookie{
		Name: h.cookieNameFor(r), Value: value, Path: "/",
		HttpOnly: true, Secure: h.secure(r), SameSite: http.SameSiteStrictMode,
	})
}

func (h *Handler) clearSessionCookie(w http.ResponseWriter, r *http.Request) {
	http.SetCookie(w, &http.Cookie{
		Name: h.cookieNameFor(r), Value: "", Path: "/", MaxAge: -1,
		HttpOnly: true, Secure: h.secure(r), SameSite: http.SameSiteStrictMode,
	})
}

func (h *Handler) sessionCookie(r *http.Request) string {
	c, err := r.Cookie(h.cookieNameFor(r))
	if err != nil {
		return ""
	}
	return c.Value
}
