// Package project holds projects, their members and roles, and the check
// every project-scoped endpoint runs first (Authorize).
//
// Roles rank viewer < member < admin. A viewer reads, a member also uses
// (accesses accounts, reads secret values), an admin also changes settings
// and members. Organization admins act as admins of every project. A caller
// who is not a member gets "not found" for a project, exactly as if it did not
// exist, so non-members learn nothing about it.
package project

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"strings"
	"time"
	"unicode"

	"github.com/google/uuid"

	"github.com/airlockpam/airlock/internal/api"
	"github.com/airlockpam/airlock/internal/audit"
	"github.com/airlockpam/airlock/internal/errs"
	"github.com/airlockpam/airlock/internal/keyring"
	"github.com/airlockpam/airlock/internal/store"
	"github.com/airlockpam/airlock/internal/tunnel"
)

// Role is a member's role in a project.
type Role string

const (
	RoleViewer Role = "viewer"
	RoleMember Role = "member"
	RoleAdmin  Role = "admin"
)

func (r Role) rank() int {
	switch r {
	case RoleViewer:
		return 1
	case RoleMember:
		return 2
	case RoleAdmin:
		return 3
	}
	return 0
}

// Valid reports whether r is a known role.
func (r Role) Valid() bool { return r.rank() > 0 }

// DefaultMaxSession is the longest access session a project allows unless
// its admins change it.
const DefaultMaxSession = 8 * time.Hour

// Project is a group of resources, accounts and secrets with its own members.
type Project struct {
	ID                 string    `json:"id"`
	Name               string    `json:"name"`
	Description        string    `json:"description"`
	MaxSessionDuration string    `json:"maxSessionDuration" doc:"longest access session, as a Go duration such as 8h" example:"8h0m0s"`
	Role               Role      `json:"role" doc:"the caller's role in the project"`
	CreatedAt          time.Time `json:"createdAt"`
	UpdatedAt          time.Time `json:"updatedAt"`
	LogMaskPatterns    []string  `json:"logMaskPatterns" doc:"regular expressions (RE2) whose matches are masked in session logs, besides passwords"`
	LogRedactValues    bool      `json:"logRedactValues" doc:"session logs replace the values of written documents (MongoDB inserts and updates) with ***"`
	// MaxStatementBytes is the longest statement a session log records
	// whole, in bytes (default 1 MiB).
	MaxStatementBytes int64 `json:"maxStatementBytes" doc:"the longest statement recorded whole, in bytes; default 1048576 (1 MiB)"`
	// OversizeStatements is what happens to a longer statement: refuse (the
	// default) refuses it with a clear error; record_ends runs it and
	// records its first and last parts and its SHA-256.
	OversizeStatements string `json:"oversizeStatements" enum:"refuse,record_ends" doc:"what happens to a statement over maxStatementBytes"`
	// ConsoleStatementTimeout is the browser SQL console's statement
	// timeout (the connection's statement_timeout), default 30s.
	ConsoleStatementTimeout string `json:"consoleStatementTimeout" doc:"the web SQL console's statement timeout, as a Go duration; default 30s" example:"30s"`
	// MaxSession is MaxSessionDuration as a duration.
	MaxSession time.Duration `json:"-"`
	// ConsoleTimeout is ConsoleStatementTimeout as a duration.
	ConsoleTimeout time.Duration `json:"-"`
}

// Statement limits of session logs.
const (
	// DefaultMaxStatementBytes is the limit of a project that sets none.
	DefaultMaxStatementBytes = 1 << 20
	// MinMaxStatementBytes and MaxMaxStatementBytes bound the limit. The
	// upper bound keeps one recorded event, JSON-escaped, well inside a
	// session-log upload frame (tunnel.MaxFrame, 16 MiB) and inside the
	// gateway's memory budget for messages held to be recorded.
	MinMaxStatementBytes = 1 << 10
	MaxMaxStatementBytes = 4 << 20
)

// The web SQL console's statement timeout.
const (
	// DefaultConsoleStatementTimeout is the timeout of a project that sets none.
	DefaultConsoleStatementTimeout = 30 * time.Second
	// MinConsoleStatementTimeout and MaxConsoleStatementTimeout bound it.
	MinConsoleStatementTimeout = time.Second
	MaxConsoleStatementTimeout = time.Hour
)

