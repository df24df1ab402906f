package cli

import (
	"errors"
	"fmt"
	"net/http"
	"net/url"

	"github.com/spf13/cobra"

	"github.com/airlockpam/airlock/internal/relay"
)

// addGatewayProjectCommands adds `allow-project`, `disallow-project` and
// `projects` to the gateways command: an organization admin decides which
// projects may name a gateway in their resources.
func addGatewayProjectCommands(o *options, gateways *cobra.Command) *cobra.Command {
	var projectID string
	// change sends method for the gateway and the project, then says done.
	change := func(method, done string) func(*cobra.Command, []string) error {
		return func(cmd *cobra.Command, args []string) error {
			if projectID == "" {
				return errors.New("give the project with --project-id (`airlock projects list` shows them)")
			}
			given := projectID
			c, err := projectClient(cmd.Context(), &projectID)
			if err != nil {
				return err
			}
			p := "/api/v1/gateways/" + url.PathEscape(args[0]) + "/projects/" + url.PathEscape(projectID)
			if err := c.do(cmd.Context(), method, p, nil, nil, nil); err != nil {
				return err
			}
			_, err = fmt.Fprintf(o.stdout, done+"\n", given, args[0])
			return err
		}
	}
	allow := &cobra.Command{
		Use: "allow-project GATEWAY --project-id PROJECT", Short: "Allow a project to use a gateway (organization admins)", Args: cobra.ExactArgs(1),
		Long: "Allow a project's resources to name the gateway. A project may use only the gateways an organization admin allows it.",
		RunE: change(http.MethodPut, "Project %s may use gateway %s."),
	}
	disallow := &cobra.Command{
		Use: "disallow-project GATEWAY --project-id PROJECT", Short: "Stop a project from using a gateway (organization admins)", Args: cobra.ExactArgs(1),
		Long: "Stop a project from using the gateway: its live sessions through the gateway end, and its resources that name " +
			"the gateway cannot be used until the project is allowed again or they name another gateway.",
		RunE: change(http.MethodDelete, "Project %s may no longer use gateway %s."),
	}
	for _, c := range []*cobra.Command{allow, disallow} {
		c.Flags().StringVar(&projectID, "project-id", "", projectFlagHelp)
	}
	list := &cobra.Command{
		Use: "projects GATEWAY", Short: "List the projects allowed to use a gateway (organization admins)", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := loggedInClient()
			if err != nil {
				return err
			}
			var ps []relay.GatewayProject
			if err := c.do(cmd.Context(), http.MethodGet, "/api/v1/gateways/"+url.PathEscape(args[0])+"/projects", nil, nil, &ps); err != nil {
				return err
			}
			rows := make([][]string, 0, len(ps))
			for _, p := range ps {
				since := "before assignments"
				if !p.AllowedAt.IsZero() {
					since = fmtTime(p.AllowedAt)
				}
				rows = append(rows, []string{p.ProjectName, p.ProjectID, since})
			}
			return o.printTable(ps, []string{"PROJECT", "ID", "ALLOWED"}, rows)
		},
	}
	gateways.AddCommand(allow, disallow, list)
	return gateways
}
