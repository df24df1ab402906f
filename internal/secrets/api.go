package secrets

import (
	"context"
	"net/http"

	"github.com/danielgtaylor/huma/v2"

	"github.com/airlockpam/airlock/internal/api"
)

// PlaceQuery selects an environment and a folder.
type PlaceQuery struct {
	ProjectID   string `path:"projectId" maxLength:"64"`
	Environment string `query:"environment" maxLength:"32" doc:"the environment's slug, such as dev or prod; absent: the project's first environment"`
	Path        string `query:"path" default:"/" maxLength:"256" doc:"the folder, such as / or /db/orders"`
}

func (q PlaceQuery) place() Place { return Place{Environment: q.Environment, Path: q.Path} }

// SecretPath selects one secret.
type SecretPath struct {
	PlaceQuery
	Name string `path:"name" maxLength:"128"`
}

type secretOut struct{ Body *Secret }

// Register adds the secrets operations to the API.
func (s *Service) Register(a huma.API) {
	tags := []string{"Secrets"}
	base := "/api/v1/projects/{projectId}/secrets"
	huma.Register(a, huma.Operation{
		OperationID: "set-secret", Method: http.MethodPut, Path: base + "/{name}", Tags: tags,
		Summary: "Write a new version of a secret (project members)", Security: api.Secured, Errors: []int{403, 404, 409, 422},
	}, func(ctx context.Context, in *struct {
		SecretPath
		Body SecretValue
	}) (*secretOut, error) {
		sec, err := s.Set(ctx, in.ProjectID, in.place(), in.Name, in.Body.Value)
		return &secretOut{sec}, api.Err(ctx, err)
	})
	huma.Register(a, huma.Operation{
		OperationID: "get-secret", Method: http.MethodGet, Path: base + "/{name}", Tags: tags,
		Summary: "Read a secret's value, the newest or a given version; the read is audited (project members)", Security: api.Secured,
		Errors: []int{403, 404, 422},
	}, func(ctx context.Context, in *struct {
		SecretPath
		Version int `query:"version" minimum:"0" doc:"a version to read; 0 or absent for the newest"`
	}) (*secretOut, error) {
		sec, err := s.Get(ctx, in.ProjectID, in.place(), in.Name, in.Version)
		return &secretOut{sec}, api.Err(ctx, err)
	})
	huma.Register(a, huma.Operation{
		OperationID: "list-secrets", Method: http.MethodGet, Path: base, Tags: tags,
		Summary: "List a folder's secrets without their values", Security: api.Secured, Errors: []int{404, 422},
	}, func(ctx context.Context, in *PlaceQuery) (*struct{ Body []Secret }, error) {
		list, err := s.List(ctx, in.ProjectID, in.place())
		return &struct{ Body []Secret }{list}, api.Err(ctx, err)
	})
	huma.Register(a, huma.Operation{
		OperationID: "reveal-secrets", Method: http.MethodGet, Path: "/api/v1/projects/{projectId}/secret-values", Tags: tags,
		Summary:  "Read every secret of a folder with its value, for `airlock run` and `airlock export`; each read is audited (project members)",
		Security: api.Secured, Errors: []int{403, 404, 422},
	}, func(ctx context.Context, in *PlaceQuery) (*struct{ Body []Secret }, error) {
		list, err := s.Reveal(ctx, in.ProjectID, in.place())
		return &struct{ Body []Secret }{list}, api.Err(ctx, err)
	})
	huma.Register(a, huma.Operation{
		OperationID: "delete-secret", Method: http.MethodDelete, Path: base + "/{name}", Tags: tags,
		Summary: "Delete a secret; its history stays and an earlier version can be restored (project members)", Security: api.Secured,
		DefaultStatus: http.StatusNoContent, Errors: []int{403, 404, 422},
	}, func(ctx context.Context, in *SecretPath) (*struct{}, error) {
		return nil, api.Err(ctx, s.Delete(ctx, in.ProjectID, in.place(), in.Name))
	})
	huma.Register(a, huma.Operation{
		OperationID: "list-secret-versions", Method: http.MethodGet, Path: base + "/{name}/versions", Tags: tags,
		Summary: "A secret's versions, newest first, without values", Security: api.Secured, Errors: []int{404, 422},
	}, func(ctx context.Context, in *SecretPath) (*struct{ Body []Version }, error) {
		list, err := s.History(ctx, in.ProjectID, in.place(), in.Name)
		return &struct{ Body []Version }{list}, api.Err(ctx, err)
	})
	huma.Register(a, huma.Operation{
		OperationID: "restore-secret", Method: http.MethodPost, Path: base + "/{name}/restore", Tags: tags,
		Summary: "Write an earlier version's value as the newest version (project members)", Security: api.Secured, Errors: []int{403, 404, 422},
	}, func(ctx context.Context, in *struct {
		SecretPath
		Body SecretRestore
	}) (*secretOut, error) {
		sec, err := s.Restore(ctx, in.ProjectID, in.place(), in.Name, in.Body.Version)
		return &secretOut{sec}, api.Err(ctx, err)
	})

	envs := "/api/v1/projects/{projectId}/secret-environments"
	type envOut struct{ Body *Environment }
	huma.Register(a, huma.Operation{
		OperationID: "list-secret-environments", Method: http.MethodGet, Path: envs, Tags: tags,
		Summary: "List a project's environments (dev, staging and prod until changed)", Security: api.Secured, Errors: []int{404},
	}, func(ctx context.Context, in *struct {
		ProjectID string `path:"projectId" maxLength:"64"`
	}) (*struct{ Body []Environment }, error) {
		list, err := s.Environments(ctx, in.ProjectID)
		return &struct{ Body []Environment }{list}, api.Err(ctx, err)
	})
	huma.Register(a, huma.Operation{
		OperationID: "create-secret-environment", Method: http.MethodPost, Path: envs, Tags: tags,
		Summary: "Add an environment (project admins)", Security: api.Secured, DefaultStatus: http.StatusCreated, Errors: []int{403, 404, 422},
	}, func(ctx context.Context, in *struct {
		ProjectID string `path:"projectId" maxLength:"64"`
		Body      EnvironmentInput
	}) (*envOut, error) {
		e, err := s.CreateEnvironment(ctx, in.ProjectID, in.Body.Slug, in.Body.Name)
		return &envOut{e}, api.Err(ctx, err)
	})
	huma.Register(a, huma.Operation{
		OperationID: "update-secret-environment", Method: http.MethodPatch, Path: envs + "/{slug}", Tags: tags,
		Summary: "Rename an environment; its slug stays (project admins)", Security: api.Secured, Errors: []int{403, 404, 422},
	}, func(ctx context.Context, in *struct {
		ProjectID string `path:"projectId" maxLength:"64"`
		Slug      string `path:"slug" maxLength:"32"`
		Body      EnvironmentUpdate
	}) (*envOut, error) {
		e, err := s.RenameEnvironment(ctx, in.ProjectID, in.Slug, in.Body.Name)
		return &envOut{e}, api.Err(ctx, err)
	})
	huma.Register(a, huma.Operation{
		OperationID: "delete-secret-environment", Method: http.MethodDelete, Path: envs + "/{slug}", Tags: tags,
		Summary: "Delete an environment without secrets or folders (project admins)", Security: api.Secured,
		DefaultStatus: http.StatusNoContent, Errors: []int{403, 404, 409, 422},
	}, func(ctx context.Context, in *struct {
		ProjectID string `path:"projectId" maxLength:"64"`
		Slug      string `path:"slug" maxLength:"32"`
	}) (*struct{}, error) {
		return nil, api.Err(ctx, s.DeleteEnvironment(ctx, in.ProjectID, in.Slug))
	})

	folders := "/api/v1/projects/{projectId}/secret-folders"
	huma.Register(a, huma.Operation{
		OperationID: "list-secret-folders", Method: http.MethodGet, Path: folders, Tags: tags,
		Summary: "List an environment's folders", Security: api.Secured, Errors: []int{404, 422},
	}, func(ctx context.Context, in *struct {
		ProjectID   string `path:"projectId" maxLength:"64"`
		Environment string `query:"environment" required:"true" maxLength:"32"`
	}) (*struct{ Body []Folder }, error) {
		list, err := s.Folders(ctx, in.ProjectID, in.Environment)
		return &struct{ Body []Folder }{list}, api.Err(ctx, err)
	})
	huma.Register(a, huma.Operation{
		OperationID: "create-secret-folder", Method: http.MethodPost, Path: folders, Tags: tags,
		Summary: "Create a folder and any missing parents (project members)", Security: api.Secured,
		DefaultStatus: http.StatusCreated, Errors: []int{403, 404, 409, 422},
	}, func(ctx context.Context, in *struct {
		ProjectID string `path:"projectId" maxLength:"64"`
		Body      FolderInput
	}) (*struct{ Body *Folder }, error) {
		f, err := s.CreateFolder(ctx, in.ProjectID, Place{Environment: in.Body.Environment, Path: in.Body.Path})
		return &struct{ Body *Folder }{f}, api.Err(ctx, err)
	})
	huma.Register(a, huma.Operation{
		OperationID: "delete-secret-folder", Method: http.MethodDelete, Path: folders, Tags: tags,
		Summary: "Delete an empty folder (project members)", Security: api.Secured,
		DefaultStatus: http.StatusNoContent, Errors: []int{403, 404, 409, 422},
	}, func(ctx context.Context, in *PlaceQuery) (*struct{}, error) {
		return nil, api.Err(ctx, s.DeleteFolder(ctx, in.ProjectID, in.place()))
	})
}

// SecretValue is the body of PUT .../secrets/{name}: the new version's value.
type SecretValue struct {
	Value string `json:"value" maxLength:"65536"`
}

// SecretRestore is the body of POST .../secrets/{name}/restore.
type SecretRestore struct {
	Version int `json:"version" minimum:"1" doc:"the version whose value to restore"`
}

// EnvironmentInput is the body of POST .../secret-environments.
type EnvironmentInput struct {
	Slug string `json:"slug" maxLength:"32" doc:"how secrets address it: lower-case letters, digits and hyphens"`
	Name string `json:"name,omitempty" maxLength:"64" doc:"a display name; the slug if absent"`
}

// EnvironmentUpdate is the body of PATCH .../secret-environments/{slug}.
type EnvironmentUpdate struct {
	Name string `json:"name" maxLength:"64"`
}

// FolderInput is the body of POST .../secret-folders.
type FolderInput struct {
	Environment string `json:"environment" maxLength:"32"`
	Path        string `json:"path" maxLength:"256" doc:"such as /db/orders"`
}
