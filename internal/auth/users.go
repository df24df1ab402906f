package auth

import (
	"context"
	"database/sql"
	"errors"
	"net/http"
	"time"

	"github.com/danielgtaylor/huma/v2"
	"github.com/google/uuid"

	"github.com/airlockpam/airlock/internal/api"
	"github.com/airlockpam/airlock/internal/audit"
	"github.com/airlockpam/airlock/internal/errs"
	"github.com/airlockpam/airlock/internal/store"
)

// User is a person who logs in with email and password.
type User struct {
	ID          string     `json:"id"`
	Email       string     `json:"email"`
	Name        string     `json:"name"`
	OrgAdmin    bool       `json:"orgAdmin" doc:"organization admins manage users, machine identities and every project"`
	LockedUntil *time.Time `json:"lockedUntil,omitempty" doc:"set while the account is locked after failed logins"`
	Disabled    bool       `json:"disabled" doc:"a disabled user cannot log in, refresh a token or use a session"`
	CreatedAt   time.Time  `json:"createdAt"`
}

type userRow struct {
	id, orgID, email, name, passwordHash string
	orgAdmin, disabled                   bool
	lockedUntil, createdAt               int64
}

func (r *userRow) public(now time.Time) User {
	u := User{ID: r.id, Email: r.email, Name: r.name, OrgAdmin: r.orgAdmin, Disabled: r.disabled, CreatedAt: store.Time(r.createdAt)}
	if t := store.Time(r.lockedUntil); now.Before(t) {
		u.LockedUntil = &t
	}
	return u
}

const userColumns = `id, org_id, email, name, password_hash, org_admin, locked_until, created_at, disabled`

func scanUser(row interface{ Scan(...any) error }) (*userRow, error) {
	var r userRow
	err := row.Scan(&r.id, &r.orgID, &r.email, &r.name, &r.passwordHash, &r.orgAdmin, &r.lockedUntil, &r.createdAt, &r.disabled)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, nil
	}
	return &r, err
}

func (s *Service) userByEmail(ctx context.Context, email string) (*userRow, error) {
	return scanUser(s.cfg.DB.QueryRowContext(ctx, `SELECT `+userColumns+` FROM users WHERE email = $1`, email))
}

// requireOrgAdmin returns the caller when it is an organization admin.
func requireOrgAdmin(ctx context.Context, op string) (*api.Principal, error) {
	p, err := api.MustPrincipal(ctx)
	if err != nil {
		return nil, err
	}
	if !p.OrgAdmin {
		return nil, errs.E(op, errs.Forbidden, "only organization admins may do this")
	}
	return p, nil
}

// UserInput is the body of POST /api/v1/users.
type UserInput struct {
	Email    string `json:"email" maxLength:"254"`
	Password string `json:"password" maxLength:"1024" doc:"at least 12 characters"`
	Name     string `json:"name,omitempty" maxLength:"200"`
	OrgAdmin bool   `json:"orgAdmin,omitempty"`
}

type createUserInput struct{ Body UserInput }

type userIDInput struct {
	UserID string `path:"userId" maxLength:"64"`
}

