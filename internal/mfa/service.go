package mfa

import (
	"context"
	"database/sql"
	"errors"
	"net/http"
	"time"

	"github.com/danielgtaylor/huma/v2"
	"github.com/go-webauthn/webauthn/webauthn"

	"github.com/airlockpam/airlock/internal/api"
	"github.com/airlockpam/airlock/internal/errs"
	"github.com/airlockpam/airlock/internal/keyring"
	"github.com/airlockpam/airlock/internal/store"
)

// Method names.
const (
	MethodTOTP     = "totp"
	MethodEmail    = "email"
	MethodRecovery = "recovery"
	MethodWebAuthn = "webauthn"
	MethodNone     = "none"
)

// Config configures the MFA service. Zero values take the documented defaults.
type Config struct {
	DB      *store.DB
	Keyring *keyring.Keyring
	// Mailer sends email codes; nil means the server cannot send mail, and
	// a challenge that needs an email code fails and says so.
	Mailer Mailer
	// Now is the clock; default time.Now.
	Now func() time.Time
	// ChallengeTTL is how long a challenge and its approval live; default 5 minutes.
	ChallengeTTL time.Duration
	// ChallengeTries is how many wrong codes a challenge allows; default 3.
	ChallengeTries int
	// MaxFailures wrong codes in a row lock a user's MFA; default 5.
	MaxFailures int
	// LockDuration is how long a locked user's MFA stays locked; default 15 minutes.
	LockDuration time.Duration
	// PublicURL is the URL users reach the server at (scheme and host): the
	// relying party of passkeys and the base of approval links. Empty: no
	// passkeys.
	PublicURL string
}

