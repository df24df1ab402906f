package cli

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"math/big"
	"net/http"
	"os"
	"path/filepath"
	"time"

	"github.com/spf13/cobra"

	"github.com/airlockpam/airlock/internal/gateway"
	"github.com/airlockpam/airlock/internal/keyring"
	"github.com/airlockpam/airlock/internal/server"
	"github.com/airlockpam/airlock/internal/version"
)

func generateRootKey() string { return keyring.GenerateRootKey() }

type serverFlags struct {
	listen, dataDir, databaseURL, tlsCert, tlsKey, rootKeyFile, smtpURL, publicURL string
	trustProxyHeaders                                                              bool
	accessTokenTTL, gatewayLostAfter, clientLostAfter, gwCertTTL                   time.Duration
}

func newServerCommand(o *options) *cobra.Command {
	var f serverFlags
	cmd := &cobra.Command{
		Use:   "server",
		Short: "Run the Airlock control plane (API, web UI, gateway relay, jobs)",
		Long: `Run the Airlock control plane.

The store is an embedded SQLite file in --data-dir unless --database-url names a
PostgreSQL database. The root key that encrypts secrets at rest comes from
AIRLOCK_ROOT_KEY (base64 of 32 bytes) or --root-key-file. When the store has no
user yet, AIRLOCK_BOOTSTRAP_EMAIL and AIRLOCK_BOOTSTRAP_PASSWORD create the first
organization admin; afterwards they are ignored.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			root, err := keyring.LoadRootKey(os.Getenv(keyring.EnvRootKey), f.rootKeyFile)
			if err != nil {
				return err
			}
			if f.databaseURL == "" {
				f.databaseURL = os.Getenv("AIRLOCK_DATABASE_URL")
			}
			cfg := server.Config{
				Listen: f.listen, DataDir: f.dataDir, DatabaseURL: f.databaseURL, TLSCert: f.tlsCert, TLSKey: f.tlsKey,
				RootKey: root, TrustProxyHeaders: f.trustProxyHeaders,
			}
			cfg.BootstrapEmail, cfg.BootstrapPassword = bootstrapFromEnv()
			cfg.SMTPURL = smtpURL(f.smtpURL)
			cfg.PublicURL = publicURL(f.publicURL)
			if f.accessTokenTTL < 0 || (f.accessTokenTTL > 0 && f.accessTokenTTL < time.Second) {
				return fmt.Errorf("--access-token-ttl %s is too short: use at least 1s (default 15m)", f.accessTokenTTL)
			}
			cfg.Auth.AccessTTL = f.accessTokenTTL
			cfg.GatewayLostAfter, cfg.ClientLostAfter, cfg.GatewayCertLifetime = f.gatewayLostAfter, f.clientLostAfter, f.gwCertTTL
			if cfg.DatabaseURL == "" && cfg.DataDir != "" {
				// The embedded store: one server per data directory.
				if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
					return fmt.Errorf("creating the data directory: %w", err)
				}
				unlock, err := lockDataDir(cfg.DataDir, "airlock server")
				if err != nil {
					return err
				}
				defer unlock()
			}
			return runServer(cmd.Context(), o, cfg, nil)
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&f.listen, "listen", "127.0.0.1:8720", "address to serve the API, the web UI and the gateway relay on")
	fl.StringVar(&f.dataDir, "data-dir", "", "directory for the embedded store (required without --database-url)")
	fl.StringVar(&f.databaseURL, "database-url", "", "PostgreSQL store, postgres://user:pass@host/db (or AIRLOCK_DATABASE_URL)")
	fl.StringVar(&f.tlsCert, "tls-cert", "", "PEM certificate: serve HTTPS (with --tls-key)")
	fl.StringVar(&f.tlsKey, "tls-key", "", "PEM private key for --tls-cert")
	fl.StringVar(&f.rootKeyFile, "root-key-file", "", "file holding the base64 root key (instead of AIRLOCK_ROOT_KEY)")
	fl.BoolVar(&f.trustProxyHeaders, "trust-proxy-headers", false, "take client addresses from X-Forwarded-For (only behind a proxy that sets it)")
	fl.DurationVar(&f.gatewayLostAfter, "gateway-lost-after", 2*time.Minute,
		"how long a session's gateway may stay disconnected before the session ends as gateway_lost (the server's own restart counts as a grace period)")
	fl.DurationVar(&f.clientLostAfter, "client-lost-after", 2*time.Minute,
		"how long a session's `db access` may stay disconnected before the session ends as client_lost (the server's own restart counts as a grace period)")
	fl.DurationVar(&f.accessTokenTTL, "access-token-ttl", 15*time.Minute, "lifetime of an access token; the CLI refreshes it with its refresh token (7 days)")
	fl.StringVar(&f.smtpURL, "smtp-url", "", "SMTP server for MFA email codes and secret-rotation failure mail to admins: smtp://user:pass@host:587 (STARTTLS required but on localhost; ?starttls=off for a trusted relay) or smtps://...:465, optional ?from=addr (or AIRLOCK_SMTP_URL)")
	fl.StringVar(&f.publicURL, "public-url", "", publicURLHelp)
	fl.DurationVar(&f.gwCertTTL, "gateway-certificate-lifetime", 365*24*time.Hour,
		"lifetime of the certificates gateways get at enrollment and renewal; they renew when a third of it is left (at least 1m)")
	return cmd
}

// EnvBootstrapPassword holds the first admin's password for `airlock server`.
const EnvBootstrapPassword = "AIRLOCK_BOOTSTRAP_PASSWORD"

// bootstrapFromEnv reads the first admin's email and password from the
// environment and removes the password from it, so that neither child
// processes nor code that dumps the environment see it later. (The kernel's
// copy of the initial environment, /proc/PID/environ, readable by the same
// user and root, is not changed by this.)
func bootstrapFromEnv() (email, password string) {
	email, password = os.Getenv("AIRLOCK_BOOTSTRAP_EMAIL"), os.Getenv(EnvBootstrapPassword)
	_ = os.Unsetenv(EnvBootstrapPassword)
	return email, password
}

// runServer starts the server and blocks until ctx ends. ready, if not nil,
// is called once the server listens.
func runServer(ctx context.Context, o *options, cfg server.Config, ready func(s *server.Server, url string)) error {
	s, err := server.New(ctx, cfg)
	if err != nil {
		return err
	}
	defer s.Close()
	ln, err := s.Listen()
	if err != nil {
		return err
	}
	url := fmt.Sprintf("%s://%s", s.Scheme(), ln.Addr())
	slog.Info("airlock server listening", "url", url, "store", string(s.DB.Dialect), "rootKeyId", s.Keyring.RootKeyID())
	if ready != nil {
		ready(s, url)
	}
	return s.Serve(ctx, ln)
}

func newDevCommand(o *options) *cobra.Command {
	var dataDir, listen, smtp, public string
	cmd := &cobra.Command{
		Use:   "dev",
		Short: "Run Airlock for development: server, gateway, embedded store and an admin, no setup",
		Long: `Run a complete Airlock on this machine with no setup.

The data directory (default: your state directory, ~/.local/state/airlock/dev)
holds the embedded store and a generated root key (mode 0600). At the first
start an admin is created and its email and password are printed once. Only
one airlock dev (or server) uses a data directory at a time: another one
refuses to start.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if dataDir == "" {
				d, err := stateDir()
				if err != nil {
					return err
				}
				dataDir = filepath.Join(d, "airlock", "dev")
			}
			if err := os.MkdirAll(dataDir, 0o700); err != nil {
				return fmt.Errorf("creating the data directory: %w", err)
			}
			unlock, err := lockDataDir(dataDir, "airlock dev")
			if err != nil {
				return err
			}
			defer unlock()
			root, _, err := keyring.LoadOrCreateRootKeyFile(filepath.Join(dataDir, "root.key"))
			if err != nil {
				return err
			}
			password := randomPassword(20)
			cfg := server.Config{Listen: listen, DataDir: dataDir, RootKey: root,
				BootstrapEmail: devAdminEmail, BootstrapPassword: password, SMTPURL: smtpURL(smtp), DevMailLog: true, PublicURL: publicURL(public)}
			ctx := cmd.Context()
			fmt.Fprintf(o.stdout, "Starting the server on %s (store and root key in %s)...\n", listen, dataDir)
			return runServer(ctx, o, cfg, func(s *server.Server, url string) {
				fmt.Fprintf(o.stdout, "\nAirlock is running in development mode.\n\n")
				fmt.Fprintf(o.stdout, "  URL:       %s\n", url)
				fmt.Fprintf(o.stdout, "  Web UI:    %s/  (open it in a browser and sign in as the admin)\n", url)
				if pu := s.MFA.PublicURL(); pu != "" && pu != url {
					fmt.Fprintf(o.stdout, "  Passkeys:  %s/mfa  (passkeys need a host name: use this address to add and use them)\n", pu)
				}
				fmt.Fprintf(o.stdout, "  Data:      %s\n", dataDir)
				fmt.Fprintf(o.stdout, "  Gateway:   %s (built in; it reaches databases from this machine)\n", builtinGateway)
				if s.Bootstrapped {
					fmt.Fprintf(o.stdout, "  Admin:     %s\n", devAdminEmail)
					fmt.Fprintf(o.stdout, "  Password:  %s\n", password)
					fmt.Fprintf(o.stdout, "             (shown only now; the store keeps only a hash of it)\n")
				} else {
					fmt.Fprintf(o.stdout, "  Admin:     %s (its password was printed at the first start; if it is lost:\n", devAdminEmail)
					fmt.Fprintf(o.stdout, "             airlock admin reset-password --data-dir %s --email %s)\n", dataDir, devAdminEmail)
				}
				fmt.Fprintf(o.stdout, "\nNext:  airlock login --domain %s --email %s\n\n", url, devAdminEmail)
				fmt.Fprintf(o.stdout, "Starting the built-in gateway %s...\n", builtinGateway)
				go runBuiltinGateway(ctx, s, url, filepath.Join(dataDir, "gateway"), func() {
					fmt.Fprintf(o.stdout, "Ready: the built-in gateway %s is connected.\n", builtinGateway)
				})
			})
		},
	}
	cmd.Flags().StringVar(&dataDir, "data-dir", "", "data directory (default ~/.local/state/airlock/dev)")
	cmd.Flags().StringVar(&listen, "listen", "127.0.0.1:8720", "address to serve on")
	cmd.Flags().StringVar(&smtp, "smtp-url", "", "SMTP server for MFA email codes and rotation failure mail (or AIRLOCK_SMTP_URL); without it, codes are written to this command's log")
	cmd.Flags().StringVar(&public, "public-url", "", publicURLHelp)
	return cmd
}

