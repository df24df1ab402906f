package audit

import (
	"context"
	"net/http"
	"time"

	"github.com/danielgtaylor/huma/v2"

	"github.com/airlockpam/airlock/internal/api"
	"github.com/airlockpam/airlock/internal/errs"
)

// ProjectAdminCheck returns nil when the caller administers the project.
type ProjectAdminCheck func(ctx context.Context, projectID string) error

type listInput struct {
	Actor     string    `query:"actor" maxLength:"254" doc:"actor id or name (email)"`
	Action    string    `query:"action" maxLength:"100" doc:"an action such as project.create, or a prefix ending in a dot such as auth."`
	ProjectID string    `query:"projectId" maxLength:"64"`
	From      time.Time `query:"from" doc:"RFC 3339 time; events at or after it"`
	To        time.Time `query:"to" doc:"RFC 3339 time; events before it"`
	Before    string    `query:"before" maxLength:"64" doc:"cursor: the id of the last event of the previous page"`
	Limit     int       `query:"limit" minimum:"1" maximum:"1000" default:"100"`
}

// Register adds GET /api/v1/audit-logs and POST /api/v1/audit-logs/verify. Organization admins read every event;
// a project admin reads the events of that project (projectId required).
func Register(a huma.API, repo *Repository, isProjectAdmin ProjectAdminCheck) {
	huma.Register(a, huma.Operation{
		OperationID: "list-audit-logs", Method: http.MethodGet, Path: "/api/v1/audit-logs", Tags: []string{"Audit"},
		Summary: "List admin audit log events, newest first", Security: api.Secured, Errors: []int{403, 404, 422},
	}, func(ctx context.Context, in *listInput) (*struct{ Body []Entry }, error) {
		const op = "audit.listAuditLogs"
		p, err := api.MustPrincipal(ctx)
		if err != nil {
			return nil, api.Err(ctx, err)
		}
		if !p.OrgAdmin {
			if in.ProjectID == "" {
				return nil, api.Err(ctx, errs.E(op, errs.Forbidden, "only organization admins read the whole audit log; project admins pass projectId"))
			}
			if err := isProjectAdmin(ctx, in.ProjectID); err != nil {
				return nil, api.Err(ctx, err)
			}
		}
		if !in.From.IsZero() && !in.To.IsZero() && !in.From.Before(in.To) {
			return nil, api.Err(ctx, errs.InvalidField(op, "query.from", "from must be before to"))
		}
		evs, err := repo.List(ctx, Filter{OrgID: p.OrgID, Actor: in.Actor, Action: in.Action, ProjectID: in.ProjectID,
			From: in.From, To: in.To, Before: in.Before, Limit: in.Limit})
		if evs == nil {
			evs = []Entry{}
		}
		return &struct{ Body []Entry }{evs}, api.Err(ctx, err)
	})

	huma.Register(a, huma.Operation{
		OperationID: "verify-audit-logs", Method: http.MethodPost, Path: "/api/v1/audit-logs/verify", Tags: []string{"Audit"},
		Summary: "Verify the organization's audit log (organization admins)",
		Description: "Checks the hash chain of every entry and the head against its MAC (a key derived from the root key), " +
			"reports the first entry altered, removed or cut off the end, and authenticates the head it checked.",
		Security: api.Secured, Errors: []int{403},
	}, func(ctx context.Context, _ *struct{}) (*struct{ Body Verification }, error) {
		const op = "audit.verifyAuditLogs"
		p, err := api.MustPrincipal(ctx)
		if err != nil {
			return nil, api.Err(ctx, err)
		}
		if !p.OrgAdmin {
			return nil, api.Err(ctx, errs.E(op, errs.Forbidden, "only organization admins verify the audit log"))
		}
		res, err := repo.Verify(ctx, p.OrgID)
		if err != nil {
			return nil, api.Err(ctx, err)
		}
		return &struct{ Body Verification }{res}, nil
	})
}
