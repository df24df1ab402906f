package pam_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"database/sql"
	"encoding/json"
	"errors"
	"github.com/jackc/pgx/v5"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"reflect"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/danielgtaylor/huma/v2"
	"github.com/danielgtaylor/huma/v2/adapters/humago"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/airlockpam/airlock/internal/api"
	"github.com/airlockpam/airlock/internal/audit"
	"github.com/airlockpam/airlock/internal/auth"
	"github.com/airlockpam/airlock/internal/errs"
	"github.com/airlockpam/airlock/internal/keyring"
	"github.com/airlockpam/airlock/internal/pam"
	"github.com/airlockpam/airlock/internal/project"
	"github.com/airlockpam/airlock/internal/store"
	"github.com/airlockpam/airlock/internal/testenv"
	"github.com/airlockpam/airlock/internal/tunnel"
)

func TestMain(m *testing.M) {
	code := m.Run()
	testenv.CleanupShared()
	os.Exit(code)
}

const (
	adminEmail    = "admin@example.com"
	adminPassword = "correct horse battery"
)

// Gateways known to the test's resolver. gw-offline exists but the
// validator finds it offline, as a real gateway without a connection.
const (
	gw1ID       = "0197a000-0000-7000-8000-00000000a001"
	gw2ID       = "0197a000-0000-7000-8000-00000000a002"
	gwOfflineID = "0197a000-0000-7000-8000-00000000a0ff"
)

// gatewayBook resolves the test's gateways by name or id; the gateways
// table and its service belong to another package.
type gatewayBook map[string]string // name -> id

func (g gatewayBook) ResolveGateway(_ context.Context, _, nameOrID string) (string, string, error) {
	for name, id := range g {
		if nameOrID == name || nameOrID == id {
			return id, name, nil
		}
	}
	return "", "", errs.Ef("pam_test.gatewayBook", errs.NotFound, "no gateway %q", nameOrID)
}

// GatewayAllowed allows every project: the assignments of gateways to
// projects are tested with the real relay in internal/server.
func (g gatewayBook) GatewayAllowed(context.Context, string, string) (bool, error) { return true, nil }

// AllowProjectTx does nothing: every project may use every gateway here.
func (g gatewayBook) AllowProjectTx(context.Context, *sql.Tx, string, string) error { return nil }

// pgValidator logs in to a real PostgreSQL with pgconn, as a gateway does,
// and reports failures the way the gateway validator does.
type pgValidator struct {
	online map[string]bool
	calls  atomic.Int32
	// hold, when set, makes the next Validate wait for it to be closed
	// after its login (a slow answer from the gateway); started is
	// signalled when it begins to wait.
	mu            sync.Mutex
	hold, started chan struct{}
}

func (v *pgValidator) Validate(ctx context.Context, gatewayID string, t tunnel.Target) error {
	v.mu.Lock()
	hold, started := v.hold, v.started
	v.hold, v.started = nil, nil
	v.mu.Unlock()
	err := v.validate(ctx, gatewayID, t)
	if hold != nil {
		started <- struct{}{}
		<-hold
	}
	return err
}

