package appconn

import (
	"context"
	"net/http"

	"github.com/danielgtaylor/huma/v2"

	"github.com/airlockpam/airlock/internal/api"
)

// ConnectionInput is the body of POST /api/v1/app-connections/postgres.
type ConnectionInput struct {
	Name                         string      `json:"name" maxLength:"64" doc:"a slug, unique in the project"`
	Description                  string      `json:"description,omitempty" maxLength:"256"`
	Method                       string      `json:"method" enum:"username-and-password"`
	IsPlatformManagedCredentials bool        `json:"isPlatformManagedCredentials,omitempty" doc:"give the user a new random password that only the server knows"`
	ProjectID                    string      `json:"projectId" maxLength:"64"`
	GatewayID                    string      `json:"gatewayId,omitempty" maxLength:"64" doc:"log in through this gateway instead of from the server"`
	Credentials                  Credentials `json:"credentials"`
}

// ConnectionUpdate is the body of PATCH
// /api/v1/app-connections/postgres/{connectionId}; nil fields stay.
type ConnectionUpdate struct {
	Name        *string      `json:"name,omitempty" maxLength:"64"`
	Description *string      `json:"description,omitempty" maxLength:"256"`
	GatewayID   *string      `json:"gatewayId,omitempty" maxLength:"64" doc:"\"\" to connect from the server"`
	Credentials *Credentials `json:"credentials,omitempty" doc:"all settings; the password may be left out to keep the stored one"`
}

// ConnectionResponse is the answer of the operations on one connection.
type ConnectionResponse struct {
	AppConnection *Connection `json:"appConnection"`
}

// ConnectionList is the answer of GET /api/v1/app-connections/postgres.
type ConnectionList struct {
	AppConnections []Connection `json:"appConnections"`
}

type connOut struct{ Body ConnectionResponse }

func one(c *Connection) *connOut { return &connOut{ConnectionResponse{c}} }

// Register adds the app connection operations to the API.
func (s *Service) Register(a huma.API) {
	tags := []string{"App connections"}
	base := "/api/v1/app-connections/postgres"
	huma.Register(a, huma.Operation{
		OperationID: "create-postgres-app-connection", Method: http.MethodPost, Path: base, Tags: tags,
		Summary: "Add a PostgreSQL app connection; the server logs in with it first (project admins)", Security: api.Secured,
		Errors: []int{403, 404, 409, 422, 503},
	}, func(ctx context.Context, in *struct{ Body ConnectionInput }) (*connOut, error) {
		c, err := s.Create(ctx, CreateInput(in.Body))
		return one(c), api.Err(ctx, err)
	})
	huma.Register(a, huma.Operation{
		OperationID: "list-postgres-app-connections", Method: http.MethodGet, Path: base, Tags: tags,
		Summary: "List a project's PostgreSQL app connections", Security: api.Secured, Errors: []int{404},
	}, func(ctx context.Context, in *struct {
		ProjectID string `query:"projectId" required:"true" maxLength:"64"`
	}) (*struct{ Body ConnectionList }, error) {
		list, err := s.List(ctx, in.ProjectID)
		return &struct{ Body ConnectionList }{ConnectionList{list}}, api.Err(ctx, err)
	})
	huma.Register(a, huma.Operation{
		OperationID: "get-postgres-app-connection", Method: http.MethodGet, Path: base + "/{connectionId}", Tags: tags,
		Summary: "Get a PostgreSQL app connection by id", Security: api.Secured, Errors: []int{404},
	}, func(ctx context.Context, in *struct {
		ConnectionID string `path:"connectionId" maxLength:"64"`
	}) (*connOut, error) {
		c, err := s.Get(ctx, in.ConnectionID)
		return one(c), api.Err(ctx, err)
	})
	huma.Register(a, huma.Operation{
		OperationID: "get-postgres-app-connection-by-name", Method: http.MethodGet, Path: base + "/connection-name/{connectionName}", Tags: tags,
		Summary: "Get a project's PostgreSQL app connection by name", Security: api.Secured, Errors: []int{404},
	}, func(ctx context.Context, in *struct {
		ConnectionName string `path:"connectionName" maxLength:"64"`
		ProjectID      string `query:"projectId" required:"true" maxLength:"64"`
	}) (*connOut, error) {
		c, err := s.GetByName(ctx, in.ProjectID, in.ConnectionName)
		return one(c), api.Err(ctx, err)
	})
	huma.Register(a, huma.Operation{
		OperationID: "update-postgres-app-connection", Method: http.MethodPatch, Path: base + "/{connectionId}", Tags: tags,
		Summary: "Change a PostgreSQL app connection; new credentials or a new gateway log in first (project admins)", Security: api.Secured,
		Errors: []int{403, 404, 409, 422, 503},
	}, func(ctx context.Context, in *struct {
		ConnectionID string `path:"connectionId" maxLength:"64"`
		Body         ConnectionUpdate
	}) (*connOut, error) {
		c, err := s.Update(ctx, in.ConnectionID, UpdateInput(in.Body))
		return one(c), api.Err(ctx, err)
	})
	huma.Register(a, huma.Operation{
		OperationID: "delete-postgres-app-connection", Method: http.MethodDelete, Path: base + "/{connectionId}", Tags: tags,
		Summary: "Delete a PostgreSQL app connection that no secret rotation uses (project admins)", Security: api.Secured,
		Errors: []int{403, 404, 409},
	}, func(ctx context.Context, in *struct {
		ConnectionID string `path:"connectionId" maxLength:"64"`
	}) (*connOut, error) {
		c, err := s.Get(ctx, in.ConnectionID)
		if err == nil {
			err = s.Delete(ctx, in.ConnectionID)
		}
		return one(c), api.Err(ctx, err)
	})
}
