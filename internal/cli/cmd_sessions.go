package cli

import (
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"github.com/spf13/cobra"
)

func (o *options) printSession(s sessionInfo) error {
	ended, reason := "-", "-"
	if s.EndedAt != nil {
		ended, reason = fmtTime(*s.EndedAt), s.EndReason
	}
	started := "-"
	if s.StartedAt != nil {
		started = fmtTime(*s.StartedAt)
	}
	return o.printObject(s, [][2]string{{"ID", s.ID}, {"User", s.UserName}, {"Resource", s.ResourceName + " (" + s.ResourceKind + ")"},
		{"Account", s.AccountName + " (" + s.AccountUsername + ")"}, {"Status", s.Status}, {"Created", fmtTime(s.CreatedAt)},
		{"Started", started}, {"Expires", fmtTime(s.ExpiresAt)}, {"Ended", ended}, {"End reason", reason}, {"Duration", s.Duration}})
}

func newSessionsCommand(o *options) *cobra.Command {
	cmd := &cobra.Command{Use: "sessions", Short: "Inspect and terminate access sessions"}
	show := &cobra.Command{
		Use: "show ID", Short: "Show a session", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := loggedInClient()
			if err != nil {
				return err
			}
			var s sessionInfo
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
			var s sessionInfo
			if err := c.do(cmd.Context(), http.MethodPost, "/api/v1/sessions/"+url.PathEscape(args[0])+"/terminate", nil, nil, &s); err != nil {
				return err
			}
			return o.printSession(s)
		},
	}
	var projectID, resource, account, user, status, from, to string
	var limit int
	list := &cobra.Command{
		Use: "list", Short: "List a project's sessions, newest first", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := loggedInClient()
			if err != nil {
				return err
			}
			q := url.Values{"limit": {strconv.Itoa(limit)}}
			for k, v := range map[string]string{"resource": resource, "account": account, "user": user, "status": status} {
				if v != "" {
					q.Set(k, v)
				}
			}
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
			var ss []sessionInfo
			if err := c.do(cmd.Context(), http.MethodGet, "/api/v1/projects/"+url.PathEscape(projectID)+"/sessions", q, nil, &ss); err != nil {
				return err
			}
			rows := make([][]string, 0, len(ss))
			for _, s := range ss {
				rows = append(rows, []string{s.ID, s.UserName, s.ResourceName, s.AccountName, s.Status, s.EndReason, fmtTime(s.CreatedAt), s.Duration})
			}
			return o.printTable(ss, []string{"ID", "USER", "RESOURCE", "ACCOUNT", "STATUS", "END REASON", "CREATED", "DURATION"}, rows)
		},
	}
	fl := list.Flags()
	fl.StringVar(&projectID, "project-id", "", "the project's id")
	_ = list.MarkFlagRequired("project-id")
	fl.StringVar(&resource, "resource", "", "only sessions on this resource")
	fl.StringVar(&account, "account", "", "only sessions on this account")
	fl.StringVar(&user, "user", "", "only sessions of this user (email) or machine identity")
	fl.StringVar(&status, "status", "", "active or ended")
	fl.StringVar(&from, "from", "", "created at or after (RFC 3339, or a duration ago such as 24h)")
	fl.StringVar(&to, "to", "", "created before (RFC 3339, or a duration ago)")
	fl.IntVar(&limit, "limit", 100, "at most this many sessions (1-1000)")
	cmd.AddCommand(list, show, terminate)
	return cmd
}