func (s *Service) registerUsers(a huma.API) {
	huma.Register(a, huma.Operation{
		OperationID: "create-user", Method: http.MethodPost, Path: "/api/v1/users", Tags: []string{"Users"},
		Summary: "Create a user (organization admins)", Security: api.Secured, DefaultStatus: http.StatusCreated,
		Errors: []int{403, 409, 422},
	}, func(ctx context.Context, in *createUserInput) (*struct{ Body User }, error) {
		u, err := s.CreateUser(ctx, in.Body.Email, in.Body.Password, in.Body.Name, in.Body.OrgAdmin)
		if err != nil {
			return nil, api.Err(ctx, err)
		}
		return &struct{ Body User }{u}, nil
	})
	huma.Register(a, huma.Operation{
		OperationID: "list-users", Method: http.MethodGet, Path: "/api/v1/users", Tags: []string{"Users"},
		Summary: "List the organization's users (organization admins)", Security: api.Secured,
	}, func(ctx context.Context, _ *struct{}) (*struct{ Body []User }, error) {
		users, err := s.ListUsers(ctx)
		if err != nil {
			return nil, api.Err(ctx, err)
		}
		return &struct{ Body []User }{users}, nil
	})
	huma.Register(a, huma.Operation{
		OperationID: "unlock-user", Method: http.MethodPost, Path: "/api/v1/users/{userId}/unlock", Tags: []string{"Users"},
		Summary: "Unlock a user locked after failed logins (organization admins)", Security: api.Secured,
		DefaultStatus: http.StatusNoContent, Errors: []int{403, 404},
	}, func(ctx context.Context, in *userIDInput) (*struct{}, error) {
		return nil, api.Err(ctx, s.UnlockUser(ctx, in.UserID))
	})
	huma.Register(a, huma.Operation{
		OperationID: "disable-user", Method: http.MethodPost, Path: "/api/v1/users/{userId}/disable", Tags: []string{"Users"},
		Summary: "Disable a user: revoke their tokens and end their live sessions at once (organization admins)", Security: api.Secured,
		Errors: []int{403, 404, 409},
	}, func(ctx context.Context, in *userIDInput) (*struct{ Body User }, error) {
		u, err := s.SetUserDisabled(ctx, in.UserID, true)
		return &struct{ Body User }{u}, api.Err(ctx, err)
	})
	huma.Register(a, huma.Operation{
		OperationID: "enable-user", Method: http.MethodPost, Path: "/api/v1/users/{userId}/enable", Tags: []string{"Users"},
		Summary: "Enable a disabled user; they log in again (organization admins)", Security: api.Secured,
		Errors: []int{403, 404},
	}, func(ctx context.Context, in *userIDInput) (*struct{ Body User }, error) {
		u, err := s.SetUserDisabled(ctx, in.UserID, false)
		return &struct{ Body User }{u}, api.Err(ctx, err)
	})
	huma.Register(a, huma.Operation{
		OperationID: "delete-user", Method: http.MethodDelete, Path: "/api/v1/users/{userId}", Tags: []string{"Users"},
		Summary: "Delete a user, their tokens and memberships, and end their live sessions (organization admins)", Security: api.Secured,
		DefaultStatus: http.StatusNoContent, Errors: []int{403, 404, 409},
	}, func(ctx context.Context, in *userIDInput) (*struct{}, error) {
		return nil, api.Err(ctx, s.DeleteUser(ctx, in.UserID))
	})
	huma.Register(a, huma.Operation{
		OperationID: "revoke-user-tokens", Method: http.MethodPost, Path: "/api/v1/users/{userId}/revoke-tokens", Tags: []string{"Users"},
		Summary:  "Revoke every token of a user (all their logins) and end the sessions started under them (organization admins)",
		Security: api.Secured, DefaultStatus: http.StatusNoContent, Errors: []int{403, 404},
	}, func(ctx context.Context, in *userIDInput) (*struct{}, error) {
		return nil, api.Err(ctx, s.RevokeUserTokens(ctx, in.UserID))
	})
}

// userInOrg returns a user of the caller's organization, or NotFound.
func (s *Service) userInOrg(ctx context.Context, q store.Querier, op, orgID, userID string) (*userRow, error) {
	if _, err := uuid.Parse(userID); err != nil {
		return nil, errs.E(op, errs.NotFound, "no such user: give the user's id (`airlock users list` shows it)")
	}
	r, err := scanUser(q.QueryRowContext(ctx, `SELECT `+userColumns+` FROM users WHERE id = $1 AND org_id = $2`, userID, orgID))
	if err != nil {
		return nil, errs.Wrap(op, errs.Unavailable, "reading the user failed", err)
	}
	if r == nil {
		return nil, errs.E(op, errs.NotFound, "no such user: give the user's id (`airlock users list` shows it)")
	}
	return r, nil
}

// keepAnOrgAdmin fails when u is the organization's last enabled admin.
func keepAnOrgAdmin(ctx context.Context, tx *sql.Tx, op string, u *userRow, what string) error {
	if !u.orgAdmin || u.disabled {
		return nil
	}
	var others int
	if err := tx.QueryRowContext(ctx, `SELECT COUNT(*) FROM users WHERE org_id = $1 AND org_admin AND NOT disabled AND id <> $2`,
		u.orgID, u.id).Scan(&others); err != nil {
		return errs.Wrap(op, errs.Unavailable, "reading the organization's admins failed", err)
	}
	if others == 0 {
		return errs.Ef(op, errs.Conflict, "cannot %s the organization's last admin; make another user an organization admin first", what)
	}
	return nil
}