// ProjectUpdate changes a project's settings; nil fields stay as they are.
type ProjectUpdate struct {
	Description        *string   `json:"description,omitempty" maxLength:"1000"`
	MaxSessionDuration *string   `json:"maxSessionDuration,omitempty" maxLength:"20"`
	LogMaskPatterns    *[]string `json:"logMaskPatterns,omitempty" doc:"replaces the list; regular expressions masked in session logs"`
	LogRedactValues    *bool     `json:"logRedactValues,omitempty" doc:"redact the values of written documents in session logs"`
	// MaxStatementBytes is between 1 KiB and 4 MiB.
	MaxStatementBytes *int64 `json:"maxStatementBytes,omitempty" doc:"the longest statement recorded whole, in bytes: 1024 to 4194304"`
	// OversizeStatements is refuse or record_ends.
	OversizeStatements *string `json:"oversizeStatements,omitempty" maxLength:"20" doc:"refuse (default) or record_ends: what happens to a longer statement"`
	// ConsoleStatementTimeout is a Go duration from 1s to 1h.
	ConsoleStatementTimeout *string `json:"consoleStatementTimeout,omitempty" maxLength:"20" doc:"the web SQL console's statement timeout, as a Go duration from 1s to 1h"`
}

// Service manages projects.
type Service struct {
	db      *store.DB
	keyring *keyring.Keyring
	now     func() time.Time
	// revoked, when set, is called after a change that may take access
	// away commits (a member removed or demoted, a project deleted).
	revoked func(ctx context.Context)
	// settingsChanged, when set, is called after a project's session-log
	// settings change.
	settingsChanged func(ctx context.Context, projectID string)
}

// OnAccessRevoked sets the function called after a change that may revoke
// live sessions' access commits (the session service's EnforceAccess).
func (s *Service) OnAccessRevoked(f func(ctx context.Context)) { s.revoked = f }

// OnLogSettingsChanged sets the function called after a project's log mask
// patterns or redact setting change: it pushes them to live sessions.
func (s *Service) OnLogSettingsChanged(f func(ctx context.Context, projectID string)) {
	s.settingsChanged = f
}

func (s *Service) accessRevoked(ctx context.Context) {
	if s.revoked != nil {
		s.revoked(ctx)
	}
}

// New returns a Service. now may be nil (time.Now).
func New(db *store.DB, kr *keyring.Keyring, now func() time.Time) *Service {
	if now == nil {
		now = time.Now
	}
	return &Service{db: db, keyring: kr, now: now}
}

// Authorize returns the project and the caller's role when the caller holds
// at least need. A non-member gets NotFound; a member with too low a role
// gets Forbidden.
func (s *Service) Authorize(ctx context.Context, projectID string, need Role) (*Project, error) {
	const op = "project.(*Service).Authorize"
	p, err := api.MustPrincipal(ctx)
	if err != nil {
		return nil, err
	}
	notFound := errs.E(op, errs.NotFound, "project not found, or you are not a member of it; `airlock projects list` shows yours")
	if _, err := uuid.Parse(projectID); err != nil {
		return nil, notFound
	}
	row := s.db.QueryRowContext(ctx, `SELECT p.id, p.name, p.description, p.max_session_seconds, p.log_mask_patterns, p.log_redact_values, p.max_statement_bytes, p.oversize_statements, p.console_statement_timeout_ms, p.created_at, p.updated_at, COALESCE(m.role, '')
		FROM projects p
		LEFT JOIN project_members m ON m.project_id = p.id AND m.subject_kind = $1 AND m.subject_id = $2
		WHERE p.id = $3 AND p.org_id = $4`, p.Kind, p.ID, projectID, p.OrgID)
	proj, err := scanProject(row)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, notFound
	}
	if err != nil {
		return nil, errs.Wrap(op, errs.Unavailable, "reading the project failed", err)
	}
	if p.OrgAdmin {
		proj.Role = RoleAdmin
	}
	if proj.Role == "" {
		return nil, notFound
	}
	if proj.Role.rank() < need.rank() {
		return nil, errs.Ef(op, errs.Forbidden, "this needs the %s role in project %q; you are %s", need, proj.Name, proj.Role)
	}
	return proj, nil
}

