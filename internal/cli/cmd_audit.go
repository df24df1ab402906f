package cli

import (
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"github.com/spf13/cobra"

	"github.com/airlockpam/airlock/internal/audit"
)

func newAuditCommand(o *options) *cobra.Command {
	cmd := &cobra.Command{Use: "audit", Short: "Read the admin audit log"}
	var actor, action, projectID, from, to string
	var limit int
	list := &cobra.Command{
		Use: "list", Short: "List audit events, newest first", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := projectClient(cmd.Context(), &projectID)
			if err != nil {
				return err
			}
			q := url.Values{}
			for k, v := range map[string]string{"actor": actor, "action": action, "projectId": projectID} {
				if v != "" {
					q.Set(k, v)
				}
			}
			if err := setTimeRange(q, from, to); err != nil {
				return err
			}
			q.Set("limit", strconv.Itoa(limit))
			var evs []audit.Entry
			if err := c.do(cmd.Context(), http.MethodGet, "/api/v1/audit-logs", q, nil, &evs); err != nil {
				return err
			}
			rows := make([][]string, 0, len(evs))
			for _, e := range evs {
				actor := e.ActorName
				if actor == "" {
					actor = e.ActorKind
				}
				rows = append(rows, []string{fmtTime(e.At), actor, e.ClientAddr, e.Action, e.Outcome, e.TargetKind + ":" + e.TargetID})
			}
			return o.printTable(evs, []string{"TIME", "ACTOR", "ADDRESS", "ACTION", "OUTCOME", "TARGET"}, rows)
		},
	}
	fl := list.Flags()
	fl.StringVar(&actor, "actor", "", "only events by this actor (id or email)")
	fl.StringVar(&action, "action", "", "only this action (e.g. auth.login), or a prefix ending in a dot (auth.)")
	fl.StringVar(&projectID, "project-id", "", "only events of this project (its name or id)")
	fl.StringVar(&from, "from", "", "only events at or after this time (RFC 3339, or a duration ago such as 24h)")
	fl.StringVar(&to, "to", "", "only events before this time (RFC 3339, or a duration ago)")
	fl.IntVar(&limit, "limit", 100, "at most this many events (1-1000)")
	verify := &cobra.Command{
		Use: "verify", Short: "Verify that no audit log entry was altered, removed or cut off (organization admins)", Args: cobra.NoArgs,
		Long: `Verify the organization's admin audit log: every entry's hash chain, and the
chain's head against its MAC, made with a key derived from the server's root
key, which someone who can write only the store cannot forge. Exits 1 when the
log was tampered with, naming the first entry affected.`,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := loggedInClient()
			if err != nil {
				return err
			}
			var res audit.Verification
			if err := c.do(cmd.Context(), http.MethodPost, "/api/v1/audit-logs/verify", nil, nil, &res); err != nil {
				return err
			}
			if o.output == "json" {
				if err := o.printJSON(res); err != nil {
					return err
				}
			} else if res.OK {
				fmt.Fprintf(o.stdout, "OK: %d audit log entries, chained and authenticated.\n", res.Entries)
			} else {
				fmt.Fprintf(o.stdout, "TAMPERED: %s (first affected entry: %d of %d).\n", res.Problem, res.FirstBad, res.Entries)
			}
			if !res.OK {
				return errAuditTampered
			}
			return nil
		},
	}
	cmd.AddCommand(list, verify)
	return cmd
}

// errAuditTampered makes `airlock audit verify` exit non-zero.
var errAuditTampered = errors.New("the audit log failed verification")

// setTimeRange puts --from and --to into q as RFC 3339 times.
func setTimeRange(q url.Values, from, to string) error {
	for k, v := range map[string]string{"from": from, "to": to} {
		if v == "" {
			continue
		}
		t, err := parseTimeFlag(v)
		if err != nil {
			return fmt.Errorf("--%s: %w", k, err)
		}
		q.Set(k, t.UTC().Format(time.RFC3339Nano))
	}
	return nil
}

// parseTimeFlag reads an RFC 3339 time or a duration meaning "that long ago".
func parseTimeFlag(v string) (time.Time, error) {
	if t, err := time.Parse(time.RFC3339, v); err == nil {
		return t, nil
	}
	if d, err := time.ParseDuration(v); err == nil && d > 0 {
		return time.Now().Add(-d), nil
	}
	return time.Time{}, fmt.Errorf("%q is neither an RFC 3339 time (2026-01-02T15:04:05Z) nor a duration (24h)", v)
}
