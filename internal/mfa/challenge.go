package mfa

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"database/sql"
	"fmt"
	"log/slog"
	"math/big"
	"net/http"
	"time"

	"github.com/danielgtaylor/huma/v2"
	"github.com/google/uuid"

	"github.com/airlockpam/airlock/internal/api"
	"github.com/airlockpam/airlock/internal/audit"
	"github.com/airlockpam/airlock/internal/errs"
	"github.com/airlockpam/airlock/internal/store"
)

// ProblemMFARequired is the type of the problem that asks for a second factor.
const ProblemMFARequired = "urn:airlock:problem:mfa-required"

// RequiredError is the answer to a request that needs an MFA approval: a
// problem (403) with the challenge to answer and its method.
type RequiredError struct {
	huma.ErrorModel
	ChallengeID string    `json:"challengeId"`
	Method      string    `json:"method" enum:"totp,email,webauthn"`
	ExpiresAt   time.Time `json:"expiresAt"`
	// ApprovalURL, for a passkey, is the web page that approves the
	// challenge; the client then polls GET /api/v1/mfa/challenges/{id}.
	ApprovalURL string `json:"approvalUrl,omitempty"`
}

// Unwrap lets callers that read *errs.Error (the web UI) see a Forbidden
// error with the problem's message; the API answers the problem itself.
func (e *RequiredError) Unwrap() error {
	return &errs.Error{Op: "mfa", Code: errs.Forbidden, Msg: e.Detail}
}

// ChallengePassed is an approved challenge.
type ChallengePassed struct {
	ChallengeID string    `json:"challengeId"`
	Method      string    `json:"method" doc:"how it was passed: totp, email, webauthn or recovery"`
	ExpiresAt   time.Time `json:"expiresAt" doc:"repeat the request with mfaChallengeId before this"`
}

// Gate lets a session on an account that requires MFA start. With the id
// of a challenge the caller has passed (for this login and this account,
// unused, within its lifetime) it uses that challenge up and returns how it
// was passed. Otherwise it makes a new challenge (sending an email code when
// that is the method) and returns a *RequiredError.
func (s *Service) Gate(ctx context.Context, accountID, accountName, challengeID string) (string, error) {
	const op = "mfa.(*Service).Gate"
	p, err := api.MustPrincipal(ctx)
	if err != nil {
		return "", err
	}
	if p.Kind != api.SubjectUser {
		return "", errs.Ef(op, errs.Forbidden, "account %q requires MFA, and machine identities cannot pass an MFA challenge: "+
			"use a user's login, or turn off require-MFA on the account (`airlock accounts update --require-mfa=false`)", accountName)
	}
	note := ""
	if challengeID != "" {
		method, err := s.consume(ctx, p, accountID, challengeID)
		if err != nil {
			return "", err
		}
		if method != "" {
			return method, nil
		}
		note = "the MFA approval given is not valid for this request (it is used, expired, not yet passed, or for another account or login); "
	}
	if err := s.checkLocked(ctx, op, p.ID); err != nil {
		return "", err
	}
	return "", s.challenge(ctx, p, accountID, "account "+accountName, note)
}

