package cli

import (
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/airlockpam/airlock/internal/gateway"
	"github.com/airlockpam/airlock/internal/relay"
	"github.com/airlockpam/airlock/internal/sessionlog"
	"github.com/airlockpam/airlock/internal/version"
)

func (o *options) printEnrollment(g relay.NewGateway, domain string) error {
	if o.output == "json" {
		return o.printJSON(g)
	}
	fmt.Fprintf(o.stdout, "Gateway %s (%s) registered.\n\n", g.Name, g.ID)
	fmt.Fprintf(o.stdout, "Enrollment token (one use, valid until %s):\n\n%s\n\n", fmtTime(g.EnrollmentExpiresAt), g.EnrollmentToken)
	fmt.Fprintf(o.stdout, "On a machine that can reach your databases, run (the token in the environment, not on the command line where the process list shows it):\n\n  AIRLOCK_GATEWAY_TOKEN=%s airlock gateway --domain %s --data-dir /var/lib/airlock-gateway\n\nor save the token in a file and pass --token-file FILE (or pipe it with --token-stdin).\n", g.EnrollmentToken, domain)
	return nil
}

func newGatewaysCommand(o *options) *cobra.Command {
	cmd := &cobra.Command{Use: "gateways", Short: "Register and list gateways"}
	create := &cobra.Command{
		Use: "create NAME", Short: "Register a gateway and print its one-time enrollment token (organization admins)", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := loggedInClient()
			if err != nil {
				return err
			}
			var g relay.NewGateway
			if err := c.do(cmd.Context(), http.MethodPost, "/api/v1/gateways", nil, relay.GatewayInput{Name: args[0]}, &g); err != nil {
				return err
			}
			return o.printEnrollment(g, c.base)
		},
	}
	token := &cobra.Command{
		Use: "enrollment-token NAME", Short: "Issue a new enrollment token for a gateway (to re-enroll it)", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := loggedInClient()
			if err != nil {
				return err
			}
			var g relay.NewGateway
			if err := c.do(cmd.Context(), http.MethodPost, "/api/v1/gateways/"+url.PathEscape(args[0])+"/enrollment-token", nil, nil, &g); err != nil {
				return err
			}
			return o.printEnrollment(g, c.base)
		},
	}
	list := &cobra.Command{
		Use: "list", Short: "List gateways, online or offline, with their last heartbeat", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := loggedInClient()
			if err != nil {
				return err
			}
			var gs []relay.Gateway
			if err := c.do(cmd.Context(), http.MethodGet, "/api/v1/gateways", nil, nil, &gs); err != nil {
				return err
			}
			rows := make([][]string, 0, len(gs))
			for _, g := range gs {
				status := "offline"
				switch {
				case !g.Enrolled:
					status = "not enrolled"
				case g.Online:
					status = "online"
				}
				hb := "-"
				if g.LastHeartbeatAt != nil {
					hb = fmtTime(*g.LastHeartbeatAt)
				}
				rows = append(rows, []string{g.Name, g.ID, status, hb, g.RemoteAddr})
			}
			return o.printTable(gs, []string{"NAME", "ID", "STATUS", "LAST HEARTBEAT", "ADDRESS"}, rows)
		},
	}
	del := &cobra.Command{
		Use: "delete NAME", Short: "Delete a gateway (organization admins)", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := loggedInClient()
			if err != nil {
				return err
			}
			if err := c.do(cmd.Context(), http.MethodDelete, "/api/v1/gateways/"+url.PathEscape(args[0]), nil, nil, nil); err != nil {
				return err
			}
			fmt.Fprintln(o.stdout, "Deleted.")
			return nil
		},
	}
	cmd.AddCommand(create, token, list, del)
	return cmd
}

