package mfa

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/danielgtaylor/huma/v2"
	"github.com/go-webauthn/webauthn/protocol"
	"github.com/go-webauthn/webauthn/webauthn"
	"github.com/google/uuid"

	"github.com/airlockpam/airlock/internal/api"
	"github.com/airlockpam/airlock/internal/audit"
	"github.com/airlockpam/airlock/internal/errs"
	"github.com/airlockpam/airlock/internal/store"
)

// Passkeys (WebAuthn). The relying party is the server's public URL: its
// host is the RP ID and its origin the only origin accepted. Every ceremony
// (a registration, or an assertion) is begun and finished through the
// store (mfa_webauthn_ceremonies), so any replica can finish it; each is
// single-use and lives as long as a challenge.

// ApprovalPath is the web page where a challenge answered with a passkey
// is approved; the challenge id follows it.
const ApprovalPath = "/mfa/approve/"

// Ceremony purposes.
const (
	purposeRegister  = "register"
	purposeChallenge = "challenge"
	purposeReauth    = "reauth"
)

// PublicOrigin returns the origin and the relying party id (host) of a
// public URL. A loopback IP address becomes "localhost": browsers refuse
// an IP address as a relying party id.
func PublicOrigin(publicURL string) (origin, rpID string, err error) {
	u, err := url.Parse(strings.TrimRight(publicURL, "/"))
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || (u.Path != "" && u.Path != "/") || u.RawQuery != "" {
		return "", "", fmt.Errorf("the public URL %q is not a URL like https://airlock.example.com (scheme and host, no path)", publicURL)
	}
	host := u.Hostname()
	if ip := net.ParseIP(host); ip != nil {
		if !ip.IsLoopback() && !ip.IsUnspecified() {
			return "", "", fmt.Errorf("the public URL %q has an IP address for its host: passkeys need a domain name (set --public-url to https://<name>)", publicURL)
		}
		host = "localhost"
	}
	origin = u.Scheme + "://" + host
	if p := u.Port(); p != "" {
		origin += ":" + p
	}
	return origin, host, nil
}

// newRelyingParty makes the WebAuthn relying party of a public URL.
func newRelyingParty(publicURL string) (*webauthn.WebAuthn, string, error) {
	origin, rpID, err := PublicOrigin(publicURL)
	if err != nil {
		return nil, "", err
	}
	wa, err := webauthn.New(&webauthn.Config{RPID: rpID, RPDisplayName: "Airlock", RPOrigins: []string{origin},
		AttestationPreference: protocol.PreferNoAttestation})
	if err != nil {
		return nil, "", fmt.Errorf("passkeys cannot use the public URL %q: %w", publicURL, err)
	}
	return wa, origin, nil
}

// SetPublicURL sets the public URL when the configuration had none (the
// server's own listen URL, known once it listens); call it before serving.
func (s *Service) SetPublicURL(publicURL string) error {
	wa, origin, err := newRelyingParty(publicURL)
	if err != nil {
		return err
	}
	s.wa, s.origin = wa, origin
	return nil
}

// PublicURL is the URL users reach the server at (its origin), as passkeys
// and approval links use it.
func (s *Service) PublicURL() string { return s.origin }

// ApprovalURL is the web page that approves challenge id with a passkey.
func (s *Service) ApprovalURL(id string) string { return s.origin + ApprovalPath + id }

// waUser is a user as the WebAuthn library sees it.
type waUser struct {
	id, email string
	creds     []webauthn.Credential
}

func (u *waUser) WebAuthnID() []byte                         { return []byte(u.id) }
func (u *waUser) WebAuthnName() string                       { return u.email }
func (u *waUser) WebAuthnDisplayName() string                { return u.email }
func (u *waUser) WebAuthnCredentials() []webauthn.Credential { return u.creds }

// Passkey is one of a user's registered passkeys.
type Passkey struct {
	ID         string     `json:"id"`
	Name       string     `json:"name"`
	CreatedAt  time.Time  `json:"createdAt"`
	LastUsedAt *time.Time `json:"lastUsedAt,omitempty"`
}

// PasskeyCeremony is a begun WebAuthn ceremony: its id (to finish it with)
// and the options to pass to navigator.credentials.create or .get.
type PasskeyCeremony struct {
	ID        string          `json:"id" doc:"finish the ceremony with this id"`
	Options   json.RawMessage `json:"options" doc:"the options for navigator.credentials.create (publicKey) or .get, binary fields base64url"`
	ExpiresAt time.Time       `json:"expiresAt"`
}

// PasskeyRegistered is the answer to a finished registration.
type PasskeyRegistered struct {
	Passkey       Passkey  `json:"passkey"`
	RecoveryCodes []string `json:"recoveryCodes,omitempty" doc:"shown once, at the first enrollment: each works once in place of a code"`
}

// ChallengeStatus is the state of one of the caller's challenges, for a
// client waiting for it to be approved in the browser.
type ChallengeStatus struct {
	ChallengeID string    `json:"challengeId"`
	Method      string    `json:"method"`
	Status      string    `json:"status" enum:"pending,approved,used,expired,failed" doc:"approved: repeat the request with mfaChallengeId"`
	For         string    `json:"for" doc:"what the challenge opens: an account name, or a login"`
	ExpiresAt   time.Time `json:"expiresAt"`
	ApprovalURL string    `json:"approvalUrl,omitempty" doc:"for a passkey: the page that approves it"`
}

