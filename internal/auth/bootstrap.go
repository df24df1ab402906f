package auth

import (
	"context"
	"database/sql"
	"strings"

	"github.com/google/uuid"

	"github.com/airlockpam/airlock/internal/audit"
	"github.com/airlockpam/airlock/internal/errs"
	"github.com/airlockpam/airlock/internal/store"
)

// Bootstrap creates the organization and its first admin when the store has
// no user yet. It returns false, and changes nothing, when a user exists.
func (s *Service) Bootstrap(ctx context.Context, email, password string) (bool, error) {
	const op = "auth.(*Service).Bootstrap"
	email = normalizeEmail(email)
	if msg := checkEmail(email); msg != "" {
		return false, errs.E(op, errs.Invalid, "AIRLOCK_BOOTSTRAP_EMAIL: "+msg)
	}
	if msg := CheckPasswordPolicy(password); msg != "" {
		return false, errs.E(op, errs.Invalid, "AIRLOCK_BOOTSTRAP_PASSWORD: "+msg)
	}
	hash, err := HashPassword(password)
	if err != nil {
		return false, errs.Wrap(op, errs.Internal, "hashing the password failed", err)
	}
	created := false
	err = s.cfg.DB.InTx(ctx, func(tx *sql.Tx) error {
		created = false
		var n int
		if err := tx.QueryRowContext(ctx, `SELECT COUNT(*) FROM users`).Scan(&n); err != nil {
			return err
		}
		if n > 0 {
			return nil
		}
		now := store.Micros(s.cfg.Now())
		orgID := uuid.Must(uuid.NewV7()).String()
		if _, err := tx.ExecContext(ctx, `INSERT INTO organizations (id, name, created_at) VALUES ($1, $2, $3)`, orgID, "default", now); err != nil {
			return err
		}
		userID := uuid.Must(uuid.NewV7()).String()
		if _, err := tx.ExecContext(ctx, `INSERT INTO users (id, org_id, email, name, password_hash, org_admin, created_at, updated_at)
			VALUES ($1, $2, $3, $4, $5, TRUE, $6, $6)`, userID, orgID, email, "", hash, now); err != nil {
			return err
		}
		created = true
		return audit.Record(ctx, tx, audit.Entry{OrgID: orgID, ActorKind: "system", ActorID: "bootstrap", ActorName: "bootstrap",
			Action: "user.create", Outcome: audit.Success, TargetKind: "user", TargetID: userID,
			Details: map[string]any{"email": email, "orgAdmin": true, "bootstrap": true}})
	})
	if err != nil {
		return false, errs.Wrap(op, errs.Unavailable, "creating the first admin failed", err)
	}
	return created, nil
}

// HasUsers reports whether any user exists.
func (s *Service) HasUsers(ctx context.Context) (bool, error) {
	var n int
	err := s.cfg.DB.QueryRowContext(ctx, `SELECT COUNT(*) FROM users`).Scan(&n)
	return n > 0, err
}

func normalizeEmail(e string) string { return strings.ToLower(strings.TrimSpace(e)) }

func checkEmail(e string) string {
	at := strings.LastIndexByte(e, '@')
	if e == "" || at < 1 || at == len(e)-1 || strings.ContainsAny(e, " \t\r\n") || len(e) > 254 {
		return "not a valid email address (expected name@example.com)"
	}
	return ""
}

// firstOrg returns the organization that failed logins for unknown accounts
// are recorded under. Airlock serves one organization per installation; the
// org columns are the seam for more.
func (s *Service) firstOrg(ctx context.Context) (string, error) {
	var id string
	err := s.cfg.DB.QueryRowContext(ctx, `SELECT id FROM organizations ORDER BY created_at, id LIMIT 1`).Scan(&id)
	return id, err
}
