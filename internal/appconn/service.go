package appconn

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"regexp"
	"strings"
	"time"

	"github.com/google/uuid"

	"github.com/airlockpam/airlock/internal/api"
	"github.com/airlockpam/airlock/internal/audit"
	"github.com/airlockpam/airlock/internal/errs"
	"github.com/airlockpam/airlock/internal/keyring"
	"github.com/airlockpam/airlock/internal/project"
	"github.com/airlockpam/airlock/internal/proxy/postgres"
	"github.com/airlockpam/airlock/internal/store"
	"github.com/airlockpam/airlock/internal/tunnel"
)

// App and method names of the API.
const (
	AppPostgres            = "postgres"
	MethodUsernamePassword = "username-and-password"
)

var nameRE = regexp.MustCompile(`^[a-z0-9]+(-[a-z0-9]+)*$`)

// Relay reaches a gateway: a login check, a password change, and a check
// of the users a rotation changes.
type Relay interface {
	Validate(ctx context.Context, gatewayID string, t tunnel.Target) error
	Rotate(ctx context.Context, gatewayID string, admin tunnel.Target, rot tunnel.Rotation) (tunnel.Result, error)
	CheckRoles(ctx context.Context, gatewayID string, admin tunnel.Target, roles []string) (tunnel.Result, error)
	ResolveGateway(ctx context.Context, orgID, nameOrID string) (id, name string, err error)
	GatewayAllowed(ctx context.Context, gatewayID, projectID string) (bool, error)
}

// gateway resolves a gateway's name or id to the id of a gateway the
// project may use; "" stays "" (the server connects itself).
func (s *Service) gateway(ctx context.Context, op, projectID, ref string) (string, error) {
	if ref == "" {
		return "", nil
	}
	refused := errs.InvalidField(op, "body.gatewayId", "no gateway of that name or id may be used by this project: an organization admin "+
		"allows a project to use a gateway with `airlock gateways allow-project GATEWAY --project-id "+projectID+"`")
	if s.cfg.Relay == nil {
		return "", refused
	}
	id, _, err := s.cfg.Relay.ResolveGateway(ctx, api.PrincipalFrom(ctx).OrgID, ref)
	if errs.Is(err, errs.NotFound) {
		return "", refused
	}
	if err != nil {
		return "", errs.Wrap(op, errs.Unavailable, "looking up the gateway failed", err)
	}
	ok, err := s.cfg.Relay.GatewayAllowed(ctx, id, projectID)
	if err != nil {
		return "", errs.Wrap(op, errs.Unavailable, "looking up the gateway failed", err)
	}
	if !ok {
		return "", refused
	}
	return id, nil
}

// Credentials are a PostgreSQL connection's settings; Password only in a request.
type Credentials struct {
	Host                  string `json:"host" minLength:"1" maxLength:"255"`
	Port                  int    `json:"port" minimum:"1" maximum:"65535"`
	Database              string `json:"database" minLength:"1" maxLength:"63"`
	Username              string `json:"username" minLength:"1" maxLength:"63"`
	Password              string `json:"password,omitempty" maxLength:"1024"`
	SSLEnabled            bool   `json:"sslEnabled"`
	SSLRejectUnauthorized bool   `json:"sslRejectUnauthorized"`
	SSLCertificate        string `json:"sslCertificate,omitempty" maxLength:"65536" doc:"PEM CA certificate trusted for the server (else the system's)"`
}

// Connection is an app connection as the API shows it: never its password.
type Connection struct {
	ID                           string      `json:"id"`
	Name                         string      `json:"name"`
	Description                  string      `json:"description,omitempty"`
	ProjectID                    string      `json:"projectId"`
	Version                      int         `json:"version"`
	OrgID                        string      `json:"orgId"`
	CreatedAt                    time.Time   `json:"createdAt"`
	UpdatedAt                    time.Time   `json:"updatedAt"`
	App                          string      `json:"app"`
	Method                       string      `json:"method"`
	IsPlatformManagedCredentials bool        `json:"isPlatformManagedCredentials"`
	GatewayID                    string      `json:"gatewayId,omitempty"`
	Credentials                  Credentials `json:"credentials"`
	// Error is set when a platform-managed password change was cut short
	// and could not be settled yet.
	Error string `json:"error,omitempty"`

	password, pending []byte
	attempt           string
}

