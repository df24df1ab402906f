package cli

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	osuser "os/user"
	"path/filepath"
	"strings"

	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/airlockpam/airlock/internal/auth"
	"github.com/airlockpam/airlock/internal/errs"
	"github.com/airlockpam/airlock/internal/keyring"
	"github.com/airlockpam/airlock/internal/store"
)

// newAdminCommand holds the operator commands that work on the store
// itself, as `airlock server` opens it, with no server, login or token.
func newAdminCommand(o *options) *cobra.Command {
	cmd := &cobra.Command{Use: "admin", Short: "Operator commands that work on the store directly (no server or login needed)"}
	var dataDir, databaseURL, rootKeyFile, email, passwordFile string
	reset := &cobra.Command{
		Use:   "reset-password --email E (--data-dir D | --database-url URL)",
		Short: "Set a new password for a user from the store itself, for a lost admin password",
		Long: `Set a new password for a user, working on the store directly: for an operator
who has the server's data directory (or its PostgreSQL database) and its root
key, when no admin can log in any more.

The new password is asked twice at a terminal, or read from --password-file
FILE (- for standard input), or from standard input when it is not a terminal;
never from a flag. The reset clears a lockout after failed logins, revokes
every login of the user (their sessions end at once on a running server, or
when it next starts) and is recorded in the audit log (user.reset_password),
on its hash chain: airlock audit verify still passes.

The root key (AIRLOCK_ROOT_KEY or --root-key-file; airlock dev keeps it in its
data directory, where it is found) must be the store's: it proves the store is
the one meant. The server may keep running: its store takes the change as any
other write (SQLite queues writers, PostgreSQL is made for it), and a running
server sees the new password and the revoked logins at once.`,
		Example: "  airlock admin reset-password --data-dir ~/.local/state/airlock/dev --email admin@airlock.local\n" +
			"  airlock admin reset-password --database-url \"$AIRLOCK_DATABASE_URL\" --root-key-file /etc/airlock/root.key \\\n" +
			"    --email ops@example.com --password-file new-password.txt",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if databaseURL == "" {
				databaseURL = os.Getenv("AIRLOCK_DATABASE_URL")
			}
			if databaseURL == "" {
				if dataDir == "" {
					return errors.New("give the store: --data-dir D (the --data-dir of airlock server; for airlock dev, by default " +
						"~/.local/state/airlock/dev) or --database-url URL")
				}
				if _, err := os.Stat(filepath.Join(dataDir, store.SQLiteFile)); err != nil {
					return fmt.Errorf("no Airlock store in %s (no %s): give the data directory of your airlock server or airlock dev",
						dataDir, store.SQLiteFile)
				}
			}
			envKey := os.Getenv(keyring.EnvRootKey)
			if envKey == "" && rootKeyFile == "" && dataDir != "" {
				// airlock dev keeps its root key in its data directory.
				if _, err := os.Stat(filepath.Join(dataDir, "root.key")); err == nil {
					rootKeyFile = filepath.Join(dataDir, "root.key")
				}
			}
			root, err := keyring.LoadRootKey(envKey, rootKeyFile)
			if err != nil {
				return err
			}
			password, err := o.readNewPassword(passwordFile)
			if err != nil {
				return err
			}
			if msg := auth.CheckPasswordPolicy(password); msg != "" {
				return errors.New("the new password is refused: " + msg + "; nothing was changed")
			}
			ctx := cmd.Context()
			db, err := store.Open(ctx, store.Config{DataDir: dataDir, DatabaseURL: databaseURL})
			if err != nil {
				return err
			}
			defer db.Close()
			if _, err := keyring.New(ctx, db, root); err != nil {
				return err
			}
			svc, err := auth.New(auth.Config{DB: db})
			if err != nil {
				return err
			}
			r, err := svc.ResetPassword(ctx, email, password, operatorName())
			if err != nil {
				return fmt.Errorf("resetting the password of %s: %w; nothing was changed", email, publicError(err))
			}
			fmt.Fprintf(o.stdout, "The password of %s is reset; the change is in the audit log (user.reset_password).\n", r.User.Email)
			switch r.LoginsRevoked {
			case 0:
			case 1:
				fmt.Fprintln(o.stdout, "Their one login was revoked: its sessions end (at once on a running server, else when it next starts).")
			default:
				fmt.Fprintf(o.stdout, "Their %d logins were revoked: their sessions end (at once on a running server, else when it next starts).\n", r.LoginsRevoked)
			}
			if r.User.Disabled {
				fmt.Fprintf(o.stdout, "The user is disabled: an organization admin enables them with `airlock users enable %s`.\n", r.User.ID)
			}
			return nil
		},
	}
	fl := reset.Flags()
	fl.StringVar(&email, "email", "", "the user's email")
	fl.StringVar(&passwordFile, "password-file", "", "read the new password from this file (- for standard input) instead of a prompt")
	fl.StringVar(&dataDir, "data-dir", "", "the data directory of the embedded store (of airlock server or airlock dev)")
	fl.StringVar(&databaseURL, "database-url", "", "the PostgreSQL store, postgres://user:pass@host/db (or AIRLOCK_DATABASE_URL)")
	fl.StringVar(&rootKeyFile, "root-key-file", "", "file holding the base64 root key (instead of AIRLOCK_ROOT_KEY; default DATA_DIR/root.key when it exists)")
	_ = reset.MarkFlagRequired("email")
	cmd.AddCommand(reset)
	return cmd
}

// readNewPassword reads a new password from file (- for standard input),
// or asks for it twice at a terminal, or reads standard input.
func (o *options) readNewPassword(file string) (string, error) {
	switch {
	case file == "-":
		return o.readStdinSecret("New password")
	case file != "":
		b, err := os.ReadFile(file)
		if errors.Is(err, fs.ErrNotExist) {
			return "", fmt.Errorf("--password-file %s does not exist", file)
		}
		if err != nil {
			return "", fmt.Errorf("reading --password-file: %w", err)
		}
		pw := strings.TrimRight(string(b), "\r\n")
		if pw == "" {
			return "", fmt.Errorf("--password-file %s is empty", file)
		}
		return pw, nil
	}
	f, ok := o.stdin.(*os.File)
	if !ok || !term.IsTerminal(int(f.Fd())) {
		return o.readStdinSecret("New password")
	}
	ask := func(prompt string) (string, error) {
		fmt.Fprint(o.stderr, prompt)
		b, err := term.ReadPassword(int(f.Fd()))
		fmt.Fprintln(o.stderr)
		if err != nil {
			return "", fmt.Errorf("reading the password: %w", err)
		}
		return string(b), nil
	}
	pw, err := ask("New password: ")
	if err != nil {
		return "", err
	}
	again, err := ask("Again: ")
	if err != nil {
		return "", err
	}
	if pw != again {
		return "", errors.New("the two passwords differ; nothing was changed")
	}
	return pw, nil
}

// operatorName says who ran an operator command, for the audit log: the
// OS user and host, and the command.
func operatorName() string {
	name := "unknown user"
	if u, err := osuser.Current(); err == nil {
		name = u.Username
	}
	if h, err := os.Hostname(); err == nil {
		name += "@" + h
	}
	return name + " (airlock admin reset-password)"
}

// publicError is err as a user reads it: the message of an invalid input
// or a missing thing, without the operations it passed through; anything
// else whole, for the operator who ran the command.
func publicError(err error) error {
	var e *errs.Error
	if errors.As(err, &e) && (e.Code == errs.Invalid || e.Code == errs.NotFound) {
		return errors.New(e.Msg)
	}
	return err
}
