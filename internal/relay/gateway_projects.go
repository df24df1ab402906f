package relay

import (
	"context"
	"database/sql"
	"errors"
	"net/http"
	"time"

	"github.com/danielgtaylor/huma/v2"

	"github.com/airlockpam/airlock/internal/api"
	"github.com/airlockpam/airlock/internal/audit"
	"github.com/airlockpam/airlock/internal/errs"
	"github.com/airlockpam/airlock/internal/store"
)

// GatewayProject is a project allowed to use a gateway.
type GatewayProject struct {
	ProjectID   string    `json:"projectId"`
	ProjectName string    `json:"projectName"`
	AllowedAt   time.Time `json:"allowedAt" doc:"when it was allowed; the zero time for projects that used the gateway before assignments existed"`
}

// GatewayAllowed says whether projectID may use gatewayID: only then may the
// project's resources name the gateway and its sessions run through it.
func (s *Service) GatewayAllowed(ctx context.Context, gatewayID, projectID string) (bool, error) {
	const op = "relay.(*Service).GatewayAllowed"
	if gatewayID == "" || projectID == "" {
		return false, errs.E(op, errs.Invalid, "a gateway and a project are needed")
	}
	var n int
	if err := s.db.QueryRowContext(ctx, `SELECT COUNT(*) FROM gateway_projects WHERE gateway_id = $1 AND project_id = $2`,
		gatewayID, projectID).Scan(&n); err != nil {
		return false, errs.Wrap(op, errs.Unavailable, "reading the gateway's projects failed", err)
	}
	return n > 0, nil
}

// AllowProject lets a project use a gateway (organization admins). It is
// idempotent.
func (s *Service) AllowProject(ctx context.Context, gatewayRef, projectID string) error {
	return s.AllowProjectTx(ctx, nil, gatewayRef, projectID)
}

// AllowProjectTx is AllowProject inside tx when tx is set (an organization
// admin's resource change that names a gateway allows its project in the
// same transaction).
func (s *Service) AllowProjectTx(ctx context.Context, tx *sql.Tx, gatewayRef, projectID string) error {
	const op = "relay.(*Service).AllowProject"
	p, err := s.orgAdmin(ctx, op, "allow projects to use gateways")
	if err != nil {
		return err
	}
	var q store.Querier = s.db
	if tx != nil {
		q = tx
	}
	g, projectName, err := s.gatewayAndProject(ctx, q, p.OrgID, gatewayRef, projectID)
	if err != nil {
		return err
	}
	do := func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, `INSERT INTO gateway_projects (gateway_id, project_id, created_at) VALUES ($1, $2, $3)
			ON CONFLICT (gateway_id, project_id) DO NOTHING`, g.ID, projectID, store.Micros(s.now()))
		if err != nil {
			return err
		}
		if n, _ := res.RowsAffected(); n == 0 {
			return nil // already allowed
		}
		return audit.Record(ctx, tx, audit.By(ctx, audit.Entry{Action: "gateway.allow_project", TargetKind: "gateway", TargetID: g.ID,
			ProjectID: projectID, Details: map[string]any{"gateway": g.Name, "projectId": projectID, "project": projectName}}))
	}
	if tx != nil {
		err = do(tx)
	} else {
		err = s.db.InTx(ctx, do)
	}
	if err != nil {
		return errs.Wrap(op, errs.Unavailable, "allowing the project failed", err)
	}
	return nil
}

// DisallowProject stops a project from using a gateway (organization
// admins). The project's resources that name the gateway stay but cannot
// start sessions or validate credentials until it is allowed again or they
// name another gateway; live sessions through it end.
func (s *Service) DisallowProject(ctx context.Context, gatewayRef, projectID string) error {
	const op = "relay.(*Service).DisallowProject"
	p, err := s.orgAdmin(ctx, op, "disallow projects from using gateways")
	if err != nil {
		return err
	}
	g, projectName, err := s.gatewayAndProject(ctx, s.db, p.OrgID, gatewayRef, projectID)
	if err != nil {
		return err
	}
	err = s.db.InTx(ctx, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, `DELETE FROM gateway_projects WHERE gateway_id = $1 AND project_id = $2`, g.ID, projectID)
		if err != nil {
			return err
		}
		if n, _ := res.RowsAffected(); n == 0 {
			return nil
		}
		return audit.Record(ctx, tx, audit.By(ctx, audit.Entry{Action: "gateway.disallow_project", TargetKind: "gateway", TargetID: g.ID,
			ProjectID: projectID, Details: map[string]any{"gateway": g.Name, "projectId": projectID, "project": projectName}}))
	})
	if err != nil {
		return errs.Wrap(op, errs.Unavailable, "disallowing the project failed", err)
	}
	if s.sessions != nil {
		s.sessions.EnforceAccess(ctx)
	}
	return nil
}

