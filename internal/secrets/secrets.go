// Package secrets is the project secrets store: named, versioned values per
// environment, sealed with the project's data key (see keyring). Every write
// adds a version; reading returns the newest. Values appear only in the
// response of a get by a project member; listings carry names and versions.
//
// This is the first slice of the secrets store in shared/design.md: dual-user
// rotation will write PostgreSQL credentials into these names.
package secrets

import (
	"context"
	"database/sql"
	"errors"
	"net/http"
	"regexp"
	"time"

	"github.com/danielgtaylor/huma/v2"
	"github.com/google/uuid"

	"github.com/airlockpam/airlock/internal/api"
	"github.com/airlockpam/airlock/internal/audit"
	"github.com/airlockpam/airlock/internal/errs"
	"github.com/airlockpam/airlock/internal/keyring"
	"github.com/airlockpam/airlock/internal/project"
	"github.com/airlockpam/airlock/internal/store"
)

// MaxValueBytes bounds a secret value.
const MaxValueBytes = 64 << 10

var nameRE = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_.-]{0,127}$`)
var envRE = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]{0,30}[a-z0-9])?$`)

// Secret is a secret's metadata; Value is set only when reading one secret.
type Secret struct {
	Name        string    `json:"name"`
	Environment string    `json:"environment"`
	Version     int       `json:"version"`
	Value       *string   `json:"value,omitempty"`
	UpdatedBy   string    `json:"updatedBy"`
	UpdatedAt   time.Time `json:"updatedAt"`
}

// Service stores secrets.
type Service struct {
	db       *store.DB
	keyring  *keyring.Keyring
	projects *project.Service
}

// New returns a Service.
func New(db *store.DB, kr *keyring.Keyring, projects *project.Service) *Service {
	return &Service{db: db, keyring: kr, projects: projects}
}

func aad(id string) string { return "secret:" + id }

func validate(op, env, name string) error {
	if !envRE.MatchString(env) {
		return errs.InvalidField(op, "query.environment", "the environment must be a slug such as dev or prod")
	}
	if !nameRE.MatchString(name) {
		return errs.InvalidField(op, "path.name", "the secret name must start with a letter or _ and hold up to 128 letters, digits, _ . or -")
	}
	return nil
}

// Set writes a new version of a secret (project members).
func (s *Service) Set(ctx context.Context, projectID, env, name, value string) (*Secret, error) {
	const op = "secrets.(*Service).Set"
	proj, err := s.projects.Authorize(ctx, projectID, project.RoleMember)
	if err != nil {
		return nil, err
	}
	if err := validate(op, env, name); err != nil {
		return nil, err
	}
	p := api.PrincipalFrom(ctx)
	id := uuid.Must(uuid.NewV7()).String()
	sealed, err := s.keyring.Seal(ctx, proj.ID, aad(id), []byte(value))
	if err != nil {
		return nil, err
	}
	now := time.Now()
	sec := &Secret{Name: name, Environment: env, UpdatedBy: p.Name, UpdatedAt: store.Time(store.Micros(now))}
	err = s.db.InTx(ctx, func(tx *sql.Tx) error {
		if err := tx.QueryRowContext(ctx, `SELECT COALESCE(MAX(version), 0) + 1 FROM secrets WHERE project_id = $1 AND environment = $2 AND name = $3`,
			proj.ID, env, name).Scan(&sec.Version); err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, `INSERT INTO secrets (id, project_id, environment, name, version, value_enc, created_by, created_at)
			VALUES ($1, $2, $3, $4, $5, $6, $7, $8)`, id, proj.ID, env, name, sec.Version, sealed, p.Name, store.Micros(now)); err != nil {
			return err
		}
		return audit.Record(ctx, tx, audit.By(ctx, audit.Entry{Action: "secret.set", TargetKind: "secret", TargetID: env + "/" + name,
			ProjectID: proj.ID, Details: map[string]any{"version": sec.Version}}))
	})
	if err != nil {
		return nil, errs.Wrap(op, errs.Unavailable, "saving the secret failed", err)
	}
	return sec, nil
}

// Get returns the newest version of a secret with its value (project members).
func (s *Service) Get(ctx context.Context, projectID, env, name string) (*Secret, error) {
	const op = "secrets.(*Service).Get"
	proj, err := s.projects.Authorize(ctx, projectID, project.RoleMember)
	if err != nil {
		return nil, err
	}
	if err := validate(op, env, name); err != nil {
		return nil, err
	}
	var id string
	var sealed []byte
	var deleted bool
	var at int64
	sec := &Secret{Name: name, Environment: env}
	err = s.db.QueryRowContext(ctx, `SELECT id, version, value_enc, deleted, created_by, created_at FROM secrets
		WHERE project_id = $1 AND environment = $2 AND name = $3 ORDER BY version DESC LIMIT 1`, proj.ID, env, name).
		Scan(&id, &sec.Version, &sealed, &deleted, &sec.UpdatedBy, &at)
	if errors.Is(err, sql.ErrNoRows) || deleted {
		return nil, errs.E(op, errs.NotFound, "no secret of that name in that environment")
	}
	if err != nil {
		return nil, errs.Wrap(op, errs.Unavailable, "reading the secret failed", err)
	}
	pt, err := s.keyring.Open(ctx, proj.ID, aad(id), sealed)
	if err != nil {
		return nil, err
	}
	v := string(pt)
	sec.Value, sec.UpdatedAt = &v, store.Time(at)
	return sec, nil
}

