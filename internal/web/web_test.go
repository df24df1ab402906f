package web_test

import (
	"context"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/airlockpam/airlock/internal/api"
	"github.com/airlockpam/airlock/internal/audit"
	"github.com/airlockpam/airlock/internal/auth"
	"github.com/airlockpam/airlock/internal/keyring"
	"github.com/airlockpam/airlock/internal/project"
	"github.com/airlockpam/airlock/internal/server"
	"github.com/airlockpam/airlock/internal/testenv"
	"github.com/airlockpam/airlock/internal/web"
)

const (
	adminEmail    = "admin@example.com"
	adminPassword = "correct horse battery"
)

type env struct {
	t     *testing.T
	srv   *server.Server
	http  *httptest.Server
	clock *testenv.Clock
}

// start runs a server (on SQLite) with the UI; tls marks it as a TLS
// server (its certificate files are never read here).
func start(t *testing.T, tls bool) *env {
	t.Helper()
	return startWith(t, func(c *server.Config) {
		if tls {
			c.TLSCert, c.TLSKey = "unused.crt", "unused.key"
		}
	})
}

// startWith runs a server whose configuration change changes.
func startWith(t *testing.T, change func(*server.Config)) *env {
	t.Helper()
	root, err := keyring.ParseRootKey(keyring.GenerateRootKey())
	if err != nil {
		t.Fatal(err)
	}
	e := &env{t: t, clock: testenv.NewClock(time.Now())}
	cfg := server.Config{DataDir: t.TempDir(), RootKey: root, BootstrapEmail: adminEmail, BootstrapPassword: adminPassword,
		Auth: auth.Config{Now: e.clock.Now}}
	change(&cfg)
	if e.srv, err = server.New(context.Background(), cfg); err != nil {
		t.Fatal(err)
	}
	e.http = httptest.NewServer(e.srv.Handler())
	t.Cleanup(func() { e.http.Close(); e.srv.Close() })
	return e
}

// browser is a cookie-keeping client that does not follow redirects.
type browser struct {
	e *env
	c *http.Client
}

func (e *env) browser() *browser {
	jar, _ := cookiejar.New(nil)
	return &browser{e: e, c: &http.Client{Jar: jar, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}}
}