// UsedBy names what uses a connection (a secret rotation), or "".
type UsedBy func(ctx context.Context, connectionID string) (string, error)

// Config builds a Service.
type Config struct {
	DB       *store.DB
	Keyring  *keyring.Keyring
	Projects *project.Service
	Relay    Relay
	Guard    *Guard
	Now      func() time.Time
}

// Service stores app connections.
type Service struct {
	cfg    Config
	usedBy UsedBy
	// afterChange runs between a platform-managed password change and its
	// promotion (tests inject a failure there).
	afterChange func() error
}

// New returns a Service.
func New(cfg Config) *Service {
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Guard == nil {
		cfg.Guard = &Guard{}
	}
	return &Service{cfg: cfg}
}

// SetUsedBy sets the check that refuses deleting a connection in use.
func (s *Service) SetUsedBy(f UsedBy) { s.usedBy = f }

// SetAfterPasswordChange sets a hook run after a platform-managed password
// was changed and before it is promoted (tests).
func (s *Service) SetAfterPasswordChange(f func() error) { s.afterChange = f }

func passwordAAD(id string) string         { return "appconn:" + id + ":password" }
func pendingAAD(id, attempt string) string { return "appconn:" + id + ":pending:" + attempt }

// CreateInput is a new connection.
type CreateInput struct {
	Name                         string
	Description                  string
	Method                       string
	IsPlatformManagedCredentials bool
	ProjectID                    string
	GatewayID                    string
	Credentials                  Credentials
}

func checkCredentials(op string, c *Credentials, needPassword bool) error {
	c.Host = strings.TrimSpace(c.Host)
	if c.Host == "" || strings.ContainsAny(c.Host, " /?#@,") {
		return errs.InvalidField(op, "body.credentials.host", "the host is one host name or IP address")
	}
	if c.Port == 0 {
		c.Port = 5432
	}
	if c.Port < 1 || c.Port > 65535 {
		return errs.InvalidField(op, "body.credentials.port", "the port is a number from 1 to 65535")
	}
	if c.Database == "" {
		return errs.InvalidField(op, "body.credentials.database", "give the database to connect to")
	}
	if c.Username == "" {
		return errs.InvalidField(op, "body.credentials.username", "give the database user")
	}
	if needPassword && c.Password == "" {
		return errs.InvalidField(op, "body.credentials.password", "give the user's password")
	}
	if !c.SSLEnabled && c.SSLCertificate != "" {
		return errs.InvalidField(op, "body.credentials.sslCertificate", "a certificate needs sslEnabled")
	}
	return nil
}

func tlsOf(c Credentials) tunnel.TLS {
	return tunnel.TLS{Enabled: c.SSLEnabled, RejectUnauthorized: c.SSLRejectUnauthorized, CAPEM: c.SSLCertificate}
}

func target(gatewayID string, c Credentials, password string) tunnel.Target {
	return tunnel.Target{Kind: tunnel.KindPostgres, Host: c.Host, Port: c.Port, Database: c.Database, TLS: tlsOf(c),
		Username: c.Username, Password: password}
}

// config returns the direct connection's settings, dialing only checked addresses.
func (s *Service) config(ctx context.Context, c Credentials, password string) (postgres.Config, error) {
	dial, err := s.cfg.Guard.Dialer(ctx, c.Host, c.Port)
	if err != nil {
		return postgres.Config{}, err
	}
	return postgres.Config{Host: c.Host, Port: c.Port, Database: c.Database, User: c.Username, Password: password, TLS: tlsOf(c), Dial: dial}, nil
}

