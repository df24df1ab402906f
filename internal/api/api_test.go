package api_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/danielgtaylor/huma/v2"
	"github.com/danielgtaylor/huma/v2/humatest"

	"github.com/airlockpam/airlock/internal/api"
	"github.com/airlockpam/airlock/internal/errs"
)

// TestStatus checks the status every error code is answered with: clients
// and the CLI branch on these.
func TestStatus(t *testing.T) {
	for _, tc := range []struct {
		code errs.Code
		want int
	}{
		{errs.Invalid, http.StatusUnprocessableEntity},
		{errs.NotFound, http.StatusNotFound},
		{errs.Conflict, http.StatusConflict},
		{errs.Unauthenticated, http.StatusUnauthorized},
		{errs.Forbidden, http.StatusForbidden},
		{errs.Locked, http.StatusLocked},
		{errs.RateLimited, http.StatusTooManyRequests},
		{errs.Unavailable, http.StatusServiceUnavailable},
		{errs.Internal, http.StatusInternalServerError},
		{errs.DataLoss, http.StatusInternalServerError},
	} {
		if got := api.Status(tc.code); got != tc.want {
			t.Errorf("Status(%s) = %d, want %d", tc.code, got, tc.want)
		}
	}
}

func problem(t *testing.T, err error) *huma.ErrorModel {
	t.Helper()
	var m *huma.ErrorModel
	if !errors.As(err, &m) {
		t.Fatalf("Err returned %T (%v), not a problem", err, err)
	}
	return m
}

func TestErr(t *testing.T) {
	ctx := context.Background()
	if api.Err(ctx, nil) != nil {
		t.Fatal("Err(nil) is not nil")
	}

	t.Run("coded error keeps its status, message and field", func(t *testing.T) {
		m := problem(t, api.Err(ctx, errs.Wrap("outer", errs.Internal, "ignored",
			errs.InvalidField("inner", "body.name", "the name is too long"))))
		if m.Status != http.StatusUnprocessableEntity || m.Detail != "the name is too long" {
			t.Fatalf("got %d %q", m.Status, m.Detail)
		}
		if len(m.Errors) != 1 || m.Errors[0].Location != "body.name" {
			t.Fatalf("details %+v, want one at body.name", m.Errors)
		}
	})

	t.Run("internal details are not shown", func(t *testing.T) {
		for _, err := range []error{
			fmt.Errorf("pq: password authentication failed for user \"secret-user\""),
			&errs.Error{Op: "x", Code: errs.Internal, Msg: "secret-user's row is broken", Err: errors.New("secret-user")},
		} {
			m := problem(t, api.Err(ctx, err))
			if m.Status != http.StatusInternalServerError {
				t.Fatalf("status %d, want 500", m.Status)
			}
			if strings.Contains(m.Detail, "secret-user") || len(m.Errors) != 0 {
				t.Fatalf("internal error leaked: %q %+v", m.Detail, m.Errors)
			}
		}
	})

	t.Run("cause is not shown", func(t *testing.T) {
		err := &errs.Error{Op: "x", Code: errs.Unavailable, Msg: "the store is unreachable", Err: errors.New("dial 10.0.0.7:5432")}
		m := problem(t, api.Err(ctx, err))
		if m.Status != http.StatusServiceUnavailable || strings.Contains(m.Detail, "10.0.0.7") {
			t.Fatalf("got %d %q", m.Status, m.Detail)
		}
	})

	t.Run("retry after is whole seconds, rounded up", func(t *testing.T) {
		err := api.Err(ctx, &errs.Error{Op: "x", Code: errs.RateLimited, Msg: "slow down", RetryAfter: 1500 * time.Millisecond})
		var he huma.HeadersError
		if !errors.As(err, &he) {
			t.Fatalf("no headers on %v", err)
		}
		if got := he.GetHeaders().Get("Retry-After"); got != "2" {
			t.Fatalf("Retry-After %q, want 2", got)
		}
		if m := problem(t, err); m.Status != http.StatusTooManyRequests {
			t.Fatalf("status %d", m.Status)
		}
	})

	t.Run("a status error passes through", func(t *testing.T) {
		in := huma.Error404NotFound("gone")
		if got := api.Err(ctx, fmt.Errorf("wrapped: %w", in)); got != in {
			t.Fatalf("got %v, want the status error itself", got)
		}
	})
}

func TestPrincipal(t *testing.T) {
	ctx := context.Background()
	if api.PrincipalFrom(ctx) != nil {
		t.Fatal("an anonymous context has a principal")
	}
	if _, err := api.MustPrincipal(ctx); !errs.Is(err, errs.Unauthenticated) {
		t.Fatalf("MustPrincipal without a caller: %v, want unauthenticated", err)
	}
	p := &api.Principal{Kind: api.SubjectUser, ID: "u1", OrgID: "o1"}
	got, err := api.MustPrincipal(api.WithPrincipal(ctx, p))
	if err != nil || got != p {
		t.Fatalf("MustPrincipal = %v, %v", got, err)
	}
	if api.ClientAddr(ctx) != "" || api.ClientAddr(api.WithClientAddr(ctx, "192.0.2.1:5")) != "192.0.2.1:5" {
		t.Fatal("client address not carried")
	}
}

// TestProblemsDoNotEchoInput sends values huma refuses and checks that
// the problem names the field and the rule but never the value: for a
// login that value may be a password.
func TestProblemsDoNotEchoInput(t *testing.T) {
	_, tapi := humatest.New(t)
	huma.Register(tapi, huma.Operation{OperationID: "login", Method: http.MethodPost, Path: "/login"},
		func(ctx context.Context, in *struct {
			Body struct {
				Email    string `json:"email" format:"email"`
				Password string `json:"password" minLength:"40" pattern:"^[a-z]+$"`
			}
		}) (*struct{}, error) {
			return nil, nil
		})

	const secret = "Hunter2-Secret"
	for name, body := range map[string]string{
		"invalid value":      `{"email":"a@example.com","password":"` + secret + `"}`,
		"unexpected key":     `{"email":"a@example.com","password":"abcdefghijabcdefghijabcdefghijabcdefghij","` + secret + `":"x"}`,
		"unexpected a value": `{"email":"a@example.com","password":"abcdefghijabcdefghijabcdefghijabcdefghij","extra":"` + secret + `"}`,
	} {
		t.Run(name, func(t *testing.T) {
			resp := tapi.Post("/login", strings.NewReader(body))
			if resp.Code != http.StatusUnprocessableEntity {
				t.Fatalf("status %d, want 422: %s", resp.Code, resp.Body)
			}
			if strings.Contains(resp.Body.String(), secret) {
				t.Fatalf("the problem echoes the input: %s", resp.Body)
			}
			if !strings.Contains(resp.Body.String(), "body") {
				t.Fatalf("the problem does not say where: %s", resp.Body)
			}
		})
	}
}
