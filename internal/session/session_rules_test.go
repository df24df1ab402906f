package session

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/airlockpam/airlock/internal/api"
	"github.com/airlockpam/airlock/internal/errs"
)

// allowed is a session whose access holds on every count.
func allowed() accessState {
	return accessState{
		id: "s1", subjectKind: api.SubjectUser, status: StatusActive,
		projectExists: true, subjectExists: true, role: "member",
		resourceExists: true, accountExists: true, gatewayExists: true, gatewayAllowed: true,
		familyTokens: 2, familyLive: 2,
	}
}

// TestDenial maps each way a session loses its access to the end reason
// and the words its owner is shown.
func TestDenial(t *testing.T) {
	for _, tc := range []struct {
		name         string
		change       func(x *accessState)
		reason, want string
	}{
		{"member", func(x *accessState) {}, "", ""},
		{"admin", func(x *accessState) { x.role = "admin" }, "", ""},
		{"org admin without a membership", func(x *accessState) { x.role, x.orgAdmin = "", true }, "", ""},
		{"org admin with a viewer membership", func(x *accessState) { x.role, x.orgAdmin = "viewer", true }, "", ""},
		{"tokens of the login expired and were cleaned up", func(x *accessState) { x.familyTokens, x.familyLive = 0, 0 }, "", ""},
		{"one token of the login still live", func(x *accessState) { x.familyLive = 1 }, "", ""},

		{"project deleted", func(x *accessState) { x.projectExists = false }, Revoked, "the project was deleted"},
		{"user deleted", func(x *accessState) { x.subjectExists = false }, Revoked, "user deleted"},
		{"machine identity deleted", func(x *accessState) { x.subjectKind, x.subjectExists = api.SubjectMachine, false },
			Revoked, "machine identity deleted"},
		{"user disabled", func(x *accessState) { x.disabled = true }, Revoked, "user disabled"},
		{"org admin disabled", func(x *accessState) { x.orgAdmin, x.disabled = true, true }, Revoked, "user disabled"},
		{"login revoked", func(x *accessState) { x.familyLive = 0 }, Revoked,
			"login revoked (logged out, or its tokens were revoked)"},
		{"removed from the project", func(x *accessState) { x.role = "" }, Revoked, "user removed from the project"},
		{"machine removed from the project", func(x *accessState) { x.subjectKind, x.role = api.SubjectMachine, "" },
			Revoked, "machine identity removed from the project"},
		{"lowered to viewer", func(x *accessState) { x.role = "viewer" }, Revoked, "user's role in the project lowered to viewer"},
		{"resource deleted", func(x *accessState) { x.resourceExists = false }, Revoked, "resource deleted"},
		{"account deleted", func(x *accessState) { x.accountExists = false }, Revoked, "account deleted"},
		{"gateway deleted", func(x *accessState) { x.gatewayExists = false }, GatewayLost, "the gateway was deleted"},
		{"gateway taken from the project", func(x *accessState) { x.gatewayAllowed = false }, Revoked,
			"the project may no longer use the gateway"},

		// When several things went away, the widest one is named.
		{"project and account deleted", func(x *accessState) { x.projectExists, x.accountExists = false, false },
			Revoked, "the project was deleted"},
		{"user deleted and gateway deleted", func(x *accessState) { x.subjectExists, x.gatewayExists = false, false },
			Revoked, "user deleted"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			x := allowed()
			tc.change(&x)
			reason, detail := x.denial()
			if reason != tc.reason || detail != tc.want {
				t.Fatalf("denial() = %q, %q; want %q, %q", reason, detail, tc.reason, tc.want)
			}
		})
	}
}

// TestEndMessage checks the words each end reason is told to clients with.
func TestEndMessage(t *testing.T) {
	exp := time.Date(2026, 12, 3, 18, 30, 0, 0, time.FixedZone("CET", 3600))
	for reason, want := range map[string]string{
		Terminated:  "session terminated by an administrator",
		Expired:     "session expired at 2026-12-03T17:30:00Z",
		EndedByUser: "session ended by its owner",
		GatewayLost: "session ended: its gateway was lost",
		ClientLost:  "session ended: its client (the airlock CLI, or the server's web console) was unreachable for too long",
		Revoked:     "session ended: access was revoked",
		"surprise":  "session ended (surprise)",
	} {
		if got := EndMessage(reason, exp); got != want {
			t.Errorf("EndMessage(%q) = %q, want %q", reason, got, want)
		}
	}
}

func TestParseDuration(t *testing.T) {
	const op = "test"
	max := 8 * time.Hour
	for _, tc := range []struct {
		in   string
		want time.Duration
	}{
		{"", DefaultTTL},
		{"10s", 10 * time.Second},
		{"30m", 30 * time.Minute},
		{"2h30m", 150 * time.Minute},
		{"8h", max},
	} {
		got, err := ParseDuration(op, tc.in, max)
		if err != nil || got != tc.want {
			t.Errorf("ParseDuration(%q) = %v, %v; want %v", tc.in, got, err, tc.want)
		}
	}
	for _, tc := range []struct{ in, words string }{
		{"soon", "not a duration"},
		{"0s", "not a duration"},
		{"-1h", "not a duration"},
		{"9s", "at least 10s"},
		{"8h0m1s", "longer than this project's maximum session of 8h0m0s"},
		{"100h", "ask for at most 8h0m0s"},
	} {
		_, err := ParseDuration(op, tc.in, max)
		var e *errs.Error
		if !errs.Is(err, errs.Invalid) || !errors.As(err, &e) || e.Field != "body.duration" {
			t.Errorf("ParseDuration(%q): %v, want invalid body.duration", tc.in, err)
			continue
		}
		if !strings.Contains(e.Msg, tc.words) {
			t.Errorf("ParseDuration(%q): %q does not say %q", tc.in, e.Msg, tc.words)
		}
	}
	// The project's maximum wins over the default when it is shorter.
	if _, err := ParseDuration(op, "", 30*time.Minute); !errs.Is(err, errs.Invalid) {
		t.Errorf("the default of %v is allowed under a 30m maximum", DefaultTTL)
	}
}