func (b *browser) do(method, path string, form url.Values, hdr map[string]string) (*http.Response, string) {
	b.e.t.Helper()
	var body io.Reader
	if form != nil {
		body = strings.NewReader(form.Encode())
	}
	req, err := http.NewRequest(method, b.e.http.URL+path, body)
	if err != nil {
		b.e.t.Fatal(err)
	}
	if form != nil {
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := b.c.Do(req)
	if err != nil {
		b.e.t.Fatal(err)
	}
	defer resp.Body.Close()
	out, _ := io.ReadAll(resp.Body)
	return resp, string(out)
}

func (b *browser) get(path string) (*http.Response, string) { return b.do("GET", path, nil, nil) }

func (b *browser) login(email, password string) *http.Response {
	b.e.t.Helper()
	resp, _ := b.do("POST", "/login", url.Values{"email": {email}, "password": {password}}, nil)
	return resp
}

var csrfRE = regexp.MustCompile(`name="csrf" value="([^"]+)"`)

// csrf returns the CSRF token of the page at path.
func (b *browser) csrf(path string) string {
	b.e.t.Helper()
	resp, body := b.get(path)
	m := csrfRE.FindStringSubmatch(body)
	if resp.StatusCode != 200 || m == nil {
		b.e.t.Fatalf("GET %s: %d, no CSRF token in %.300s", path, resp.StatusCode, body)
	}
	return m[1]
}

func TestLoginSetsASafeCookie(t *testing.T) {
	e := start(t, false)
	b := e.browser()
	resp, body := b.get("/login")
	if resp.StatusCode != 200 || !strings.Contains(body, `id="login-form"`) {
		t.Fatalf("login page: %d %.200s", resp.StatusCode, body)
	}
	// A wrong password: the page says so, keeps the email, never shows the password.
	resp, body = b.do("POST", "/login", url.Values{"email": {adminEmail}, "password": {"wrong-pass-SECRET"}}, nil)
	if resp.StatusCode != http.StatusUnauthorized || !strings.Contains(body, "email or password is wrong") ||
		!strings.Contains(body, `value="`+adminEmail+`"`) || strings.Contains(body, "wrong-pass-SECRET") {
		t.Fatalf("wrong password: %d %s", resp.StatusCode, body)
	}
	if len(resp.Cookies()) != 0 {
		t.Fatalf("a failed login set cookies: %v", resp.Cookies())
	}
	resp = b.login(adminEmail, adminPassword)
	if resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != "/projects" {
		t.Fatalf("login: %d to %q", resp.StatusCode, resp.Header.Get("Location"))
	}
	var c *http.Cookie
	for _, k := range resp.Cookies() {
		if k.Name == "airlock_session" {
			c = k
		}
	}
	if c == nil || !c.HttpOnly || c.SameSite != http.SameSiteStrictMode || c.Path != "/" || c.Secure || c.Domain != "" {
		t.Fatalf("session cookie %+v", c)
	}
	// The cookie holds no API token: it does not authenticate to the API.
	if strings.HasPrefix(c.Value, "alk_") {
		t.Fatal("the cookie holds an API token")
	}
	if _, err := e.srv.Auth.Authenticate(context.Background(), c.Value); err == nil {
		t.Fatal("the cookie value authenticates to the API")
	}
	resp, body = b.get("/projects")
	if resp.StatusCode != 200 || !strings.Contains(body, `id="signed-in">`+adminEmail) {
		t.Fatalf("projects after login: %d %.300s", resp.StatusCode, body)
	}
	// Without the cookie the pages send you to the login page.
	resp, _ = e.browser().get("/projects")
	if resp.StatusCode != http.StatusSeeOther || !strings.HasPrefix(resp.Header.Get("Location"), "/login") {
		t.Fatalf("anonymous /projects: %d %q", resp.StatusCode, resp.Header.Get("Location"))
	}
}

func TestCookieIsSecureUnderTLS(t *testing.T) {
	e := start(t, true)
	resp := e.browser().login(adminEmail, adminPassword)
	cs := resp.Cookies()
	if len(cs) != 1 || cs[0].Name != "__Host-airlock_session" || !cs[0].Secure || !cs[0].HttpOnly ||
		cs[0].SameSite != http.SameSiteStrictMode || cs[0].Path != "/" {
		t.Fatalf("cookies under TLS: %+v", cs)
	}
}

func TestCookieBehindATLSProxy(t *testing.T) {
	fromProxy := map[string]string{"X-Forwarded-Proto": "https"}
	form := url.Values{"email": {adminEmail}, "password": {adminPassword}}
	// Not trusted: the header is anyone's to send.
	resp, _ := start(t, false).browser().do("POST", "/login", form, fromProxy)
	if cs := resp.Cookies(); len(cs) != 1 || cs[0].Secure || cs[0].Name != "airlock_session" {
		t.Fatalf("untrusted X-Forwarded-Proto: %+v", cs)
	}
	e := startWith(t, func(c *server.Config) { c.TrustProxyHeaders = true })
	resp, _ = e.browser().do("POST", "/login", form, fromProxy)
	if cs := resp.Cookies(); len(cs) != 1 || !cs[0].Secure || cs[0].Name != "__Host-airlock_session" {
		t.Fatalf("trusted X-Forwarded-Proto: https: %+v", cs)
	}
}

func TestCSRF(t *testing.T) {
	e := start(t, false)
	b := e.browser()
	b.login(adminEmail, adminPassword)
	token := b.csrf("/projects")
	projects := func() int {
		ctx := api.WithPrincipal(context.Background(), adminPrincipal(t, e))
		list, err := e.srv.Projects.List(ctx)
		if err != nil {
			t.Fatal(err)
		}
		return len(list)
	}
	for _, c := range []struct {
		name string
		form url.Values
		hdr  map[string]string
	}{
		{"no token", url.Values{"name": {"p1"}}, nil},
		{"wrong token", url.Values{"name": {"p1"}, "csrf": {token + "x"}}, nil},
		{"cross-site fetch", url.Values{"name": {"p1"}, "csrf": {token}}, map[string]string{"Sec-Fetch-Site": "cross-site"}},
		{"other origin", url.Values{"name": {"p1"}, "csrf": {token}}, map[string]string{"Origin": "https://evil.example"}},
	} {
		resp, body := b.do("POST", "/projects", c.form, c.hdr)
		if resp.StatusCode != http.StatusForbidden || !strings.Contains(body, `id="error"`) {
			t.Errorf("%s: %d %.200s", c.name, resp.StatusCode, body)
		}
	}
	if n := projects(); n != 0 {
		t.Fatalf("a forged request created %d projects", n)
	}
	resp, _ := b.do("POST", "/projects", url.Values{"name": {"p1"}, "csrf": {token}}, map[string]string{"Sec-Fetch-Site": "same-origin"})
	if resp.StatusCode != http.StatusSeeOther || projects() != 1 {
		t.Fatalf("a genuine form: %d, %d projects", resp.StatusCode, projects())
	}
	// Another session's token is not this one's.
	other := e.browser()
	other.login(adminEmail, adminPassword)
	if other.csrf("/projects") == token {
		t.Fatal("two sessions share a CSRF token")
	}
	resp, _ = other.do("POST", "/projects", url.Values{"name": {"p2"}, "csrf": {token}}, nil)
	if resp.StatusCode != http.StatusForbidden {
		t.Fatalf("another session's token: %d", resp.StatusCode)
	}
}

func adminPrincipal(t *testing.T, e *env) *api.Principal {
	t.Helper()
	pair, err := e.srv.Auth.Login(context.Background(), adminEmail, adminPassword)
	if err != nil {
		t.Fatal(err)
	}
	p, err := e.srv.Auth.Authenticate(context.Background(), pair.AccessToken)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// logouts counts the auth.logout events of the audit log.
func logouts(t *testing.T, e *env) int {
	t.Helper()
	p := adminPrincipal(t, e)
	evs, err := e.srv.Audit.List(context.Background(), audit.Filter{OrgID: p.OrgID, Action: "auth.logout"})
	if err != nil {
		t.Fatal(err)
	}
	return len(evs)
}

func TestIdleTimeout(t *testing.T) {
	e := start(t, false)
	b := e.browser()
	b.login(adminEmail, adminPassword)
	// Busy: each request moves the idle deadline, past the access
	// token's 15 minutes (it is refreshed on the way).
	for range 3 {
		e.clock.Advance(web.DefaultIdleTimeout - time.Minute)
		if resp, _ := b.get("/projects"); resp.StatusCode != 200 {
			t.Fatalf("a session used every %s ended: %d", web.DefaultIdleTimeout-time.Minute, resp.StatusCode)
		}
	}
	e.clock.Advance(web.DefaultIdleTimeout + time.Second)
	resp, _ := b.get("/projects")
	if resp.StatusCode != http.StatusSeeOther || !strings.Contains(resp.Header.Get("Location"), "expired=1") {
		t.Fatalf("an idle session: %d %q", resp.StatusCode, resp.Header.Get("Location"))
	}
	if n := logouts(t, e); n != 1 {
		t.Fatalf("the idle session's login was revoked %d times, want 1", n)
	}
	// It stays over.
	e.clock.Advance(time.Second)
	if resp, _ := b.get("/projects"); resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("an ended session came back: %d", resp.StatusCode)
	}
}

// An expired login returns to the login page and, after signing in, to
// the page the user was on; a "next" that leaves the site goes nowhere.
func TestExpiredLoginReturnsToThePage(t *testing.T) {
	e := start(t, false)
	b := e.browser()
	b.login(adminEmail, adminPassword)
	e.clock.Advance(web.DefaultIdleTimeout + time.Second)
	resp, _ := b.get("/sessions?status=active")
	loc, err := url.Parse(resp.Header.Get("Location"))
	if resp.StatusCode != http.StatusSeeOther || err != nil || loc.Path != "/login" || loc.Query().Get("expired") != "1" {
		t.Fatalf("an expired login: %d %q", resp.StatusCode, resp.Header.Get("Location"))
	}
	next := loc.Query().Get("next")
	if next != "/sessions?status=active" {
		t.Fatalf("the login page would return to %q", next)
	}
	if _, body := b.get(loc.String()); !strings.Contains(body, `name="next"`) {
		t.Fatal("the login form does not carry where to return")
	}
	resp, _ = b.do("POST", "/login", url.Values{"email": {adminEmail}, "password": {adminPassword}, "next": {next}}, nil)
	if resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != next {
		t.Fatalf("after signing in again: %d %q, want back to %s", resp.StatusCode, resp.Header.Get("Location"), next)
	}
	for _, evil := range []string{"//evil.example/x", "https://evil.example/", "/\\evil.example"} {
		b2 := e.browser()
		resp, _ = b2.do("POST", "/login", url.Values{"email": {adminEmail}, "password": {adminPassword}, "next": {evil}}, nil)
		if l := resp.Header.Get("Location"); resp.StatusCode != http.StatusSeeOther || l != "/projects" {
			t.Errorf("next=%s sent the user to %q", evil, l)
		}
	}
}

// A page left open refreshes itself (a live session's log): those requests
// are answered but do not count as use, so the unattended login still ends.
func TestBackgroundRefreshDoesNotKeepALoginAlive(t *testing.T) {
	e := start(t, false)
	b := e.browser()
	b.login(adminEmail, adminPassword)
	bg := map[string]string{"X-Airlock-Background": "1"}
	for range 3 {
		e.clock.Advance(web.DefaultIdleTimeout / 3)
		if resp, _ := b.do("GET", "/projects", nil, bg); resp.StatusCode != 200 {
			t.Fatalf("a page's own refresh within the idle timeout: %d", resp.StatusCode)
		}
	}
	e.clock.Advance(time.Minute)
	resp, _ := b.do("GET", "/projects", nil, bg)
	if resp.StatusCode != http.StatusSeeOther || !strings.Contains(resp.Header.Get("Location"), "expired=1") {
		t.Fatalf("a login only refreshed by an open page, past the idle timeout: %d %q", resp.StatusCode, resp.Header.Get("Location"))
	}
}

func TestMaxLifetime(t *testing.T) {
	e := start(t, false)
	b := e.browser()
	b.login(adminEmail, adminPassword)
	for elapsed := time.Duration(0); elapsed < web.DefaultMaxLifetime-20*time.Minute; elapsed += 20 * time.Minute {
		e.clock.Advance(20 * time.Minute)
		if resp, _ := b.get("/projects"); resp.StatusCode != 200 {
			t.Fatalf("the session ended after %s: %d", elapsed, resp.StatusCode)
		}
	}
	e.clock.Advance(40 * time.Minute)
	if resp, _ := b.get("/projects"); resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("a session past its lifetime: %d", resp.StatusCode)
	}
}

