package pam

import (
	"context"
	"database/sql"
	"errors"
	"strings"

	"github.com/google/uuid"

	"github.com/airlockpam/airlock/internal/errs"
	"github.com/airlockpam/airlock/internal/store"
)

const resourceColumns = `id, project_id, name, kind, gateway_id, host, port, database_name, connection_string,
	ssl_enabled, ssl_reject_unauthorized, ssl_ca_pem, rotation_username, rotation_password_enc, created_at, updated_at, auth_methods`

func scanResource(row interface{ Scan(...any) error }) (*resourceRow, error) {
	var r resourceRow
	var created, updated int64
	var methods string
	if err := row.Scan(&r.ID, &r.ProjectID, &r.Name, &r.Kind, &r.GatewayID, &r.Host, &r.Port, &r.Database, &r.ConnectionString,
		&r.SSLEnabled, &r.SSLRejectUnauthorized, &r.SSLCAPEM, &r.RotationUsername, &r.rotationSealed, &created, &updated, &methods); err != nil {
		return nil, err
	}
	r.AllowAuth = []string{}
	if methods != "" {
		r.AllowAuth = strings.Split(methods, ",")
	}
	if len(r.rotationSealed) == 0 {
		r.rotationSealed = nil
	}
	r.HasRotationCredentials = r.RotationUsername != "" && r.rotationSealed != nil
	r.CreatedAt, r.UpdatedAt = store.Time(created), store.Time(updated)
	return &r, nil
}

// resourceByRef finds a resource of a project by id (a UUID) or by name.
func resourceByRef(ctx context.Context, q store.Querier, projectID, ref string) (*resourceRow, error) {
	const op = "pam.resourceByRef"
	if ref == "" {
		return nil, errs.E(op, errs.Invalid, "no resource given: pass its name or id")
	}
	col := "name"
	if _, err := uuid.Parse(ref); err == nil {
		col = "id"
	}
	r, err := scanResource(q.QueryRowContext(ctx, `SELECT `+resourceColumns+` FROM resources WHERE project_id = $1 AND `+col+` = $2`, projectID, ref))
	if errors.Is(err, sql.ErrNoRows) {
		return nil, errs.E(op, errs.NotFound, "no resource of that name or id in this project; `airlock resources list` shows them")
	}
	if err != nil {
		return nil, errs.Wrap(op, errs.Unavailable, "reading the resource failed", err)
	}
	return r, nil
}

func listResources(ctx context.Context, q store.Querier, projectID string) ([]*resourceRow, error) {
	const op = "pam.listResources"
	rows, err := q.QueryContext(ctx, `SELECT `+resourceColumns+` FROM resources WHERE project_id = $1 ORDER BY name`, projectID)
	if err != nil {
		return nil, errs.Wrap(op, errs.Unavailable, "listing resources failed", err)
	}
	defer rows.Close()
	var out []*resourceRow
	for rows.Next() {
		r, err := scanResource(rows)
		if err != nil {
			return nil, errs.Wrap(op, errs.Unavailable, "listing resources failed", err)
		}
		out = append(out, r)
	}
	if err := rows.Err(); err != nil {
		return nil, errs.Wrap(op, errs.Unavailable, "listing resources failed", err)
	}
	return out, nil
}

// insertResource stores a new resource. A duplicate name is a Conflict.
func insertResource(ctx context.Context, q store.Querier, r *resourceRow) error {
	const op = "pam.insertResource"
	_, err := q.ExecContext(ctx, `INSERT INTO resources (`+resourceColumns+`)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17)`,
		r.ID, r.ProjectID, r.Name, r.Kind, r.GatewayID, r.Host, r.Port, r.Database, r.ConnectionString,
		r.SSLEnabled, r.SSLRejectUnauthorized, r.SSLCAPEM, r.RotationUsername, r.rotationSealed,
		store.Micros(r.CreatedAt), store.Micros(r.UpdatedAt), strings.Join(r.AllowAuth, ","))
	if store.IsUniqueViolation(err) {
		return &errs.Error{Op: op, Code: errs.Conflict, Field: "body.name", Err: err,
			Msg: "a resource of that name already exists in this project"}
	}
	if err != nil {
		return errs.Wrap(op, errs.Unavailable, "saving the resource failed", err)
	}
	return nil
}

// updateResource writes every setting of an existing resource.
func updateResource(ctx context.Context, q store.Querier, r *resourceRow) error {
	const op = "pam.updateResource"
	res, err := q.ExecContext(ctx, `UPDATE resources SET gateway_id = $1, host = $2, port = $3, database_name = $4,
		connection_string = $5, ssl_enabled = $6, ssl_reject_unauthorized = $7, ssl_ca_pem = $8,
		rotation_username = $9, rotation_password_enc = $10, updated_at = $11, auth_methods = $14, name = $15
		WHERE id = $12 AND project_id = $13`,
		r.GatewayID, r.Host, r.Port, r.Database, r.ConnectionString, r.SSLEnabled, r.SSLRejectUnauthorized, r.SSLCAPEM,
		r.RotationUsername, r.rotationSealed, store.Micros(r.UpdatedAt), r.ID, r.ProjectID, strings.Join(r.AllowAuth, ","), r.Name)
	if store.IsUniqueViolation(err) {
		return &errs.Error{Op: op, Code: errs.Conflict, Field: "body.name", Err: err,
			Msg: "another resource of this project is named " + r.Name + ": pick another name"}
	}
	if err != nil {
		return errs.Wrap(op, errs.Unavailable, "saving the resource failed", err)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return errs.E(op, errs.NotFound, "the resource no longer exists")
	}
	return nil
}

// deleteResource removes a resource with its accounts and returns how many
// accounts went with it.
func deleteResource(ctx context.Context, q store.Querier, projectID, id string) (int, error) {
	const op = "pam.deleteResource"
	var n int
	if err := q.QueryRowContext(ctx, `SELECT COUNT(*) FROM accounts WHERE resource_id = $1`, id).Scan(&n); err != nil {
		return 0, errs.Wrap(op, errs.Unavailable, "deleting the resource failed", err)
	}
	res, err := q.ExecContext(ctx, `DELETE FROM resources WHERE id = $1 AND project_id = $2`, id, projectID)
	if err != nil {
		return 0, errs.Wrap(op, errs.Unavailable, "deleting the resource failed", err)
	}
	if k, _ := res.RowsAffected(); k == 0 {
		return 0, errs.E(op, errs.NotFound, "the resource no longer exists")
	}
	return n, nil
}
