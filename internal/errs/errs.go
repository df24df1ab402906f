// Package errs defines the error type every Airlock package returns: a code that
// says what kind of failure it is (so the API can pick a status), the operation
// that failed (so a log line says where), a message a user can act on, and,
// for invalid input, the field at fault.
package errs

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"
)

// Code classifies an error. The API maps each code to an HTTP status.
type Code int

const (
	// Internal is an unexpected failure; its message is not shown to callers.
	Internal Code = iota
	// Invalid means the caller sent something wrong; Field names what.
	Invalid
	// NotFound means the thing does not exist or the caller may not know it does.
	NotFound
	// Conflict means the request clashes with existing state (a duplicate name).
	Conflict
	// Unauthenticated means no valid credentials were presented.
	Unauthenticated
	// Forbidden means the caller is known but lacks the role for the action.
	Forbidden
	// Locked means the account is temporarily locked.
	Locked
	// RateLimited means the caller must slow down.
	RateLimited
	// Unavailable means a dependency (the store, a gateway) cannot be reached.
	Unavailable
	// DataLoss means stored data failed an integrity check (a ciphertext
	// moved between rows, a wrong key). Its message is shown to callers.
	DataLoss
)

func (c Code) String() string {
	switch c {
	case Invalid:
		return "invalid"
	case NotFound:
		return "not found"
	case Conflict:
		return "conflict"
	case Unauthenticated:
		return "unauthenticated"
	case Forbidden:
		return "forbidden"
	case Locked:
		return "locked"
	case RateLimited:
		return "rate limited"
	case Unavailable:
		return "unavailable"
	case DataLoss:
		return "data loss"
	default:
		return "internal"
	}
}

// Error is an error with a code, an operation and a user-facing message.
type Error struct {
	Op    string // the failing operation, e.g. "project.(*Repository).Create"
	Code  Code
	Msg   string // safe to show to the caller; never holds a secret
	Field string // for Invalid: the input field at fault, e.g. "body.name"
	// RetryAfter, for RateLimited and Unavailable, says when to try again.
	RetryAfter time.Duration
	Err        error // the underlying cause, for logs only
}

func (e *Error) Error() string {
	s := e.Op + ": " + e.Msg
	if e.Err != nil {
		s += ": " + e.Err.Error()
	}
	return s
}

func (e *Error) Unwrap() error { return e.Err }

// E builds an Error with a message.
func E(op string, code Code, msg string) *Error { return &Error{Op: op, Code: code, Msg: msg} }

// Ef builds an Error with a formatted message.
func Ef(op string, code Code, format string, args ...any) *Error {
	return &Error{Op: op, Code: code, Msg: fmt.Sprintf(format, args...)}
}

// InvalidField reports a bad value of the named input field.
func InvalidField(op, field, msg string) *Error {
	return &Error{Op: op, Code: Invalid, Msg: msg, Field: field}
}

// Wrap attaches an operation and a code to a cause. If err already is an
// *Error its code and message are kept and only the operation chain grows.
func Wrap(op string, code Code, msg string, err error) error {
	if err == nil {
		return nil
	}
	var e *Error
	if errors.As(err, &e) {
		return &Error{Op: op, Code: e.Code, Msg: e.Msg, Field: e.Field, Err: err}
	}
	return &Error{Op: op, Code: code, Msg: msg, Err: err}
}

// CodeOf returns the code of the first *Error in err's chain, or Internal.
func CodeOf(err error) Code {
	var e *Error
	if errors.As(err, &e) {
		return e.Code
	}
	return Internal
}

// Is reports whether err carries the given code.
func Is(err error, code Code) bool { return err != nil && CodeOf(err) == code }

// Log writes err to the default logger with its operation and code.
func Log(ctx context.Context, err error) {
	var e *Error
	if errors.As(err, &e) {
		slog.ErrorContext(ctx, e.Msg, "op", e.Op, "code", e.Code.String(), "err", err)
		return
	}
	slog.ErrorContext(ctx, "error", "err", err)
}
