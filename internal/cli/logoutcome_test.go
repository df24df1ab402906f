package cli

import (
	"testing"

	"github.com/airlockpam/airlock/internal/sessionlog"
)

// A statement with no outcome is the start record the gateway delivered
// while the statement ran: it is printed as running.
func TestLogOutcome(t *testing.T) {
	for _, tc := range []struct {
		e    sessionlog.Event
		want string
	}{
		{sessionlog.Event{Kind: "query", Outcome: "SELECT 1"}, "SELECT 1"},
		{sessionlog.Event{Kind: "query"}, "running"},
		{sessionlog.Event{Kind: "execute"}, "running"},
		{sessionlog.Event{Kind: "command"}, "running"},
		{sessionlog.Event{Kind: "query", Outcome: "error", ErrorCode: "42P01", ErrorMsg: "no table"}, "error (42P01)"},
		{sessionlog.Event{Kind: "execute", Outcome: "outcome unknown", ErrorMsg: "the gateway stopped"}, "outcome unknown"},
		{sessionlog.Event{Kind: "connect", Outcome: "ok"}, "ok"},
		{sessionlog.Event{Kind: "disconnect"}, "-"},
	} {
		if got := logOutcome(&tc.e); got != tc.want {
			t.Errorf("logOutcome(%+v) = %q; want %q", tc.e, got, tc.want)
		}
	}
}
