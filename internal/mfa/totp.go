package mfa

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"database/sql"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/pquerna/otp"
	"github.com/pquerna/otp/totp"

	"github.com/airlockpam/airlock/internal/api"
	"github.com/airlockpam/airlock/internal/audit"
	"github.com/airlockpam/airlock/internal/errs"
	"github.com/airlockpam/airlock/internal/store"
)

const (
	totpPeriod        = 30 // seconds per step
	recoveryCodeCount = 10
	issuer            = "Airlock"
)

var totpOpts = totp.ValidateOpts{Period: totpPeriod, Digits: otp.DigitsSix, Algorithm: otp.AlgorithmSHA1}

// TOTPEnrollment is a TOTP secret waiting for its first code.
type TOTPEnrollment struct {
	Secret string `json:"secret" doc:"base32 secret, for typing into an authenticator app"`
	URI    string `json:"uri" doc:"otpauth:// URI, for a QR code"`
}

// TOTPConfirmed is the answer to a confirmed enrollment.
type TOTPConfirmed struct {
	Method        string   `json:"method"`
	RecoveryCodes []string `json:"recoveryCodes,omitempty" doc:"shown once, at the first enrollment: each works once in place of a code"`
}

func secretAAD(userID, methodID string) string { return "mfa-totp|" + userID + "|" + methodID }

// EnrollTOTP makes a new, unconfirmed TOTP secret for the caller. A
// confirmed TOTP must be disabled first.
func (s *Service) EnrollTOTP(ctx context.Context) (*TOTPEnrollment, error) {
	const op = "mfa.(*Service).EnrollTOTP"
	p, err := user(ctx, op)
	if err != nil {
		return nil, err
	}
	key, err := totp.Generate(totp.GenerateOpts{Issuer: issuer, AccountName: p.Name, Period: totpPeriod,
		Digits: otp.DigitsSix, Algorithm: otp.AlgorithmSHA1, SecretSize: 20})
	if err != nil {
		return nil, errs.Wrap(op, errs.Internal, "making a TOTP secret failed", err)
	}
	id := uuid.Must(uuid.NewV7()).String()
	sealed, err := s.cfg.Keyring.SealSystem(secretAAD(p.ID, id), []byte(key.Secret()))
	if err != nil {
		return nil, errs.Wrap(op, errs.Internal, "sealing the TOTP secret failed", err)
	}
	err = s.cfg.DB.InTx(ctx, func(tx *sql.Tx) error {
		var confirmed bool
		err := tx.QueryRowContext(ctx, `SELECT confirmed FROM mfa_methods WHERE user_id = $1 AND kind = $2`, p.ID, MethodTOTP).Scan(&confirmed)
		switch {
		case err == nil && confirmed:
			return errs.E(op, errs.Conflict, "TOTP is already enrolled; to enroll a new authenticator, first run `airlock mfa disable totp`")
		case err != nil && !notFound(err):
			return err
		}
		if _, err := tx.ExecContext(ctx, `DELETE FROM mfa_methods WHERE user_id = $1 AND kind = $2`, p.ID, MethodTOTP); err != nil {
			return err
		}
		_, err = tx.ExecContext(ctx, `INSERT INTO mfa_methods (id, user_id, kind, secret_enc, confirmed, last_step, created_at)
			VALUES ($1, $2, $3, $4, FALSE, 0, $5)`, id, p.ID, MethodTOTP, sealed, store.Micros(s.cfg.Now()))
		return err
	})
	if err != nil {
		return nil, errs.Wrap(op, errs.Unavailable, "saving the TOTP secret failed", err)
	}
	return &TOTPEnrollment{Secret: key.Secret(), URI: key.URL()}, nil
}

