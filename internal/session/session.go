// Package session holds access sessions: a user's time-boxed access to one
// account. Creating a session signs the CLI's own key for it (the client
// certificate expires with the session) and records the login (token family)
// it was started under.
//
// access.go holds the rules a live session is held to: the relay asks
// AuthorizeConnection for every new connection (from the store, so a
// revocation takes effect at the next connection and a changed password is
// used at once), and EnforceAccess ends every session that breaks a rule as
// soon as a revoking change commits. expiry.go ends sessions past their end,
// whose gateway or CLI has been gone too long (after a grace period from the
// server's start), and re-checks access every tick. logs.go serves a
// session's log to its owner and its project's admins, filtered on the
// server (LogQuery), and checks it whole for project admins (Verify).
// Sessions end by their owner, by a project admin, at expiry, by
// revocation, or when their gateway or CLI is lost; every end (finish) is
// recorded once with its reason and a message, and closes the session's
// connections, gateway first. A session on an account that requires MFA
// starts only with a passed MFA challenge, checked and used up by the
// MFAGate (package mfa) before anything is written; the session.start audit
// entry then says how MFA was passed.
package session

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/danielgtaylor/huma/v2"
	"github.com/google/uuid"

	"github.com/airlockpam/airlock/internal/api"
	"github.com/airlockpam/airlock/internal/audit"
	"github.com/airlockpam/airlock/internal/errs"
	"github.com/airlockpam/airlock/internal/jobs"
	"github.com/airlockpam/airlock/internal/pki"
	"github.com/airlockpam/airlock/internal/project"
	"github.com/airlockpam/airlock/internal/relay"
	"github.com/airlockpam/airlock/internal/store"
	"github.com/airlockpam/airlock/internal/tunnel"
)

// Statuses and end reasons.
const (
	StatusActive = "active"
	StatusEnded  = "ended"

	EndedByUser = tunnel.EndByUser
	Expired     = tunnel.EndExpired
	Terminated  = tunnel.EndTerminated
	Revoked     = tunnel.EndRevoked
	ClientLost  = tunnel.EndClientLost
	GatewayLost = tunnel.EndGatewayLost
	DefaultTTL  = time.Hour
	minimumTTL  = 10 * time.Second
	accessCLI   = "cli"
	accessWeb   = "web"

	// MaxWebSessions is how many live web-console sessions (access method
	// web) a user may have in one project at a time.
	MaxWebSessions = 5
)

// Session is an access session.
type Session struct {
	ID              string     `json:"id"`
	ProjectID       string     `json:"projectId"`
	UserKind        string     `json:"userKind" enum:"user,machine"`
	UserID          string     `json:"userId"`
	UserName        string     `json:"userName"`
	ResourceID      string     `json:"resourceId"`
	ResourceName    string     `json:"resourceName"`
	ResourceKind    string     `json:"resourceKind"`
	AccountID       string     `json:"accountId"`
	AccountName     string     `json:"accountName"`
	AccountUsername string     `json:"accountUsername"`
	GatewayID       string     `json:"gatewayId"`
	AccessMethod    string     `json:"accessMethod" enum:"cli,web"`
	ClientAddr      string     `json:"clientAddr"`
	CreatedAt       time.Time  `json:"createdAt"`
	StartedAt       *time.Time `json:"startedAt,omitempty" doc:"first connection"`
	ExpiresAt       time.Time  `json:"expiresAt"`
	EndedAt         *time.Time `json:"endedAt,omitempty"`
	Duration        string     `json:"duration" doc:"how long the session lasted (so far, while active)"`
	Status          string     `json:"status" enum:"active,ended"`
	EndReason       string     `json:"endReason,omitempty" enum:"ended_by_user,expired,terminated,revoked,client_lost,gateway_lost" doc:"why the session ended: ended_by_user (its owner ended it), expired (its duration was over), terminated (a project admin ended it), revoked (its owner, login, role, account, resource or project went away), client_lost (its airlock CLI, or the server holding its web console, was gone for too long), gateway_lost (its gateway was gone for too long, or deleted)"`
	EndMessage      string     `json:"endMessage,omitempty" doc:"why the session ended, in words, such as \"access was revoked: user removed from the project\""`
}