// login logs in with c and password, directly or through the gateway.
func (s *Service) login(ctx context.Context, op, gatewayID string, c Credentials, password string) error {
	if gatewayID != "" {
		if err := s.cfg.Relay.Validate(ctx, gatewayID, target(gatewayID, c, password)); err != nil {
			return errs.Wrap(op, errs.Invalid, "the gateway could not log in", err)
		}
		return nil
	}
	cfg, err := s.config(ctx, c, password)
	if err != nil {
		var re *RefusedError
		if errors.As(err, &re) {
			return errs.InvalidField(op, "body.credentials.host", "the connection was not saved: "+re.Msg)
		}
		return errs.InvalidField(op, "body.credentials.host", "the connection was not saved: "+err.Error())
	}
	if res := postgres.Validate(ctx, cfg); !res.OK {
		code := errs.Invalid
		if res.Code == tunnel.CodeInternal {
			code = errs.Unavailable
		}
		return errs.E(op, code, "the connection was not saved: logging in failed: "+res.Message)
	}
	return nil
}

// changePassword sets user's password to newPw as the user itself.
func (s *Service) changePassword(ctx context.Context, gatewayID string, c Credentials, current, newPw string) (tunnel.Result, error) {
	return s.setPassword(ctx, gatewayID, c, current, c.Username, newPw)
}

// setPassword logs in with c and current and sets username's password to
// newPw (postgres.Rotate: a SCRAM verifier), then logs in as username.
func (s *Service) setPassword(ctx context.Context, gatewayID string, c Credentials, current, username, newPw string) (tunnel.Result, error) {
	rot := tunnel.Rotation{Username: username, NewPassword: newPw}
	if gatewayID != "" {
		return s.cfg.Relay.Rotate(ctx, gatewayID, target(gatewayID, c, current), rot)
	}
	cfg, err := s.config(ctx, c, current)
	if err != nil {
		return tunnel.Result{Code: tunnel.CodeInvalid, Message: err.Error()}, nil
	}
	return postgres.Rotate(ctx, cfg, rot), nil
}