func (s *Service) relyingParty(op string) (*webauthn.WebAuthn, error) {
	if s.wa == nil {
		return nil, errs.E(op, errs.Unavailable, "passkeys are not available: the server has no public URL (its operator sets --public-url)")
	}
	return s.wa, nil
}

// loadUser reads a user and their passkeys.
func (s *Service) loadUser(ctx context.Context, q store.Querier, userID string) (*waUser, map[string]string, error) {
	u := &waUser{id: userID}
	if err := q.QueryRowContext(ctx, `SELECT email FROM users WHERE id = $1`, userID).Scan(&u.email); err != nil {
		return nil, nil, err
	}
	rows, err := q.QueryContext(ctx, `SELECT id, credential_id, public_key, sign_count, data FROM mfa_passkeys WHERE user_id = $1 ORDER BY created_at`, userID)
	if err != nil {
		return nil, nil, err
	}
	defer rows.Close()
	ids := map[string]string{} // credential id -> row id
	for rows.Next() {
		var id, data string
		var cid, pk []byte
		var count int64
		if err := rows.Scan(&id, &cid, &pk, &count, &data); err != nil {
			return nil, nil, err
		}
		var c webauthn.Credential
		if err := json.Unmarshal([]byte(data), &c); err != nil {
			return nil, nil, fmt.Errorf("passkey %s: %w", id, err)
		}
		c.ID, c.PublicKey, c.Authenticator.SignCount = cid, pk, uint32(count)
		u.creds = append(u.creds, c)
		ids[string(cid)] = id
	}
	return u, ids, rows.Err()
}

// saveCeremony stores a begun ceremony.
func (s *Service) saveCeremony(ctx context.Context, q store.Querier, userID, purpose, challengeID string, sd *webauthn.SessionData, expires time.Time) (string, error) {
	data, err := json.Marshal(sd)
	if err != nil {
		return "", err
	}
	id := uuid.Must(uuid.NewV7()).String()
	now := s.cfg.Now()
	if _, err := q.ExecContext(ctx, `DELETE FROM mfa_webauthn_ceremonies WHERE user_id = $1 AND expires_at < $2`, userID, store.Micros(now)); err != nil {
		return "", err
	}
	_, err = q.ExecContext(ctx, `INSERT INTO mfa_webauthn_ceremonies (id, user_id, purpose, challenge_id, session, expires_at) VALUES ($1, $2, $3, $4, $5, $6)`,
		id, userID, purpose, challengeID, string(data), store.Micros(expires))
	return id, err
}

// takeCeremony deletes and returns a live ceremony of the user (single use).
func (s *Service) takeCeremony(ctx context.Context, tx *sql.Tx, id, userID, purpose, challengeID string) (*webauthn.SessionData, error) {
	var data string
	err := tx.QueryRowContext(ctx, `DELETE FROM mfa_webauthn_ceremonies WHERE id = $1 AND user_id = $2 AND purpose = $3 AND challenge_id = $4 AND expires_at > $5 RETURNING session`,
		id, userID, purpose, challengeID, store.Micros(s.cfg.Now())).Scan(&data)
	if err != nil {
		return nil, err
	}
	var sd webauthn.SessionData
	if err := json.Unmarshal([]byte(data), &sd); err != nil {
		return nil, err
	}
	return &sd, nil
}

func ceremonyOptions(v any, expires time.Time, id string) (*PasskeyCeremony, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return nil, err
	}
	return &PasskeyCeremony{ID: id, Options: b, ExpiresAt: expires}, nil
}

// BeginPasskeyRegistration starts registering a new passkey for the caller.
func (s *Service) BeginPasskeyRegistration(ctx context.Context) (*PasskeyCeremony, error) {
	const op = "mfa.(*Service).BeginPasskeyRegistration"
	p, err := user(ctx, op)
	if err != nil {
		return nil, err
	}
	wa, err := s.relyingParty(op)
	if err != nil {
		return nil, err
	}
	u, _, err := s.loadUser(ctx, s.cfg.DB, p.ID)
	if err != nil {
		return nil, errs.Wrap(op, errs.Unavailable, "reading your passkeys failed", err)
	}
	exclude := make([]protocol.CredentialDescriptor, 0, len(u.creds))
	for i := range u.creds {
		exclude = append(exclude, u.creds[i].Descriptor())
	}
	expires := s.cfg.Now().Add(s.cfg.ChallengeTTL)
	creation, sd, err := wa.BeginRegistration(u, webauthn.WithExclusions(exclude),
		webauthn.WithResidentKeyRequirement(protocol.ResidentKeyRequirementPreferred))
	if err != nil {
		return nil, errs.Wrap(op, errs.Internal, "starting the passkey registration failed", err)
	}
	id, err := s.saveCeremony(ctx, s.cfg.DB, p.ID, purposeRegister, "", sd, expires)
	if err != nil {
		return nil, errs.Wrap(op, errs.Unavailable, "starting the passkey registration failed", err)
	}
	out, err := ceremonyOptions(creation, expires, id)
	if err != nil {
		return nil, errs.Wrap(op, errs.Internal, "starting the passkey registration failed", err)
	}
	return out, nil
}