func scanProject(row interface{ Scan(...any) error }) (*Project, error) {
	var p Project
	var maxSecs, consoleMillis, created, updated int64
	var role, masks string
	if err := row.Scan(&p.ID, &p.Name, &p.Description, &maxSecs, &masks, &p.LogRedactValues, &p.MaxStatementBytes, &p.OversizeStatements,
		&consoleMillis, &created, &updated, &role); err != nil {
		return nil, err
	}
	p.LogMaskPatterns = []string{}
	_ = json.Unmarshal([]byte(masks), &p.LogMaskPatterns)
	p.MaxSession = time.Duration(maxSecs) * time.Second
	p.MaxSessionDuration = p.MaxSession.String()
	p.ConsoleTimeout = time.Duration(consoleMillis) * time.Millisecond
	p.ConsoleStatementTimeout = p.ConsoleTimeout.String()
	p.CreatedAt, p.UpdatedAt, p.Role = store.Time(created), store.Time(updated), Role(role)
	return &p, nil
}

func checkName(op, name string) error {
	if strings.TrimSpace(name) != name || name == "" || len(name) > 64 {
		return errs.InvalidField(op, "body.name", "the project name must be 1-64 characters without leading or trailing spaces")
	}
	for _, r := range name {
		if unicode.IsControl(r) {
			return errs.InvalidField(op, "body.name", "the project name must not contain control characters")
		}
	}
	return nil
}

func parseMaxSession(op, v string) (time.Duration, error) {
	d, err := time.ParseDuration(v)
	if err != nil || d < time.Minute || d > 30*24*time.Hour {
		return 0, errs.InvalidField(op, "body.maxSessionDuration",
			"not a valid maximum session duration: use a duration between 1m and 720h, such as 8h or 30m")
	}
	return d.Round(time.Second), nil
}

// NameTaken is the refusal of a project name already used in the
// organization, by a project the caller may or may not see.
const NameTaken = "this project name is not available: choose another name"

// Create makes a project with the caller as its admin.
func (s *Service) Create(ctx context.Context, name, description, maxSession string) (*Project, error) {
	const op = "project.(*Service).Create"
	p, err := api.MustPrincipal(ctx)
	if err != nil {
		return nil, err
	}
	if err := checkName(op, name); err != nil {
		return nil, err
	}
	max := DefaultMaxSession
	if maxSession != "" {
		if max, err = parseMaxSession(op, maxSession); err != nil {
			return nil, err
		}
	}
	now := s.now()
	proj := &Project{ID: uuid.Must(uuid.NewV7()).String(), Name: name, Description: description, MaxSession: max, LogMaskPatterns: []string{},
		MaxStatementBytes: DefaultMaxStatementBytes, OversizeStatements: tunnel.OversizeRefuse,
		MaxSessionDuration: max.String(), ConsoleTimeout: DefaultConsoleStatementTimeout, ConsoleStatementTimeout: DefaultConsoleStatementTimeout.String(),
		Role: RoleAdmin, CreatedAt: store.Time(store.Micros(now)), UpdatedAt: store.Time(store.Micros(now))}
	err = s.db.InTx(ctx, func(tx *sql.Tx) error {
		if _, err := tx.ExecContext(ctx, `INSERT INTO projects (id, org_id, name, description, max_session_seconds, created_at, updated_at)
			VALUES ($1, $2, $3, $4, $5, $6, $6)`, proj.ID, p.OrgID, name, description, int64(max/time.Second), store.Micros(now)); err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, `INSERT INTO project_members (project_id, subject_kind, subject_id, role, created_at)
			VALUES ($1, $2, $3, $4, $5)`, proj.ID, p.Kind, p.ID, RoleAdmin, store.Micros(now)); err != nil {
			return err
		}
		if err := s.keyring.CreateProjectKey(ctx, tx, proj.ID); err != nil {
			return err
		}
		return audit.Record(ctx, tx, audit.By(ctx, audit.Entry{Action: "project.create", TargetKind: "project", TargetID: proj.ID,
			ProjectID: proj.ID, Details: map[string]any{"name": name}}))
	})
	if store.IsUniqueViolation(err) {
		// Names are unique in the organization. The answer is the same
		// whether the caller can see the project holding the name or not,
		// and names no project.
		return nil, &errs.Error{Op: op, Code: errs.Conflict, Field: "body.name", Msg: NameTaken}
	}
	if err != nil {
		return nil, errs.Wrap(op, errs.Unavailable, "creating the project failed", err)
	}
	return proj, nil
}

