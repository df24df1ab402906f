package pam

import (
	"context"
	"database/sql"
	"net/http"
	"slices"

	"github.com/danielgtaylor/huma/v2"
	"github.com/google/uuid"

	"github.com/airlockpam/airlock/internal/api"
	"github.com/airlockpam/airlock/internal/audit"
	"github.com/airlockpam/airlock/internal/errs"
	"github.com/airlockpam/airlock/internal/jobs"
	"github.com/airlockpam/airlock/internal/project"
)

// CreateAccount adds an account to a resource (project admins). The
// resource's gateway first logs in with the credentials; if that fails,
// nothing is saved and the gateway's error is returned.
func (s *Service) CreateAccount(ctx context.Context, projectID string, in AccountInput) (*Account, error) {
	const op = "pam.(*Service).CreateAccount"
	proj, err := s.cfg.Projects.Authorize(ctx, projectID, project.RoleAdmin)
	if err != nil {
		return nil, err
	}
	if in.Resource == "" {
		return nil, errs.InvalidField(op, "body.resource", "name the resource the account belongs to (its name or id)")
	}
	if err := checkName(op, "body.name", "account", in.Name); err != nil {
		return nil, err
	}
	if err := checkUsername(op, "body.username", in.Username); err != nil {
		return nil, err
	}
	if err := checkPassword(op, "body.password", in.Password); err != nil {
		return nil, err
	}
	if err := checkDescription(op, in.Description); err != nil {
		return nil, err
	}
	if in.Metadata == nil {
		in.Metadata = map[string]string{}
	}
	if err := checkMetadata(op, in.Metadata); err != nil {
		return nil, err
	}
	r, err := resourceByRef(ctx, s.db, proj.ID, in.Resource)
	if errs.Is(err, errs.NotFound) {
		return nil, errs.InvalidField(op, "body.resource", "no resource of that name or id in this project; `airlock resources list` shows them")
	}
	if err != nil {
		return nil, err
	}
	// A taken name is refused before the gateway is asked to log in.
	if _, err := accountByRef(ctx, s.db, proj.ID, r.ID, in.Name); err == nil {
		return nil, &errs.Error{Op: op, Code: errs.Conflict, Field: "body.name",
			Msg: "resource " + r.Name + " already has an account of that name"}
	} else if !errs.Is(err, errs.NotFound) {
		return nil, err
	}
	now := s.now()
	a := &accountRow{Account: Account{
		ID: uuid.Must(uuid.NewV7()).String(), Name: in.Name, ResourceID: r.ID, ResourceName: r.Name,
		Username: in.Username, Description: in.Description, Metadata: in.Metadata, RequireMFA: in.RequireMFA,
		CreatedAt: now, UpdatedAt: now,
	}, projectID: proj.ID}
	if in.RotationInterval != "" {
		if a.rotationDays, err = checkRotation(op, r, in.Username, in.RotationInterval); err != nil {
			return nil, err
		}
	}
	if err := s.validate(ctx, op, &r.Resource, a.Name, r.target(a.ID, in.Username, in.Password)); err != nil {
		return nil, err
	}
	if a.passwordSealed, err = s.cfg.Keyring.Seal(ctx, proj.ID, passwordAAD(a.ID), []byte(in.Password)); err != nil {
		return nil, errs.Wrap(op, errs.Internal, "sealing the password failed", err)
	}
	err = s.db.InTx(ctx, func(tx *sql.Tx) error {
		if err := insertAccount(ctx, tx, a); err != nil {
			return err
		}
		if err := s.scheduleRotation(ctx, tx, a, now); err != nil {
			return err
		}
		return audit.Record(ctx, tx, audit.By(ctx, audit.Entry{Action: "account.create", TargetKind: "account", TargetID: a.ID,
			ProjectID: proj.ID, Details: map[string]any{"name": a.Name, "resource": r.Name, "resourceId": r.ID,
				"username": a.Username, "requireMfa": a.RequireMFA, "metadata": a.Metadata, "rotationIntervalDays": a.rotationDays}}))
	})
	if err != nil {
		return nil, errs.Wrap(op, errs.Unavailable, "creating the account failed", err)
	}
	s.showRotation(ctx, a)
	return &a.Account, nil
}

