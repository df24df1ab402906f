package cli

import (
	"fmt"
	"net/http"
	"net/url"

	"github.com/spf13/cobra"

	"github.com/airlockpam/airlock/internal/auth"
)

func newUsersCommand(o *options) *cobra.Command {
	cmd := &cobra.Command{Use: "users", Short: "Manage users (organization admins)"}
	var email, name string
	var orgAdmin, passwordStdin bool
	create := &cobra.Command{
		Use: "create", Short: "Create a user", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := loggedInClient()
			if err != nil {
				return err
			}
			pw, err := o.readCredentials(&email, passwordStdin)
			if err != nil {
				return err
			}
			var u auth.User
			body := auth.UserInput{Email: email, Password: pw, Name: name, OrgAdmin: orgAdmin}
			if err := c.do(cmd.Context(), http.MethodPost, "/api/v1/users", nil, body, &u); err != nil {
				return err
			}
			return o.printObject(u, [][2]string{{"ID", u.ID}, {"Email", u.Email}, {"Org admin", fmt.Sprint(u.OrgAdmin)}})
		},
	}
	create.Flags().StringVar(&email, "email", "", "the user's email")
	create.Flags().StringVar(&name, "name", "", "the user's name")
	create.Flags().BoolVar(&orgAdmin, "org-admin", false, "make the user an organization admin")
	create.Flags().BoolVar(&passwordStdin, "password-stdin", false, "read the initial password from standard input")
	_ = create.MarkFlagRequired("email")

	list := &cobra.Command{
		Use: "list", Short: "List users", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := loggedInClient()
			if err != nil {
				return err
			}
			var us []auth.User
			if err := c.do(cmd.Context(), http.MethodGet, "/api/v1/users", nil, nil, &us); err != nil {
				return err
			}
			rows := make([][]string, 0, len(us))
			for _, u := range us {
				locked := "-"
				if u.LockedUntil != nil {
					locked = fmtTime(*u.LockedUntil)
				}
				rows = append(rows, []string{u.ID, u.Email, fmt.Sprint(u.OrgAdmin), fmt.Sprint(u.Disabled), locked, fmtTime(u.CreatedAt)})
			}
			return o.printTable(us, []string{"ID", "EMAIL", "ORG ADMIN", "DISABLED", "LOCKED UNTIL", "CREATED"}, rows)
		},
	}
	resetMFA := &cobra.Command{
		Use: "reset-mfa USER_ID", Short: "Remove every second factor and recovery code of a user (a lost phone); audited", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := loggedInClient()
			if err != nil {
				return err
			}
			if err := c.do(cmd.Context(), http.MethodPost, "/api/v1/users/"+url.PathEscape(args[0])+"/reset-mfa", nil, nil, nil); err != nil {
				return err
			}
			fmt.Fprintf(o.stdout, "MFA of user %s is reset: they can enroll again (airlock mfa enroll totp).\n", args[0])
			return nil
		},
	}
	unlock := &cobra.Command{
		Use: "unlock USER_ID", Short: "Unlock a user locked after failed logins", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := loggedInClient()
			if err != nil {
				return err
			}
			if err := c.do(cmd.Context(), http.MethodPost, "/api/v1/users/"+url.PathEscape(args[0])+"/unlock", nil, nil, nil); err != nil {
				return err
			}
			fmt.Fprintln(o.stdout, "Unlocked.")
			return nil
		},
	}
	// userAction posts to /api/v1/users/ID/<action> and prints done.
	userAction := func(use, short, method, action, done string) *cobra.Command {
		return &cobra.Command{
			Use: use + " USER_ID", Short: short, Args: cobra.ExactArgs(1),
			RunE: func(cmd *cobra.Command, args []string) error {
				c, err := loggedInClient()
				if err != nil {
					return err
				}
				path := "/api/v1/users/" + url.PathEscape(args[0])
				if action != "" {
					path += "/" + action
				}
				if err := c.do(cmd.Context(), method, path, nil, nil, nil); err != nil {
					return err
				}
				fmt.Fprintln(o.stdout, done)
				return nil
			},
		}
	}
	disable := userAction("disable", "Disable a user: revoke their tokens and end their live sessions at once",
		http.MethodPost, "disable", "Disabled; the user's live sessions have ended.")
	enable := userAction("enable", "Enable a disabled user (they log in again)", http.MethodPost, "enable", "Enabled.")
	del := userAction("delete", "Delete a user, their tokens and memberships; their live sessions end (their session logs stay)",
		http.MethodDelete, "", "Deleted; the user's live sessions have ended.")
	revoke := userAction("revoke-tokens", "Revoke every token of a user (all their logins); the sessions started under them end",
		http.MethodPost, "revoke-tokens", "Revoked every token of the user; the sessions started under them have ended.")
	cmd.AddCommand(create, list, unlock, disable, enable, del, revoke, resetMFA)
	return cmd
}

func newMachineIdentitiesCommand(o *options) *cobra.Command {
	cmd := &cobra.Command{Use: "machine-identities", Short: "Manage machine identities for automation (organization admins)"}
	create := &cobra.Command{
		Use: "create NAME", Short: "Create a machine identity; its secret is printed once", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := loggedInClient()
			if err != nil {
				return err
			}
			var m auth.NewMachineIdentity
			if err := c.do(cmd.Context(), http.MethodPost, "/api/v1/machine-identities", nil, auth.MachineIdentityInput{Name: args[0]}, &m); err != nil {
				return err
			}
			if err := o.printObject(m, [][2]string{{"ID", m.ID}, {"Name", m.Name}, {"Client ID", m.ClientID}, {"Client secret", m.ClientSecret}}); err != nil {
				return err
			}
			if o.output != "json" {
				fmt.Fprintln(o.stderr, "The client secret is shown only now; store it in your secret manager.")
			}
			return nil
		},
	}
	list := &cobra.Command{
		Use: "list", Short: "List machine identities", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := loggedInClient()
			if err != nil {
				return err
			}
			var ms []auth.MachineIdentity
			if err := c.do(cmd.Context(), http.MethodGet, "/api/v1/machine-identities", nil, nil, &ms); err != nil {
				return err
			}
			rows := make([][]string, 0, len(ms))
			for _, m := range ms {
				rows = append(rows, []string{m.ID, m.Name, m.ClientID, fmtTime(m.CreatedAt)})
			}
			return o.printTable(ms, []string{"ID", "NAME", "CLIENT ID", "CREATED"}, rows)
		},
	}
	del := &cobra.Command{
		Use: "delete ID", Short: "Delete a machine identity and revoke its tokens", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := loggedInClient()
			if err != nil {
				return err
			}
			if err := c.do(cmd.Context(), http.MethodDelete, "/api/v1/machine-identities/"+url.PathEscape(args[0]), nil, nil, nil); err != nil {
				return err
			}
			fmt.Fprintln(o.stdout, "Deleted.")
			return nil
		},
	}
	cmd.AddCommand(create, list, del)
	return cmd
}