// List returns the projects the caller belongs to (all, for org admins).
func (s *Service) List(ctx context.Context) ([]Project, error) {
	const op = "project.(*Service).List"
	p, err := api.MustPrincipal(ctx)
	if err != nil {
		return nil, err
	}
	rows, err := s.db.QueryContext(ctx, `SELECT p.id, p.name, p.description, p.max_session_seconds, p.log_mask_patterns, p.log_redact_values, p.max_statement_bytes, p.oversize_statements, p.console_statement_timeout_ms, p.created_at, p.updated_at, COALESCE(m.role, '')
		FROM projects p
		LEFT JOIN project_members m ON m.project_id = p.id AND m.subject_kind = $1 AND m.subject_id = $2
		WHERE p.org_id = $3 AND (m.role IS NOT NULL OR $4)
		ORDER BY p.name`, p.Kind, p.ID, p.OrgID, p.OrgAdmin)
	if err != nil {
		return nil, errs.Wrap(op, errs.Unavailable, "listing projects failed", err)
	}
	defer rows.Close()
	out := []Project{}
	for rows.Next() {
		proj, err := scanProject(rows)
		if err != nil {
			return nil, errs.Wrap(op, errs.Unavailable, "listing projects failed", err)
		}
		if p.OrgAdmin {
			proj.Role = RoleAdmin
		}
		out = append(out, *proj)
	}
	return out, rows.Err()
}

// CheckMaskPatterns validates session-log mask patterns.
func CheckMaskPatterns(op string, patterns []string) error {
	if len(patterns) > 50 {
		return errs.InvalidField(op, "body.logMaskPatterns", "at most 50 patterns")
	}
	for i, p := range patterns {
		if p == "" || len(p) > 500 {
			return errs.InvalidField(op, fmt.Sprintf("body.logMaskPatterns[%d]", i), "a pattern must be 1-500 characters")
		}
		if _, err := regexp.Compile(p); err != nil {
			return errs.InvalidField(op, fmt.Sprintf("body.logMaskPatterns[%d]", i), "not a valid regular expression (RE2 syntax): "+err.Error())
		}
	}
	return nil
}

