package cli

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"regexp"
	"runtime"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/term"
	"rsc.io/qr"

	"github.com/airlockpam/airlock/internal/auth"
	"github.com/airlockpam/airlock/internal/mfa"
)

// problemMFARequired is the problem type of an answer that asks for a
// second factor (package mfa).
const problemMFARequired = mfa.ProblemMFARequired

func newMFACommand(o *options) *cobra.Command {
	cmd := &cobra.Command{Use: "mfa", Short: "Your second factors: enroll TOTP, see and disable methods"}
	var code string
	enroll := &cobra.Command{
		Use:   "enroll totp",
		Short: "Enroll an authenticator app (TOTP): shows a QR code and asks for a first code",
		Long: `Enroll an authenticator app (TOTP).

Shows the otpauth URI, the secret and a QR code; scan it with the app and type
the code it shows. The first method you enroll also gives you ten recovery
codes, shown once: keep them somewhere safe; each works once in place of a code.

Without a terminal (scripts), the secret is made and shown, and a second run
with --code confirms it: airlock mfa enroll totp --code 123456`,
		Args: cobra.ExactArgs(1), ValidArgs: []string{"totp"},
		RunE: func(cmd *cobra.Command, args []string) error {
			if args[0] != "totp" {
				return fmt.Errorf("only totp can be enrolled here, not %q: passkeys are added in the browser, on the web UI's MFA page (/mfa)", args[0])
			}
			c, err := loggedInClient()
			if err != nil {
				return err
			}
			ctx := cmd.Context()
			if code == "" {
				var en mfa.TOTPEnrollment
				if err := c.do(ctx, http.MethodPost, "/api/v1/mfa/totp", nil, nil, &en); err != nil {
					return err
				}
				if o.output == "json" {
					if err := o.printJSON(en); err != nil {
						return err
					}
				} else {
					fmt.Fprintf(o.stdout, "Scan this QR code with your authenticator app, or enter the secret by hand.\n\n")
					if err := writeQR(o.stdout, en.URI); err != nil {
						fmt.Fprintf(o.stderr, "Warning: the QR code could not be drawn: %v\n", err)
					}
					fmt.Fprintf(o.stdout, "\nSecret: %s\nURI:    %s\n\n", en.Secret, en.URI)
				}
				if !o.stdinIsTerminal() {
					fmt.Fprintf(o.stderr, "Confirm with a first code from the app: airlock mfa enroll totp --code CODE\n")
					return nil
				}
				if code, err = o.prompt("Code from the app: "); err != nil {
					return err
				}
			}
			var conf mfa.TOTPConfirmed
			if err := c.do(ctx, http.MethodPost, "/api/v1/mfa/totp/confirm", nil, mfa.CodeInput{Code: code}, &conf); err != nil {
				return err
			}
			if o.output == "json" {
				return o.printJSON(conf)
			}
			fmt.Fprintln(o.stdout, "TOTP is enrolled.")
			if len(conf.RecoveryCodes) > 0 {
				fmt.Fprintln(o.stdout, "\nRecovery codes (shown only now; each works once in place of a code; keep them safe):")
				for _, rc := range conf.RecoveryCodes {
					fmt.Fprintln(o.stdout, "  "+rc)
				}
			}
			return nil
		},
	}
	enroll.Flags().StringVar(&code, "code", "", "confirm a pending enrollment with this code from the app (for scripts)")

	status := &cobra.Command{
		Use: "status", Short: "Show your enrolled methods and recovery codes left", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := loggedInClient()
			if err != nil {
				return err
			}
			var st mfa.MFAStatus
			if err := c.do(cmd.Context(), http.MethodGet, "/api/v1/mfa", nil, nil, &st); err != nil {
				return err
			}
			methods := make([]string, 0, len(st.Methods))
			for _, m := range st.Methods {
				methods = append(methods, m.Kind)
			}
			list := strings.Join(methods, ", ")
			if list == "" {
				list = "none (enroll with `airlock mfa enroll totp`, or add a passkey on the web UI's MFA page)"
			}
			rows := [][2]string{{"Methods", list}, {"Recovery codes left", fmt.Sprint(st.RecoveryCodesLeft)},
				{"Organization enforces", st.OrgMethod}, {"MFA at login", fmt.Sprint(st.RequireMFALogin)}}
			if st.LockedUntil != nil {
				rows = append(rows, [2]string{"Locked until", st.LockedUntil.Format(time.RFC3339Nano)})
			}
			return o.printObject(st, rows)
		},
	}

	var disableCode string
	disable := &cobra.Command{
		Use: "disable METHOD", Short: "Turn off a method, totp or webauthn (all passkeys); needs a current code or a recovery code", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := loggedInClient()
			if err != nil {
				return err
			}
			if disableCode == "" {
				if !o.stdinIsTerminal() {
					return errors.New("disabling a method needs a current code: pass --code")
				}
				if disableCode, err = o.prompt("Current code (or a recovery code): "); err != nil {
					return err
				}
			}
			if err := c.do(cmd.Context(), http.MethodPost, "/api/v1/mfa/"+args[0]+"/disable", nil, mfa.CodeInput{Code: disableCode}, nil); err != nil {
				return err
			}
			fmt.Fprintf(o.stdout, "%s is turned off.\n", args[0])
			return nil
		},
	}
	disable.Flags().StringVar(&disableCode, "code", "", "a current code, or a recovery code")
	cmd.AddCommand(enroll, status, disable)
	return cmd
}

