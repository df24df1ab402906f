package cli

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"

	"github.com/google/uuid"
	"github.com/spf13/cobra"

	"github.com/airlockpam/airlock/internal/project"
)

// projectFlagHelp is the help text of every --project-id flag.
const projectFlagHelp = "the project's name or id (`airlock projects list` shows them)"

// resolveProject returns the id of the project that ref names: ref itself
// when it is an id (a UUID), otherwise the id of the project of that name
// among the caller's projects (exactly, or else ignoring case when only one
// matches). An empty ref stays empty.
func (c *client) resolveProject(ctx context.Context, ref string) (string, error) {
	if ref == "" {
		return "", nil
	}
	if _, err := uuid.Parse(ref); err == nil {
		return ref, nil
	}
	var ps []project.Project
	if err := c.do(ctx, http.MethodGet, "/api/v1/projects", nil, nil, &ps); err != nil {
		return "", fmt.Errorf("looking up the project named %q: %w", ref, err)
	}
	var folded []project.Project
	for _, p := range ps {
		if p.Name == ref {
			return p.ID, nil
		}
		if strings.EqualFold(p.Name, ref) {
			folded = append(folded, p)
		}
	}
	if len(folded) == 1 {
		return folded[0].ID, nil
	}
	return "", fmt.Errorf("no project named %q among your projects: `airlock projects list` shows the names and ids of "+
		"the projects you can use (--project-id takes either)", ref)
}

// projectClient is loggedInClient for a command with --project-id: it
// replaces *projectID, a project's name or id, with the project's id.
func projectClient(ctx context.Context, projectID *string) (*client, error) {
	c, err := loggedInClient()
	if err != nil {
		return nil, err
	}
	if *projectID, err = c.resolveProject(ctx, *projectID); err != nil {
		return nil, err
	}
	return c, nil
}

