package auth

import (
	"context"
	"crypto/subtle"
	"database/sql"
	"net/http"
	"time"

	"github.com/danielgtaylor/huma/v2"

	"github.com/airlockpam/airlock/internal/api"
	"github.com/airlockpam/airlock/internal/audit"
	"github.com/airlockpam/airlock/internal/errs"
	"github.com/airlockpam/airlock/internal/store"
)

// LoginRequest is the body of POST /api/v1/auth/login.
type LoginRequest struct {
	Email    string `json:"email" maxLength:"254" doc:"the user's email address"`
	Password string `json:"password" maxLength:"1024"`
	// When the organization requires MFA at login, the first answer is
	// 403 with a challenge; the login is repeated with its id and code.
	MFAChallengeID string `json:"mfaChallengeId,omitempty" maxLength:"64" doc:"the challenge of a 403 mfa-required answer to this login"`
	MFACode        string `json:"mfaCode,omitempty" maxLength:"20" doc:"its code (TOTP, email, or a recovery code)"`
}

type loginInput struct{ Body LoginRequest }

// MachineLoginRequest is the body of POST /api/v1/auth/machine-login.
type MachineLoginRequest struct {
	ClientID     string `json:"clientId" maxLength:"200"`
	ClientSecret string `json:"clientSecret" maxLength:"200"`
}

type machineLoginInput struct{ Body MachineLoginRequest }

// RefreshRequest is the body of POST /api/v1/auth/refresh.
type RefreshRequest struct {
	RefreshToken string `json:"refreshToken" maxLength:"200"`
}

type refreshInput struct{ Body RefreshRequest }

type tokenOutput struct{ Body TokenPair }

// Me describes the caller.
type Me struct {
	Kind     string `json:"kind" enum:"user,machine"`
	ID       string `json:"id"`
	Name     string `json:"name" doc:"email of a user, name of a machine identity"`
	OrgID    string `json:"orgId"`
	OrgAdmin bool   `json:"orgAdmin"`
}

func (s *Service) registerAuth(a huma.API) {
	huma.Register(a, huma.Operation{
		OperationID: "login", Method: http.MethodPost, Path: "/api/v1/auth/login", Tags: []string{"Auth"},
		Summary: "Log in with email and password (a disabled user gets 403; with MFA required at login, 403 mfa-required with a challenge)",
		Errors:  []int{401, 403, 422, 423, 429},
	}, func(ctx context.Context, in *loginInput) (*tokenOutput, error) {
		pair, err := s.LoginWithMFA(ctx, in.Body.Email, in.Body.Password, in.Body.MFAChallengeID, in.Body.MFACode)
		if err != nil {
			return nil, api.Err(ctx, err)
		}
		return &tokenOutput{Body: pair}, nil
	})
	huma.Register(a, huma.Operation{
		OperationID: "machine-login", Method: http.MethodPost, Path: "/api/v1/auth/machine-login", Tags: []string{"Auth"},
		Summary: "Log in as a machine identity with its client id and secret",
		Errors:  []int{401, 422, 429},
	}, func(ctx context.Context, in *machineLoginInput) (*tokenOutput, error) {
		pair, err := s.MachineLogin(ctx, in.Body.ClientID, in.Body.ClientSecret)
		if err != nil {
			return nil, api.Err(ctx, err)
		}
		return &tokenOutput{Body: pair}, nil
	})
	huma.Register(a, huma.Operation{
		OperationID: "refresh-token", Method: http.MethodPost, Path: "/api/v1/auth/refresh", Tags: []string{"Auth"},
		Summary: "Exchange a refresh token for a new token pair",
		Errors:  []int{401},
	}, func(ctx context.Context, in *refreshInput) (*tokenOutput, error) {
		pair, err := s.Refresh(ctx, in.Body.RefreshToken)
		if err != nil {
			return nil, api.Err(ctx, err)
		}
		return &tokenOutput{Body: pair}, nil
	})
	huma.Register(a, huma.Operation{
		OperationID: "logout", Method: http.MethodPost, Path: "/api/v1/auth/logout", Tags: []string{"Auth"},
		Summary: "Revoke the caller's access and refresh tokens", Security: api.Secured, DefaultStatus: http.StatusNoContent,
	}, func(ctx context.Context, _ *struct{}) (*struct{}, error) {
		p, err := api.MustPrincipal(ctx)
		if err != nil {
			return nil, api.Err(ctx, err)
		}
		err = s.cfg.DB.InTx(ctx, func(tx *sql.Tx) error {
			if err := s.revokeFamily(ctx, tx, p.TokenFamily); err != nil {
				return err
			}
			return audit.Record(ctx, tx, audit.By(ctx, audit.Entry{Action: "auth.logout", TargetKind: p.Kind, TargetID: p.ID}))
		})
		if err != nil {
			return nil, api.Err(ctx, errs.Wrap("auth.logout", errs.Unavailable, "logging out failed", err))
		}
		s.accessRevoked(ctx) // the sessions started under this login end
		return nil, nil
	})
	huma.Register(a, huma.Operation{
		OperationID: "me", Method: http.MethodGet, Path: "/api/v1/auth/me", Tags: []string{"Auth"},
		Summary: "Who the caller is", Security: api.Secured,
	}, func(ctx context.Context, _ *struct{}) (*struct{ Body Me }, error) {
		p, err := api.MustPrincipal(ctx)
		if err != nil {
			return nil, api.Err(ctx, err)
		}
		return &struct{ Body Me }{Me{Kind: p.Kind, ID: p.ID, Name: p.Name, OrgID: p.OrgID, OrgAdmin: p.OrgAdmin}}, nil
	})
}

