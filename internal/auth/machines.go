package auth

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/base64"
	"errors"
	"net/http"
	"regexp"
	"time"

	"github.com/danielgtaylor/huma/v2"
	"github.com/google/uuid"

	"github.com/airlockpam/airlock/internal/api"
	"github.com/airlockpam/airlock/internal/audit"
	"github.com/airlockpam/airlock/internal/errs"
	"github.com/airlockpam/airlock/internal/store"
)

// MachineIdentity is a non-human caller (CI, a script) that logs in with a
// client id and secret. Its secret is shown once, at creation.
type MachineIdentity struct {
	ID        string    `json:"id"`
	Name      string    `json:"name"`
	ClientID  string    `json:"clientId"`
	CreatedAt time.Time `json:"createdAt"`
}

// NewMachineIdentity is returned once, at creation, with the secret.
type NewMachineIdentity struct {
	MachineIdentity
	ClientSecret string `json:"clientSecret" doc:"shown only now; store it in your secret manager"`
}

type machineRow struct {
	id, orgID, name, clientID string
	secretHash                []byte
	createdAt                 int64
}

var slugRE = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$`)

// SlugRule describes valid names for error messages.
const SlugRule = "use 1-63 lower-case letters, digits and hyphens, starting and ending with a letter or digit"

// ValidSlug reports whether s is a valid name.
func ValidSlug(s string) bool { return slugRE.MatchString(s) }

func (s *Service) machineByClientID(ctx context.Context, clientID string) (*machineRow, error) {
	var m machineRow
	err := s.cfg.DB.QueryRowContext(ctx, `SELECT id, org_id, name, client_id, secret_hash, created_at FROM machine_identities WHERE client_id = $1`, clientID).
		Scan(&m.id, &m.orgID, &m.name, &m.clientID, &m.secretHash, &m.createdAt)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, nil
	}
	return &m, err
}

// MachineIdentityInput is the body of POST /api/v1/machine-identities.
type MachineIdentityInput struct {
	Name string `json:"name" maxLength:"63" doc:"a slug, unique in the organization"`
}

func (s *Service) registerMachines(a huma.API) {
	huma.Register(a, huma.Operation{
		OperationID: "create-machine-identity", Method: http.MethodPost, Path: "/api/v1/machine-identities", Tags: []string{"Machine identities"},
		Summary: "Create a machine identity (organization admins); the secret is returned once", Security: api.Secured,
		DefaultStatus: http.StatusCreated, Errors: []int{403, 409, 422},
	}, func(ctx context.Context, in *struct{ Body MachineIdentityInput }) (*struct{ Body NewMachineIdentity }, error) {
		m, err := s.CreateMachineIdentity(ctx, in.Body.Name)
		if err != nil {
			return nil, api.Err(ctx, err)
		}
		return &struct{ Body NewMachineIdentity }{m}, nil
	})
	huma.Register(a, huma.Operation{
		OperationID: "list-machine-identities", Method: http.MethodGet, Path: "/api/v1/machine-identities", Tags: []string{"Machine identities"},
		Summary: "List machine identities (organization admins)", Security: api.Secured,
	}, func(ctx context.Context, _ *struct{}) (*struct{ Body []MachineIdentity }, error) {
		out, err := s.ListMachineIdentities(ctx)
		return &struct{ Body []MachineIdentity }{out}, api.Err(ctx, err)
	})
	huma.Register(a, huma.Operation{
		OperationID: "delete-machine-identity", Method: http.MethodDelete, Path: "/api/v1/machine-identities/{id}", Tags: []string{"Machine identities"},
		Summary: "Delete a machine identity and revoke its tokens (organization admins)", Security: api.Secured,
		DefaultStatus: http.StatusNoContent, Errors: []int{403, 404},
	}, func(ctx context.Context, in *struct {
		ID string `path:"id" maxLength:"64"`
	}) (*struct{}, error) {
		return nil, api.Err(ctx, s.DeleteMachineIdentity(ctx, in.ID))
	})
}

// ListMachineIdentities lists the organization's machine identities
// (organization admins).
func (s *Service) ListMachineIdentities(ctx context.Context) ([]MachineIdentity, error) {
	const op = "auth.(*Service).ListMachineIdentities"
	p, err := requireOrgAdmin(ctx, op)
	if err != nil {
		return nil, err
	}
	rows, err := s.cfg.DB.QueryContext(ctx, `SELECT id, name, client_id, created_at FROM machine_identities WHERE org_id = $1 ORDER BY name`, p.OrgID)
	if err != nil {
		return nil, errs.Wrap(op, errs.Unavailable, "listing machine identities failed", err)
	}
	defer rows.Close()
	out := []MachineIdentity{}
	for rows.Next() {
		var m MachineIdentity
		var at int64
		if err := rows.Scan(&m.ID, &m.Name, &m.ClientID, &at); err != nil {
			return nil, errs.Wrap(op, errs.Unavailable, "listing machine identities failed", err)
		}
		m.CreatedAt = store.Time(at)
		out = append(out, m)
	}
	if err := rows.Err(); err != nil {
		return nil, errs.Wrap(op, errs.Unavailable, "listing machine identities failed", err)
	}
	return out, nil
}

// CreateMachineIdentity creates a machine identity and returns its secret.
func (s *Service) CreateMachineIdentity(ctx context.Context, name string) (NewMachineIdentity, error) {
	const op = "auth.(*Service).CreateMachineIdentity"
	p, err := requireOrgAdmin(ctx, op)
	if err != nil {
		return NewMachineIdentity{}, err
	}
	if !ValidSlug(name) {
		return NewMachineIdentity{}, errs.InvalidField(op, "body.name", "invalid name: "+SlugRule)
	}
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		return NewMachineIdentity{}, errs.Wrap(op, errs.Internal, "generating a secret failed", err)
	}
	secret := "alks_" + base64.RawURLEncoding.EncodeToString(b)
	now := s.cfg.Now()
	m := NewMachineIdentity{MachineIdentity: MachineIdentity{ID: uuid.Must(uuid.NewV7()).String(), Name: name,
		ClientID: uuid.Must(uuid.NewRandom()).String(), CreatedAt: store.Time(store.Micros(now))}, ClientSecret: secret}
	err = s.cfg.DB.InTx(ctx, func(tx *sql.Tx) error {
		if _, err := tx.ExecContext(ctx, `INSERT INTO machine_identities (id, org_id, name, client_id, secret_hash, created_at)
			VALUES ($1, $2, $3, $4, $5, $6)`, m.ID, p.OrgID, name, m.ClientID, hashToken(secret), store.Micros(now)); err != nil {
			return err
		}
		return audit.Record(ctx, tx, audit.By(ctx, audit.Entry{Action: "machine_identity.create", TargetKind: api.SubjectMachine,
			TargetID: m.ID, Details: map[string]any{"name": name, "clientId": m.ClientID}}))
	})
	if store.IsUniqueViolation(err) {
		return NewMachineIdentity{}, &errs.Error{Op: op, Code: errs.Conflict, Field: "body.name", Msg: "a machine identity with this name already exists"}
	}
	if err != nil {
		return NewMachineIdentity{}, errs.Wrap(op, errs.Unavailable, "creating the machine identity failed", err)
	}
	return m, nil
}

// DeleteMachineIdentity removes a machine identity, its tokens and
// memberships; its live sessions end.
func (s *Service) DeleteMachineIdentity(ctx context.Context, id string) error {
	const op = "auth.(*Service).DeleteMachineIdentity"
	p, err := requireOrgAdmin(ctx, op)
	if err != nil {
		return err
	}
	err = s.cfg.DB.InTx(ctx, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, `DELETE FROM machine_identities WHERE id = $1 AND org_id = $2`, id, p.OrgID)
		if err != nil {
			return errs.Wrap(op, errs.Unavailable, "deleting the machine identity failed", err)
		}
		if n, _ := res.RowsAffected(); n == 0 {
			return errs.E(op, errs.NotFound, "no such machine identity")
		}
		if err := s.revokeSubject(ctx, tx, api.SubjectMachine, id); err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, `DELETE FROM project_members WHERE subject_kind = $1 AND subject_id = $2`, api.SubjectMachine, id); err != nil {
			return err
		}
		return audit.Record(ctx, tx, audit.By(ctx, audit.Entry{Action: "machine_identity.delete", TargetKind: api.SubjectMachine, TargetID: id}))
	})
	if err != nil {
		return err
	}
	s.accessRevoked(ctx) // its live sessions end
	return nil
}
