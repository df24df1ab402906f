package project

import (
	"context"
	"database/sql"
	"errors"
	"time"

	"github.com/airlockpam/airlock/internal/api"
	"github.com/airlockpam/airlock/internal/audit"
	"github.com/airlockpam/airlock/internal/errs"
	"github.com/airlockpam/airlock/internal/store"
)

// Member is a user or machine identity with a role in a project.
type Member struct {
	Kind      string    `json:"kind" enum:"user,machine"`
	ID        string    `json:"id"`
	Name      string    `json:"name" doc:"email of a user, name of a machine identity"`
	Role      Role      `json:"role" enum:"admin,member,viewer"`
	CreatedAt time.Time `json:"createdAt"`
}

// Members lists a project's members (any member may see them).
func (s *Service) Members(ctx context.Context, projectID string) ([]Member, error) {
	const op = "project.(*Service).Members"
	proj, err := s.Authorize(ctx, projectID, RoleViewer)
	if err != nil {
		return nil, err
	}
	rows, err := s.db.QueryContext(ctx, `SELECT m.subject_kind, m.subject_id, COALESCE(u.email, mi.name, ''), m.role, m.created_at
		FROM project_members m
		LEFT JOIN users u ON m.subject_kind = 'user' AND u.id = m.subject_id
		LEFT JOIN machine_identities mi ON m.subject_kind = 'machine' AND mi.id = m.subject_id
		WHERE m.project_id = $1 ORDER BY m.created_at`, proj.ID)
	if err != nil {
		return nil, errs.Wrap(op, errs.Unavailable, "listing members failed", err)
	}
	defer rows.Close()
	out := []Member{}
	for rows.Next() {
		var m Member
		var at int64
		if err := rows.Scan(&m.Kind, &m.ID, &m.Name, &m.Role, &at); err != nil {
			return nil, errs.Wrap(op, errs.Unavailable, "listing members failed", err)
		}
		m.CreatedAt = store.Time(at)
		out = append(out, m)
	}
	return out, rows.Err()
}

// orgAdminMembership refuses a project admin's change to an organization
// admin's membership.
const orgAdminMembership = "only an organization admin may add, change or remove an organization admin's membership of a project"

// SetMember adds a user (by email) or a machine identity (by id) to a
// project, or changes its role. Lowering a role below member ends the
// member's live sessions in the project (reason revoked).
func (s *Service) SetMember(ctx context.Context, projectID, email, machineID string, role Role) (*Member, error) {
	const op = "project.(*Service).SetMember"
	proj, err := s.Authorize(ctx, projectID, RoleAdmin)
	if err != nil {
		return nil, err
	}
	p := api.PrincipalFrom(ctx)
	if !role.Valid() {
		return nil, errs.InvalidField(op, "body.role", "the role must be admin, member or viewer")
	}
	if (email == "") == (machineID == "") {
		return nil, errs.InvalidField(op, "body", "give exactly one of email (a user) or machineIdentityId")
	}
	if role.rank() > proj.Role.rank() {
		return nil, &errs.Error{Op: op, Code: errs.Forbidden, Field: "body.role", Msg: "you cannot grant a role you do not hold in this project"}
	}
	m := &Member{Role: role}
	var err2 error
	subjectOrgAdmin := false
	if email != "" {
		m.Kind, m.Name = api.SubjectUser, email
		err2 = s.db.QueryRowContext(ctx, `SELECT id, email, org_admin FROM users WHERE email = $1 AND org_id = $2`, normalize(email), p.OrgID).
			Scan(&m.ID, &m.Name, &subjectOrgAdmin)
	} else {
		m.Kind = api.SubjectMachine
		err2 = s.db.QueryRowContext(ctx, `SELECT id, name FROM machine_identities WHERE id = $1 AND org_id = $2`, machineID, p.OrgID).Scan(&m.ID, &m.Name)
	}
	if errors.Is(err2, sql.ErrNoRows) {
		if email != "" {
			return nil, errs.InvalidField(op, "body.email", "no user with this email in the organization; an organization admin can create one")
		}
		return nil, errs.InvalidField(op, "body.machineIdentityId", "no machine identity with this id in the organization")
	}
	if err2 != nil {
		return nil, errs.Wrap(op, errs.Unavailable, "looking up the member failed", err2)
	}
	if subjectOrgAdmin && !p.OrgAdmin {
		return nil, &errs.Error{Op: op, Code: errs.Forbidden, Field: "body.email", Msg: orgAdminMembership}
	}
	now := s.now()
	m.CreatedAt = store.Time(store.Micros(now))
	err = s.db.InTx(ctx, func(tx *sql.Tx) error {
		if role != RoleAdmin {
			if err := s.keepAnAdmin(ctx, tx, proj.ID, m.Kind, m.ID); err != nil {
				return err
			}
		}
		if _, err := tx.ExecContext(ctx, `INSERT INTO project_members (project_id, subject_kind, subject_id, role, created_at)
			VALUES ($1, $2, $3, $4, $5)
			ON CONFLICT (project_id, subject_kind, subject_id) DO UPDATE SET role = excluded.role`,
			proj.ID, m.Kind, m.ID, role, store.Micros(now)); err != nil {
			return err
		}
		return audit.Record(ctx, tx, audit.By(ctx, audit.Entry{Action: "project.member.set", TargetKind: m.Kind, TargetID: m.ID,
			ProjectID: proj.ID, Details: map[string]any{"name": m.Name, "role": string(role)}}))
	})
	if err != nil {
		return nil, errs.Wrap(op, errs.Unavailable, "saving the member failed", err)
	}
	if role.rank() < RoleMember.rank() {
		s.accessRevoked(ctx) // a viewer no longer uses accounts: their live sessions end
	}
	return m, nil
}

