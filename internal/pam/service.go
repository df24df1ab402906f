package pam

import (
	"context"
	"database/sql"
	"time"

	"github.com/danielgtaylor/huma/v2"

	"github.com/airlockpam/airlock/internal/api"
	"github.com/airlockpam/airlock/internal/audit"
	"github.com/airlockpam/airlock/internal/errs"
	"github.com/airlockpam/airlock/internal/jobs"
	"github.com/airlockpam/airlock/internal/keyring"
	"github.com/airlockpam/airlock/internal/project"
	"github.com/airlockpam/airlock/internal/store"
	"github.com/airlockpam/airlock/internal/tunnel"
)

// Validator checks credentials before they are saved: it asks the gateway
// of a resource to log in to the database with t.
type Validator interface {
	// Validate returns nil when the login worked. Otherwise it returns an
	// *errs.Error whose code is Invalid (wrong password, TLS failure, missing
	// database) or Unavailable (database unreachable, gateway offline) and
	// whose message tells the user what to fix; it never holds the password.
	Validate(ctx context.Context, gatewayID string, t tunnel.Target) error
}

// Presence tells whether a gateway is connected, to this server replica or
// to another one on the same store.
type Presence interface {
	// Connected reports whether the gateway has a live connection to this
	// server.
	Connected(gatewayID string) bool
	// GatewayOnline reports whether the gateway is connected to any server
	// of the store (its heartbeats are recent).
	GatewayOnline(ctx context.Context, gatewayID string) (bool, error)
}

// GatewayResolver finds a gateway of an organization.
type GatewayResolver interface {
	// ResolveGateway returns the id and name of the gateway named nameOrID,
	// or with that id. An unknown gateway is an *errs.Error with code
	// NotFound.
	ResolveGateway(ctx context.Context, orgID, nameOrID string) (id, name string, err error)
	// GatewayAllowed says whether an organization admin has allowed the
	// project to use the gateway.
	GatewayAllowed(ctx context.Context, gatewayID, projectID string) (bool, error)
	// AllowProjectTx allows the project to use the gateway inside tx and
	// audits it; the caller must be an organization admin.
	AllowProjectTx(ctx context.Context, tx *sql.Tx, gatewayID, projectID string) error
}

// Config configures a Service.
type Config struct {
	DB       *store.DB
	Keyring  *keyring.Keyring
	Projects *project.Service
	// Validator checks account credentials through the gateway; required.
	Validator Validator
	// Gateways resolves gateway names; required.
	Gateways GatewayResolver
	// Rotator changes passwords through gateways (rotation); nil: accounts
	// cannot rotate.
	Rotator Rotator
	// Presence says where gateways are connected (the relay); nil: every
	// gateway is taken to be connected to this server.
	Presence Presence
	// Now is the clock; default time.Now.
	Now func() time.Time
	// BeforePromote, for tests only, is called in a rotation after the
	// gateway changed the password and logged in with it, before the new
	// password is made current: the crash tests stop the server there
	// (see CrashBeforePromoteEnv).
	BeforePromote func()
}

// CrashBeforePromoteEnv names the environment variable that, set to 1,
// makes `airlock server` exit in every account rotation between the
// password change in the database and its promotion in the store. It is
// for the crash tests (internal/e2e) only; never set it in production.
const CrashBeforePromoteEnv = "AIRLOCK_TEST_CRASH_BEFORE_PROMOTE"

