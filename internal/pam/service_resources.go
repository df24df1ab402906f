package pam

import (
	"context"
	"database/sql"
	"fmt"
	"net/http"
	"slices"
	"strings"

	"github.com/danielgtaylor/huma/v2"
	"github.com/google/uuid"

	"github.com/airlockpam/airlock/internal/api"
	"github.com/airlockpam/airlock/internal/audit"
	"github.com/airlockpam/airlock/internal/errs"
	"github.com/airlockpam/airlock/internal/project"
)

// CreateResource adds a resource to a project (project admins).
func (s *Service) CreateResource(ctx context.Context, projectID string, in ResourceInput) (*Resource, error) {
	const op = "pam.(*Service).CreateResource"
	proj, err := s.cfg.Projects.Authorize(ctx, projectID, project.RoleAdmin)
	if err != nil {
		return nil, err
	}
	if err := checkName(op, "body.name", "resource", in.Name); err != nil {
		return nil, err
	}
	r := &resourceRow{Resource: Resource{
		ID: uuid.Must(uuid.NewV7()).String(), ProjectID: proj.ID, Name: in.Name, Kind: in.Kind,
		Host: in.Host, Port: in.Port, Database: in.Database, ConnectionString: in.ConnectionString,
		SSLEnabled: boolOr(in.SSLEnabled, true), SSLRejectUnauthorized: boolOr(in.SSLRejectUnauthorized, true),
		SSLCAPEM: in.SSLCAPEM,
	}}
	if err := r.normalize(op); err != nil {
		return nil, err
	}
	if r.AllowAuth, err = normalizeAuthMethods(op, "body.allowAuth", r.Kind, in.AllowAuth); err != nil {
		return nil, err
	}
	if len(r.AllowAuth) > 0 {
		if p := api.PrincipalFrom(ctx); p == nil || !p.OrgAdmin {
			return nil, &errs.Error{Op: op, Code: errs.Forbidden, Field: "body.allowAuth", Msg: "only an organization admin may allow md5 or " +
				"cleartext password authentication: they send the password in a form the database (or anyone posing as it) can reuse"}
		}
	}
	if (in.RotationUsername == "") != (in.RotationPassword == "") {
		field := "body.rotationPassword"
		if in.RotationUsername == "" {
			field = "body.rotationUsername"
		}
		return nil, errs.InvalidField(op, field, "give both `rotationUsername` and `rotationPassword`, or neither")
	}
	if in.RotationUsername != "" {
		if err := s.setRotation(ctx, op, r, in.RotationUsername, in.RotationPassword); err != nil {
			return nil, err
		}
	}
	var allowProject bool
	if r.GatewayID, r.GatewayName, allowProject, err = s.resolveGateway(ctx, op, "body.gateway", proj.ID, in.Gateway); err != nil {
		return nil, err
	}
	if in.RotationUsername != "" {
		// The rotation account logs in before it is saved.
		if err := s.validate(ctx, op, &r.Resource, rotationAccountName, r.target("", in.RotationUsername, in.RotationPassword)); err != nil {
			return nil, err
		}
	}
	now := s.now()
	r.CreatedAt, r.UpdatedAt = now, now
	err = s.db.InTx(ctx, func(tx *sql.Tx) error {
		if allowProject {
			if err := s.cfg.Gateways.AllowProjectTx(ctx, tx, r.GatewayID, proj.ID); err != nil {
				return err
			}
		}
		if err := insertResource(ctx, tx, r); err != nil {
			return err
		}
		return audit.Record(ctx, tx, audit.By(ctx, audit.Entry{Action: "resource.create", TargetKind: "resource", TargetID: r.ID,
			ProjectID: proj.ID, Details: resourceDetails(&r.Resource)}))
	})
	if err != nil {
		return nil, errs.Wrap(op, errs.Unavailable, "creating the resource failed", err)
	}
	return &r.Resource, nil
}

