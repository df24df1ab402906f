// Package cli is the `airlock` command line: the server and dev commands
// that run the control plane, and the user commands that call its API.
// Every listing prints a table, or JSON with --output json.
package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/airlockpam/airlock/internal/version"
)

// options are the global flags.
type options struct {
	output    string
	logLevel  string
	debugAddr string
	stdin     io.Reader
	stdout    io.Writer
	stderr    io.Writer
}

// NewRootCommand builds the `airlock` command tree.
func NewRootCommand() *cobra.Command {
	return newRootCommand(&options{stdin: os.Stdin, stdout: os.Stdout, stderr: os.Stderr})
}

// newRootCommand builds the command tree on o's standard streams.
func newRootCommand(o *options) *cobra.Command {
	root := &cobra.Command{
		Use:           "airlock",
		Short:         "Just-in-time access to PostgreSQL and MongoDB without sharing passwords",
		SilenceUsage:  true,
		SilenceErrors: true,
		PersistentPreRunE: func(cmd *cobra.Command, _ []string) error {
			if o.output != "table" && o.output != "json" {
				return fmt.Errorf("--output must be table or json, not %q", o.output)
			}
			var lvl slog.Level
			if err := lvl.UnmarshalText([]byte(o.logLevel)); err != nil {
				return fmt.Errorf("--log-level must be debug, info, warn or error, not %q", o.logLevel)
			}
			slog.SetDefault(slog.New(slog.NewTextHandler(o.stderr, &slog.HandlerOptions{Level: lvl})))
			if o.debugAddr != "" {
				return startDebugListener(o.debugAddr)
			}
			return nil
		},
	}
	root.PersistentFlags().StringVarP(&o.output, "output", "o", "table", "output format: table or json")
	root.PersistentFlags().StringVar(&o.logLevel, "log-level", "info", "log level: debug, info, warn or error")
	root.PersistentFlags().StringVar(&o.debugAddr, "debug-addr", "", "serve Go profiles (/debug/pprof/) on this loopback address, e.g. 127.0.0.1:6060")
	root.AddCommand(
		newServerCommand(o),
		newDevCommand(o),
		newLoginCommand(o),
		newLogoutCommand(o),
		newProjectsCommand(o),
		newUsersCommand(o),
		newOrgCommand(o),
		newMFACommand(o),
		newMachineIdentitiesCommand(o),
		newAuditCommand(o),
		newAdminCommand(o),
		newResourcesCommand(o),
		newAccountsCommand(o),
		addGatewayProjectCommands(o, newGatewaysCommand(o)),
		newGatewayCommand(o),
		newDBCommand(o),
		newSessionsCommand(o),
		newKeygenCommand(o),
		newSecretsCommand(o), newRunCommand(o), newExportCommand(o), newAppConnectionsCommand(o), newSecretRotationsCommand(o),
		&cobra.Command{
			Use: "version", Short: "Print the version", Args: cobra.NoArgs,
			Run: func(cmd *cobra.Command, _ []string) { fmt.Fprintln(o.stdout, "airlock", version.Version) },
		},
	)
	return root
}

// Execute runs the command line and returns the process exit code.
func Execute() int {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, NewRootCommand(), os.Args[1:]); err != nil {
		if errors.Is(err, context.Canceled) {
			return 130
		}
		fmt.Fprintln(os.Stderr, "Error:", err)
		return 1
	}
	return 0
}

// run runs the command line args on root. A word that names no command
// under a command that only groups others is refused first, with the
// nearest command names (see unknownSubcommand).
func run(ctx context.Context, root *cobra.Command, args []string) error {
	if err := unknownSubcommand(root, args); err != nil {
		return err
	}
	root.SetArgs(args)
	return root.ExecuteContext(ctx)
}

// unknownSubcommand returns the error for args whose command is a group
// (such as `airlock db`, which only holds `access`) followed by a word that
// is none of its commands, or nil. Left to cobra, `airlock db acces
// --project-id P` would be refused for the flag the group does not have
// ("unknown flag: --project-id"), and `airlock db acces` would print the
// group's help and exit 0 as if it had worked.
func unknownSubcommand(root *cobra.Command, args []string) error {
	if len(args) > 0 && (args[0] == cobra.ShellCompRequestCmd || args[0] == cobra.ShellCompNoDescRequestCmd) {
		return nil
	}
	// The commands cobra adds when it executes: help and completion.
	root.InitDefaultHelpCmd()
	root.InitDefaultCompletionCmd(args...)
	cmd, rest, _ := root.Find(args)
	if cmd == nil || cmd.Runnable() || !cmd.HasSubCommands() {
		return nil
	}
	word := firstWord(cmd, rest)
	if word == "" || word == "help" {
		return nil
	}
	if cmd.SuggestionsMinimumDistance <= 0 {
		cmd.SuggestionsMinimumDistance = 2
	}
	msg := fmt.Sprintf("unknown command %q for %q", word, cmd.CommandPath())
	if s := cmd.SuggestionsFor(word); len(s) > 0 {
		msg += ": did you mean " + orList(s) + "?"
	}
	return fmt.Errorf("%s (`%s --help` lists its commands)", msg, cmd.CommandPath())
}

// orList joins words as "a", "a or b", "a, b or c".
func orList(words []string) string {
	if len(words) < 2 {
		return strings.Join(words, "")
	}
	return strings.Join(words[:len(words)-1], ", ") + " or " + words[len(words)-1]
}

// firstWord returns the first argument of args that is neither a flag nor
// a flag's value, as cobra reads them when it looks for a command: a flag
// it does not know takes the next argument as its value.
func firstWord(cmd *cobra.Command, args []string) string {
	flags := cmd.Flags() // with the inherited flags: Find merged them in
	takesValue := func(name string, short bool) bool {
		f := flags.Lookup(name)
		if short {
			f = flags.ShorthandLookup(name)
		}
		return f == nil || f.NoOptDefVal == ""
	}
	for i := 0; i < len(args); i++ {
		a := args[i]
		switch {
		case a == "--":
			if i+1 < len(args) {
				return args[i+1]
			}
			return ""
		case strings.HasPrefix(a, "--"):
			if !strings.Contains(a, "=") && takesValue(a[2:], false) {
				i++
			}
		case strings.HasPrefix(a, "-") && len(a) > 1:
			if len(a) == 2 && takesValue(a[1:], true) {
				i++
			}
		default:
			return a
		}
	}
	return ""
}

func newKeygenCommand(o *options) *cobra.Command {
	return &cobra.Command{
		Use:   "keygen",
		Short: "Print a new random root key (base64) for AIRLOCK_ROOT_KEY or a --root-key-file",
		Args:  cobra.NoArgs,
		Run: func(cmd *cobra.Command, _ []string) {
			fmt.Fprintln(o.stdout, generateRootKey())
		},
	}
}