func (v *pgValidator) validate(ctx context.Context, gatewayID string, t tunnel.Target) error {
	const op = "pam_test.(*pgValidator).Validate"
	v.calls.Add(1)
	if !v.online[gatewayID] {
		return errs.E(op, errs.Unavailable, "the gateway is offline: start it, or check its connection to the server")
	}
	if t.Kind != tunnel.KindPostgres {
		return errs.E(op, errs.Invalid, "this validator logs in to PostgreSQL only")
	}
	cfg, err := pgconn.ParseConfig("")
	if err != nil {
		return errs.Wrap(op, errs.Internal, "building the connection settings failed", err)
	}
	cfg.Host, cfg.Port, cfg.Database, cfg.User, cfg.Password = t.Host, uint16(t.Port), t.Database, t.Username, t.Password
	cfg.Fallbacks, cfg.TLSConfig, cfg.ConnectTimeout = nil, nil, 10*time.Second
	if t.TLS.Enabled {
		tc := &tls.Config{ServerName: t.Host, MinVersion: tls.VersionTLS12, InsecureSkipVerify: !t.TLS.RejectUnauthorized}
		if t.TLS.CAPEM != "" {
			tc.RootCAs = x509.NewCertPool()
			tc.RootCAs.AppendCertsFromPEM([]byte(t.TLS.CAPEM))
		}
		cfg.TLSConfig = tc
	}
	conn, err := pgconn.ConnectConfig(ctx, cfg)
	if err == nil {
		return conn.Close(ctx)
	}
	var pgErr *pgconn.PgError
	var verr *tls.CertificateVerificationError
	switch {
	case errors.As(err, &pgErr) && (pgErr.Code == "28P01" || pgErr.Code == "28000"):
		return errs.Ef(op, errs.Invalid, "PostgreSQL refused the login of %q: the username or password is wrong", t.Username)
	case errors.As(err, &pgErr) && pgErr.Code == "3D000":
		return errs.Ef(op, errs.Invalid, "the database %q does not exist", t.Database)
	case errors.As(err, &verr):
		return errs.Ef(op, errs.Invalid, "the database's TLS certificate was not accepted: %v", verr.Err)
	default:
		return errs.Ef(op, errs.Unavailable, "cannot reach PostgreSQL at %s:%d", t.Host, t.Port)
	}
}

// backend is a store the suite runs against.
type backend struct {
	name string
	new  func(t *testing.T) (dataDir, databaseURL string)
}

func forEachBackend(t *testing.T, f func(t *testing.T, b backend)) {
	for _, b := range []backend{
		{"sqlite", func(t *testing.T) (string, string) { return t.TempDir(), "" }},
		{"postgres", func(t *testing.T) (string, string) { return "", testenv.SharedPostgres(t).SuperURL() }},
	} {
		t.Run(b.name, func(t *testing.T) { f(t, b) })
	}
}

// env is a control plane with the pam operations, built the way the server
// builds it, plus a real PostgreSQL whose accounts the tests store.
type env struct {
	t         *testing.T
	db        *store.DB
	dataDir   string
	auth      *auth.Service
	pam       *pam.Service
	http      *httptest.Server
	validator *pgValidator
	rotator   *pgRotator
	clock     *testenv.Clock   // the pam service's
	target    testenv.Database // the database the resources point at

	mu     sync.Mutex
	bodies []string // every response body, to search for leaked passwords
}

func start(t *testing.T, b backend) *env {
	t.Helper()
	ctx := context.Background()
	dataDir, dbURL := b.new(t)
	db, err := store.Open(ctx, store.Config{DataDir: dataDir, DatabaseURL: dbURL})
	if err != nil {
		t.Fatalf("opening the store: %v", err)
	}
	t.Cleanup(func() { db.Close() })
	root, err := keyring.ParseRootKey(keyring.GenerateRootKey())
	if err != nil {
		t.Fatal(err)
	}
	kr, err := keyring.New(ctx, db, root)
	if err != nil {
		t.Fatal(err)
	}
	authSvc, err := auth.New(auth.Config{DB: db, LoginsPerMinutePerAddress: 1000, LoginsPerMinutePerAccount: 1000})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := authSvc.Bootstrap(ctx, adminEmail, adminPassword); err != nil {
		t.Fatal(err)
	}
	projects := project.New(db, kr, nil)
	target := testenv.SharedPostgres(t)
	createRotator(t, target)
	e := &env{t: t, db: db, dataDir: dataDir, auth: authSvc, target: target,
		validator: &pgValidator{online: map[string]bool{gw1ID: true, gw2ID: true}}, rotator: &pgRotator{},
		clock: testenv.NewClock(time.Now())}
	e.pam, err = pam.New(pam.Config{DB: db, Keyring: kr, Projects: projects, Validator: e.validator, Rotator: e.rotator, Now: e.clock.Now,
		Gateways: gatewayBook{"gw-1": gw1ID, "gw-2": gw2ID, "gw-offline": gwOfflineID}})
	if err != nil {
		t.Fatal(err)
	}

	mux := http.NewServeMux()
	cfg := huma.DefaultConfig("Airlock API", "test")
	cfg.OpenAPIPath, cfg.DocsPath, cfg.SchemasPath = "/api/openapi", "", ""
	cfg.CreateHooks = nil
	cfg.RejectUnknownQueryParameters = true
	cfg.Components.SecuritySchemes = map[string]*huma.SecurityScheme{api.BearerAuth: {Type: "http", Scheme: "bearer"}}
	a := humago.New(mux, cfg)
	a.UseMiddleware(authenticate(a, authSvc))
	authSvc.Register(a)
	projects.Register(a)
	e.pam.Register(a)
	audit.Register(a, audit.NewRepository(db), func(ctx context.Context, projectID string) error {
		_, err := projects.Authorize(ctx, projectID, project.RoleAdmin)
		return err
	})
	e.http = httptest.NewServer(mux)
	t.Cleanup(e.http.Close)
	return e
}

