package cli

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"

	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/airlockpam/airlock/internal/secrets"
)

// maxSecretBytes is the server's bound on a secret value.
const maxSecretBytes = 64 << 10

// secretPlace is the --project-id, --env and --path of a secrets command.
type secretPlace struct {
	projectID, env, path string
}

func (p *secretPlace) flags(cmd *cobra.Command) {
	cmd.Flags().StringVar(&p.env, "env", "", "the environment's slug, such as dev, staging or prod")
	cmd.Flags().StringVar(&p.path, "path", "/", "the folder, such as /db/orders")
	_ = cmd.MarkFlagRequired("env")
}

func (p *secretPlace) query() url.Values {
	return url.Values{"environment": {p.env}, "path": {p.path}}
}

func secretsPath(projectID string, rest ...string) string {
	p := "/api/v1/projects/" + url.PathEscape(projectID) + "/secrets"
	for _, r := range rest {
		p += "/" + url.PathEscape(r)
	}
	return p
}

// readSecretValue reads a value from a file, or from standard input: typed
// without echo at a terminal, else all of it, less one final newline.
func (o *options) readSecretValue(file string) (string, error) {
	var b []byte
	var err error
	switch {
	case file == "-":
		b, err = io.ReadAll(io.LimitReader(o.stdin, maxSecretBytes+1))
	case file != "":
		b, err = os.ReadFile(file)
	default:
		if f, ok := o.stdin.(*os.File); ok && term.IsTerminal(int(f.Fd())) {
			fmt.Fprint(o.stderr, "Value: ")
			b, err = term.ReadPassword(int(f.Fd()))
			fmt.Fprintln(o.stderr)
		} else {
			b, err = io.ReadAll(io.LimitReader(o.stdin, maxSecretBytes+1))
			b = []byte(strings.TrimSuffix(strings.TrimSuffix(string(b), "\n"), "\r"))
		}
	}
	if err != nil {
		return "", fmt.Errorf("reading the value: %w", err)
	}
	if len(b) > maxSecretBytes {
		return "", errors.New("a secret value holds at most 64 KiB")
	}
	return string(b), nil
}