func (s *Service) checkRate(ctx context.Context, op, account string) error {
	now := s.cfg.Now()
	if ok, wait := s.byAddress.allow(api.ClientAddr(ctx), now); !ok {
		e := errs.Ef(op, errs.RateLimited, "too many login attempts from this address; wait %s and try again", wait.Round(time.Second))
		e.RetryAfter = wait
		return e
	}
	if ok, wait := s.byAccount.allow(account, now); !ok {
		e := errs.Ef(op, errs.RateLimited, "too many login attempts for this account; wait %s and try again", wait.Round(time.Second))
		e.RetryAfter = wait
		return e
	}
	return nil
}

// errBadCredentials answers every refused login alike: an unknown email, a
// wrong password and a locked account, so that the answer does not tell
// which emails have accounts (a locked account exists).
var errBadCredentials = "the email or password is wrong; after repeated failures an account is locked for a while " +
	"(an organization admin can unlock it)"

// Login checks a user's password and issues tokens, for a caller that
// cannot ask for a second factor (the web UI's sign-in, until it has an MFA
// step): when the organization requires MFA at login it is refused
// (Forbidden), and no challenge is made.
func (s *Service) Login(ctx context.Context, email, password string) (TokenPair, error) {
	return s.login(ctx, email, password, "", "", false)
}

// LoginWithMFA checks a user's password and issues tokens. When the
// organization requires MFA at login, a login without mfaChallengeID fails
// with the problem that names a new challenge, and a login with it and its
// code passes it.
func (s *Service) LoginWithMFA(ctx context.Context, email, password, mfaChallengeID, mfaCode string) (TokenPair, error) {
	return s.login(ctx, email, password, mfaChallengeID, mfaCode, true)
}