// setRotation checks and seals a resource's rotation credentials.
func (s *Service) setRotation(ctx context.Context, op string, r *resourceRow, username, password string) error {
	if err := checkUsername(op, "body.rotationUsername", username); err != nil {
		return err
	}
	if err := checkPassword(op, "body.rotationPassword", password); err != nil {
		return err
	}
	sealed, err := s.cfg.Keyring.Seal(ctx, r.ProjectID, rotationAAD(r.ID), []byte(password))
	if err != nil {
		return errs.Wrap(op, errs.Internal, "sealing the rotation password failed", err)
	}
	r.RotationUsername, r.rotationSealed, r.HasRotationCredentials = username, sealed, true
	return nil
}

// ListResources returns a project's resources (project viewers).
func (s *Service) ListResources(ctx context.Context, projectID string) ([]Resource, error) {
	proj, err := s.cfg.Projects.Authorize(ctx, projectID, project.RoleViewer)
	if err != nil {
		return nil, err
	}
	rows, err := listResources(ctx, s.db, proj.ID)
	if err != nil {
		return nil, err
	}
	out := make([]Resource, len(rows))
	ptrs := make([]*Resource, len(rows))
	for i, r := range rows {
		out[i] = r.Resource
		ptrs[i] = &out[i]
	}
	s.fillGatewayNames(ctx, ptrs...)
	return out, nil
}

// GetResource returns a resource by name or id (project viewers).
func (s *Service) GetResource(ctx context.Context, projectID, ref string) (*Resource, error) {
	proj, err := s.cfg.Projects.Authorize(ctx, projectID, project.RoleViewer)
	if err != nil {
		return nil, err
	}
	r, err := resourceByRef(ctx, s.db, proj.ID, ref)
	if err != nil {
		return nil, err
	}
	s.fillGatewayNames(ctx, &r.Resource)
	return &r.Resource, nil
}

// endpointFields are the settings that decide where a resource's passwords
// go and how they are protected on the way.
var endpointFields = map[string]bool{"gateway": true, "host": true, "port": true, "database": true,
	"connectionString": true, "sslEnabled": true, "sslRejectUnauthorized": true, "sslCaPem": true, "allowAuth": true}