// challenge makes a challenge for p's login (token family) and accountID
// ("" for a login's own challenge), sends the email code when that is the
// method, and returns the *RequiredError that names it. what says what the
// code opens, for the email.
func (s *Service) challenge(ctx context.Context, p *api.Principal, accountID, what, note string) error {
	const op = "mfa.(*Service).challenge"
	method, email, err := s.chooseMethod(ctx, op, p, accountID == "")
	if err != nil {
		return err
	}
	now := s.cfg.Now()
	id := uuid.Must(uuid.NewV7()).String()
	expires := now.Add(s.cfg.ChallengeTTL)
	var code string
	var codeHash []byte
	if method == MethodEmail {
		if s.cfg.Mailer == nil && accountID == "" {
			return errs.E(op, errs.Unavailable, "your organization requires a second factor at login; you have none enrolled, "+
				"and this server cannot send email codes (its operator sets --smtp-url): ask an organization admin")
		}
		if s.cfg.Mailer == nil {
			return errs.Ef(op, errs.Unavailable, "MFA required for %s and your second factor would be an email code, "+
				"but this server cannot send email (its operator sets --smtp-url); enroll TOTP instead: `airlock mfa enroll totp`", what)
		}
		n, err := rand.Int(rand.Reader, big.NewInt(1_000_000))
		if err != nil {
			return errs.Wrap(op, errs.Internal, "making a code failed", err)
		}
		code = fmt.Sprintf("%06d", n.Int64())
		codeHash = s.hashEmailCode(id, code)
	}
	targetKind, targetID := "account", accountID
	if accountID == "" {
		targetKind, targetID = api.SubjectUser, p.ID
	}
	err = s.cfg.DB.InTx(ctx, func(tx *sql.Tx) error {
		// The user's challenges that ended a day ago go (the audit log keeps
		// their story), so the table stays small without a job.
		if _, err := tx.ExecContext(ctx, `DELETE FROM mfa_challenges WHERE user_id = $1 AND expires_at < $2`,
			p.ID, store.Micros(now.Add(-24*time.Hour))); err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, `INSERT INTO mfa_challenges (id, org_id, user_id, token_family, account_id, method, code_hash,
			failures, created_at, expires_at, approved_at, used_at) VALUES ($1, $2, $3, $4, $5, $6, $7, 0, $8, $9, 0, 0)`,
			id, p.OrgID, p.ID, p.TokenFamily, accountID, method, codeHash, store.Micros(now), store.Micros(expires)); err != nil {
			return err
		}
		return audit.Record(ctx, tx, audit.By(ctx, audit.Entry{Action: "mfa.challenge", TargetKind: targetKind, TargetID: targetID,
			Details: map[string]any{"method": method, "challenge": id, "for": what}}))
	})
	if err != nil {
		return errs.Wrap(op, errs.Unavailable, "making the MFA challenge failed", err)
	}
	detail := "MFA required: enter the 6-digit code from your authenticator app (or a recovery code)"
	if method == MethodEmail {
		if err := s.cfg.Mailer.Send(ctx, email, "Your Airlock code", "Your Airlock code is "+code+
			".\n\nIt opens "+what+" and is valid for "+s.cfg.ChallengeTTL.String()+
			". If you did not ask for it, tell your Airlock administrator.\n"); err != nil {
			// The operator's log says why; the code is not in it.
			slog.ErrorContext(ctx, "sending an MFA email code failed", "op", op, "user", p.ID, "challenge", id, "err", err)
			_, _ = s.cfg.DB.ExecContext(ctx, `UPDATE mfa_challenges SET used_at = $1 WHERE id = $2`, store.Micros(now), id)
			_ = audit.RecordNow(ctx, s.cfg.DB, audit.By(ctx, audit.Entry{Action: "mfa.challenge", Outcome: audit.Failure, TargetKind: targetKind,
				TargetID: targetID, Details: map[string]any{"method": method, "challenge": id, "reason": "email could not be sent"}}))
			return errs.E(op, errs.Unavailable, "MFA required, but the email code could not be sent (the server's log says why); "+
				"try again later, use a recovery code with TOTP, or ask your administrator")
		}
		detail = "MFA required: a 6-digit code was emailed to " + email
	}
	approval := ""
	if method == MethodWebAuthn {
		approval = s.ApprovalURL(id)
		detail = "MFA required: approve with your passkey at " + approval + " (or enter a recovery code)"
	}
	return &RequiredError{
		ErrorModel:  huma.ErrorModel{Type: ProblemMFARequired, Status: http.StatusForbidden, Title: "MFA required", Detail: note + detail},
		ChallengeID: id, Method: method, ExpiresAt: expires, ApprovalURL: approval,
	}
}

// chooseMethod picks the organization's enforced method, else the user's
// TOTP, else the user's passkeys, else an email code; email is the address
// for an email code.
func (s *Service) chooseMethod(ctx context.Context, op string, p *api.Principal, login bool) (method, email string, err error) {
	var orgMethod string
	var hasTOTP, hasPasskey int
	err = s.cfg.DB.QueryRowContext(ctx, `SELECT o.mfa_method, u.email,
		(SELECT COUNT(*) FROM mfa_methods m WHERE m.user_id = u.id AND m.kind = $2 AND m.confirmed),
		(SELECT COUNT(*) FROM mfa_passkeys k WHERE k.user_id = u.id)
		FROM users u JOIN organizations o ON o.id = u.org_id WHERE u.id = $1`, p.ID, MethodTOTP).Scan(&orgMethod, &email, &hasTOTP, &hasPasskey)
	if err != nil {
		return "", "", errs.Wrap(op, errs.Unavailable, "reading the MFA policy failed", err)
	}
	passkeysWork := s.wa != nil
	// A login of a user who lacks the enforced method (new, or reset after
	// a lost phone) passes with an email code, so that the user can sign in
	// and enroll it: refusing would lock them out for good. Access to an
	// account needs the enforced method itself.
	missing := orgMethod == MethodTOTP && hasTOTP == 0 || orgMethod == MethodWebAuthn && hasPasskey == 0
	switch {
	case login && missing:
		return MethodEmail, email, nil
	case orgMethod == MethodTOTP && hasTOTP == 0:
		return "", "", errs.E(op, errs.Forbidden, "MFA required: your organization requires TOTP and you have not enrolled it; run `airlock mfa enroll totp` first")
	case orgMethod == MethodWebAuthn && !passkeysWork:
		return "", "", errs.E(op, errs.Unavailable, "MFA required: your organization requires passkeys, but this server has no public URL for them (its operator sets --public-url)")
	case orgMethod == MethodWebAuthn && hasPasskey == 0:
		return "", "", errs.Ef(op, errs.Forbidden, "MFA required: your organization requires a passkey and you have none; add one in the web UI at %s/mfa first", s.origin)
	case orgMethod != "":
		return orgMethod, email, nil
	case hasTOTP > 0:
		return MethodTOTP, email, nil
	case hasPasskey > 0 && passkeysWork:
		return MethodWebAuthn, email, nil
	default:
		return MethodEmail, email, nil
	}
}