// CheckAndSetDefaults validates c and fills in defaults.
func (c *Config) CheckAndSetDefaults() error {
	if c.DB == nil || c.Keyring == nil {
		return errs.E("mfa.Config", errs.Internal, "no store or keyring")
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	if c.ChallengeTTL == 0 {
		c.ChallengeTTL = 5 * time.Minute
	}
	if c.ChallengeTries == 0 {
		c.ChallengeTries = 3
	}
	if c.MaxFailures == 0 {
		c.MaxFailures = 5
	}
	if c.LockDuration == 0 {
		c.LockDuration = 15 * time.Minute
	}
	return nil
}

// Service serves enrollment, the organization's policy and challenges.
type Service struct {
	cfg         Config
	codeKey     []byte // HMAC key for email codes, derived from the root key
	recoveryKey []byte // HMAC key for recovery codes, derived from the root key
	wa          *webauthn.WebAuthn
	origin      string // the public URL's origin
}

// LabelEmailCodeMAC names the derived key that hashes email codes.
const LabelEmailCodeMAC = "airlock/v1/mfa-email-code-mac"

// LabelRecoveryCodeMAC names the derived key that hashes recovery codes, so
// that a copy of the store alone cannot test guesses against them.
const LabelRecoveryCodeMAC = "airlock/v1/mfa-recovery-code-mac"

// New returns a Service.
func New(cfg Config) (*Service, error) {
	if err := cfg.CheckAndSetDefaults(); err != nil {
		return nil, err
	}
	key, err := cfg.Keyring.DeriveKey(LabelEmailCodeMAC)
	if err != nil {
		return nil, err
	}
	rkey, err := cfg.Keyring.DeriveKey(LabelRecoveryCodeMAC)
	if err != nil {
		return nil, err
	}
	s := &Service{cfg: cfg, codeKey: key, recoveryKey: rkey}
	if cfg.PublicURL != "" {
		if s.wa, s.origin, err = newRelyingParty(cfg.PublicURL); err != nil {
			return nil, errs.E("mfa.New", errs.Invalid, err.Error())
		}
	}
	return s, nil
}

// user returns the caller, who must be a user (not a machine identity).
func user(ctx context.Context, op string) (*api.Principal, error) {
	p, err := api.MustPrincipal(ctx)
	if err != nil {
		return nil, err
	}
	if p.Kind != api.SubjectUser {
		return nil, errs.E(op, errs.Forbidden, "machine identities have no second factor; MFA is for users")
	}
	return p, nil
}

// MFAStatus is a user's MFA state.
type MFAStatus struct {
	Methods           []EnrolledMFAMethod `json:"methods"`
	RecoveryCodesLeft int                 `json:"recoveryCodesLeft"`
	OrgMethod         string              `json:"orgMethod" enum:"none,totp,email,webauthn" doc:"the method the organization enforces"`
	RequireMFALogin   bool                `json:"requireMfaLogin" doc:"the organization requires a second factor at login"`
	LockedUntil       *time.Time          `json:"lockedUntil,omitempty" doc:"set while MFA is locked after wrong codes"`
}

// EnrolledMFAMethod is one confirmed method.
type EnrolledMFAMethod struct {
	Kind      string    `json:"kind" enum:"totp,webauthn"`
	CreatedAt time.Time `json:"createdAt"`
}

// Status returns the caller's methods.
func (s *Service) Status(ctx context.Context) (*MFAStatus, error) {
	const op = "mfa.(*Service).Status"
	p, err := user(ctx, op)
	if err != nil {
		return nil, err
	}
	st := &MFAStatus{Methods: []EnrolledMFAMethod{}}
	rows, err := s.cfg.DB.QueryContext(ctx, `SELECT kind, created_at FROM mfa_methods WHERE user_id = $1 AND confirmed ORDER BY kind`, p.ID)
	if err != nil {
		return nil, errs.Wrap(op, errs.Unavailable, "reading MFA methods failed", err)
	}
	defer rows.Close()
	for rows.Next() {
		var m EnrolledMFAMethod
		var created int64
		if err := rows.Scan(&m.Kind, &created); err != nil {
			return nil, errs.Wrap(op, errs.Unavailable, "reading MFA methods failed", err)
		}
		m.CreatedAt = store.Time(created)
		st.Methods = append(st.Methods, m)
	}
	if err := rows.Err(); err != nil {
		return nil, errs.Wrap(op, errs.Unavailable, "reading MFA methods failed", err)
	}
	var locked int64
	err = s.cfg.DB.QueryRowContext(ctx, `SELECT (SELECT COUNT(*) FROM mfa_recovery_codes WHERE user_id = $1 AND used_at = 0),
		u.mfa_locked_until, o.mfa_method, o.require_mfa_login FROM users u JOIN organizations o ON o.id = u.org_id WHERE u.id = $1`, p.ID).
		Scan(&st.RecoveryCodesLeft, &locked, &st.OrgMethod, &st.RequireMFALogin)
	if err != nil {
		return nil, errs.Wrap(op, errs.Unavailable, "reading MFA state failed", err)
	}
	if st.OrgMethod == "" {
		st.OrgMethod = MethodNone
	}
	if t := store.Time(locked); locked != 0 && s.cfg.Now().Before(t) {
		st.LockedUntil = &t
	}
	return st, nil
}

// CodeInput is the body of the operations that take a code: confirming
// TOTP (a code from the app), disabling a method (a current code of any
// enrolled method) and verifying a challenge (its TOTP or email code); a
// recovery code works in place of the latter two.
type CodeInput struct {
	Code string `json:"code" maxLength:"20" doc:"a TOTP or email code, or a recovery code, as the operation says"`
}

// Register adds the MFA operations to the API.
func (s *Service) Register(a huma.API) {
	tags := []string{"MFA"}
	huma.Register(a, huma.Operation{
		OperationID: "mfa-status", Method: http.MethodGet, Path: "/api/v1/mfa", Tags: tags,
		Summary: "The caller's second factors", Security: api.Secured, Errors: []int{403},
	}, func(ctx context.Context, _ *struct{}) (*struct{ Body *MFAStatus }, error) {
		st, err := s.Status(ctx)
		return &struct{ Body *MFAStatus }{st}, api.Err(ctx, err)
	})
	huma.Register(a, huma.Operation{
		OperationID: "mfa-enroll-totp", Method: http.MethodPost, Path: "/api/v1/mfa/totp", Tags: tags,
		Summary:  "Start enrolling TOTP: a new secret and its otpauth URI (confirm with a first code)",
		Security: api.Secured, DefaultStatus: http.StatusCreated, Errors: []int{403, 409},
	}, func(ctx context.Context, _ *struct{}) (*struct{ Body *TOTPEnrollment }, error) {
		e, err := s.EnrollTOTP(ctx)
		return &struct{ Body *TOTPEnrollment }{e}, api.Err(ctx, err)
	})
	huma.Register(a, huma.Operation{
		OperationID: "mfa-confirm-totp", Method: http.MethodPost, Path: "/api/v1/mfa/totp/confirm", Tags: tags,
		Summary:  "Turn TOTP on with a first code; the first method also returns ten recovery codes, once",
		Security: api.Secured, Errors: []int{403, 404, 422, 423},
	}, func(ctx context.Context, in *struct {
		Body CodeInput
	}) (*struct{ Body *TOTPConfirmed }, error) {
		c, err := s.ConfirmTOTP(ctx, in.Body.Code)
		return &struct{ Body *TOTPConfirmed }{c}, api.Err(ctx, err)
	})
	huma.Register(a, huma.Operation{
		OperationID: "mfa-disable", Method: http.MethodPost, Path: "/api/v1/mfa/{method}/disable", Tags: tags,
		Summary:  "Turn off one of the caller's methods; needs a current code (or a recovery code)",
		Security: api.Secured, DefaultStatus: http.StatusNoContent, Errors: []int{403, 404, 409, 422, 423},
	}, func(ctx context.Context, in *struct {
		Method string `path:"method" enum:"totp,webauthn"`
		Body   CodeInput
	}) (*struct{}, error) {
		return nil, api.Err(ctx, s.Disable(ctx, in.Method, in.Body.Code))
	})
	huma.Register(a, huma.Operation{
		OperationID: "mfa-reset-user", Method: http.MethodPost, Path: "/api/v1/users/{userId}/reset-mfa", Tags: tags,
		Summary:  "Remove every second factor and recovery code of a user (organization admins; a lost phone)",
		Security: api.Secured, DefaultStatus: http.StatusNoContent, Errors: []int{403, 404},
	}, func(ctx context.Context, in *struct {
		UserID string `path:"userId" maxLength:"64"`
	}) (*struct{}, error) {
		return nil, api.Err(ctx, s.Reset(ctx, in.UserID))
	})
	huma.Register(a, huma.Operation{
		OperationID: "mfa-verify-challenge", Method: http.MethodPost, Path: "/api/v1/mfa/challenges/{challengeId}/verify", Tags: tags,
		Summary: "Answer an MFA challenge with a code; then repeat the request that asked for it with mfaChallengeId",
		Description: "A wrong code answers 422 with the tries left; a used-up, expired, unknown or someone else's challenge 404; " +
			"a user locked after repeated wrong codes 423.",
		Security: api.Secured, Errors: []int{403, 404, 422, 423},
	}, func(ctx context.Context, in *struct {
		ChallengeID string `path:"challengeId" maxLength:"64"`
		Body        CodeInput
	}) (*struct{ Body *ChallengePassed }, error) {
		v, err := s.VerifyChallenge(ctx, in.ChallengeID, in.Body.Code)
		return &struct{ Body *ChallengePassed }{v}, api.Err(ctx, err)
	})
	s.registerPasskeys(a, tags)
	s.registerPolicy(a, tags)
}

// notFound reports whether err is sql.ErrNoRows.
func notFound(err error) bool { return errors.Is(err, sql.ErrNoRows) }