// FinishPasskeyRegistration checks the browser's new credential for a
// registration the caller began and stores it under name. The first method
// also makes ten recovery codes, returned once.
func (s *Service) FinishPasskeyRegistration(ctx context.Context, ceremonyID, name string, credential json.RawMessage) (*PasskeyRegistered, error) {
	const op = "mfa.(*Service).FinishPasskeyRegistration"
	p, err := user(ctx, op)
	if err != nil {
		return nil, err
	}
	wa, err := s.relyingParty(op)
	if err != nil {
		return nil, err
	}
	name = strings.TrimSpace(name)
	if name == "" {
		name = "Passkey"
	}
	if len(name) > 64 {
		return nil, errs.InvalidField(op, "body.name", "a passkey's name is at most 64 characters")
	}
	parsed, err := protocol.ParseCredentialCreationResponseBytes(credential)
	if err != nil {
		return nil, errs.InvalidField(op, "body.credential", "the credential is not what navigator.credentials.create returns (as JSON, binary fields base64url)")
	}
	var refusal error
	out := &PasskeyRegistered{}
	err = s.cfg.DB.InTx(ctx, func(tx *sql.Tx) error {
		refusal, out.RecoveryCodes = nil, nil
		sd, err := s.takeCeremony(ctx, tx, ceremonyID, p.ID, purposeRegister, "")
		if notFound(err) {
			refusal = errs.E(op, errs.NotFound, "no such passkey registration waiting (unknown, used, expired, or someone else's): start again")
			return nil
		}
		if err != nil {
			return err
		}
		u, _, err := s.loadUser(ctx, tx, p.ID)
		if err != nil {
			return err
		}
		cred, err := wa.CreateCredential(u, *sd, parsed)
		if err != nil {
			refusal = errs.InvalidField(op, "body.credential", "the passkey was not accepted (wrong site, wrong ceremony or a bad signature): start again")
			return nil
		}
		data, err := json.Marshal(cred)
		if err != nil {
			return err
		}
		var taken int
		if err := tx.QueryRowContext(ctx, `SELECT COUNT(*) FROM mfa_passkeys WHERE credential_id = $1`, cred.ID).Scan(&taken); err != nil {
			return err
		}
		if taken > 0 { // checked first: on PostgreSQL a failed insert ends the transaction
			refusal = errs.E(op, errs.Conflict, "this passkey is already registered")
			return nil
		}
		now := s.cfg.Now()
		id := uuid.Must(uuid.NewV7()).String()
		if _, err := tx.ExecContext(ctx, `INSERT INTO mfa_passkeys (id, user_id, credential_id, public_key, sign_count, name, data, created_at, last_used_at)
			VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 0)`, id, p.ID, cred.ID, cred.PublicKey, int64(cred.Authenticator.SignCount), name, string(data), store.Micros(now)); err != nil {
			return err
		}
		out.Passkey = Passkey{ID: id, Name: name, CreatedAt: now}
		if err := s.ensureWebAuthnMethod(ctx, tx, p.ID, now); err != nil {
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
			Details: map[string]any{"method": MethodWebAuthn, "passkey": id, "name": name, "recoveryCodesMade": len(out.RecoveryCodes)}}))
	})
	if err != nil {
		return nil, errs.Wrap(op, errs.Unavailable, "saving the passkey failed", err)
	}
	if refusal != nil {
		return nil, refusal
	}
	return out, nil
}

// ensureWebAuthnMethod marks webauthn as one of the user's methods (a row
// of mfa_methods, as TOTP has, so that status, the method choice and the
// last-method checks see it).
func (s *Service) ensureWebAuthnMethod(ctx context.Context, tx *sql.Tx, userID string, now time.Time) error {
	var n int
	if err := tx.QueryRowContext(ctx, `SELECT COUNT(*) FROM mfa_methods WHERE user_id = $1 AND kind = $2`, userID, MethodWebAuthn).Scan(&n); err != nil || n > 0 {
		return err
	}
	_, err := tx.ExecContext(ctx, `INSERT INTO mfa_methods (id, user_id, kind, secret_enc, confirmed, last_step, created_at) VALUES ($1, $2, $3, $4, TRUE, 0, $5)`,
		uuid.Must(uuid.NewV7()).String(), userID, MethodWebAuthn, []byte{}, store.Micros(now))
	return err
}

// ListPasskeys returns the caller's passkeys.
func (s *Service) ListPasskeys(ctx context.Context) ([]Passkey, error) {
	const op = "mfa.(*Service).ListPasskeys"
	p, err := user(ctx, op)
	if err != nil {
		return nil, err
	}
	rows, err := s.cfg.DB.QueryContext(ctx, `SELECT id, name, created_at, last_used_at FROM mfa_passkeys WHERE user_id = $1 ORDER BY created_at`, p.ID)
	if err != nil {
		return nil, errs.Wrap(op, errs.Unavailable, "reading your passkeys failed", err)
	}
	defer rows.Close()
	out := []Passkey{}
	for rows.Next() {
		var k Passkey
		var created, used int64
		if err := rows.Scan(&k.ID, &k.Name, &created, &used); err != nil {
			return nil, errs.Wrap(op, errs.Unavailable, "reading your passkeys failed", err)
		}
		k.CreatedAt = store.Time(created)
		if used != 0 {
			t := store.Time(used)
			k.LastUsedAt = &t
		}
		out = append(out, k)
	}
	if err := rows.Err(); err != nil {
		return nil, errs.Wrap(op, errs.Unavailable, "reading your passkeys failed", err)
	}
	return out, nil
}