// ListAccounts returns the accounts of a project that match every filter
// (project viewers).
func (s *Service) ListAccounts(ctx context.Context, projectID string, f AccountFilter) ([]Account, error) {
	proj, err := s.cfg.Projects.Authorize(ctx, projectID, project.RoleViewer)
	if err != nil {
		return nil, err
	}
	resourceID := ""
	if f.Resource != "" {
		r, err := resourceByRef(ctx, s.db, proj.ID, f.Resource)
		if err != nil {
			return nil, err
		}
		resourceID = r.ID
	}
	rows, err := listAccounts(ctx, s.db, proj.ID, resourceID, f.Metadata)
	if err != nil {
		return nil, err
	}
	out := make([]Account, len(rows))
	for i, a := range rows {
		s.showRotation(ctx, a)
		out[i] = a.Account
	}
	return out, nil
}

// GetAccount returns an account by name or id (project viewers). resource
// (a name or id) may be empty unless several resources have an account of
// that name.
func (s *Service) GetAccount(ctx context.Context, projectID, resource, ref string) (*Account, error) {
	proj, err := s.cfg.Projects.Authorize(ctx, projectID, project.RoleViewer)
	if err != nil {
		return nil, err
	}
	a, err := s.findAccount(ctx, proj.ID, resource, ref)
	if err != nil {
		return nil, err
	}
	s.showRotation(ctx, a)
	return &a.Account, nil
}

func (s *Service) findAccount(ctx context.Context, projectID, resource, ref string) (*accountRow, error) {
	resourceID := ""
	if resource != "" {
		r, err := resourceByRef(ctx, s.db, projectID, resource)
		if err != nil {
			return nil, err
		}
		resourceID = r.ID
	}
	return accountByRef(ctx, s.db, projectID, resourceID, ref)
}

// UpdateAccount changes an account (project admins). A new username or
// password is first used by the resource's gateway to log in; if that fails,
// nothing changes and the gateway's error is returned.
func (s *Service) UpdateAccount(ctx context.Context, projectID, resource, ref string, in AccountUpdate) (*Account, error) {
	const op = "pam.(*Service).UpdateAccount"
	proj, err := s.cfg.Projects.Authorize(ctx, projectID, project.RoleAdmin)
	if err != nil {
		return nil, err
	}
	a, err := s.findAccount(ctx, proj.ID, resource, ref)
	if err != nil {
		return nil, err
	}
	var changed []string
	details := map[string]any{"name": a.Name, "resource": a.ResourceName}
	credentials := false
	if in.Username != nil {
		if err := checkUsername(op, "body.username", *in.Username); err != nil {
			return nil, err
		}
		if *in.Username != a.Username {
			a.Username, credentials = *in.Username, true
			changed = append(changed, "username")
			details["username"] = a.Username
		}
	}
	if in.Password != nil {
		if err := checkPassword(op, "body.password", *in.Password); err != nil {
			return nil, err
		}
		credentials = true
		changed = append(changed, "password")
	}
	if in.Description != nil {
		if err := checkDescription(op, *in.Description); err != nil {
			return nil, err
		}
		if *in.Description != a.Description {
			a.Description = *in.Description
			changed = append(changed, "description")
		}
	}
	if in.RequireMFA != nil && *in.RequireMFA != a.RequireMFA {
		a.RequireMFA = *in.RequireMFA
		changed = append(changed, "requireMfa")
		details["requireMfa"] = a.RequireMFA
	}
	if in.Metadata != nil {
		if err := checkMetadata(op, in.Metadata); err != nil {
			return nil, err
		}
		a.Metadata = in.Metadata
		changed = append(changed, "metadata")
		details["metadata"] = a.Metadata
	}
	rotationChanged := false
	if in.RotationInterval == nil && a.rotationDays > 0 && slices.Contains(changed, "username") {
		r, err := resourceByRef(ctx, s.db, proj.ID, a.ResourceID)
		if err != nil {
			return nil, err
		}
		if a.Username == r.RotationUsername {
			return nil, errs.InvalidField(op, "body.username", "the database user "+a.Username+" is the resource's rotation account, "+
				"and this account rotates its password; an account cannot rotate its own password yet: turn its rotation off first")
		}
	}
	if in.RotationInterval != nil {
		days := 0
		if *in.RotationInterval != "off" && *in.RotationInterval != "" {
			r, err := resourceByRef(ctx, s.db, proj.ID, a.ResourceID)
			if err != nil {
				return nil, err
			}
			if days, err = checkRotation(op, r, a.Username, *in.RotationInterval); err != nil {
				return nil, err
			}
		}
		if days != a.rotationDays {
			a.rotationDays, rotationChanged = days, true
			changed = append(changed, "rotationInterval")
			details["rotationIntervalDays"] = days
		}
	}
	if len(changed) == 0 {
		s.showRotation(ctx, a)
		return &a.Account, nil
	}
	if credentials {
		if err := s.checkNewCredentials(ctx, op, a, in.Password); err != nil {
			return nil, err
		}
	}
	a.UpdatedAt = s.now()
	details["changed"] = changed
	err = s.db.InTx(ctx, func(tx *sql.Tx) error {
		if err := updateAccount(ctx, tx, a); err != nil {
			return err
		}
		if in.Metadata != nil {
			if err := replaceMetadata(ctx, tx, a.ID, a.Metadata); err != nil {
				return err
			}
		}
		if rotationChanged {
			if err := s.scheduleRotation(ctx, tx, a, a.UpdatedAt); err != nil {
				return err
			}
		}
		return audit.Record(ctx, tx, audit.By(ctx, audit.Entry{Action: "account.update", TargetKind: "account", TargetID: a.ID,
			ProjectID: proj.ID, Details: details}))
	})
	if err != nil {
		return nil, errs.Wrap(op, errs.Unavailable, "updating the account failed", err)
	}
	s.showRotation(ctx, a)
	return &a.Account, nil
}