// authenticate resolves bearer tokens as the server does.
func authenticate(a huma.API, s *auth.Service) func(huma.Context, func(huma.Context)) {
	return func(ctx huma.Context, next func(huma.Context)) {
		token, ok := strings.CutPrefix(ctx.Header("Authorization"), "Bearer ")
		if !ok {
			if len(ctx.Operation().Security) > 0 {
				_ = huma.WriteErr(a, ctx, http.StatusUnauthorized, "no token")
				return
			}
			next(ctx)
			return
		}
		p, err := s.Authenticate(ctx.Context(), token)
		if err != nil {
			_ = huma.WriteErr(a, ctx, api.Status(errs.CodeOf(err)), "bad token")
			return
		}
		next(huma.WithContext(ctx, api.WithPrincipal(ctx.Context(), p)))
	}
}

// client is a logged-in caller of the API.
type client struct {
	e     *env
	token string
	last  *problem
}

type problem struct {
	Status int    `json:"status"`
	Detail string `json:"detail"`
	Errors []struct {
		Message  string `json:"message"`
		Location string `json:"location"`
	} `json:"errors"`
	raw string
}

func (e *env) login(email, password string) *client {
	e.t.Helper()
	c := &client{e: e}
	var pair map[string]any
	if st := c.call("POST", "/api/v1/auth/login", map[string]any{"email": email, "password": password}, &pair); st != 200 {
		e.t.Fatalf("login as %s: %d %s", email, st, c.problem().raw)
	}
	c.token = pair["accessToken"].(string)
	return c
}

func (e *env) admin() *client { return e.login(adminEmail, adminPassword) }

// createUser makes a user (as the organization admin) and logs it in.
func (e *env) createUser(email string) *client {
	e.t.Helper()
	a := e.admin()
	if st := a.call("POST", "/api/v1/users", map[string]any{"email": email, "password": "password-of-" + email}, nil); st != 201 {
		e.t.Fatalf("create user %s: %d %s", email, st, a.problem().raw)
	}
	return e.login(email, "password-of-"+email)
}

// ctx returns a context carrying the caller, for direct calls to the service.
func (c *client) ctx() context.Context {
	c.e.t.Helper()
	p, err := c.e.auth.Authenticate(context.Background(), c.token)
	if err != nil {
		c.e.t.Fatal(err)
	}
	return api.WithPrincipal(context.Background(), p)
}

func (c *client) problem() *problem {
	if c.last != nil {
		return c.last
	}
	return &problem{}
}