// BeginPasskeyAssertion starts a passkey assertion that proves the caller
// (to remove a passkey, or to disable a method).
func (s *Service) BeginPasskeyAssertion(ctx context.Context) (*PasskeyCeremony, error) {
	const op = "mfa.(*Service).BeginPasskeyAssertion"
	p, err := user(ctx, op)
	if err != nil {
		return nil, err
	}
	return s.beginAssertion(ctx, op, p.ID, purposeReauth, "")
}

func (s *Service) beginAssertion(ctx context.Context, op, userID, purpose, challengeID string) (*PasskeyCeremony, error) {
	wa, err := s.relyingParty(op)
	if err != nil {
		return nil, err
	}
	u, _, err := s.loadUser(ctx, s.cfg.DB, userID)
	if err != nil {
		return nil, errs.Wrap(op, errs.Unavailable, "reading your passkeys failed", err)
	}
	if len(u.creds) == 0 {
		return nil, errs.E(op, errs.NotFound, "you have no passkey: add one on the web UI's MFA page (/mfa), or use a code")
	}
	expires := s.cfg.Now().Add(s.cfg.ChallengeTTL)
	assertion, sd, err := wa.BeginLogin(u, webauthn.WithUserVerification(protocol.VerificationPreferred))
	if err != nil {
		return nil, errs.Wrap(op, errs.Internal, "starting the passkey check failed", err)
	}
	id, err := s.saveCeremony(ctx, s.cfg.DB, userID, purpose, challengeID, sd, expires)
	if err != nil {
		return nil, errs.Wrap(op, errs.Unavailable, "starting the passkey check failed", err)
	}
	out, err := ceremonyOptions(assertion, expires, id)
	if err != nil {
		return nil, errs.Wrap(op, errs.Internal, "starting the passkey check failed", err)
	}
	return out, nil
}

// errBadAssertion is a refused assertion (the caller answers it).
var errBadAssertion = errs.InvalidField("mfa.passkey", "body.credential", "the passkey did not prove it is yours (wrong passkey, site or ceremony): try again")

// useAssertion checks an assertion for a ceremony of the user, updates the
// passkey's counter and returns the passkey's row id. A refusal is
// errBadAssertion or a not-found error; others are store failures.
func (s *Service) useAssertion(ctx context.Context, tx *sql.Tx, userID, purpose, challengeID, ceremonyID string, credential json.RawMessage) (string, error) {
	wa, err := s.relyingParty("mfa.passkey")
	if err != nil {
		return "", err
	}
	parsed, err := protocol.ParseCredentialRequestResponseBytes(credential)
	if err != nil {
		return "", errs.InvalidField("mfa.passkey", "body.credential", "the credential is not what navigator.credentials.get returns (as JSON, binary fields base64url)")
	}
	sd, err := s.takeCeremony(ctx, tx, ceremonyID, userID, purpose, challengeID)
	if notFound(err) {
		return "", errs.E("mfa.passkey", errs.NotFound, "no such passkey check waiting (unknown, used, expired, or someone else's): start again")
	}
	if err != nil {
		return "", err
	}
	u, ids, err := s.loadUser(ctx, tx, userID)
	if err != nil {
		return "", err
	}
	cred, err := wa.ValidateLogin(u, *sd, parsed)
	if err != nil || cred.Authenticator.CloneWarning {
		return "", errBadAssertion
	}
	id := ids[string(cred.ID)]
	if id == "" || !bytes.Equal(parsed.RawID, cred.ID) {
		return "", errBadAssertion
	}
	if _, err := tx.ExecContext(ctx, `UPDATE mfa_passkeys SET sign_count = $1, last_used_at = $2 WHERE id = $3`,
		int64(cred.Authenticator.SignCount), store.Micros(s.cfg.Now()), id); err != nil {
		return "", err
	}
	return id, nil
}

// isRefusal tells a refused input (answered to the caller) from a failure.
func isRefusal(err error) bool {
	return errs.Is(err, errs.Invalid) || errs.Is(err, errs.NotFound)
}

