package session_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/airlockpam/airlock/internal/api"
	"github.com/airlockpam/airlock/internal/errs"
	"github.com/airlockpam/airlock/internal/keyring"
	"github.com/airlockpam/airlock/internal/pki"
	"github.com/airlockpam/airlock/internal/project"
	"github.com/airlockpam/airlock/internal/relay"
	"github.com/airlockpam/airlock/internal/session"
	"github.com/airlockpam/airlock/internal/store"
	"github.com/airlockpam/airlock/internal/testenv"
	"github.com/airlockpam/airlock/internal/tunnel"
)

// world is a SQLite store holding one project (admin alice, member bob),
// a gateway the project may use, and one resource with one account.
type world struct {
	db                   *store.DB
	kr                   *keyring.Keyring
	clock                *testenv.Clock
	projects             *project.Service
	sessions             *session.Service
	alice, bob           context.Context
	projectID, gatewayID string
	resourceID           string
	accountID            string
}

func newWorld(t *testing.T) *world {
	t.Helper()
	db, kr := testenv.OpenStore(t)
	w := &world{db: db, kr: kr, clock: testenv.NewClock(time.Date(2026, 12, 3, 12, 0, 0, 0, time.UTC))}
	w.exec(t, `INSERT INTO organizations (id, name, created_at) VALUES ('org', 'org', 0)`)
	w.alice, w.bob = w.user(t, "alice@example.com"), w.user(t, "bob@example.com")

	w.projects = project.New(db, kr, w.clock.Now)
	m := pki.NewManager(db, kr, w.clock.Now)
	r := relay.New(relay.Config{DB: db, PKI: m, Now: w.clock.Now})
	w.sessions = session.New(db, w.projects, m, r, nil, w.clock.Now)
	r.SetSessions(w.sessions)
	w.projects.OnAccessRevoked(func(ctx context.Context) { w.sessions.EnforceAccess(ctx) })
	w.sessions.SetCurrentTargets(func(_ context.Context, projectID, resourceID, accountID string) (*session.Target, error) {
		return &session.Target{ResourceID: resourceID, AccountID: accountID,
			Wire: tunnel.Target{Kind: "postgres", ResourceID: resourceID, AccountID: accountID, Host: "db.internal", Port: 5432}}, nil
	})

	p, err := w.projects.Create(w.alice, "payments", "", "")
	if err != nil {
		t.Fatal(err)
	}
	w.projectID = p.ID
	if _, err := w.projects.SetMember(w.alice, p.ID, "bob@example.com", "", project.RoleMember); err != nil {
		t.Fatal(err)
	}
	w.gatewayID, w.resourceID, w.accountID = uuid.NewString(), uuid.NewString(), uuid.NewString()
	w.exec(t, `INSERT INTO gateways (id, org_id, name, created_at) VALUES ($1, 'org', 'edge', 0)`, w.gatewayID)
	w.exec(t, `INSERT INTO gateway_projects (gateway_id, project_id, created_at) VALUES ($1, $2, 0)`, w.gatewayID, p.ID)
	w.exec(t, `INSERT INTO resources (id, project_id, name, kind, gateway_id, created_at, updated_at)
		VALUES ($1, $2, 'orders', 'postgres', $3, 0, 0)`, w.resourceID, p.ID, w.gatewayID)
	w.exec(t, `INSERT INTO accounts (id, project_id, resource_id, name, username, password_enc, created_at, updated_at)
		VALUES ($1, $2, $3, 'app', 'app', $4, 0, 0)`, w.accountID, p.ID, w.resourceID, []byte{0})
	return w
}

func (w *world) exec(t *testing.T, q string, args ...any) {
	t.Helper()
	if _, err := w.db.Exec(q, args...); err != nil {
		t.Fatal(err)
	}
}

func (w *world) user(t *testing.T, email string) context.Context {
	t.Helper()
	id := uuid.NewString()
	w.exec(t, `INSERT INTO users (id, org_id, email, password_hash, created_at, updated_at) VALUES ($1, 'org', $2, 'x', 0, 0)`, id, email)
	return api.WithPrincipal(context.Background(), &api.Principal{Kind: api.SubjectUser, ID: id, OrgID: "org", Name: email})
}

// start records an active session of the caller in ctx, lasting d, started
// under a login (token family) that has one live token.
func (w *world) start(t *testing.T, ctx context.Context, d time.Duration) string {
	t.Helper()
	p := api.PrincipalFrom(ctx)
	id, family := uuid.NewString(), uuid.NewString()
	now := w.clock.Now()
	w.exec(t, `INSERT INTO auth_tokens (id, kind, token_hash, family_id, subject_kind, subject_id, org_id, expires_at, created_at)
		VALUES ($1, 'access', $2, $3, 'user', $4, 'org', $5, 0)`, uuid.NewString(), []byte(id), family, p.ID, store.Micros(now.Add(time.Hour)))
	w.exec(t, `INSERT INTO sessions (id, org_id, project_id, subject_kind, subject_id, subject_name, resource_id, resource_name, resource_kind,
		account_id, account_name, account_username, gateway_id, access_method, client_addr, created_at, expires_at, status, token_family)
		VALUES ($1, 'org', $2, 'user', $3, $4, $5, 'orders', 'postgres', $6, 'app', 'app', $7, 'cli', '', $8, $9, 'active', $10)`,
		id, w.projectID, p.ID, p.Name, w.resourceID, w.accountID, w.gatewayID, store.Micros(now), store.Micros(now.Add(d)), family)
	return id
}