func newSecretsCommand(o *options) *cobra.Command {
	cmd := &cobra.Command{Use: "secrets", Short: "Store and read a project's secrets by environment and folder", Aliases: []string{"secret"},
		Long: `Store and read a project's secrets. Secrets live in an environment (dev,
staging and prod until a project admin changes them) and a folder (/ unless
--path names another, such as /db/orders). Each write adds a version; history
lists them and restore brings an earlier value back. Every read of a value is
written to the audit log. Machine identities use the same commands after
` + "`airlock login --client-id`" + `.`}
	var pl secretPlace
	cmd.PersistentFlags().StringVar(&pl.projectID, "project-id", "", "the project's id or name")

	var file string
	set := &cobra.Command{
		Use:   "set KEY=VALUE... | KEY",
		Short: "Write secrets: KEY=VALUE pairs, or one KEY whose value comes from standard input or --file (project members)",
		Example: "  airlock secrets set --project-id P --env prod DB_HOST=db.internal DB_PORT=5432\n" +
			"  printf '%s' \"$TOKEN\" | airlock secrets set --project-id P --env prod --path /api API_TOKEN\n" +
			"  airlock secrets set --project-id P --env prod TLS_CERT --file cert.pem",
		Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			type pair struct{ k, v string }
			var pairs []pair
			for _, a := range args {
				k, v, ok := strings.Cut(a, "=")
				if !ok {
					if len(args) > 1 {
						return fmt.Errorf("%q has no value: give KEY=VALUE pairs, or one KEY with the value on standard input or in --file", a)
					}
					var err error
					if v, err = o.readSecretValue(file); err != nil {
						return err
					}
				} else if file != "" {
					return errors.New("give the value in KEY=VALUE or in --file, not both")
				}
				pairs = append(pairs, pair{k, v})
			}
			c, err := projectClient(cmd.Context(), &pl.projectID)
			if err != nil {
				return err
			}
			var out []secrets.Secret
			for _, p := range pairs {
				var s secrets.Secret
				if err := c.do(cmd.Context(), http.MethodPut, secretsPath(pl.projectID, p.k), pl.query(), secrets.SecretValue{Value: p.v}, &s); err != nil {
					return fmt.Errorf("%s: %w", p.k, err)
				}
				out = append(out, s)
			}
			return o.printSecrets(out)
		},
	}
	pl.flags(set)
	set.Flags().StringVar(&file, "file", "", "read the value of the one KEY from this file (- for standard input, all of it)")

	var version int
	get := &cobra.Command{
		Use: "get KEY", Short: "Print a secret's value; the read is audited (project members)", Args: cobra.ExactArgs(1),
		Example: "  airlock secrets get --project-id P --env prod DB_PASSWORD\n  airlock secrets get --project-id P --env prod DB_PASSWORD --version 3",
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := projectClient(cmd.Context(), &pl.projectID)
			if err != nil {
				return err
			}
			q := pl.query()
			if version > 0 {
				q.Set("version", strconv.Itoa(version))
			}
			var s secrets.Secret
			if err := c.do(cmd.Context(), http.MethodGet, secretsPath(pl.projectID, args[0]), q, nil, &s); err != nil {
				return err
			}
			if o.output == "json" {
				return o.printJSON(s)
			}
			if s.Value != nil {
				fmt.Fprintln(o.stdout, *s.Value)
			}
			return nil
		},
	}
	pl.flags(get)
	get.Flags().IntVar(&version, "version", 0, "read this version instead of the newest")

	list := &cobra.Command{
		Use: "list", Short: "List a folder's secrets without their values", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := projectClient(cmd.Context(), &pl.projectID)
			if err != nil {
				return err
			}
			var list []secrets.Secret
			if err := c.do(cmd.Context(), http.MethodGet, secretsPath(pl.projectID), pl.query(), nil, &list); err != nil {
				return err
			}
			return o.printSecrets(list)
		},
	}
	pl.flags(list)

	del := &cobra.Command{
		Use: "delete KEY", Short: "Delete a secret; its history stays and restore brings it back (project members)", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := projectClient(cmd.Context(), &pl.projectID)
			if err != nil {
				return err
			}
			if err := c.do(cmd.Context(), http.MethodDelete, secretsPath(pl.projectID, args[0]), pl.query(), nil, nil); err != nil {
				return err
			}
			fmt.Fprintf(o.stderr, "Deleted %s.\n", args[0])
			return nil
		},
	}
	pl.flags(del)

	history := &cobra.Command{
		Use: "history KEY", Short: "List a secret's versions, newest first, without values", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := projectClient(cmd.Context(), &pl.projectID)
			if err != nil {
				return err
			}
			var vs []secrets.Version
			if err := c.do(cmd.Context(), http.MethodGet, secretsPath(pl.projectID, args[0], "versions"), pl.query(), nil, &vs); err != nil {
				return err
			}
			rows := make([][]string, 0, len(vs))
			for _, v := range vs {
				what := "set"
				if v.Deleted {
					what = "deleted"
				}
				rows = append(rows, []string{strconv.Itoa(v.Version), what, v.CreatedBy, fmtTime(v.CreatedAt)})
			}
			return o.printTable(vs, []string{"VERSION", "CHANGE", "BY", "AT"}, rows)
		},
	}
	pl.flags(history)

	restore := &cobra.Command{
		Use: "restore KEY --version N", Short: "Write an earlier version's value as the newest version (project members)", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := projectClient(cmd.Context(), &pl.projectID)
			if err != nil {
				return err
			}
			var s secrets.Secret
			if err := c.do(cmd.Context(), http.MethodPost, secretsPath(pl.projectID, args[0], "restore"), pl.query(), secrets.SecretRestore{Version: version}, &s); err != nil {
				return err
			}
			return o.printSecrets([]secrets.Secret{s})
		},
	}
	pl.flags(restore)
	restore.Flags().IntVar(&version, "version", 0, "the version whose value to restore")
	_ = restore.MarkFlagRequired("version")

	cmd.AddCommand(set, get, list, del, history, restore, newSecretEnvironmentsCommand(o, &pl), newSecretFoldersCommand(o, &pl))
	return cmd
}

func (o *options) printSecrets(list []secrets.Secret) error {
	rows := make([][]string, 0, len(list))
	for _, s := range list {
		rows = append(rows, []string{s.Name, strconv.Itoa(s.Version), s.Environment, s.Path, s.UpdatedBy, fmtTime(s.UpdatedAt)})
	}
	return o.printTable(list, []string{"NAME", "VERSION", "ENV", "PATH", "UPDATED BY", "UPDATED"}, rows)
}