// Create logs in with the connection and saves it (project admins). With
// platform-managed credentials it then gives the user a new password.
func (s *Service) Create(ctx context.Context, in CreateInput) (*Connection, error) {
	const op = "appconn.(*Service).Create"
	proj, err := s.cfg.Projects.Authorize(ctx, in.ProjectID, project.RoleAdmin)
	if err != nil {
		return nil, err
	}
	if !nameRE.MatchString(in.Name) || len(in.Name) > 64 {
		return nil, errs.InvalidField(op, "body.name", "the name is a slug: lower-case letters and digits, separated by single hyphens, up to 64")
	}
	if in.Method != MethodUsernamePassword {
		return nil, errs.InvalidField(op, "body.method", "the method is username-and-password")
	}
	if err := checkCredentials(op, &in.Credentials, true); err != nil {
		return nil, err
	}
	if in.GatewayID, err = s.gateway(ctx, op, proj.ID, in.GatewayID); err != nil {
		return nil, err
	}
	if _, err := s.byName(ctx, proj.ID, in.Name); err == nil {
		return nil, errs.Ef(op, errs.Conflict, "the project already has an app connection named %s", in.Name)
	}
	if err := s.login(ctx, op, in.GatewayID, in.Credentials, in.Credentials.Password); err != nil {
		return nil, err
	}
	now := s.cfg.Now()
	c := &Connection{ID: uuid.Must(uuid.NewV7()).String(), Name: in.Name, Description: in.Description, ProjectID: proj.ID, Version: 1,
		OrgID: api.PrincipalFrom(ctx).OrgID, CreatedAt: store.Time(store.Micros(now)), UpdatedAt: store.Time(store.Micros(now)), App: AppPostgres,
		Method: in.Method, IsPlatformManagedCredentials: in.IsPlatformManagedCredentials, GatewayID: in.GatewayID, Credentials: in.Credentials}
	if c.password, err = s.cfg.Keyring.Seal(ctx, proj.ID, passwordAAD(c.ID), []byte(in.Credentials.Password)); err != nil {
		return nil, err
	}
	var newPw string
	if in.IsPlatformManagedCredentials {
		if newPw, err = keyring.NewPassword(); err != nil {
			return nil, err
		}
		c.attempt = uuid.Must(uuid.NewV7()).String()
		if c.pending, err = s.cfg.Keyring.Seal(ctx, proj.ID, pendingAAD(c.ID, c.attempt), []byte(newPw)); err != nil {
			return nil, err
		}
	}
	err = s.cfg.DB.InTx(ctx, func(tx *sql.Tx) error {
		if _, err := tx.ExecContext(ctx, `INSERT INTO app_connections (id, project_id, name, description, app, method, platform_managed, gateway_id,
			host, port, database_name, username, password_enc, pending_password_enc, pending_attempt, ssl_enabled, ssl_reject_unauthorized,
			ssl_certificate, version, created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, 1, $19, $19)`,
			c.ID, proj.ID, c.Name, c.Description, c.App, c.Method, c.IsPlatformManagedCredentials, c.GatewayID, c.Credentials.Host, c.Credentials.Port,
			c.Credentials.Database, c.Credentials.Username, c.password, c.pending, c.attempt, c.Credentials.SSLEnabled, c.Credentials.SSLRejectUnauthorized,
			c.Credentials.SSLCertificate, store.Micros(now)); err != nil {
			if store.IsUniqueViolation(err) {
				return errs.Ef(op, errs.Conflict, "the project already has an app connection named %s", in.Name)
			}
			return err
		}
		return audit.Record(ctx, tx, audit.By(ctx, audit.Entry{Action: "appconnection.create", TargetKind: "app-connection", TargetID: c.ID,
			ProjectID: proj.ID, Details: map[string]any{"name": c.Name, "host": c.Credentials.Host, "username": c.Credentials.Username,
				"platformManaged": c.IsPlatformManagedCredentials, "gatewayId": c.GatewayID}}))
	})
	if err != nil {
		return nil, errs.Wrap(op, errs.Unavailable, "saving the app connection failed", err)
	}
	c.Credentials.Password = ""
	if !in.IsPlatformManagedCredentials {
		return c, nil
	}
	res, rerr := s.changePassword(ctx, c.GatewayID, in.Credentials, in.Credentials.Password, newPw)
	switch {
	case rerr == nil && res.OK:
		if s.afterChange != nil {
			if err := s.afterChange(); err != nil {
				return nil, s.keepPending(ctx, op, c, err.Error())
			}
		}
		if err := s.promote(ctx, c); err != nil {
			return nil, s.keepPending(ctx, op, c, err.Error())
		}
		return c, nil
	case rerr == nil && res.PasswordUnchanged():
		// The database kept the original password: nothing is kept.
		s.remove(ctx, c.ID)
		return nil, errs.E(op, errs.Invalid, "the connection was not saved: setting a new password for "+c.Credentials.Username+" failed: "+res.Message)
	default:
		why := res.Message
		if rerr != nil {
			why = rerr.Error()
		}
		pw, err := s.settle(ctx, c)
		if err != nil {
			return nil, s.keepPending(ctx, op, c, why+"; "+err.Error())
		}
		if pw == newPw {
			return c, nil
		}
		s.remove(ctx, c.ID)
		return nil, errs.E(op, errs.Invalid, "the connection was not saved: setting a new password failed: "+why)
	}
}

// keepPending records that a platform-managed connection's new password
// could not be promoted yet; it stays sealed as pending and the next use
// settles it.
func (s *Service) keepPending(ctx context.Context, op string, c *Connection, why string) error {
	_, _ = s.cfg.DB.ExecContext(ctx, `UPDATE app_connections SET status_error = $1 WHERE id = $2`, why, c.ID)
	return errs.E(op, errs.Unavailable, "the new password was set in the database but saving it failed ("+why+"); it is kept sealed as pending and the next use of connection "+c.Name+" settles it")
}

func (s *Service) remove(ctx context.Context, id string) {
	_, _ = s.cfg.DB.ExecContext(context.WithoutCancel(ctx), `DELETE FROM app_connections WHERE id = $1`, id)
}

