package server_test

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/airlockpam/airlock/internal/auth"
	"github.com/airlockpam/airlock/internal/keyring"
	"github.com/airlockpam/airlock/internal/server"
	"github.com/airlockpam/airlock/internal/testenv"
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

// clock is a test clock that only moves when told to.
// backend is a store the suite runs against.
type backend struct {
	name string
	// new returns a fresh store location: a data dir or a database URL.
	new func(t *testing.T) (dataDir, databaseURL string)
}

func backends() []backend {
	return []backend{
		{"sqlite", func(t *testing.T) (string, string) { return t.TempDir(), "" }},
		{"postgres", func(t *testing.T) (string, string) {
			return "", testenv.SharedPostgres(t).SuperURL()
		}},
	}
}

// forEachBackend runs f as a subtest per store.
func forEachBackend(t *testing.T, f func(t *testing.T, b backend)) {
	for _, b := range backends() {
		t.Run(b.name, func(t *testing.T) { f(t, b) })
	}
}

type env struct {
	t           *testing.T
	srv         *server.Server
	http        *httptest.Server
	clock       *testenv.Clock
	dataDir     string
	databaseURL string
	rootKey     string
}

// start runs a server on a new store of backend b with a bootstrap admin.
func start(t *testing.T, b backend) *env {
	t.Helper()
	dataDir, dbURL := b.new(t)
	e := &env{t: t, clock: testenv.NewClock(time.Now()), dataDir: dataDir, databaseURL: dbURL, rootKey: keyring.GenerateRootKey()}
	e.open(adminEmail, adminPassword)
	return e
}

// open (re)starts the server on e's store.
func (e *env) open(bootstrapEmail, bootstrapPassword string) {
	e.t.Helper()
	root, err := keyring.ParseRootKey(e.rootKey)
	if err != nil {
		e.t.Fatal(err)
	}
	srv, err := server.New(context.Background(), server.Config{
		DataDir: e.dataDir, DatabaseURL: e.databaseURL, RootKey: root,
		BootstrapEmail: bootstrapEmail, BootstrapPassword: bootstrapPassword,
		Auth: auth.Config{Now: e.clock.Now},
	})
	if err != nil {
		e.t.Fatalf("starting the server: %v", err)
	}
	e.srv = srv
	e.http = httptest.NewServer(srv.Handler())
	e.t.Cleanup(e.close)
}

func (e *env) close() {
	if e.http != nil {
		e.http.Close()
		e.srv.Close()
		e.http = nil
	}
}

// client is a caller of the API, anonymous until it logs in.
type client struct {
	e     *env
	email string // of a user logged in with login
	token string
	pair  map[string]any
	last  *problem // the problem of the last failed call
	// authHeader, when set, is sent as the Authorization header as is.
	authHeader string
}

func (e *env) anon() *client { return &client{e: e} }

// login logs in and fails the test if it does not work.
func (e *env) login(email, password string) *client {
	e.t.Helper()
	c := e.anon()
	var pair map[string]any
	if st := c.call("POST", "/api/v1/auth/login", map[string]any{"email": email, "password": password}, &pair); st != 200 {
		e.t.Fatalf("login as %s: status %d", email, st)
	}
	c.token, c.pair, c.email = pair["accessToken"].(string), pair, email
	return c
}

// admin returns a client logged in as the bootstrap admin.
func (e *env) admin() *client { return e.login(adminEmail, adminPassword) }

// createUser makes a user (as admin) and returns it logged in.
func (e *env) createUser(email string) *client {
	e.t.Helper()
	if st := e.admin().call("POST", "/api/v1/users", map[string]any{"email": email, "password": "password-of-" + email}, nil); st != 201 {
		e.t.Fatalf("create user %s: status %d", email, st)
	}
	return e.login(email, "password-of-"+email)
}

// problem is an RFC 9457 problem document.
type problem struct {
	Status int    `json:"status"`
	Detail string `json:"detail"`
	Errors []struct {
		Message  string `json:"message"`
		Location string `json:"location"`
	} `json:"errors"`
	raw string
}

// call sends a JSON request and decodes a 2xx answer into out. It returns
// the status; for errors the problem is in c.problem().
func (c *client) call(method, path string, body, out any) int {
	c.e.t.Helper()
	var rd io.Reader
	if body != nil {
		if s, ok := body.(string); ok {
			rd = strings.NewReader(s)
		} else {
			b, _ := json.Marshal(body)
			rd = bytes.NewReader(b)
		}
	}
	st, resp := c.raw(method, path, rd, "application/json")
	if st >= 400 {
		p := &problem{raw: string(resp)}
		_ = json.Unmarshal(resp, p)
		c.last = p
	} else if out != nil && len(resp) > 0 {
		if err := json.Unmarshal(resp, out); err != nil {
			c.e.t.Fatalf("%s %s: decoding %q: %v", method, path, resp, err)
		}
	}
	return st
}

func (c *client) problem() *problem {
	if c.last != nil {
		return c.last
	}
	return &problem{}
}

func (c *client) raw(method, path string, body io.Reader, contentType string) (int, []byte) {
	c.e.t.Helper()
	req, err := http.NewRequest(method, c.e.http.URL+path, body)
	if err != nil {
		c.e.t.Fatal(err)
	}
	if body != nil {
		req.Header.Set("Content-Type", contentType)
	}
	switch {
	case c.authHeader != "":
		req.Header.Set("Authorization", c.authHeader)
	case c.token != "":
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		c.e.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, b
}

// auditActions returns the actions of the audit log matching query, newest first.
func (c *client) auditActions(query string) []string {
	c.e.t.Helper()
	var evs []struct {
		Action  string `json:"action"`
		Outcome string `json:"outcome"`
	}
	if st := c.call("GET", "/api/v1/audit-logs?"+query, nil, &evs); st != 200 {
		c.e.t.Fatalf("audit log: %d %s", st, c.problem().raw)
	}
	var out []string
	for _, ev := range evs {
		out = append(out, ev.Action+":"+ev.Outcome)
	}
	return out
}

// sqlDB opens the server's store directly, as an attacker or an operator
// with database access would.
func (e *env) sqlDB() *sql.DB { return e.srv.DB.DB }

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}