// UpdateResource changes a resource's settings (project admins).
//
// Passwords go only where they were validated: a change of the gateway,
// host, port, database, connection string or any TLS setting of a resource
// that has accounts (or rotation credentials) needs those credentials
// re-entered in the same request (in.Accounts, in.RotationPassword); each
// account's is validated against the new endpoint through the gateway, and
// nothing is saved unless all validate. An organization admin may instead
// keep the stored credentials; the audit event then lists the accounts
// that were not validated against the new endpoint.
func (s *Service) UpdateResource(ctx context.Context, projectID, ref string, in ResourceUpdate) (*Resource, error) {
	const op = "pam.(*Service).UpdateResource"
	proj, err := s.cfg.Projects.Authorize(ctx, projectID, project.RoleAdmin)
	if err != nil {
		return nil, err
	}
	p, err := api.MustPrincipal(ctx)
	if err != nil {
		return nil, err
	}
	r, err := resourceByRef(ctx, s.db, proj.ID, ref)
	if err != nil {
		return nil, err
	}
	var changed []string
	setStr := func(name string, dst *string, v *string) {
		if v != nil && *v != *dst {
			*dst = *v
			changed = append(changed, name)
		}
	}
	setBool := func(name string, dst *bool, v *bool) {
		if v != nil && *v != *dst {
			*dst = *v
			changed = append(changed, name)
		}
	}
	if in.Name != nil && *in.Name != r.Name {
		if err := checkName(op, "body.name", "resource", *in.Name); err != nil {
			return nil, err
		}
		if other, err := resourceByRef(ctx, s.db, proj.ID, *in.Name); err == nil && other.ID != r.ID {
			return nil, &errs.Error{Op: op, Code: errs.Conflict, Field: "body.name",
				Msg: "another resource of this project is named " + *in.Name + ": pick another name"}
		}
		r.Name = *in.Name
		changed = append(changed, "name")
	}
	setStr("host", &r.Host, in.Host)
	if in.Port != nil {
		if *in.Port < 1 || *in.Port > 65535 {
			return nil, errs.InvalidField(op, "body.port", "the port must be between 1 and 65535")
		}
		if *in.Port != r.Port {
			r.Port = *in.Port
			changed = append(changed, "port")
		}
	}
	setStr("database", &r.Database, in.Database)
	setStr("connectionString", &r.ConnectionString, in.ConnectionString)
	setBool("sslEnabled", &r.SSLEnabled, in.SSLEnabled)
	setBool("sslRejectUnauthorized", &r.SSLRejectUnauthorized, in.SSLRejectUnauthorized)
	setStr("sslCaPem", &r.SSLCAPEM, in.SSLCAPEM)
	if err := r.normalize(op); err != nil {
		return nil, err
	}
	if in.AllowAuth != nil {
		methods, err := normalizeAuthMethods(op, "body.allowAuth", r.Kind, *in.AllowAuth)
		if err != nil {
			return nil, err
		}
		if strings.Join(methods, ",") != strings.Join(r.AllowAuth, ",") {
			if !p.OrgAdmin {
				return nil, &errs.Error{Op: op, Code: errs.Forbidden, Field: "body.allowAuth",
					Msg: "only an organization admin may change which authentication methods besides SCRAM-SHA-256 the gateway uses"}
			}
			r.AllowAuth = methods
			changed = append(changed, "allowAuth")
		}
	}
	allowProject := false
	if in.Gateway != nil {
		id, _, allow, err := s.resolveGateway(ctx, op, "body.gateway", proj.ID, *in.Gateway)
		if err != nil {
			return nil, err
		}
		if id != r.GatewayID {
			r.GatewayID, allowProject = id, allow
			changed = append(changed, "gateway")
		}
	}
	endpointChanged := false
	for _, c := range changed {
		endpointChanged = endpointChanged || endpointFields[c]
	}
	rotationReentered := in.RotationPassword != nil && *in.RotationPassword != ""
	if err := s.updateRotation(ctx, op, r, in.RotationUsername, in.RotationPassword, &changed); err != nil {
		return nil, err
	}
	accounts, err := listAccounts(ctx, s.db, proj.ID, r.ID, nil)
	if err != nil {
		return nil, err
	}
	reentered, err := s.matchCredentials(ctx, op, proj.ID, r, accounts, in.Accounts)
	if err != nil {
		return nil, err
	}
	var stale []string // accounts kept without validation against the new endpoint
	if endpointChanged {
		for _, a := range accounts {
			if reentered[a.ID] == nil {
				stale = append(stale, a.Name)
			}
		}
		rotationStale := r.HasRotationCredentials && !rotationReentered
		if (len(stale) > 0 || rotationStale) && !p.OrgAdmin {
			return nil, s.credentialsNeeded(op, changed, stale, rotationStale)
		}
		if rotationStale {
			stale = append(stale, "(rotation credentials)")
		}
	}
	// Validate every re-entered credential against the endpoint as it will
	// be; one failure saves nothing.
	var updated []*accountRow
	for _, a := range accounts {
		c := reentered[a.ID]
		if c == nil {
			continue
		}
		username := a.Username
		if c.Username != "" {
			username = c.Username
		}
		if err := s.validate(ctx, op, &r.Resource, a.Name, r.target(a.ID, username, c.Password)); err != nil {
			return nil, err
		}
		sealed, err := s.cfg.Keyring.Seal(ctx, proj.ID, passwordAAD(a.ID), []byte(c.Password))
		if err != nil {
			return nil, errs.Wrap(op, errs.Internal, "sealing the password failed", err)
		}
		a.Username, a.passwordSealed = username, sealed
		updated = append(updated, a)
	}
	if len(updated) > 0 {
		changed = append(changed, "accountCredentials")
	}
	if rotationReentered {
		if err := s.validate(ctx, op, &r.Resource, rotationAccountName, r.target("", r.RotationUsername, *in.RotationPassword)); err != nil {
			return nil, err
		}
	}
	if slices.Contains(changed, "rotationUsername") {
		// A new username with the stored password: checked by a login too.
		pw, err := s.cfg.Keyring.Open(ctx, proj.ID, rotationAAD(r.ID), r.rotationSealed)
		if err != nil {
			return nil, errs.Wrap(op, errs.Internal, "opening the rotation account's password failed", err)
		}
		if err := s.validate(ctx, op, &r.Resource, rotationAccountName, r.target("", r.RotationUsername, string(pw))); err != nil {
			return nil, err
		}
	}
	if r.HasRotationCredentials && (rotationReentered || slices.Contains(changed, "rotationUsername")) {
		for _, a := range accounts {
			if a.Username == r.RotationUsername && a.rotationDays > 0 {
				return nil, errs.InvalidField(op, "body.rotationUsername", "account "+a.Name+" rotates its password and uses the database user "+
					a.Username+"; it cannot also be the rotation account: turn its rotation off first, or pick another rotation account")
			}
		}
	}
	if len(changed) == 0 {
		s.fillGatewayNames(ctx, &r.Resource)
		return &r.Resource, nil
	}
	now := s.now()
	r.UpdatedAt = now
	details := resourceDetails(&r.Resource)
	details["changed"] = changed
	details["endpoint"] = r.Endpoint()
	if len(stale) > 0 {
		details["credentialsNotRevalidated"] = stale
	}
	err = s.db.InTx(ctx, func(tx *sql.Tx) error {
		if allowProject {
			if err := s.cfg.Gateways.AllowProjectTx(ctx, tx, r.GatewayID, proj.ID); err != nil {
				return err
			}
		}
		if err := updateResource(ctx, tx, r); err != nil {
			return err
		}
		for _, a := range updated {
			a.UpdatedAt = now
			if err := updateAccount(ctx, tx, a); err != nil {
				return err
			}
			if err := audit.Record(ctx, tx, audit.By(ctx, audit.Entry{Action: "account.update", TargetKind: "account", TargetID: a.ID,
				ProjectID: proj.ID, Details: map[string]any{"name": a.Name, "resource": r.Name, "username": a.Username,
					"changed": []string{"password"}, "reason": "resource endpoint re-entered", "endpoint": r.Endpoint()}})); err != nil {
				return err
			}
		}
		return audit.Record(ctx, tx, audit.By(ctx, audit.Entry{Action: "resource.update", TargetKind: "resource", TargetID: r.ID,
			ProjectID: proj.ID, Details: details}))
	})
	if err != nil {
		return nil, errs.Wrap(op, errs.Unavailable, "updating the resource failed", err)
	}
	s.fillGatewayNames(ctx, &r.Resource)
	return &r.Resource, nil
}