// ConfirmTOTP turns the caller's pending TOTP on when code matches it. The
// first method also makes ten recovery codes, returned once.
func (s *Service) ConfirmTOTP(ctx context.Context, code string) (*TOTPConfirmed, error) {
	const op = "mfa.(*Service).ConfirmTOTP"
	p, err := user(ctx, op)
	if err != nil {
		return nil, err
	}
	if err := s.checkLocked(ctx, op, p.ID); err != nil {
		return nil, err
	}
	code = normalizeCode(code)
	if !isDigits(code, 6) {
		return nil, errs.InvalidField(op, "body.code", "a TOTP code is 6 digits")
	}
	out := &TOTPConfirmed{Method: MethodTOTP}
	var wrong, none bool
	err = s.cfg.DB.InTx(ctx, func(tx *sql.Tx) error {
		wrong, none, out.RecoveryCodes = false, false, nil
		var id string
		var sealed []byte
		err := tx.QueryRowContext(ctx, `SELECT id, secret_enc FROM mfa_methods WHERE user_id = $1 AND kind = $2 AND NOT confirmed`,
			p.ID, MethodTOTP).Scan(&id, &sealed)
		if notFound(err) {
			none = true
			return nil
		}
		if err != nil {
			return err
		}
		secret, err := s.cfg.Keyring.OpenSystem(secretAAD(p.ID, id), sealed)
		if err != nil {
			return err
		}
		step, ok := matchTOTP(string(secret), code, s.cfg.Now(), 0)
		if !ok {
			wrong = true
			return nil
		}
		if _, err := tx.ExecContext(ctx, `UPDATE mfa_methods SET confirmed = TRUE, last_step = $1 WHERE id = $2`, step, id); err != nil {
			return err
		}
		var codes int
		if err := tx.QueryRowContext(ctx, `SELECT COUNT(*) FROM mfa_recovery_codes WHERE user_id = $1`, p.ID).Scan(&codes); err != nil {
			return err
		}
		if codes == 0 {
			if out.RecoveryCodes, err = s.insertRecoveryCodes(ctx, tx, p.ID); err != nil {
				return err
			}
		}
		return audit.Record(ctx, tx, audit.By(ctx, audit.Entry{Action: "mfa.enroll", TargetKind: api.SubjectUser, TargetID: p.ID,
			Details: map[string]any{"method": MethodTOTP, "recoveryCodesMade": len(out.RecoveryCodes)}}))
	})
	if err != nil {
		return nil, errs.Wrap(op, errs.Unavailable, "confirming TOTP failed", err)
	}
	if none {
		return nil, errs.E(op, errs.NotFound, "no TOTP enrollment is waiting for a code: run `airlock mfa enroll totp` first")
	}
	if wrong {
		if err := s.recordFailure(ctx, p, MethodTOTP, "mfa.enroll", ""); err != nil {
			return nil, err
		}
		return nil, errs.InvalidField(op, "body.code", "the code does not match: check the authenticator app's clock and enter the code it shows now")
	}
	return out, nil
}

// matchTOTP returns the time step code belongs to, for the step of now and
// one step either side, when that step is after lastStep.
func matchTOTP(secret, code string, now time.Time, lastStep int64) (int64, bool) {
	cur := now.Unix() / totpPeriod
	for _, d := range []int64{0, -1, 1} {
		step := cur + d
		if step <= lastStep {
			continue
		}
		want, err := totp.GenerateCodeCustom(secret, time.Unix(step*totpPeriod, 0), totpOpts)
		if err != nil {
			return 0, false
		}
		if subtle.ConstantTimeCompare([]byte(want), []byte(code)) == 1 {
			return step, true
		}
	}
	return 0, false
}

// recoveryAlphabet has no letters that read alike (0/o, 1/l).
const recoveryAlphabet = "23456789abcdefghjkmnpqrstuvwxyz"

func newRecoveryCode() string {
	b := make([]byte, 10)
	_, _ = rand.Read(b)
	out := make([]byte, 0, 11)
	for i, c := range b {
		if i == 5 {
			out = append(out, '-')
		}
		out = append(out, recoveryAlphabet[int(c)%len(recoveryAlphabet)])
	}
	return string(out)
}