func (s *Service) hashEmailCode(challengeID, code string) []byte {
	m := hmac.New(sha256.New, s.codeKey)
	m.Write([]byte(challengeID + "|" + code))
	return m.Sum(nil)
}

// consume uses up an approved challenge of p's login for the account and
// returns how it was passed, or "" when there is none.
func (s *Service) consume(ctx context.Context, p *api.Principal, accountID, id string) (string, error) {
	const op = "mfa.(*Service).consume"
	now := store.Micros(s.cfg.Now())
	var method string
	err := s.cfg.DB.QueryRowContext(ctx, `UPDATE mfa_challenges SET used_at = $1 WHERE id = $2 AND user_id = $3 AND token_family = $4
		AND account_id = $5 AND approved_at <> 0 AND used_at = 0 AND expires_at > $1 RETURNING method`,
		now, id, p.ID, p.TokenFamily, accountID).Scan(&method)
	if notFound(err) {
		return "", nil
	}
	if err != nil {
		return "", errs.Wrap(op, errs.Unavailable, "checking the MFA approval failed", err)
	}
	return method, nil
}

// VerifyChallenge checks a code for one of the caller's challenges.
func (s *Service) VerifyChallenge(ctx context.Context, id, code string) (*ChallengePassed, error) {
	const op = "mfa.(*Service).VerifyChallenge"
	p, err := user(ctx, op)
	if err != nil {
		return nil, err
	}
	return s.verify(ctx, op, p, id, code, false)
}