func (s *Service) login(ctx context.Context, email, password, mfaChallengeID, mfaCode string, canAsk bool) (TokenPair, error) {
	const op = "auth.(*Service).Login"
	email = normalizeEmail(email)
	if email == "" || password == "" {
		return TokenPair{}, errs.InvalidField(op, "body", "email and password are both required")
	}
	if err := s.checkRate(ctx, op, "user:"+email); err != nil {
		s.auditLoginFailure(ctx, "", "", email, "rate limited")
		return TokenPair{}, err
	}
	u, err := s.userByEmail(ctx, email)
	if err != nil {
		return TokenPair{}, errs.Wrap(op, errs.Unavailable, "checking the credentials failed", err)
	}
	if u == nil {
		_, _ = VerifyPassword(dummyHash(), password)
		s.auditLoginFailure(ctx, "", "", email, "unknown email")
		return TokenPair{}, errs.E(op, errs.Unauthenticated, errBadCredentials)
	}
	now := s.cfg.Now()
	if u.disabled {
		if ok, _ := VerifyPassword(u.passwordHash, password); !ok {
			if err := s.recordFailure(ctx, u, email); err != nil {
				return TokenPair{}, errs.Wrap(op, errs.Unavailable, "recording the failed login failed", err)
			}
			return TokenPair{}, errs.E(op, errs.Unauthenticated, errBadCredentials)
		}
		s.auditLoginFailure(ctx, u.orgID, u.id, email, "user disabled")
		return TokenPair{}, errs.E(op, errs.Forbidden, ErrDisabled)
	}
	if until := store.Time(u.lockedUntil); now.Before(until) {
		// Answered as an unknown email is, after the same work (one
		// password hash and one audit write).
		_, _ = VerifyPassword(u.passwordHash, password)
		s.auditLoginFailure(ctx, u.orgID, u.id, email, "account locked")
		return TokenPair{}, errs.E(op, errs.Unauthenticated, errBadCredentials)
	}
	ok, err := VerifyPassword(u.passwordHash, password)
	if err != nil {
		return TokenPair{}, errs.Wrap(op, errs.Internal, "the stored password hash is unreadable", err)
	}
	if !ok {
		if err := s.recordFailure(ctx, u, email); err != nil {
			return TokenPair{}, errs.Wrap(op, errs.Unavailable, "recording the failed login failed", err)
		}
		return TokenPair{}, errs.E(op, errs.Unauthenticated, errBadCredentials)
	}
	mfaMethod := ""
	if s.loginMFA != nil {
		if mfaMethod, err = s.loginMFA(ctx, u.orgID, u.id, email, mfaChallengeID, mfaCode, canAsk); err != nil {
			return TokenPair{}, err // the problem that asks for a code, or why the code is refused
		}
	}
	var details map[string]any
	if mfaMethod != "" {
		details = map[string]any{"mfa": mfaMethod}
	}
	var pair TokenPair
	err = s.cfg.DB.InTx(ctx, func(tx *sql.Tx) error {
		if _, err := tx.ExecContext(ctx, `UPDATE users SET failed_logins = 0, locked_until = 0 WHERE id = $1`, u.id); err != nil {
			return err
		}
		var err error
		if pair, err = s.issue(ctx, tx, api.SubjectUser, u.id, u.orgID, ""); err != nil {
			return err
		}
		return audit.Record(ctx, tx, audit.Entry{OrgID: u.orgID, ActorKind: api.SubjectUser, ActorID: u.id, ActorName: email,
			ClientAddr: api.ClientAddr(ctx), Action: "auth.login", Outcome: audit.Success, TargetKind: api.SubjectUser, TargetID: u.id, Details: details})
	})
	if err != nil {
		return TokenPair{}, errs.Wrap(op, errs.Unavailable, "logging in failed", err)
	}
	return pair, nil
}

// recordFailure counts a wrong password and locks the account at the limit.
func (s *Service) recordFailure(ctx context.Context, u *userRow, email string) error {
	now := s.cfg.Now()
	return s.cfg.DB.InTx(ctx, func(tx *sql.Tx) error {
		var failed int
		if err := tx.QueryRowContext(ctx, `UPDATE users SET failed_logins = failed_logins + 1 WHERE id = $1 RETURNING failed_logins`, u.id).Scan(&failed); err != nil {
			return err
		}
		ev := audit.Entry{OrgID: u.orgID, ActorKind: "anonymous", ActorName: email, ClientAddr: api.ClientAddr(ctx),
			Action: "auth.login", Outcome: audit.Failure, TargetKind: api.SubjectUser, TargetID: u.id,
			Details: map[string]any{"reason": "wrong password", "failedLogins": failed}}
		if err := audit.Record(ctx, tx, ev); err != nil {
			return err
		}
		if failed < s.cfg.MaxFailedLogins {
			return nil
		}
		until := now.Add(s.cfg.LockDuration)
		if _, err := tx.ExecContext(ctx, `UPDATE users SET failed_logins = 0, locked_until = $1 WHERE id = $2`, store.Micros(until), u.id); err != nil {
			return err
		}
		return audit.Record(ctx, tx, audit.Entry{OrgID: u.orgID, ActorKind: "system", ActorID: "auth", ActorName: "login lockout",
			ClientAddr: api.ClientAddr(ctx), Action: "user.lock", Outcome: audit.Success, TargetKind: api.SubjectUser, TargetID: u.id,
			Details: map[string]any{"email": email, "lockedUntil": until.UTC().Format(time.RFC3339), "failedLogins": failed}})
	})
}

// auditLoginFailure records a failed login that changes nothing else. A
// failure to write it is logged, not returned: the caller is refused anyway.
func (s *Service) auditLoginFailure(ctx context.Context, orgID, targetID, account, reason string) {
	if orgID == "" {
		var err error
		if orgID, err = s.firstOrg(ctx); err != nil {
			return // no organization yet: nothing to attribute the attempt to
		}
	}
	err := audit.RecordNow(ctx, s.cfg.DB, audit.Entry{OrgID: orgID, ActorKind: "anonymous", ActorName: account,
		ClientAddr: api.ClientAddr(ctx), Action: "auth.login", Outcome: audit.Failure, TargetKind: api.SubjectUser,
		TargetID: targetID, Details: map[string]any{"reason": reason}})
	if err != nil {
		errs.Log(ctx, err)
	}
}