// RemovePasskey removes one of the caller's passkeys. It needs a current
// second factor: a code (TOTP or recovery), or a passkey assertion begun
// with BeginPasskeyAssertion.
func (s *Service) RemovePasskey(ctx context.Context, passkeyID, code, assertionID string, assertion json.RawMessage) error {
	const op = "mfa.(*Service).RemovePasskey"
	p, err := user(ctx, op)
	if err != nil {
		return err
	}
	if err := s.checkLocked(ctx, op, p.ID); err != nil {
		return err
	}
	code = normalizeCode(code)
	if code == "" && (assertionID == "" || len(assertion) == 0) {
		return errs.InvalidField(op, "body.code", "removing a passkey needs a current second factor: a code (TOTP or recovery), or a passkey check (assertionId and credential)")
	}
	var refusal error
	var wrong bool
	err = s.cfg.DB.InTx(ctx, func(tx *sql.Tx) error {
		refusal, wrong = nil, false
		var name string
		err := tx.QueryRowContext(ctx, `SELECT name FROM mfa_passkeys WHERE id = $1 AND user_id = $2`, passkeyID, p.ID).Scan(&name)
		if notFound(err) {
			refusal = errs.E(op, errs.NotFound, "no such passkey of yours (see the MFA page or GET /api/v1/mfa/passkeys)")
			return nil
		}
		if err != nil {
			return err
		}
		var orgMethod string
		var loginMFA bool
		var keys, all int
		if err := tx.QueryRowContext(ctx, `SELECT o.mfa_method, o.require_mfa_login,
			(SELECT COUNT(*) FROM mfa_passkeys k WHERE k.user_id = u.id),
			(SELECT COUNT(*) FROM mfa_methods m WHERE m.user_id = u.id AND m.confirmed)
			FROM users u JOIN organizations o ON o.id = u.org_id WHERE u.id = $1`, p.ID).Scan(&orgMethod, &loginMFA, &keys, &all); err != nil {
			return err
		}
		if keys == 1 && orgMethod == MethodWebAuthn {
			refusal = errs.E(op, errs.Conflict, "your organization requires passkeys and this is your last one: add another passkey first")
			return nil
		}
		if keys == 1 && loginMFA && all == 1 {
			refusal = errs.E(op, errs.Conflict, "your organization requires a second factor at login and this passkey is your last method: enroll another first")
			return nil
		}
		proved := ""
		if code != "" {
			if proved, err = s.useFactor(ctx, tx, p.ID, code); err != nil {
				return err
			}
			wrong = proved == ""
		} else {
			if _, err := s.useAssertion(ctx, tx, p.ID, purposeReauth, "", assertionID, assertion); err != nil {
				if isRefusal(err) {
					refusal = err
					return nil
				}
				return err
			}
			proved = MethodWebAuthn
		}
		if wrong {
			return nil
		}
		if _, err := tx.ExecContext(ctx, `DELETE FROM mfa_passkeys WHERE id = $1`, passkeyID); err != nil {
			return err
		}
		if keys == 1 {
			if err := s.dropMethod(ctx, tx, p.ID, MethodWebAuthn); err != nil {
				return err
			}
		}
		return audit.Record(ctx, tx, audit.By(ctx, audit.Entry{Action: "mfa.disable", TargetKind: api.SubjectUser, TargetID: p.ID,
			Details: map[string]any{"method": MethodWebAuthn, "passkey": passkeyID, "name": name, "provedWith": proved}}))
	})
	if err != nil {
		return errs.Wrap(op, errs.Unavailable, "removing the passkey failed", err)
	}
	if refusal != nil {
		return refusal
	}
	if wrong {
		if err := s.recordFailure(ctx, p, MethodWebAuthn, "mfa.disable", ""); err != nil {
			return err
		}
		return errs.InvalidField(op, "body.code", "the code does not match a current TOTP code or an unused recovery code")
	}
	return nil
}

// dropMethod removes a method row, and the recovery codes with the last
// method.
func (s *Service) dropMethod(ctx context.Context, tx *sql.Tx, userID, method string) error {
	if _, err := tx.ExecContext(ctx, `DELETE FROM mfa_methods WHERE user_id = $1 AND kind = $2`, userID, method); err != nil {
		return err
	}
	var left int
	if err := tx.QueryRowContext(ctx, `SELECT COUNT(*) FROM mfa_methods WHERE user_id = $1 AND confirmed`, userID).Scan(&left); err != nil {
		return err
	}
	if left == 0 {
		_, err := tx.ExecContext(ctx, `DELETE FROM mfa_recovery_codes WHERE user_id = $1`, userID)
		return err
	}
	return nil
}

// challengeOf reads a challenge of userID (an access challenge, or a
// login's own, whose account is "").
func (s *Service) challengeOf(ctx context.Context, q store.Querier, id, userID string) (method, accountID string, failures int, expires, approved, used int64, err error) {
	err = q.QueryRowContext(ctx, `SELECT method, account_id, failures, expires_at, approved_at, used_at FROM mfa_challenges WHERE id = $1 AND user_id = $2`,
		id, userID).Scan(&method, &accountID, &failures, &expires, &approved, &used)
	return
}

func (s *Service) challengeState(method string, failures int, expires, approved, used int64) string {
	switch {
	case approved != 0 && used == 0 && s.cfg.Now().Before(store.Time(expires)):
		return "approved"
	case used != 0 && approved != 0:
		return "used"
	case used != 0 || failures >= s.cfg.ChallengeTries:
		return "failed"
	case !s.cfg.Now().Before(store.Time(expires)):
		return "expired"
	}
	return "pending"
}

