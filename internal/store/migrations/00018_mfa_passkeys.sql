-- Passkeys (WebAuthn, package mfa): each user's registered credentials, and
-- the ceremonies in progress (a registration, or an assertion that answers
-- a challenge or proves the user before a passkey is removed). Ceremonies
-- live in the store, not in memory, so any server replica can finish one
-- that another began.

-- +goose Up
CREATE TABLE mfa_passkeys (
    id            TEXT PRIMARY KEY,
    user_id       TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    credential_id BYTEA NOT NULL UNIQUE,   -- the authenticator's credential id
    public_key    BYTEA NOT NULL,          -- COSE public key
    sign_count    BIGINT NOT NULL DEFAULT 0,
    name          TEXT NOT NULL,
    data          TEXT NOT NULL,           -- the rest of the credential record (flags, transports, attestation), JSON
    created_at    BIGINT NOT NULL,
    last_used_at  BIGINT NOT NULL DEFAULT 0
);
CREATE INDEX mfa_passkeys_user ON mfa_passkeys (user_id);

CREATE TABLE mfa_webauthn_ceremonies (
    id           TEXT PRIMARY KEY,
    user_id      TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    purpose      TEXT NOT NULL,            -- register | challenge | reauth
    challenge_id TEXT NOT NULL DEFAULT '', -- the MFA challenge it answers (purpose challenge)
    session      TEXT NOT NULL,            -- the library's session data, JSON (no secret: a random challenge)
    expires_at   BIGINT NOT NULL
);
CREATE INDEX mfa_webauthn_ceremonies_user ON mfa_webauthn_ceremonies (user_id, expires_at);

-- +goose Down
DROP TABLE mfa_webauthn_ceremonies;
DROP TABLE mfa_passkeys;
