package cli

import "testing"

// A statement with no outcome is the start record the gateway delivered
// while the statement ran: it is printed as running.
func TestLogOutcome(t *testing.T) {
	for _, tc := range []struct {
		e    logEvent
		want string
	}{
		{logEvent{Kind: "query", Outcome: "SELECT 1"}, "SELECT 1"},
		{logEvent{Kind: "query"}, "running"},
		{logEvent{Kind: "execute"}, "running"},
		{logEvent{Kind: "command"}, "running"},
		{logEvent{Kind: "query", Outcome: "error", ErrorCode: "42P01", ErrorMsg: "no table"}, "error (42P01)"},
		{logEvent{Kind: "execute", Outcome: "outcome unknown", ErrorMsg: "the gateway stopped"}, "outcome unknown"},
		{logEvent{Kind: "connect", Outcome: "ok"}, "ok"},
		{logEvent{Kind: "disconnect"}, "-"},
	} {
		if got := logOutcome(&tc.e); got != tc.want {
			t.Errorf("logOutcome(%+v) = %q; want %q", tc.e, got, tc.want)
		}
	}
}
