package pam

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/google/uuid"

	"github.com/airlockpam/airlock/internal/errs"
	"github.com/airlockpam/airlock/internal/store"
)

const accountColumns = `a.id, a.project_id, a.resource_id, r.name, a.name, a.username, a.password_enc, a.description,
	a.require_mfa, a.created_at, a.updated_at, a.rotation_interval_days, a.rotation_status, a.rotation_error,
	a.last_rotated_at, a.pending_password_enc, a.pending_attempt`

const accountFrom = ` FROM accounts a JOIN resources r ON r.id = a.resource_id `

func scanAccount(row interface{ Scan(...any) error }) (*accountRow, error) {
	var a accountRow
	var created, updated int64
	if err := row.Scan(&a.ID, &a.projectID, &a.ResourceID, &a.ResourceName, &a.Name, &a.Username, &a.passwordSealed,
		&a.Description, &a.RequireMFA, &created, &updated, &a.rotationDays, &a.rotationStatus, &a.rotationError,
		&a.lastRotated, &a.pendingSealed, &a.pendingAttempt); err != nil {
		return nil, err
	}
	a.CreatedAt, a.UpdatedAt = store.Time(created), store.Time(updated)
	a.storedSealed = a.passwordSealed
	a.Metadata = map[string]string{}
	a.showRotation(time.Time{})
	return &a, nil
}

// accountByRef finds an account of a project by id (a UUID) or by name. A
// name is looked up on resourceID when it is set; without it the name must
// be unique in the project.
func accountByRef(ctx context.Context, q store.Querier, projectID, resourceID, ref string) (*accountRow, error) {
	const op = "pam.accountByRef"
	if ref == "" {
		return nil, errs.E(op, errs.Invalid, "no account given: pass its name or id")
	}
	where, args := "a.project_id = $1", []any{projectID}
	if _, err := uuid.Parse(ref); err == nil {
		where += " AND a.id = $2"
	} else {
		where += " AND a.name = $2"
	}
	args = append(args, ref)
	if resourceID != "" {
		where += " AND a.resource_id = $3"
		args = append(args, resourceID)
	}
	rows, err := q.QueryContext(ctx, `SELECT `+accountColumns+accountFrom+`WHERE `+where+` ORDER BY r.name`, args...)
	if err != nil {
		return nil, errs.Wrap(op, errs.Unavailable, "reading the account failed", err)
	}
	var found []*accountRow
	for rows.Next() {
		a, err := scanAccount(rows)
		if err != nil {
			rows.Close()
			return nil, errs.Wrap(op, errs.Unavailable, "reading the account failed", err)
		}
		found = append(found, a)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, errs.Wrap(op, errs.Unavailable, "reading the account failed", err)
	}
	switch len(found) {
	case 0:
		if resourceID != "" {
			return nil, errs.E(op, errs.NotFound, "no account of that name or id on this resource")
		}
		return nil, errs.E(op, errs.NotFound, "no account of that name or id in this project; `airlock accounts list` shows them")
	case 1:
	default:
		var names []string
		for _, a := range found {
			names = append(names, a.ResourceName)
		}
		return nil, errs.InvalidField(op, "query.resource", fmt.Sprintf(
			"several resources have an account of that name (%s): say which resource", strings.Join(names, ", ")))
	}
	a := found[0]
	if err := loadMetadata(ctx, q, []*accountRow{a}); err != nil {
		return nil, err
	}
	return a, nil
}

// listAccounts returns the accounts of a project matching every filter.
func listAccounts(ctx context.Context, q store.Querier, projectID, resourceID string, md []MetadataFilter) ([]*accountRow, error) {
	const op = "pam.listAccounts"
	args := []any{projectID}
	arg := func(v any) string {
		args = append(args, v)
		return "$" + strconv.Itoa(len(args))
	}
	where := []string{"a.project_id = $1"}
	if resourceID != "" {
		where = append(where, "a.resource_id = "+arg(resourceID))
	}
	for _, f := range md {
		where = append(where, "EXISTS (SELECT 1 FROM account_metadata m WHERE m.account_id = a.id AND m.key = "+
			arg(f.Key)+" AND m.value = "+arg(f.Value)+")")
	}
	rows, err := q.QueryContext(ctx, `SELECT `+accountColumns+accountFrom+`WHERE `+strings.Join(where, " AND ")+` ORDER BY r.name, a.name`, args...)
	if err != nil {
		return nil, errs.Wrap(op, errs.Unavailable, "listing accounts failed", err)
	}
	var out []*accountRow
	for rows.Next() {
		a, err := scanAccount(rows)
		if err != nil {
			rows.Close()
			return nil, errs.Wrap(op, errs.Unavailable, "listing accounts failed", err)
		}
		out = append(out, a)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, errs.Wrap(op, errs.Unavailable, "listing accounts failed", err)
	}
	if err := loadMetadata(ctx, q, out); err != nil {
		return nil, err
	}
	return out, nil
}

// loadMetadata fills the metadata of accounts of one project.
func loadMetadata(ctx context.Context, q store.Querier, accounts []*accountRow) error {
	const op = "pam.loadMetadata"
	if len(accounts) == 0 {
		return nil
	}
	byID := make(map[string]*accountRow, len(accounts))
	for _, a := range accounts {
		byID[a.ID] = a
	}
	var rows *sql.Rows
	var err error
	if len(accounts) == 1 {
		rows, err = q.QueryContext(ctx, `SELECT account_id, key, value FROM account_metadata WHERE account_id = $1`, accounts[0].ID)
	} else {
		rows, err = q.QueryContext(ctx, `SELECT m.account_id, m.key, m.value FROM account_metadata m
			JOIN accounts a ON a.id = m.account_id WHERE a.project_id = $1`, accounts[0].projectID)
	}
	if err != nil {
		return errs.Wrap(op, errs.Unavailable, "reading account metadata failed", err)
	}
	defer rows.Close()
	for rows.Next() {
		var id, k, v string
		if err := rows.Scan(&id, &k, &v); err != nil {
			return errs.Wrap(op, errs.Unavailable, "reading account metadata failed", err)
		}
		if a, ok := byID[id]; ok {
			a.Metadata[k] = v
		}
	}
	if err := rows.Err(); err != nil {
		return errs.Wrap(op, errs.Unavailable, "reading account metadata failed", err)
	}
	return nil
}