// Target is a resolved resource account.
type Target struct {
	ResourceID, ResourceName, Kind, GatewayID  string
	AccountID, AccountName, Username, Database string
	Wire                                       tunnel.Target
	// RequireMFA: a session on the account needs an MFA approval (MFAGate).
	RequireMFA bool
}

// MFAGate lets a session on an account that requires MFA start (package
// mfa's Gate): with the id of a passed challenge it uses the challenge up
// and returns how it was passed; otherwise it returns an error, the problem
// that asks for a second factor.
type MFAGate func(ctx context.Context, accountID, accountName, challengeID string) (method string, err error)

// CreateOption sets an optional part of Create.
type CreateOption func(*createOptions)

type createOptions struct{ mfaChallengeID string }

// WithMFAChallenge passes the id of an MFA challenge the caller has passed.
func WithMFAChallenge(id string) CreateOption {
	return func(o *createOptions) { o.mfaChallengeID = id }
}

// TargetResolver finds an account of a resource in a project (by name or
// id), checking that the caller may use it.
type TargetResolver func(ctx context.Context, projectID, resource, account string) (*Target, error)

// Service manages sessions.
type Service struct {
	db       *store.DB
	projects *project.Service
	pki      *pki.Manager
	relay    *relay.Service
	targets  TargetResolver
	current  CurrentTargetResolver
	events   EventStore
	jobs     *jobs.Scheduler // runs expiry (KindExpire); nil: expiry waits for UseJobs
	mfa      MFAGate         // nil: an account that requires MFA cannot be opened
	now      func() time.Time
	// started is when this service started: sessions get a grace period
	// from it before their gateway or CLI counts as lost.
	started time.Time
	liveness
}

// New returns a Service. now may be nil.
func New(db *store.DB, projects *project.Service, p *pki.Manager, r *relay.Service, targets TargetResolver, now func() time.Time) *Service {
	if now == nil {
		now = time.Now
	}
	return &Service{db: db, projects: projects, pki: p, relay: r, targets: targets, now: now, started: now(),
		liveness: liveness{gatewayLostAfter: GatewayLostAfter, clientLostAfter: ClientLostAfter}}
}

const columns = `id, project_id, subject_kind, subject_id, subject_name, resource_id, resource_name, resource_kind,
	account_id, account_name, account_username, gateway_id, access_method, client_addr, created_at, started_at,
	expires_at, ended_at, end_reason, status, end_message`

func (s *Service) scan(row interface{ Scan(...any) error }) (*Session, error) {
	var x Session
	var created, started, expires, ended int64
	err := row.Scan(&x.ID, &x.ProjectID, &x.UserKind, &x.UserID, &x.UserName, &x.ResourceID, &x.ResourceName, &x.ResourceKind,
		&x.AccountID, &x.AccountName, &x.AccountUsername, &x.GatewayID, &x.AccessMethod, &x.ClientAddr, &created, &started,
		&expires, &ended, &x.EndReason, &x.Status, &x.EndMessage)
	if err != nil {
		return nil, err
	}
	x.CreatedAt, x.ExpiresAt = store.Time(created), store.Time(expires)
	if started != 0 {
		t := store.Time(started)
		x.StartedAt = &t
	}
	end := s.now()
	if ended != 0 {
		t := store.Time(ended)
		x.EndedAt, end = &t, t
	}
	x.Duration = end.Sub(x.CreatedAt).Round(time.Second).String()
	return &x, nil
}

