package secrets

import (
	"context"
	"database/sql"
	"errors"
	"regexp"
	"strings"
	"time"

	"github.com/airlockpam/airlock/internal/api"
	"github.com/airlockpam/airlock/internal/audit"
	"github.com/airlockpam/airlock/internal/errs"
	"github.com/airlockpam/airlock/internal/project"
	"github.com/airlockpam/airlock/internal/store"
)

var envRE = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]{0,30}[a-z0-9])?$`)
var segmentRE = regexp.MustCompile(`^[A-Za-z0-9_-]{1,64}$`)

// DefaultEnvironments are a project's environments until its admins change them.
var DefaultEnvironments = []Environment{{Slug: "dev", Name: "Development"}, {Slug: "staging", Name: "Staging"}, {Slug: "prod", Name: "Production"}}

// Environment is a project's stage, such as dev or prod.
type Environment struct {
	Slug     string `json:"slug"`
	Name     string `json:"name"`
	Position int    `json:"position"`
}

// Folder is a path inside an environment.
type Folder struct {
	Environment string    `json:"environment"`
	Path        string    `json:"path"`
	CreatedBy   string    `json:"createdBy"`
	CreatedAt   time.Time `json:"createdAt"`
}

// CleanPath checks a folder path and returns it without a trailing slash
// ("" and "/" are the root).
func CleanPath(op, field, p string) (string, error) {
	if p == "" || p == "/" {
		return "/", nil
	}
	bad := errs.InvalidField(op, field, "a folder path starts with / and holds names of letters, digits, _ or - separated by /, such as /db/orders")
	if !strings.HasPrefix(p, "/") || len(p) > 256 {
		return "", bad
	}
	p = strings.TrimSuffix(p, "/")
	for _, seg := range strings.Split(p[1:], "/") {
		if !segmentRE.MatchString(seg) {
			return "", bad
		}
	}
	return p, nil
}

// authorizePlace checks the caller's role in the project and that the
// environment exists (creating the default ones on a project's first use),
// and returns the place with its path cleaned.
func (s *Service) authorizePlace(ctx context.Context, op, projectID string, pl Place, need project.Role) (*project.Project, Place, error) {
	proj, err := s.projects.Authorize(ctx, projectID, need)
	if err != nil {
		return nil, pl, err
	}
	if pl.Environment != "" && !envRE.MatchString(pl.Environment) {
		return nil, pl, errs.InvalidField(op, "query.environment", "the environment must be a slug such as dev or prod")
	}
	if pl.Path, err = CleanPath(op, "query.path", pl.Path); err != nil {
		return nil, pl, err
	}
	envs, err := s.environments(ctx, proj.ID)
	if err != nil {
		return nil, pl, errs.Wrap(op, errs.Unavailable, "reading the environments failed", err)
	}
	if pl.Environment == "" && len(envs) > 0 {
		// The API before environments: the project's first one.
		pl.Environment = envs[0].Slug
	}
	for _, e := range envs {
		if e.Slug == pl.Environment {
			return proj, pl, nil
		}
	}
	slugs := make([]string, len(envs))
	for i, e := range envs {
		slugs[i] = e.Slug
	}
	return nil, pl, errs.InvalidField(op, "query.environment", "the project has no environment "+pl.Environment+"; it has "+strings.Join(slugs, ", "))
}

// environments lists a project's environments, creating the default ones
// when it has none.
func (s *Service) environments(ctx context.Context, projectID string) ([]Environment, error) {
	list, err := listEnvironments(ctx, s.db, projectID)
	if err != nil || len(list) > 0 {
		return list, err
	}
	err = s.db.InTx(ctx, func(tx *sql.Tx) error {
		for i, e := range DefaultEnvironments {
			if _, err := tx.ExecContext(ctx, `INSERT INTO secret_environments (project_id, slug, name, position, created_at)
				VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING`, projectID, e.Slug, e.Name, i+1, store.Micros(s.now())); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return listEnvironments(ctx, s.db, projectID)
}

func listEnvironments(ctx context.Context, q store.Querier, projectID string) ([]Environment, error) {
	rows, err := q.QueryContext(ctx, `SELECT slug, name, position FROM secret_environments WHERE project_id = $1 ORDER BY position, slug`, projectID)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []Environment
	for rows.Next() {
		var e Environment
		if err := rows.Scan(&e.Slug, &e.Name, &e.Position); err != nil {
			return nil, err
		}
		out = append(out, e)
	}
	return out, rows.Err()
}

// Environments lists a project's environments (project viewers).
func (s *Service) Environments(ctx context.Context, projectID string) ([]Environment, error) {
	const op = "secrets.(*Service).Environments"
	proj, err := s.projects.Authorize(ctx, projectID, project.RoleViewer)
	if err != nil {
		return nil, err
	}
	list, err := s.environments(ctx, proj.ID)
	if err != nil {
		return nil, errs.Wrap(op, errs.Unavailable, "reading the environments failed", err)
	}
	return list, nil
}

// CreateEnvironment adds an environment after the others (project admins).
func (s *Service) CreateEnvironment(ctx context.Context, projectID, slug, name string) (*Environment, error) {
	const op = "secrets.(*Service).CreateEnvironment"
	proj, err := s.projects.Authorize(ctx, projectID, project.RoleAdmin)
	if err != nil {
		return nil, err
	}
	if !envRE.MatchString(slug) {
		return nil, errs.InvalidField(op, "body.slug", "an environment's slug holds up to 32 lower-case letters, digits and hyphens, such as qa or prod-eu")
	}
	if name = strings.TrimSpace(name); name == "" {
		name = slug
	}
	if len(name) > 64 {
		return nil, errs.InvalidField(op, "body.name", "an environment's name holds at most 64 characters")
	}
	if _, err := s.environments(ctx, proj.ID); err != nil {
		return nil, errs.Wrap(op, errs.Unavailable, "reading the environments failed", err)
	}
	e := &Environment{Slug: slug, Name: name}
	err = s.db.InTx(ctx, func(tx *sql.Tx) error {
		if err := tx.QueryRowContext(ctx, `SELECT COALESCE(MAX(position), 0) + 1 FROM secret_environments WHERE project_id = $1`, proj.ID).Scan(&e.Position); err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, `INSERT INTO secret_environments (project_id, slug, name, position, created_at) VALUES ($1, $2, $3, $4, $5)`,
			proj.ID, slug, name, e.Position, store.Micros(s.now())); err != nil {
			if store.IsUniqueViolation(err) {
				return errs.InvalidField(op, "body.slug", "the project already has an environment "+slug)
			}
			return err
		}
		return audit.Record(ctx, tx, audit.By(ctx, audit.Entry{Action: "secret.environment.create", TargetKind: "environment", TargetID: slug, ProjectID: proj.ID}))
	})
	if err != nil {
		return nil, errs.Wrap(op, errs.Unavailable, "saving the environment failed", err)
	}
	return e, nil
}

// RenameEnvironment changes an environment's display name; its slug, by
// which secrets are addressed, stays (project admins).
func (s *Service) RenameEnvironment(ctx context.Context, projectID, slug, name string) (*Environment, error) {
	const op = "secrets.(*Service).RenameEnvironment"
	proj, pl, err := s.authorizePlace(ctx, op, projectID, Place{Environment: slug}, project.RoleAdmin)
	if err != nil {
		return nil, err
	}
	if name = strings.TrimSpace(name); name == "" || len(name) > 64 {
		return nil, errs.InvalidField(op, "body.name", "an environment's name holds 1 to 64 characters")
	}
	e := &Environment{Slug: pl.Environment, Name: name}
	err = s.db.InTx(ctx, func(tx *sql.Tx) error {
		if err := tx.QueryRowContext(ctx, `UPDATE secret_environments SET name = $1 WHERE project_id = $2 AND slug = $3 RETURNING position`,
			name, proj.ID, slug).Scan(&e.Position); err != nil {
			return err
		}
		return audit.Record(ctx, tx, audit.By(ctx, audit.Entry{Action: "secret.environment.update", TargetKind: "environment", TargetID: slug,
			ProjectID: proj.ID, Details: map[string]any{"name": name}}))
	})
	if err != nil {
		return nil, errs.Wrap(op, errs.Unavailable, "saving the environment failed", err)
	}
	return e, nil
}

// DeleteEnvironment removes an environment that holds no secrets and no
// folders; a project keeps at least one (project admins).
func (s *Service) DeleteEnvironment(ctx context.Context, projectID, slug string) error {
	const op = "secrets.(*Service).DeleteEnvironment"
	proj, pl, err := s.authorizePlace(ctx, op, projectID, Place{Environment: slug}, project.RoleAdmin)
	if err != nil {
		return err
	}
	err = s.db.InTx(ctx, func(tx *sql.Tx) error {
		var envs, folders, live int
		if err := tx.QueryRowContext(ctx, `SELECT COUNT(*) FROM secret_environments WHERE project_id = $1`, proj.ID).Scan(&envs); err != nil {
			return err
		}
		if envs <= 1 {
			return errs.E(op, errs.Conflict, "a project keeps at least one environment; add another before deleting this one")
		}
		if err := tx.QueryRowContext(ctx, `SELECT COUNT(*) FROM secret_folders WHERE project_id = $1 AND environment = $2`, proj.ID, pl.Environment).Scan(&folders); err != nil {
			return err
		}
		if err := tx.QueryRowContext(ctx, `SELECT COUNT(*) FROM (`+liveNames+`) x`, proj.ID, pl.Environment).Scan(&live); err != nil {
			return err
		}
		if folders > 0 || live > 0 {
			return errs.Ef(op, errs.Conflict, "environment %s still holds %d secrets and %d folders; delete them first", slug, live, folders)
		}
		if _, err := tx.ExecContext(ctx, `DELETE FROM secret_versions WHERE project_id = $1 AND environment = $2`, proj.ID, pl.Environment); err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, `DELETE FROM secret_environments WHERE project_id = $1 AND slug = $2`, proj.ID, pl.Environment); err != nil {
			return err
		}
		return audit.Record(ctx, tx, audit.By(ctx, audit.Entry{Action: "secret.environment.delete", TargetKind: "environment", TargetID: slug, ProjectID: proj.ID}))
	})
	if err != nil {
		return errs.Wrap(op, errs.Unavailable, "deleting the environment failed", err)
	}
	return nil
}

// liveNames selects the live secrets of an environment ($1 project, $2
// environment), in every folder.
const liveNames = `SELECT s.path, s.name FROM secret_versions s
	WHERE s.project_id = $1 AND s.environment = $2 AND NOT s.deleted
	AND s.version = (SELECT MAX(version) FROM secret_versions t
		WHERE t.project_id = s.project_id AND t.environment = s.environment AND t.path = s.path AND t.name = s.name)`

// folderExists returns a not-found error unless pl's folder exists.
func folderExists(ctx context.Context, q store.Querier, projectID string, pl Place) error {
	if pl.Path == "/" {
		return nil
	}
	var one int
	err := q.QueryRowContext(ctx, `SELECT 1 FROM secret_folders WHERE project_id = $1 AND environment = $2 AND path = $3`,
		projectID, pl.Environment, pl.Path).Scan(&one)
	if errors.Is(err, sql.ErrNoRows) {
		return errs.Ef("secrets.folderExists", errs.NotFound, "environment %s has no folder %s; create it with `airlock secrets folders create`", pl.Environment, pl.Path)
	}
	return err
}

// FolderExists says whether a folder exists (for rotations that write into one).
func (s *Service) FolderExists(ctx context.Context, projectID string, pl Place) error {
	return folderExists(ctx, s.db, projectID, pl)
}

// CreateFolder creates a folder and any missing parents (project members).
func (s *Service) CreateFolder(ctx context.Context, projectID string, pl Place) (*Folder, error) {
	const op = "secrets.(*Service).CreateFolder"
	proj, pl, err := s.authorizePlace(ctx, op, projectID, pl, project.RoleMember)
	if err != nil {
		return nil, err
	}
	if pl.Path == "/" {
		return nil, errs.InvalidField(op, "body.path", "the root folder / always exists")
	}
	p := api.PrincipalFrom(ctx)
	f := &Folder{Environment: pl.Environment, Path: pl.Path, CreatedBy: p.Name, CreatedAt: store.Time(store.Micros(s.now()))}
	err = s.db.InTx(ctx, func(tx *sql.Tx) error {
		if err := folderExists(ctx, tx, proj.ID, pl); err == nil {
			return errs.Ef(op, errs.Conflict, "environment %s already has a folder %s", pl.Environment, pl.Path)
		}
		segs := strings.Split(pl.Path[1:], "/")
		for i := range segs {
			path := "/" + strings.Join(segs[:i+1], "/")
			if _, err := tx.ExecContext(ctx, `INSERT INTO secret_folders (project_id, environment, path, created_by, created_at)
				VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING`, proj.ID, pl.Environment, path, p.Name, store.Micros(f.CreatedAt)); err != nil {
				return err
			}
		}
		return audit.Record(ctx, tx, audit.By(ctx, audit.Entry{Action: "secret.folder.create", TargetKind: "folder", TargetID: pl.String(), ProjectID: proj.ID}))
	})
	if err != nil {
		return nil, errs.Wrap(op, errs.Unavailable, "saving the folder failed", err)
	}
	return f, nil
}

// Folders lists an environment's folders, "/" first (project viewers).
func (s *Service) Folders(ctx context.Context, projectID, env string) ([]Folder, error) {
	const op = "secrets.(*Service).Folders"
	proj, pl, err := s.authorizePlace(ctx, op, projectID, Place{Environment: env}, project.RoleViewer)
	if err != nil {
		return nil, err
	}
	rows, err := s.db.QueryContext(ctx, `SELECT path, created_by, created_at FROM secret_folders WHERE project_id = $1 AND environment = $2 ORDER BY path`,
		proj.ID, pl.Environment)
	if err != nil {
		return nil, errs.Wrap(op, errs.Unavailable, "listing folders failed", err)
	}
	defer rows.Close()
	out := []Folder{{Environment: pl.Environment, Path: "/"}}
	for rows.Next() {
		f := Folder{Environment: pl.Environment}
		var at int64
		if err := rows.Scan(&f.Path, &f.CreatedBy, &at); err != nil {
			return nil, errs.Wrap(op, errs.Unavailable, "listing folders failed", err)
		}
		f.CreatedAt = store.Time(at)
		out = append(out, f)
	}
	return out, rows.Err()
}

// DeleteFolder removes an empty folder: no live secrets, no subfolders. The
// history of secrets deleted in it goes with it (project members).
func (s *Service) DeleteFolder(ctx context.Context, projectID string, pl Place) error {
	const op = "secrets.(*Service).DeleteFolder"
	proj, pl, err := s.authorizePlace(ctx, op, projectID, pl, project.RoleMember)
	if err != nil {
		return err
	}
	if pl.Path == "/" {
		return errs.InvalidField(op, "query.path", "the root folder / cannot be deleted")
	}
	err = s.db.InTx(ctx, func(tx *sql.Tx) error {
		if err := folderExists(ctx, tx, proj.ID, pl); err != nil {
			return err
		}
		var sub, live int
		if err := tx.QueryRowContext(ctx, `SELECT COUNT(*) FROM secret_folders WHERE project_id = $1 AND environment = $2 AND path >= $3 AND path < $4`,
			proj.ID, pl.Environment, pl.Path+"/", pl.Path+"0").Scan(&sub); err != nil {
			return err
		}
		if err := tx.QueryRowContext(ctx, `SELECT COUNT(*) FROM (`+liveNames+`) x WHERE x.path = $3`, proj.ID, pl.Environment, pl.Path).Scan(&live); err != nil {
			return err
		}
		if sub > 0 || live > 0 {
			return errs.Ef(op, errs.Conflict, "folder %s still holds %d secrets and %d folders; delete them first", pl, live, sub)
		}
		if _, err := tx.ExecContext(ctx, `DELETE FROM secret_versions WHERE project_id = $1 AND environment = $2 AND path = $3`, proj.ID, pl.Environment, pl.Path); err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, `DELETE FROM secret_folders WHERE project_id = $1 AND environment = $2 AND path = $3`, proj.ID, pl.Environment, pl.Path); err != nil {
			return err
		}
		return audit.Record(ctx, tx, audit.By(ctx, audit.Entry{Action: "secret.folder.delete", TargetKind: "folder", TargetID: pl.String(), ProjectID: proj.ID}))
	})
	if err != nil {
		return errs.Wrap(op, errs.Unavailable, "deleting the folder failed", err)
	}
	return nil
}
