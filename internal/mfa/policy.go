package mfa

import (
	"context"
	"database/sql"
	"net/http"
	"time"

	"github.com/danielgtaylor/huma/v2"

	"github.com/airlockpam/airlock/internal/api"
	"github.com/airlockpam/airlock/internal/audit"
	"github.com/airlockpam/airlock/internal/errs"
	"github.com/airlockpam/airlock/internal/store"
)

// Org is the caller's organization and its MFA policy.
type Organization struct {
	ID        string    `json:"id"`
	Name      string    `json:"name"`
	MFAMethod string    `json:"mfaMethod" enum:"none,totp,email" doc:"the second factor every MFA challenge uses; none: the user's own method, else an email code"`
	CreatedAt time.Time `json:"createdAt"`
}

// GetOrg returns the caller's organization.
func (s *Service) GetOrg(ctx context.Context) (*Organization, error) {
	const op = "mfa.(*Service).GetOrg"
	p, err := api.MustPrincipal(ctx)
	if err != nil {
		return nil, err
	}
	return s.org(ctx, s.cfg.DB, op, p.OrgID)
}

func (s *Service) org(ctx context.Context, q store.Querier, op, orgID string) (*Organization, error) {
	var o Organization
	var created int64
	err := q.QueryRowContext(ctx, `SELECT id, name, mfa_method, created_at FROM organizations WHERE id = $1`, orgID).
		Scan(&o.ID, &o.Name, &o.MFAMethod, &created)
	if err != nil {
		return nil, errs.Wrap(op, errs.Unavailable, "reading the organization failed", err)
	}
	if o.MFAMethod == "" {
		o.MFAMethod = MethodNone
	}
	o.CreatedAt = store.Time(created)
	return &o, nil
}

// UpdateOrg sets the organization's enforced MFA method (organization admins).
func (s *Service) UpdateOrg(ctx context.Context, method string) (*Organization, error) {
	const op = "mfa.(*Service).UpdateOrg"
	p, err := api.MustPrincipal(ctx)
	if err != nil {
		return nil, err
	}
	if !p.OrgAdmin {
		return nil, errs.E(op, errs.Forbidden, "only organization admins may change the organization's MFA policy")
	}
	switch method {
	case MethodTOTP, MethodEmail, MethodNone:
	case MethodWebAuthn:
		return nil, errs.InvalidField(op, "body.mfaMethod", "passkeys (webauthn) cannot be enforced yet: this server has no passkey support; use totp, email or none")
	default:
		return nil, errs.InvalidField(op, "body.mfaMethod", "the MFA method is one of totp, email, webauthn or none")
	}
	var out *Organization
	err = s.cfg.DB.InTx(ctx, func(tx *sql.Tx) error {
		before, err := s.org(ctx, tx, op, p.OrgID)
		if err != nil {
			return err
		}
		stored := method
		if stored == MethodNone {
			stored = ""
		}
		if _, err := tx.ExecContext(ctx, `UPDATE organizations SET mfa_method = $1 WHERE id = $2`, stored, p.OrgID); err != nil {
			return err
		}
		if out, err = s.org(ctx, tx, op, p.OrgID); err != nil {
			return err
		}
		return audit.Record(ctx, tx, audit.By(ctx, audit.Entry{Action: "org.update", TargetKind: "organization", TargetID: p.OrgID,
			Details: map[string]any{"mfaMethod": method, "before": map[string]any{"mfaMethod": before.MFAMethod}}}))
	})
	if err != nil {
		return nil, errs.Wrap(op, errs.Unavailable, "updating the organization failed", err)
	}
	return out, nil
}

func (s *Service) registerPolicy(a huma.API, _ []string) {
	tags := []string{"Organization"}
	huma.Register(a, huma.Operation{
		OperationID: "get-org", Method: http.MethodGet, Path: "/api/v1/org", Tags: tags,
		Summary: "The caller's organization and its MFA policy", Security: api.Secured,
	}, func(ctx context.Context, _ *struct{}) (*struct{ Body *Organization }, error) {
		o, err := s.GetOrg(ctx)
		return &struct{ Body *Organization }{o}, api.Err(ctx, err)
	})
	huma.Register(a, huma.Operation{
		OperationID: "update-org", Method: http.MethodPatch, Path: "/api/v1/org", Tags: tags,
		Summary: "Change the organization's MFA policy (organization admins)", Security: api.Secured, Errors: []int{403, 422},
	}, func(ctx context.Context, in *struct {
		Body struct {
			MFAMethod string `json:"mfaMethod" maxLength:"20" doc:"totp, email or none (webauthn: not yet)"`
		}
	}) (*struct{ Body *Organization }, error) {
		o, err := s.UpdateOrg(ctx, in.Body.MFAMethod)
		return &struct{ Body *Organization }{o}, api.Err(ctx, err)
	})
}
