package cli

import (
	"net/http"
	"net/url"

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
	cmd.AddCommand(show, terminate)
	return cmd
}