// promote makes c's pending password its password.
func (s *Service) promote(ctx context.Context, c *Connection) error {
	pw, err := s.cfg.Keyring.Open(ctx, c.ProjectID, pendingAAD(c.ID, c.attempt), c.pending)
	if err != nil {
		return err
	}
	sealed, err := s.cfg.Keyring.Seal(ctx, c.ProjectID, passwordAAD(c.ID), pw)
	if err != nil {
		return err
	}
	return s.cfg.DB.InTx(ctx, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, `UPDATE app_connections SET password_enc = $1, pending_password_enc = NULL, pending_attempt = '', status_error = ''
			WHERE id = $2 AND pending_attempt = $3`, sealed, c.ID, c.attempt)
		if err != nil {
			return err
		}
		if n, _ := res.RowsAffected(); n == 0 {
			return errors.New("the connection changed while its password was set")
		}
		c.password, c.pending, c.attempt, c.Error = sealed, nil, "", ""
		return audit.Record(ctx, tx, audit.Entry{OrgID: c.OrgID, ActorKind: "system", ActorID: "appconn", ActorName: "app connections",
			Action: "appconnection.password.set", Outcome: audit.Success, TargetKind: "app-connection", TargetID: c.ID, ProjectID: c.ProjectID,
			Details: map[string]any{"name": c.Name, "username": c.Credentials.Username}})
	})
}

// settle resolves a pending password: kept when it logs in, dropped when
// the stored one does; the password that logs in is returned.
func (s *Service) settle(ctx context.Context, c *Connection) (string, error) {
	if c.pending != nil {
		pw, err := s.cfg.Keyring.Open(ctx, c.ProjectID, pendingAAD(c.ID, c.attempt), c.pending)
		if err != nil {
			return "", err
		}
		if err := s.login(ctx, "appconn.settle", c.GatewayID, c.Credentials, string(pw)); err == nil {
			return string(pw), s.promote(ctx, c)
		}
	}
	pw, err := s.cfg.Keyring.Open(ctx, c.ProjectID, passwordAAD(c.ID), c.password)
	if err != nil {
		return "", err
	}
	if err := s.login(ctx, "appconn.settle", c.GatewayID, c.Credentials, string(pw)); err != nil {
		if c.pending != nil {
			return "", fmt.Errorf("neither the new password nor the stored one logs in: %w", err)
		}
		return "", err
	}
	if c.pending != nil {
		if _, err := s.cfg.DB.ExecContext(ctx, `UPDATE app_connections SET pending_password_enc = NULL, pending_attempt = '' WHERE id = $1 AND pending_attempt = $2`,
			c.ID, c.attempt); err != nil {
			return "", err
		}
		c.pending, c.attempt = nil, ""
	}
	return string(pw), nil
}

const columns = `id, project_id, name, description, app, method, platform_managed, gateway_id, host, port, database_name, username,
	password_enc, pending_password_enc, pending_attempt, ssl_enabled, ssl_reject_unauthorized, ssl_certificate, status_error, version, created_at, updated_at`

func scanConn(row interface{ Scan(...any) error }) (*Connection, error) {
	c := &Connection{}
	var created, updated int64
	err := row.Scan(&c.ID, &c.ProjectID, &c.Name, &c.Description, &c.App, &c.Method, &c.IsPlatformManagedCredentials, &c.GatewayID,
		&c.Credentials.Host, &c.Credentials.Port, &c.Credentials.Database, &c.Credentials.Username, &c.password, &c.pending, &c.attempt,
		&c.Credentials.SSLEnabled, &c.Credentials.SSLRejectUnauthorized, &c.Credentials.SSLCertificate, &c.Error, &c.Version, &created, &updated)
	if err != nil {
		return nil, err
	}
	if len(c.pending) == 0 {
		c.pending = nil
	}
	c.CreatedAt, c.UpdatedAt = store.Time(created), store.Time(updated)
	return c, nil
}

