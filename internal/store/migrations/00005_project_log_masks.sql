-- Project-defined patterns masked in session logs, as a JSON array of
-- regular expressions (RE2 syntax).

-- +goose Up
ALTER TABLE projects ADD COLUMN log_mask_patterns TEXT NOT NULL DEFAULT '[]';

-- +goose Down
ALTER TABLE projects DROP COLUMN log_mask_patterns;