// hashRecoveryCode is the HMAC of a recovery code under a key derived from
// the root key.
func (s *Service) hashRecoveryCode(code string) []byte {
	m := hmac.New(sha256.New, s.recoveryKey)
	m.Write([]byte("airlock/mfa-recovery|" + strings.ReplaceAll(strings.ToLower(code), "-", "")))
	return m.Sum(nil)
}

// legacyRecoveryHash is how codes were stored before they were keyed
// (plain SHA-256); such codes still work until used or replaced.
func legacyRecoveryHash(code string) []byte {
	h := sha256.Sum256([]byte("airlock/mfa-recovery|" + strings.ReplaceAll(strings.ToLower(code), "-", "")))
	return h[:]
}

func (s *Service) insertRecoveryCodes(ctx context.Context, tx *sql.Tx, userID string) ([]string, error) {
	codes := make([]string, 0, recoveryCodeCount)
	for len(codes) < recoveryCodeCount {
		c := newRecoveryCode()
		if _, err := tx.ExecContext(ctx, `INSERT INTO mfa_recovery_codes (user_id, code_hash, used_at) VALUES ($1, $2, 0)`,
			userID, s.hashRecoveryCode(c)); err != nil {
			if store.IsUniqueViolation(err) {
				continue
			}
			return nil, err
		}
		codes = append(codes, c)
	}
	return codes, nil
}

func normalizeCode(code string) string { return strings.TrimSpace(strings.ReplaceAll(code, " ", "")) }

func isDigits(s string, n int) bool {
	if len(s) != n {
		return false
	}
	for _, c := range s {
		if c < '0' || c > '9' {
			return false
		}
	}
	return true
}

// isRecoveryCode reports whether code has a recovery code's shape.
func isRecoveryCode(code string) bool {
	c := strings.ReplaceAll(strings.ToLower(code), "-", "")
	if len(c) != 10 {
		return false
	}
	for _, r := range c {
		if !strings.ContainsRune(recoveryAlphabet, r) {
			return false
		}
	}
	return true
}

// useFactor checks code against the user's confirmed TOTP (6 digits) or an
// unused recovery code, and uses it up (the TOTP step, the recovery code).
// It returns the method that matched, or "".
func (s *Service) useFactor(ctx context.Context, tx *sql.Tx, userID, code string) (string, error) {
	switch {
	case isDigits(code, 6):
		var id string
		var sealed []byte
		var last int64
		err := tx.QueryRowContext(ctx, `SELECT id, secret_enc, last_step FROM mfa_methods WHERE user_id = $1 AND kind = $2 AND confirmed`,
			userID, MethodTOTP).Scan(&id, &sealed, &last)
		if notFound(err) {
			return "", nil
		}
		if err != nil {
			return "", err
		}
		secret, err := s.cfg.Keyring.OpenSystem(secretAAD(userID, id), sealed)
		if err != nil {
			return "", err
		}
		step, ok := matchTOTP(string(secret), code, s.cfg.Now(), last)
		if !ok {
			return "", nil
		}
		res, err := tx.ExecContext(ctx, `UPDATE mfa_methods SET last_step = $1 WHERE id = $2 AND last_step < $1`, step, id)
		if err != nil {
			return "", err
		}
		if n, _ := res.RowsAffected(); n != 1 {
			return "", nil // another request used this step first
		}
		return MethodTOTP, nil
	case isRecoveryCode(code):
		res, err := tx.ExecContext(ctx, `UPDATE mfa_recovery_codes SET used_at = $1 WHERE user_id = $2 AND code_hash IN ($3, $4) AND used_at = 0`,
			store.Micros(s.cfg.Now()), userID, s.hashRecoveryCode(code), legacyRecoveryHash(code))
		if err != nil {
			return "", err
		}
		if n, _ := res.RowsAffected(); n != 1 {
			return "", nil
		}
		return MethodRecovery, nil
	}
	return "", nil
}

