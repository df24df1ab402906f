package cli

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"

	"github.com/spf13/cobra"

	"github.com/airlockpam/airlock/internal/tunnel"

	"github.com/airlockpam/airlock/internal/session"
	"github.com/airlockpam/airlock/internal/sessionlog"
)

func (o *options) printSession(s session.Session) error {
	ended, reason := "-", "-"
	if s.EndedAt != nil {
		ended, reason = fmtTime(*s.EndedAt), s.EndReason
		if s.EndMessage != "" {
			reason += " (" + s.EndMessage + ")"
		}
	}
	started := "-"
	if s.StartedAt != nil {
		started = fmtTime(*s.StartedAt)
	}
	return o.printObject(s, [][2]string{{"ID", s.ID}, {"User", s.UserName}, {"Resource", s.ResourceName + " (" + s.ResourceKind + ")"},
		{"Account", s.AccountName + " (" + s.AccountUsername + ")"}, {"Access", orDash(s.AccessMethod)}, {"Client address", orDash(s.ClientAddr)},
		{"Status", s.Status}, {"Created", fmtTime(s.CreatedAt)},
		{"Started", started}, {"Expires", fmtTime(s.ExpiresAt)}, {"Ended", ended}, {"End reason", reason}, {"Duration", s.Duration}})
}

func newSessionsCommand(o *options) *cobra.Command {
	cmd := &cobra.Command{Use: "sessions", Short: "Inspect, end and terminate access sessions"}
	show := &cobra.Command{
		Use: "show ID", Short: "Show a session", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := loggedInClient()
			if err != nil {
				return err
			}
			var s session.Session
			if err := c.do(cmd.Context(), http.MethodGet, "/api/v1/sessions/"+url.PathEscape(args[0]), nil, nil, &s); err != nil {
				return err
			}
			return o.printSession(s)
		},
	}
	terminate := &cobra.Command{
		Use: "terminate ID", Short: "Terminate a session and close its connections (project admins)", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := loggedInClient()
			if err != nil {
				return err
			}
			var s session.Session
			if err := c.do(cmd.Context(), http.MethodPost, "/api/v1/sessions/"+url.PathEscape(args[0])+"/terminate", nil, nil, &s); err != nil {
				return err
			}
			return o.printSession(s)
		},
	}
	end := &cobra.Command{
		Use: "end ID", Short: "End your own session and close its connections", Args: cobra.ExactArgs(1),
		Long: `End one of your own sessions: its connections are closed, and the
airlock db access that serves it explains why and exits. Ending a session that
has already ended changes nothing and says when and why it ended. Project
admins end other people's sessions with airlock sessions terminate.`,
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := loggedInClient()
			if err != nil {
				return err
			}
			return o.endSession(cmd.Context(), c, args[0])
		},
	}
	var projectID, resource, account, user, status, from, to string
	var limit int
	list := &cobra.Command{
		Use: "list", Short: "List a project's sessions, newest first", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := projectClient(cmd.Context(), &projectID)
			if err != nil {
				return err
			}
			q := url.Values{"limit": {strconv.Itoa(limit)}}
			for k, v := range map[string]string{"resource": resource, "account": account, "user": user, "status": status} {
				if v != "" {
					q.Set(k, v)
				}
			}
			if err := setTimeRange(q, from, to); err != nil {
				return err
			}
			var ss []session.Session
			if err := c.do(cmd.Context(), http.MethodGet, "/api/v1/projects/"+url.PathEscape(projectID)+"/sessions", q, nil, &ss); err != nil {
				return err
			}
			rows := make([][]string, 0, len(ss))
			for _, s := range ss {
				rows = append(rows, []string{s.ID, s.UserName, s.ResourceName, s.AccountName, orDash(s.AccessMethod), s.Status, s.EndReason, fmtTime(s.CreatedAt), s.Duration})
			}
			return o.printTable(ss, []string{"ID", "USER", "RESOURCE", "ACCOUNT", "ACCESS", "STATUS", "END REASON", "CREATED", "DURATION"}, rows)
		},
	}
	fl := list.Flags()
	fl.StringVar(&projectID, "project-id", "", projectFlagHelp)
	_ = list.MarkFlagRequired("project-id")
	fl.StringVar(&resource, "resource", "", "only sessions on this resource")
	fl.StringVar(&account, "account", "", "only sessions on this account")
	fl.StringVar(&user, "user", "", "only sessions of this user (email) or machine identity")
	fl.StringVar(&status, "status", "", "active or ended")
	fl.StringVar(&from, "from", "", "created at or after (RFC 3339, or a duration ago such as 24h)")
	fl.StringVar(&to, "to", "", "created before (RFC 3339, or a duration ago)")
	fl.IntVar(&limit, "limit", 100, "at most this many sessions (1-1000)")
	var lf logFlags
	logs := &cobra.Command{
		Use: "logs ID", Short: "Show the queries and commands of a session, oldest first", Args: cobra.ExactArgs(1),
		Long: `Show a session's log, oldest first: one line per event, its columns aligned,
a multi-line statement on lines of its own under the STATEMENT column, and an
error's message on the line below (-- ...). CONN numbers the session's
connections #1, #2... in the order they opened, the same in every listing.

The filters are applied by the server: --conn (#2, 2, or a connection id or
the start or end of one), --kind (query, execute, function_call, copy_in,
copy_out, command, connect, disconnect; comma-separated), --errors (events
that failed or whose outcome is not known), --since (an RFC 3339 time, or a
duration ago such as 10m), --search TEXT (statement, parameters, outcome or
error holding TEXT, ignoring case) and --tail N (the last N matching events).
An event that fails its integrity check is always listed.`,
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := loggedInClient()
			if err != nil {
				return err
			}
			return o.sessionLogs(cmd.Context(), c, args[0], lf)
		},
	}
	lfl := logs.Flags()
	lfl.BoolVarP(&lf.follow, "follow", "f", false, "keep printing new events until the session ends")
	lfl.StringVar(&lf.conn, "conn", "", "only the events of this connection: #2, 2, or its id (or the start or end of it)")
	lfl.StringSliceVar(&lf.kinds, "kind", nil, "only events of these kinds (query, execute, function_call, copy_in, copy_out, command, connect, disconnect)")
	lfl.BoolVar(&lf.errors, "errors", false, "only events that failed or whose outcome is not known")
	lfl.IntVar(&lf.tail, "tail", 0, "only the last N matching events (1-1000); with --follow, then the new ones")
	lfl.StringVar(&lf.since, "since", "", "only events at or after this time (RFC 3339, or a duration ago such as 10m)")
	lfl.StringVar(&lf.search, "search", "", "only events whose statement, parameters, outcome or error holds this text (ignoring case)")
	verify := &cobra.Command{
		Use: "verify ID", Short: "Check that a session's log is whole: no event removed or altered (project admins)", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := loggedInClient()
			if err != nil {
				return err
			}
			var r sessionlog.VerifyResult
			if err := c.do(cmd.Context(), http.MethodGet, "/api/v1/sessions/"+url.PathEscape(args[0])+"/verify", nil, nil, &r); err != nil {
				return err
			}
			if o.output == "json" {
				if err := o.printJSON(r); err != nil {
					return err
				}
			} else if r.OK {
				fmt.Fprintf(o.stdout, "The session log is whole: %d events, none removed or altered.\n", r.Events)
			}
			if !r.OK {
				return fmt.Errorf("the session log was tampered with: %s", r.Problem)
			}
			return nil
		},
	}
	cmd.AddCommand(list, show, logs, verify, end, terminate)
	return cmd
}