func newSecretEnvironmentsCommand(o *options, pl *secretPlace) *cobra.Command {
	cmd := &cobra.Command{Use: "environments", Aliases: []string{"envs"}, Short: "List and change a project's environments"}
	path := func() string { return "/api/v1/projects/" + url.PathEscape(pl.projectID) + "/secret-environments" }
	show := func(list []secrets.Environment) error {
		rows := make([][]string, 0, len(list))
		for _, e := range list {
			rows = append(rows, []string{e.Slug, e.Name, strconv.Itoa(e.Position)})
		}
		return o.printTable(list, []string{"SLUG", "NAME", "POSITION"}, rows)
	}
	list := &cobra.Command{
		Use: "list", Short: "List the environments", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := projectClient(cmd.Context(), &pl.projectID)
			if err != nil {
				return err
			}
			var list []secrets.Environment
			if err := c.do(cmd.Context(), http.MethodGet, path(), nil, nil, &list); err != nil {
				return err
			}
			return show(list)
		},
	}
	var name string
	create := &cobra.Command{
		Use: "create SLUG", Short: "Add an environment (project admins)", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := projectClient(cmd.Context(), &pl.projectID)
			if err != nil {
				return err
			}
			var e secrets.Environment
			if err := c.do(cmd.Context(), http.MethodPost, path(), nil, secrets.EnvironmentInput{Slug: args[0], Name: name}, &e); err != nil {
				return err
			}
			return show([]secrets.Environment{e})
		},
	}
	create.Flags().StringVar(&name, "name", "", "a display name (the slug if not given)")
	rename := &cobra.Command{
		Use: "rename SLUG NAME", Short: "Change an environment's display name; its slug stays (project admins)", Args: cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := projectClient(cmd.Context(), &pl.projectID)
			if err != nil {
				return err
			}
			var e secrets.Environment
			if err := c.do(cmd.Context(), http.MethodPatch, path()+"/"+url.PathEscape(args[0]), nil, secrets.EnvironmentUpdate{Name: args[1]}, &e); err != nil {
				return err
			}
			return show([]secrets.Environment{e})
		},
	}
	del := &cobra.Command{
		Use: "delete SLUG", Short: "Delete an environment that holds no secrets or folders (project admins)", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := projectClient(cmd.Context(), &pl.projectID)
			if err != nil {
				return err
			}
			if err := c.do(cmd.Context(), http.MethodDelete, path()+"/"+url.PathEscape(args[0]), nil, nil, nil); err != nil {
				return err
			}
			fmt.Fprintf(o.stderr, "Deleted environment %s.\n", args[0])
			return nil
		},
	}
	cmd.AddCommand(list, create, rename, del)
	return cmd
}

func newSecretFoldersCommand(o *options, pl *secretPlace) *cobra.Command {
	cmd := &cobra.Command{Use: "folders", Short: "List, create and delete an environment's folders"}
	path := func() string { return "/api/v1/projects/" + url.PathEscape(pl.projectID) + "/secret-folders" }
	show := func(list []secrets.Folder) error {
		rows := make([][]string, 0, len(list))
		for _, f := range list {
			at := "-"
			if !f.CreatedAt.IsZero() {
				at = fmtTime(f.CreatedAt)
			}
			rows = append(rows, []string{f.Path, f.Environment, orDash(f.CreatedBy), at})
		}
		return o.printTable(list, []string{"PATH", "ENV", "CREATED BY", "CREATED"}, rows)
	}
	list := &cobra.Command{
		Use: "list", Short: "List an environment's folders", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := projectClient(cmd.Context(), &pl.projectID)
			if err != nil {
				return err
			}
			var list []secrets.Folder
			if err := c.do(cmd.Context(), http.MethodGet, path(), url.Values{"environment": {pl.env}}, nil, &list); err != nil {
				return err
			}
			return show(list)
		},
	}
	create := &cobra.Command{
		Use: "create PATH", Short: "Create a folder and any missing parents (project members)", Args: cobra.ExactArgs(1),
		Example: "  airlock secrets folders create --project-id P --env prod /db/orders",
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := projectClient(cmd.Context(), &pl.projectID)
			if err != nil {
				return err
			}
			var f secrets.Folder
			if err := c.do(cmd.Context(), http.MethodPost, path(), nil, secrets.FolderInput{Environment: pl.env, Path: args[0]}, &f); err != nil {
				return err
			}
			return show([]secrets.Folder{f})
		},
	}
	del := &cobra.Command{
		Use: "delete PATH", Short: "Delete an empty folder (project members)", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := projectClient(cmd.Context(), &pl.projectID)
			if err != nil {
				return err
			}
			if err := c.do(cmd.Context(), http.MethodDelete, path(), url.Values{"environment": {pl.env}, "path": {args[0]}}, nil, nil); err != nil {
				return err
			}
			fmt.Fprintf(o.stderr, "Deleted folder %s.\n", args[0])
			return nil
		},
	}
	for _, c := range []*cobra.Command{list, create, del} {
		c.Flags().StringVar(&pl.env, "env", "", "the environment's slug, such as dev, staging or prod")
		_ = c.MarkFlagRequired("env")
	}
	cmd.AddCommand(list, create, del)
	return cmd
}