// insertAccount stores a new account with its metadata. A duplicate name on
// the resource is a Conflict.
func insertAccount(ctx context.Context, q store.Querier, a *accountRow) error {
	const op = "pam.insertAccount"
	_, err := q.ExecContext(ctx, `INSERT INTO accounts (id, project_id, resource_id, name, username, password_enc, description,
		require_mfa, created_at, updated_at, rotation_interval_days) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)`,
		a.ID, a.projectID, a.ResourceID, a.Name, a.Username, a.passwordSealed, a.Description, a.RequireMFA,
		store.Micros(a.CreatedAt), store.Micros(a.UpdatedAt), a.rotationDays)
	if store.IsUniqueViolation(err) {
		return &errs.Error{Op: op, Code: errs.Conflict, Field: "body.name", Err: err,
			Msg: fmt.Sprintf("resource %s already has an account of that name", a.ResourceName)}
	}
	if err != nil {
		return errs.Wrap(op, errs.Unavailable, "saving the account failed", err)
	}
	return replaceMetadata(ctx, q, a.ID, a.Metadata)
}

// updateAccount writes the fields of an existing account (not its metadata).
func updateAccount(ctx context.Context, q store.Querier, a *accountRow) error {
	const op = "pam.updateAccount"
	// Only over the password as it was read, with no rotation begun since:
	// a rotation that promoted its new password meanwhile must not have it
	// written back with the old one (the database would no longer take it).
	res, err := q.ExecContext(ctx, `UPDATE accounts SET username = $1, password_enc = $2, description = $3, require_mfa = $4,
		updated_at = $5, rotation_interval_days = $6 WHERE id = $7 AND project_id = $8 AND password_enc = $9 AND pending_attempt = $10`,
		a.Username, a.passwordSealed, a.Description, a.RequireMFA, store.Micros(a.UpdatedAt), a.rotationDays, a.ID, a.projectID,
		a.storedSealed, a.pendingAttempt)
	if err != nil {
		return errs.Wrap(op, errs.Unavailable, "saving the account failed", err)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		var one int
		if err := q.QueryRowContext(ctx, `SELECT 1 FROM accounts WHERE id = $1 AND project_id = $2`, a.ID, a.projectID).Scan(&one); err == nil {
			return errs.E(op, errs.Conflict, "account "+a.Name+"'s password was rotated while this change was made; nothing was changed: try again")
		}
		return errs.E(op, errs.NotFound, "the account no longer exists")
	}
	a.storedSealed = a.passwordSealed
	return nil
}

// replaceMetadata makes m the whole metadata of an account.
func replaceMetadata(ctx context.Context, q store.Querier, accountID string, m map[string]string) error {
	const op = "pam.replaceMetadata"
	if _, err := q.ExecContext(ctx, `DELETE FROM account_metadata WHERE account_id = $1`, accountID); err != nil {
		return errs.Wrap(op, errs.Unavailable, "saving the account metadata failed", err)
	}
	for _, k := range sortedKeys(m) {
		if _, err := q.ExecContext(ctx, `INSERT INTO account_metadata (account_id, key, value) VALUES ($1, $2, $3)`, accountID, k, m[k]); err != nil {
			return errs.Wrap(op, errs.Unavailable, "saving the account metadata failed", err)
		}
	}
	return nil
}

func deleteAccount(ctx context.Context, q store.Querier, projectID, id, pendingAttempt string) error {
	const op = "pam.deleteAccount"
	// Only if no rotation stored a new pending password since the account
	// was read: a rotation that started in between owns it now.
	res, err := q.ExecContext(ctx, `DELETE FROM accounts WHERE id = $1 AND project_id = $2 AND pending_attempt = $3`, id, projectID, pendingAttempt)
	if err != nil {
		return errs.Wrap(op, errs.Unavailable, "deleting the account failed", err)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		var one int
		if err := q.QueryRowContext(ctx, `SELECT 1 FROM accounts WHERE id = $1 AND project_id = $2`, id, projectID).Scan(&one); err == nil {
			return errs.E(op, errs.Conflict, "the account's password is being rotated right now; delete it once the rotation has finished "+
				"(`airlock accounts get` shows its status). Nothing was changed.")
		}
		return errs.E(op, errs.NotFound, "the account no longer exists")
	}
	return nil
}

// accountByID finds an account by id alone, in any project (jobs).
func accountByID(ctx context.Context, q store.Querier, id string) (*accountRow, error) {
	const op = "pam.accountByID"
	a, err := scanAccount(q.QueryRowContext(ctx, `SELECT `+accountColumns+accountFrom+`WHERE a.id = $1`, id))
	if errors.Is(err, sql.ErrNoRows) {
		return nil, errs.E(op, errs.NotFound, "the account no longer exists")
	}
	if err != nil {
		return nil, errs.Wrap(op, errs.Unavailable, "reading the account failed", err)
	}
	if err := loadMetadata(ctx, q, []*accountRow{a}); err != nil {
		return nil, err
	}
	return a, nil
}
