package cli

import (
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"os/signal"
	"sort"
	"strings"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/airlockpam/airlock/internal/secrets"
)

// exit ends the process with a child's exit code (a variable for tests).
var exit = os.Exit

// revealSecrets reads every secret of a folder with its value.
func revealSecrets(cmd *cobra.Command, pl *secretPlace) ([]secrets.Secret, error) {
	c, err := projectClient(cmd.Context(), &pl.projectID)
	if err != nil {
		return nil, err
	}
	var list []secrets.Secret
	err = c.do(cmd.Context(), http.MethodGet, "/api/v1/projects/"+url.PathEscape(pl.projectID)+"/secret-values", pl.query(), nil, &list)
	return list, err
}

func newRunCommand(o *options) *cobra.Command {
	var pl secretPlace
	cmd := &cobra.Command{
		Use:   "run --project-id P --env E [--path /p] -- CMD [ARGS...]",
		Short: "Run a command with a folder's secrets in its environment",
		Long: `Run a command with the secrets of one folder added to its environment
(a secret replaces a variable of the same name). The values go only to the
command's environment: they are not printed, written to disk or set in the
shell. The command's exit code is airlock's. Each value read is audited.`,
		Example: "  airlock run --project-id P --env prod --path /db/orders -- psql -c 'select 1'",
		Args:    cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if cmd.ArgsLenAtDash() != 0 {
				return errors.New("put the command after --: airlock run --project-id P --env E -- CMD ARGS")
			}
			list, err := revealSecrets(cmd, &pl)
			if err != nil {
				return err
			}
			path, err := exec.LookPath(args[0])
			if err != nil {
				return fmt.Errorf("the command %q: %w", args[0], err)
			}
			env := os.Environ()
			for _, s := range list {
				if s.Value != nil {
					env = append(env, s.Name+"="+*s.Value)
				}
			}
			child := exec.Command(path, args[1:]...)
			child.Env, child.Stdin, child.Stdout, child.Stderr = env, os.Stdin, o.stdout, o.stderr
			// Signals to airlock go to the command too; airlock waits for it.
			sigs := make(chan os.Signal, 4)
			signal.Notify(sigs, os.Interrupt, syscall.SIGTERM, syscall.SIGHUP)
			defer signal.Stop(sigs)
			if err := child.Start(); err != nil {
				return fmt.Errorf("starting %s: %w", args[0], err)
			}
			done := make(chan struct{})
			go func() {
				for {
					select {
					case sig := <-sigs:
						_ = child.Process.Signal(sig)
					case <-done:
						return
					}
				}
			}()
			err = child.Wait()
			close(done)
			var ee *exec.ExitError
			if errors.As(err, &ee) {
				code := ee.ExitCode()
				if code < 0 {
					code = 128 + 15 // ended by a signal
				}
				exit(code)
				return nil
			}
			return err
		},
	}
	cmd.Flags().StringVar(&pl.projectID, "project-id", "", "the project's id or name")
	pl.flags(cmd)
	return cmd
}

func newExportCommand(o *options) *cobra.Command {
	var pl secretPlace
	var format string
	cmd := &cobra.Command{
		Use:   "export --project-id P --env E [--path /p] [--format dotenv|json]",
		Short: "Print a folder's secrets with their values as a .env file or JSON; each value read is audited",
		Example: "  airlock export --project-id P --env dev > .env\n" +
			"  airlock export --project-id P --env prod --path /db/orders --format json",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if format != "dotenv" && format != "json" {
				return fmt.Errorf("--format must be dotenv or json, not %q", format)
			}
			list, err := revealSecrets(cmd, &pl)
			if err != nil {
				return err
			}
			m := make(map[string]string, len(list))
			names := make([]string, 0, len(list))
			for _, s := range list {
				if s.Value != nil {
					m[s.Name] = *s.Value
					names = append(names, s.Name)
				}
			}
			if format == "json" {
				return o.printJSON(m)
			}
			sort.Strings(names)
			for _, n := range names {
				fmt.Fprintf(o.stdout, "%s=%s\n", n, dotenvQuote(m[n]))
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&pl.projectID, "project-id", "", "the project's id or name")
	cmd.Flags().StringVar(&format, "format", "dotenv", "dotenv or json")
	pl.flags(cmd)
	return cmd
}

// dotenvQuote quotes a value for a .env file: in single quotes (nothing is
// expanded) unless it holds a single quote or a line break; then in double
// quotes with \\, \", \n, \r and \$ escaped.
func dotenvQuote(v string) string {
	if !strings.ContainsAny(v, "'\n\r") {
		return "'" + v + "'"
	}
	return `"` + strings.NewReplacer(`\`, `\\`, `"`, `\"`, "\n", `\n`, "\r", `\r`, "$", `\$`).Replace(v) + `"`
}