// Update changes a project's settings (project admins); nil fields of in
// stay as they are. Changed session-log settings are pushed to the
// gateways of the project's live sessions.
func (s *Service) Update(ctx context.Context, projectID string, in ProjectUpdate) (*Project, error) {
	const op = "project.(*Service).Update"
	proj, err := s.Authorize(ctx, projectID, RoleAdmin)
	if err != nil {
		return nil, err
	}
	changes := map[string]any{}
	if in.Description != nil {
		proj.Description = *in.Description
		changes["description"] = *in.Description
	}
	if in.MaxSessionDuration != nil {
		if proj.MaxSession, err = parseMaxSession(op, *in.MaxSessionDuration); err != nil {
			return nil, err
		}
		proj.MaxSessionDuration = proj.MaxSession.String()
		changes["maxSessionDuration"] = proj.MaxSessionDuration
	}
	if in.LogMaskPatterns != nil {
		if err := CheckMaskPatterns(op, *in.LogMaskPatterns); err != nil {
			return nil, err
		}
		proj.LogMaskPatterns = *in.LogMaskPatterns
		changes["logMaskPatterns"] = *in.LogMaskPatterns
	}
	if in.LogRedactValues != nil {
		proj.LogRedactValues = *in.LogRedactValues
		changes["logRedactValues"] = *in.LogRedactValues
	}
	if in.MaxStatementBytes != nil {
		if n := *in.MaxStatementBytes; n < MinMaxStatementBytes || n > MaxMaxStatementBytes {
			return nil, errs.InvalidField(op, "body.maxStatementBytes", "the statement limit must be between 1 KiB (1024) and 4 MiB (4194304) bytes")
		}
		proj.MaxStatementBytes = *in.MaxStatementBytes
		changes["maxStatementBytes"] = proj.MaxStatementBytes
	}
	if in.OversizeStatements != nil {
		if v := *in.OversizeStatements; v != tunnel.OversizeRefuse && v != tunnel.OversizeRecordEnds {
			return nil, errs.InvalidField(op, "body.oversizeStatements", "oversizeStatements must be refuse or record_ends")
		}
		proj.OversizeStatements = *in.OversizeStatements
		changes["oversizeStatements"] = proj.OversizeStatements
	}
	if in.ConsoleStatementTimeout != nil {
		d, err := time.ParseDuration(*in.ConsoleStatementTimeout)
		if err != nil || d < MinConsoleStatementTimeout || d > MaxConsoleStatementTimeout {
			return nil, errs.InvalidField(op, "body.consoleStatementTimeout", "the console's statement timeout must be a duration from 1s to 1h, such as 30s or 5m")
		}
		proj.ConsoleTimeout, proj.ConsoleStatementTimeout = d, d.String()
		changes["consoleStatementTimeout"] = proj.ConsoleStatementTimeout
	}
	logSettings := in.LogMaskPatterns != nil || in.LogRedactValues != nil || in.MaxStatementBytes != nil || in.OversizeStatements != nil
	masksJSON, _ := json.Marshal(proj.LogMaskPatterns)
	now := s.now()
	err = s.db.InTx(ctx, func(tx *sql.Tx) error {
		if _, err := tx.ExecContext(ctx, `UPDATE projects SET description = $1, max_session_seconds = $2, log_mask_patterns = $3, log_redact_values = $4,
			updated_at = $5, max_statement_bytes = $7, oversize_statements = $8, console_statement_timeout_ms = $9 WHERE id = $6`,
			proj.Description, int64(proj.MaxSession/time.Second), string(masksJSON), proj.LogRedactValues, store.Micros(now), proj.ID,
			proj.MaxStatementBytes, proj.OversizeStatements, proj.ConsoleTimeout.Milliseconds()); err != nil {
			return err
		}
		return audit.Record(ctx, tx, audit.By(ctx, audit.Entry{Action: "project.update", TargetKind: "project", TargetID: proj.ID,
			ProjectID: proj.ID, Details: changes}))
	})
	if err != nil {
		return nil, errs.Wrap(op, errs.Unavailable, "updating the project failed", err)
	}
	proj.UpdatedAt = store.Time(store.Micros(now))
	if logSettings && s.settingsChanged != nil {
		s.settingsChanged(ctx, proj.ID)
	}
	return proj, nil
}

// Delete removes a project and everything in it: resources, accounts,
// secrets, members. Its sessions and their logs stay, and so does its data
// key, which seals the logs: organization admins can still read and verify
// them. A project with live sessions or recorded sessions is deleted only
// with force, which also ends its live sessions (reason revoked).
func (s *Service) Delete(ctx context.Context, projectID string, force bool) error {
	const op = "project.(*Service).Delete"
	proj, err := s.Authorize(ctx, projectID, RoleAdmin)
	if err != nil {
		return err
	}
	err = s.db.InTx(ctx, func(tx *sql.Tx) error {
		var live, recorded int
		if err := tx.QueryRowContext(ctx, `SELECT COUNT(CASE WHEN status = 'active' THEN 1 END), COUNT(*) FROM sessions WHERE project_id = $1`,
			proj.ID).Scan(&live, &recorded); err != nil {
			return err
		}
		if (live > 0 || recorded > 0) && !force {
			return errs.Ef(op, errs.Conflict, "project %q has %d live session(s) and %d recorded session(s); deleting it ends the live ones, "+
				"and the session logs stay readable by organization admins. To delete it anyway, repeat with force=true "+
				"(`airlock projects delete %s --force`)", proj.Name, live, recorded, proj.ID)
		}
		if _, err := tx.ExecContext(ctx, `DELETE FROM projects WHERE id = $1`, proj.ID); err != nil {
			return err
		}
		return audit.Record(ctx, tx, audit.By(ctx, audit.Entry{Action: "project.delete", TargetKind: "project", TargetID: proj.ID,
			ProjectID: proj.ID, Details: map[string]any{"name": proj.Name, "liveSessions": live, "sessions": recorded, "force": force}}))
	})
	if err != nil {
		return errs.Wrap(op, errs.Unavailable, "deleting the project failed", err)
	}
	s.accessRevoked(ctx) // its live sessions end
	return nil
}
