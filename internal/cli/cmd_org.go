package cli

import (
	"errors"
	"fmt"
	"net/http"

	"github.com/spf13/cobra"

	"github.com/airlockpam/airlock/internal/mfa"
)

func newOrgCommand(o *options) *cobra.Command {
	cmd := &cobra.Command{Use: "org", Short: "Your organization and its MFA policy"}
	show := func(org mfa.Organization) error {
		return o.printObject(org, [][2]string{{"ID", org.ID}, {"Name", org.Name}, {"MFA method", org.MFAMethod}, {"MFA at login", fmt.Sprint(org.RequireMFALogin)}})
	}
	get := &cobra.Command{
		Use: "get", Short: "Show the organization and the MFA method it enforces", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := loggedInClient()
			if err != nil {
				return err
			}
			var org mfa.Organization
			if err := c.do(cmd.Context(), http.MethodGet, "/api/v1/org", nil, nil, &org); err != nil {
				return err
			}
			return show(org)
		},
	}
	var method string
	var requireLogin bool
	update := &cobra.Command{
		Use: "update", Short: "Set the MFA method every challenge uses (organization admins)", Args: cobra.NoArgs,
		Long: `Set the MFA method the organization enforces.

--mfa-method totp: every MFA challenge asks for a TOTP code; users without TOTP
are told to enroll (airlock mfa enroll totp). email: every challenge sends an
email code. webauthn: every challenge is approved with a passkey in the browser
(the CLI prints and opens the approval link and waits); users add passkeys on
the web UI's MFA page, and the server needs its --public-url. none: each user's
own method (TOTP, else passkeys), else an email code.

--require-mfa-login: every user's login needs a second factor as well (the
method chosen as for access); users without one are told to enroll after
logging in with an email code. --require-mfa-login=false turns it off.`,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var body mfa.OrganizationUpdate
			if cmd.Flags().Changed("mfa-method") {
				body.MFAMethod = &method
			}
			if cmd.Flags().Changed("require-mfa-login") {
				body.RequireMFALogin = &requireLogin
			}
			if body == (mfa.OrganizationUpdate{}) {
				return errors.New("nothing to change: give --mfa-method or --require-mfa-login")
			}
			c, err := loggedInClient()
			if err != nil {
				return err
			}
			var org mfa.Organization
			if err := c.do(cmd.Context(), http.MethodPatch, "/api/v1/org", nil, body, &org); err != nil {
				return err
			}
			return show(org)
		},
	}
	update.Flags().StringVar(&method, "mfa-method", "", "totp, email, webauthn (passkeys) or none")
	update.Flags().BoolVar(&requireLogin, "require-mfa-login", false, "every login needs a second factor (=false to turn off)")
	cmd.AddCommand(get, update)
	return cmd
}