// Created is the answer to a new session.
type Created struct {
	Session           *Session `json:"session"`
	ClientCertificate string   `json:"clientCertificate" doc:"PEM certificate for the CLI's key, valid until the session expires"`
	CACertificate     string   `json:"caCertificate" doc:"PEM certificate of the organization's CA: it signs the gateway's certificate"`
	GatewayServerName string   `json:"gatewayServerName" doc:"the name in the gateway's certificate, to verify it"`
	Username          string   `json:"username"`
	Database          string   `json:"database"`
}

// ParseDuration reads a session duration such as 30m, 1h or 2h30m.
func ParseDuration(op, v string, max time.Duration) (time.Duration, error) {
	if v == "" {
		v = DefaultTTL.String()
	}
	d, err := time.ParseDuration(v)
	if err != nil || d <= 0 {
		return 0, errs.InvalidField(op, "body.duration", "not a duration: use a value such as 30m, 1h or 2h30m")
	}
	if d < minimumTTL {
		return 0, errs.InvalidField(op, "body.duration", "a session lasts at least 10s")
	}
	if d > max {
		return 0, errs.InvalidField(op, "body.duration", fmt.Sprintf("%s is longer than this project's maximum session of %s; ask for at most %s (a project admin can change the maximum)", d, max, max))
	}
	return d, nil
}

// SetMFA sets the gate for accounts that require MFA.
func (s *Service) SetMFA(g MFAGate) { s.mfa = g }

// Create starts a session for the caller on an account. An account that
// requires MFA needs a passed challenge (WithMFAChallenge); without one the
// answer is the MFA gate's problem, which names a new challenge.
func (s *Service) Create(ctx context.Context, projectID, resource, account, duration, csrPEM string, opts ...CreateOption) (*Created, error) {
	return s.create(ctx, "session.(*Service).Create", accessCLI, projectID, resource, account, duration, csrPEM, opts...)
}

// CreateWeb starts a session for the caller on a PostgreSQL account whose
// client is the server's web console (access method web): the server made
// the key of csrPEM and connects through the relay itself (relay.DialSession).
// A user has at most MaxWebSessions live web sessions per project. The MFA
// gate applies as for Create: the console cannot open a require-MFA
// account without a passed challenge.
func (s *Service) CreateWeb(ctx context.Context, projectID, resource, account, duration, csrPEM string, opts ...CreateOption) (*Created, error) {
	return s.create(ctx, "session.(*Service).CreateWeb", accessWeb, projectID, resource, account, duration, csrPEM, opts...)
}