func newGatewayCommand(o *options) *cobra.Command {
	var domain, token, tokenFile, dataDir, caFile, allowTargets, spoolMaxSize, spoolSync, spoolFull, metricsListen string
	var tokenStdin bool
	cmd := &cobra.Command{
		Use:   "gateway",
		Short: "Run a gateway in the database's network",
		Long: `Run an Airlock gateway.

The first run enrolls with a one-time token from ` + "`airlock gateways create NAME`" + `: the
gateway makes its own key pair in --data-dir, sends a certificate request, and
stores the certificate it gets back; its private key never leaves that
directory. Later runs with the same --data-dir need no token.

The gateway then dials out to the server and keeps one connection open; it
needs no inbound port. It must be able to reach the databases of its resources.

The enrollment token is read from --token-file, from standard input
(--token-stdin) or from AIRLOCK_GATEWAY_TOKEN; --token still works but the
process list shows it to every local user.

--allow-targets restricts the addresses the gateway dials, checked on the
resolved address of every connection: a comma-separated list of CIDR[:port]
entries (10.0.0.0/8, 10.1.2.3/32:5432, [fd00::/8]:27017), which replaces the
default. The default allows every address except the gateway's own loopback
(127.0.0.0/8, ::1), unspecified, link-local (169.254.0.0/16, fe80::/10) and
cloud metadata addresses (169.254.169.254, fd00:ec2::254). A database on the
gateway's own host needs --allow-targets 127.0.0.1/32:PORT.
AIRLOCK_GATEWAY_ALLOW_TARGETS is read when the flag is not given.

The session log spool (in --data-dir) holds events until the server has them.
Each statement's start is written to it before the statement is forwarded, so
a crash of the gateway loses no statement that ran (one whose answer was not
recorded shows as "outcome unknown"). Writes are fsynced in batches every
50 ms, so a power loss can lose the last batch; --spool-sync=always fsyncs
each start before its statement is forwarded and each answer's event before
the connection goes on. When the spool cannot persist (disk full, over
--spool-max-size), new statements are refused until it can;
--spool-full=allow lets them run unrecorded instead, logging and counting
every dropped event.

--metrics-listen serves Prometheus metrics at /metrics on that address: the
connection to the server, live sessions, the spool's health (and why it is
unhealthy), pending events, bytes on disk and dropped events, and when the
certificate expires. They hold no secret; bind a private address.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			targets, err := gatewayTargets(cmd, allowTargets)
			if err != nil {
				return err
			}
			spoolOpts, err := spoolOptions(spoolMaxSize, spoolSync, spoolFull)
			if err != nil {
				return err
			}
			token, err := enrollmentToken(cmd, token, tokenFile, tokenStdin)
			if err != nil {
				return err
			}
			if dataDir == "" {
				d, err := stateDir()
				if err != nil {
					return err
				}
				dataDir = filepath.Join(d, "airlock", "gateway")
			}
			var serverTLS *tls.Config
			hc, err := newHTTPClient(caFile)
			if err != nil {
				return err
			}
			if tr, ok := hc.Transport.(*http.Transport); ok {
				serverTLS = tr.TLSClientConfig
			}
			id, err := gateway.LoadIdentity(dataDir)
			switch {
			case errors.Is(err, fs.ErrNotExist):
				base, err := normalizeDomain(domain)
				if err != nil {
					return err
				}
				if id, err = gateway.Enroll(cmd.Context(), base, token, dataDir, hc); err != nil {
					return err
				}
				slog.Info("enrolled", "gateway", id.Name, "id", id.GatewayID, "dataDir", dataDir)
			case err != nil:
				return err
			case token != "":
				slog.Info("already enrolled in this data directory; ignoring --token", "gateway", id.Name)
			}
			if domain != "" {
				if base, err := normalizeDomain(domain); err == nil && base != id.Domain {
					slog.Info("using --domain instead of the enrolled one", "domain", base)
					id.Domain = base
				}
			}
			slog.Info("gateway target policy", "allow_targets", targets.String())
			a, err := gateway.New(gateway.Config{Identity: id, ServerTLS: serverTLS, Version: version.Version, SpoolDir: filepath.Join(dataDir, "spool"),
				DataDir: dataDir, Targets: targets, SpoolOptions: spoolOpts})
			if err != nil {
				return err
			}
			defer a.Close()
			if metricsListen != "" {
				stop, err := serveMetrics(metricsListen, a.MetricsHandler())
				if err != nil {
					return err
				}
				defer stop()
			}
			return a.Run(cmd.Context())
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&metricsListen, "metrics-listen", "", "serve Prometheus metrics at /metrics on this address, e.g. 127.0.0.1:9464 (default: off)")
	fl.StringVar(&domain, "domain", "", "the Airlock server, e.g. https://airlock.example.com")
	fl.StringVar(&token, "token", "", "one-time enrollment token (first run only; visible in the process list: prefer --token-file, --token-stdin or AIRLOCK_GATEWAY_TOKEN)")
	fl.StringVar(&tokenFile, "token-file", "", "read the one-time enrollment token from this file (first run only)")
	fl.BoolVar(&tokenStdin, "token-stdin", false, "read the one-time enrollment token from standard input (first run only)")
	fl.StringVar(&allowTargets, "allow-targets", "", "CIDR[:port],... the gateway may dial (default: any address but loopback, link-local and cloud metadata; env AIRLOCK_GATEWAY_ALLOW_TARGETS)")
	fl.StringVar(&spoolMaxSize, "spool-max-size", "1GiB", "the most the session log spool may hold on disk (e.g. 512MiB, 2GiB)")
	fl.StringVar(&spoolSync, "spool-sync", "batch", "batch: fsync session events every 50 ms (a crash of the gateway loses nothing, a power loss can lose the last batch); always: fsync each statement's start before it is forwarded, and its answer's event before the connection goes on")
	fl.StringVar(&spoolFull, "spool-full", "refuse", "when the spool cannot persist events: refuse new statements (fail closed), or allow them unrecorded (logged and counted)")
	fl.StringVar(&dataDir, "data-dir", "", "where the gateway keeps its key and certificate (default ~/.local/state/airlock/gateway)")
	fl.StringVar(&caFile, "ca-file", "", "PEM CA certificate of the server's TLS certificate, when it is not publicly trusted")
	return cmd
}

// gatewayTargets parses --allow-targets, or AIRLOCK_GATEWAY_ALLOW_TARGETS
// when the flag is not given.
func gatewayTargets(cmd *cobra.Command, flag string) (*gateway.TargetPolicy, error) {
	if !cmd.Flags().Changed("allow-targets") {
		if env, ok := os.LookupEnv("AIRLOCK_GATEWAY_ALLOW_TARGETS"); ok {
			p, err := gateway.ParseAllowTargets(env)
			if err != nil {
				return nil, fmt.Errorf("AIRLOCK_GATEWAY_ALLOW_TARGETS: %w", err)
			}
			return p, nil
		}
	}
	return gateway.ParseAllowTargets(flag)
}

// spoolOptions turns the --spool-* flags into spool options.
func spoolOptions(maxSize, sync, full string) ([]sessionlog.SpoolOption, error) {
	size, err := parseByteSize(maxSize)
	if err != nil {
		return nil, fmt.Errorf("--spool-max-size %q: %w (use a size such as 512MiB or 2GiB)", maxSize, err)
	}
	if size < 1<<20 {
		return nil, fmt.Errorf("--spool-max-size %q is below 1MiB, too small to hold a batch of events", maxSize)
	}
	opts := []sessionlog.SpoolOption{sessionlog.WithMaxSize(size)}
	switch sync {
	case "batch", "":
	case "always":
		opts = append(opts, sessionlog.WithSyncAlways(true))
	default:
		return nil, fmt.Errorf("--spool-sync %q: use batch or always", sync)
	}
	switch full {
	case "refuse", "":
	case "allow":
		slog.Warn("--spool-full=allow: when the session log spool cannot persist events, statements run UNRECORDED (each dropped event is logged and counted)")
		opts = append(opts, sessionlog.WithFailOpen(true))
	default:
		return nil, fmt.Errorf("--spool-full %q: use refuse or allow", full)
	}
	return opts, nil
}

// parseByteSize parses 1048576, 512KiB, 64MiB, 2GiB (also KB, MB, GB as
// powers of 1024, and K, M, G).
func parseByteSize(s string) (int64, error) {
	t := strings.TrimSpace(s)
	mult := int64(1)
	for _, u := range []struct {
		suffix string
		mult   int64
	}{{"GiB", 1 << 30}, {"MiB", 1 << 20}, {"KiB", 1 << 10}, {"GB", 1 << 30}, {"MB", 1 << 20}, {"KB", 1 << 10}, {"G", 1 << 30}, {"M", 1 << 20}, {"K", 1 << 10}, {"B", 1}} {
		if rest, ok := strings.CutSuffix(t, u.suffix); ok {
			t, mult = strings.TrimSpace(rest), u.mult
			break
		}
	}
	n, err := strconv.ParseInt(t, 10, 64)
	if err != nil || n <= 0 || n > (1<<62)/mult {
		return 0, errors.New("not a positive size")
	}
	return n * mult, nil
}

// enrollmentToken reads the enrollment token from --token-file,
// --token-stdin, AIRLOCK_GATEWAY_TOKEN or, with a warning, --token.
func enrollmentToken(cmd *cobra.Command, flag, file string, stdin bool) (string, error) {
	sources := 0
	for _, set := range []bool{flag != "", file != "", stdin} {
		if set {
			sources++
		}
	}
	if sources > 1 {
		return "", errors.New("give the enrollment token one way: --token-file, --token-stdin, AIRLOCK_GATEWAY_TOKEN or --token")
	}
	switch {
	case file != "":
		b, err := os.ReadFile(file)
		if err != nil {
			return "", fmt.Errorf("reading the enrollment token from --token-file: %w", err)
		}
		return strings.TrimSpace(string(b)), nil
	case stdin:
		b, err := io.ReadAll(io.LimitReader(cmd.InOrStdin(), 64<<10))
		if err != nil {
			return "", fmt.Errorf("reading the enrollment token from standard input: %w", err)
		}
		return strings.TrimSpace(string(b)), nil
	case flag != "":
		slog.Warn("--token is visible in the process list to every user of this machine; use --token-file, --token-stdin or AIRLOCK_GATEWAY_TOKEN")
		return flag, nil
	}
	tok := strings.TrimSpace(os.Getenv("AIRLOCK_GATEWAY_TOKEN"))
	// Not left for child processes or a later dump of the environment.
	os.Unsetenv("AIRLOCK_GATEWAY_TOKEN")
	return tok, nil
}

// serveMetrics serves h at /metrics on addr until stop is called.
func serveMetrics(addr string, h http.Handler) (stop func(), err error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("--metrics-listen %s: cannot listen there (%v); give a free host:port such as 127.0.0.1:9464", addr, err)
	}
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", h)
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go srv.Serve(ln)
	slog.Info("serving metrics", "url", "http://"+ln.Addr().String()+"/metrics")
	return func() { srv.Close() }, nil
}
