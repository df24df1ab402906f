// Package store opens Airlock's database and applies its migrations.
//
// Two backends sit behind the same *sql.DB: an embedded SQLite file (pure Go,
// WAL mode) in the data directory, and PostgreSQL when a database URL is given.
// The SQL in migrations/ and in every repository is written in the subset both
// understand: $N placeholders, TEXT, BIGINT, BOOLEAN and BYTEA columns, times as
// BIGINT microseconds since the Unix epoch (see Micros and Time), RETURNING and
// ON CONFLICT. Dialect-specific statements (row locks) branch on DB.Dialect.
//
// store.go opens and configures a backend, tx.go runs transactions with retry,
// migrate.go applies the embedded migrations with goose.
package store
