package cli

import (
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"sort"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/airlockpam/airlock/internal/pam"
)

// rotationText is the rotation in one phrase: "every 7d, ok", "off".
func rotationText(r pam.AccountRotation) string {
	if !r.Enabled {
		switch r.Status {
		case "failed":
			return "off (last rotation failed)"
		case "waiting", "rotating":
			return "off (a one-off rotation is " + r.Status + ")"
		}
		return "off"
	}
	return "every " + r.Interval + ", " + r.Status
}

func optTime(t *time.Time) string {
	if t == nil {
		return "-"
	}
	return fmtTime(*t)
}

// metadataText is the account's labels as k=v,k=v sorted by key.
func metadataText(a pam.Account) string {
	keys := make([]string, 0, len(a.Metadata))
	for k := range a.Metadata {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = k + "=" + a.Metadata[k]
	}
	return strings.Join(parts, ",")
}

func (o *options) printAccount(a pam.Account) error {
	md := metadataText(a)
	if md == "" {
		md = "-"
	}
	return o.printObject(a, [][2]string{{"ID", a.ID}, {"Name", a.Name}, {"Resource", a.ResourceName}, {"Username", a.Username},
		{"Description", a.Description}, {"Metadata", md}, {"Requires MFA", fmt.Sprint(a.RequireMFA)},
		{"Rotation", rotationText(a.Rotation)}, {"Last rotated", optTime(a.Rotation.LastRotatedAt)},
		{"Next rotation", optTime(a.Rotation.NextDueAt)}, {"Rotation error", orDash(a.Rotation.LastError)},
		{"Created", fmtTime(a.CreatedAt)}, {"Updated", fmtTime(a.UpdatedAt)}})
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func accountsPath(projectID string, rest ...string) string {
	p := "/api/v1/projects/" + url.PathEscape(projectID) + "/accounts"
	for _, r := range rest {
		p += "/" + url.PathEscape(r)
	}
	return p
}

// accountQuery selects the resource of an account given by name.
func accountQuery(resource string) url.Values {
	if resource == "" {
		return nil
	}
	return url.Values{"resource": {resource}}
}

// metadataFlags turns repeated --metadata key=value flags into a map.
func metadataFlags(pairs []string) (map[string]string, error) {
	m := make(map[string]string, len(pairs))
	for _, p := range pairs {
		k, v, ok := strings.Cut(p, "=")
		if !ok || k == "" {
			return nil, fmt.Errorf("--metadata takes key=value, not %q", p)
		}
		if _, dup := m[k]; dup {
			return nil, fmt.Errorf("--metadata gives %q twice", k)
		}
		m[k] = v
	}
	return m, nil
}

func newAccountsCommand(o *options) *cobra.Command {
	cmd := &cobra.Command{Use: "accounts", Short: "Manage the database accounts of a project's resources", Aliases: []string{"account"}}
	var projectID, resource, name, username, description, rotationInterval string
	var rotation bool
	var metadata []string
	var passwordStdin, requireMFA, clearMetadata bool

	create := &cobra.Command{
		Use: "create", Short: "Add an account; its gateway first logs in with it (project admins)", Args: cobra.NoArgs,
		Example: "  printf '%s' \"$DB_PASSWORD\" | airlock accounts create --project-id P --resource orders-db \\\n" +
			"    --name app --username app_user --password-stdin --metadata env=prod",
		RunE: func(cmd *cobra.Command, _ []string) error {
			if !passwordStdin {
				return errors.New("the password is read from standard input: add --password-stdin and pipe it in")
			}
			md, err := metadataFlags(metadata)
			if err != nil {
				return err
			}
			pw, err := o.readStdinSecret("Password")
			if err != nil {
				return err
			}
			body := pam.AccountInput{Resource: resource, Name: name, Username: username, Password: pw,
				Description: description, Metadata: md, RequireMFA: requireMFA, RotationInterval: rotationInterval}
			c, err := projectClient(cmd.Context(), &projectID)
			if err != nil {
				return err
			}
			var a pam.Account
			if err := c.do(cmd.Context(), http.MethodPost, accountsPath(projectID), nil, body, &a); err != nil {
				return err
			}
			return o.printAccount(a)
		},
	}
	cfl := create.Flags()
	cfl.StringVar(&resource, "resource", "", "the resource's name or id")
	cfl.StringVar(&name, "name", "", "a name for the account: lower-case letters, digits and hyphens")
	cfl.StringVar(&username, "username", "", "the database user")
	cfl.BoolVar(&passwordStdin, "password-stdin", false, "read the password from standard input (required)")
	cfl.StringVar(&description, "description", "", "what the account is for")
	cfl.StringArrayVar(&metadata, "metadata", nil, "a key=value label; repeat for several")
	cfl.BoolVar(&requireMFA, "require-mfa", false, "require a second factor to access the account")
	cfl.StringVar(&rotationInterval, "rotation-interval", "", "rotate the password every 1d, 3d, 7d or 30d as the resource's rotation account")
	for _, f := range []string{"resource", "name", "username"} {
		_ = create.MarkFlagRequired(f)
	}

	list := &cobra.Command{
		Use: "list", Short: "List accounts, optionally of one resource and with given labels", Args: cobra.NoArgs,
		Example: "  airlock accounts list --project-id P --metadata env=prod --metadata team=web",
		RunE: func(cmd *cobra.Command, _ []string) error {
			q := url.Values{}
			if resource != "" {
				q.Set("resource", resource)
			}
			for _, m := range metadata {
				if !strings.Contains(m, "=") {
					return fmt.Errorf("--metadata takes key=value, not %q", m)
				}
				q.Add("metadata", m)
			}
			c, err := projectClient(cmd.Context(), &projectID)
			if err != nil {
				return err
			}
			var as []pam.Account
			if err := c.do(cmd.Context(), http.MethodGet, accountsPath(projectID), q, nil, &as); err != nil {
				return err
			}
			rows := make([][]string, 0, len(as))
			for _, a := range as {
				rows = append(rows, []string{a.ID, a.Name, a.ResourceName, a.Username, fmt.Sprint(a.RequireMFA), rotationText(a.Rotation),
					optTime(a.Rotation.NextDueAt), metadataText(a), fmtTime(a.CreatedAt)})
			}
			return o.printTable(as, []string{"ID", "NAME", "RESOURCE", "USERNAME", "MFA", "ROTATION", "NEXT ROTATION", "METADATA", "CREATED"}, rows)
		},
	}
	list.Flags().StringVar(&resource, "resource", "", "only the accounts of this resource (name or id)")
	list.Flags().StringArrayVar(&metadata, "metadata", nil, "only accounts labelled key=value; repeat to require several")

	get := &cobra.Command{
		Use: "get NAME|ID", Short: "Show an account", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := projectClient(cmd.Context(), &projectID)
			if err != nil {
				return err
			}
			var a pam.Account
			if err := c.do(cmd.Context(), http.MethodGet, accountsPath(projectID, args[0]), accountQuery(resource), nil, &a); err != nil {
				return err
			}
			return o.printAccount(a)
		},
	}

	update := &cobra.Command{
		Use: "update NAME|ID", Short: "Change an account; a new username or password is checked through the gateway (project admins)",
		Args: cobra.ExactArgs(1),
		Long: "Change an account. Only the flags given change. --metadata replaces all labels with the ones given; " +
			"--clear-metadata removes them all. A new password is read from standard input with --password-stdin.",
		RunE: func(cmd *cobra.Command, args []string) error {
			fl := cmd.Flags()
			var body pam.AccountUpdate
			if fl.Changed("username") {
				body.Username = &username
			}
			if fl.Changed("description") {
				body.Description = &description
			}
			if fl.Changed("require-mfa") {
				body.RequireMFA = &requireMFA
			}
			switch {
			case fl.Changed("rotation-interval") && fl.Changed("rotation") && !rotation:
				return errors.New("give --rotation-interval or --rotation=false, not both")
			case fl.Changed("rotation-interval"):
				body.RotationInterval = &rotationInterval
			case fl.Changed("rotation") && !rotation:
				off := "off"
				body.RotationInterval = &off
			case fl.Changed("rotation"):
				return errors.New("--rotation turns rotation off (--rotation=false); to turn it on, give --rotation-interval 1d, 3d, 7d or 30d")
			}
			switch {
			case clearMetadata && fl.Changed("metadata"):
				return errors.New("give --metadata or --clear-metadata, not both")
			case clearMetadata:
				body.Metadata = map[string]string{}
			case fl.Changed("metadata"):
				md, err := metadataFlags(metadata)
				if err != nil {
					return err
				}
				body.Metadata = md
			}
			if passwordStdin {
				pw, err := o.readStdinSecret("New password")
				if err != nil {
					return err
				}
				body.Password = &pw
			}
			if body.Username == nil && body.Password == nil && body.Description == nil && body.Metadata == nil &&
				body.RequireMFA == nil && body.RotationInterval == nil {
				return errors.New("nothing to change: give at least one of --username, --password-stdin, --description, --metadata, --clear-metadata, --require-mfa, --rotation-interval or --rotation=false")
			}
			c, err := projectClient(cmd.Context(), &projectID)
			if err != nil {
				return err
			}
			var a pam.Account
			if err := c.do(cmd.Context(), http.MethodPatch, accountsPath(projectID, args[0]), accountQuery(resource), body, &a); err != nil {
				return err
			}
			return o.printAccount(a)
		},
	}
	ufl := update.Flags()
	ufl.StringVar(&username, "username", "", "the new database user")
	ufl.BoolVar(&passwordStdin, "password-stdin", false, "read the new password from standard input")
	ufl.StringVar(&description, "description", "", "what the account is for")
	ufl.StringArrayVar(&metadata, "metadata", nil, "a key=value label; replaces all labels; repeat for several")
	ufl.BoolVar(&clearMetadata, "clear-metadata", false, "remove every label")
	ufl.BoolVar(&requireMFA, "require-mfa", false, "require a second factor to access the account (--require-mfa=false to stop)")
	ufl.StringVar(&rotationInterval, "rotation-interval", "", "rotate the password every 1d, 3d, 7d or 30d as the resource's rotation account")
	ufl.BoolVar(&rotation, "rotation", true, "--rotation=false stops rotating the password")

	rotate := &cobra.Command{
		Use: "rotate NAME|ID", Short: "Rotate an account's password now, as its resource's rotation account (project admins)",
		Args: cobra.ExactArgs(1),
		Long: "Rotate an account's password now: the gateway sets a new random password as the resource's rotation " +
			"account and logs in with it; only then is it saved. Nobody sees it. Prints the account with the outcome.",
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := projectClient(cmd.Context(), &projectID)
			if err != nil {
				return err
			}
			var a pam.Account
			if err := c.do(cmd.Context(), http.MethodPost, accountsPath(projectID, args[0], "rotate"), accountQuery(resource), nil, &a); err != nil {
				return err
			}
			fmt.Fprintf(o.stderr, "Rotated the password of %s.\n", a.Name)
			return o.printAccount(a)
		},
	}

	del := &cobra.Command{
		Use: "delete NAME|ID", Short: "Delete an account (project admins)", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := projectClient(cmd.Context(), &projectID)
			if err != nil {
				return err
			}
			if err := c.do(cmd.Context(), http.MethodDelete, accountsPath(projectID, args[0]), accountQuery(resource), nil, nil); err != nil {
				return err
			}
			_, err = fmt.Fprintf(o.stdout, "Deleted account %s.\n", args[0])
			return err
		},
	}
	for _, c := range []*cobra.Command{get, update, del, rotate} {
		c.Flags().StringVar(&resource, "resource", "", "the resource's name or id, when several resources have an account of this name")
	}
	for _, c := range []*cobra.Command{create, list, get, update, del, rotate} {
		c.Flags().StringVar(&projectID, "project-id", "", projectFlagHelp)
		_ = c.MarkFlagRequired("project-id")
	}
	cmd.AddCommand(create, list, get, update, del, rotate)
	return cmd
}