// checkNewCredentials logs in through the gateway with a's (new) username
// and the new password, or the stored one, and seals a new password.
func (s *Service) checkNewCredentials(ctx context.Context, op string, a *accountRow, newPassword *string) error {
	r, err := resourceByRef(ctx, s.db, a.projectID, a.ResourceID)
	if err != nil {
		return err
	}
	var password string
	if newPassword != nil {
		password = *newPassword
	} else {
		pt, err := s.cfg.Keyring.Open(ctx, a.projectID, passwordAAD(a.ID), a.passwordSealed)
		if err != nil {
			return errs.Wrap(op, errs.Internal, "opening the account's password failed", err)
		}
		password = string(pt)
	}
	if err := s.validate(ctx, op, &r.Resource, a.Name, r.target(a.ID, a.Username, password)); err != nil {
		return err
	}
	if newPassword != nil {
		if a.passwordSealed, err = s.cfg.Keyring.Seal(ctx, a.projectID, passwordAAD(a.ID), []byte(password)); err != nil {
			return errs.Wrap(op, errs.Internal, "sealing the password failed", err)
		}
	}
	return nil
}

// DeleteAccount removes an account (project admins).
func (s *Service) DeleteAccount(ctx context.Context, projectID, resource, ref string) error {
	const op = "pam.(*Service).DeleteAccount"
	proj, err := s.cfg.Projects.Authorize(ctx, projectID, project.RoleAdmin)
	if err != nil {
		return err
	}
	a, err := s.findAccount(ctx, proj.ID, resource, ref)
	if err != nil {
		return err
	}
	if st, err := jobs.Get(ctx, s.db, s.now(), KindRotate, a.ID); err == nil && st.Running {
		return errs.E(op, errs.Conflict, "account "+a.Name+"'s password is being rotated right now; delete it once the rotation has finished "+
			"(`airlock accounts get` shows its status). Nothing was changed.")
	}
	err = s.db.InTx(ctx, func(tx *sql.Tx) error {
		if err := deleteAccount(ctx, tx, proj.ID, a.ID, a.pendingAttempt); err != nil {
			return err
		}
		if err := jobs.Cancel(ctx, tx, KindRotate, a.ID); err != nil {
			return err
		}
		return audit.Record(ctx, tx, audit.By(ctx, audit.Entry{Action: "account.delete", TargetKind: "account", TargetID: a.ID,
			ProjectID: proj.ID, Details: map[string]any{"name": a.Name, "resource": a.ResourceName, "username": a.Username}}))
	})
	if errs.Is(err, errs.Conflict) || errs.Is(err, errs.NotFound) {
		return err
	}
	if err != nil {
		return errs.Wrap(op, errs.Unavailable, "deleting the account failed", err)
	}
	s.accessRevoked(ctx) // its live sessions end; their logs stay
	return nil
}

