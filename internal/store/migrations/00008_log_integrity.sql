-- Logs the store alone cannot forge: each session's chain head, event count
-- and identity fields are authenticated with a key derived from the root key
-- (see sessionlog.Store), and the admin audit log is hash-chained per
-- organization, its head authenticated the same way (see audit).

-- +goose Up
-- HMAC-SHA256 over the session's identity fields and chain head; NULL until
-- the session is first sealed (its first events, or its creation or end when
-- the session service seals it).
ALTER TABLE sessions ADD COLUMN log_mac BYTEA;

-- The audit log's chain: seq counts an organization's entries from 1; hash
-- = SHA-256(prev_hash || the entry's fields). Entries written before this
-- migration have seq 0 and no hash.
ALTER TABLE audit_logs ADD COLUMN seq BIGINT NOT NULL DEFAULT 0;
ALTER TABLE audit_logs ADD COLUMN prev_hash BYTEA;
ALTER TABLE audit_logs ADD COLUMN hash BYTEA;
CREATE INDEX audit_logs_org_seq ON audit_logs (org_id, seq);
-- Each organization's chain head (its row lock orders the entries), and the
-- last head authenticated with the root-derived key (sealed_*).
CREATE TABLE audit_heads (
    org_id      TEXT PRIMARY KEY,
    seq         BIGINT NOT NULL,
    hash        BYTEA NOT NULL,
    sealed_seq  BIGINT NOT NULL DEFAULT 0,
    sealed_hash BYTEA,
    sealed_mac  BYTEA
);

-- +goose Down
DROP TABLE audit_heads;
DROP INDEX audit_logs_org_seq;
ALTER TABLE audit_logs DROP COLUMN hash;
ALTER TABLE audit_logs DROP COLUMN prev_hash;
ALTER TABLE audit_logs DROP COLUMN seq;
ALTER TABLE sessions DROP COLUMN log_mac;
