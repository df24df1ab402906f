-- Session logs the store alone cannot forge: each session's chain head,
-- event count and identity fields are authenticated with a key derived from
-- the root key (see sessionlog.Store).

-- +goose Up
-- HMAC-SHA256 over the session's identity fields and chain head; NULL until
-- the session is first sealed (its first events, or its creation or end when
-- the session service seals it).
ALTER TABLE sessions ADD COLUMN log_mac BYTEA;

-- +goose Down
ALTER TABLE sessions DROP COLUMN log_mac;