func (s *Service) create(ctx context.Context, op, method, projectID, resource, account, duration, csrPEM string, opts ...CreateOption) (*Created, error) {
	var o createOptions
	for _, f := range opts {
		f(&o)
	}
	proj, err := s.projects.Authorize(ctx, projectID, project.RoleMember)
	if err != nil {
		return nil, err
	}
	ttl, err := ParseDuration(op, duration, proj.MaxSession)
	if err != nil {
		return nil, err
	}
	csr, err := pki.ParseCSR([]byte(csrPEM))
	if err != nil {
		return nil, errs.InvalidField(op, "body.csr", err.Error())
	}
	t, err := s.targets(ctx, proj.ID, resource, account)
	if err != nil {
		return nil, err
	}
	if method == accessWeb && t.Kind != "postgres" {
		return nil, errs.E(op, errs.Invalid, "the web console serves PostgreSQL resources only; use `airlock db access` for this one")
	}
	if !s.relay.Connected(t.GatewayID) {
		return nil, errs.Ef(op, errs.Unavailable, "the gateway of resource %q is offline: start it (`airlock gateway --data-dir ...`) and check `airlock gateways list`", t.ResourceName)
	}
	mfaMethod := ""
	if t.RequireMFA {
		if s.mfa == nil {
			return nil, errs.Ef(op, errs.Unavailable, "account %q requires MFA, and this server has no MFA service", t.AccountName)
		}
		if mfaMethod, err = s.mfa(ctx, t.AccountID, t.AccountName, o.mfaChallengeID); err != nil {
			return nil, err // the problem that asks for a code, as it is
		}
	}
	p := api.PrincipalFrom(ctx)
	ca, err := s.pki.ForOrg(ctx, p.OrgID)
	if err != nil {
		return nil, err
	}
	now := s.now()
	id := uuid.Must(uuid.NewV7()).String()
	expires := now.Add(ttl)
	certPEM, serial, err := ca.SignSession(csr, id, expires)
	if err != nil {
		return nil, errs.Wrap(op, errs.Internal, "signing the session certificate failed", err)
	}
	err = s.db.InTx(ctx, func(tx *sql.Tx) error {
		if method == accessWeb {
			var live int
			if err := tx.QueryRowContext(ctx, `SELECT COUNT(*) FROM sessions WHERE project_id = $1 AND subject_kind = $2
				AND subject_id = $3 AND access_method = $4 AND status = $5`, proj.ID, p.Kind, p.ID, accessWeb, StatusActive).Scan(&live); err != nil {
				return err
			}
			if live >= MaxWebSessions {
				return errs.Ef(op, errs.Conflict, "you have %d live web console sessions in this project, the most allowed: end one (close its tab or press End session) first", live)
			}
		}
		if _, err := tx.ExecContext(ctx, `INSERT INTO sessions (org_id, token_family, `+columns+`) VALUES
			($18, $19, $1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, 0, $16, 0, '', $17, '')`,
			id, proj.ID, p.Kind, p.ID, p.Name, t.ResourceID, t.ResourceName, t.Kind, t.AccountID, t.AccountName, t.Username,
			t.GatewayID, method, api.ClientAddr(ctx), store.Micros(now), store.Micros(expires), StatusActive, p.OrgID, p.TokenFamily); err != nil {
			return err
		}
		if err := s.reseal(ctx, tx, id, nil); err != nil {
			return err
		}
		if err := jobs.Schedule(ctx, tx, now, KindExpire, id, expires, ""); err != nil {
			return err
		}
		d := map[string]any{"resource": t.ResourceName, "account": t.AccountName, "expiresAt": expires.UTC().Format(time.RFC3339), "certSerial": serial}
		if mfaMethod != "" {
			d["mfa"] = mfaMethod // passed, and how: totp, email or recovery
		}
		return audit.Record(ctx, tx, audit.By(ctx, audit.Entry{Action: "session.start", TargetKind: "session", TargetID: id, ProjectID: proj.ID, Details: d}))
	})
	if errs.Is(err, errs.Conflict) {
		return nil, err
	}
	if err != nil {
		return nil, errs.Wrap(op, errs.Unavailable, "creating the session failed", err)
	}
	sess, err := s.get(ctx, id)
	if err != nil {
		return nil, err
	}
	return &Created{Session: sess, ClientCertificate: string(certPEM), CACertificate: string(ca.CertPEM()),
		GatewayServerName: pki.GatewayServerName(t.GatewayID), Username: t.Username, Database: t.Database}, nil
}

func (s *Service) get(ctx context.Context, id string) (*Session, error) {
	x, err := s.scan(s.db.QueryRowContext(ctx, `SELECT `+columns+` FROM sessions WHERE id = $1`, id))
	if errors.Is(err, sql.ErrNoRows) {
		return nil, errs.E("session.get", errs.NotFound, "no session with that id, or not one of yours")
	}
	if err != nil {
		return nil, errs.Wrap("session.get", errs.Unavailable, "reading the session failed", err)
	}
	return x, nil
}

// Get returns a session to its owner or to an admin of its project (an
// organization admin, once the project is deleted).
func (s *Service) Get(ctx context.Context, id string) (*Session, error) {
	p, err := api.MustPrincipal(ctx)
	if err != nil {
		return nil, err
	}
	if _, err := uuid.Parse(id); err != nil {
		return nil, errs.E("session.Get", errs.NotFound, "no session with that id, or not one of yours")
	}
	x, err := s.get(ctx, id)
	if err != nil {
		return nil, err
	}
	if x.UserKind == p.Kind && x.UserID == p.ID {
		return x, nil
	}
	if err := s.authorizeAdmin(ctx, x); err != nil {
		return nil, errs.E("session.Get", errs.NotFound, "no session with that id, or not one of yours")
	}
	return x, nil
}