// endSession ends the caller's session id. It is idempotent: a session
// that had already ended is reported as such (the server answers 409, or
// 200 with the ended session), and that is not an error.
func (o *options) endSession(ctx context.Context, c *client, id string) error {
	path := "/api/v1/sessions/" + url.PathEscape(id)
	var before session.Session
	if err := c.do(ctx, http.MethodGet, path, nil, nil, &before); err != nil {
		return err
	}
	var s session.Session
	already := before.Status != "active"
	if already {
		s = before
	} else {
		err := c.do(ctx, http.MethodPost, path+"/end", nil, nil, &s)
		switch {
		case isStatus(err, http.StatusConflict):
			// It ended between the two calls.
			already = true
			if err := c.do(ctx, http.MethodGet, path, nil, nil, &s); err != nil {
				return err
			}
		case err != nil:
			return fmt.Errorf("ending session %s: %w", id, err)
		case s.ID == "":
			// An answer without the session: read it.
			if err := c.do(ctx, http.MethodGet, path, nil, nil, &s); err != nil {
				return err
			}
		}
	}
	if o.output == "json" {
		return o.printJSON(s)
	}
	if already {
		fmt.Fprintf(o.stdout, "Session %s had already ended: it %s.\n", s.ID, endedInWords(s))
		return nil
	}
	fmt.Fprintf(o.stdout, "Session %s ended; its connections are closed.\n", s.ID)
	return nil
}

// endedInWords says when and why a session ended ("terminated by an
// administrator at ..."), for `sessions end` and `db access`. For a
// revocation it adds the server's words for what went away.
func endedInWords(s session.Session) string {
	at := ""
	if s.EndedAt != nil {
		at = " at " + fmtTime(*s.EndedAt)
	}
	switch s.EndReason {
	case tunnel.EndByUser:
		return "was ended by its owner" + at
	case tunnel.EndExpired:
		return "expired" + at
	case tunnel.EndTerminated:
		return "was terminated by an administrator" + at
	case tunnel.EndRevoked:
		why := ""
		if _, m, ok := strings.Cut(s.EndMessage, "access was revoked: "); ok && m != "" {
			why = ": " + m
		}
		return "was ended" + at + " because access was revoked" + why
	case tunnel.EndClientLost:
		return "was ended" + at + " because its airlock db access could not reach the server for too long (machine asleep, or network down)"
	case tunnel.EndGatewayLost, tunnel.EndGatewayStop:
		return "was ended" + at + " because its gateway was unreachable"
	case "":
		return "has ended" + at
	}
	return "has ended" + at + " (" + s.EndReason + ")"
}
