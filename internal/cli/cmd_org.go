package cli

import (
	"net/http"

	"github.com/spf13/cobra"
)

type organization struct {
	ID        string `json:"id"`
	Name      string `json:"name"`
	MFAMethod string `json:"mfaMethod"`
}

func newOrgCommand(o *options) *cobra.Command {
	cmd := &cobra.Command{Use: "org", Short: "Your organization and its MFA policy"}
	show := func(org organization) error {
		return o.printObject(org, [][2]string{{"ID", org.ID}, {"Name", org.Name}, {"MFA method", org.MFAMethod}})
	}
	get := &cobra.Command{
		Use: "get", Short: "Show the organization and the MFA method it enforces", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := loggedInClient()
			if err != nil {
				return err
			}
			var org organization
			if err := c.do(cmd.Context(), http.MethodGet, "/api/v1/org", nil, nil, &org); err != nil {
				return err
			}
			return show(org)
		},
	}
	var method string
	update := &cobra.Command{
		Use: "update", Short: "Set the MFA method every challenge uses (organization admins)", Args: cobra.NoArgs,
		Long: `Set the MFA method the organization enforces.

--mfa-method totp: every MFA challenge asks for a TOTP code; users without TOTP
are told to enroll (airlock mfa enroll totp). email: every challenge sends an
email code. none: each user's own method, else an email code. (webauthn:
passkeys are not available yet.)`,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := loggedInClient()
			if err != nil {
				return err
			}
			var org organization
			if err := c.do(cmd.Context(), http.MethodPatch, "/api/v1/org", nil, map[string]string{"mfaMethod": method}, &org); err != nil {
				return err
			}
			return show(org)
		},
	}
	update.Flags().StringVar(&method, "mfa-method", "", "totp, email, webauthn (not yet) or none")
	_ = update.MarkFlagRequired("mfa-method")
	cmd.AddCommand(get, update)
	return cmd
}
