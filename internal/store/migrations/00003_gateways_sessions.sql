-- Gateways, the organization's certificate authority, and access sessions.

-- +goose Up
-- The organization's CA: signs gateway certificates, session client
-- certificates and the relay's server certificate. Its key is sealed with the
-- root key.
CREATE TABLE certificate_authorities (
    org_id     TEXT PRIMARY KEY REFERENCES organizations (id),
    cert_pem   TEXT NOT NULL,
    key_enc    BYTEA NOT NULL,
    created_at BIGINT NOT NULL
);

CREATE TABLE gateways (
    id                    TEXT PRIMARY KEY,
    org_id                TEXT NOT NULL REFERENCES organizations (id),
    name                  TEXT NOT NULL,
    enrollment_token_hash BYTEA,                       -- SHA-256; NULL once used
    enrollment_expires_at BIGINT NOT NULL DEFAULT 0,
    enrolled_at           BIGINT NOT NULL DEFAULT 0,
    cert_serial           TEXT NOT NULL DEFAULT '',    -- the only certificate accepted
    cert_not_after        BIGINT NOT NULL DEFAULT 0,
    last_heartbeat_at     BIGINT NOT NULL DEFAULT 0,
    online                BOOLEAN NOT NULL DEFAULT FALSE, -- connected to a server now
    remote_addr           TEXT NOT NULL DEFAULT '',
    version               TEXT NOT NULL DEFAULT '',
    created_at            BIGINT NOT NULL,
    UNIQUE (org_id, name)
);

-- Sessions outlive the resources, accounts and projects they name, for audit.
CREATE TABLE sessions (
    id               TEXT PRIMARY KEY,
    org_id           TEXT NOT NULL,
    project_id       TEXT NOT NULL,
    subject_kind     TEXT NOT NULL,
    subject_id       TEXT NOT NULL,
    subject_name     TEXT NOT NULL,
    resource_id      TEXT NOT NULL,
    resource_name    TEXT NOT NULL,
    resource_kind    TEXT NOT NULL,
    account_id       TEXT NOT NULL,
    account_name     TEXT NOT NULL,
    account_username TEXT NOT NULL,
    gateway_id       TEXT NOT NULL,
    access_method    TEXT NOT NULL,                    -- cli | web
    client_addr      TEXT NOT NULL,
    created_at       BIGINT NOT NULL,
    started_at       BIGINT NOT NULL DEFAULT 0,        -- first connection
    expires_at       BIGINT NOT NULL,
    ended_at         BIGINT NOT NULL DEFAULT 0,
    end_reason       TEXT NOT NULL DEFAULT '',         -- ended_by_user | expired | terminated | gateway_lost
    status           TEXT NOT NULL                     -- active | ended
);
CREATE INDEX sessions_status_expires ON sessions (status, expires_at);
CREATE INDEX sessions_project_created ON sessions (project_id, created_at);

-- +goose Down
DROP TABLE sessions;
DROP TABLE gateways;
DROP TABLE certificate_authorities;