func TestLogoutRevokesTheLogin(t *testing.T) {
	e := start(t, false)
	b := e.browser()
	b.login(adminEmail, adminPassword)
	token := b.csrf("/projects")
	jarCopy := b.c.Jar.Cookies(mustURL(t, e.http.URL))
	if resp, _ := b.do("POST", "/logout", url.Values{}, nil); resp.StatusCode != http.StatusForbidden {
		t.Fatalf("logout without the CSRF token: %d", resp.StatusCode)
	}
	resp, _ := b.do("POST", "/logout", url.Values{"csrf": {token}}, nil)
	if resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("logout: %d", resp.StatusCode)
	}
	if n := logouts(t, e); n != 1 {
		t.Fatalf("logout revoked the login %d times, want 1", n)
	}
	// The old cookie, replayed, is worthless.
	replay := e.browser()
	replay.c.Jar.SetCookies(mustURL(t, e.http.URL), jarCopy)
	if resp, _ := replay.get("/projects"); resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("the logged-out cookie still works: %d", resp.StatusCode)
	}
}

func mustURL(t *testing.T, s string) *url.URL {
	u, err := url.Parse(s)
	if err != nil {
		t.Fatal(err)
	}
	return u
}

func TestSecurityHeadersAndErrors(t *testing.T) {
	e := start(t, false)
	b := e.browser()
	for _, path := range []string{"/login", "/nope", "/static/app.js"} {
		resp, _ := b.get(path)
		csp := resp.Header.Get("Content-Security-Policy")
		if csp == "" || strings.Contains(csp, "unsafe-inline") || strings.Contains(csp, "unsafe-eval") ||
			!strings.Contains(csp, "script-src 'self'") || !strings.Contains(csp, "frame-ancestors 'none'") {
			t.Errorf("%s: CSP %q", path, csp)
		}
	}
	resp, body := b.get("/nope")
	if resp.StatusCode != 404 || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/html") || !strings.Contains(body, "There is no page here") {
		t.Fatalf("GET /nope: %d %s %.200s", resp.StatusCode, resp.Header.Get("Content-Type"), body)
	}
	resp, _ = b.do("POST", "/healthz", nil, nil)
	if resp.StatusCode != http.StatusMethodNotAllowed || resp.Header.Get("Allow") != "GET, HEAD" {
		t.Fatalf("POST /healthz: %d, Allow %q", resp.StatusCode, resp.Header.Get("Allow"))
	}
	// The templates hold no inline script or handler.
	b.login(adminEmail, adminPassword)
	_, body = b.get("/projects")
	if regexp.MustCompile(`(?i)<script>|<script [^>]*>[^<]|\son[a-z]+=|<style`).MatchString(body) {
		t.Fatalf("inline script or style in %s", body)
	}
	for _, c := range []struct {
		method, path string
		status       int
		allow        string
	}{
		{"GET", "/api/v1/nope", 404, ""},
		{"GET", "/api/nope", 404, ""},
		{"DELETE", "/api/v1/auth/login", 405, "POST"},
		{"PUT", "/api/v1/projects", 405, "GET, HEAD, POST"},
	} {
		resp, body := b.do(c.method, c.path, nil, nil)
		if resp.StatusCode != c.status || resp.Header.Get("Content-Type") != "application/problem+json" ||
			resp.Header.Get("Allow") != c.allow || !strings.Contains(body, `"status":`) || strings.Contains(body, "nope") {
			t.Errorf("%s %s: %d %q allow %q %s", c.method, c.path, resp.StatusCode, resp.Header.Get("Content-Type"), resp.Header.Get("Allow"), body)
		}
	}
	// The API's own operations are untouched.
	resp, _ = b.get("/api/openapi.json")
	if resp.StatusCode != 200 {
		t.Fatalf("openapi: %d", resp.StatusCode)
	}
}