// ChallengeStatusOf returns the state of one of the caller's challenges (a
// CLI polls it while the user approves it in the browser).
func (s *Service) ChallengeStatusOf(ctx context.Context, id string) (*ChallengeStatus, error) {
	const op = "mfa.(*Service).ChallengeStatusOf"
	p, err := user(ctx, op)
	if err != nil {
		return nil, err
	}
	method, accountID, failures, expires, approved, used, err := s.challengeOf(ctx, s.cfg.DB, id, p.ID)
	if notFound(err) {
		return nil, errs.E(op, errs.NotFound, "no such MFA challenge of yours (unknown or someone else's): repeat the request for a new one")
	}
	if err != nil {
		return nil, errs.Wrap(op, errs.Unavailable, "reading the MFA challenge failed", err)
	}
	st := &ChallengeStatus{ChallengeID: id, Method: method, Status: s.challengeState(method, failures, expires, approved, used),
		ExpiresAt: store.Time(expires), For: "a login"}
	if accountID != "" {
		var name string
		if err := s.cfg.DB.QueryRowContext(ctx, `SELECT name FROM accounts WHERE id = $1`, accountID).Scan(&name); err == nil {
			st.For = "account " + name
		} else {
			st.For = "an account"
		}
	}
	if method == MethodWebAuthn && s.wa != nil {
		st.ApprovalURL = s.ApprovalURL(id)
	}
	return st, nil
}

// BeginChallengePasskey starts the passkey assertion that approves one of
// the caller's access challenges. The caller may be signed in elsewhere
// than the login the challenge is for (the browser approves what the CLI
// asked): the passkey proves the user, and the approval still opens only
// that login's request for that account.
func (s *Service) BeginChallengePasskey(ctx context.Context, challengeID string) (*PasskeyCeremony, error) {
	const op = "mfa.(*Service).BeginChallengePasskey"
	p, err := user(ctx, op)
	if err != nil {
		return nil, err
	}
	if err := s.checkLocked(ctx, op, p.ID); err != nil {
		return nil, err
	}
	if err := s.pendingChallenge(ctx, op, challengeID, p.ID); err != nil {
		return nil, err
	}
	return s.beginAssertion(ctx, op, p.ID, purposeChallenge, challengeID)
}

// pendingChallenge fails unless the challenge of userID waits for an answer.
func (s *Service) pendingChallenge(ctx context.Context, op, id, userID string) error {
	method, _, failures, expires, approved, used, err := s.challengeOf(ctx, s.cfg.DB, id, userID)
	if notFound(err) {
		return errs.E(op, errs.NotFound, "no such MFA challenge of yours (unknown or someone else's): repeat the request for a new one")
	}
	if err != nil {
		return errs.Wrap(op, errs.Unavailable, "reading the MFA challenge failed", err)
	}
	switch s.challengeState(method, failures, expires, approved, used) {
	case "approved":
		return errs.E(op, errs.Conflict, "this MFA challenge is already approved: the request that asked for it can go on")
	case "used", "failed":
		return errs.E(op, errs.Conflict, "this MFA challenge is used up: repeat the request for a new one")
	case "expired":
		return errs.Ef(op, errs.Conflict, "this MFA challenge has expired (challenges last %s): repeat the request for a new one", s.cfg.ChallengeTTL)
	}
	return nil
}

// VerifyChallengePasskey approves one of the caller's challenges with a
// passkey assertion begun by BeginChallengePasskey.
func (s *Service) VerifyChallengePasskey(ctx context.Context, challengeID, ceremonyID string, credential json.RawMessage) (*ChallengePassed, error) {
	const op = "mfa.(*Service).VerifyChallengePasskey"
	p, err := user(ctx, op)
	if err != nil {
		return nil, err
	}
	return s.approveWithPasskey(ctx, op, p, challengeID, ceremonyID, credential)
}

// BeginLoginPasskey and VerifyLoginPasskey approve a login's own challenge
// (no account) with a passkey, before the login is repeated with its id
// (the web UI's sign-in; there is no principal yet: the passkey proves the
// user the challenge was made for, after their password).
func (s *Service) BeginLoginPasskey(ctx context.Context, challengeID string) (*PasskeyCeremony, error) {
	const op = "mfa.(*Service).BeginLoginPasskey"
	userID, err := s.loginChallengeUser(ctx, op, challengeID)
	if err != nil {
		return nil, err
	}
	if err := s.checkLocked(ctx, op, userID); err != nil {
		return nil, err
	}
	if err := s.pendingChallenge(ctx, op, challengeID, userID); err != nil {
		return nil, err
	}
	return s.beginAssertion(ctx, op, userID, purposeChallenge, challengeID)
}

// VerifyLoginPasskey: see BeginLoginPasskey.
func (s *Service) VerifyLoginPasskey(ctx context.Context, challengeID, ceremonyID string, credential json.RawMessage) error {
	const op = "mfa.(*Service).VerifyLoginPasskey"
	userID, err := s.loginChallengeUser(ctx, op, challengeID)
	if err != nil {
		return err
	}
	var orgID, email string
	if err := s.cfg.DB.QueryRowContext(ctx, `SELECT org_id, email FROM users WHERE id = $1`, userID).Scan(&orgID, &email); err != nil {
		return errs.Wrap(op, errs.Unavailable, "reading the user failed", err)
	}
	p := &api.Principal{Kind: api.SubjectUser, ID: userID, OrgID: orgID, Name: email}
	_, err = s.approveWithPasskey(api.WithPrincipal(ctx, p), op, p, challengeID, ceremonyID, credential)
	return err
}