const publicURLHelp = "the URL users reach the server at, https://airlock.example.com: passkeys are bound to its host and MFA approval links start with it (or AIRLOCK_PUBLIC_URL; default: the listen URL, with localhost for a loopback address)"

// publicURL is the --public-url flag, else AIRLOCK_PUBLIC_URL.
func publicURL(flag string) string {
	if flag != "" {
		return flag
	}
	return os.Getenv("AIRLOCK_PUBLIC_URL")
}

// smtpURL is the --smtp-url flag, else AIRLOCK_SMTP_URL.
func smtpURL(flag string) string {
	if flag != "" {
		return flag
	}
	return os.Getenv("AIRLOCK_SMTP_URL")
}

const devAdminEmail = "admin@airlock.local"

func stateDir() (string, error) {
	if d := os.Getenv("XDG_STATE_HOME"); d != "" {
		return d, nil
	}
	home, err := os.UserHomeDir()
	if err != nil {
		return "", fmt.Errorf("cannot find your home directory; pass --data-dir: %w", err)
	}
	return filepath.Join(home, ".local", "state"), nil
}

func randomPassword(n int) string {
	const alphabet = "abcdefghijkmnopqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789"
	b := make([]byte, n)
	for i := range b {
		v, err := rand.Int(rand.Reader, big.NewInt(int64(len(alphabet))))
		if err != nil {
			panic(err)
		}
		b[i] = alphabet[v.Int64()]
	}
	return string(b)
}

