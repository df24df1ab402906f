-- The secrets store grows environments and folders (package secrets).
-- Environments are a project's named stages (dev, staging, prod by default);
-- folders are paths inside one environment (/, /db/orders); each secret
-- version now lives in a folder. The versions move from the table secrets,
-- keeping their ids: a value is sealed with its row id as associated data,
-- so the ciphertexts still open.

-- +goose Up
CREATE TABLE secret_environments (
    project_id TEXT NOT NULL REFERENCES projects (id) ON DELETE CASCADE,
    slug       TEXT NOT NULL,
    name       TEXT NOT NULL,
    position   INTEGER NOT NULL,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (project_id, slug)
);

-- The root folder / of every environment exists without a row.
CREATE TABLE secret_folders (
    project_id  TEXT NOT NULL REFERENCES projects (id) ON DELETE CASCADE,
    environment TEXT NOT NULL,
    path        TEXT NOT NULL,
    created_by  TEXT NOT NULL,
    created_at  BIGINT NOT NULL,
    PRIMARY KEY (project_id, environment, path)
);

CREATE TABLE secret_versions (
    id          TEXT PRIMARY KEY,
    project_id  TEXT NOT NULL REFERENCES projects (id) ON DELETE CASCADE,
    environment TEXT NOT NULL,
    path        TEXT NOT NULL,
    name        TEXT NOT NULL,
    version     INTEGER NOT NULL,
    value_enc   BYTEA NOT NULL,          -- sealed with the project's data key, AAD "secret:" || id
    deleted     BOOLEAN NOT NULL DEFAULT FALSE,
    created_by  TEXT NOT NULL,
    created_at  BIGINT NOT NULL,
    UNIQUE (project_id, environment, path, name, version)
);

INSERT INTO secret_versions (id, project_id, environment, path, name, version, value_enc, deleted, created_by, created_at)
    SELECT id, project_id, environment, '/', name, version, value_enc, deleted, created_by, created_at FROM secrets;
-- Environments that already hold secrets are kept; a project without any
-- gets dev, staging and prod on its first use of secrets.
INSERT INTO secret_environments (project_id, slug, name, position, created_at)
    SELECT DISTINCT project_id, environment, environment, 0, 0 FROM secrets;
DROP TABLE secrets;

-- App connections (package appconn): the server's own logins to a
-- database, for secret rotations. password_enc is sealed with AAD bound to
-- the row; pending_password_enc holds a platform-managed password between
-- setting it in the database and promoting it here.
CREATE TABLE app_connections (
    id                      TEXT PRIMARY KEY,
    project_id              TEXT NOT NULL REFERENCES projects (id) ON DELETE CASCADE,
    name                    TEXT NOT NULL,
    description             TEXT NOT NULL DEFAULT '',
    app                     TEXT NOT NULL,          -- postgres
    method                  TEXT NOT NULL,          -- username-and-password
    platform_managed        BOOLEAN NOT NULL DEFAULT FALSE,
    gateway_id              TEXT NOT NULL DEFAULT '',
    host                    TEXT NOT NULL,
    port                    INTEGER NOT NULL,
    database_name           TEXT NOT NULL,
    username                TEXT NOT NULL,
    password_enc            BYTEA NOT NULL,
    pending_password_enc    BYTEA,
    pending_attempt         TEXT NOT NULL DEFAULT '',
    ssl_enabled             BOOLEAN NOT NULL,
    ssl_reject_unauthorized BOOLEAN NOT NULL,
    ssl_certificate         TEXT NOT NULL DEFAULT '',
    status_error            TEXT NOT NULL DEFAULT '',
    version                 INTEGER NOT NULL,
    created_at              BIGINT NOT NULL,
    updated_at              BIGINT NOT NULL,
    UNIQUE (project_id, name)
);

-- Dual-user credential rotations (package secretrotation): two database
-- users take turns; the active one's username and password are written to
-- two secrets. password1_enc and password2_enc are each user's newest
-- password; pending_password_enc is a new password of the inactive user
-- between ALTER ROLE and the store transaction that publishes it.
CREATE TABLE secret_rotations (
    id                   TEXT PRIMARY KEY,
    project_id           TEXT NOT NULL REFERENCES projects (id) ON DELETE CASCADE,
    name                 TEXT NOT NULL,
    description          TEXT NOT NULL DEFAULT '',
    type                 TEXT NOT NULL,             -- postgres-credentials
    connection_id        TEXT NOT NULL REFERENCES app_connections (id),
    environment          TEXT NOT NULL,
    path                 TEXT NOT NULL,
    interval_days        INTEGER NOT NULL,
    rotate_at            TEXT NOT NULL,             -- HH:MM, local time in time_zone
    time_zone            TEXT NOT NULL,             -- IANA name, e.g. Europe/Berlin
    auto_rotation        BOOLEAN NOT NULL,
    username1            TEXT NOT NULL,
    username2            TEXT NOT NULL,
    username_secret      TEXT NOT NULL,
    password_secret      TEXT NOT NULL,
    active_index         INTEGER NOT NULL DEFAULT 0, -- 0 before the first rotation, else 1 or 2
    password1_enc        BYTEA,
    password2_enc        BYTEA,
    pending_index        INTEGER NOT NULL DEFAULT 0,
    pending_password_enc BYTEA,
    pending_attempt      TEXT NOT NULL DEFAULT '',
    status               TEXT NOT NULL DEFAULT '',  -- '', ok, failed
    last_error           TEXT NOT NULL DEFAULT '',
    last_rotated_at      BIGINT NOT NULL DEFAULT 0,
    created_at           BIGINT NOT NULL,
    updated_at           BIGINT NOT NULL,
    UNIQUE (project_id, name)
);

-- +goose Down
DROP TABLE secret_rotations;
DROP TABLE app_connections;
CREATE TABLE secrets (
    id          TEXT PRIMARY KEY,
    project_id  TEXT NOT NULL REFERENCES projects (id) ON DELETE CASCADE,
    environment TEXT NOT NULL,
    name        TEXT NOT NULL,
    version     INTEGER NOT NULL,
    value_enc   BYTEA NOT NULL,
    deleted     BOOLEAN NOT NULL DEFAULT FALSE,
    created_by  TEXT NOT NULL,
    created_at  BIGINT NOT NULL,
    UNIQUE (project_id, environment, name, version)
);
INSERT INTO secrets (id, project_id, environment, name, version, value_enc, deleted, created_by, created_at)
    SELECT id, project_id, environment, name, version, value_enc, deleted, created_by, created_at FROM secret_versions WHERE path = '/';
DROP TABLE secret_versions;
DROP TABLE secret_folders;
DROP TABLE secret_environments;
