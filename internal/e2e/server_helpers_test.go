package e2e_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/airlockpam/airlock/internal/e2e"
	"github.com/airlockpam/airlock/internal/testenv"
)

// svStartServer runs `airlock server` with extra command-line arguments
// (such as --client-lost-after 30s).
func svStartServer(t *testing.T, args ...string) *e2e.Server {
	t.Helper()
	return e2e.StartServerWith(t, nil, args...)
}

// svRestartServer starts s's server process again with args.
func svRestartServer(t *testing.T, s *e2e.Server, args ...string) {
	t.Helper()
	s.Restart(t, args...)
}

// svNewWorld is newWorld on a server started with extra arguments.
func svNewWorld(t *testing.T, args ...string) *world {
	t.Helper()
	return newWorldWith(t, svStartServer(t, args...))
}

// svResource adds a PostgreSQL resource of the world's cluster named name.
func (w *world) svResource(name string) {
	w.t.Helper()
	w.admin.Must("", "resources", "create", "postgres", "--project-id", w.project, "--name", name, "--gateway", "dc1",
		"--host", "127.0.0.1", "--port", fmt.Sprint(w.pg.Port), "--database", testenv.AppDatabase, "--ssl-ca-file", w.caFile)
}

// svAccountOn adds an account of resource as the cluster's SCRAM user.
func (w *world) svAccountOn(resource, name string) {
	w.t.Helper()
	w.admin.Must(w.pg.SCRAMUser.Password, "accounts", "create", "--project-id", w.project, "--resource", resource, "--name", name,
		"--username", w.pg.SCRAMUser.User, "--password-stdin")
}

// svMember creates a user with role in the world's project, logged in on
// their own machine (config directory).
func (w *world) svMember(email, role string) *e2e.User {
	w.t.Helper()
	pw := "password of " + email
	w.admin.Must(pw, "users", "create", "--email", email, "--password-stdin")
	w.admin.Must("", "projects", "members", "set", "--project-id", w.project, "--email", email, "--role", role)
	u := e2e.NewUser(w.t)
	u.Login(w.srv, email, pw)
	return u
}

// svUserID returns the id of the user with email.
func (w *world) svUserID(email string) string {
	w.t.Helper()
	var us []struct{ ID, Email string }
	w.admin.JSON(&us, "", "users", "list")
	for _, u := range us {
		if u.Email == email {
			return u.ID
		}
	}
	w.t.Fatalf("no user %s", email)
	return ""
}

// svAccessOn runs `airlock db access` on resource and account as u and
// returns the process, its URL and its session id.
func (w *world) svAccessOn(u *e2e.User, resource, account string) (*e2e.Process, string, string) {
	w.t.Helper()
	p := u.Start("db", "access", "--project-id", w.project, "--resource", resource, "--account", account, "--domain", w.srv.URL)
	url := p.WaitLine(w.t, urlLine, 60*time.Second)
	m := sessionIDRE.FindStringSubmatch(p.Stdout())
	if m == nil {
		w.t.Fatalf("no session id in %q", p.Stdout())
	}
	return p, url, m[1]
}

type svSessionState struct {
	ID, Status, EndReason, EndMessage string
}

// svAdminTokens caches an API access token of each world's admin.
var svAdminTokens sync.Map // *world -> string

// svAPIGet calls the API as the world's admin and decodes the answer.
func (w *world) svAPIGet(path string, out any) {
	w.t.Helper()
	token, ok := svAdminTokens.Load(w)
	if !ok {
		body, _ := json.Marshal(map[string]string{"email": w.srv.AdminEmail, "password": w.srv.AdminPassword})
		resp, err := http.Post(w.srv.URL+"/api/v1/auth/login", "application/json", bytes.NewReader(body))
		if err != nil {
			w.t.Fatal(err)
		}
		var pair struct{ AccessToken string }
		err = json.NewDecoder(resp.Body).Decode(&pair)
		resp.Body.Close()
		if err != nil || pair.AccessToken == "" {
			w.t.Fatalf("admin login: %d %v", resp.StatusCode, err)
		}
		token = pair.AccessToken
		svAdminTokens.Store(w, token)
	}
	req, _ := http.NewRequest(http.MethodGet, w.srv.URL+path, nil)
	req.Header.Set("Authorization", "Bearer "+token.(string))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		w.t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(resp.Body)
		w.t.Fatalf("GET %s: %d %s", path, resp.StatusCode, b)
	}
	if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
		w.t.Fatal(err)
	}
}

// svSession returns a session as the admin sees it (from the API: it has
// endMessage).
func (w *world) svSession(id string) svSessionState {
	w.t.Helper()
	var s svSessionState
	w.svAPIGet("/api/v1/sessions/"+id, &s)
	return s
}

// svWaitEnded polls until the session has ended (failing after timeout) and
// returns it.
func (w *world) svWaitEnded(id string, timeout time.Duration) svSessionState {
	w.t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		s := w.svSession(id)
		if s.Status == "ended" {
			return s
		}
		if time.Now().After(deadline) {
			w.t.Fatalf("session %s still %s after %s", id, s.Status, timeout)
		}
		time.Sleep(250 * time.Millisecond)
	}
}

// svRefused fails the test unless a new connection to url fails.
func svRefused(t *testing.T, url string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, err := pgx.Connect(ctx, url)
	if err == nil {
		var one int
		err = c.QueryRow(ctx, "SELECT 1").Scan(&one)
		c.Close(context.Background())
		if err == nil {
			t.Fatalf("a new connection to %s still works", url)
		}
	}
}

// svClosedConn fails the test unless c's connection has been cut.
func svClosedConn(t *testing.T, c *pgx.Conn) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var one int
	if err := c.QueryRow(ctx, "SELECT 1").Scan(&one); err == nil {
		t.Fatal("a live connection survived the revocation")
	}
}
