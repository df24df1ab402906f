-- Whether session logs redact the values of documents written (MongoDB).

-- +goose Up
ALTER TABLE projects ADD COLUMN log_redact_values BOOLEAN NOT NULL DEFAULT FALSE;

-- +goose Down
ALTER TABLE projects DROP COLUMN log_redact_values;