func (w *world) ended(t *testing.T, id string) (status, reason, message string) {
	t.Helper()
	if err := w.db.QueryRow(`SELECT status, end_reason, end_message FROM sessions WHERE id = $1`, id).Scan(&status, &reason, &message); err != nil {
		t.Fatal(err)
	}
	return
}

// refusedAsEnded checks that a new connection of session id is refused
// with a conflict that says why it ended and what to do.
func (w *world) refusedAsEnded(t *testing.T, id, why string) {
	t.Helper()
	_, err := w.sessions.AuthorizeConnection(context.Background(), id)
	var e *errs.Error
	if !errors.As(err, &e) || e.Code != errs.Conflict {
		t.Fatalf("AuthorizeConnection: %v, want a conflict", err)
	}
	if !strings.Contains(e.Msg, why) || !strings.Contains(e.Msg, "airlock db access") {
		t.Fatalf("AuthorizeConnection says %q; want it to say %q and how to start anew", e.Msg, why)
	}
}

func TestAuthorizeConnection(t *testing.T) {
	w := newWorld(t)
	ctx := context.Background()
	id := w.start(t, w.bob, time.Hour)

	cs, err := w.sessions.AuthorizeConnection(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	if cs.ID != id || cs.GatewayID != w.gatewayID || !cs.ExpiresAt.Equal(w.clock.Now().Add(time.Hour)) {
		t.Fatalf("client session %+v", cs)
	}
	if cs.Target.Host != "db.internal" || cs.Target.AccountID != w.accountID || cs.MaxStatementBytes == 0 || cs.OversizeStatements == "" {
		t.Fatalf("client session target %+v, limits %d %q", cs.Target, cs.MaxStatementBytes, cs.OversizeStatements)
	}

	for _, bad := range []string{"not-a-uuid", uuid.NewString()} {
		if _, err := w.sessions.AuthorizeConnection(ctx, bad); !errs.Is(err, errs.NotFound) {
			t.Fatalf("AuthorizeConnection(%q): %v, want not found", bad, err)
		}
	}

	// At its end a session takes no new connection, and is ended.
	w.clock.Advance(time.Hour)
	w.refusedAsEnded(t, id, "session expired at 2026-12-03T13:00:00Z")
	if status, reason, _ := w.ended(t, id); status != session.StatusEnded || reason != session.Expired {
		t.Fatalf("after its end the session is %s (%s)", status, reason)
	}
}

// TestRevocationEndsSessions: a change that takes access away ends the
// sessions it concerns, at once and with the reason in words, and leaves
// the others alone.
func TestRevocationEndsSessions(t *testing.T) {
	w := newWorld(t)
	bobs := w.start(t, w.bob, time.Hour)
	alices := w.start(t, w.alice, time.Hour)

	if n := w.sessions.EnforceAccess(context.Background()); n != 0 {
		t.Fatalf("EnforceAccess ended %d sessions with nothing revoked", n)
	}
	if _, err := w.projects.SetMember(w.alice, w.projectID, "bob@example.com", "", project.RoleViewer); err != nil {
		t.Fatal(err)
	}
	const why = "session ended: access was revoked: user's role in the project lowered to viewer"
	status, reason, message := w.ended(t, bobs)
	if status != session.StatusEnded || reason != session.Revoked || message != why {
		t.Fatalf("bob's session: %s, %s, %q; want ended, revoked, %q", status, reason, message, why)
	}
	w.refusedAsEnded(t, bobs, why)
	if status, _, _ := w.ended(t, alices); status != session.StatusActive {
		t.Fatal("alice's session ended though her access did not change")
	}
	var ends int
	if err := w.db.QueryRow(`SELECT COUNT(*) FROM audit_logs WHERE action = 'session.end' AND target_id = $1`, bobs).Scan(&ends); err != nil || ends != 1 {
		t.Fatalf("session.end audit entries for bob's session: %d %v; want 1", ends, err)
	}

	// A deleted gateway ends its sessions as lost, not revoked.
	w.exec(t, `DELETE FROM gateways WHERE id = $1`, w.gatewayID)
	if n := w.sessions.EnforceAccess(context.Background()); n != 1 {
		t.Fatalf("EnforceAccess after the gateway was deleted ended %d sessions, want 1", n)
	}
	if _, reason, message := w.ended(t, alices); reason != session.GatewayLost || !strings.HasSuffix(message, ": the gateway was deleted") {
		t.Fatalf("alice's session: %s, %q", reason, message)
	}
	if n := w.sessions.EnforceAccess(context.Background()); n != 0 {
		t.Fatalf("a second EnforceAccess ended %d sessions again", n)
	}
}

// TestLogoutEndsSessions: a session lives no longer than the login it was
// started under, checked at its next connection.
func TestLogoutEndsSessions(t *testing.T) {
	w := newWorld(t)
	id := w.start(t, w.bob, time.Hour)
	w.exec(t, `UPDATE auth_tokens SET revoked_at = 1 WHERE subject_id = $1`, api.PrincipalFrom(w.bob).ID)
	w.refusedAsEnded(t, id, "login revoked")
	if _, reason, _ := w.ended(t, id); reason != session.Revoked {
		t.Fatalf("reason %q, want revoked", reason)
	}
}
