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

// Organization is the caller's organization and its MFA policy.
type Organization struct {
	ID        string `json:"id"`
	Name      string `json:"name"`
	MFAMethod string `json:"mfaMethod" enum:"none,totp,email,webauthn" doc:"the second factor every MFA challenge uses; none: the user's own method, else an email code"`
	// RequireMFALogin: every user's login needs a second factor too.
	RequireMFALogin bool      `json:"requireMfaLogin" doc:"every user's login needs a second factor (the method is chosen as for access)"`
	CreatedAt       time.Time `json:"createdAt"`
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
	err := q.QueryRowContext(ctx, `SELECT id, name, mfa_method, require_mfa_login, created_at FROM organizations WHERE id = $1`, orgID).
		Scan(&o.ID, &o.Name, &o.MFAMethod, &o.RequireMFALogin, &created)
	if err != nil {
		return nil, errs.Wrap(op, errs.Unavailable, "reading the organization failed", err)
	}
	if o.MFAMethod == "" {
		o.MFAMethod = MethodNone
	}
	o.CreatedAt = store.Time(created)
	return &o, nil
}

// UpdateOrg sets the organization's enforced MFA method and whether logins
// need a second factor (organization admins); nil leaves a setting as it is.
func (s *Service) UpdateOrg(ctx context.Context, method *string, requireLogin *bool) (*Organization, error) {
	const op = "mfa.(*Service).UpdateOrg"
	p, err := api.MustPrincipal(ctx)
	if err != nil {
		return nil, err
	}
	if !p.OrgAdmin {
		return nil, errs.E(op, errs.Forbidden, "only organization admins may change the organization's MFA policy")
	}
	if method == nil && requireLogin == nil {
		return nil, errs.E(op, errs.Invalid, "nothing to change: give `mfaMethod` or `requireMfaLogin`")
	}
	switch {
	case method == nil:
	case *method == MethodTOTP, *method == MethodEmail, *method == MethodNone:
	case *method == MethodWebAuthn && s.wa == nil:
		return nil, errs.InvalidField(op, "body.mfaMethod", "passkeys (webauthn) cannot be enforced: this server has no public URL (its operator sets --public-url)")
	case *method == MethodWebAuthn:
	default:
		return nil, errs.InvalidField(op, "body.mfaMethod", "the MFA method is one of totp, email, webauthn or none")
	}
	var out *Organization
	err = s.cfg.DB.InTx(ctx, func(tx *sql.Tx) error {
		before, err := s.org(ctx, tx, op, p.OrgID)
		if err != nil {
			return err
		}
		stored, login := before.MFAMethod, before.RequireMFALogin
		if method != nil {
			stored = *method
		}
		if requireLogin != nil {
			login = *requireLogin
		}
		if stored == MethodNone {
			stored = ""
		}
		if _, err := tx.ExecContext(ctx, `UPDATE organizations SET mfa_method = $1, require_mfa_login = $2 WHERE id = $3`, stored, login, p.OrgID); err != nil {
			return err
		}
		if out, err = s.org(ctx, tx, op, p.OrgID); err != nil {
			return err
		}
		return audit.Record(ctx, tx, audit.By(ctx, audit.Entry{Action: "org.update", TargetKind: "organization", TargetID: p.OrgID,
			Details: map[string]any{"mfaMethod": out.MFAMethod, "requireMfaLogin": out.RequireMFALogin,
				"before": map[string]any{"mfaMethod": before.MFAMethod, "requireMfaLogin": before.RequireMFALogin}}}))
	})
	if err != nil {
		return nil, errs.Wrap(op, errs.Unavailable, "updating the organization failed", err)
	}
	return out, nil
}

// OrganizationUpdate is the body of PATCH /api/v1/org; nil fields stay.
type OrganizationUpdate struct {
	MFAMethod       *string `json:"mfaMethod,omitempty" maxLength:"20" doc:"totp, email, webauthn (passkeys) or none"`
	RequireMFALogin *bool   `json:"requireMfaLogin,omitempty" doc:"every user's login needs a second factor"`
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
	}, func(ctx context.Context, in *struct{ Body OrganizationUpdate }) (*struct{ Body *Organization }, error) {
		o, err := s.UpdateOrg(ctx, in.Body.MFAMethod, in.Body.RequireMFALogin)
		return &struct{ Body *Organization }{o}, api.Err(ctx, err)
	})
}