// checkLocked fails while the user's MFA is locked after wrong codes.
func (s *Service) checkLocked(ctx context.Context, op, userID string) error {
	var until int64
	if err := s.cfg.DB.QueryRowContext(ctx, `SELECT mfa_locked_until FROM users WHERE id = $1`, userID).Scan(&until); err != nil {
		return errs.Wrap(op, errs.Unavailable, "reading the MFA lock failed", err)
	}
	if t := store.Time(until); until != 0 && s.cfg.Now().Before(t) {
		e := errs.Ef(op, errs.Locked, "too many wrong codes: MFA is locked until %s (an organization admin can reset your MFA methods)",
			t.UTC().Format(time.RFC3339))
		e.RetryAfter = t.Sub(s.cfg.Now())
		return e
	}
	return nil
}

// recordFailure counts a wrong code for the user, audits it, and locks the
// user's MFA at the limit.
func (s *Service) recordFailure(ctx context.Context, p *api.Principal, method, action, challengeID string) error {
	now := s.cfg.Now()
	err := s.cfg.DB.InTx(ctx, func(tx *sql.Tx) error {
		var failed int
		if err := tx.QueryRowContext(ctx, `UPDATE users SET mfa_failures = mfa_failures + 1 WHERE id = $1 RETURNING mfa_failures`, p.ID).Scan(&failed); err != nil {
			return err
		}
		d := map[string]any{"method": method, "reason": "wrong code", "failures": failed}
		if challengeID != "" {
			d["challenge"] = challengeID
		}
		if err := audit.Record(ctx, tx, audit.By(ctx, audit.Entry{Action: action, Outcome: audit.Failure, TargetKind: api.SubjectUser,
			TargetID: p.ID, Details: d})); err != nil {
			return err
		}
		if failed < s.cfg.MaxFailures {
			return nil
		}
		until := now.Add(s.cfg.LockDuration)
		if _, err := tx.ExecContext(ctx, `UPDATE users SET mfa_failures = 0, mfa_locked_until = $1 WHERE id = $2`, store.Micros(until), p.ID); err != nil {
			return err
		}
		// Open challenges die with the lock.
		if _, err := tx.ExecContext(ctx, `UPDATE mfa_challenges SET used_at = $1 WHERE user_id = $2 AND used_at = 0`, store.Micros(now), p.ID); err != nil {
			return err
		}
		return audit.Record(ctx, tx, audit.By(ctx, audit.Entry{Action: "mfa.lock", TargetKind: api.SubjectUser, TargetID: p.ID,
			Details: map[string]any{"method": method, "lockedUntil": until.UTC().Format(time.RFC3339), "failures": failed}}))
	})
	if err != nil {
		return errs.Wrap("mfa.(*Service).recordFailure", errs.Unavailable, "recording the wrong code failed", err)
	}
	return nil
}

