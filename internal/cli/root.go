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
	o := &options{stdin: os.Stdin, stdout: os.Stdout, stderr: os.Stderr}
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
		newMachineIdentitiesCommand(o),
		newAuditCommand(o),
		newResourcesCommand(o),
		newAccountsCommand(o),
		addGatewayProjectCommands(o, newGatewaysCommand(o)),
		newGatewayCommand(o),
		newDBCommand(o),
		newSessionsCommand(o),
		newKeygenCommand(o),
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
	root := NewRootCommand()
	if err := root.ExecuteContext(ctx); err != nil {
		if errors.Is(err, context.Canceled) {
			return 130
		}
		fmt.Fprintln(os.Stderr, "Error:", err)
		return 1
	}
	return 0
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
