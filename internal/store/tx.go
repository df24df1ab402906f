package store

import (
	"context"
	"database/sql"
	"time"

	"github.com/airlockpam/airlock/internal/errs"
)

const maxTxAttempts = 5

// InTx runs fn in a transaction and commits it, retrying the whole function
// when the database reports contention (a serialization failure or a busy
// SQLite file). fn must therefore have no effects outside the transaction.
func (db *DB) InTx(ctx context.Context, fn func(tx *sql.Tx) error) error {
	const op = "store.(*DB).InTx"
	var err error
	for attempt := 1; attempt <= maxTxAttempts; attempt++ {
		err = db.runTx(ctx, fn)
		if err == nil || !isRetryable(err) {
			return err
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(time.Duration(attempt*attempt) * 10 * time.Millisecond):
		}
	}
	return errs.Wrap(op, errs.Unavailable, "the store is too busy; try again", err)
}

func (db *DB) runTx(ctx context.Context, fn func(tx *sql.Tx) error) (err error) {
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer func() {
		if err != nil {
			_ = tx.Rollback()
		}
	}()
	if err = fn(tx); err != nil {
		return err
	}
	return tx.Commit()
}