// matchCredentials checks re-entered account credentials and returns them
// by account id. Each must name a distinct account of r.
func (s *Service) matchCredentials(ctx context.Context, op, projectID string, r *resourceRow, accounts []*accountRow,
	in []AccountCredentials) (map[string]*AccountCredentials, error) {
	out := map[string]*AccountCredentials{}
	for i := range in {
		c := &in[i]
		field := fmt.Sprintf("body.accounts[%d]", i)
		var found *accountRow
		for _, a := range accounts {
			if a.ID == c.Account || a.Name == c.Account {
				found = a
			}
		}
		if found == nil {
			return nil, errs.InvalidField(op, field+".account",
				"this names no account of the resource; `airlock accounts list --resource "+r.Name+"` shows them")
		}
		if out[found.ID] != nil {
			return nil, errs.InvalidField(op, field+".account", "account "+found.Name+" is given twice")
		}
		if c.Username != "" {
			if err := checkUsername(op, field+".username", c.Username); err != nil {
				return nil, err
			}
		}
		if err := checkPassword(op, field+".password", c.Password); err != nil {
			return nil, err
		}
		out[found.ID] = c
	}
	return out, nil
}

// credentialsNeeded is the refusal of an endpoint change that would send
// stored credentials to an endpoint they were not validated against.
func (s *Service) credentialsNeeded(op string, changed, stale []string, rotation bool) error {
	var moved []string
	for _, c := range changed {
		if endpointFields[c] {
			moved = append(moved, c)
		}
	}
	what := ""
	if len(stale) > 0 {
		what = "the passwords of accounts " + strings.Join(stale, ", ")
		if rotation {
			what += " and "
		}
	}
	if rotation {
		what += "the rotation password"
	}
	return &errs.Error{Op: op, Code: errs.Forbidden, Field: "body.accounts", Msg: "changing " + strings.Join(moved, ", ") +
		" of a resource with stored credentials sends them to a new endpoint: re-enter " + what +
		" in the same request (accounts: [{account, password}], rotationPassword; with the CLI, `airlock resources update ... --account-password-file ACCOUNT=FILE` for each), " +
		"which are validated against the new endpoint first, or ask an organization admin to make the change. Nothing was changed."}
}

