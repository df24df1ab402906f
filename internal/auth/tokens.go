package auth

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"database/sql"
	"encoding/base64"
	"errors"
	"strings"
	"time"

	"github.com/google/uuid"

	"github.com/airlockpam/airlock/internal/api"
	"github.com/airlockpam/airlock/internal/errs"
	"github.com/airlockpam/airlock/internal/store"
)

const (
	tokenPrefix  = "alk_"
	kindAccess   = "access"
	kindRefresh  = "refresh"
	tokenRawSize = 32
)

// TokenPair is what a login returns.
type TokenPair struct {
	AccessToken      string    `json:"accessToken"`
	AccessExpiresAt  time.Time `json:"accessExpiresAt"`
	RefreshToken     string    `json:"refreshToken"`
	RefreshExpiresAt time.Time `json:"refreshExpiresAt"`
	TokenType        string    `json:"tokenType" example:"Bearer"`
}

func newToken() (raw string, hash []byte) {
	b := make([]byte, tokenRawSize)
	if _, err := rand.Read(b); err != nil {
		panic("crypto/rand failed: " + err.Error())
	}
	raw = tokenPrefix + base64.RawURLEncoding.EncodeToString(b)
	return raw, hashToken(raw)
}

func hashToken(raw string) []byte {
	h := sha256.Sum256([]byte(raw))
	return h[:]
}

// issue stores a new access and refresh token in family (a new family when "").
func (s *Service) issue(ctx context.Context, q store.Querier, subjectKind, subjectID, orgID, family string) (TokenPair, error) {
	const op = "auth.(*Service).issue"
	if family == "" {
		family = uuid.Must(uuid.NewV7()).String()
	}
	now := s.cfg.Now()
	pair := TokenPair{TokenType: "Bearer", AccessExpiresAt: now.Add(s.cfg.AccessTTL).UTC(), RefreshExpiresAt: now.Add(s.cfg.RefreshTTL).UTC()}
	var accessHash, refreshHash []byte
	pair.AccessToken, accessHash = newToken()
	pair.RefreshToken, refreshHash = newToken()
	for _, t := range []struct {
		kind string
		hash []byte
		exp  time.Time
	}{{kindAccess, accessHash, pair.AccessExpiresAt}, {kindRefresh, refreshHash, pair.RefreshExpiresAt}} {
		_, err := q.ExecContext(ctx, `INSERT INTO auth_tokens
			(id, kind, token_hash, family_id, subject_kind, subject_id, org_id, expires_at, created_at)
			VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)`,
			uuid.Must(uuid.NewV7()).String(), t.kind, t.hash, family, subjectKind, subjectID, orgID,
			store.Micros(t.exp), store.Micros(now))
		if err != nil {
			return TokenPair{}, errs.Wrap(op, errs.Unavailable, "storing the token failed", err)
		}
	}
	return pair, nil
}

type tokenRow struct {
	id, kind, family, subjectKind, subjectID, orgID string
	expires, revoked                                int64
	name                                            string
	orgAdmin, subjectExists, disabled               bool
}

func (s *Service) lookup(ctx context.Context, q store.Querier, raw string) (*tokenRow, error) {
	var r tokenRow
	err := q.QueryRowContext(ctx, `SELECT t.id, t.kind, t.family_id, t.subject_kind, t.subject_id, t.org_id, t.expires_at, t.revoked_at,
			COALESCE(u.email, m.name, ''), COALESCE(u.org_admin, FALSE), (u.id IS NOT NULL OR m.id IS NOT NULL),
			COALESCE(u.disabled, FALSE)
		FROM auth_tokens t
		LEFT JOIN users u ON t.subject_kind = 'user' AND u.id = t.subject_id AND u.org_id = t.org_id
		LEFT JOIN machine_identities m ON t.subject_kind = 'machine' AND m.id = t.subject_id AND m.org_id = t.org_id
		WHERE t.token_hash = $1`, hashToken(raw)).
		Scan(&r.id, &r.kind, &r.family, &r.subjectKind, &r.subjectID, &r.orgID, &r.expires, &r.revoked, &r.name, &r.orgAdmin, &r.subjectExists, &r.disabled)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	return &r, nil
}

// Authenticate resolves a bearer access token to its principal.
func (s *Service) Authenticate(ctx context.Context, raw string) (*api.Principal, error) {
	const op = "auth.(*Service).Authenticate"
	if !strings.HasPrefix(raw, tokenPrefix) || len(raw) > 200 {
		return nil, errs.E(op, errs.Unauthenticated, "the token is not an Airlock token: run `airlock login` to get one")
	}
	r, err := s.lookup(ctx, s.cfg.DB, raw)
	if err != nil {
		return nil, errs.Wrap(op, errs.Unavailable, "checking the token failed", err)
	}
	switch {
	case r == nil || r.kind != kindAccess || !r.subjectExists:
		return nil, errs.E(op, errs.Unauthenticated, "the token is not valid here: run `airlock login` again")
	case r.disabled:
		return nil, errs.E(op, errs.Unauthenticated, ErrDisabled)
	case r.revoked != 0:
		return nil, errs.E(op, errs.Unauthenticated, "the token was revoked (logged out, or an organization admin revoked your tokens): run `airlock login` again")
	case s.cfg.Now().After(store.Time(r.expires)):
		return nil, errs.E(op, errs.Unauthenticated, "the access token has expired: refresh it or run `airlock login` again")
	}
	return &api.Principal{Kind: r.subjectKind, ID: r.subjectID, OrgID: r.orgID, Name: r.name, OrgAdmin: r.orgAdmin, TokenFamily: r.family}, nil
}

// ErrDisabled is the message a disabled user gets.
const ErrDisabled = "this user is disabled; ask an organization admin to enable it"

// revokeFamily revokes every token of one login.
func (s *Service) revokeFamily(ctx context.Context, q store.Querier, family string) error {
	_, err := q.ExecContext(ctx, `UPDATE auth_tokens SET revoked_at = $1 WHERE family_id = $2 AND revoked_at = 0`,
		store.Micros(s.cfg.Now()), family)
	return err
}

// revokeSubject revokes every token of a user or machine identity.
func (s *Service) revokeSubject(ctx context.Context, q store.Querier, kind, id string) error {
	_, err := q.ExecContext(ctx, `UPDATE auth_tokens SET revoked_at = $1 WHERE subject_kind = $2 AND subject_id = $3 AND revoked_at = 0`,
		store.Micros(s.cfg.Now()), kind, id)
	return err
}