// RemoveMember takes a user or machine identity out of a project; their live
// sessions in it end (reason revoked).
func (s *Service) RemoveMember(ctx context.Context, projectID, kind, subjectID string) error {
	const op = "project.(*Service).RemoveMember"
	proj, err := s.Authorize(ctx, projectID, RoleAdmin)
	if err != nil {
		return err
	}
	if p := api.PrincipalFrom(ctx); kind == api.SubjectUser && !p.OrgAdmin {
		var orgAdmin bool
		err := s.db.QueryRowContext(ctx, `SELECT org_admin FROM users WHERE id = $1 AND org_id = $2`, subjectID, p.OrgID).Scan(&orgAdmin)
		if err != nil && !errors.Is(err, sql.ErrNoRows) {
			return errs.Wrap(op, errs.Unavailable, "looking up the member failed", err)
		}
		if orgAdmin {
			return errs.E(op, errs.Forbidden, orgAdminMembership)
		}
	}
	err = s.db.InTx(ctx, func(tx *sql.Tx) error {
		if err := s.keepAnAdmin(ctx, tx, proj.ID, kind, subjectID); err != nil {
			return err
		}
		res, err := tx.ExecContext(ctx, `DELETE FROM project_members WHERE project_id = $1 AND subject_kind = $2 AND subject_id = $3`,
			proj.ID, kind, subjectID)
		if err != nil {
			return errs.Wrap(op, errs.Unavailable, "removing the member failed", err)
		}
		if n, _ := res.RowsAffected(); n == 0 {
			return errs.E(op, errs.NotFound, "no such member in this project")
		}
		return audit.Record(ctx, tx, audit.By(ctx, audit.Entry{Action: "project.member.remove", TargetKind: kind, TargetID: subjectID, ProjectID: proj.ID}))
	})
	if err != nil {
		return err
	}
	s.accessRevoked(ctx) // their live sessions in this project end
	return nil
}

// keepAnAdmin fails when the subject is the project's last admin.
func (s *Service) keepAnAdmin(ctx context.Context, tx *sql.Tx, projectID, kind, id string) error {
	var others int
	err := tx.QueryRowContext(ctx, `SELECT COUNT(*) FROM project_members
		WHERE project_id = $1 AND role = 'admin' AND NOT (subject_kind = $2 AND subject_id = $3)`, projectID, kind, id).Scan(&others)
	if err != nil {
		return err
	}
	var isAdmin int
	err = tx.QueryRowContext(ctx, `SELECT COUNT(*) FROM project_members
		WHERE project_id = $1 AND role = 'admin' AND subject_kind = $2 AND subject_id = $3`, projectID, kind, id).Scan(&isAdmin)
	if err != nil {
		return err
	}
	if isAdmin > 0 && others == 0 {
		return errs.E("project.keepAnAdmin", errs.Conflict, "this is the project's last admin; make another member admin first")
	}
	return nil
}
