package secrets

import (
	"context"
	"database/sql"
	"errors"
	"regexp"
	"time"

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

// Secret is a secret's newest version; Value is set only when a value was
// read (one secret, or a folder's values).
type Secret struct {
	Name        string    `json:"name"`
	Environment string    `json:"environment"`
	Path        string    `json:"path"`
	Version     int       `json:"version"`
	Value       *string   `json:"value,omitempty"`
	UpdatedBy   string    `json:"updatedBy"`
	UpdatedAt   time.Time `json:"updatedAt"`
}

// Version is one entry of a secret's history, without its value.
type Version struct {
	Version   int       `json:"version"`
	Deleted   bool      `json:"deleted" doc:"this version deleted the secret"`
	CreatedBy string    `json:"createdBy"`
	CreatedAt time.Time `json:"createdAt"`
}

// Service stores secrets.
type Service struct {
	db       *store.DB
	keyring  *keyring.Keyring
	projects *project.Service
	now      func() time.Time
	owner    OwnerFunc
}

// OwnerFunc names what owns a secret (a secret rotation), or "": an owned
// secret is written only by its owner (WriteOwned), not by hand.
type OwnerFunc func(ctx context.Context, q store.Querier, projectID string, pl Place, name string) (string, error)

// SetOwner sets the check of who owns a secret.
func (s *Service) SetOwner(f OwnerFunc) { s.owner = f }

// checkOwner refuses a change by hand of an owned secret.
func (s *Service) checkOwner(ctx context.Context, q store.Querier, projectID string, pl Place, name string) error {
	if s.owner == nil {
		return nil
	}
	owner, err := s.owner(ctx, q, projectID, pl, name)
	if err != nil {
		return err
	}
	if owner != "" {
		return errs.Ef("secrets.checkOwner", errs.Conflict, "secret %s in %s is written by %s and cannot be changed by hand; change or delete that first", name, pl, owner)
	}
	return nil
}

// WriteOwned writes values (name, value pairs) into a folder in tx as the
// system on behalf of owner (a secret rotation), without the check of
// hand edits. The folder must exist.
func (s *Service) WriteOwned(ctx context.Context, tx *sql.Tx, projectID, orgID string, pl Place, owner string, values [][2]string) error {
	for _, v := range values {
		sys := &audit.Entry{OrgID: orgID, ActorKind: "system", ActorID: "secret-rotation", ActorName: owner}
		if _, err := s.write(ctx, tx, projectID, pl, v[0], v[1], "secret.set", map[string]any{"by": owner}, sys); err != nil {
			return err
		}
	}
	return nil
}

// New returns a Service.
func New(db *store.DB, kr *keyring.Keyring, projects *project.Service) *Service {
	return &Service{db: db, keyring: kr, projects: projects, now: time.Now}
}

// SetClock replaces the clock (tests).
func (s *Service) SetClock(now func() time.Time) { s.now = now }

func aad(id string) string { return "secret:" + id }

// Place is where a secret lives: an environment and a folder's path.
type Place struct {
	Environment string
	Path        string
}

func (pl Place) String() string {
	if pl.Path == "/" {
		return pl.Environment + ":/"
	}
	return pl.Environment + ":" + pl.Path + "/"
}

func validName(op, name string) error {
	if !nameRE.MatchString(name) {
		return errs.InvalidField(op, "path.name", "the secret name must start with a letter or _ and hold up to 128 letters, digits, _ . or -")
	}
	return nil
}

// target names a secret in the audit log: env:/path/NAME.
func target(pl Place, name string) string { return pl.String() + name }

// Set writes a new version of a secret (project members).
func (s *Service) Set(ctx context.Context, projectID string, pl Place, name, value string) (*Secret, error) {
	const op = "secrets.(*Service).Set"
	proj, pl, err := s.authorizePlace(ctx, op, projectID, pl, project.RoleMember)
	if err != nil {
		return nil, err
	}
	if err := validName(op, name); err != nil {
		return nil, err
	}
	if len(value) > MaxValueBytes {
		return nil, errs.InvalidField(op, "body.value", "a secret value holds at most 64 KiB")
	}
	var sec *Secret
	err = s.db.InTx(ctx, func(tx *sql.Tx) error {
		var err error
		if err := s.checkOwner(ctx, tx, proj.ID, pl, name); err != nil {
			return err
		}
		sec, err = s.write(ctx, tx, proj.ID, pl, name, value, "secret.set", nil, nil)
		return err
	})
	if err != nil {
		return nil, errs.Wrap(op, errs.Unavailable, "saving the secret failed", err)
	}
	return sec, nil
}

// write adds a version holding value in tx, checking that the folder exists,
// and audits it as action.
func (s *Service) write(ctx context.Context, tx *sql.Tx, projectID string, pl Place, name, value, action string, details map[string]any, sys *audit.Entry) (*Secret, error) {
	const op = "secrets.(*Service).write"
	if err := folderExists(ctx, tx, projectID, pl); err != nil {
		return nil, err
	}
	id := uuid.Must(uuid.NewV7()).String()
	sealed, err := s.keyring.Seal(ctx, projectID, aad(id), []byte(value))
	if err != nil {
		return nil, err
	}
	by := "airlock"
	if p := api.PrincipalFrom(ctx); p != nil && sys == nil {
		by = p.Name
	} else if sys != nil {
		by = sys.ActorName
	}
	now := store.Micros(s.now())
	sec := &Secret{Name: name, Environment: pl.Environment, Path: pl.Path, UpdatedBy: by, UpdatedAt: store.Time(now)}
	if err := tx.QueryRowContext(ctx, `SELECT COALESCE(MAX(version), 0) + 1 FROM secret_versions
		WHERE project_id = $1 AND environment = $2 AND path = $3 AND name = $4`,
		projectID, pl.Environment, pl.Path, name).Scan(&sec.Version); err != nil {
		return nil, err
	}
	if _, err := tx.ExecContext(ctx, `INSERT INTO secret_versions (id, project_id, environment, path, name, version, value_enc, created_by, created_at)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)`, id, projectID, pl.Environment, pl.Path, name, sec.Version, sealed, by, now); err != nil {
		if store.IsUniqueViolation(err) {
			return nil, errs.E(op, errs.Conflict, "the secret was written at the same time by someone else; try again")
		}
		return nil, err
	}
	if details == nil {
		details = map[string]any{}
	}
	details["version"] = sec.Version
	ev := audit.Entry{Action: action, TargetKind: "secret", TargetID: target(pl, name), ProjectID: projectID, Details: details}
	if sys != nil {
		ev.OrgID, ev.ActorKind, ev.ActorID, ev.ActorName, ev.Outcome = sys.OrgID, sys.ActorKind, sys.ActorID, sys.ActorName, audit.Success
	} else {
		ev = audit.By(ctx, ev)
	}
	return sec, audit.Record(ctx, tx, ev)
}

// Get returns a secret with its value: the newest version, or the given
// one (version > 0). The read is audited (project members).
func (s *Service) Get(ctx context.Context, projectID string, pl Place, name string, version int) (*Secret, error) {
	const op = "secrets.(*Service).Get"
	proj, pl, err := s.authorizePlace(ctx, op, projectID, pl, project.RoleMember)
	if err != nil {
		return nil, err
	}
	if err := validName(op, name); err != nil {
		return nil, err
	}
	if version < 0 {
		return nil, errs.InvalidField(op, "query.version", "a version is a number from 1")
	}
	var sec *Secret
	err = s.db.InTx(ctx, func(tx *sql.Tx) error {
		var id string
		var sealed []byte
		var deleted bool
		var at int64
		sec = &Secret{Name: name, Environment: pl.Environment, Path: pl.Path}
		q := `SELECT id, version, value_enc, deleted, created_by, created_at FROM secret_versions
			WHERE project_id = $1 AND environment = $2 AND path = $3 AND name = $4 ORDER BY version DESC LIMIT 1`
		args := []any{proj.ID, pl.Environment, pl.Path, name}
		if version > 0 {
			q = `SELECT id, version, value_enc, deleted, created_by, created_at FROM secret_versions
				WHERE project_id = $1 AND environment = $2 AND path = $3 AND name = $4 AND version = $5`
			args = append(args, version)
		}
		err := tx.QueryRowContext(ctx, q, args...).Scan(&id, &sec.Version, &sealed, &deleted, &sec.UpdatedBy, &at)
		switch {
		case errors.Is(err, sql.ErrNoRows) && version > 0:
			return errs.InvalidField(op, "query.version", "the secret has no such version")
		case errors.Is(err, sql.ErrNoRows) || (err == nil && deleted && version == 0):
			return errs.Ef(op, errs.NotFound, "no secret %s in %s", name, pl)
		case err != nil:
			return err
		case deleted:
			return errs.InvalidField(op, "query.version", "that version deleted the secret; it holds no value")
		}
		pt, err := s.keyring.Open(ctx, proj.ID, aad(id), sealed)
		if err != nil {
			return err
		}
		v := string(pt)
		sec.Value, sec.UpdatedAt = &v, store.Time(at)
		return audit.Record(ctx, tx, audit.By(ctx, audit.Entry{Action: "secret.read", TargetKind: "secret", TargetID: target(pl, name),
			ProjectID: proj.ID, Details: map[string]any{"version": sec.Version}}))
	})
	if err != nil {
		return nil, errs.Wrap(op, errs.Unavailable, "reading the secret failed", err)
	}
	return sec, nil
}

// latest selects the newest version of each secret of a folder.
const latest = `SELECT s.id, s.name, s.version, s.value_enc, s.created_by, s.created_at FROM secret_versions s
	WHERE s.project_id = $1 AND s.environment = $2 AND s.path = $3 AND NOT s.deleted
	AND s.version = (SELECT MAX(version) FROM secret_versions t
		WHERE t.project_id = s.project_id AND t.environment = s.environment AND t.path = s.path AND t.name = s.name)
	ORDER BY s.name`

// List returns the newest version of each live secret of a folder, without
// values (project viewers).
func (s *Service) List(ctx context.Context, projectID string, pl Place) ([]Secret, error) {
	const op = "secrets.(*Service).List"
	proj, pl, err := s.authorizePlace(ctx, op, projectID, pl, project.RoleViewer)
	if err != nil {
		return nil, err
	}
	out, _, err := s.scan(ctx, s.db, proj.ID, pl)
	if err != nil {
		return nil, errs.Wrap(op, errs.Unavailable, "listing secrets failed", err)
	}
	return out, nil
}

func (s *Service) scan(ctx context.Context, q store.Querier, projectID string, pl Place) ([]Secret, []sealedRow, error) {
	if err := folderExists(ctx, q, projectID, pl); err != nil {
		return nil, nil, err
	}
	rows, err := q.QueryContext(ctx, latest, projectID, pl.Environment, pl.Path)
	if err != nil {
		return nil, nil, err
	}
	defer rows.Close()
	out := []Secret{}
	var sealed []sealedRow
	for rows.Next() {
		sec := Secret{Environment: pl.Environment, Path: pl.Path}
		var r sealedRow
		var at int64
		if err := rows.Scan(&r.id, &sec.Name, &sec.Version, &r.sealed, &sec.UpdatedBy, &at); err != nil {
			return nil, nil, err
		}
		sec.UpdatedAt = store.Time(at)
		out = append(out, sec)
		sealed = append(sealed, r)
	}
	return out, sealed, rows.Err()
}

type sealedRow struct {
	id     string
	sealed []byte
}

// Reveal returns every live secret of a folder with its value, for
// `airlock run` and `airlock export`; each value read is audited (project
// members).
func (s *Service) Reveal(ctx context.Context, projectID string, pl Place) ([]Secret, error) {
	const op = "secrets.(*Service).Reveal"
	proj, pl, err := s.authorizePlace(ctx, op, projectID, pl, project.RoleMember)
	if err != nil {
		return nil, err
	}
	var out []Secret
	err = s.db.InTx(ctx, func(tx *sql.Tx) error {
		list, sealed, err := s.scan(ctx, tx, proj.ID, pl)
		if err != nil {
			return err
		}
		for i := range list {
			pt, err := s.keyring.Open(ctx, proj.ID, aad(sealed[i].id), sealed[i].sealed)
			if err != nil {
				return err
			}
			v := string(pt)
			list[i].Value = &v
			if err := audit.Record(ctx, tx, audit.By(ctx, audit.Entry{Action: "secret.read", TargetKind: "secret",
				TargetID: target(pl, list[i].Name), ProjectID: proj.ID, Details: map[string]any{"version": list[i].Version, "bulk": true}})); err != nil {
				return err
			}
		}
		out = list
		return nil
	})
	if err != nil {
		return nil, errs.Wrap(op, errs.Unavailable, "reading the secrets failed", err)
	}
	return out, nil
}

// History returns every version of a secret, newest first, without values
// (project viewers).
func (s *Service) History(ctx context.Context, projectID string, pl Place, name string) ([]Version, error) {
	const op = "secrets.(*Service).History"
	proj, pl, err := s.authorizePlace(ctx, op, projectID, pl, project.RoleViewer)
	if err != nil {
		return nil, err
	}
	if err := validName(op, name); err != nil {
		return nil, err
	}
	rows, err := s.db.QueryContext(ctx, `SELECT version, deleted, created_by, created_at FROM secret_versions
		WHERE project_id = $1 AND environment = $2 AND path = $3 AND name = $4 ORDER BY version DESC`, proj.ID, pl.Environment, pl.Path, name)
	if err != nil {
		return nil, errs.Wrap(op, errs.Unavailable, "reading the history failed", err)
	}
	defer rows.Close()
	out := []Version{}
	for rows.Next() {
		var v Version
		var at int64
		if err := rows.Scan(&v.Version, &v.Deleted, &v.CreatedBy, &at); err != nil {
			return nil, errs.Wrap(op, errs.Unavailable, "reading the history failed", err)
		}
		v.CreatedAt = store.Time(at)
		out = append(out, v)
	}
	if err := rows.Err(); err != nil {
		return nil, errs.Wrap(op, errs.Unavailable, "reading the history failed", err)
	}
	if len(out) == 0 {
		return nil, errs.Ef(op, errs.NotFound, "no secret %s in %s", name, pl)
	}
	return out, nil
}

// Restore writes the value of an earlier version as the newest version
// (project members). A deleted secret can be restored this way too.
func (s *Service) Restore(ctx context.Context, projectID string, pl Place, name string, version int) (*Secret, error) {
	const op = "secrets.(*Service).Restore"
	proj, pl, err := s.authorizePlace(ctx, op, projectID, pl, project.RoleMember)
	if err != nil {
		return nil, err
	}
	if err := validName(op, name); err != nil {
		return nil, err
	}
	if version < 1 {
		return nil, errs.InvalidField(op, "body.version", "give the version to restore, a number from 1")
	}
	var sec *Secret
	err = s.db.InTx(ctx, func(tx *sql.Tx) error {
		var id string
		var sealed []byte
		var deleted bool
		err := tx.QueryRowContext(ctx, `SELECT id, value_enc, deleted FROM secret_versions
			WHERE project_id = $1 AND environment = $2 AND path = $3 AND name = $4 AND version = $5`,
			proj.ID, pl.Environment, pl.Path, name, version).Scan(&id, &sealed, &deleted)
		switch {
		case errors.Is(err, sql.ErrNoRows):
			return errs.InvalidField(op, "body.version", "the secret has no such version")
		case err != nil:
			return err
		case deleted:
			return errs.InvalidField(op, "body.version", "that version deleted the secret; restore one that holds a value")
		}
		pt, err := s.keyring.Open(ctx, proj.ID, aad(id), sealed)
		if err != nil {
			return err
		}
		if err := s.checkOwner(ctx, tx, proj.ID, pl, name); err != nil {
			return err
		}
		sec, err = s.write(ctx, tx, proj.ID, pl, name, string(pt), "secret.restore", map[string]any{"restoredVersion": version}, nil)
		return err
	})
	if err != nil {
		return nil, errs.Wrap(op, errs.Unavailable, "restoring the secret failed", err)
	}
	return sec, nil
}

// Delete hides a secret by writing a deleted version; old versions stay for
// history and restore (project members).
func (s *Service) Delete(ctx context.Context, projectID string, pl Place, name string) error {
	const op = "secrets.(*Service).Delete"
	proj, pl, err := s.authorizePlace(ctx, op, projectID, pl, project.RoleMember)
	if err != nil {
		return err
	}
	if err := validName(op, name); err != nil {
		return err
	}
	p := api.PrincipalFrom(ctx)
	id := uuid.Must(uuid.NewV7()).String()
	err = s.db.InTx(ctx, func(tx *sql.Tx) error {
		var version int
		var deleted bool
		err := tx.QueryRowContext(ctx, `SELECT version, deleted FROM secret_versions
			WHERE project_id = $1 AND environment = $2 AND path = $3 AND name = $4 ORDER BY version DESC LIMIT 1`,
			proj.ID, pl.Environment, pl.Path, name).Scan(&version, &deleted)
		if errors.Is(err, sql.ErrNoRows) || (err == nil && deleted) {
			return errs.Ef(op, errs.NotFound, "no secret %s in %s", name, pl)
		}
		if err != nil {
			return err
		}
		if err := s.checkOwner(ctx, tx, proj.ID, pl, name); err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, `INSERT INTO secret_versions (id, project_id, environment, path, name, version, value_enc, deleted, created_by, created_at)
			VALUES ($1, $2, $3, $4, $5, $6, $7, TRUE, $8, $9)`,
			id, proj.ID, pl.Environment, pl.Path, name, version+1, []byte{}, p.Name, store.Micros(s.now())); err != nil {
			return err
		}
		return audit.Record(ctx, tx, audit.By(ctx, audit.Entry{Action: "secret.delete", TargetKind: "secret", TargetID: target(pl, name),
			ProjectID: proj.ID, Details: map[string]any{"version": version + 1}}))
	})
	if err != nil {
		return errs.Wrap(op, errs.Unavailable, "deleting the secret failed", err)
	}
	return nil
}

// Live says whether a folder holds a live secret of that name.
func Live(ctx context.Context, q store.Querier, projectID string, pl Place, name string) (bool, error) {
	var deleted bool
	err := q.QueryRowContext(ctx, `SELECT deleted FROM secret_versions WHERE project_id = $1 AND environment = $2 AND path = $3 AND name = $4
		ORDER BY version DESC LIMIT 1`, projectID, pl.Environment, pl.Path, name).Scan(&deleted)
	if errors.Is(err, sql.ErrNoRows) {
		return false, nil
	}
	return err == nil && !deleted, err
}