// verify checks code for challenge id of p's login; consume also uses the
// challenge up (a login's challenge, passed and used in one step).
func (s *Service) verify(ctx context.Context, op string, p *api.Principal, id, code string, consume bool) (*ChallengePassed, error) {
	if err := s.checkLocked(ctx, op, p.ID); err != nil {
		return nil, err
	}
	code = normalizeCode(code)
	if code == "" {
		return nil, errs.InvalidField(op, "body.code", "enter the code")
	}
	var refusal error
	var wrongMethod string
	var left int
	var out *ChallengePassed
	err := s.cfg.DB.InTx(ctx, func(tx *sql.Tx) error {
		refusal, wrongMethod, left, out = nil, "", 0, nil
		var method, accountID string
		var hash []byte
		var failures int
		var expires, approved, used int64
		err := tx.QueryRowContext(ctx, `SELECT method, account_id, code_hash, failures, expires_at, approved_at, used_at FROM mfa_challenges
			WHERE id = $1 AND user_id = $2 AND token_family = $3`, id, p.ID, p.TokenFamily).
			Scan(&method, &accountID, &hash, &failures, &expires, &approved, &used)
		if notFound(err) {
			refusal = errs.E(op, errs.NotFound, "no such MFA challenge for your login (unknown, someone else's, or made for another login): repeat the request for a new one")
			return nil
		}
		if err != nil {
			return err
		}
		now := s.cfg.Now()
		switch {
		case approved != 0 && used == 0:
			refusal = errs.E(op, errs.Conflict, "this MFA challenge is already passed: repeat the request with it")
			return nil
		case used != 0 || failures >= s.cfg.ChallengeTries:
			refusal = errs.E(op, errs.Conflict, "this MFA challenge is used up: repeat the request for a new one")
			return nil
		case !now.Before(store.Time(expires)):
			refusal = errs.Ef(op, errs.Conflict, "this MFA challenge has expired (challenges last %s): repeat the request for a new one", s.cfg.ChallengeTTL)
			return nil
		}
		passed := ""
		if method == MethodWebAuthn && !isRecoveryCode(code) {
			refusal = errs.InvalidField(op, "body.code", "this challenge is answered with your passkey (open the approval page) or with a recovery code")
			return nil
		}
		if method == MethodEmail && isDigits(code, 6) {
			if hmac.Equal(hash, s.hashEmailCode(id, code)) {
				passed = MethodEmail
			}
		} else if passed, err = s.useFactor(ctx, tx, p.ID, code); err != nil {
			return err
		}
		if passed == "" {
			failures++
			left = s.cfg.ChallengeTries - failures
			wrongMethod = method
			_, err := tx.ExecContext(ctx, `UPDATE mfa_challenges SET failures = $1 WHERE id = $2`, failures, id)
			return err
		}
		usedAt := int64(0)
		if consume {
			usedAt = store.Micros(now)
		}
		if _, err := tx.ExecContext(ctx, `UPDATE mfa_challenges SET approved_at = $1, method = $2, used_at = $3 WHERE id = $4`,
			store.Micros(now), passed, usedAt, id); err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, `UPDATE users SET mfa_failures = 0 WHERE id = $1`, p.ID); err != nil {
			return err
		}
		out = &ChallengePassed{ChallengeID: id, Method: passed, ExpiresAt: store.Time(expires)}
		targetKind, targetID := "account", accountID
		if accountID == "" {
			targetKind, targetID = api.SubjectUser, p.ID
		}
		return audit.Record(ctx, tx, audit.By(ctx, audit.Entry{Action: "mfa.verify", TargetKind: targetKind, TargetID: targetID,
			Details: map[string]any{"method": passed, "challenge": id}}))
	})
	if err != nil {
		return nil, errs.Wrap(op, errs.Unavailable, "checking the code failed", err)
	}
	if refusal != nil {
		return nil, refusal
	}
	if wrongMethod != "" {
		if err := s.recordFailure(ctx, p, wrongMethod, "mfa.verify", id); err != nil {
			return nil, err
		}
		if err := s.checkLocked(ctx, op, p.ID); err != nil {
			return nil, err
		}
		if left <= 0 {
			return nil, errs.InvalidField(op, "body.code", "wrong code, and no tries are left on this challenge: repeat the request for a new one")
		}
		return nil, errs.InvalidField(op, "body.code", fmt.Sprintf("wrong code; %d %s left", left, plural(left, "try", "tries")))
	}
	return out, nil
}

func plural(n int, one, many string) string {
	if n == 1 {
		return one
	}
	return many
}

// LoginGate is called by the identity service once a user's password is
// right. When the organization requires MFA at login it makes a challenge
// (a *RequiredError), or with a challenge id and code checks and uses up
// that challenge and returns how it was passed. Otherwise it returns "".
// A caller that cannot ask for a code (canAsk false) gets a refusal and no
// challenge (and no email).
func (s *Service) LoginGate(ctx context.Context, orgID, userID, email, challengeID, code string, canAsk bool) (string, error) {
	const op = "mfa.(*Service).LoginGate"
	var required bool
	if err := s.cfg.DB.QueryRowContext(ctx, `SELECT require_mfa_login FROM organizations WHERE id = $1`, orgID).Scan(&required); err != nil {
		return "", errs.Wrap(op, errs.Unavailable, "reading the MFA policy failed", err)
	}
	if !required {
		return "", nil
	}
	if !canAsk {
		return "", errs.E(op, errs.Forbidden, "your organization requires a second factor at login, which this sign-in cannot ask for yet: log in with the CLI (`airlock login`)")
	}
	// The password is right: the user acts, for the audit log.
	p := &api.Principal{Kind: api.SubjectUser, ID: userID, OrgID: orgID, Name: email}
	ctx = api.WithPrincipal(ctx, p)
	if challengeID != "" && code == "" {
		// A login challenge approved with a passkey (the web sign-in).
		method, err := s.consume(ctx, p, "", challengeID)
		if err != nil {
			return "", err
		}
		if method == "" {
			return "", errs.InvalidField(op, "body.mfaCode", "enter the code (or approve with your passkey first)")
		}
		return method, nil
	}
	if challengeID != "" {
		v, err := s.verify(ctx, op, p, challengeID, code, true)
		if err != nil {
			return "", err
		}
		return v.Method, nil
	}
	if err := s.checkLocked(ctx, op, p.ID); err != nil {
		return "", err
	}
	return "", s.challenge(ctx, p, "", "a login", "")
}