// stdinIsTerminal reports whether the user can be asked something.
func (o *options) stdinIsTerminal() bool {
	f, ok := o.stdin.(*os.File)
	return ok && term.IsTerminal(int(f.Fd()))
}

// prompt asks for one line on the terminal.
func (o *options) prompt(question string) (string, error) {
	fmt.Fprint(o.stderr, question)
	line, err := bufio.NewReader(o.stdin).ReadString('\n')
	if err != nil && line == "" {
		return "", fmt.Errorf("reading the answer: %w", err)
	}
	return strings.TrimSpace(line), nil
}

// withMFA runs call, and when the server answers that MFA is required,
// gets a code (code, else a prompt on the terminal), passes the challenge,
// and runs call again with the passed challenge's id. On a terminal a wrong
// code may be typed again while the challenge has tries left.
func (o *options) withMFA(ctx context.Context, c *client, code string, call func(challengeID string) error) error {
	err := call("")
	var ae *apiError
	if !errors.As(err, &ae) || ae.Type != problemMFARequired || ae.ChallengeID == "" {
		return err
	}
	interactive := code == ""
	if interactive && ae.Method == methodWebAuthn && ae.ApprovalURL != "" {
		if err := o.awaitPasskey(ctx, c, ae); err != nil {
			return err
		}
		return call(ae.ChallengeID)
	}
	if interactive && !o.stdinIsTerminal() {
		return fmt.Errorf("%s; there is no terminal to ask for the code: pass --mfa-code", ae.Detail)
	}
	if interactive {
		fmt.Fprintln(o.stderr, ae.Detail)
	}
	for {
		if interactive {
			if code, err = o.prompt("Code: "); err != nil {
				return err
			}
		}
		err = c.do(ctx, http.MethodPost, "/api/v1/mfa/challenges/"+ae.ChallengeID+"/verify", nil, mfa.CodeInput{Code: code}, nil)
		var ve *apiError
		if err != nil && interactive && errors.As(err, &ve) && ve.Status == http.StatusUnprocessableEntity && triesLeft.MatchString(ve.Error()) {
			fmt.Fprintln(o.stderr, ve.Error())
			continue
		}
		if err != nil {
			return fmt.Errorf("MFA: %w", err)
		}
		return call(ae.ChallengeID)
	}
}

const methodWebAuthn = "webauthn"

// passkeyPoll is how often awaitPasskey asks whether the challenge is approved.
var passkeyPoll = time.Second