// SetUserDisabled disables a user (revoking every token of theirs and
// ending their live sessions, reason revoked) or enables them again. A
// disabled user cannot log in or refresh a token. An admin cannot disable
// themselves nor the organization's last admin.
func (s *Service) SetUserDisabled(ctx context.Context, userID string, disabled bool) (User, error) {
	const op = "auth.(*Service).SetUserDisabled"
	p, err := requireOrgAdmin(ctx, op)
	if err != nil {
		return User{}, err
	}
	if disabled && p.Kind == api.SubjectUser && p.ID == userID {
		return User{}, errs.E(op, errs.Conflict, "you cannot disable yourself; another organization admin can")
	}
	var u *userRow
	changed := false
	err = s.cfg.DB.InTx(ctx, func(tx *sql.Tx) error {
		var err error
		if u, err = s.userInOrg(ctx, tx, op, p.OrgID, userID); err != nil {
			return err
		}
		if u.disabled == disabled {
			return nil
		}
		action := "user.enable"
		if disabled {
			action = "user.disable"
			if err := keepAnOrgAdmin(ctx, tx, op, u, "disable"); err != nil {
				return err
			}
			if err := s.revokeSubject(ctx, tx, api.SubjectUser, u.id); err != nil {
				return err
			}
		}
		if _, err := tx.ExecContext(ctx, `UPDATE users SET disabled = $1, updated_at = $2 WHERE id = $3`,
			disabled, store.Micros(s.cfg.Now()), u.id); err != nil {
			return err
		}
		u.disabled, changed = disabled, true
		return audit.Record(ctx, tx, audit.By(ctx, audit.Entry{Action: action, TargetKind: api.SubjectUser, TargetID: u.id,
			Details: map[string]any{"email": u.email}}))
	})
	if err != nil {
		return User{}, errs.Wrap(op, errs.Unavailable, "changing the user failed", err)
	}
	if changed && disabled {
		s.accessRevoked(ctx)
	}
	return u.public(s.cfg.Now()), nil
}

// DeleteUser removes a user with their tokens and project memberships, and
// ends their live sessions (reason revoked). Their sessions and audit
// events stay. An admin cannot delete themselves nor the last admin.
func (s *Service) DeleteUser(ctx context.Context, userID string) error {
	const op = "auth.(*Service).DeleteUser"
	p, err := requireOrgAdmin(ctx, op)
	if err != nil {
		return err
	}
	if p.Kind == api.SubjectUser && p.ID == userID {
		return errs.E(op, errs.Conflict, "you cannot delete yourself; another organization admin can")
	}
	err = s.cfg.DB.InTx(ctx, func(tx *sql.Tx) error {
		u, err := s.userInOrg(ctx, tx, op, p.OrgID, userID)
		if err != nil {
			return err
		}
		if err := keepAnOrgAdmin(ctx, tx, op, u, "delete"); err != nil {
			return err
		}
		if err := s.revokeSubject(ctx, tx, api.SubjectUser, u.id); err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, `DELETE FROM project_members WHERE subject_kind = $1 AND subject_id = $2`, api.SubjectUser, u.id); err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, `DELETE FROM users WHERE id = $1`, u.id); err != nil {
			return err
		}
		return audit.Record(ctx, tx, audit.By(ctx, audit.Entry{Action: "user.delete", TargetKind: api.SubjectUser, TargetID: u.id,
			Details: map[string]any{"email": u.email}}))
	})
	if err != nil {
		return errs.Wrap(op, errs.Unavailable, "deleting the user failed", err)
	}
	s.accessRevoked(ctx)
	return nil
}