func (s *Service) byName(ctx context.Context, projectID, name string) (*Connection, error) {
	return s.find(ctx, `SELECT `+columns+` FROM app_connections WHERE project_id = $1 AND name = $2`, projectID, name)
}

func (s *Service) find(ctx context.Context, q string, args ...any) (*Connection, error) {
	c, err := scanConn(s.cfg.DB.QueryRowContext(ctx, q, args...))
	if errors.Is(err, sql.ErrNoRows) {
		return nil, errs.E("appconn.find", errs.NotFound, "no such app connection")
	}
	if err != nil {
		return nil, errs.Wrap("appconn.find", errs.Unavailable, "reading the app connection failed", err)
	}
	return c, s.withOrg(ctx, c)
}

func (s *Service) withOrg(ctx context.Context, c *Connection) error {
	return s.cfg.DB.QueryRowContext(ctx, `SELECT org_id FROM projects WHERE id = $1`, c.ProjectID).Scan(&c.OrgID)
}

// Get returns a connection by id (project viewers).
func (s *Service) Get(ctx context.Context, id string) (*Connection, error) {
	c, err := s.find(ctx, `SELECT `+columns+` FROM app_connections WHERE id = $1`, id)
	if err != nil {
		return nil, err
	}
	if _, err := s.cfg.Projects.Authorize(ctx, c.ProjectID, project.RoleViewer); err != nil {
		return nil, err
	}
	return c, nil
}

// GetByName returns a project's connection by name (project viewers).
func (s *Service) GetByName(ctx context.Context, projectID, name string) (*Connection, error) {
	proj, err := s.cfg.Projects.Authorize(ctx, projectID, project.RoleViewer)
	if err != nil {
		return nil, err
	}
	return s.byName(ctx, proj.ID, name)
}

// Resolve returns a project's connection by id or name (project viewers).
func (s *Service) Resolve(ctx context.Context, projectID, ref string) (*Connection, error) {
	proj, err := s.cfg.Projects.Authorize(ctx, projectID, project.RoleViewer)
	if err != nil {
		return nil, err
	}
	return s.find(ctx, `SELECT `+columns+` FROM app_connections WHERE project_id = $1 AND (id = $2 OR name = $2)`, proj.ID, ref)
}

// List returns a project's connections (project viewers).
func (s *Service) List(ctx context.Context, projectID string) ([]Connection, error) {
	const op = "appconn.(*Service).List"
	proj, err := s.cfg.Projects.Authorize(ctx, projectID, project.RoleViewer)
	if err != nil {
		return nil, err
	}
	var orgID string
	if err := s.cfg.DB.QueryRowContext(ctx, `SELECT org_id FROM projects WHERE id = $1`, proj.ID).Scan(&orgID); err != nil {
		return nil, errs.Wrap(op, errs.Unavailable, "listing app connections failed", err)
	}
	rows, err := s.cfg.DB.QueryContext(ctx, `SELECT `+columns+` FROM app_connections WHERE project_id = $1 ORDER BY name`, proj.ID)
	if err != nil {
		return nil, errs.Wrap(op, errs.Unavailable, "listing app connections failed", err)
	}
	defer rows.Close()
	out := []Connection{}
	for rows.Next() {
		c, err := scanConn(rows)
		if err != nil {
			return nil, errs.Wrap(op, errs.Unavailable, "listing app connections failed", err)
		}
		c.OrgID = orgID
		out = append(out, *c)
	}
	return out, rows.Err()
}

// UpdateInput changes a connection; nil fields stay.
type UpdateInput struct {
	Name        *string
	Description *string
	GatewayID   *string
	Credentials *Credentials
}