// GatewayProjects lists the projects allowed to use a gateway
// (organization admins).
func (s *Service) GatewayProjects(ctx context.Context, gatewayRef string) ([]GatewayProject, error) {
	const op = "relay.(*Service).GatewayProjects"
	p, err := s.orgAdmin(ctx, op, "see which projects may use a gateway")
	if err != nil {
		return nil, err
	}
	g, err := s.gateway(ctx, p.OrgID, gatewayRef)
	if err != nil {
		return nil, err
	}
	rows, err := s.db.QueryContext(ctx, `SELECT gp.project_id, p.name, gp.created_at FROM gateway_projects gp
		JOIN projects p ON p.id = gp.project_id WHERE gp.gateway_id = $1 ORDER BY p.name`, g.ID)
	if err != nil {
		return nil, errs.Wrap(op, errs.Unavailable, "listing the gateway's projects failed", err)
	}
	defer rows.Close()
	out := []GatewayProject{}
	for rows.Next() {
		var gp GatewayProject
		var at int64
		if err := rows.Scan(&gp.ProjectID, &gp.ProjectName, &at); err != nil {
			return nil, errs.Wrap(op, errs.Unavailable, "listing the gateway's projects failed", err)
		}
		if at != 0 {
			gp.AllowedAt = store.Time(at)
		}
		out = append(out, gp)
	}
	if err := rows.Err(); err != nil {
		return nil, errs.Wrap(op, errs.Unavailable, "listing the gateway's projects failed", err)
	}
	return out, nil
}

func (s *Service) orgAdmin(ctx context.Context, op, what string) (*api.Principal, error) {
	p, err := api.MustPrincipal(ctx)
	if err != nil {
		return nil, err
	}
	if !p.OrgAdmin {
		return nil, errs.E(op, errs.Forbidden, "only organization admins may "+what)
	}
	return p, nil
}

func (s *Service) gatewayAndProject(ctx context.Context, q store.Querier, orgID, gatewayRef, projectID string) (*Gateway, string, error) {
	const op = "relay.gatewayAndProject"
	g, err := s.gateway(ctx, orgID, gatewayRef)
	if err != nil {
		return nil, "", err
	}
	var name string
	err = q.QueryRowContext(ctx, `SELECT name FROM projects WHERE id = $1 AND org_id = $2`, projectID, orgID).Scan(&name)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, "", &errs.Error{Op: op, Code: errs.NotFound, Field: "path.projectId",
			Msg: "no such project in the organization; `airlock projects list` shows them"}
	}
	if err != nil {
		return nil, "", errs.Wrap(op, errs.Unavailable, "reading the project failed", err)
	}
	return g, name, nil
}

func (s *Service) registerGatewayProjects(a huma.API) {
	tags := []string{"Gateways"}
	type path struct {
		Gateway   string `path:"gateway" maxLength:"64" doc:"the gateway's name or id"`
		ProjectID string `path:"projectId" maxLength:"64" doc:"the project's id"`
	}
	huma.Register(a, huma.Operation{
		OperationID: "list-gateway-projects", Method: http.MethodGet, Path: "/api/v1/gateways/{gateway}/projects", Tags: tags,
		Summary: "List the projects allowed to use a gateway (organization admins)", Security: api.Secured, Errors: []int{403, 404},
	}, func(ctx context.Context, in *struct {
		Gateway string `path:"gateway" maxLength:"64" doc:"the gateway's name or id"`
	}) (*struct{ Body []GatewayProject }, error) {
		out, err := s.GatewayProjects(ctx, in.Gateway)
		return &struct{ Body []GatewayProject }{out}, api.Err(ctx, err)
	})
	huma.Register(a, huma.Operation{
		OperationID: "allow-gateway-project", Method: http.MethodPut, Path: "/api/v1/gateways/{gateway}/projects/{projectId}", Tags: tags,
		Summary: "Allow a project to use a gateway (organization admins)", Security: api.Secured,
		DefaultStatus: http.StatusNoContent, Errors: []int{403, 404},
	}, func(ctx context.Context, in *path) (*struct{}, error) {
		return nil, api.Err(ctx, s.AllowProject(ctx, in.Gateway, in.ProjectID))
	})
	huma.Register(a, huma.Operation{
		OperationID: "disallow-gateway-project", Method: http.MethodDelete, Path: "/api/v1/gateways/{gateway}/projects/{projectId}", Tags: tags,
		Summary: "Stop a project from using a gateway; its sessions through it end (organization admins)", Security: api.Secured,
		DefaultStatus: http.StatusNoContent, Errors: []int{403, 404},
	}, func(ctx context.Context, in *path) (*struct{}, error) {
		return nil, api.Err(ctx, s.DisallowProject(ctx, in.Gateway, in.ProjectID))
	})
}