// authorizeAdmin checks that the caller administers the session's project.
// The sessions of a deleted project stay readable (and their logs
// verifiable) by the organization's admins.
func (s *Service) authorizeAdmin(ctx context.Context, x *Session) error {
	_, err := s.projects.Authorize(ctx, x.ProjectID, project.RoleAdmin)
	p := api.PrincipalFrom(ctx)
	if err == nil || p == nil || !p.OrgAdmin || !errs.Is(err, errs.NotFound) {
		return err
	}
	var orphaned int
	if qerr := s.db.QueryRowContext(ctx, `SELECT COUNT(*) FROM sessions s WHERE s.id = $1 AND s.org_id = $2
		AND NOT EXISTS (SELECT 1 FROM projects p WHERE p.id = s.project_id)`, x.ID, p.OrgID).Scan(&orphaned); qerr != nil {
		return errs.Wrap("session.authorizeAdmin", errs.Unavailable, "reading the session failed", qerr)
	}
	if orphaned == 0 {
		return err
	}
	return nil
}

// AuthorizeRelay implements relay.SessionAuthorizer: the caller (from its
// access token) must own the session, and the session must pass
// AuthorizeConnection.
func (s *Service) AuthorizeRelay(ctx context.Context, id string) (*relay.ClientSession, error) {
	const op = "session.(*Service).AuthorizeRelay"
	p, err := api.MustPrincipal(ctx)
	if err != nil {
		return nil, err
	}
	if _, err := uuid.Parse(id); err != nil {
		return nil, errs.E(op, errs.NotFound, "no session with that id, or not one of yours")
	}
	x, err := s.get(ctx, id)
	if err != nil {
		return nil, err
	}
	if x.UserKind != p.Kind || x.UserID != p.ID {
		return nil, errs.E(op, errs.NotFound, "no session with that id, or not one of yours")
	}
	return s.AuthorizeConnection(ctx, id)
}

// MarkStarted implements relay.SessionAuthorizer.
func (s *Service) MarkStarted(ctx context.Context, id string) {
	_, _ = s.db.ExecContext(ctx, `UPDATE sessions SET started_at = $1 WHERE id = $2 AND started_at = 0`, store.Micros(s.now()), id)
}

// End ends a session for a reason: the owner ends their own (reason
// EndedByUser); only an admin of its project terminates it (Terminated).
// Ending a session that has already ended answers it as it is, unchanged
// and without a second audit event. A caller who may not terminate a
// session of another user is told it does not exist.
func (s *Service) End(ctx context.Context, id, reason string) (*Session, error) {
	const op = "session.(*Service).End"
	if reason != EndedByUser && reason != Terminated {
		return nil, errs.Ef(op, errs.Internal, "unexpected end reason %q", reason)
	}
	x, err := s.Get(ctx, id)
	if err != nil {
		return nil, err
	}
	p := api.PrincipalFrom(ctx)
	own := x.UserKind == p.Kind && x.UserID == p.ID
	action := "session.end"
	if reason == Terminated {
		if err := s.authorizeAdmin(ctx, x); err != nil {
			if own {
				return nil, errs.E(op, errs.Forbidden, "only project admins terminate sessions; end your own with `airlock sessions end "+id+"`")
			}
			return nil, errs.E(op, errs.NotFound, "no session with that id, or not one of yours")
		}
		action = "session.terminate"
	} else if !own {
		return nil, errs.E(op, errs.Forbidden, "only the session's owner ends it; project admins terminate it (`airlock sessions terminate "+id+"`)")
	}
	if x.Status != StatusActive {
		return x, nil
	}
	if _, err := s.finish(ctx, id, reason, "", audit.By(ctx, audit.Entry{Action: action})); err != nil {
		return nil, err
	}
	return s.get(ctx, id)
}

