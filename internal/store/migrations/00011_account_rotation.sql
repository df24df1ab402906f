-- Scheduled password rotation of accounts (package pam, job
-- account.rotate): the interval, the outcome of the last attempt, and the
-- new password of an attempt in progress, sealed, so that a crash between
-- changing the password in the database and saving it here loses nothing.

-- +goose Up
ALTER TABLE accounts ADD COLUMN rotation_interval_days INTEGER NOT NULL DEFAULT 0; -- 0: no rotation
ALTER TABLE accounts ADD COLUMN rotation_status TEXT NOT NULL DEFAULT '';           -- '', ok, rotating, failed
ALTER TABLE accounts ADD COLUMN rotation_error TEXT NOT NULL DEFAULT '';
ALTER TABLE accounts ADD COLUMN last_rotated_at BIGINT NOT NULL DEFAULT 0;
ALTER TABLE accounts ADD COLUMN pending_password_enc BYTEA;                         -- sealed; NULL outside an attempt
ALTER TABLE accounts ADD COLUMN pending_attempt TEXT NOT NULL DEFAULT '';

-- +goose Down
ALTER TABLE accounts DROP COLUMN pending_attempt;
ALTER TABLE accounts DROP COLUMN pending_password_enc;
ALTER TABLE accounts DROP COLUMN last_rotated_at;
ALTER TABLE accounts DROP COLUMN rotation_error;
ALTER TABLE accounts DROP COLUMN rotation_status;
ALTER TABLE accounts DROP COLUMN rotation_interval_days;
