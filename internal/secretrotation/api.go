package secretrotation

import (
	"context"
	"net/http"

	"github.com/danielgtaylor/huma/v2"

	"github.com/airlockpam/airlock/internal/api"
)

// RotationInput is the body of POST
// /api/v2/secret-rotations/postgres-credentials.
type RotationInput struct {
	Name                  string         `json:"name" maxLength:"64" doc:"a slug, unique in the project"`
	Description           string         `json:"description,omitempty" maxLength:"256"`
	ProjectID             string         `json:"projectId" maxLength:"64"`
	ConnectionID          string         `json:"connectionId" maxLength:"64" doc:"the app connection's id or name"`
	Environment           string         `json:"environment" maxLength:"32"`
	SecretPath            string         `json:"secretPath" maxLength:"256"`
	IsAutoRotationEnabled *bool          `json:"isAutoRotationEnabled,omitempty" doc:"default true"`
	RotationInterval      int            `json:"rotationInterval" doc:"days, 1 to 365"`
	RotateAt              string         `json:"rotateAt" maxLength:"5" doc:"HH:MM in timeZone"`
	TimeZone              string         `json:"timeZone,omitempty" maxLength:"64" doc:"IANA name; default UTC"`
	Parameters            Parameters     `json:"parameters"`
	SecretsMapping        SecretsMapping `json:"secretsMapping"`
}

// RotationUpdate is the body of PATCH
// /api/v2/secret-rotations/postgres-credentials/{rotationId}; nil fields stay.
type RotationUpdate struct {
	Name                  *string `json:"name,omitempty" maxLength:"64"`
	Description           *string `json:"description,omitempty" maxLength:"256"`
	IsAutoRotationEnabled *bool   `json:"isAutoRotationEnabled,omitempty"`
	RotationInterval      *int    `json:"rotationInterval,omitempty"`
	RotateAt              *string `json:"rotateAt,omitempty" maxLength:"5"`
	TimeZone              *string `json:"timeZone,omitempty" maxLength:"64"`
}

// RotationResponse is the answer of the operations on one rotation.
type RotationResponse struct {
	SecretRotation *Rotation `json:"secretRotation"`
}

// RotationList is the answer of GET
// /api/v2/secret-rotations/postgres-credentials.
type RotationList struct {
	SecretRotations []Rotation `json:"secretRotations"`
}

type rotationOut struct{ Body RotationResponse }

func one(r *Rotation) *rotationOut { return &rotationOut{RotationResponse{r}} }

// RefQuery selects a project's rotation by id or name.
type RefQuery struct {
	Ref       string `path:"rotationId" maxLength:"64" doc:"the rotation's id or name"`
	ProjectID string `query:"projectId" required:"true" maxLength:"64"`
}

