package webconsole

import (
	"context"
	"errors"
	"time"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/airlockpam/airlock/internal/errs"
)

// Relation is a table or view of a schema.
type Relation struct {
	Name string `json:"name"`
	Kind string `json:"kind" enum:"table,view,materialized view,foreign table"`
}

// Schema is a schema and its tables and views.
type Schema struct {
	Name      string     `json:"name"`
	Relations []Relation `json:"relations"`
}

// ColumnInfo is a column of a table or view.
type ColumnInfo struct {
	Name    string `json:"name"`
	Type    string `json:"type"`
	NotNull bool   `json:"notNull"`
}

// The schema browser's queries run on the console's connection, so the
// gateway records them in the session log like the user's own.
const schemaQuery = `SELECT n.nspname, COALESCE(c.relname, ''),
	CASE c.relkind WHEN 'r' THEN 'table' WHEN 'p' THEN 'table' WHEN 'v' THEN 'view' WHEN 'm' THEN 'materialized view' WHEN 'f' THEN 'foreign table' ELSE '' END
FROM pg_namespace n
LEFT JOIN pg_class c ON c.relnamespace = n.oid AND c.relkind IN ('r', 'p', 'v', 'm', 'f')
WHERE n.nspname <> 'information_schema' AND n.nspname NOT LIKE 'pg\_%' AND has_schema_privilege(n.oid, 'USAGE')
ORDER BY 1, 2 LIMIT 5000`

const columnsQuery = `SELECT a.attname, format_type(a.atttypid, a.atttypmod), a.attnotnull
FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname = $1 AND c.relname = $2 AND a.attnum > 0 AND NOT a.attisdropped
ORDER BY a.attnum`

// Schemas lists the schemas the account may use, with their tables and
// views.
func (c *Console) Schemas(ctx context.Context) ([]Schema, error) {
	rows, err := c.query(ctx, schemaQuery, nil)
	if err != nil {
		return nil, err
	}
	out := []Schema{}
	for _, r := range rows {
		if len(out) == 0 || out[len(out)-1].Name != r[0] {
			out = append(out, Schema{Name: r[0], Relations: []Relation{}})
		}
		if r[1] != "" {
			s := &out[len(out)-1]
			s.Relations = append(s.Relations, Relation{Name: r[1], Kind: r[2]})
		}
	}
	return out, nil
}

// Columns lists the columns of a table or view, with their types.
func (c *Console) Columns(ctx context.Context, schema, table string) ([]ColumnInfo, error) {
	rows, err := c.query(ctx, columnsQuery, [][]byte{[]byte(schema), []byte(table)})
	if err != nil {
		return nil, err
	}
	out := []ColumnInfo{}
	for _, r := range rows {
		out = append(out, ColumnInfo{Name: r[0], Type: r[1], NotNull: r[2] == "t"})
	}
	return out, nil
}

// query runs one catalog query with text parameters and returns its rows
// as text.
func (c *Console) query(ctx context.Context, sql string, params [][]byte) ([][]string, error) {
	const op = "webconsole.(*Console).query"
	if !c.run.TryLock() {
		return nil, errBusy
	}
	defer c.run.Unlock()
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
	defer cancel()
	res := c.conn.ExecParams(ctx, sql, params, nil, nil, nil).Read()
	c.touch(time.Now())
	if res.Err != nil {
		var pe *pgconn.PgError
		if errors.As(res.Err, &pe) {
			return nil, errs.Ef(op, errs.Conflict, "the database refused the catalog query: %s (SQLSTATE %s)", pe.Message, pe.Code)
		}
		return nil, errs.Wrap(op, errs.Unavailable, "reading the catalog failed", res.Err)
	}
	out := make([][]string, 0, len(res.Rows))
	for _, r := range res.Rows {
		row := make([]string, len(r))
		for i, v := range r {
			row[i] = string(v)
		}
		out = append(out, row)
	}
	return out, nil
}
