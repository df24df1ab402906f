package server_test

import (
	"context"
	"crypto/sha256"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/airlockpam/airlock/internal/jobs"
	"github.com/airlockpam/airlock/internal/session"
	"github.com/airlockpam/airlock/internal/store"
	"github.com/airlockpam/airlock/internal/tunnel"
)

// fixture is a project with a gateway, a resource and an account, stored
// directly (no gateway process runs in these tests), on which sessions are
// started as rows: what the session service would write for them.
type fixture struct {
	t                                        *testing.T
	e                                        *env
	admin                                    *client
	org, project, gateway, resource, account string
}

func newFixture(t *testing.T, b backend) *fixture {
	t.Helper()
	e := start(t, b)
	f := &fixture{t: t, e: e, admin: e.admin()}
	f.project = f.newProject("payments")
	if err := e.sqlDB().QueryRow(`SELECT id FROM organizations`).Scan(&f.org); err != nil {
		t.Fatal(err)
	}
	f.gateway = uuid.NewString()
	f.exec(`INSERT INTO gateways (id, org_id, name, last_heartbeat_at, online, created_at) VALUES ($1, $2, 'dc1', $3, TRUE, $3)`,
		f.gateway, f.org, store.Micros(e.clock.Now()))
	f.resource, f.account = f.newAccount(f.project, "main-db", "app", "first password")
	return f
}

func (f *fixture) exec(q string, args ...any) {
	f.t.Helper()
	if _, err := f.e.sqlDB().Exec(q, args...); err != nil {
		f.t.Fatalf("%s: %v", q, err)
	}
}

func (f *fixture) newProject(name string) string {
	f.t.Helper()
	var p struct{ ID string }
	if st := f.admin.call("POST", "/api/v1/projects", map[string]any{"name": name}, &p); st != 201 {
		f.t.Fatalf("create project: %d %s", st, f.admin.problem().raw)
	}
	return p.ID
}

// newAccount stores a resource of project on the fixture's gateway and an
// account of it with password (sealed as the PAM service seals it).
func (f *fixture) newAccount(project, resourceName, accountName, password string) (resourceID, accountID string) {
	f.t.Helper()
	now := store.Micros(f.e.clock.Now())
	resourceID, accountID = uuid.NewString(), uuid.NewString()
	f.exec(`INSERT INTO resources (id, project_id, name, kind, gateway_id, host, port, database_name, created_at, updated_at)
		VALUES ($1, $2, $3, 'postgres', $4, '127.0.0.1', 5432, 'app', $5, $5)`, resourceID, project, resourceName, f.gateway, now)
	// The project may use the gateway (an organization admin allowed it).
	f.exec(`INSERT INTO gateway_projects (gateway_id, project_id, created_at) VALUES ($1, $2, $3)
		ON CONFLICT (gateway_id, project_id) DO NOTHING`, f.gateway, project, now)
	f.exec(`INSERT INTO accounts (id, project_id, resource_id, name, username, password_enc, created_at, updated_at)
		VALUES ($1, $2, $3, $4, $4, $5, $6, $6)`, accountID, project, resourceID, accountName, f.seal(project, accountID, password), now)
	return resourceID, accountID
}

func (f *fixture) seal(project, accountID, password string) []byte {
	f.t.Helper()
	sealed, err := f.e.srv.Keyring.Seal(context.Background(), project, "account:"+accountID+":password", []byte(password))
	if err != nil {
		f.t.Fatal(err)
	}
	return sealed
}

// with returns f reporting failures to t (a subtest).
func (f *fixture) with(t *testing.T) *fixture {
	g := *f
	g.t = t
	g.e = &env{}
	*g.e = *f.e
	g.e.t = t
	g.admin = &client{}
	*g.admin = *f.admin
	g.admin.e = g.e
	return &g
}

// member creates a user with role in the fixture's project, logged in.
func (f *fixture) member(email, role string) *client {
	f.t.Helper()
	f.mustCall(f.admin, "POST", "/api/v1/users", map[string]any{"email": email, "password": "password-of-" + email}, 201)
	f.setRole(email, role)
	return f.e.login(email, "password-of-"+email)
}

func (f *fixture) setRole(email, role string) {
	f.t.Helper()
	if st := f.admin.call("PUT", "/api/v1/projects/"+f.project+"/members", map[string]any{"email": email, "role": role}, nil); st != 200 {
		f.t.Fatalf("set member %s: %d %s", email, st, f.admin.problem().raw)
	}
}