const builtinGateway = "local"

// runBuiltinGateway enrolls (once) and runs the dev server's own gateway;
// connected is called once the server has it connected.
func runBuiltinGateway(ctx context.Context, s *server.Server, url, dir string, connected func()) {
	id, err := gateway.LoadIdentity(dir)
	if errors.Is(err, fs.ErrNotExist) {
		id, err = enrollBuiltinGateway(ctx, s, url, dir)
	}
	if err != nil {
		slog.Error("the built-in gateway cannot start", "err", err)
		return
	}
	id.Domain = url // the listen address may have changed since enrollment
	a, err := gateway.New(gateway.Config{Identity: id, Version: version.Version, SpoolDir: filepath.Join(dir, "spool")})
	if err == nil {
		defer a.Close()
		stop := make(chan struct{})
		defer close(stop)
		go func() {
			t := time.NewTicker(50 * time.Millisecond)
			defer t.Stop()
			for !s.Relay.Connected(id.GatewayID) {
				select {
				case <-stop:
					return
				case <-t.C:
				}
			}
			connected()
		}()
		err = a.Run(ctx)
	}
	if err != nil {
		slog.Error("the built-in gateway stopped", "err", err)
	}
}

func enrollBuiltinGateway(ctx context.Context, s *server.Server, url, dir string) (*gateway.Identity, error) {
	orgID, err := s.OrgID(ctx)
	if err != nil || orgID == "" {
		return nil, fmt.Errorf("no organization yet: %v", err)
	}
	g, err := s.Relay.EnsureGateway(ctx, orgID, builtinGateway)
	if err != nil {
		return nil, err
	}
	return gateway.Enroll(ctx, url, g.EnrollmentToken, dir, &http.Client{Timeout: 30 * time.Second})
}
