-- Insider controls: which projects may use a gateway, the upstream
-- authentication methods an organization admin allows per resource, and a
-- project's limit on recorded statements.

-- +goose Up
-- A project may name a gateway in its resources only when an organization
-- admin has allowed it here.
CREATE TABLE gateway_projects (
    gateway_id  TEXT NOT NULL REFERENCES gateways (id) ON DELETE CASCADE,
    project_id  TEXT NOT NULL REFERENCES projects (id) ON DELETE CASCADE,
    created_at  BIGINT NOT NULL,
    PRIMARY KEY (gateway_id, project_id)
);
CREATE INDEX gateway_projects_project ON gateway_projects (project_id);
-- Existing resources keep working: every project that already uses a
-- gateway may go on using it.
INSERT INTO gateway_projects (gateway_id, project_id, created_at)
    SELECT DISTINCT r.gateway_id, r.project_id, 0 FROM resources r
    WHERE r.gateway_id IN (SELECT id FROM gateways) AND r.project_id IN (SELECT id FROM projects);

-- Upstream authentication methods besides SCRAM-SHA-256 that the gateway
-- may answer with the password (comma-separated: md5, password); empty =
-- SCRAM-SHA-256 only.
ALTER TABLE resources ADD COLUMN auth_methods TEXT NOT NULL DEFAULT '';

-- The longest statement recorded whole (bytes), and what happens to a
-- longer one: refuse or record_ends.
ALTER TABLE projects ADD COLUMN max_statement_bytes BIGINT NOT NULL DEFAULT 1048576;
ALTER TABLE projects ADD COLUMN oversize_statements TEXT NOT NULL DEFAULT 'refuse';

-- +goose Down
ALTER TABLE projects DROP COLUMN oversize_statements;
ALTER TABLE projects DROP COLUMN max_statement_bytes;
ALTER TABLE resources DROP COLUMN auth_methods;
DROP TABLE gateway_projects;
