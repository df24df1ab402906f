-- Session logs: what each session did, as events recorded by the gateway.
-- Portable between SQLite and PostgreSQL (see store/doc.go).
--
-- An event's content (statement text, parameters, outcome) is sealed with the
-- project's data key; the additional data names the row
-- ("session_event:<id>:<session>:<seq>"), so a payload moved to another row
-- fails to open. Events are hash-chained per session:
--   hash = SHA-256(prev_hash || seq || id || payload plaintext)
-- and the session row holds the head of the chain (event_count and
-- last_event_hash), so a removed, altered or cut-off event is detected by
-- `airlock sessions verify` (sessionlog.(*Store).Verify).

-- +goose Up
CREATE TABLE session_events (
    id          TEXT PRIMARY KEY,            -- the gateway's event id (UUIDv7); uploads are idempotent on it
    session_id  TEXT NOT NULL,
    project_id  TEXT NOT NULL,
    seq         BIGINT NOT NULL,             -- 1, 2, 3... per session, assigned by the server
    at          BIGINT NOT NULL,             -- event time, microseconds since the Unix epoch
    kind        TEXT NOT NULL,               -- query | execute | command | connect | ...
    payload_enc BYTEA NOT NULL,              -- the whole event as JSON, sealed with the project's data key
    prev_hash   BYTEA NOT NULL,              -- hash of event seq-1; 32 zero bytes for the first
    hash        BYTEA NOT NULL,
    received_at BIGINT NOT NULL,
    -- Also the index that List and Verify read the log by.
    UNIQUE (session_id, seq)
);

-- The head of each session's chain.
ALTER TABLE sessions ADD COLUMN event_count BIGINT NOT NULL DEFAULT 0;
ALTER TABLE sessions ADD COLUMN last_event_hash BYTEA;

-- +goose Down
ALTER TABLE sessions DROP COLUMN last_event_hash;
ALTER TABLE sessions DROP COLUMN event_count;
DROP TABLE session_events;