// AccountPath selects one account of a project.
type AccountPath struct {
	project.ProjectPath
	Account string `path:"account" maxLength:"64" doc:"the account's name or id"`
	// Resource disambiguates an account name used on several resources.
	Resource string `query:"resource" maxLength:"64" doc:"the resource's name or id; needed when several resources have an account of this name"`
}

// AccountListQuery filters a listing of accounts.
type AccountListQuery struct {
	project.ProjectPath
	Resource string   `query:"resource" maxLength:"64" doc:"only the accounts of this resource (name or id)"`
	Metadata []string `query:"metadata,explode" doc:"key=value; repeat it to require several labels (all must match)"`
}

func (s *Service) registerAccounts(a huma.API) {
	tags := []string{"Accounts"}
	base := "/api/v1/projects/{projectId}/accounts"
	huma.Register(a, huma.Operation{
		OperationID: "create-account", Method: http.MethodPost, Path: base, Tags: tags,
		Summary: "Add an account to a resource; the gateway first logs in with it (project admins)", Security: api.Secured,
		DefaultStatus: http.StatusCreated, Errors: []int{403, 404, 409, 422, 503},
	}, func(ctx context.Context, in *struct {
		project.ProjectPath
		Body AccountInput
	}) (*struct{ Body *Account }, error) {
		acc, err := s.CreateAccount(ctx, in.ProjectID, in.Body)
		return &struct{ Body *Account }{acc}, api.Err(ctx, err)
	})
	huma.Register(a, huma.Operation{
		OperationID: "list-accounts", Method: http.MethodGet, Path: base, Tags: tags,
		Summary: "List a project's accounts, optionally of one resource and with given metadata", Security: api.Secured,
		Errors: []int{404, 422},
	}, func(ctx context.Context, in *AccountListQuery) (*struct{ Body []Account }, error) {
		const op = "pam.listAccounts"
		md, err := ParseMetadataFilters(op, in.Metadata)
		if err != nil {
			return nil, api.Err(ctx, err)
		}
		list, err := s.ListAccounts(ctx, in.ProjectID, AccountFilter{Resource: in.Resource, Metadata: md})
		return &struct{ Body []Account }{list}, api.Err(ctx, err)
	})
	huma.Register(a, huma.Operation{
		OperationID: "get-account", Method: http.MethodGet, Path: base + "/{account}", Tags: tags,
		Summary: "Get an account by name or id", Security: api.Secured, Errors: []int{404, 422},
	}, func(ctx context.Context, in *AccountPath) (*struct{ Body *Account }, error) {
		acc, err := s.GetAccount(ctx, in.ProjectID, in.Resource, in.Account)
		return &struct{ Body *Account }{acc}, api.Err(ctx, err)
	})
	huma.Register(a, huma.Operation{
		OperationID: "update-account", Method: http.MethodPatch, Path: base + "/{account}", Tags: tags,
		Summary:  "Change an account; a new username or password is checked through the gateway first (project admins)",
		Security: api.Secured, Errors: []int{403, 404, 422, 503},
	}, func(ctx context.Context, in *struct {
		AccountPath
		Body AccountUpdate
	}) (*struct{ Body *Account }, error) {
		acc, err := s.UpdateAccount(ctx, in.ProjectID, in.Resource, in.Account, in.Body)
		return &struct{ Body *Account }{acc}, api.Err(ctx, err)
	})
	huma.Register(a, huma.Operation{
		OperationID: "delete-account", Method: http.MethodDelete, Path: base + "/{account}", Tags: tags,
		Summary: "Delete an account (project admins); refused while its password is being rotated", Security: api.Secured,
		DefaultStatus: http.StatusNoContent, Errors: []int{403, 404, 409, 422},
	}, func(ctx context.Context, in *AccountPath) (*struct{}, error) {
		return nil, api.Err(ctx, s.DeleteAccount(ctx, in.ProjectID, in.Resource, in.Account))
	})
}
