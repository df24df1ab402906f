-- Foundation: organizations, identities, projects, keys, secrets, audit log.
-- Portable between SQLite and PostgreSQL (see store/doc.go). Times are BIGINT
-- microseconds since the Unix epoch; 0 means "not set".

-- +goose Up
CREATE TABLE organizations (
    id         TEXT PRIMARY KEY,
    name       TEXT NOT NULL,
    created_at BIGINT NOT NULL
);

CREATE TABLE users (
    id            TEXT PRIMARY KEY,
    org_id        TEXT NOT NULL REFERENCES organizations (id),
    email         TEXT NOT NULL UNIQUE, -- lower-cased
    name          TEXT NOT NULL DEFAULT '',
    password_hash TEXT NOT NULL,        -- argon2id, PHC string
    org_admin     BOOLEAN NOT NULL DEFAULT FALSE,
    failed_logins INTEGER NOT NULL DEFAULT 0,
    locked_until  BIGINT NOT NULL DEFAULT 0,
    created_at    BIGINT NOT NULL,
    updated_at    BIGINT NOT NULL
);
CREATE INDEX users_org ON users (org_id);

CREATE TABLE machine_identities (
    id          TEXT PRIMARY KEY,
    org_id      TEXT NOT NULL REFERENCES organizations (id),
    name        TEXT NOT NULL,
    client_id   TEXT NOT NULL UNIQUE,
    secret_hash BYTEA NOT NULL,         -- SHA-256 of a 256-bit random secret
    created_at  BIGINT NOT NULL,
    UNIQUE (org_id, name)
);

CREATE TABLE auth_tokens (
    id           TEXT PRIMARY KEY,
    kind         TEXT NOT NULL,          -- access | refresh
    token_hash   BYTEA NOT NULL UNIQUE,  -- SHA-256 of the token
    family_id    TEXT NOT NULL,          -- one login; logout revokes the family
    subject_kind TEXT NOT NULL,          -- user | machine
    subject_id   TEXT NOT NULL,
    org_id       TEXT NOT NULL,
    expires_at   BIGINT NOT NULL,
    revoked_at   BIGINT NOT NULL DEFAULT 0,
    created_at   BIGINT NOT NULL
);
CREATE INDEX auth_tokens_family ON auth_tokens (family_id);
CREATE INDEX auth_tokens_expires ON auth_tokens (expires_at);

CREATE TABLE projects (
    id                   TEXT PRIMARY KEY,
    org_id               TEXT NOT NULL REFERENCES organizations (id),
    name                 TEXT NOT NULL,
    description          TEXT NOT NULL DEFAULT '',
    max_session_seconds  BIGINT NOT NULL DEFAULT 28800,
    created_at           BIGINT NOT NULL,
    updated_at           BIGINT NOT NULL,
    UNIQUE (org_id, name)
);

CREATE TABLE project_members (
    project_id   TEXT NOT NULL REFERENCES projects (id) ON DELETE CASCADE,
    subject_kind TEXT NOT NULL,          -- user | machine
    subject_id   TEXT NOT NULL,
    role         TEXT NOT NULL,          -- admin | member | viewer
    created_at   BIGINT NOT NULL,
    PRIMARY KEY (project_id, subject_kind, subject_id)
);
CREATE INDEX project_members_subject ON project_members (subject_kind, subject_id);

-- One row: proves at start that the configured root key is the one the data
-- was written with.
CREATE TABLE root_key_check (
    id          INTEGER PRIMARY KEY,
    root_key_id TEXT NOT NULL,
    sealed      BYTEA NOT NULL,
    created_at  BIGINT NOT NULL
);

-- A project's data key, wrapped (AES-256-GCM) by the root key.
CREATE TABLE project_keys (
    project_id  TEXT PRIMARY KEY REFERENCES projects (id) ON DELETE CASCADE,
    root_key_id TEXT NOT NULL,
    wrapped_key BYTEA NOT NULL,
    created_at  BIGINT NOT NULL
);

CREATE TABLE secrets (
    id          TEXT PRIMARY KEY,
    project_id  TEXT NOT NULL REFERENCES projects (id) ON DELETE CASCADE,
    environment TEXT NOT NULL,
    name        TEXT NOT NULL,
    version     INTEGER NOT NULL,
    value_enc   BYTEA NOT NULL,          -- sealed with the project's data key
    deleted     BOOLEAN NOT NULL DEFAULT FALSE,
    created_by  TEXT NOT NULL,
    created_at  BIGINT NOT NULL,
    UNIQUE (project_id, environment, name, version)
);

CREATE TABLE audit_logs (
    id          TEXT PRIMARY KEY,        -- UUIDv7: sorts by time
    org_id      TEXT NOT NULL,
    at          BIGINT NOT NULL,
    actor_kind  TEXT NOT NULL,           -- user | machine | system | anonymous
    actor_id    TEXT NOT NULL,
    actor_name  TEXT NOT NULL,
    client_addr TEXT NOT NULL,
    action      TEXT NOT NULL,           -- e.g. project.create, auth.login
    outcome     TEXT NOT NULL,           -- success | failure
    target_kind TEXT NOT NULL,
    target_id   TEXT NOT NULL,
    project_id  TEXT NOT NULL DEFAULT '',
    details     TEXT NOT NULL DEFAULT '{}'
);
CREATE INDEX audit_logs_org_at ON audit_logs (org_id, at);
CREATE INDEX audit_logs_project ON audit_logs (project_id, at);

-- +goose Down
DROP TABLE audit_logs;
DROP TABLE secrets;
DROP TABLE project_keys;
DROP TABLE root_key_check;
DROP TABLE project_members;
DROP TABLE projects;
DROP TABLE auth_tokens;
DROP TABLE machine_identities;
DROP TABLE users;
DROP TABLE organizations;
