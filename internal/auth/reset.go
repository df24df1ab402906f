package auth

import (
	"context"
	"database/sql"

	"github.com/airlockpam/airlock/internal/api"
	"github.com/airlockpam/airlock/internal/audit"
	"github.com/airlockpam/airlock/internal/errs"
	"github.com/airlockpam/airlock/internal/store"
)

// Reset is what ResetPassword did.
type Reset struct {
	User User
	// LoginsRevoked is how many of the user's logins (token families that
	// could still be refreshed) were revoked.
	LoginsRevoked int
}

// ResetPassword sets a new password for the user with email, as an
// operator with access to the store (not through the API: no caller is
// checked, so only a command run against the store itself may call it,
// such as `airlock admin reset-password`). In one transaction it replaces
// the password hash, clears a lockout after failed logins, revokes every
// token of the user (every login, on every machine; the sessions started
// under them end at the session service's next check: at once on a
// running server, at the next start otherwise) and records
// user.reset_password in the audit log, at the end of its hash chain, with
// operator as the actor's name. A disabled user stays disabled. The
// password never appears in an error or the audit log.
func (s *Service) ResetPassword(ctx context.Context, email, password, operator string) (Reset, error) {
	const op = "auth.(*Service).ResetPassword"
	email = normalizeEmail(email)
	if msg := checkEmail(email); msg != "" {
		return Reset{}, errs.InvalidField(op, "email", msg)
	}
	if msg := CheckPasswordPolicy(password); msg != "" {
		return Reset{}, errs.InvalidField(op, "password", "the new password is refused: "+msg)
	}
	hash, err := HashPassword(password)
	if err != nil {
		return Reset{}, errs.Wrap(op, errs.Internal, "hashing the password failed", err)
	}
	var out Reset
	err = s.cfg.DB.InTx(ctx, func(tx *sql.Tx) error {
		u, err := scanUser(tx.QueryRowContext(ctx, `SELECT `+userColumns+` FROM users WHERE email = $1`, email))
		if err != nil {
			return errs.Wrap(op, errs.Unavailable, "reading the user failed", err)
		}
		if u == nil {
			return errs.E(op, errs.NotFound, "no user has this email in this store")
		}
		now := store.Micros(s.cfg.Now())
		if err := tx.QueryRowContext(ctx, `SELECT COUNT(DISTINCT family_id) FROM auth_tokens
			WHERE subject_kind = $1 AND subject_id = $2 AND kind = 'refresh' AND revoked_at = 0 AND expires_at > $3`,
			api.SubjectUser, u.id, now).Scan(&out.LoginsRevoked); err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, `UPDATE users SET password_hash = $1, failed_logins = 0, locked_until = 0, updated_at = $2
			WHERE id = $3`, hash, now, u.id); err != nil {
			return err
		}
		if err := s.revokeSubject(ctx, tx, api.SubjectUser, u.id); err != nil {
			return err
		}
		u.lockedUntil = 0
		out.User = u.public(s.cfg.Now())
		return audit.Record(ctx, tx, audit.Entry{OrgID: u.orgID, ActorKind: "system", ActorID: "operator", ActorName: operator,
			Action: "user.reset_password", Outcome: audit.Success, TargetKind: api.SubjectUser, TargetID: u.id,
			Details: map[string]any{"email": u.email, "loginsRevoked": out.LoginsRevoked, "offline": true}})
	})
	if err != nil {
		return Reset{}, errs.Wrap(op, errs.Unavailable, "resetting the password failed", err)
	}
	s.accessRevoked(ctx)
	return out, nil
}