// call sends a JSON request and decodes a 2xx answer into out; it returns
// the status, and keeps the problem of a failure for problem().
func (c *client) call(method, path string, body, out any) int {
	c.e.t.Helper()
	var rd io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequest(method, c.e.http.URL+path, rd)
	if err != nil {
		c.e.t.Fatal(err)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		c.e.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	c.e.mu.Lock()
	c.e.bodies = append(c.e.bodies, string(b))
	c.e.mu.Unlock()
	c.last = nil
	if resp.StatusCode >= 400 {
		p := &problem{raw: string(b)}
		_ = json.Unmarshal(b, p)
		c.last = p
	} else if out != nil && len(b) > 0 {
		// Start from zero: decoding into a used map would keep its old keys.
		v := reflect.ValueOf(out).Elem()
		v.Set(reflect.Zero(v.Type()))
		if err := json.Unmarshal(b, out); err != nil {
			c.e.t.Fatalf("%s %s: decoding %q: %v", method, path, b, err)
		}
	}
	return resp.StatusCode
}

// must calls and fails the test unless the status is want.
func (c *client) must(want int, method, path string, body, out any) {
	c.e.t.Helper()
	if st := c.call(method, path, body, out); st != want {
		c.e.t.Fatalf("%s %s: status %d, want %d: %s", method, path, st, want, c.problem().raw)
	}
}

// fails calls and checks the status and, when location is set, the field
// the problem names.
func (c *client) fails(status int, location, method, path string, body any) *problem {
	c.e.t.Helper()
	st := c.call(method, path, body, nil)
	p := c.problem()
	if st != status {
		c.e.t.Errorf("%s %s %v: status %d, want %d: %s", method, path, body, st, status, p.raw)
		return p
	}
	if location != "" {
		found := false
		for _, d := range p.Errors {
			found = found || d.Location == location
		}
		if !found {
			c.e.t.Errorf("%s %s %v: the problem does not name %s: %s", method, path, body, location, p.raw)
		}
	}
	return p
}

// project creates a project owned by c and returns its id.
func (c *client) project(name string) string {
	c.e.t.Helper()
	var p map[string]any
	c.must(201, "POST", "/api/v1/projects", map[string]any{"name": name}, &p)
	return p["id"].(string)
}

// addMember gives a user a role in a project.
func (c *client) addMember(pid, email, role string) {
	c.e.t.Helper()
	c.must(200, "PUT", "/api/v1/projects/"+pid+"/members", map[string]any{"email": email, "role": role}, nil)
}

// pgResource is the body that creates a resource for the test database,
// over TLS verified against the test CA.
func (e *env) pgResource(name string) map[string]any {
	pg := e.target.Cluster
	return map[string]any{"kind": "postgres", "name": name, "gateway": "gw-1", "host": pg.Host, "port": pg.Port,
		"database": e.target.Name, "sslCaPem": string(pg.CA.CertPEM)}
}

// auditRows returns every audit row of the store as text.
func (e *env) auditRows() []string {
	e.t.Helper()
	rows, err := e.db.QueryContext(context.Background(), `SELECT action, target_id, details FROM audit_logs ORDER BY id`)
	if err != nil {
		e.t.Fatal(err)
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var action, target, details string
		if err := rows.Scan(&action, &target, &details); err != nil {
			e.t.Fatal(err)
		}
		out = append(out, action+" "+target+" "+details)
	}
	return out
}

// auditActions returns the actions in the audit log.
func (e *env) auditActions() []string {
	var out []string
	for _, r := range e.auditRows() {
		out = append(out, strings.Fields(r)[0])
	}
	return out
}

func count(t *testing.T, db *store.DB, query string, args ...any) int {
	t.Helper()
	var n int
	if err := db.QueryRowContext(context.Background(), query, args...).Scan(&n); err != nil {
		t.Fatalf("%s: %v", query, err)
	}
	return n
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// Rotation account of the tests: a role that may change other roles'
// passwords, created once in the shared cluster.
const (
	rotatorUser     = "rotator"
	rotatorPassword = "rotation-Pa55-zebra-91"
)

func createRotator(t *testing.T, db testenv.Database) {
	t.Helper()
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, db.SuperURL())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, `DO $$ BEGIN
		CREATE ROLE `+rotatorUser+` LOGIN CREATEROLE PASSWORD '`+rotatorPassword+`';
	EXCEPTION WHEN duplicate_object THEN NULL; END $$`); err != nil {
		t.Fatal(err)
	}
}
