package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	_ "github.com/jackc/pgx/v5/stdlib" // registers the "pgx" database/sql driver
	"modernc.org/sqlite"
	sqlite3 "modernc.org/sqlite/lib"

	"github.com/airlockpam/airlock/internal/errs"
)

// Dialect names the database behind a DB.
type Dialect string

const (
	SQLite   Dialect = "sqlite"
	Postgres Dialect = "postgres"
)

// SQLiteFile is the name of the embedded database file in the data directory.
const SQLiteFile = "airlock.db"

// Config says which backend to open.
type Config struct {
	// DataDir holds the SQLite file when DatabaseURL is empty.
	DataDir string
	// DatabaseURL, when set, is a postgres:// URL; the store lives there.
	DatabaseURL string
	// ConnectTimeout bounds the first connection at start. Default 10s.
	ConnectTimeout time.Duration
}

// DB is an open, migrated database.
type DB struct {
	*sql.DB
	Dialect Dialect
}

// Querier is what repositories need to run statements: a *sql.DB or a *sql.Tx.
type Querier interface {
	ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error)
	QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
}

// Open connects to the configured backend, checks that it answers, and applies
// pending migrations.
func Open(ctx context.Context, cfg Config) (*DB, error) {
	const op = "store.Open"
	if cfg.ConnectTimeout == 0 {
		cfg.ConnectTimeout = 10 * time.Second
	}
	var db *DB
	var err error
	if cfg.DatabaseURL != "" {
		db, err = openPostgres(ctx, cfg)
	} else {
		db, err = openSQLite(ctx, cfg)
	}
	if err != nil {
		return nil, err
	}
	if err := migrate(ctx, db); err != nil {
		db.Close()
		return nil, errs.Wrap(op, errs.Internal, "applying database migrations failed", err)
	}
	return db, nil
}

func openSQLite(ctx context.Context, cfg Config) (*DB, error) {
	const op = "store.openSQLite"
	if cfg.DataDir == "" {
		return nil, errs.E(op, errs.Invalid, "no data directory given: pass --data-dir or --database-url")
	}
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return nil, errs.Wrap(op, errs.Unavailable, fmt.Sprintf("cannot create data directory %s", cfg.DataDir), err)
	}
	path := filepath.Join(cfg.DataDir, SQLiteFile)
	// _txlock=immediate takes the write lock at BEGIN, so two writers queue on
	// busy_timeout instead of failing when a reader upgrades to a writer.
	// synchronous=FULL syncs the WAL at every commit: with NORMAL, a power
	// loss can undo a committed transaction, and a session-log upload is
	// acknowledged (and deleted from the gateway's spool) once committed.
	// Uploads come in batches, so the sync costs little
	// (sessionlog.BenchmarkIngest).
	dsn := "file:" + path + "?_pragma=journal_mode(WAL)&_pragma=busy_timeout(10000)" +
		"&_pragma=foreign_keys(1)&_pragma=synchronous(FULL)&_txlock=immediate"
	sqldb, err := sql.Open("sqlite", dsn)
	if err != nil {
		return nil, errs.Wrap(op, errs.Unavailable, "cannot open the SQLite store", err)
	}
	sqldb.SetMaxOpenConns(8)
	pctx, cancel := context.WithTimeout(ctx, cfg.ConnectTimeout)
	defer cancel()
	if err := sqldb.PingContext(pctx); err != nil {
		sqldb.Close()
		return nil, errs.Wrap(op, errs.Unavailable, fmt.Sprintf("cannot open the SQLite store at %s", path), err)
	}
	_ = os.Chmod(path, 0o600)
	return &DB{DB: sqldb, Dialect: SQLite}, nil
}

func openPostgres(ctx context.Context, cfg Config) (*DB, error) {
	const op = "store.openPostgres"
	u, err := url.Parse(cfg.DatabaseURL)
	if err != nil || (u.Scheme != "postgres" && u.Scheme != "postgresql") {
		return nil, errs.E(op, errs.Invalid, "the database URL must look like postgres://user@host:5432/dbname?sslmode=verify-full")
	}
	sqldb, err := sql.Open("pgx", cfg.DatabaseURL)
	if err != nil {
		return nil, errs.E(op, errs.Invalid, "the database URL cannot be parsed: "+redactURLError(err, u))
	}
	sqldb.SetMaxOpenConns(20)
	sqldb.SetConnMaxIdleTime(5 * time.Minute)
	pctx, cancel := context.WithTimeout(ctx, cfg.ConnectTimeout)
	defer cancel()
	if err := sqldb.PingContext(pctx); err != nil {
		sqldb.Close()
		return nil, errs.E(op, errs.Unavailable, fmt.Sprintf(
			"cannot reach the PostgreSQL store at %s: %s; check that it is running and that the URL, user and password are right",
			u.Redacted(), redactURLError(err, u)))
	}
	return &DB{DB: sqldb, Dialect: Postgres}, nil
}

// redactURLError renders a connection error without the password of u.
func redactURLError(err error, u *url.URL) string {
	msg := err.Error()
	if u != nil && u.User != nil {
		if pw, ok := u.User.Password(); ok && pw != "" {
			msg = strings.ReplaceAll(msg, pw, "xxxxx")
		}
	}
	return msg
}

// Ping reports whether the store answers; used by /readyz.
func (db *DB) Ping(ctx context.Context) error { return db.PingContext(ctx) }

// IsUniqueViolation reports whether err is a unique-constraint failure.
func IsUniqueViolation(err error) bool {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		return pgErr.Code == "23505"
	}
	var sqlErr *sqlite.Error
	if errors.As(err, &sqlErr) {
		c := sqlErr.Code()
		return c == sqlite3.SQLITE_CONSTRAINT_UNIQUE || c == sqlite3.SQLITE_CONSTRAINT_PRIMARYKEY
	}
	return false
}

// isRetryable reports whether a transaction failed only because of contention.
func isRetryable(err error) bool {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		return pgErr.Code == "40001" || pgErr.Code == "40P01"
	}
	var sqlErr *sqlite.Error
	if errors.As(err, &sqlErr) {
		c := sqlErr.Code() & 0xff
		return c == sqlite3.SQLITE_BUSY || c == sqlite3.SQLITE_LOCKED
	}
	return false
}

// Micros converts a time to the stored form: microseconds since the Unix epoch.
// The zero time is stored as 0.
func Micros(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixMicro()
}

// Time converts a stored value back to a UTC time; 0 gives the zero time.
func Time(us int64) time.Time {
	if us == 0 {
		return time.Time{}
	}
	return time.UnixMicro(us).UTC()
}