// Disable turns off one of the caller's methods. It needs a current code
// (or a recovery code), and refuses to remove the method the organization
// enforces.
func (s *Service) Disable(ctx context.Context, method, code string) error {
	const op = "mfa.(*Service).Disable"
	p, err := user(ctx, op)
	if err != nil {
		return err
	}
	if method != MethodTOTP && method != MethodWebAuthn {
		return errs.InvalidField(op, "path.method", "the method to disable is totp or webauthn (all passkeys)")
	}
	if err := s.checkLocked(ctx, op, p.ID); err != nil {
		return err
	}
	code = normalizeCode(code)
	if code == "" {
		return errs.InvalidField(op, "body.code", "disabling a method needs a current code (or a recovery code)")
	}
	var refusal error
	var wrong bool
	err = s.cfg.DB.InTx(ctx, func(tx *sql.Tx) error {
		refusal, wrong = nil, false
		var orgMethod string
		var has, all int
		var loginMFA bool
		if err := tx.QueryRowContext(ctx, `SELECT o.mfa_method, o.require_mfa_login,
			(SELECT COUNT(*) FROM mfa_methods m WHERE m.user_id = u.id AND m.kind = $2 AND m.confirmed),
			(SELECT COUNT(*) FROM mfa_methods m WHERE m.user_id = u.id AND m.confirmed)
			FROM users u JOIN organizations o ON o.id = u.org_id WHERE u.id = $1`, p.ID, method).Scan(&orgMethod, &loginMFA, &has, &all); err != nil {
			return err
		}
		if has == 0 {
			refusal = errs.Ef(op, errs.NotFound, "%s is not enrolled (see `airlock mfa status`)", method)
			return nil
		}
		if loginMFA && all == 1 {
			refusal = errs.Ef(op, errs.Conflict, "your organization requires a second factor at login and %s is your last method: enroll another before turning it off", method)
			return nil
		}
		if orgMethod == method {
			refusal = errs.Ef(op, errs.Conflict, "your organization requires %s: it cannot be turned off (to move it to a new device, an organization admin can run `airlock users reset-mfa`)", method)
			return nil
		}
		used, err := s.useFactor(ctx, tx, p.ID, code)
		if err != nil {
			return err
		}
		if used == "" {
			wrong = true
			return nil
		}
		if method == MethodWebAuthn {
			if _, err := tx.ExecContext(ctx, `DELETE FROM mfa_passkeys WHERE user_id = $1`, p.ID); err != nil {
				return err
			}
		}
		// Recovery codes belong to the methods: they go with the last one.
		if err := s.dropMethod(ctx, tx, p.ID, method); err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, `UPDATE users SET mfa_failures = 0 WHERE id = $1`, p.ID); err != nil {
			return err
		}
		return audit.Record(ctx, tx, audit.By(ctx, audit.Entry{Action: "mfa.disable", TargetKind: api.SubjectUser, TargetID: p.ID,
			Details: map[string]any{"method": method, "provedWith": used}}))
	})
	if err != nil {
		return errs.Wrap(op, errs.Unavailable, "disabling the method failed", err)
	}
	if refusal != nil {
		return refusal
	}
	if wrong {
		if err := s.recordFailure(ctx, p, method, "mfa.disable", ""); err != nil {
			return err
		}
		return errs.InvalidField(op, "body.code", "the code does not match a current TOTP code or an unused recovery code")
	}
	return nil
}

// Reset removes every method and recovery code of a user of the caller's
// organization (organization admins).
func (s *Service) Reset(ctx context.Context, userID string) error {
	const op = "mfa.(*Service).Reset"
	p, err := api.MustPrincipal(ctx)
	if err != nil {
		return err
	}
	if !p.OrgAdmin {
		return errs.E(op, errs.Forbidden, "only organization admins may reset a user's MFA")
	}
	var missing bool
	err = s.cfg.DB.InTx(ctx, func(tx *sql.Tx) error {
		var email string
		err := tx.QueryRowContext(ctx, `SELECT email FROM users WHERE id = $1 AND org_id = $2`, userID, p.OrgID).Scan(&email)
		if notFound(err) {
			missing = true
			return nil
		}
		if err != nil {
			return err
		}
		res, err := tx.ExecContext(ctx, `DELETE FROM mfa_methods WHERE user_id = $1`, userID)
		if err != nil {
			return err
		}
		removed, _ := res.RowsAffected()
		if _, err := tx.ExecContext(ctx, `DELETE FROM mfa_passkeys WHERE user_id = $1`, userID); err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, `DELETE FROM mfa_recovery_codes WHERE user_id = $1`, userID); err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, `UPDATE users SET mfa_failures = 0, mfa_locked_until = 0 WHERE id = $1`, userID); err != nil {
			return err
		}
		return audit.Record(ctx, tx, audit.By(ctx, audit.Entry{Action: "mfa.reset", TargetKind: api.SubjectUser, TargetID: userID,
			Details: map[string]any{"email": email, "methodsRemoved": removed}}))
	})
	if err != nil {
		return errs.Wrap(op, errs.Unavailable, "resetting MFA failed", err)
	}
	if missing {
		return errs.E(op, errs.NotFound, "no such user in your organization (see `airlock users list`)")
	}
	return nil
}