// EndWeb ends the caller's own web-console session (reason ended_by_user)
// with why in words (the tab was closed, the console was idle), recorded
// in the session's end message. An ended session is left as it is.
func (s *Service) EndWeb(ctx context.Context, id, why string) error {
	const op = "session.(*Service).EndWeb"
	x, err := s.Get(ctx, id)
	if err != nil {
		return err
	}
	p := api.PrincipalFrom(ctx)
	if x.UserKind != p.Kind || x.UserID != p.ID || x.AccessMethod != accessWeb {
		return errs.E(op, errs.NotFound, "no session with that id, or not one of yours")
	}
	if x.Status != StatusActive {
		return nil
	}
	_, err = s.finish(ctx, id, EndedByUser, why, audit.By(ctx, audit.Entry{Action: "session.end"}))
	return err
}

// finish marks an active session ended for reason (detail, when not empty,
// says why in words), audits it, and closes its connections: first on the
// gateway, then the CLI's. It reports whether this call ended the session
// (false when it had already ended).
func (s *Service) finish(ctx context.Context, id, reason, detail string, ev audit.Entry) (bool, error) {
	var orgID, projectID, gatewayID string
	var expires int64
	now := s.now()
	ended := false
	var message string
	err := s.db.InTx(ctx, func(tx *sql.Tx) error {
		err := tx.QueryRowContext(ctx, `SELECT org_id, project_id, gateway_id, expires_at FROM sessions WHERE id = $1 AND status = $2`,
			id, StatusActive).Scan(&orgID, &projectID, &gatewayID, &expires)
		if errors.Is(err, sql.ErrNoRows) {
			return nil
		}
		if err != nil {
			return err
		}
		message = EndMessage(reason, store.Time(expires))
		if detail != "" {
			message += ": " + detail
		}
		var n int64
		err = s.reseal(ctx, tx, id, func() error {
			res, err := tx.ExecContext(ctx, `UPDATE sessions SET status = $1, end_reason = $2, ended_at = $3, end_message = $4
				WHERE id = $5 AND status = $6`, StatusEnded, reason, store.Micros(now), message, id, StatusActive)
			if err != nil {
				return err
			}
			n, _ = res.RowsAffected()
			return nil
		})
		if err != nil {
			return err
		}
		if n == 0 {
			return nil // another replica ended it first
		}
		if err := jobs.Cancel(ctx, tx, KindExpire, id); err != nil {
			return err
		}
		ended = true
		ev.OrgID, ev.ProjectID, ev.TargetKind, ev.TargetID = orgID, projectID, "session", id
		if ev.Outcome == "" {
			ev.Outcome = audit.Success
		}
		if ev.Details == nil {
			ev.Details = map[string]any{}
		}
		ev.Details["reason"] = reason
		if detail != "" {
			ev.Details["message"] = detail
		}
		return audit.Record(ctx, tx, ev)
	})
	if err != nil {
		return false, errs.Wrap("session.finish", errs.Unavailable, "ending the session failed", err)
	}
	if ended {
		s.relay.CloseSession(ctx, id, gatewayID, reason, message)
	}
	return ended, nil
}

// reseal runs update in tx and authenticates the session's row again
// (EventStore.Reseal); without an event store, it only runs update.
func (s *Service) reseal(ctx context.Context, tx *sql.Tx, id string, update func() error) error {
	if s.events == nil {
		if update == nil {
			return nil
		}
		return update()
	}
	return s.events.Reseal(ctx, tx, id, update)
}

// EndMessage says why a session ended, in words for its clients (the
// gateway sends it to each, prefixed "airlock: ").
func EndMessage(reason string, expires time.Time) string {
	switch reason {
	case Terminated:
		return "session terminated by an administrator"
	case Expired:
		return "session expired at " + expires.UTC().Format(time.RFC3339)
	case EndedByUser:
		return "session ended by its owner"
	case GatewayLost:
		return "session ended: its gateway was lost"
	case ClientLost:
		return "session ended: its client (the airlock CLI, or the server's web console) was unreachable for too long"
	case Revoked:
		return "session ended: access was revoked"
	}
	return "session ended (" + reason + ")"
}

