-- Multi-factor authentication (package mfa): a user's enrolled methods, their
-- one-time recovery codes, the challenges issued before access to an account
-- that requires MFA, the organization's enforced method, and the per-user
-- lockout after repeated wrong codes.

-- +goose Up
CREATE TABLE mfa_methods (
    id         TEXT PRIMARY KEY,
    user_id    TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    kind       TEXT NOT NULL,                 -- totp
    secret_enc BYTEA NOT NULL,                -- sealed with the root key, bound to the row
    confirmed  BOOLEAN NOT NULL DEFAULT FALSE, -- a first code was accepted
    last_step  BIGINT NOT NULL DEFAULT 0,      -- the last TOTP time step accepted: no replay
    created_at BIGINT NOT NULL,
    UNIQUE (user_id, kind)
);

CREATE TABLE mfa_recovery_codes (
    user_id   TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    code_hash BYTEA NOT NULL,                 -- SHA-256 of a 50-bit random code
    used_at   BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (user_id, code_hash)
);

CREATE TABLE mfa_challenges (
    id           TEXT PRIMARY KEY,
    org_id       TEXT NOT NULL,
    user_id      TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    token_family TEXT NOT NULL,               -- the login it was issued to; '' for a login's own challenge
    account_id   TEXT NOT NULL,               -- the account it opens; '' for a login's own challenge
    method       TEXT NOT NULL,               -- totp | email
    code_hash    BYTEA,                       -- email: HMAC of the code; NULL for totp
    failures     INTEGER NOT NULL DEFAULT 0,
    created_at   BIGINT NOT NULL,
    expires_at   BIGINT NOT NULL,
    approved_at  BIGINT NOT NULL DEFAULT 0,
    used_at      BIGINT NOT NULL DEFAULT 0
);
CREATE INDEX mfa_challenges_user ON mfa_challenges (user_id, created_at);

ALTER TABLE organizations ADD COLUMN mfa_method TEXT NOT NULL DEFAULT ''; -- '' (none) | totp | email
ALTER TABLE organizations ADD COLUMN require_mfa_login BOOLEAN NOT NULL DEFAULT FALSE;
ALTER TABLE users ADD COLUMN mfa_failures INTEGER NOT NULL DEFAULT 0;
ALTER TABLE users ADD COLUMN mfa_locked_until BIGINT NOT NULL DEFAULT 0;

-- +goose Down
ALTER TABLE users DROP COLUMN mfa_locked_until;
ALTER TABLE users DROP COLUMN mfa_failures;
ALTER TABLE organizations DROP COLUMN require_mfa_login;
ALTER TABLE organizations DROP COLUMN mfa_method;
DROP TABLE mfa_challenges;
DROP TABLE mfa_recovery_codes;
DROP TABLE mfa_methods;
