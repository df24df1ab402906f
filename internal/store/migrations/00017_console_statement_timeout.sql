-- +goose Up
-- The browser SQL console's statement_timeout, per project (milliseconds;
-- 30 s unless the project's admins change it).
ALTER TABLE projects ADD COLUMN console_statement_timeout_ms BIGINT NOT NULL DEFAULT 30000;

-- +goose Down
ALTER TABLE projects DROP COLUMN console_statement_timeout_ms;