// MachineLogin checks a machine identity's client secret and issues tokens.
func (s *Service) MachineLogin(ctx context.Context, clientID, secret string) (TokenPair, error) {
	const op = "auth.(*Service).MachineLogin"
	if clientID == "" || secret == "" {
		return TokenPair{}, errs.InvalidField(op, "body", "clientId and clientSecret are both required")
	}
	if err := s.checkRate(ctx, op, "machine:"+clientID); err != nil {
		return TokenPair{}, err
	}
	m, err := s.machineByClientID(ctx, clientID)
	if err != nil {
		return TokenPair{}, errs.Wrap(op, errs.Unavailable, "checking the credentials failed", err)
	}
	if m == nil || subtle.ConstantTimeCompare(hashToken(secret), m.secretHash) != 1 {
		orgID, target := "", ""
		if m != nil {
			orgID, target = m.orgID, m.id
		}
		s.auditLoginFailure(ctx, orgID, target, clientID, "wrong client id or secret")
		return TokenPair{}, errs.E(op, errs.Unauthenticated, "the client id or client secret is wrong")
	}
	var pair TokenPair
	err = s.cfg.DB.InTx(ctx, func(tx *sql.Tx) error {
		var err error
		if pair, err = s.issue(ctx, tx, api.SubjectMachine, m.id, m.orgID, ""); err != nil {
			return err
		}
		return audit.Record(ctx, tx, audit.Entry{OrgID: m.orgID, ActorKind: api.SubjectMachine, ActorID: m.id, ActorName: m.name,
			ClientAddr: api.ClientAddr(ctx), Action: "auth.login", Outcome: audit.Success, TargetKind: api.SubjectMachine, TargetID: m.id})
	})
	if err != nil {
		return TokenPair{}, errs.Wrap(op, errs.Unavailable, "logging in failed", err)
	}
	return pair, nil
}

// Refresh rotates a token pair. A refresh token used twice revokes its
// whole family, since one of the two users of it was not its owner.
func (s *Service) Refresh(ctx context.Context, raw string) (TokenPair, error) {
	const op = "auth.(*Service).Refresh"
	var pair TokenPair
	var authErr error
	reused := false
	err := s.cfg.DB.InTx(ctx, func(tx *sql.Tx) error {
		authErr, reused = nil, false
		r, err := s.lookup(ctx, tx, raw)
		if err != nil {
			return err
		}
		switch {
		case r == nil || r.kind != kindRefresh || !r.subjectExists:
			authErr = errs.E(op, errs.Unauthenticated, "the refresh token is not valid: run `airlock login` again")
			return nil
		case r.disabled:
			authErr = errs.E(op, errs.Unauthenticated, ErrDisabled)
			return nil
		case r.revoked != 0:
			authErr = errs.E(op, errs.Unauthenticated, "the refresh token was already used or revoked; for safety every token of that login is now revoked: run `airlock login` again")
			reused = true
			if err := s.revokeFamily(ctx, tx, r.family); err != nil {
				return err
			}
			return audit.Record(ctx, tx, audit.Entry{OrgID: r.orgID, ActorKind: r.subjectKind, ActorID: r.subjectID, ActorName: r.name,
				ClientAddr: api.ClientAddr(ctx), Action: "auth.refresh_reuse", Outcome: audit.Failure, TargetKind: r.subjectKind, TargetID: r.subjectID})
		case s.cfg.Now().After(store.Time(r.expires)):
			authErr = errs.E(op, errs.Unauthenticated, "the refresh token has expired: run `airlock login` again")
			return nil
		}
		if _, err := tx.ExecContext(ctx, `UPDATE auth_tokens SET revoked_at = $1 WHERE id = $2`, store.Micros(s.cfg.Now()), r.id); err != nil {
			return err
		}
		pair, err = s.issue(ctx, tx, r.subjectKind, r.subjectID, r.orgID, r.family)
		return err
	})
	if err != nil {
		return TokenPair{}, errs.Wrap(op, errs.Unavailable, "refreshing the token failed", err)
	}
	if reused {
		s.accessRevoked(ctx) // the sessions started under the stolen login end
	}
	return pair, authErr
}