// Update changes a connection (project admins). New credentials or a new
// gateway are logged in with first; a platform-managed connection's
// credentials cannot change.
func (s *Service) Update(ctx context.Context, id string, in UpdateInput) (*Connection, error) {
	const op = "appconn.(*Service).Update"
	c, err := s.Get(ctx, id)
	if err != nil {
		return nil, err
	}
	if _, err := s.cfg.Projects.Authorize(ctx, c.ProjectID, project.RoleAdmin); err != nil {
		return nil, err
	}
	if in.Name != nil {
		if !nameRE.MatchString(*in.Name) || len(*in.Name) > 64 {
			return nil, errs.InvalidField(op, "body.name", "the name is a slug: lower-case letters and digits, separated by single hyphens, up to 64")
		}
		c.Name = *in.Name
	}
	if in.Description != nil {
		c.Description = *in.Description
	}
	relogin := false
	if in.GatewayID != nil {
		id, err := s.gateway(ctx, op, c.ProjectID, *in.GatewayID)
		if err != nil {
			return nil, err
		}
		if id != c.GatewayID {
			c.GatewayID, relogin = id, true
		}
	}
	if c.IsPlatformManagedCredentials && in.Credentials != nil {
		return nil, errs.InvalidField(op, "body.credentials", "the credentials of a platform-managed connection cannot be changed; create a new connection instead")
	}
	password := ""
	if in.Credentials != nil {
		if err := checkCredentials(op, in.Credentials, false); err != nil {
			return nil, err
		}
		password = in.Credentials.Password
		in.Credentials.Password = ""
		c.Credentials, relogin = *in.Credentials, true
	}
	sealed := c.password
	if password != "" {
		if sealed, err = s.cfg.Keyring.Seal(ctx, c.ProjectID, passwordAAD(c.ID), []byte(password)); err != nil {
			return nil, err
		}
	} else if relogin {
		if password, err = s.settle(ctx, c); err != nil && !c.IsPlatformManagedCredentials {
			pw, oerr := s.cfg.Keyring.Open(ctx, c.ProjectID, passwordAAD(c.ID), c.password)
			if oerr != nil {
				return nil, oerr
			}
			password, err = string(pw), nil
		}
		if err != nil {
			return nil, err
		}
		sealed = c.password
	}
	if relogin {
		if err := s.login(ctx, op, c.GatewayID, c.Credentials, password); err != nil {
			return nil, err
		}
	}
	now := store.Micros(s.cfg.Now())
	err = s.cfg.DB.InTx(ctx, func(tx *sql.Tx) error {
		if _, err := tx.ExecContext(ctx, `UPDATE app_connections SET name = $1, description = $2, gateway_id = $3, host = $4, port = $5, database_name = $6,
			username = $7, password_enc = $8, ssl_enabled = $9, ssl_reject_unauthorized = $10, ssl_certificate = $11, version = version + 1, updated_at = $12
			WHERE id = $13`, c.Name, c.Description, c.GatewayID, c.Credentials.Host, c.Credentials.Port, c.Credentials.Database, c.Credentials.Username,
			sealed, c.Credentials.SSLEnabled, c.Credentials.SSLRejectUnauthorized, c.Credentials.SSLCertificate, now, c.ID); err != nil {
			if store.IsUniqueViolation(err) {
				return errs.Ef(op, errs.Conflict, "the project already has an app connection named %s", c.Name)
			}
			return err
		}
		return audit.Record(ctx, tx, audit.By(ctx, audit.Entry{Action: "appconnection.update", TargetKind: "app-connection", TargetID: c.ID,
			ProjectID: c.ProjectID, Details: map[string]any{"name": c.Name, "credentialsChanged": in.Credentials != nil}}))
	})
	if err != nil {
		return nil, errs.Wrap(op, errs.Unavailable, "saving the app connection failed", err)
	}
	return s.Get(ctx, id)
}