// awaitPasskey shows the page that approves a passkey challenge, opens it
// in the browser (unless AIRLOCK_NO_BROWSER=1), and waits until the
// challenge is approved there, or used up, or expired.
func (o *options) awaitPasskey(ctx context.Context, c *client, ae *apiError) error {
	fmt.Fprintf(o.stderr, "MFA required: approve this request with your passkey in the browser:\n\n  %s\n\n", ae.ApprovalURL)
	if os.Getenv("AIRLOCK_NO_BROWSER") != "1" {
		if err := openBrowser(ae.ApprovalURL); err != nil {
			fmt.Fprintf(o.stderr, "(could not open a browser: %v; open the link yourself)\n", err)
		}
	}
	fmt.Fprintln(o.stderr, "Waiting for the approval (Ctrl+C to give up)...")
	t := time.NewTicker(passkeyPoll)
	defer t.Stop()
	for {
		var st mfa.ChallengeStatus
		if err := c.do(ctx, http.MethodGet, "/api/v1/mfa/challenges/"+url.PathEscape(ae.ChallengeID), nil, nil, &st); err != nil {
			return fmt.Errorf("MFA: %w", err)
		}
		switch st.Status {
		case "approved":
			fmt.Fprintln(o.stderr, "Approved.")
			return nil
		case "expired":
			return errors.New("MFA: the approval was not given in time (5 minutes): run the command again")
		case "used", "failed":
			return errors.New("MFA: the challenge is used up: run the command again")
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
	}
}

// openBrowser opens u in the user's browser, without waiting for it.
func openBrowser(u string) error {
	var cmd *exec.Cmd
	switch runtime.GOOS {
	case "darwin":
		cmd = exec.Command("open", u)
	case "windows":
		cmd = exec.Command("rundll32", "url.dll,FileProtocolHandler", u)
	default:
		cmd = exec.Command("xdg-open", u)
	}
	if err := cmd.Start(); err != nil {
		return err
	}
	go func() { _ = cmd.Wait() }()
	return nil
}

// triesLeft matches the server's answer to a wrong code that may be retried.
var triesLeft = regexp.MustCompile(`\b[1-9]\d* tr(y|ies) left`)

// writeQR draws text as a QR code with half-block characters, black on
// white whatever the terminal's colors, with a quiet zone around it.
func writeQR(w io.Writer, text string) error {
	code, err := qr.Encode(text, qr.M)
	if err != nil {
		return err
	}
	const quiet = 2
	n := code.Size
	black := func(x, y int) bool { return x >= 0 && y >= 0 && x < n && y < n && code.Black(x, y) }
	var b strings.Builder
	for y := -quiet; y < n+quiet; y += 2 {
		b.WriteString("\x1b[30;107m") // black on bright white
		for x := -quiet; x < n+quiet; x++ {
			top, bottom := black(x, y), black(x, y+1)
			switch {
			case top && bottom:
				b.WriteString("█")
			case top:
				b.WriteString("▀")
			case bottom:
				b.WriteString("▄")
			default:
				b.WriteString(" ")
			}
		}
		b.WriteString("\x1b[0m\n")
	}
	_, err = io.WriteString(w, b.String())
	return err
}

// loginWithMFA posts a password login; when the organization requires MFA
// at login it gets a code (code, else a prompt on the terminal, again after
// a wrong code while tries are left) and repeats the login with it.
func (o *options) loginWithMFA(ctx context.Context, c *client, body *auth.LoginRequest, code string, pair *auth.TokenPair) error {
	err := c.do(ctx, http.MethodPost, "/api/v1/auth/login", nil, body, pair)
	var ae *apiError
	if !errors.As(err, &ae) || ae.Type != problemMFARequired || ae.ChallengeID == "" {
		return err
	}
	interactive := code == ""
	if interactive && !o.stdinIsTerminal() {
		return fmt.Errorf("%s; there is no terminal to ask for the code: pass --mfa-code", ae.Detail)
	}
	passkey := interactive && ae.Method == methodWebAuthn && ae.ApprovalURL != ""
	question := "Code: "
	if passkey {
		// A login cannot poll (it has no token yet): the user approves in
		// the browser (signed in there), then presses Enter.
		fmt.Fprintf(o.stderr, "MFA required: approve this login with your passkey in the browser (signed in to the web UI):\n\n  %s\n\n", ae.ApprovalURL)
		if os.Getenv("AIRLOCK_NO_BROWSER") != "1" {
			if err := openBrowser(ae.ApprovalURL); err != nil {
				fmt.Fprintf(o.stderr, "(could not open a browser: %v; open the link yourself)\n", err)
			}
		}
		question = "Press Enter once approved (or type a recovery code): "
	} else if interactive {
		fmt.Fprintln(o.stderr, ae.Detail)
	}
	body.MFAChallengeID = ae.ChallengeID
	for {
		if interactive {
			if code, err = o.prompt(question); err != nil {
				return err
			}
		}
		body.MFACode = code
		err = c.do(ctx, http.MethodPost, "/api/v1/auth/login", nil, body, pair)
		var ve *apiError
		if err != nil && passkey && code == "" && errors.As(err, &ve) && ve.Status == http.StatusUnprocessableEntity {
			fmt.Fprintln(o.stderr, "Not approved yet: approve it in the browser first.")
			continue
		}
		if err != nil && interactive && errors.As(err, &ve) && ve.Status == http.StatusUnprocessableEntity && triesLeft.MatchString(ve.Error()) {
			fmt.Fprintln(o.stderr, ve.Error())
			continue
		}
		return err
	}
}

// suggestEnrollment tells a user who has no second factor, in an
// organization that requires one, to enroll now. It is advice: a failure
// to ask says nothing.
func (o *options) suggestEnrollment(ctx context.Context) {
	c, err := loggedInClient()
	if err != nil {
		return
	}
	var st mfa.MFAStatus
	if c.do(ctx, http.MethodGet, "/api/v1/mfa", nil, nil, &st) != nil || len(st.Methods) > 0 {
		return
	}
	if st.RequireMFALogin || st.OrgMethod == "totp" {
		fmt.Fprintln(o.stderr, "Your organization requires a second factor and you have none enrolled: enroll an authenticator app now with `airlock mfa enroll totp`.")
	}
}