func (s *Service) loginChallengeUser(ctx context.Context, op, challengeID string) (string, error) {
	var userID string
	err := s.cfg.DB.QueryRowContext(ctx, `SELECT user_id FROM mfa_challenges WHERE id = $1 AND account_id = '' AND token_family = ''`, challengeID).Scan(&userID)
	if notFound(err) {
		return "", errs.E(op, errs.NotFound, "no such sign-in challenge: sign in again")
	}
	if err != nil {
		return "", errs.Wrap(op, errs.Unavailable, "reading the MFA challenge failed", err)
	}
	return userID, nil
}

func (s *Service) approveWithPasskey(ctx context.Context, op string, p *api.Principal, challengeID, ceremonyID string, credential json.RawMessage) (*ChallengePassed, error) {
	if err := s.checkLocked(ctx, op, p.ID); err != nil {
		return nil, err
	}
	var refusal error
	var out *ChallengePassed
	var targetKind, targetID string
	err := s.cfg.DB.InTx(ctx, func(tx *sql.Tx) error {
		refusal, out = nil, nil
		method, accountID, failures, expires, approved, used, err := s.challengeOf(ctx, tx, challengeID, p.ID)
		if notFound(err) {
			refusal = errs.E(op, errs.NotFound, "no such MFA challenge of yours (unknown or someone else's): repeat the request for a new one")
			return nil
		}
		if err != nil {
			return err
		}
		targetKind, targetID = "account", accountID
		if accountID == "" {
			targetKind, targetID = api.SubjectUser, p.ID
		}
		if st := s.challengeState(method, failures, expires, approved, used); st != "pending" {
			refusal = errs.Ef(op, errs.Conflict, "this MFA challenge is %s: repeat the request for a new one", st)
			return nil
		}
		passkey, err := s.useAssertion(ctx, tx, p.ID, purposeChallenge, challengeID, ceremonyID, credential)
		if err != nil {
			if isRefusal(err) {
				refusal = err
				return nil
			}
			return err
		}
		now := s.cfg.Now()
		res, err := tx.ExecContext(ctx, `UPDATE mfa_challenges SET approved_at = $1, method = $2 WHERE id = $3 AND approved_at = 0 AND used_at = 0`,
			store.Micros(now), MethodWebAuthn, challengeID)
		if err != nil {
			return err
		}
		if n, _ := res.RowsAffected(); n != 1 {
			refusal = errs.E(op, errs.Conflict, "this MFA challenge was answered meanwhile: repeat the request if it still asks")
			return nil
		}
		if _, err := tx.ExecContext(ctx, `UPDATE users SET mfa_failures = 0 WHERE id = $1`, p.ID); err != nil {
			return err
		}
		out = &ChallengePassed{ChallengeID: challengeID, Method: MethodWebAuthn, ExpiresAt: store.Time(expires)}
		return audit.Record(ctx, tx, audit.By(ctx, audit.Entry{Action: "mfa.verify", TargetKind: targetKind, TargetID: targetID,
			Details: map[string]any{"method": MethodWebAuthn, "challenge": challengeID, "passkey": passkey}}))
	})
	if err != nil {
		return nil, errs.Wrap(op, errs.Unavailable, "checking the passkey failed", err)
	}
	if refusal != nil {
		if errs.Is(refusal, errs.Invalid) {
			_ = audit.RecordNow(ctx, s.cfg.DB, audit.By(ctx, audit.Entry{Action: "mfa.verify", Outcome: audit.Failure, TargetKind: targetKind,
				TargetID: targetID, Details: map[string]any{"method": MethodWebAuthn, "challenge": challengeID, "reason": "passkey refused"}}))
		}
		return nil, refusal
	}
	return out, nil
}

// PasskeyAssertionInput is a finished passkey assertion.
type PasskeyAssertionInput struct {
	AssertionID string          `json:"assertionId" maxLength:"64" doc:"the id of the begun passkey check"`
	Credential  json.RawMessage `json:"credential" doc:"what navigator.credentials.get returned, as JSON (binary fields base64url)"`
}

