// Package api holds what every HTTP handler shares: the authenticated caller
// (Principal) and client address carried in the request context, the mapping
// from errs codes to RFC 9457 problem responses, and the security scheme name.
// Domain packages register their own typed huma operations (service_*.go) and
// call these helpers; the server package wires them together.
package api

import (
	"context"
	"errors"
	"log/slog"
	"math"
	"net/http"
	"strconv"
	"strings"

	"github.com/danielgtaylor/huma/v2"

	"github.com/airlockpam/airlock/internal/errs"
)

// BearerAuth is the name of the security scheme in the OpenAPI document.
const BearerAuth = "bearer"

// Secured is the Security value for operations that need a token.
var Secured = []map[string][]string{{BearerAuth: {}}}

// Subject kinds.
const (
	SubjectUser    = "user"
	SubjectMachine = "machine"
)

// Principal is an authenticated caller: a user or a machine identity.
type Principal struct {
	Kind     string // SubjectUser or SubjectMachine
	ID       string
	OrgID    string
	Name     string // email of a user, name of a machine identity
	OrgAdmin bool   // organization administrators administer every project
	// TokenFamily identifies the login the access token belongs to.
	TokenFamily string
}

type ctxKey int

const (
	principalKey ctxKey = iota
	clientAddrKey
)

// WithPrincipal returns ctx carrying p.
func WithPrincipal(ctx context.Context, p *Principal) context.Context {
	return context.WithValue(ctx, principalKey, p)
}

// PrincipalFrom returns the caller, or nil for an anonymous request.
func PrincipalFrom(ctx context.Context) *Principal {
	p, _ := ctx.Value(principalKey).(*Principal)
	return p
}

// MustPrincipal returns the caller or an Unauthenticated error.
func MustPrincipal(ctx context.Context) (*Principal, error) {
	if p := PrincipalFrom(ctx); p != nil {
		return p, nil
	}
	return nil, errs.E("api.MustPrincipal", errs.Unauthenticated, "this endpoint needs a token: run `airlock login` or send Authorization: Bearer <token>")
}

// WithClientAddr returns ctx carrying the client's address.
func WithClientAddr(ctx context.Context, addr string) context.Context {
	return context.WithValue(ctx, clientAddrKey, addr)
}

// ClientAddr returns the client's address ("" when unknown).
func ClientAddr(ctx context.Context) string {
	s, _ := ctx.Value(clientAddrKey).(string)
	return s
}

// Err converts an error from a domain package into a problem response.
// Internal errors are logged and answered without their details.
func Err(ctx context.Context, err error) error {
	if err == nil {
		return nil
	}
	var se huma.StatusError
	if errors.As(err, &se) {
		return se
	}
	var e *errs.Error
	if !errors.As(err, &e) || e.Code == errs.Internal {
		slog.ErrorContext(ctx, "request failed", "err", err)
		return huma.Error500InternalServerError("internal error; the server log has the details")
	}
	if e.Code == errs.Unavailable || e.Code == errs.DataLoss {
		slog.WarnContext(ctx, "dependency unavailable", "err", err)
	}
	var details []error
	if e.Field != "" {
		details = append(details, &huma.ErrorDetail{Message: e.Msg, Location: e.Field})
	}
	se = huma.NewError(Status(e.Code), e.Msg, details...)
	if e.RetryAfter > 0 {
		secs := strconv.Itoa(int(math.Ceil(e.RetryAfter.Seconds())))
		return huma.ErrorWithHeaders(se, http.Header{"Retry-After": {secs}})
	}
	return se
}

// Status maps an error code to an HTTP status.
func Status(c errs.Code) int {
	switch c {
	case errs.Invalid:
		return http.StatusUnprocessableEntity
	case errs.NotFound:
		return http.StatusNotFound
	case errs.Conflict:
		return http.StatusConflict
	case errs.Unauthenticated:
		return http.StatusUnauthorized
	case errs.Forbidden:
		return http.StatusForbidden
	case errs.Locked:
		return http.StatusLocked
	case errs.RateLimited:
		return http.StatusTooManyRequests
	case errs.Unavailable:
		return http.StatusServiceUnavailable
	default:
		return http.StatusInternalServerError
	}
}

// unechoed returns a copy of d without the caller's input. An unknown
// property or query parameter is named by its location, which is the
// caller's own key: the location is cut to its parent (body, query).
func unechoed(d *huma.ErrorDetail) *huma.ErrorDetail {
	out := &huma.ErrorDetail{Message: d.Message, Location: d.Location}
	switch d.Message {
	case "unexpected property", "unknown query parameter":
		if i := strings.LastIndexByte(d.Location, '.'); i >= 0 {
			out.Location = d.Location[:i]
		}
		out.Message += ": remove the fields and parameters this operation does not define (see /api/openapi.json)"
	}
	return out
}

func init() {
	// huma's validation errors echo the offending value back to the caller.
	// For a login or a secret that value may be a password, so problems
	// name the field and the rule but never carry input values.
	huma.NewError = func(status int, msg string, errs ...error) huma.StatusError {
		m := &huma.ErrorModel{Status: status, Title: http.StatusText(status), Detail: msg}
		for _, err := range errs {
			var d *huma.ErrorDetail
			if errors.As(err, &d) {
				m.Errors = append(m.Errors, unechoed(d))
				continue
			}
			if err != nil {
				m.Errors = append(m.Errors, &huma.ErrorDetail{Message: err.Error()})
			}
		}
		return m
	}
}
