-- Durable jobs (package jobs): one row per scheduled job, unique by kind
-- and key, claimed by one server replica at a time under a lease.

-- +goose Up
CREATE TABLE jobs (
    id          TEXT PRIMARY KEY,
    kind        TEXT NOT NULL,
    job_key     TEXT NOT NULL,
    payload     TEXT NOT NULL DEFAULT '',
    run_at      BIGINT NOT NULL,             -- due at (Unix microseconds)
    generation  BIGINT NOT NULL DEFAULT 1,   -- bumped by every Schedule
    attempts    INTEGER NOT NULL DEFAULT 0,  -- failed runs since the last success
    lease_owner TEXT NOT NULL DEFAULT '',
    lease_until BIGINT NOT NULL DEFAULT 0,
    last_error  TEXT NOT NULL DEFAULT '',
    last_run_at BIGINT NOT NULL DEFAULT 0,
    created_at  BIGINT NOT NULL,
    updated_at  BIGINT NOT NULL,
    UNIQUE (kind, job_key)
);
CREATE INDEX jobs_due ON jobs (run_at);
-- Sessions live at the upgrade get their expiry job (package session).
INSERT INTO jobs (id, kind, job_key, run_at, created_at, updated_at)
    SELECT 'session.expire:' || id, 'session.expire', id, expires_at, 0, 0 FROM sessions WHERE status = 'active';

-- +goose Down
DROP TABLE jobs;