func (s *Service) registerPasskeys(a huma.API, tags []string) {
	huma.Register(a, huma.Operation{
		OperationID: "mfa-begin-passkey-registration", Method: http.MethodPost, Path: "/api/v1/mfa/passkey-registrations", Tags: tags,
		Summary:  "Start registering a passkey: the options for navigator.credentials.create (finish within 5 minutes)",
		Security: api.Secured, DefaultStatus: http.StatusCreated, Errors: []int{403, 503},
	}, func(ctx context.Context, _ *struct{}) (*struct{ Body *PasskeyCeremony }, error) {
		c, err := s.BeginPasskeyRegistration(ctx)
		return &struct{ Body *PasskeyCeremony }{c}, api.Err(ctx, err)
	})
	huma.Register(a, huma.Operation{
		OperationID: "mfa-finish-passkey-registration", Method: http.MethodPost, Path: "/api/v1/mfa/passkey-registrations/{registrationId}/finish", Tags: tags,
		Summary:  "Store the new passkey; the first method also returns ten recovery codes, once",
		Security: api.Secured, DefaultStatus: http.StatusCreated, Errors: []int{403, 404, 409, 422, 503},
	}, func(ctx context.Context, in *struct {
		RegistrationID string `path:"registrationId" maxLength:"64"`
		Body           struct {
			Name       string          `json:"name,omitempty" maxLength:"200" doc:"a name to tell it by (default Passkey)"`
			Credential json.RawMessage `json:"credential" doc:"what navigator.credentials.create returned, as JSON (binary fields base64url)"`
		}
	}) (*struct{ Body *PasskeyRegistered }, error) {
		r, err := s.FinishPasskeyRegistration(ctx, in.RegistrationID, in.Body.Name, in.Body.Credential)
		return &struct{ Body *PasskeyRegistered }{r}, api.Err(ctx, err)
	})
	huma.Register(a, huma.Operation{
		OperationID: "mfa-list-passkeys", Method: http.MethodGet, Path: "/api/v1/mfa/passkeys", Tags: tags,
		Summary: "The caller's passkeys", Security: api.Secured, Errors: []int{403},
	}, func(ctx context.Context, _ *struct{}) (*struct{ Body []Passkey }, error) {
		l, err := s.ListPasskeys(ctx)
		return &struct{ Body []Passkey }{l}, api.Err(ctx, err)
	})
	huma.Register(a, huma.Operation{
		OperationID: "mfa-begin-passkey-assertion", Method: http.MethodPost, Path: "/api/v1/mfa/passkey-assertions", Tags: tags,
		Summary:  "Start a passkey check that proves the caller (to remove a passkey): the options for navigator.credentials.get",
		Security: api.Secured, DefaultStatus: http.StatusCreated, Errors: []int{403, 404, 503},
	}, func(ctx context.Context, _ *struct{}) (*struct{ Body *PasskeyCeremony }, error) {
		c, err := s.BeginPasskeyAssertion(ctx)
		return &struct{ Body *PasskeyCeremony }{c}, api.Err(ctx, err)
	})
	huma.Register(a, huma.Operation{
		OperationID: "mfa-remove-passkey", Method: http.MethodPost, Path: "/api/v1/mfa/passkeys/{passkeyId}/remove", Tags: tags,
		Summary:  "Remove one of the caller's passkeys; needs a current code (TOTP or recovery) or a passkey check",
		Security: api.Secured, DefaultStatus: http.StatusNoContent, Errors: []int{403, 404, 409, 422, 423},
	}, func(ctx context.Context, in *struct {
		PasskeyID string `path:"passkeyId" maxLength:"64"`
		Body      struct {
			Code        string          `json:"code,omitempty" maxLength:"20" doc:"a current TOTP code or a recovery code"`
			AssertionID string          `json:"assertionId,omitempty" maxLength:"64" doc:"or a passkey check begun with POST /api/v1/mfa/passkey-assertions"`
			Credential  json.RawMessage `json:"credential,omitempty" doc:"its answer from navigator.credentials.get"`
		}
	}) (*struct{}, error) {
		return nil, api.Err(ctx, s.RemovePasskey(ctx, in.PasskeyID, in.Body.Code, in.Body.AssertionID, in.Body.Credential))
	})
	huma.Register(a, huma.Operation{
		OperationID: "mfa-get-challenge", Method: http.MethodGet, Path: "/api/v1/mfa/challenges/{challengeId}", Tags: tags,
		Summary:  "The state of one of the caller's MFA challenges (poll it while the passkey approval is in the browser)",
		Security: api.Secured, Errors: []int{403, 404},
	}, func(ctx context.Context, in *struct {
		ChallengeID string `path:"challengeId" maxLength:"64"`
	}) (*struct{ Body *ChallengeStatus }, error) {
		st, err := s.ChallengeStatusOf(ctx, in.ChallengeID)
		return &struct{ Body *ChallengeStatus }{st}, api.Err(ctx, err)
	})
	huma.Register(a, huma.Operation{
		OperationID: "mfa-begin-challenge-passkey", Method: http.MethodPost, Path: "/api/v1/mfa/challenges/{challengeId}/passkey", Tags: tags,
		Summary:  "Start approving one of the caller's MFA challenges with a passkey: the options for navigator.credentials.get",
		Security: api.Secured, DefaultStatus: http.StatusCreated, Errors: []int{403, 404, 409, 423, 503},
	}, func(ctx context.Context, in *struct {
		ChallengeID string `path:"challengeId" maxLength:"64"`
	}) (*struct{ Body *PasskeyCeremony }, error) {
		c, err := s.BeginChallengePasskey(ctx, in.ChallengeID)
		return &struct{ Body *PasskeyCeremony }{c}, api.Err(ctx, err)
	})
	huma.Register(a, huma.Operation{
		OperationID: "mfa-verify-challenge-passkey", Method: http.MethodPost, Path: "/api/v1/mfa/challenges/{challengeId}/passkey/verify", Tags: tags,
		Summary:  "Approve one of the caller's MFA challenges with a passkey; then the request that asked for it is repeated with mfaChallengeId",
		Security: api.Secured, Errors: []int{403, 404, 409, 422, 423, 503},
	}, func(ctx context.Context, in *struct {
		ChallengeID string `path:"challengeId" maxLength:"64"`
		Body        PasskeyAssertionInput
	}) (*struct{ Body *ChallengePassed }, error) {
		v, err := s.VerifyChallengePasskey(ctx, in.ChallengeID, in.Body.AssertionID, in.Body.Credential)
		return &struct{ Body *ChallengePassed }{v}, api.Err(ctx, err)
	})
}