// List returns the newest version of each live secret, without values.
func (s *Service) List(ctx context.Context, projectID, env string) ([]Secret, error) {
	const op = "secrets.(*Service).List"
	proj, err := s.projects.Authorize(ctx, projectID, project.RoleViewer)
	if err != nil {
		return nil, err
	}
	if !envRE.MatchString(env) {
		return nil, errs.InvalidField(op, "query.environment", "the environment must be a slug such as dev or prod")
	}
	rows, err := s.db.QueryContext(ctx, `SELECT s.name, s.version, s.created_by, s.created_at FROM secrets s
		WHERE s.project_id = $1 AND s.environment = $2 AND NOT s.deleted
		AND s.version = (SELECT MAX(version) FROM secrets t WHERE t.project_id = s.project_id AND t.environment = s.environment AND t.name = s.name)
		ORDER BY s.name`, proj.ID, env)
	if err != nil {
		return nil, errs.Wrap(op, errs.Unavailable, "listing secrets failed", err)
	}
	defer rows.Close()
	out := []Secret{}
	for rows.Next() {
		sec := Secret{Environment: env}
		var at int64
		if err := rows.Scan(&sec.Name, &sec.Version, &sec.UpdatedBy, &at); err != nil {
			return nil, errs.Wrap(op, errs.Unavailable, "listing secrets failed", err)
		}
		sec.UpdatedAt = store.Time(at)
		out = append(out, sec)
	}
	return out, rows.Err()
}

// Delete hides a secret by writing a deleted version; old versions stay for audit.
func (s *Service) Delete(ctx context.Context, projectID, env, name string) error {
	const op = "secrets.(*Service).Delete"
	if _, err := s.Get(ctx, projectID, env, name); err != nil {
		return err
	}
	p := api.PrincipalFrom(ctx)
	id := uuid.Must(uuid.NewV7()).String()
	now := time.Now()
	err := s.db.InTx(ctx, func(tx *sql.Tx) error {
		if _, err := tx.ExecContext(ctx, `INSERT INTO secrets (id, project_id, environment, name, version, value_enc, deleted, created_by, created_at)
			SELECT $1, project_id, environment, name, MAX(version) + 1, $2, TRUE, $3, $4 FROM secrets
			WHERE project_id = $5 AND environment = $6 AND name = $7 GROUP BY project_id, environment, name`,
			id, []byte{}, p.Name, store.Micros(now), projectID, env, name); err != nil {
			return err
		}
		return audit.Record(ctx, tx, audit.By(ctx, audit.Entry{Action: "secret.delete", TargetKind: "secret", TargetID: env + "/" + name, ProjectID: projectID}))
	})
	if err != nil {
		return errs.Wrap(op, errs.Unavailable, "deleting the secret failed", err)
	}
	return nil
}

// SecretPath selects one secret.
type SecretPath struct {
	ProjectID   string `path:"projectId" maxLength:"64"`
	Name        string `path:"name" maxLength:"128"`
	Environment string `query:"environment" default:"default" maxLength:"32"`
}

// Register adds the secrets operations to the API.
func (s *Service) Register(a huma.API) {
	tags := []string{"Secrets"}
	base := "/api/v1/projects/{projectId}/secrets"
	huma.Register(a, huma.Operation{
		OperationID: "set-secret", Method: http.MethodPut, Path: base + "/{name}", Tags: tags,
		Summary: "Write a new version of a secret (project members)", Security: api.Secured, Errors: []int{403, 404, 422},
	}, func(ctx context.Context, in *struct {
		SecretPath
		Body struct {
			Value string `json:"value" maxLength:"65536"`
		}
	}) (*struct{ Body *Secret }, error) {
		sec, err := s.Set(ctx, in.ProjectID, in.Environment, in.Name, in.Body.Value)
		return &struct{ Body *Secret }{sec}, api.Err(ctx, err)
	})
	huma.Register(a, huma.Operation{
		OperationID: "get-secret", Method: http.MethodGet, Path: base + "/{name}", Tags: tags,
		Summary: "Read a secret's newest value (project members)", Security: api.Secured, Errors: []int{403, 404},
	}, func(ctx context.Context, in *SecretPath) (*struct{ Body *Secret }, error) {
		sec, err := s.Get(ctx, in.ProjectID, in.Environment, in.Name)
		return &struct{ Body *Secret }{sec}, api.Err(ctx, err)
	})
	huma.Register(a, huma.Operation{
		OperationID: "list-secrets", Method: http.MethodGet, Path: base, Tags: tags,
		Summary: "List secrets without their values", Security: api.Secured, Errors: []int{404},
	}, func(ctx context.Context, in *struct {
		ProjectID   string `path:"projectId" maxLength:"64"`
		Environment string `query:"environment" default:"default" maxLength:"32"`
	}) (*struct{ Body []Secret }, error) {
		list, err := s.List(ctx, in.ProjectID, in.Environment)
		return &struct{ Body []Secret }{list}, api.Err(ctx, err)
	})
	huma.Register(a, huma.Operation{
		OperationID: "delete-secret", Method: http.MethodDelete, Path: base + "/{name}", Tags: tags,
		Summary: "Delete a secret (project members)", Security: api.Secured, DefaultStatus: http.StatusNoContent, Errors: []int{403, 404},
	}, func(ctx context.Context, in *SecretPath) (*struct{}, error) {
		return nil, api.Err(ctx, s.Delete(ctx, in.ProjectID, in.Environment, in.Name))
	})
}
