package session

import (
	"context"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/danielgtaylor/huma/v2"

	"github.com/airlockpam/airlock/internal/api"
	"github.com/airlockpam/airlock/internal/errs"
	"github.com/airlockpam/airlock/internal/project"
	"github.com/airlockpam/airlock/internal/store"
)

// Filter selects sessions of a project; empty fields do not filter.
type Filter struct {
	Resource string    `query:"resource" maxLength:"64" doc:"resource name or id"`
	Account  string    `query:"account" maxLength:"64" doc:"account name or id"`
	User     string    `query:"user" maxLength:"254" doc:"user email, machine identity name, or id"`
	Status   string    `query:"status" maxLength:"10" doc:"active or ended"`
	From     time.Time `query:"from" doc:"sessions created at or after this RFC 3339 time"`
	To       time.Time `query:"to" doc:"sessions created before this RFC 3339 time"`
	Limit    int       `query:"limit" minimum:"1" maximum:"1000" default:"100"`
}

// List returns a project's sessions, newest first. Project admins see every
// session; other members see their own.
func (s *Service) List(ctx context.Context, projectID string, f Filter) ([]Session, error) {
	const op = "session.(*Service).List"
	proj, err := s.projects.Authorize(ctx, projectID, project.RoleViewer)
	if err != nil {
		if proj, err = s.deletedProject(ctx, projectID, err); err != nil {
			return nil, err
		}
	}
	if f.Status != "" && f.Status != StatusActive && f.Status != StatusEnded {
		return nil, errs.InvalidField(op, "query.status", "status must be active or ended")
	}
	if !f.From.IsZero() && !f.To.IsZero() && !f.From.Before(f.To) {
		return nil, errs.InvalidField(op, "query.from", "from must be before to")
	}
	var where []string
	var args []any
	arg := func(v any) string { args = append(args, v); return "$" + strconv.Itoa(len(args)) }
	where = append(where, "project_id = "+arg(proj.ID))
	if proj.Role != project.RoleAdmin {
		p := api.PrincipalFrom(ctx)
		where = append(where, "subject_kind = "+arg(p.Kind)+" AND subject_id = "+arg(p.ID))
	}
	if f.Resource != "" {
		n := arg(f.Resource)
		where = append(where, "(resource_id = "+n+" OR resource_name = "+n+")")
	}
	if f.Account != "" {
		n := arg(f.Account)
		where = append(where, "(account_id = "+n+" OR account_name = "+n+")")
	}
	if f.User != "" {
		n := arg(strings.ToLower(f.User))
		where = append(where, "(subject_id = "+n+" OR LOWER(subject_name) = "+n+")")
	}
	if f.Status != "" {
		where = append(where, "status = "+arg(f.Status))
	}
	if !f.From.IsZero() {
		where = append(where, "created_at >= "+arg(store.Micros(f.From)))
	}
	if !f.To.IsZero() {
		where = append(where, "created_at < "+arg(store.Micros(f.To)))
	}
	if f.Limit <= 0 {
		f.Limit = 100
	}
	q := `SELECT ` + columns + ` FROM sessions WHERE ` + strings.Join(where, " AND ") + ` ORDER BY created_at DESC, id DESC LIMIT ` + arg(f.Limit)
	rows, err := s.db.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, errs.Wrap(op, errs.Unavailable, "listing sessions failed", err)
	}
	defer rows.Close()
	out := []Session{}
	for rows.Next() {
		x, err := s.scan(rows)
		if err != nil {
			return nil, errs.Wrap(op, errs.Unavailable, "listing sessions failed", err)
		}
		out = append(out, *x)
	}
	return out, rows.Err()
}

// deletedProject lets an organization admin list the sessions of a deleted
// project (their logs outlive it); for anyone else, or a project that
// exists, it returns authErr, the project check's refusal.
func (s *Service) deletedProject(ctx context.Context, projectID string, authErr error) (*project.Project, error) {
	p := api.PrincipalFrom(ctx)
	if p == nil || !p.OrgAdmin || !errs.Is(authErr, errs.NotFound) {
		return nil, authErr
	}
	var orphaned int
	err := s.db.QueryRowContext(ctx, `SELECT COUNT(*) FROM sessions s WHERE s.project_id = $1 AND s.org_id = $2
		AND NOT EXISTS (SELECT 1 FROM projects p WHERE p.id = s.project_id)`, projectID, p.OrgID).Scan(&orphaned)
	if err != nil {
		return nil, errs.Wrap("session.deletedProject", errs.Unavailable, "reading the sessions failed", err)
	}
	if orphaned == 0 {
		return nil, authErr
	}
	return &project.Project{ID: projectID, Name: "(deleted)", Role: project.RoleAdmin}, nil
}

func (s *Service) registerList(a huma.API) {
	huma.Register(a, huma.Operation{
		OperationID: "list-sessions", Method: http.MethodGet, Path: "/api/v1/projects/{projectId}/sessions", Tags: []string{"Sessions"},
		Summary: "List a project's sessions, newest first (admins see all, members their own)", Security: api.Secured, Errors: []int{404, 422},
	}, func(ctx context.Context, in *struct {
		project.ProjectPath
		Filter
	}) (*struct{ Body []Session }, error) {
		list, err := s.List(ctx, in.ProjectID, in.Filter)
		return &struct{ Body []Session }{list}, api.Err(ctx, err)
	})
}
