package cli

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"

	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/airlockpam/airlock/internal/auth"
)

func newLoginCommand(o *options) *cobra.Command {
	var domain, email, clientID, clientSecret, caFile string
	var passwordStdin bool
	var mfaCode string
	cmd := &cobra.Command{
		Use:   "login",
		Short: "Log in to an Airlock server and store the token (mode 0600)",
		Long: `Log in to an Airlock server.

People are asked for their email and password at a prompt. Scripts pass
--email and --password-stdin, or log in as a machine identity with
--client-id and --client-secret (or AIRLOCK_CLIENT_ID and AIRLOCK_CLIENT_SECRET).
The token is stored in your config directory (~/.config/airlock) with mode 0600.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if domain == "" {
				domain = os.Getenv("AIRLOCK_DOMAIN")
			}
			c, err := anonymousClient(domain, caFile)
			if err != nil {
				return err
			}
			if clientID == "" {
				clientID = os.Getenv("AIRLOCK_CLIENT_ID")
			}
			if clientSecret == "" {
				clientSecret = os.Getenv("AIRLOCK_CLIENT_SECRET")
			}
			var pair auth.TokenPair
			var who string
			switch {
			case clientID != "" || clientSecret != "":
				if clientID == "" || clientSecret == "" {
					return errors.New("a machine login needs both --client-id and --client-secret")
				}
				who = "machine identity " + clientID
				err = c.do(cmd.Context(), http.MethodPost, "/api/v1/auth/machine-login", nil,
					auth.MachineLoginRequest{ClientID: clientID, ClientSecret: clientSecret}, &pair)
			default:
				password, err2 := o.readCredentials(&email, passwordStdin)
				if err2 != nil {
					return err2
				}
				who = email
				err = o.loginWithMFA(cmd.Context(), c, &auth.LoginRequest{Email: email, Password: password}, mfaCode, &pair)
			}
			if err != nil {
				return fmt.Errorf("login failed: %w", err)
			}
			creds := &Credentials{Domain: c.base, CAFile: caFile}
			applyTokens(pair, creds)
			unlock, err := lockCredentials(cmd.Context())
			if err != nil {
				return fmt.Errorf("saving the token: %w", err)
			}
			err = saveCredentials(creds)
			unlock()
			if err != nil {
				return fmt.Errorf("saving the token: %w", err)
			}
			fmt.Fprintf(o.stdout, "Logged in to %s as %s.\n", c.base, who)
			if clientID == "" {
				o.suggestEnrollment(cmd.Context())
			}
			return nil
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&domain, "domain", "", "the Airlock server, e.g. https://airlock.example.com (or AIRLOCK_DOMAIN)")
	fl.StringVar(&email, "email", "", "your email (asked at a prompt when not given)")
	fl.BoolVar(&passwordStdin, "password-stdin", false, "read the password from standard input")
	fl.StringVar(&mfaCode, "mfa-code", "", "when your organization requires MFA at login: the code (TOTP, or a recovery code) instead of a prompt")
	fl.StringVar(&clientID, "client-id", "", "machine identity client id (or AIRLOCK_CLIENT_ID)")
	fl.StringVar(&clientSecret, "client-secret", "", "machine identity client secret (or AIRLOCK_CLIENT_SECRET)")
	fl.StringVar(&caFile, "ca-file", "", "PEM CA certificate that signed the server's certificate, when it is not publicly trusted")
	return cmd
}

// readCredentials gets the email and password from flags, stdin or a prompt.
func (o *options) readCredentials(email *string, passwordStdin bool) (string, error) {
	in := bufio.NewReader(o.stdin)
	if passwordStdin {
		if *email == "" {
			return "", errors.New("--password-stdin needs --email")
		}
		b, err := io.ReadAll(io.LimitReader(in, 4096))
		if err != nil {
			return "", fmt.Errorf("reading the password from stdin: %w", err)
		}
		pw := strings.TrimRight(string(b), "\r\n")
		if pw == "" {
			return "", errors.New("no password on stdin")
		}
		return pw, nil
	}
	f, ok := o.stdin.(*os.File)
	if !ok || !term.IsTerminal(int(f.Fd())) {
		return "", errors.New("no terminal to ask for the password: pass --email and --password-stdin")
	}
	if *email == "" {
		fmt.Fprint(o.stderr, "Email: ")
		line, err := in.ReadString('\n')
		if err != nil {
			return "", fmt.Errorf("reading the email: %w", err)
		}
		*email = strings.TrimSpace(line)
	}
	fmt.Fprint(o.stderr, "Password: ")
	pw, err := term.ReadPassword(int(f.Fd()))
	fmt.Fprintln(o.stderr)
	if err != nil {
		return "", fmt.Errorf("reading the password: %w", err)
	}
	return string(pw), nil
}

func newLogoutCommand(o *options) *cobra.Command {
	return &cobra.Command{
		Use:   "logout",
		Short: "Revoke the stored token and remove it",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := loggedInClient()
			if err != nil {
				fmt.Fprintln(o.stdout, "Not logged in.")
				return nil
			}
			// Refresh first if needed, then revoke and remove the file
			// under the credentials lock: another airlock process (a
			// running db access) that finds its login gone then finds the
			// file gone too, and says it was logged out here.
			revokeErr := c.refreshIfNeeded(cmd.Context(), false)
			unlock, err := lockCredentials(cmd.Context())
			if err != nil {
				return fmt.Errorf("removing the stored token: %w", err)
			}
			if revokeErr == nil {
				var status int
				status, _, revokeErr = c.send(cmd.Context(), http.MethodPost, "/api/v1/auth/logout", nil, nil, c.token())
				if revokeErr == nil && status >= 300 && status != http.StatusUnauthorized {
					revokeErr = fmt.Errorf("the server answered %d %s", status, http.StatusText(status))
				}
			}
			saveLastLogin(c.creds)
			_, err = removeCredentials()
			unlock()
			if err != nil {
				return fmt.Errorf("removing the stored token: %w", err)
			}
			if revokeErr != nil {
				fmt.Fprintf(o.stderr, "Warning: the server did not revoke the token (%v); it was removed from this machine.\n", revokeErr)
			}
			fmt.Fprintf(o.stdout, "Logged out of %s.\n", c.base)
			return nil
		},
	}
}
