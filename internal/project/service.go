package project

import (
	"context"
	"net/http"
	"strings"

	"github.com/danielgtaylor/huma/v2"

	"github.com/airlockpam/airlock/internal/api"
)

func normalize(email string) string { return strings.ToLower(strings.TrimSpace(email)) }

// ProjectPath is the path parameter of project-scoped operations.
type ProjectPath struct {
	ProjectID string `path:"projectId" maxLength:"64"`
}

// ProjectInput is the body of POST /api/v1/projects.
type ProjectInput struct {
	Name               string `json:"name" maxLength:"64"`
	Description        string `json:"description,omitempty" maxLength:"1000"`
	MaxSessionDuration string `json:"maxSessionDuration,omitempty" doc:"default 8h" maxLength:"20"`
}

// MemberInput is the body of PUT /api/v1/projects/{projectId}/members:
// exactly one of Email (a user) or MachineIdentityID.
type MemberInput struct {
	Email             string `json:"email,omitempty" maxLength:"254" doc:"a user's email"`
	MachineIdentityID string `json:"machineIdentityId,omitempty" maxLength:"64"`
	Role              Role   `json:"role" enum:"admin,member,viewer"`
}

// Register adds the project operations to the API.
func (s *Service) Register(a huma.API) {
	tags := []string{"Projects"}
	huma.Register(a, huma.Operation{
		OperationID: "create-project", Method: http.MethodPost, Path: "/api/v1/projects", Tags: tags,
		Summary: "Create a project; the caller becomes its admin", Security: api.Secured,
		DefaultStatus: http.StatusCreated, Errors: []int{409, 422},
	}, func(ctx context.Context, in *struct{ Body ProjectInput }) (*struct{ Body *Project }, error) {
		p, err := s.Create(ctx, in.Body.Name, in.Body.Description, in.Body.MaxSessionDuration)
		return &struct{ Body *Project }{p}, api.Err(ctx, err)
	})
	huma.Register(a, huma.Operation{
		OperationID: "list-projects", Method: http.MethodGet, Path: "/api/v1/projects", Tags: tags,
		Summary: "List the projects the caller belongs to", Security: api.Secured,
	}, func(ctx context.Context, _ *struct{}) (*struct{ Body []Project }, error) {
		ps, err := s.List(ctx)
		return &struct{ Body []Project }{ps}, api.Err(ctx, err)
	})
	huma.Register(a, huma.Operation{
		OperationID: "get-project", Method: http.MethodGet, Path: "/api/v1/projects/{projectId}", Tags: tags,
		Summary: "Get a project", Security: api.Secured, Errors: []int{404},
	}, func(ctx context.Context, in *ProjectPath) (*struct{ Body *Project }, error) {
		p, err := s.Authorize(ctx, in.ProjectID, RoleViewer)
		return &struct{ Body *Project }{p}, api.Err(ctx, err)
	})
	huma.Register(a, huma.Operation{
		OperationID: "update-project", Method: http.MethodPatch, Path: "/api/v1/projects/{projectId}", Tags: tags,
		Summary: "Change a project's settings (project admins)", Security: api.Secured, Errors: []int{403, 404, 422},
	}, func(ctx context.Context, in *struct {
		ProjectPath
		Body ProjectUpdate
	}) (*struct{ Body *Project }, error) {
		p, err := s.Update(ctx, in.ProjectID, in.Body)
		return &struct{ Body *Project }{p}, api.Err(ctx, err)
	})
	huma.Register(a, huma.Operation{
		OperationID: "delete-project", Method: http.MethodDelete, Path: "/api/v1/projects/{projectId}", Tags: tags,
		Summary:     "Delete a project and everything in it (project admins); its session logs stay readable by organization admins",
		Description: "A project with live or recorded sessions is refused with 409 unless force=true; with it, the live sessions end (reason revoked).",
		Security:    api.Secured, DefaultStatus: http.StatusNoContent, Errors: []int{403, 404, 409},
	}, func(ctx context.Context, in *struct {
		ProjectPath
		Force bool `query:"force" doc:"delete even though the project has live sessions (they end) or recorded sessions (their logs stay)"`
	}) (*struct{}, error) {
		return nil, api.Err(ctx, s.Delete(ctx, in.ProjectID, in.Force))
	})
	huma.Register(a, huma.Operation{
		OperationID: "list-project-members", Method: http.MethodGet, Path: "/api/v1/projects/{projectId}/members", Tags: tags,
		Summary: "List a project's members", Security: api.Secured, Errors: []int{404},
	}, func(ctx context.Context, in *ProjectPath) (*struct{ Body []Member }, error) {
		ms, err := s.Members(ctx, in.ProjectID)
		return &struct{ Body []Member }{ms}, api.Err(ctx, err)
	})
	huma.Register(a, huma.Operation{
		OperationID: "set-project-member", Method: http.MethodPut, Path: "/api/v1/projects/{projectId}/members", Tags: tags,
		Summary: "Add a member or change a member's role (project admins)", Security: api.Secured, Errors: []int{403, 404, 409, 422},
	}, func(ctx context.Context, in *struct {
		ProjectPath
		Body MemberInput
	}) (*struct{ Body *Member }, error) {
		m, err := s.SetMember(ctx, in.ProjectID, in.Body.Email, in.Body.MachineIdentityID, in.Body.Role)
		return &struct{ Body *Member }{m}, api.Err(ctx, err)
	})
	huma.Register(a, huma.Operation{
		OperationID: "remove-project-member", Method: http.MethodDelete, Path: "/api/v1/projects/{projectId}/members/{kind}/{subjectId}",
		Tags: tags, Summary: "Remove a member (project admins)", Security: api.Secured,
		DefaultStatus: http.StatusNoContent, Errors: []int{403, 404, 409},
	}, func(ctx context.Context, in *struct {
		ProjectPath
		Kind      string `path:"kind" enum:"user,machine"`
		SubjectID string `path:"subjectId" maxLength:"64"`
	}) (*struct{}, error) {
		return nil, api.Err(ctx, s.RemoveMember(ctx, in.ProjectID, in.Kind, in.SubjectID))
	})
}