// Delete removes a connection no rotation uses (project admins).
func (s *Service) Delete(ctx context.Context, id string) error {
	const op = "appconn.(*Service).Delete"
	c, err := s.Get(ctx, id)
	if err != nil {
		return err
	}
	if _, err := s.cfg.Projects.Authorize(ctx, c.ProjectID, project.RoleAdmin); err != nil {
		return err
	}
	if s.usedBy != nil {
		by, err := s.usedBy(ctx, c.ID)
		if err != nil {
			return errs.Wrap(op, errs.Unavailable, "checking what uses the connection failed", err)
		}
		if by != "" {
			return errs.Ef(op, errs.Conflict, "app connection %s is used by %s; delete that first", c.Name, by)
		}
	}
	err = s.cfg.DB.InTx(ctx, func(tx *sql.Tx) error {
		if _, err := tx.ExecContext(ctx, `DELETE FROM app_connections WHERE id = $1`, c.ID); err != nil {
			return err
		}
		return audit.Record(ctx, tx, audit.By(ctx, audit.Entry{Action: "appconnection.delete", TargetKind: "app-connection", TargetID: c.ID,
			ProjectID: c.ProjectID, Details: map[string]any{"name": c.Name}}))
	})
	if err != nil {
		return errs.Wrap(op, errs.Unavailable, "deleting the app connection failed", err)
	}
	return nil
}

// Login returns the settings and password that log in with connection c,
// settling a pending platform-managed password first (for rotations; the
// caller must have authorized the use).
func (s *Service) Login(ctx context.Context, c *Connection) (Credentials, string, error) {
	pw, err := s.settle(ctx, c)
	if err != nil {
		return Credentials{}, "", errs.Wrap("appconn.(*Service).Login", errs.Invalid, "app connection "+c.Name+" cannot log in: "+err.Error(), err)
	}
	return c.Credentials, pw, nil
}

// SetUserPassword sets another user's password as connection c (for secret
// rotations), and logs in as that user with it. The Result says what
// happened; an error means the outcome is unknown (a gateway that did not
// answer) or c could not log in.
func (s *Service) SetUserPassword(ctx context.Context, c *Connection, username, newPw string) (tunnel.Result, error) {
	creds, pw, err := s.Login(ctx, c)
	if err != nil {
		return tunnel.Result{Code: tunnel.CodeAuthFailed, Message: err.Error()}, nil
	}
	return s.setPassword(ctx, c.GatewayID, creds, pw, username, newPw)
}

// LogsIn says whether username logs in with password where c points.
func (s *Service) LogsIn(ctx context.Context, c *Connection, username, password string) error {
	creds := c.Credentials
	creds.Username = username
	return s.login(ctx, "appconn.(*Service).LogsIn", c.GatewayID, creds, password)
}

// CheckRoles checks, before any password changes, that each role exists
// and that c's user may change its password (superuser, or CREATEROLE and,
// on PostgreSQL 16 and later, the admin option on the role):
// postgres.CheckRoles, run by the server or, for a connection through a
// gateway, by the gateway. Nothing is changed.
func (s *Service) CheckRoles(ctx context.Context, c *Connection, roles ...string) error {
	const op = "appconn.(*Service).CheckRoles"
	creds, pw, err := s.Login(ctx, c)
	if err != nil {
		return err
	}
	var res tunnel.Result
	if c.GatewayID != "" {
		if s.cfg.Relay == nil {
			return errs.E(op, errs.Unavailable, "app connection "+c.Name+" goes through a gateway, and this server has no relay")
		}
		if res, err = s.cfg.Relay.CheckRoles(ctx, c.GatewayID, target(c.GatewayID, creds, pw), roles); err != nil {
			return errs.Wrap(op, errs.Unavailable, "app connection "+c.Name+": the gateway could not check the database users "+
				"(it may be offline, or older than this server: upgrade it)", err)
		}
	} else {
		cfg, err := s.config(ctx, creds, pw)
		if err != nil {
			return errs.E(op, errs.Invalid, err.Error())
		}
		res = postgres.CheckRoles(ctx, cfg, roles)
	}
	if res.OK {
		return nil
	}
	code := errs.Invalid
	if res.Code == tunnel.CodeInternal {
		code = errs.Unavailable
	}
	return errs.E(op, code, "app connection "+c.Name+": "+res.Message)
}

// ByID returns a connection without checking the caller (for jobs that run
// as the system, such as secret rotations).
func (s *Service) ByID(ctx context.Context, id string) (*Connection, error) {
	return s.find(ctx, `SELECT `+columns+` FROM app_connections WHERE id = $1`, id)
}