// CheckAndSetDefaults validates c and fills in defaults.
func (c *Config) CheckAndSetDefaults() error {
	const op = "pam.Config"
	switch {
	case c.DB == nil:
		return errs.E(op, errs.Internal, "no store")
	case c.Keyring == nil:
		return errs.E(op, errs.Internal, "no keyring")
	case c.Projects == nil:
		return errs.E(op, errs.Internal, "no project service")
	case c.Validator == nil:
		return errs.E(op, errs.Internal, "no credential validator")
	case c.Gateways == nil:
		return errs.E(op, errs.Internal, "no gateway resolver")
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	return nil
}

// Service manages resources and accounts.
type Service struct {
	cfg Config
	db  *store.DB
	// revoked, when set, is called after an account or resource is deleted:
	// it ends the live sessions that used them.
	revoked func(ctx context.Context)
	jobs    *jobs.Scheduler // runs rotations (UseJobs)
}

// OnAccessRevoked sets the function called after a change that may revoke
// live sessions' access commits (the session service's EnforceAccess).
func (s *Service) OnAccessRevoked(f func(ctx context.Context)) { s.revoked = f }

func (s *Service) accessRevoked(ctx context.Context) {
	if s.revoked != nil {
		s.revoked(ctx)
	}
}

// New returns a Service.
func New(cfg Config) (*Service, error) {
	if err := cfg.CheckAndSetDefaults(); err != nil {
		return nil, err
	}
	return &Service{cfg: cfg, db: cfg.DB}, nil
}

// Register adds the resource and account operations to the API.
func (s *Service) Register(a huma.API) {
	s.registerResources(a)
	s.registerAccounts(a)
	s.registerRotation(a)
}

// now returns the clock's time at the store's precision.
func (s *Service) now() time.Time { return store.Time(store.Micros(s.cfg.Now())) }

// resolveGateway returns the id and name of a gateway of the caller's
// organization that projectID may use, and whether the caller (an
// organization admin) names it for the project for the first time: the
// change then allows the project to use it (allowProject). Anyone else gets
// the same refusal for a gateway that does not exist and for one the
// project may not use, so gateway names do not leak.
func (s *Service) resolveGateway(ctx context.Context, op, field, projectID, nameOrID string) (id, name string, allowProject bool, err error) {
	if nameOrID == "" {
		return "", "", false, errs.InvalidField(op, field, "name the gateway that reaches the database (its name or id); `airlock gateways list` shows them")
	}
	p, err := api.MustPrincipal(ctx)
	if err != nil {
		return "", "", false, err
	}
	unavailable := &errs.Error{Op: op, Code: errs.Invalid, Field: field, Msg: "no gateway of that name or id may be used by this project: " +
		"an organization admin allows a project to use a gateway with `airlock gateways allow-project GATEWAY --project-id " + projectID + "`"}
	id, name, err = s.cfg.Gateways.ResolveGateway(ctx, p.OrgID, nameOrID)
	if errs.Is(err, errs.NotFound) {
		if !p.OrgAdmin {
			return "", "", false, unavailable
		}
		return "", "", false, errs.InvalidField(op, field, "no gateway of that name or id in the organization; `airlock gateways list` shows them")
	}
	if err != nil {
		return "", "", false, errs.Wrap(op, errs.Unavailable, "looking up the gateway failed", err)
	}
	ok, err := s.cfg.Gateways.GatewayAllowed(ctx, id, projectID)
	if err != nil {
		return "", "", false, err
	}
	if !ok && !p.OrgAdmin {
		return "", "", false, unavailable
	}
	return id, name, !ok, nil
}

// checkGatewayAllowed refuses a resource whose project may no longer use
// its gateway.
func (s *Service) checkGatewayAllowed(ctx context.Context, op string, r *Resource) error {
	ok, err := s.cfg.Gateways.GatewayAllowed(ctx, r.GatewayID, r.ProjectID)
	if err != nil {
		return err
	}
	if !ok {
		return errs.E(op, errs.Forbidden, "this project may no longer use the gateway of resource "+r.Name+
			": an organization admin allows it again with `airlock gateways allow-project GATEWAY --project-id "+r.ProjectID+
			"`, or a project admin names another gateway")
	}
	return nil
}

// fillGatewayNames sets GatewayName on resources whose gateway still exists.
func (s *Service) fillGatewayNames(ctx context.Context, rs ...*Resource) {
	p := api.PrincipalFrom(ctx)
	if p == nil {
		return
	}
	names := map[string]string{}
	for _, r := range rs {
		name, ok := names[r.GatewayID]
		if !ok {
			if _, n, err := s.cfg.Gateways.ResolveGateway(ctx, p.OrgID, r.GatewayID); err == nil {
				name = n
			}
			names[r.GatewayID] = name
		}
		r.GatewayName = name
	}
}

// validate asks the resource's gateway to log in with t and records the
// attempt, successful or not, in the audit log (action account.validate)
// with the endpoint the credentials went to. Its error goes to the caller
// as it is: it says what is wrong in the user's words.
func (s *Service) validate(ctx context.Context, op string, r *Resource, accountName string, t tunnel.Target) error {
	// An organization admin's change may allow the project to use a new
	// gateway in the same transaction; anyone else needs it allowed now.
	if p := api.PrincipalFrom(ctx); p == nil || !p.OrgAdmin {
		if err := s.checkGatewayAllowed(ctx, op, r); err != nil {
			return err
		}
	}
	verr := s.cfg.Validator.Validate(ctx, r.GatewayID, t)
	ev := audit.By(ctx, audit.Entry{Action: "account.validate", TargetKind: "account", TargetID: t.AccountID, ProjectID: r.ProjectID,
		Details: map[string]any{"account": accountName, "username": t.Username, "resource": r.Name, "resourceId": r.ID,
			"gatewayId": r.GatewayID, "endpoint": r.Endpoint()}})
	if verr != nil {
		ev.Outcome = audit.Failure
		ev.Details["error"] = errs.CodeOf(verr).String()
	}
	if err := s.db.InTx(ctx, func(tx *sql.Tx) error { return audit.Record(ctx, tx, ev) }); err != nil {
		return errs.Wrap(op, errs.Unavailable, "recording the credential check in the audit log failed", err)
	}
	if verr != nil {
		return errs.Wrap(op, errs.Unavailable, "the gateway could not check the credentials", verr)
	}
	return nil
}

// TargetFor returns a resource, one of its accounts (each given by name or
// id) and the decrypted Target a gateway needs to log in as the account. The
// caller must be at least a member of the project. The Target holds the
// password: hand it only to the gateway.
func (s *Service) TargetFor(ctx context.Context, projectID, resource, account string) (*Resource, *Account, tunnel.Target, error) {
	const op = "pam.(*Service).TargetFor"
	proj, err := s.cfg.Projects.Authorize(ctx, projectID, project.RoleMember)
	if err != nil {
		return nil, nil, tunnel.Target{}, err
	}
	r, err := resourceByRef(ctx, s.db, proj.ID, resource)
	if err != nil {
		return nil, nil, tunnel.Target{}, err
	}
	a, err := accountByRef(ctx, s.db, proj.ID, r.ID, account)
	if err != nil {
		return nil, nil, tunnel.Target{}, err
	}
	if err := s.checkGatewayAllowed(ctx, op, &r.Resource); err != nil {
		return nil, nil, tunnel.Target{}, err
	}
	pw, err := s.cfg.Keyring.Open(ctx, proj.ID, passwordAAD(a.ID), a.passwordSealed)
	if err != nil {
		return nil, nil, tunnel.Target{}, errs.Wrap(op, errs.Internal, "opening the account's password failed", err)
	}
	s.fillGatewayNames(ctx, &r.Resource)
	return &r.Resource, &a.Account, r.target(a.ID, a.Username, string(pw)), nil
}

// SessionTarget returns a session's resource and account as they are now,
// and the decrypted Target with the account's current password, without
// checking the caller: the session service calls it for each new connection
// of a session whose owner it has checked. A deleted resource or account is
// a NotFound error.
func (s *Service) SessionTarget(ctx context.Context, projectID, resourceID, accountID string) (*Resource, *Account, tunnel.Target, error) {
	const op = "pam.(*Service).SessionTarget"
	if projectID == "" || resourceID == "" || accountID == "" {
		return nil, nil, tunnel.Target{}, errs.E(op, errs.Invalid, "a session target needs a project, a resource and an account")
	}
	r, err := resourceByRef(ctx, s.db, projectID, resourceID)
	if err != nil {
		return nil, nil, tunnel.Target{}, err
	}
	a, err := accountByRef(ctx, s.db, projectID, r.ID, accountID)
	if err != nil {
		return nil, nil, tunnel.Target{}, err
	}
	if err := s.checkGatewayAllowed(ctx, op, &r.Resource); err != nil {
		return nil, nil, tunnel.Target{}, err
	}
	pw, err := s.cfg.Keyring.Open(ctx, projectID, passwordAAD(a.ID), a.passwordSealed)
	if err != nil {
		return nil, nil, tunnel.Target{}, errs.Wrap(op, errs.Internal, "opening the account's password failed", err)
	}
	return &r.Resource, &a.Account, r.target(a.ID, a.Username, string(pw)), nil
}