func TestViewerSeesNoControlsAndIsRefused(t *testing.T) {
	e := start(t, false)
	ctx := api.WithPrincipal(context.Background(), adminPrincipal(t, e))
	p, err := e.srv.Projects.Create(ctx, "payments", "", "")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.srv.Auth.CreateUser(ctx, "viewer@example.com", "viewer password 1", "", false); err != nil {
		t.Fatal(err)
	}
	if _, err := e.srv.Projects.SetMember(ctx, p.ID, "viewer@example.com", "", project.RoleViewer); err != nil {
		t.Fatal(err)
	}
	admin := e.browser()
	admin.login(adminEmail, adminPassword)
	_, body := admin.get("/projects/" + p.ID + "/resources")
	if !strings.Contains(body, `id="add-postgres"`) {
		t.Fatalf("the admin has no Add Resource: %.500s", body)
	}
	v := e.browser()
	if resp := v.login("viewer@example.com", "viewer password 1"); resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("viewer login: %d", resp.StatusCode)
	}
	_, body = v.get("/projects/" + p.ID + "/resources")
	if strings.Contains(body, `id="add-postgres"`) || strings.Contains(body, `id="add-mongodb"`) || !strings.Contains(body, "your role: viewer") {
		t.Fatalf("the viewer's resources page: %.800s", body)
	}
	_, body = v.get("/projects/" + p.ID + "/members")
	if strings.Contains(body, `id="add-member"`) || strings.Contains(body, "Remove") {
		t.Fatal("the viewer sees member controls")
	}
	if _, body = v.get("/gateways"); !strings.Contains(body, `id="error"`) {
		t.Fatal("a viewer lists gateways")
	}
	// The server refuses the viewer's forged forms, with a valid token.
	token := v.csrf("/projects")
	resp, body := v.do("POST", "/projects/"+p.ID+"/resources", url.Values{"csrf": {token}, "kind": {"postgres"}, "name": {"db"},
		"gateway": {"gw"}, "host": {"db.example.com"}, "database": {"app"}}, nil)
	if resp.StatusCode != http.StatusForbidden {
		t.Fatalf("a viewer's Add Resource: %d %.300s", resp.StatusCode, body)
	}
	resp, _ = v.do("POST", "/projects/"+p.ID+"/members", url.Values{"csrf": {token}, "email": {"viewer@example.com"}, "role": {"admin"}}, nil)
	if resp.StatusCode != http.StatusForbidden {
		t.Fatalf("a viewer's role change: %d", resp.StatusCode)
	}
}