func newProjectsCommand(o *options) *cobra.Command {
	cmd := &cobra.Command{Use: "projects", Short: "Manage projects", Aliases: []string{"project"}}
	var desc, maxSession string
	create := &cobra.Command{
		Use: "create NAME", Short: "Create a project and print its id", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := loggedInClient()
			if err != nil {
				return err
			}
			var p project.Project
			body := project.ProjectInput{Name: args[0], Description: desc, MaxSessionDuration: maxSession}
			if err := c.do(cmd.Context(), http.MethodPost, "/api/v1/projects", nil, body, &p); err != nil {
				return err
			}
			if o.output == "json" {
				return o.printJSON(p)
			}
			_, err = o.stdout.Write([]byte(p.ID + "\n"))
			return err
		},
	}
	create.Flags().StringVar(&desc, "description", "", "what the project is for")
	create.Flags().StringVar(&maxSession, "max-session-duration", "", "longest access session, e.g. 8h (default 8h)")

	list := &cobra.Command{
		Use: "list", Short: "List your projects", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := loggedInClient()
			if err != nil {
				return err
			}
			var ps []project.Project
			if err := c.do(cmd.Context(), http.MethodGet, "/api/v1/projects", nil, nil, &ps); err != nil {
				return err
			}
			rows := make([][]string, 0, len(ps))
			for _, p := range ps {
				rows = append(rows, []string{p.ID, p.Name, string(p.Role), p.MaxSessionDuration, fmtTime(p.CreatedAt)})
			}
			return o.printTable(ps, []string{"ID", "NAME", "ROLE", "MAX SESSION", "CREATED"}, rows)
		},
	}
	get := &cobra.Command{
		Use: "get NAME|ID", Short: "Show a project", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			id := args[0]
			c, err := projectClient(cmd.Context(), &id)
			if err != nil {
				return err
			}
			var p project.Project
			if err := c.do(cmd.Context(), http.MethodGet, "/api/v1/projects/"+url.PathEscape(id), nil, nil, &p); err != nil {
				return err
			}
			return o.printObject(p, [][2]string{{"ID", p.ID}, {"Name", p.Name}, {"Description", p.Description},
				{"Your role", string(p.Role)}, {"Max session", p.MaxSessionDuration},
				{"Max statement size", fmtSize(p.MaxStatementBytes)}, {"Oversize statements", p.OversizeStatements},
				{"Created", fmtTime(p.CreatedAt)}})
		},
	}
	var forceDelete bool
	del := &cobra.Command{
		Use: "delete NAME|ID", Short: "Delete a project and everything in it (its session logs stay readable by organization admins)",
		Long: `Delete a project with its resources, accounts, secrets and members.

A project with live or recorded sessions is deleted only with --force: its live
sessions end, and its session logs stay readable (sessions show/logs/verify) by
organization admins.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			id := args[0]
			c, err := projectClient(cmd.Context(), &id)
			if err != nil {
				return err
			}
			var q url.Values
			if forceDelete {
				q = url.Values{"force": {"true"}}
			}
			if err := c.do(cmd.Context(), http.MethodDelete, "/api/v1/projects/"+url.PathEscape(id), q, nil, nil); err != nil {
				return err
			}
			_, err = o.stdout.Write([]byte("Deleted project " + args[0] + ".\n"))
			return err
		},
	}
	del.Flags().BoolVar(&forceDelete, "force", false, "delete even with live sessions (they end) or recorded sessions (their logs stay)")
	var upDesc, upMax string
	var upMasks []string
	var clearMasks, redact bool
	var maxStmt, oversize, consoleTimeout string
	update := &cobra.Command{
		Use: "update NAME|ID", Short: "Change a project's settings (project admins)", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := loggedInClient()
			if err != nil {
				return err
			}
			var body project.ProjectUpdate
			if cmd.Flags().Changed("description") {
				body.Description = &upDesc
			}
			if cmd.Flags().Changed("max-session-duration") {
				body.MaxSessionDuration = &upMax
			}
			if len(upMasks) > 0 || clearMasks {
				if upMasks == nil {
					upMasks = []string{}
				}
				body.LogMaskPatterns = &upMasks
			}
			if cmd.Flags().Changed("log-redact-values") {
				body.LogRedactValues = &redact
			}
			if cmd.Flags().Changed("max-statement-size") {
				n, err := parseSize(maxStmt)
				if err != nil {
					return fmt.Errorf("--max-statement-size: %w", err)
				}
				body.MaxStatementBytes = &n
			}
			if cmd.Flags().Changed("oversize-statements") {
				if oversize != "refuse" && oversize != "record_ends" {
					return errors.New("--oversize-statements must be refuse or record_ends")
				}
				body.OversizeStatements = &oversize
			}
			if cmd.Flags().Changed("console-statement-timeout") {
				body.ConsoleStatementTimeout = &consoleTimeout
			}
			if body == (project.ProjectUpdate{}) {
				return fmt.Errorf("nothing to change: pass --description, --max-session-duration, --log-mask-pattern, --clear-log-mask-patterns, " +
					"--log-redact-values, --max-statement-size, --oversize-statements or --console-statement-timeout")
			}
			id, err := c.resolveProject(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			var p project.Project
			if err := c.do(cmd.Context(), http.MethodPatch, "/api/v1/projects/"+url.PathEscape(id), nil, body, &p); err != nil {
				return err
			}
			return o.printObject(p, [][2]string{{"ID", p.ID}, {"Name", p.Name}, {"Description", p.Description},
				{"Max session", p.MaxSessionDuration}, {"Log mask patterns", strings.Join(p.LogMaskPatterns, "  ")},
				{"Redact written values", fmt.Sprint(p.LogRedactValues)},
				{"Max statement size", fmtSize(p.MaxStatementBytes)}, {"Oversize statements", p.OversizeStatements},
				{"Console statement timeout", p.ConsoleStatementTimeout}})
		},
	}
	update.Flags().StringVar(&consoleTimeout, "console-statement-timeout", "", "the web SQL console's statement timeout, e.g. 30s or 5m (1s to 1h; default 30s)")
	update.Flags().StringVar(&upDesc, "description", "", "what the project is for")
	update.Flags().StringVar(&maxStmt, "max-statement-size", "", "the longest statement session logs record whole, e.g. 1MiB, 512KiB or 2097152 (1KiB to 4MiB; default 1MiB)")
	update.Flags().StringVar(&oversize, "oversize-statements", "", "what happens to a longer statement: refuse (default) or record_ends "+
		"(run it, record its first and last parts and its SHA-256)")
	update.Flags().StringVar(&upMax, "max-session-duration", "", "longest access session, e.g. 8h")
	update.Flags().StringArrayVar(&upMasks, "log-mask-pattern", nil, "regular expression masked in session logs (repeat; replaces the list)")
	update.Flags().BoolVar(&clearMasks, "clear-log-mask-patterns", false, "remove every log mask pattern")
	update.Flags().BoolVar(&redact, "log-redact-values", false, "redact the values of written documents (MongoDB) in session logs")
	cmd.AddCommand(create, list, get, update, del, newMembersCommand(o))
	return cmd
}

func newMembersCommand(o *options) *cobra.Command {
	cmd := &cobra.Command{Use: "members", Short: "Manage a project's members"}
	var projectID, email, machineID, role string
	list := &cobra.Command{
		Use: "list", Short: "List a project's members", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := projectClient(cmd.Context(), &projectID)
			if err != nil {
				return err
			}
			var ms []project.Member
			if err := c.do(cmd.Context(), http.MethodGet, "/api/v1/projects/"+url.PathEscape(projectID)+"/members", nil, nil, &ms); err != nil {
				return err
			}
			rows := make([][]string, 0, len(ms))
			for _, m := range ms {
				rows = append(rows, []string{m.Kind, m.ID, m.Name, string(m.Role)})
			}
			return o.printTable(ms, []string{"KIND", "ID", "NAME", "ROLE"}, rows)
		},
	}
	set := &cobra.Command{
		Use: "set", Short: "Add a member or change a member's role", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := projectClient(cmd.Context(), &projectID)
			if err != nil {
				return err
			}
			var m project.Member
			body := project.MemberInput{Email: email, MachineIdentityID: machineID, Role: project.Role(role)}
			if err := c.do(cmd.Context(), http.MethodPut, "/api/v1/projects/"+url.PathEscape(projectID)+"/members", nil, body, &m); err != nil {
				return err
			}
			return o.printObject(m, [][2]string{{"Member", m.Name}, {"Kind", m.Kind}, {"Role", string(m.Role)}})
		},
	}
	remove := &cobra.Command{
		Use: "remove", Short: "Remove a member; their live sessions in the project end at once", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if (email == "") == (machineID == "") {
				return errors.New("give exactly one of --email (a user) or --machine-identity-id")
			}
			c, err := projectClient(cmd.Context(), &projectID)
			if err != nil {
				return err
			}
			base := "/api/v1/projects/" + url.PathEscape(projectID) + "/members"
			kind, id := "machine", machineID
			if email != "" {
				var ms []project.Member
				if err := c.do(cmd.Context(), http.MethodGet, base, nil, nil, &ms); err != nil {
					return err
				}
				for _, m := range ms {
					if m.Kind == "user" && strings.EqualFold(m.Name, email) {
						kind, id = "user", m.ID
					}
				}
				if kind != "user" {
					return fmt.Errorf("%s is not a member of the project (`airlock projects members list --project-id %s` shows them)", email, projectID)
				}
			}
			if err := c.do(cmd.Context(), http.MethodDelete, base+"/"+kind+"/"+url.PathEscape(id), nil, nil, nil); err != nil {
				return err
			}
			_, err = fmt.Fprintln(o.stdout, "Removed; the member's live sessions in the project have ended.")
			return err
		},
	}
	for _, c := range []*cobra.Command{list, set, remove} {
		c.Flags().StringVar(&projectID, "project-id", "", projectFlagHelp)
		_ = c.MarkFlagRequired("project-id")
	}
	for _, c := range []*cobra.Command{set, remove} {
		c.Flags().StringVar(&email, "email", "", "the user's email")
		c.Flags().StringVar(&machineID, "machine-identity-id", "", "the machine identity's id")
	}
	set.Flags().StringVar(&role, "role", "member", "admin, member or viewer")
	cmd.AddCommand(list, set, remove)
	return cmd
}

// parseSize reads a size in bytes: a number with an optional unit B, KiB,
// MiB or GiB (KB, MB and GB are read as the binary units too).
func parseSize(v string) (int64, error) {
	s := strings.TrimSpace(v)
	mult := int64(1)
	for _, u := range []struct {
		suffix string
		mult   int64
	}{{"GiB", 1 << 30}, {"MiB", 1 << 20}, {"KiB", 1 << 10}, {"GB", 1 << 30}, {"MB", 1 << 20}, {"KB", 1 << 10}, {"B", 1}} {
		if strings.HasSuffix(strings.ToUpper(s), strings.ToUpper(u.suffix)) {
			s, mult = strings.TrimSpace(s[:len(s)-len(u.suffix)]), u.mult
			break
		}
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n <= 0 || n > (1<<40)/mult {
		return 0, errors.New("give a size such as 1MiB, 512KiB or 1048576")
	}
	return n * mult, nil
}

// fmtSize prints a byte count in the largest binary unit that divides it.
func fmtSize(n int64) string {
	switch {
	case n > 0 && n%(1<<20) == 0:
		return strconv.FormatInt(n>>20, 10) + " MiB"
	case n > 0 && n%(1<<10) == 0:
		return strconv.FormatInt(n>>10, 10) + " KiB"
	}
	return strconv.FormatInt(n, 10) + " bytes"
}