// me returns the caller's kind and id.
func (c *client) me() (kind, id string) {
	c.e.t.Helper()
	var m struct{ Kind, ID string }
	if st := c.call("GET", "/api/v1/auth/me", nil, &m); st != 200 {
		c.e.t.Fatalf("me: %d %s", st, c.problem().raw)
	}
	return m.Kind, m.ID
}

// family returns the login (token family) of c's access token.
func (c *client) family() string {
	c.e.t.Helper()
	h := sha256.Sum256([]byte(c.token))
	var fam string
	if err := c.e.sqlDB().QueryRow(`SELECT family_id FROM auth_tokens WHERE token_hash = $1`, h[:]).Scan(&fam); err != nil {
		c.e.t.Fatal(err)
	}
	return fam
}

// session starts an hour-long session of c on the fixture's account, as
// the session service records one: under c's login, its CLI connected now.
func (f *fixture) session(c *client) string {
	f.t.Helper()
	return f.sessionOn(c, f.project, f.resource, f.account)
}

func (f *fixture) sessionOn(c *client, project, resource, account string) string {
	f.t.Helper()
	kind, subject := c.me()
	id := uuid.Must(uuid.NewV7()).String()
	now := f.e.clock.Now()
	f.exec(`INSERT INTO sessions (id, org_id, project_id, subject_kind, subject_id, subject_name, resource_id, resource_name,
		resource_kind, account_id, account_name, account_username, gateway_id, access_method, client_addr, created_at, expires_at,
		status, token_family, client_seen_at)
		VALUES ($1, $2, $3, $4, $5, 'someone', $6, 'main-db', 'postgres', $7, 'app', 'app', $8, 'cli', '127.0.0.1', $9, $10, 'active', $11, $9)`,
		id, f.org, project, kind, subject, resource, account, f.gateway, store.Micros(now), store.Micros(now.Add(time.Hour)), c.family())
	if err := jobs.Schedule(context.Background(), f.e.sqlDB(), now, session.KindExpire, id, now.Add(time.Hour), ""); err != nil {
		f.t.Fatal(err)
	}
	return id
}

// state returns a session's status, end reason and end message, from the store.
func (f *fixture) state(id string) (status, reason, message string) {
	f.t.Helper()
	if err := f.e.sqlDB().QueryRow(`SELECT status, end_reason, end_message FROM sessions WHERE id = $1`, id).
		Scan(&status, &reason, &message); err != nil {
		f.t.Fatal(err)
	}
	return status, reason, message
}

// heartbeat records the gateway as alive now.
func (f *fixture) heartbeat() {
	f.t.Helper()
	f.exec(`UPDATE gateways SET last_heartbeat_at = $1 WHERE id = $2`, store.Micros(f.e.clock.Now()), f.gateway)
}

func newV7(t *testing.T) string {
	t.Helper()
	return uuid.Must(uuid.NewV7()).String()
}

// fakeGateway plays the gateway's side of the fixture's gateway connection:
// it answers every request stream with OK and records its header.
type fakeGateway struct {
	mu      sync.Mutex
	headers []tunnel.Header
}

// attachGateway connects a fakeGateway as the fixture's gateway.
func (f *fixture) attachGateway() *fakeGateway {
	f.t.Helper()
	a, b := net.Pipe()
	srvSide, _ := tunnel.MuxClient(a)
	gwSide, _ := tunnel.MuxServer(b)
	g := &fakeGateway{}
	go f.e.srv.Relay.AttachGateway(f.gateway, "test", srvSide)
	go func() {
		for {
			st, err := gwSide.AcceptStream()
			if err != nil {
				return
			}
			go func() {
				defer st.Close()
				var h tunnel.Header
				if tunnel.ReadFrame(st, &h) != nil {
					return
				}
				g.mu.Lock()
				g.headers = append(g.headers, h)
				g.mu.Unlock()
				_ = tunnel.WriteFrame(st, tunnel.Result{OK: true})
			}()
		}
	}()
	f.t.Cleanup(func() { gwSide.Close() })
	for !f.e.srv.Relay.Connected(f.gateway) {
		time.Sleep(10 * time.Millisecond)
	}
	return g
}

// got returns the headers of the streams of type typ for session id.
func (g *fakeGateway) got(typ, id string) []tunnel.Header {
	g.mu.Lock()
	defer g.mu.Unlock()
	var out []tunnel.Header
	for _, h := range g.headers {
		if h.Type == typ && h.SessionID == id {
			out = append(out, h)
		}
	}
	return out
}
