package secretrotation

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"regexp"
	"strings"
	"time"

	"github.com/google/uuid"

	"github.com/airlockpam/airlock/internal/appconn"
	"github.com/airlockpam/airlock/internal/audit"
	"github.com/airlockpam/airlock/internal/errs"
	"github.com/airlockpam/airlock/internal/jobs"
	"github.com/airlockpam/airlock/internal/keyring"
	"github.com/airlockpam/airlock/internal/project"
	"github.com/airlockpam/airlock/internal/secrets"
	"github.com/airlockpam/airlock/internal/store"
)

// TypePostgresCredentials is the dual-user PostgreSQL credentials rotation.
const TypePostgresCredentials = "postgres-credentials"

var slugRE = regexp.MustCompile(`^[a-z0-9]+(-[a-z0-9]+)*$`)
var secretNameRE = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_.-]{0,127}$`)

// Parameters are the two database users.
type Parameters struct {
	Username1 string `json:"username1" minLength:"1" maxLength:"63"`
	Username2 string `json:"username2" minLength:"1" maxLength:"63"`
}

// SecretsMapping names the secrets the active credentials are written to.
type SecretsMapping struct {
	Username string `json:"username" minLength:"1" maxLength:"128"`
	Password string `json:"password" minLength:"1" maxLength:"128"`
}

// Rotation is a secret rotation as the API shows it (never a password).
type Rotation struct {
	ID                    string         `json:"id"`
	Name                  string         `json:"name"`
	Description           string         `json:"description,omitempty"`
	ProjectID             string         `json:"projectId"`
	Type                  string         `json:"type"`
	ConnectionID          string         `json:"connectionId"`
	ConnectionName        string         `json:"connectionName"`
	Environment           string         `json:"environment"`
	SecretPath            string         `json:"secretPath"`
	RotationInterval      int            `json:"rotationInterval" doc:"days"`
	RotateAt              string         `json:"rotateAt" doc:"HH:MM, local time in timeZone"`
	TimeZone              string         `json:"timeZone"`
	IsAutoRotationEnabled bool           `json:"isAutoRotationEnabled"`
	Parameters            Parameters     `json:"parameters"`
	SecretsMapping        SecretsMapping `json:"secretsMapping"`
	ActiveUsername        string         `json:"activeUsername,omitempty"`
	RotationStatus        string         `json:"rotationStatus" doc:"ok, failed, or empty before the first rotation"`
	LastRotationMessage   string         `json:"lastRotationMessage,omitempty"`
	LastRotatedAt         *time.Time     `json:"lastRotatedAt,omitempty"`
	NextRotationAt        *time.Time     `json:"nextRotationAt,omitempty"`
	CreatedAt             time.Time      `json:"createdAt"`
	UpdatedAt             time.Time      `json:"updatedAt"`

	active, pendingIndex int
	password1, password2 []byte
	pending              []byte
	attempt              string
	lastRotated          int64
}

func (r *Rotation) place() secrets.Place {
	return secrets.Place{Environment: r.Environment, Path: r.SecretPath}
}

func (r *Rotation) user(i int) string {
	if i == 2 {
		return r.Parameters.Username2
	}
	return r.Parameters.Username1
}

// Config builds a Service.
type Config struct {
	DB       *store.DB
	Keyring  *keyring.Keyring
	Projects *project.Service
	Secrets  *secrets.Service
	Conns    *appconn.Service
	Now      func() time.Time
}

// Service stores and runs secret rotations.
type Service struct {
	cfg  Config
	jobs *jobs.Scheduler
	// afterChange runs after the database took a new password and before
	// it is published (tests stop a rotation there).
	afterChange func() error
	// mailer tells the project's admins of a failure (notify.go).
	mailer Mailer
}

// New returns a Service; it owns the mapped secrets and the connections
// its rotations use.
func New(cfg Config) *Service {
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	s := &Service{cfg: cfg}
	cfg.Secrets.SetOwner(s.owner)
	cfg.Conns.SetUsedBy(s.usedBy)
	return s
}

// SetAfterPasswordChange sets a hook run between a password change and its
// publication (tests).
func (s *Service) SetAfterPasswordChange(f func() error) { s.afterChange = f }

func (s *Service) owner(ctx context.Context, q store.Querier, projectID string, pl secrets.Place, name string) (string, error) {
	var n string
	err := q.QueryRowContext(ctx, `SELECT name FROM secret_rotations WHERE project_id = $1 AND environment = $2 AND path = $3
		AND (username_secret = $4 OR password_secret = $4)`, projectID, pl.Environment, pl.Path, name).Scan(&n)
	if errors.Is(err, sql.ErrNoRows) {
		return "", nil
	}
	if err != nil {
		return "", err
	}
	return "secret rotation " + n, nil
}

func (s *Service) usedBy(ctx context.Context, connectionID string) (string, error) {
	var n string
	err := s.cfg.DB.QueryRowContext(ctx, `SELECT name FROM secret_rotations WHERE connection_id = $1 ORDER BY name LIMIT 1`, connectionID).Scan(&n)
	if errors.Is(err, sql.ErrNoRows) {
		return "", nil
	}
	if err != nil {
		return "", err
	}
	return "secret rotation " + n, nil
}

// CreateInput is a new rotation.
type CreateInput struct {
	Name, Description, ProjectID, Connection, Environment, SecretPath string
	RotationInterval                                                  int
	RotateAt, TimeZone                                                string
	AutoRotation                                                      bool
	Parameters                                                        Parameters
	SecretsMapping                                                    SecretsMapping
}

// parseRotateAt checks HH:MM.
func parseRotateAt(op, s string) (int, int, error) {
	var h, m int
	if len(s) != 5 || s[2] != ':' {
		return 0, 0, errs.InvalidField(op, "body.rotateAt", "rotate-at is a time of day as HH:MM, such as 02:00")
	}
	if _, err := fmt.Sscanf(s, "%02d:%02d", &h, &m); err != nil || h > 23 || m > 59 || h < 0 || m < 0 {
		return 0, 0, errs.InvalidField(op, "body.rotateAt", "rotate-at is a time of day as HH:MM, such as 02:00")
	}
	return h, m, nil
}

func checkSettings(op string, interval int, rotateAt, tz string) error {
	if interval < 1 || interval > 365 {
		return errs.InvalidField(op, "body.rotationInterval", "the rotation interval is a number of days from 1 to 365")
	}
	if _, _, err := parseRotateAt(op, rotateAt); err != nil {
		return err
	}
	if tz == "" || strings.HasPrefix(tz, "Local") {
		return errs.InvalidField(op, "body.timeZone", "give a time zone such as UTC or Europe/Berlin")
	}
	if _, err := time.LoadLocation(tz); err != nil {
		return errs.InvalidField(op, "body.timeZone", "unknown time zone "+tz+"; give an IANA name such as UTC or Europe/Berlin")
	}
	return nil
}

// NextRotation is interval days after the date of last (in tz), at rotateAt there.
func NextRotation(last time.Time, interval int, rotateAt, tz string) time.Time {
	loc, err := time.LoadLocation(tz)
	if err != nil {
		loc = time.UTC
	}
	h, m, _ := parseRotateAt("", rotateAt)
	y, mo, d := last.In(loc).Date()
	return time.Date(y, mo, d+interval, h, m, 0, 0, loc)
}

// Create checks every precondition, saves the rotation and runs its first
// rotation, which publishes username 1 (project admins). Nothing is saved
// when a check or that rotation fails.
func (s *Service) Create(ctx context.Context, in CreateInput) (*Rotation, error) {
	const op = "secretrotation.(*Service).Create"
	proj, err := s.cfg.Projects.Authorize(ctx, in.ProjectID, project.RoleAdmin)
	if err != nil {
		return nil, err
	}
	if !slugRE.MatchString(in.Name) || len(in.Name) > 64 {
		return nil, errs.InvalidField(op, "body.name", "the name is a slug: lower-case letters and digits, separated by single hyphens, up to 64")
	}
	if in.TimeZone == "" {
		in.TimeZone = "UTC"
	}
	if err := checkSettings(op, in.RotationInterval, in.RotateAt, in.TimeZone); err != nil {
		return nil, err
	}
	p := in.Parameters
	if p.Username1 == "" || p.Username2 == "" || p.Username1 == p.Username2 {
		return nil, errs.InvalidField(op, "body.parameters", "give two different database users")
	}
	m := in.SecretsMapping
	if !secretNameRE.MatchString(m.Username) || !secretNameRE.MatchString(m.Password) || m.Username == m.Password {
		return nil, errs.InvalidField(op, "body.secretsMapping", "give two different secret names (letters, digits, _ . -; starting with a letter or _)")
	}
	path, err := secrets.CleanPath(op, "body.secretPath", in.SecretPath)
	if err != nil {
		return nil, err
	}
	pl := secrets.Place{Environment: in.Environment, Path: path}
	// The environment and folder exist, and the caller may write there.
	if _, err := s.cfg.Secrets.List(ctx, proj.ID, pl); err != nil {
		return nil, err
	}
	for _, n := range []string{m.Username, m.Password} {
		live, err := secrets.Live(ctx, s.cfg.DB, proj.ID, pl, n)
		if err != nil {
			return nil, errs.Wrap(op, errs.Unavailable, "reading the secrets failed", err)
		}
		owner, err := s.owner(ctx, s.cfg.DB, proj.ID, pl, n)
		if err != nil {
			return nil, errs.Wrap(op, errs.Unavailable, "reading the secrets failed", err)
		}
		if live || owner != "" {
			return nil, errs.InvalidField(op, "body.secretsMapping", "secret "+n+" is already in use in "+pl.String()+"; map to names that are free")
		}
	}
	conn, err := s.cfg.Conns.Resolve(ctx, proj.ID, in.Connection)
	if err != nil {
		if errs.Is(err, errs.NotFound) {
			return nil, errs.InvalidField(op, "body.connectionId", "no app connection of that name or id in the project")
		}
		return nil, err
	}
	if err := s.cfg.Conns.CheckRoles(ctx, conn, p.Username1, p.Username2); err != nil {
		return nil, errs.Wrap(op, errs.Invalid, err.Error(), err)
	}
	now := s.cfg.Now()
	r := &Rotation{ID: uuid.Must(uuid.NewV7()).String(), Name: in.Name, Description: in.Description, ProjectID: proj.ID, Type: TypePostgresCredentials,
		ConnectionID: conn.ID, ConnectionName: conn.Name, Environment: pl.Environment, SecretPath: pl.Path, RotationInterval: in.RotationInterval,
		RotateAt: in.RotateAt, TimeZone: in.TimeZone, IsAutoRotationEnabled: in.AutoRotation, Parameters: p, SecretsMapping: m}
	err = s.cfg.DB.InTx(ctx, func(tx *sql.Tx) error {
		if _, err := tx.ExecContext(ctx, `INSERT INTO secret_rotations (id, project_id, name, description, type, connection_id, environment, path,
			interval_days, rotate_at, time_zone, auto_rotation, username1, username2, username_secret, password_secret, created_at, updated_at)
			VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $17)`,
			r.ID, r.ProjectID, r.Name, r.Description, r.Type, r.ConnectionID, r.Environment, r.SecretPath, r.RotationInterval, r.RotateAt,
			r.TimeZone, r.IsAutoRotationEnabled, p.Username1, p.Username2, m.Username, m.Password, store.Micros(now)); err != nil {
			if store.IsUniqueViolation(err) {
				return errs.Ef(op, errs.Conflict, "the project already has a secret rotation named %s", r.Name)
			}
			return err
		}
		return audit.Record(ctx, tx, audit.By(ctx, audit.Entry{Action: "secret-rotation.create", TargetKind: "secret-rotation", TargetID: r.ID,
			ProjectID: r.ProjectID, Details: map[string]any{"name": r.Name, "connection": conn.Name, "users": []string{p.Username1, p.Username2},
				"secrets": pl.String() + m.Username + "," + m.Password}}))
	})
	if err != nil {
		return nil, errs.Wrap(op, errs.Unavailable, "saving the secret rotation failed", err)
	}
	if err := s.rotate(ctx, r.ID); err != nil {
		_, _ = s.cfg.DB.ExecContext(context.WithoutCancel(ctx), `DELETE FROM secret_rotations WHERE id = $1`, r.ID)
		return nil, errs.E(op, errs.Invalid, "the secret rotation was not saved: its first rotation failed: "+err.Error())
	}
	if err := s.schedule(ctx, r.ID); err != nil {
		return nil, err
	}
	return s.get(ctx, r.ID)
}

// schedule creates, moves or removes a rotation's job to match it.
func (s *Service) schedule(ctx context.Context, id string) error {
	r, err := s.load(ctx, id)
	if err != nil {
		return err
	}
	if !r.IsAutoRotationEnabled {
		return jobs.Cancel(ctx, s.cfg.DB, KindRotate, r.ID)
	}
	last := store.Time(r.lastRotated)
	if r.lastRotated == 0 {
		last = r.CreatedAt
	}
	return jobs.Schedule(ctx, s.cfg.DB, s.cfg.Now(), KindRotate, r.ID, NextRotation(last, r.RotationInterval, r.RotateAt, r.TimeZone), "")
}

const columns = `id, project_id, name, description, type, connection_id, environment, path, interval_days, rotate_at, time_zone, auto_rotation,
	username1, username2, username_secret, password_secret, active_index, password1_enc, password2_enc, pending_index, pending_password_enc,
	pending_attempt, status, last_error, last_rotated_at, created_at, updated_at`

func scan(row interface{ Scan(...any) error }) (*Rotation, error) {
	r := &Rotation{}
	var created, updated int64
	err := row.Scan(&r.ID, &r.ProjectID, &r.Name, &r.Description, &r.Type, &r.ConnectionID, &r.Environment, &r.SecretPath, &r.RotationInterval,
		&r.RotateAt, &r.TimeZone, &r.IsAutoRotationEnabled, &r.Parameters.Username1, &r.Parameters.Username2, &r.SecretsMapping.Username,
		&r.SecretsMapping.Password, &r.active, &r.password1, &r.password2, &r.pendingIndex, &r.pending, &r.attempt, &r.RotationStatus,
		&r.LastRotationMessage, &r.lastRotated, &created, &updated)
	if err != nil {
		return nil, err
	}
	if len(r.pending) == 0 {
		r.pending = nil
	}
	r.CreatedAt, r.UpdatedAt = store.Time(created), store.Time(updated)
	if r.lastRotated != 0 {
		t := store.Time(r.lastRotated)
		r.LastRotatedAt = &t
	}
	if r.active != 0 {
		r.ActiveUsername = r.user(r.active)
	}
	return r, nil
}

func (s *Service) load(ctx context.Context, id string) (*Rotation, error) {
	r, err := scan(s.cfg.DB.QueryRowContext(ctx, `SELECT `+columns+` FROM secret_rotations WHERE id = $1`, id))
	if errors.Is(err, sql.ErrNoRows) {
		return nil, errs.E("secretrotation.load", errs.NotFound, "no such secret rotation")
	}
	if err != nil {
		return nil, errs.Wrap("secretrotation.load", errs.Unavailable, "reading the secret rotation failed", err)
	}
	return r, nil
}

// get loads a rotation with its connection's name and next due time.
func (s *Service) get(ctx context.Context, id string) (*Rotation, error) {
	r, err := s.load(ctx, id)
	if err != nil {
		return nil, err
	}
	s.fill(ctx, r)
	return r, nil
}

func (s *Service) fill(ctx context.Context, r *Rotation) {
	if c, err := s.cfg.Conns.ByID(ctx, r.ConnectionID); err == nil {
		r.ConnectionName = c.Name
	}
	if r.IsAutoRotationEnabled {
		if st, err := jobs.Get(ctx, s.cfg.DB, s.cfg.Now(), KindRotate, r.ID); err == nil {
			t := st.RunAt
			r.NextRotationAt = &t
		}
	}
}

// Resolve returns a project's rotation by name or id (project viewers).
func (s *Service) Resolve(ctx context.Context, projectID, ref string) (*Rotation, error) {
	proj, err := s.cfg.Projects.Authorize(ctx, projectID, project.RoleViewer)
	if err != nil {
		return nil, err
	}
	r, err := scan(s.cfg.DB.QueryRowContext(ctx, `SELECT `+columns+` FROM secret_rotations WHERE project_id = $1 AND (id = $2 OR name = $2)`, proj.ID, ref))
	if errors.Is(err, sql.ErrNoRows) {
		return nil, errs.E("secretrotation.(*Service).Resolve", errs.NotFound, "no secret rotation of that name or id in the project")
	}
	if err != nil {
		return nil, errs.Wrap("secretrotation.(*Service).Resolve", errs.Unavailable, "reading the secret rotation failed", err)
	}
	s.fill(ctx, r)
	return r, nil
}

// List returns a project's rotations (project viewers).
func (s *Service) List(ctx context.Context, projectID string) ([]Rotation, error) {
	const op = "secretrotation.(*Service).List"
	proj, err := s.cfg.Projects.Authorize(ctx, projectID, project.RoleViewer)
	if err != nil {
		return nil, err
	}
	rows, err := s.cfg.DB.QueryContext(ctx, `SELECT `+columns+` FROM secret_rotations WHERE project_id = $1 ORDER BY name`, proj.ID)
	if err != nil {
		return nil, errs.Wrap(op, errs.Unavailable, "listing secret rotations failed", err)
	}
	var out []*Rotation
	for rows.Next() {
		r, err := scan(rows)
		if err != nil {
			rows.Close()
			return nil, errs.Wrap(op, errs.Unavailable, "listing secret rotations failed", err)
		}
		out = append(out, r)
	}
	rows.Close()
	list := make([]Rotation, 0, len(out))
	for _, r := range out {
		s.fill(ctx, r)
		list = append(list, *r)
	}
	return list, nil
}

// UpdateInput changes a rotation's schedule or description; nil stays.
type UpdateInput struct {
	Name, Description, RotateAt, TimeZone *string
	RotationInterval                      *int
	AutoRotation                          *bool
}

// Update changes a rotation's name, description or schedule (project admins).
func (s *Service) Update(ctx context.Context, projectID, ref string, in UpdateInput) (*Rotation, error) {
	const op = "secretrotation.(*Service).Update"
	r, err := s.Resolve(ctx, projectID, ref)
	if err != nil {
		return nil, err
	}
	if _, err := s.cfg.Projects.Authorize(ctx, r.ProjectID, project.RoleAdmin); err != nil {
		return nil, err
	}
	if in.Name != nil {
		if !slugRE.MatchString(*in.Name) || len(*in.Name) > 64 {
			return nil, errs.InvalidField(op, "body.name", "the name is a slug: lower-case letters and digits, separated by single hyphens, up to 64")
		}
		r.Name = *in.Name
	}
	if in.Description != nil {
		r.Description = *in.Description
	}
	if in.RotateAt != nil {
		r.RotateAt = *in.RotateAt
	}
	if in.TimeZone != nil {
		r.TimeZone = *in.TimeZone
	}
	if in.RotationInterval != nil {
		r.RotationInterval = *in.RotationInterval
	}
	if in.AutoRotation != nil {
		r.IsAutoRotationEnabled = *in.AutoRotation
	}
	if err := checkSettings(op, r.RotationInterval, r.RotateAt, r.TimeZone); err != nil {
		return nil, err
	}
	err = s.cfg.DB.InTx(ctx, func(tx *sql.Tx) error {
		if _, err := tx.ExecContext(ctx, `UPDATE secret_rotations SET name = $1, description = $2, rotate_at = $3, time_zone = $4, interval_days = $5,
			auto_rotation = $6, updated_at = $7 WHERE id = $8`, r.Name, r.Description, r.RotateAt, r.TimeZone, r.RotationInterval,
			r.IsAutoRotationEnabled, store.Micros(s.cfg.Now()), r.ID); err != nil {
			if store.IsUniqueViolation(err) {
				return errs.Ef(op, errs.Conflict, "the project already has a secret rotation named %s", r.Name)
			}
			return err
		}
		return audit.Record(ctx, tx, audit.By(ctx, audit.Entry{Action: "secret-rotation.update", TargetKind: "secret-rotation", TargetID: r.ID,
			ProjectID: r.ProjectID, Details: map[string]any{"name": r.Name, "interval": r.RotationInterval, "rotateAt": r.RotateAt,
				"timeZone": r.TimeZone, "autoRotation": r.IsAutoRotationEnabled}}))
	})
	if err != nil {
		return nil, errs.Wrap(op, errs.Unavailable, "saving the secret rotation failed", err)
	}
	if err := s.schedule(ctx, r.ID); err != nil {
		return nil, err
	}
	return s.get(ctx, r.ID)
}

// Delete removes a rotation (project admins). The mapped secrets stay, as
// ordinary secrets, unless deleteSecrets; the users keep their passwords
// unless revoke, which first gives both a random password nobody keeps
// (nothing is deleted when that fails).
func (s *Service) Delete(ctx context.Context, projectID, ref string, deleteSecrets, revoke bool) error {
	const op = "secretrotation.(*Service).Delete"
	r, err := s.Resolve(ctx, projectID, ref)
	if err != nil {
		return err
	}
	if _, err := s.cfg.Projects.Authorize(ctx, r.ProjectID, project.RoleAdmin); err != nil {
		return err
	}
	if revoke {
		conn, err := s.cfg.Conns.ByID(ctx, r.ConnectionID)
		if err != nil {
			return err
		}
		for _, u := range []string{r.Parameters.Username1, r.Parameters.Username2} {
			pw, err := keyring.NewPassword()
			if err != nil {
				return err
			}
			res, err := s.cfg.Conns.SetUserPassword(ctx, conn, u, pw)
			if err == nil && !res.OK {
				err = errors.New(res.Message)
			}
			if err != nil {
				return errs.E(op, errs.Unavailable, "revoking the password of "+u+" failed, so nothing was deleted: "+err.Error())
			}
		}
	}
	err = s.cfg.DB.InTx(ctx, func(tx *sql.Tx) error {
		if _, err := tx.ExecContext(ctx, `DELETE FROM secret_rotations WHERE id = $1`, r.ID); err != nil {
			return err
		}
		if err := jobs.Cancel(ctx, tx, KindRotate, r.ID); err != nil {
			return err
		}
		return audit.Record(ctx, tx, audit.By(ctx, audit.Entry{Action: "secret-rotation.delete", TargetKind: "secret-rotation", TargetID: r.ID,
			ProjectID: r.ProjectID, Details: map[string]any{"name": r.Name, "deleteSecrets": deleteSecrets, "revokeCredentials": revoke}}))
	})
	if err != nil {
		return errs.Wrap(op, errs.Unavailable, "deleting the secret rotation failed", err)
	}
	if deleteSecrets {
		for _, n := range []string{r.SecretsMapping.Username, r.SecretsMapping.Password} {
			if err := s.cfg.Secrets.Delete(ctx, r.ProjectID, r.place(), n); err != nil && !errs.Is(err, errs.NotFound) {
				return err
			}
		}
	}
	return nil
}

// GeneratedCredentials are both users' current passwords (project admins).
type GeneratedCredentials struct {
	Active   string       `json:"activeUsername"`
	Accounts [2]UserCreds `json:"generatedCredentials"`
}

// UserCreds is one user's credentials.
type UserCreds struct {
	Username string `json:"username"`
	Password string `json:"password"`
}

// Credentials returns both generated credentials; the read is audited (project admins).
func (s *Service) Credentials(ctx context.Context, projectID, ref string) (*GeneratedCredentials, error) {
	const op = "secretrotation.(*Service).Credentials"
	r, err := s.Resolve(ctx, projectID, ref)
	if err != nil {
		return nil, err
	}
	if _, err := s.cfg.Projects.Authorize(ctx, r.ProjectID, project.RoleAdmin); err != nil {
		return nil, err
	}
	out := &GeneratedCredentials{Active: r.ActiveUsername}
	for i, sealed := range [][]byte{r.password1, r.password2} {
		out.Accounts[i].Username = r.user(i + 1)
		if len(sealed) == 0 {
			continue
		}
		pw, err := s.cfg.Keyring.Open(ctx, r.ProjectID, passwordAAD(r.ID, i+1), sealed)
		if err != nil {
			return nil, err
		}
		out.Accounts[i].Password = string(pw)
	}
	err = audit.RecordNow(ctx, s.cfg.DB, audit.By(ctx, audit.Entry{Action: "secret-rotation.credentials.read", TargetKind: "secret-rotation",
		TargetID: r.ID, ProjectID: r.ProjectID, Details: map[string]any{"name": r.Name}}))
	if err != nil {
		return nil, errs.Wrap(op, errs.Unavailable, "auditing the read failed", err)
	}
	return out, nil
}