// TestAdminManagesMembers: a project admin adds a user, changes their role
// and removes them on the Members page; each step changes what the user may
// do, and a user who does not exist gets an error that keeps the form.
func TestAdminManagesMembers(t *testing.T) {
	e := start(t, false)
	ctx := api.WithPrincipal(context.Background(), adminPrincipal(t, e))
	p, err := e.srv.Projects.Create(ctx, "crm", "", "")
	if err != nil {
		t.Fatal(err)
	}
	u, err := e.srv.Auth.CreateUser(ctx, "bob@example.com", "bob password 123", "", false)
	if err != nil {
		t.Fatal(err)
	}
	admin := e.browser()
	admin.login(adminEmail, adminPassword)
	members := "/projects/" + p.ID + "/members"
	role := func() project.Role {
		t.Helper()
		ms, err := e.srv.Projects.Members(ctx, p.ID)
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range ms {
			if m.Name == "bob@example.com" {
				return m.Role
			}
		}
		return ""
	}
	post := func(path string, form url.Values) (*http.Response, string) {
		t.Helper()
		form.Set("csrf", admin.csrf(members))
		return admin.do("POST", path, form, nil)
	}

	resp, body := post(members, url.Values{"email": {"nobody@example.com"}, "role": {"member"}})
	if resp.StatusCode == http.StatusSeeOther || !strings.Contains(body, `id="error"`) || !strings.Contains(body, `value="nobody@example.com"`) {
		t.Fatalf("adding an unknown user: %d %.600s", resp.StatusCode, body)
	}
	if resp, _ = post(members, url.Values{"email": {"bob@example.com"}, "role": {"viewer"}}); resp.StatusCode != http.StatusSeeOther || role() != project.RoleViewer {
		t.Fatalf("adding bob as a viewer: %d, role %q", resp.StatusCode, role())
	}
	if _, body = admin.get(members); !strings.Contains(body, "bob@example.com") {
		t.Fatal("the Members page does not list bob")
	}
	if resp, _ = post(members, url.Values{"email": {"bob@example.com"}, "role": {"admin"}}); resp.StatusCode != http.StatusSeeOther || role() != project.RoleAdmin {
		t.Fatalf("making bob an admin: %d, role %q", resp.StatusCode, role())
	}
	bob := e.browser()
	bob.login("bob@example.com", "bob password 123")
	if _, body = bob.get(members); !strings.Contains(body, `id="add-member"`) {
		t.Fatal("bob, now an admin, has no member controls")
	}
	if resp, _ = post(members+"/remove", url.Values{"kind": {"user"}, "id": {u.ID}}); resp.StatusCode != http.StatusSeeOther || role() != "" {
		t.Fatalf("removing bob: %d, role %q", resp.StatusCode, role())
	}
	if resp, body = bob.get("/projects/" + p.ID + "/resources"); resp.StatusCode == http.StatusOK && strings.Contains(body, "your role") {
		t.Fatalf("bob still sees the project after his removal: %d", resp.StatusCode)
	}
}