// RevokeUserTokens revokes every token of a user (every login of theirs, on
// every machine) and ends the sessions started under them (reason revoked).
// The user can log in again.
func (s *Service) RevokeUserTokens(ctx context.Context, userID string) error {
	const op = "auth.(*Service).RevokeUserTokens"
	p, err := requireOrgAdmin(ctx, op)
	if err != nil {
		return err
	}
	err = s.cfg.DB.InTx(ctx, func(tx *sql.Tx) error {
		u, err := s.userInOrg(ctx, tx, op, p.OrgID, userID)
		if err != nil {
			return err
		}
		if err := s.revokeSubject(ctx, tx, api.SubjectUser, u.id); err != nil {
			return err
		}
		return audit.Record(ctx, tx, audit.By(ctx, audit.Entry{Action: "user.revoke_tokens", TargetKind: api.SubjectUser, TargetID: u.id,
			Details: map[string]any{"email": u.email}}))
	})
	if err != nil {
		return errs.Wrap(op, errs.Unavailable, "revoking the user's tokens failed", err)
	}
	s.accessRevoked(ctx)
	return nil
}

// CreateUser adds a user to the caller's organization.
func (s *Service) CreateUser(ctx context.Context, email, password, name string, orgAdmin bool) (User, error) {
	const op = "auth.(*Service).CreateUser"
	p, err := requireOrgAdmin(ctx, op)
	if err != nil {
		return User{}, err
	}
	email = normalizeEmail(email)
	if msg := checkEmail(email); msg != "" {
		return User{}, errs.InvalidField(op, "body.email", msg)
	}
	if msg := CheckPasswordPolicy(password); msg != "" {
		return User{}, errs.InvalidField(op, "body.password", msg)
	}
	hash, err := HashPassword(password)
	if err != nil {
		return User{}, errs.Wrap(op, errs.Internal, "hashing the password failed", err)
	}
	now := s.cfg.Now()
	r := userRow{id: uuid.Must(uuid.NewV7()).String(), orgID: p.OrgID, email: email, name: name, orgAdmin: orgAdmin, createdAt: store.Micros(now)}
	err = s.cfg.DB.InTx(ctx, func(tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, `INSERT INTO users (id, org_id, email, name, password_hash, org_admin, created_at, updated_at)
			VALUES ($1, $2, $3, $4, $5, $6, $7, $7)`, r.id, r.orgID, r.email, r.name, hash, r.orgAdmin, r.createdAt)
		if err != nil {
			return err
		}
		return audit.Record(ctx, tx, audit.By(ctx, audit.Entry{Action: "user.create", TargetKind: api.SubjectUser, TargetID: r.id,
			Details: map[string]any{"email": email, "orgAdmin": orgAdmin}}))
	})
	if store.IsUniqueViolation(err) {
		return User{}, &errs.Error{Op: op, Code: errs.Conflict, Field: "body.email", Msg: "a user with this email already exists"}
	}
	if err != nil {
		return User{}, errs.Wrap(op, errs.Unavailable, "creating the user failed", err)
	}
	return r.public(now), nil
}

// ListUsers lists the caller's organization's users.
func (s *Service) ListUsers(ctx context.Context) ([]User, error) {
	const op = "auth.(*Service).ListUsers"
	p, err := requireOrgAdmin(ctx, op)
	if err != nil {
		return nil, err
	}
	rows, err := s.cfg.DB.QueryContext(ctx, `SELECT `+userColumns+` FROM users WHERE org_id = $1 ORDER BY email`, p.OrgID)
	if err != nil {
		return nil, errs.Wrap(op, errs.Unavailable, "listing users failed", err)
	}
	defer rows.Close()
	now := s.cfg.Now()
	out := []User{}
	for rows.Next() {
		r, err := scanUser(rows)
		if err != nil {
			return nil, errs.Wrap(op, errs.Unavailable, "listing users failed", err)
		}
		out = append(out, r.public(now))
	}
	return out, rows.Err()
}

// UnlockUser clears a lockout.
func (s *Service) UnlockUser(ctx context.Context, userID string) error {
	const op = "auth.(*Service).UnlockUser"
	p, err := requireOrgAdmin(ctx, op)
	if err != nil {
		return err
	}
	return s.cfg.DB.InTx(ctx, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, `UPDATE users SET failed_logins = 0, locked_until = 0 WHERE id = $1 AND org_id = $2`, userID, p.OrgID)
		if err != nil {
			return errs.Wrap(op, errs.Unavailable, "unlocking the user failed", err)
		}
		if n, _ := res.RowsAffected(); n == 0 {
			return errs.E(op, errs.NotFound, "no such user")
		}
		return audit.Record(ctx, tx, audit.By(ctx, audit.Entry{Action: "user.unlock", TargetKind: api.SubjectUser, TargetID: userID}))
	})
}
