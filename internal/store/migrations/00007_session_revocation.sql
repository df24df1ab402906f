-- Sessions end for real: what each new connection of a session is checked
-- against, the CLI's presence, disabled users, and data keys that outlive
-- their project so that a deleted project's session logs stay readable.

-- +goose Up
-- The login (auth_tokens.family_id) a session was started under: once every
-- token of that login is revoked (logout, reuse detection, an admin revoking
-- the user's tokens), the session ends.
ALTER TABLE sessions ADD COLUMN token_family TEXT NOT NULL DEFAULT '';
-- When the session's CLI relay connection was last known to be up (set at
-- connect, every 20 s while connected, and at disconnect); 0 = never.
ALTER TABLE sessions ADD COLUMN client_seen_at BIGINT NOT NULL DEFAULT 0;
-- Why the session ended, in words (such as "user removed from the project").
ALTER TABLE sessions ADD COLUMN end_message TEXT NOT NULL DEFAULT '';
CREATE INDEX sessions_status_gateway ON sessions (status, gateway_id);

-- A disabled user cannot log in, refresh a token or use a session.
ALTER TABLE users ADD COLUMN disabled BOOLEAN NOT NULL DEFAULT FALSE;

-- A project's data key no longer cascades away with the project: the
-- project's session logs (session_events) are sealed with it and outlive it.
CREATE TABLE project_keys_new (
    project_id  TEXT PRIMARY KEY,
    root_key_id TEXT NOT NULL,
    wrapped_key BYTEA NOT NULL,
    created_at  BIGINT NOT NULL
);
INSERT INTO project_keys_new (project_id, root_key_id, wrapped_key, created_at)
    SELECT project_id, root_key_id, wrapped_key, created_at FROM project_keys;
DROP TABLE project_keys;
ALTER TABLE project_keys_new RENAME TO project_keys;

-- +goose Down
CREATE TABLE project_keys_old (
    project_id  TEXT PRIMARY KEY REFERENCES projects (id) ON DELETE CASCADE,
    root_key_id TEXT NOT NULL,
    wrapped_key BYTEA NOT NULL,
    created_at  BIGINT NOT NULL
);
INSERT INTO project_keys_old (project_id, root_key_id, wrapped_key, created_at)
    SELECT k.project_id, k.root_key_id, k.wrapped_key, k.created_at FROM project_keys k
    JOIN projects p ON p.id = k.project_id;
DROP TABLE project_keys;
ALTER TABLE project_keys_old RENAME TO project_keys;
ALTER TABLE users DROP COLUMN disabled;
DROP INDEX sessions_status_gateway;
ALTER TABLE sessions DROP COLUMN end_message;
ALTER TABLE sessions DROP COLUMN client_seen_at;
ALTER TABLE sessions DROP COLUMN token_family;