// rotationAccountName names the rotation account in validation audit entries.
const rotationAccountName = "(rotation account)"

// updateRotation applies a change of rotation credentials: an empty
// username removes them; a new password replaces the stored one.
func (s *Service) updateRotation(ctx context.Context, op string, r *resourceRow, username, password *string, changed *[]string) error {
	if username == nil && password == nil {
		return nil
	}
	if username != nil && *username == "" {
		if password != nil && *password != "" {
			return errs.InvalidField(op, "body.rotationPassword", "a rotation password needs a `rotationUsername`")
		}
		if r.RotationUsername != "" || r.rotationSealed != nil {
			r.RotationUsername, r.rotationSealed, r.HasRotationCredentials = "", nil, false
			*changed = append(*changed, "rotationCredentials")
		}
		return nil
	}
	user := r.RotationUsername
	if username != nil {
		user = *username
	}
	if password == nil {
		if r.rotationSealed == nil {
			return errs.InvalidField(op, "body.rotationPassword", "give the rotation account's password (`rotationPassword`) with its username")
		}
		if err := checkUsername(op, "body.rotationUsername", user); err != nil {
			return err
		}
		if user != r.RotationUsername {
			r.RotationUsername = user
			*changed = append(*changed, "rotationUsername")
		}
		return nil
	}
	if user == "" {
		return errs.InvalidField(op, "body.rotationUsername", "a rotation password needs a `rotationUsername`")
	}
	if err := s.setRotation(ctx, op, r, user, *password); err != nil {
		return err
	}
	*changed = append(*changed, "rotationCredentials")
	return nil
}

// DeleteResource removes a resource and its accounts (project admins).
func (s *Service) DeleteResource(ctx context.Context, projectID, ref string) error {
	const op = "pam.(*Service).DeleteResource"
	proj, err := s.cfg.Projects.Authorize(ctx, projectID, project.RoleAdmin)
	if err != nil {
		return err
	}
	r, err := resourceByRef(ctx, s.db, proj.ID, ref)
	if err != nil {
		return err
	}
	err = s.db.InTx(ctx, func(tx *sql.Tx) error {
		n, err := deleteResource(ctx, tx, proj.ID, r.ID)
		if err != nil {
			return err
		}
		return audit.Record(ctx, tx, audit.By(ctx, audit.Entry{Action: "resource.delete", TargetKind: "resource", TargetID: r.ID,
			ProjectID: proj.ID, Details: map[string]any{"name": r.Name, "kind": r.Kind, "accountsDeleted": n}}))
	})
	if err != nil {
		return errs.Wrap(op, errs.Unavailable, "deleting the resource failed", err)
	}
	s.accessRevoked(ctx) // its live sessions end; their logs stay
	return nil
}

