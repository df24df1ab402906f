-- Privileged access: resources (databases reached through a gateway) and the
-- accounts on them. Portable between SQLite and PostgreSQL (see store/doc.go).
-- Passwords are sealed with the project's data key (see keyring); the row's
-- identity is the additional data, so a ciphertext cannot move between rows.

-- +goose Up
CREATE TABLE resources (
    id                      TEXT PRIMARY KEY,
    project_id              TEXT NOT NULL REFERENCES projects (id) ON DELETE CASCADE,
    name                    TEXT NOT NULL,
    kind                    TEXT NOT NULL,                -- postgres | mongodb
    gateway_id              TEXT NOT NULL,                -- the gateway that reaches it
    host                    TEXT NOT NULL DEFAULT '',     -- postgres
    port                    INTEGER NOT NULL DEFAULT 0,   -- postgres
    database_name           TEXT NOT NULL DEFAULT '',     -- postgres database, or mongodb auth database
    connection_string       TEXT NOT NULL DEFAULT '',     -- mongodb, without credentials or database
    ssl_enabled             BOOLEAN NOT NULL DEFAULT TRUE,
    ssl_reject_unauthorized BOOLEAN NOT NULL DEFAULT TRUE,
    ssl_ca_pem              TEXT NOT NULL DEFAULT '',
    rotation_username       TEXT NOT NULL DEFAULT '',
    rotation_password_enc   BYTEA,                        -- sealed; NULL when there is none
    created_at              BIGINT NOT NULL,
    updated_at              BIGINT NOT NULL,
    UNIQUE (project_id, name)
);
CREATE INDEX resources_gateway ON resources (gateway_id);

CREATE TABLE accounts (
    id           TEXT PRIMARY KEY,
    project_id   TEXT NOT NULL,
    resource_id  TEXT NOT NULL REFERENCES resources (id) ON DELETE CASCADE,
    name         TEXT NOT NULL,
    username     TEXT NOT NULL,
    password_enc BYTEA NOT NULL,                          -- sealed with the project's data key
    description  TEXT NOT NULL DEFAULT '',
    require_mfa  BOOLEAN NOT NULL DEFAULT FALSE,
    created_at   BIGINT NOT NULL,
    updated_at   BIGINT NOT NULL,
    UNIQUE (resource_id, name)
);
CREATE INDEX accounts_project ON accounts (project_id, name);

-- Labels of an account; list filters on several of them are AND-combined.
CREATE TABLE account_metadata (
    account_id TEXT NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    key        TEXT NOT NULL,
    value      TEXT NOT NULL,
    PRIMARY KEY (account_id, key)
);
CREATE INDEX account_metadata_key_value ON account_metadata (key, value);

-- +goose Down
DROP TABLE account_metadata;
DROP TABLE accounts;
DROP TABLE resources;