// SessionInput is the body of POST /api/v1/projects/{projectId}/sessions.
type SessionInput struct {
	Resource string `json:"resource" maxLength:"64" doc:"resource name or id"`
	Account  string `json:"account" maxLength:"64" doc:"account name or id"`
	Duration string `json:"duration,omitempty" maxLength:"20" doc:"such as 30m, 1h, 2h30m; default 1h"`
	CSR      string `json:"csr" maxLength:"8192" doc:"PEM certificate request for a key the client made"`
	// MFAChallengeID is a passed MFA challenge, for an account that
	// requires MFA.
	MFAChallengeID string `json:"mfaChallengeId,omitempty" maxLength:"64" doc:"a passed MFA challenge (for an account that requires MFA: the first answer is 403 with a challenge id; pass it with POST /api/v1/mfa/challenges/{id}/verify, then repeat this request with it)"`
}

// Register adds the session operations.
func (s *Service) Register(a huma.API) {
	tags := []string{"Sessions"}
	s.registerList(a)
	s.registerLogs(a)
	huma.Register(a, huma.Operation{
		OperationID: "create-session", Method: http.MethodPost, Path: "/api/v1/projects/{projectId}/sessions", Tags: tags,
		Summary: "Start an access session on an account (project members)", Security: api.Secured,
		DefaultStatus: http.StatusCreated, Errors: []int{403, 404, 422, 423, 503},
	}, func(ctx context.Context, in *struct {
		project.ProjectPath
		Body SessionInput
	}) (*struct{ Body *Created }, error) {
		c, err := s.Create(ctx, in.ProjectID, in.Body.Resource, in.Body.Account, in.Body.Duration, in.Body.CSR, WithMFAChallenge(in.Body.MFAChallengeID))
		return &struct{ Body *Created }{c}, api.Err(ctx, err)
	})
	huma.Register(a, huma.Operation{
		OperationID: "get-session", Method: http.MethodGet, Path: "/api/v1/sessions/{sessionId}", Tags: tags,
		Summary: "Get a session (its owner or a project admin)", Security: api.Secured, Errors: []int{404},
	}, func(ctx context.Context, in *struct {
		SessionID string `path:"sessionId" maxLength:"64"`
	}) (*struct{ Body *Session }, error) {
		x, err := s.Get(ctx, in.SessionID)
		return &struct{ Body *Session }{x}, api.Err(ctx, err)
	})
	huma.Register(a, huma.Operation{
		OperationID: "end-session", Method: http.MethodPost, Path: "/api/v1/sessions/{sessionId}/end", Tags: tags,
		Summary: "End your session (an ended session is returned as it is)", Security: api.Secured, Errors: []int{403, 404},
	}, func(ctx context.Context, in *struct {
		SessionID string `path:"sessionId" maxLength:"64"`
	}) (*struct{ Body *Session }, error) {
		x, err := s.End(ctx, in.SessionID, EndedByUser)
		return &struct{ Body *Session }{x}, api.Err(ctx, err)
	})
	huma.Register(a, huma.Operation{
		OperationID: "terminate-session", Method: http.MethodPost, Path: "/api/v1/sessions/{sessionId}/terminate", Tags: tags,
		Summary:  "Terminate a session and close its connections (project admins; an ended session is returned as it is)",
		Security: api.Secured, Errors: []int{403, 404},
	}, func(ctx context.Context, in *struct {
		SessionID string `path:"sessionId" maxLength:"64"`
	}) (*struct{ Body *Session }, error) {
		x, err := s.End(ctx, in.SessionID, Terminated)
		return &struct{ Body *Session }{x}, api.Err(ctx, err)
	})
}