// resourceDetails describes a resource for the audit log, without secrets.
func resourceDetails(r *Resource) map[string]any {
	d := map[string]any{
		"name": r.Name, "kind": r.Kind, "gatewayId": r.GatewayID, "database": r.Database,
		"sslEnabled": r.SSLEnabled, "sslRejectUnauthorized": r.SSLRejectUnauthorized, "sslCustomCa": r.SSLCAPEM != "",
		"hasRotationCredentials": r.HasRotationCredentials, "allowAuth": r.AllowAuth,
	}
	if r.Kind == KindMongoDB {
		d["connectionString"] = r.ConnectionString
	} else {
		d["host"], d["port"] = r.Host, r.Port
	}
	if r.RotationUsername != "" {
		d["rotationUsername"] = r.RotationUsername
	}
	return d
}

func boolOr(p *bool, def bool) bool {
	if p == nil {
		return def
	}
	return *p
}

// ResourcePath selects one resource of a project.
type ResourcePath struct {
	project.ProjectPath
	Resource string `path:"resource" maxLength:"64" doc:"the resource's name or id"`
}

func (s *Service) registerResources(a huma.API) {
	tags := []string{"Resources"}
	base := "/api/v1/projects/{projectId}/resources"
	huma.Register(a, huma.Operation{
		OperationID: "create-resource", Method: http.MethodPost, Path: base, Tags: tags,
		Summary: "Add a PostgreSQL or MongoDB resource reached through a gateway (project admins)", Security: api.Secured,
		DefaultStatus: http.StatusCreated, Errors: []int{403, 404, 409, 422},
	}, func(ctx context.Context, in *struct {
		project.ProjectPath
		Body ResourceInput
	}) (*struct{ Body *Resource }, error) {
		r, err := s.CreateResource(ctx, in.ProjectID, in.Body)
		return &struct{ Body *Resource }{r}, api.Err(ctx, err)
	})
	huma.Register(a, huma.Operation{
		OperationID: "list-resources", Method: http.MethodGet, Path: base, Tags: tags,
		Summary: "List a project's resources", Security: api.Secured, Errors: []int{404},
	}, func(ctx context.Context, in *project.ProjectPath) (*struct{ Body []Resource }, error) {
		rs, err := s.ListResources(ctx, in.ProjectID)
		return &struct{ Body []Resource }{rs}, api.Err(ctx, err)
	})
	huma.Register(a, huma.Operation{
		OperationID: "get-resource", Method: http.MethodGet, Path: base + "/{resource}", Tags: tags,
		Summary: "Get a resource by name or id", Security: api.Secured, Errors: []int{404},
	}, func(ctx context.Context, in *ResourcePath) (*struct{ Body *Resource }, error) {
		r, err := s.GetResource(ctx, in.ProjectID, in.Resource)
		return &struct{ Body *Resource }{r}, api.Err(ctx, err)
	})
	huma.Register(a, huma.Operation{
		OperationID: "update-resource", Method: http.MethodPatch, Path: base + "/{resource}", Tags: tags,
		Summary: "Change a resource's name, connection settings, gateway or rotation credentials (project admins)", Security: api.Secured,
		Errors: []int{403, 404, 409, 422},
	}, func(ctx context.Context, in *struct {
		ResourcePath
		Body ResourceUpdate
	}) (*struct{ Body *Resource }, error) {
		r, err := s.UpdateResource(ctx, in.ProjectID, in.Resource, in.Body)
		return &struct{ Body *Resource }{r}, api.Err(ctx, err)
	})
	huma.Register(a, huma.Operation{
		OperationID: "delete-resource", Method: http.MethodDelete, Path: base + "/{resource}", Tags: tags,
		Summary: "Delete a resource and its accounts (project admins)", Security: api.Secured,
		DefaultStatus: http.StatusNoContent, Errors: []int{403, 404},
	}, func(ctx context.Context, in *ResourcePath) (*struct{}, error) {
		return nil, api.Err(ctx, s.DeleteResource(ctx, in.ProjectID, in.Resource))
	})
}
