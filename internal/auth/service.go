package auth

import (
	"context"
	"time"

	"github.com/danielgtaylor/huma/v2"

	"github.com/airlockpam/airlock/internal/errs"
	"github.com/airlockpam/airlock/internal/store"
)

// Config configures the identity service. Zero values take the defaults
// documented on each field.
type Config struct {
	DB *store.DB
	// Now is the clock; default time.Now.
	Now func() time.Time
	// AccessTTL is the lifetime of an access token; default 15 minutes.
	AccessTTL time.Duration
	// RefreshTTL is the lifetime of a refresh token; default 7 days.
	RefreshTTL time.Duration
	// MaxFailedLogins consecutive failures lock a user; default 5.
	MaxFailedLogins int
	// LockDuration is how long a locked user stays locked; default 15 minutes.
	LockDuration time.Duration
	// LoginsPerMinutePerAddress bounds login attempts from one client
	// address (burst of the same size); default 20.
	LoginsPerMinutePerAddress int
	// LoginsPerMinutePerAccount bounds login attempts for one email or
	// client id; default 10.
	LoginsPerMinutePerAccount int
}

// CheckAndSetDefaults validates cfg and fills in defaults.
func (c *Config) CheckAndSetDefaults() error {
	if c.DB == nil {
		return errs.E("auth.Config", errs.Internal, "no store")
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	if c.AccessTTL == 0 {
		c.AccessTTL = 15 * time.Minute
	}
	if c.RefreshTTL == 0 {
		c.RefreshTTL = 7 * 24 * time.Hour
	}
	if c.MaxFailedLogins == 0 {
		c.MaxFailedLogins = 5
	}
	if c.LockDuration == 0 {
		c.LockDuration = 15 * time.Minute
	}
	if c.LoginsPerMinutePerAddress == 0 {
		c.LoginsPerMinutePerAddress = 20
	}
	if c.LoginsPerMinutePerAccount == 0 {
		c.LoginsPerMinutePerAccount = 10
	}
	return nil
}

// Service serves logins, tokens, users and machine identities.
type Service struct {
	cfg       Config
	byAddress *limiter
	byAccount *limiter
	// revoked, when set, is called after a change that may take access
	// away commits (logout, reuse detection, a user disabled or deleted,
	// tokens revoked, a machine identity deleted).
	revoked func(ctx context.Context)
	// loginMFA, when set, is asked once a user's password is right (package
	// mfa's LoginGate).
	loginMFA LoginMFA
}

// LoginMFA checks the second factor of a user login whose password is
// right: it answers "" when none is needed, the method when the challenge
// given was passed, or the error that asks for a code (canAsk: the caller
// can ask for one; otherwise a plain refusal, and no challenge is made).
type LoginMFA func(ctx context.Context, orgID, userID, email, challengeID, code string, canAsk bool) (string, error)

// SetLoginMFA sets the second-factor check of user logins.
func (s *Service) SetLoginMFA(f LoginMFA) { s.loginMFA = f }

// OnAccessRevoked sets the function called after a change that may revoke
// live sessions' access commits (the session service's EnforceAccess).
func (s *Service) OnAccessRevoked(f func(ctx context.Context)) { s.revoked = f }

func (s *Service) accessRevoked(ctx context.Context) {
	if s.revoked != nil {
		s.revoked(ctx)
	}
}

// New returns a Service.
func New(cfg Config) (*Service, error) {
	if err := cfg.CheckAndSetDefaults(); err != nil {
		return nil, err
	}
	s := &Service{
		cfg:       cfg,
		byAddress: newLimiter(cfg.LoginsPerMinutePerAddress, cfg.LoginsPerMinutePerAddress),
		byAccount: newLimiter(cfg.LoginsPerMinutePerAccount, cfg.LoginsPerMinutePerAccount),
	}
	return s, nil
}

// Register adds the service's operations to the API.
func (s *Service) Register(a huma.API) {
	s.registerAuth(a)
	s.registerUsers(a)
	s.registerMachines(a)
}
