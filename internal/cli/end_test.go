package cli

import (
	"strings"
	"testing"
	"time"

	"github.com/airlockpam/airlock/internal/session"
)

// TestEveryEndReasonIsExplained: db access and `sessions end` say in words
// why a session ended, for every reason the server records.
func TestEveryEndReasonIsExplained(t *testing.T) {
	at := time.Date(2026, 12, 3, 10, 0, 0, 0, time.UTC)
	cases := map[string]struct{ access, end string }{
		"ended_by_user":   {"ended by its owner", "ended by its owner"},
		"expired":         {"session expired", "expired"},
		"terminated":      {"terminated by an administrator", "terminated by an administrator"},
		"revoked":         {"because access was revoked", "because access was revoked"},
		"client_lost":     {"could not reach the server for too long", "could not reach the server for too long"},
		"gateway_lost":    {"its gateway was unreachable", "its gateway was unreachable"},
		"gateway_stopped": {"its gateway was unreachable", "its gateway was unreachable"},
		"a_new_reason":    {"(a_new_reason)", "(a_new_reason)"},
	}
	revoked := session.Session{Status: "ended", EndReason: "revoked", EndedAt: &at,
		EndMessage: "session ended: access was revoked: user removed from the project"}
	if got := endExplanation(revoked); !strings.Contains(got, "because access was revoked: user removed from the project;") {
		t.Errorf("revoked: db access says %q, want the server's words for what went away", got)
	}
	for reason, want := range cases {
		s := session.Session{Status: "ended", EndReason: reason, EndedAt: &at}
		if got := endExplanation(s); !strings.Contains(got, want.access) || !strings.Contains(got, " at "+fmtTime(at)) {
			t.Errorf("%s: db access says %q, want %q and the time", reason, got, want.access)
		}
		if got := endedInWords(s); !strings.Contains(got, want.end) || !strings.Contains(got, " at "+fmtTime(at)) {
			t.Errorf("%s: sessions end says %q, want %q and the time", reason, got, want.end)
		}
	}
}