// Register adds the secret rotation operations to the API.
func (s *Service) Register(a huma.API) {
	tags := []string{"Secret rotations"}
	base := "/api/v2/secret-rotations/postgres-credentials"
	huma.Register(a, huma.Operation{
		OperationID: "create-postgres-credentials-rotation", Method: http.MethodPost, Path: base, Tags: tags,
		Summary:  "Add a dual-user PostgreSQL credentials rotation; every precondition is checked, then the first rotation publishes username 1 (project admins)",
		Security: api.Secured, Errors: []int{403, 404, 409, 422, 503},
	}, func(ctx context.Context, in *struct{ Body RotationInput }) (*rotationOut, error) {
		b := in.Body
		auto := b.IsAutoRotationEnabled == nil || *b.IsAutoRotationEnabled
		r, err := s.Create(ctx, CreateInput{Name: b.Name, Description: b.Description, ProjectID: b.ProjectID, Connection: b.ConnectionID,
			Environment: b.Environment, SecretPath: b.SecretPath, RotationInterval: b.RotationInterval, RotateAt: b.RotateAt, TimeZone: b.TimeZone,
			AutoRotation: auto, Parameters: b.Parameters, SecretsMapping: b.SecretsMapping})
		return one(r), api.Err(ctx, err)
	})
	huma.Register(a, huma.Operation{
		OperationID: "list-postgres-credentials-rotations", Method: http.MethodGet, Path: base, Tags: tags,
		Summary: "List a project's PostgreSQL credentials rotations", Security: api.Secured, Errors: []int{404},
	}, func(ctx context.Context, in *struct {
		ProjectID string `query:"projectId" required:"true" maxLength:"64"`
	}) (*struct{ Body RotationList }, error) {
		list, err := s.List(ctx, in.ProjectID)
		return &struct{ Body RotationList }{RotationList{list}}, api.Err(ctx, err)
	})
	huma.Register(a, huma.Operation{
		OperationID: "get-postgres-credentials-rotation", Method: http.MethodGet, Path: base + "/{rotationId}", Tags: tags,
		Summary: "Get a rotation by id or name, with its status, last and next rotation and last error", Security: api.Secured, Errors: []int{404},
	}, func(ctx context.Context, in *RefQuery) (*rotationOut, error) {
		r, err := s.Resolve(ctx, in.ProjectID, in.Ref)
		return one(r), api.Err(ctx, err)
	})
	huma.Register(a, huma.Operation{
		OperationID: "update-postgres-credentials-rotation", Method: http.MethodPatch, Path: base + "/{rotationId}", Tags: tags,
		Summary: "Change a rotation's name, description or schedule (project admins)", Security: api.Secured, Errors: []int{403, 404, 409, 422},
	}, func(ctx context.Context, in *struct {
		RefQuery
		Body RotationUpdate
	}) (*rotationOut, error) {
		b := in.Body
		r, err := s.Update(ctx, in.ProjectID, in.Ref, UpdateInput{Name: b.Name, Description: b.Description, RotateAt: b.RotateAt, TimeZone: b.TimeZone,
			RotationInterval: b.RotationInterval, AutoRotation: b.IsAutoRotationEnabled})
		return one(r), api.Err(ctx, err)
	})
	huma.Register(a, huma.Operation{
		OperationID: "delete-postgres-credentials-rotation", Method: http.MethodDelete, Path: base + "/{rotationId}", Tags: tags,
		Summary: "Delete a rotation; the mapped secrets stay unless deleteSecrets (project admins)", Security: api.Secured,
		DefaultStatus: http.StatusNoContent, Errors: []int{403, 404},
	}, func(ctx context.Context, in *struct {
		RefQuery
		DeleteSecrets     bool `query:"deleteSecrets" doc:"also delete the mapped secrets"`
		RevokeCredentials bool `query:"revokeGeneratedCredentials" doc:"first give both users a random password nobody keeps"`
	}) (*struct{}, error) {
		return nil, api.Err(ctx, s.Delete(ctx, in.ProjectID, in.Ref, in.DeleteSecrets, in.RevokeCredentials))
	})
	huma.Register(a, huma.Operation{
		OperationID: "rotate-postgres-credentials", Method: http.MethodPost, Path: base + "/{rotationId}/rotate-secrets", Tags: tags,
		Summary: "Rotate now (project admins)", Security: api.Secured, Errors: []int{403, 404, 503},
	}, func(ctx context.Context, in *RefQuery) (*rotationOut, error) {
		r, err := s.RotateNow(ctx, in.ProjectID, in.Ref)
		return one(r), api.Err(ctx, err)
	})
	huma.Register(a, huma.Operation{
		OperationID: "get-postgres-credentials-rotation-generated-credentials", Method: http.MethodGet, Path: base + "/{rotationId}/generated-credentials",
		Tags: tags, Summary: "Read both users' generated credentials; the read is audited (project admins)", Security: api.Secured, Errors: []int{403, 404},
	}, func(ctx context.Context, in *RefQuery) (*struct{ Body *GeneratedCredentials }, error) {
		c, err := s.Credentials(ctx, in.ProjectID, in.Ref)
		return &struct{ Body *GeneratedCredentials }{c}, api.Err(ctx, err)
	})
}