// TestAuditFilters: the audit log page filters by actor and time range, and
// a malformed date is named instead of ignored.
func TestAuditFilters(t *testing.T) {
	e := start(t, false)
	ctx := api.WithPrincipal(context.Background(), adminPrincipal(t, e))
	if _, err := e.srv.Auth.CreateUser(ctx, "carol@example.com", "carol password 123", "", false); err != nil {
		t.Fatal(err)
	}
	carol := e.browser()
	carol.login("carol@example.com", "carol password 123")
	admin := e.browser()
	admin.login(adminEmail, adminPassword)
	rows := func(query string) string {
		t.Helper()
		resp, body := admin.get("/audit?" + query)
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("/audit?%s: %d", query, resp.StatusCode)
		}
		if i := strings.Index(body, "<tbody>"); i >= 0 {
			return body[i:]
		}
		return ""
	}
	byCarol := rows("actor=carol@example.com")
	if !strings.Contains(byCarol, "auth.login") || strings.Contains(byCarol, "user.create") {
		t.Fatalf("actor=carol shows %.800s", byCarol)
	}
	if all := rows(""); !strings.Contains(all, "user.create") {
		t.Fatalf("the unfiltered log lacks the admin's user.create: %.800s", all)
	}
	today := e.clock.Now().UTC().Format("2006-01-02")
	if r := rows("actor=carol@example.com&from=" + today + "&to=" + today); !strings.Contains(r, "auth.login") {
		t.Fatalf("today's range lacks carol's login: %.800s", r)
	}
	if r := rows("from=2099-01-01"); strings.Contains(r, "auth.login") || strings.Contains(r, "user.create") {
		t.Fatalf("a range in the future shows events: %.800s", r)
	}
	if _, body := admin.get("/audit?from=yesterday"); !strings.Contains(body, "From must be a date") {
		t.Fatalf("a malformed From: %.800s", body)
	}
}
