package cli

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/spf13/cobra"

	"github.com/airlockpam/airlock/internal/pki"
	"github.com/airlockpam/airlock/internal/tunnel"

	"github.com/airlockpam/airlock/internal/session"
)

// accessFlags are the flags of `airlock db access`.
type accessFlags struct {
	resource, account, projectID, duration, domain string
	port                                           int
	unixSocketDir, mfaCode                         string
	allowOtherUsers                                bool
	checkEvery                                     time.Duration
}

func newDBCommand(o *options) *cobra.Command {
	cmd := &cobra.Command{Use: "db", Short: "Access databases"}
	var f accessFlags
	access := &cobra.Command{
		Use:   "access",
		Short: "Open a local proxy to a database account for a while, without its password",
		Long: `Start a time-boxed session on an account and open a local proxy to it.

The proxy listens on 127.0.0.1 and prints a connection URL without a password;
psql, pgAdmin, DBeaver or any driver connect to it, as many connections as they
like, until the session expires or you press Ctrl+C. The credentials are
injected by the gateway; they never reach this machine.

Without --port, the proxy listens on the port it used last time for the same
account (kept in ports.json in the config directory) if that port is free, so
a GUI client's saved connection works again; otherwise on a new port. The
output says which port and why.

Clients that insist on TLS (sslmode=require, ssl: true, tls=true, Compass with
TLS on) get it: the proxy makes a certificate for 127.0.0.1, ::1 and localhost
for this session, keeps its key in memory only, and writes the certificate of
the session's CA to proxy-ca-<port>.pem in the config directory for clients
that verify the server (sslmode=verify-full sslrootcert=<file>, or MongoDB
tlsCAFile=<file>). Plain connections work as before.

Only you can use the proxy: a connection from another OS user of this machine
is refused with an error in that user's client, and a warning is printed here.
(On Linux the owner of a TCP connection is read from the kernel's socket table;
where that cannot be done, as on macOS, the proxy does not listen on TCP: use
--unix-socket, or accept the risk with --allow-other-local-users.)

--unix-socket DIR listens on a socket file in the directory DIR instead of on
TCP. The file is created with mode 0600 and removed at the end. Its name is the
one clients look for in DIR: .s.PGSQL.<port> for PostgreSQL (psql, libpq, pgx:
psql "host=DIR port=<port> user=... dbname=..."), mongodb-<port>.sock for
MongoDB. <port> is --port, by default 5432 (PostgreSQL) or 27017 (MongoDB); no
TCP port is opened.

An account that requires MFA asks for a code first: on a terminal you are
prompted (and asked again after a wrong code while tries are left); scripts
pass --mfa-code (a TOTP code or a recovery code). When the method is a passkey,
the approval page's link is printed and opened in the browser (not with
AIRLOCK_NO_BROWSER=1): approve there with your passkey, and the command, which
waits for it, goes on. The session then starts on its own.

If the Airlock server becomes unreachable, the proxy says so in one line,
reconnects until the session expires, and says when it is connected again;
new connections meanwhile are refused with an error that says so (details
with --log-level debug). If your login is revoked, or the session is ended
(by you, an administrator, expiry or revocation), the proxy says why, closes
its connections and exits.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := loggedInClient()
			if err != nil {
				return err
			}
			if f.domain != "" {
				want, err := normalizeDomain(f.domain)
				if err != nil {
					return err
				}
				if want != c.base {
					return fmt.Errorf("you are logged in to %s, not %s: run `airlock login --domain %s` first", c.base, want, want)
				}
			}
			if f.port < 0 || f.port > 65535 {
				return fmt.Errorf("--port %d is not a port number (1-65535, or 0 for a free one)", f.port)
			}
			if f.checkEvery <= 0 {
				return fmt.Errorf("--check-interval %s must be positive", f.checkEvery)
			}
			if f.projectID, err = c.resolveProject(cmd.Context(), f.projectID); err != nil {
				return err
			}
			return o.access(cmd.Context(), c, f)
		},
	}
	fl := access.Flags()
	fl.StringVar(&f.resource, "resource", "", "resource name")
	fl.StringVar(&f.account, "account", "", "account name")
	fl.StringVar(&f.projectID, "project-id", "", projectFlagHelp)
	fl.StringVar(&f.duration, "duration", "1h", "how long the session lasts, e.g. 30m, 1h, 2h30m")
	fl.StringVar(&f.domain, "domain", "", "the Airlock server (default: the one you logged in to)")
	fl.IntVar(&f.port, "port", 0, "local port to listen on (default: this account's port from last time if free, else a new one; with --unix-socket, the port in the socket's name)")
	fl.StringVar(&f.unixSocketDir, "unix-socket", "", "listen on a socket file (mode 0600) in this existing directory instead of on TCP: DIR/.s.PGSQL.<port> for PostgreSQL, DIR/mongodb-<port>.sock for MongoDB")
	fl.BoolVar(&f.allowOtherUsers, "allow-other-local-users", false, "DANGEROUS: let every OS user of this machine use the proxy (what they run is recorded as yours)")
	fl.StringVar(&f.mfaCode, "mfa-code", "", "for an account that requires MFA: the code (TOTP, or a recovery code) instead of a prompt")
	fl.DurationVar(&f.checkEvery, "check-interval", 30*time.Second, "how often to check that the session and your login are still valid")
	_ = fl.MarkHidden("check-interval")
	for _, name := range []string{"resource", "account", "project-id"} {
		_ = access.MarkFlagRequired(name)
	}
	cmd.AddCommand(access)
	return cmd
}

// access runs a session until it ends.
func (o *options) access(ctx context.Context, c *client, f accessFlags) error {
	if f.unixSocketDir == "" && !tcpPeerCheckSupported && !f.allowOtherUsers {
		return errors.New("on this system airlock cannot tell which OS user opens a TCP connection, so another user of this machine could use your session: " +
			"use --unix-socket DIR (psql, libpq and pgx connect through it), or accept the risk with --allow-other-local-users")
	}
	if f.unixSocketDir != "" && !unixPeerCheckSupported && !f.allowOtherUsers {
		return errors.New("on this system airlock cannot tell which OS user opens a unix socket connection: accept the risk with --allow-other-local-users")
	}
	if f.unixSocketDir != "" {
		fi, err := os.Stat(f.unixSocketDir)
		if err != nil || !fi.IsDir() {
			return fmt.Errorf("--unix-socket %s must be an existing directory: the socket file is created in it", f.unixSocketDir)
		}
	}
	key, csrPEM, err := pki.NewKeyAndCSR("airlock cli")
	if err != nil {
		return err
	}
	// Listen on TCP before creating the session, so a busy port costs
	// nothing. A socket file's name depends on the kind of resource, which
	// the session tells.
	var ln net.Listener
	var choice *portChoice
	portFor := portKey{Domain: c.base, ProjectID: f.projectID, Resource: f.resource, Account: f.account}
	if f.unixSocketDir == "" {
		remembered, err := loadPorts()
		if err != nil {
			fmt.Fprintf(o.stderr, "Warning: %v\n", err)
		}
		if choice, err = listenTCP(portFor, f.port, remembered); err != nil {
			return err
		}
		ln = choice.ln
		defer ln.Close()
	}

	var cs session.Created
	body := session.SessionInput{Resource: f.resource, Account: f.account, Duration: f.duration, CSR: string(csrPEM)}
	err = o.withMFA(ctx, c, f.mfaCode, func(mfaChallengeID string) error {
		if mfaChallengeID != "" {
			body.MFAChallengeID = mfaChallengeID
		}
		return c.do(ctx, http.MethodPost, "/api/v1/projects/"+url.PathEscape(f.projectID)+"/sessions", nil, body, &cs)
	})
	if err != nil {
		// The server's answer does not repeat what was asked for; the
		// user's own terminal may.
		return fmt.Errorf("starting a session on account %s of resource %s: %w", f.account, f.resource, err)
	}
	if cs.Session == nil {
		return errors.New("the server's answer holds no session")
	}
	p := &proxy{
		o: o, c: c, id: cs.Session.ID, kind: cs.Session.ResourceKind,
		owner: uint32(os.Getuid()), checkOwner: !f.allowOtherUsers, checkEvery: f.checkEvery,
		conns: map[net.Conn]bool{},
	}
	p.ownerLabel = userLabel(p.owner)
	socketPort := f.port
	if f.unixSocketDir != "" {
		if socketPort == 0 {
			socketPort = 5432
			if p.kind == "mongodb" {
				socketPort = 27017
			}
		}
		path := filepath.Join(f.unixSocketDir, socketName(p.kind, socketPort))
		if ln, err = listenUnix(path); err != nil {
			p.end(context.WithoutCancel(ctx))
			return err
		}
		defer func() {
			ln.Close()
			os.Remove(path)
		}()
	}
	p.ln = ln
	block, _ := pem.Decode([]byte(cs.ClientCertificate))
	if block == nil {
		p.end(context.WithoutCancel(ctx))
		return errors.New("the server sent no client certificate")
	}
	leaf, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		p.end(context.WithoutCancel(ctx))
		return fmt.Errorf("the server sent a client certificate that cannot be read: %w", err)
	}
	caPool, err := pki.PoolFromPEM([]byte(cs.CACertificate))
	if err != nil {
		p.end(context.WithoutCancel(ctx))
		return err
	}
	p.tls = &tls.Config{
		Certificates:       []tls.Certificate{{Certificate: [][]byte{block.Bytes}, PrivateKey: key, Leaf: leaf}},
		RootCAs:            caPool,
		ServerName:         cs.GatewayServerName,
		MinVersion:         tls.VersionTLS13,
		ClientSessionCache: tls.NewLRUClientSessionCache(64),
	}
	if err := p.connect(ctx); err != nil {
		p.end(context.WithoutCancel(ctx))
		return err
	}
	if f.allowOtherUsers {
		fmt.Fprintln(o.stderr, "Warning: --allow-other-local-users is set: every OS user of this machine can use this session through the proxy, and what they run is recorded as yours.")
	}
	if f.unixSocketDir != "" {
		o.printAccessUnix(cs, f.unixSocketDir, socketPort, p.checkOwner)
		return p.run(ctx, cs.Session.ExpiresAt)
	}
	out := tcpAccess{port: choice.port, portReason: choice.reason}
	// TLS for clients that insist on it: a certificate made for this
	// session, whose CA certificate (public) is written for clients that
	// verify it. Clients that do not ask for TLS are served plain.
	lt, err := newLocalTLS(p.kind, time.Now(), cs.Session.ExpiresAt.Add(time.Hour))
	if err != nil {
		p.end(context.WithoutCancel(ctx))
		return fmt.Errorf("making the local proxy's TLS certificate: %w", err)
	}
	p.localTLS = lt.config
	if out.caFile, err = proxyCAPath(choice.port); err == nil {
		err = writeFileAtomic(out.caFile, lt.caPEM, 0o644)
	}
	if err != nil {
		out.caErr = err
		out.caFile = ""
	} else {
		p.caFile = out.caFile
		// Removed before the listener closes (defers run last first), so
		// that it never removes the file of a later `db access` on the
		// same port.
		defer os.Remove(out.caFile)
	}
	if choice.remember {
		if err := rememberPort(ctx, portFor, choice.port, time.Now()); err != nil {
			fmt.Fprintf(o.stderr, "Warning: this port is not remembered for the next session: %v\n", err)
		}
	}
	o.printAccess(cs, out, p.checkOwner)
	return p.run(ctx, cs.Session.ExpiresAt)
}

// tcpAccess is what `db access` says about its TCP listener.
type tcpAccess struct {
	port       int
	portReason string // why this port: see listenTCP
	caFile     string // the session CA certificate's file, or ""
	caErr      error  // why caFile could not be written
}

// socketName is the file name clients look for in a socket directory.
func socketName(kind string, port int) string {
	if kind == "mongodb" {
		return fmt.Sprintf("mongodb-%d.sock", port)
	}
	return fmt.Sprintf(".s.PGSQL.%d", port)
}

// listenUnix listens on a socket file at path with mode 0600. The socket is
// bound in a new private directory (mode 0700) beside path, given mode 0600
// there, then renamed to path: no other user can connect to it at any
// moment, and the process umask is left alone. A stale socket file left by a
// crashed process is replaced; a live one is an error.
func listenUnix(path string) (net.Listener, error) {
	if c, err := net.DialTimeout("unix", path, time.Second); err == nil {
		c.Close()
		return nil, fmt.Errorf("another process listens on %s: end it, or pick another --port or --unix-socket directory", path)
	}
	if fi, err := os.Lstat(path); err == nil {
		if fi.Mode()&os.ModeSocket == 0 {
			return nil, fmt.Errorf("%s exists and is not a socket: remove it, or pick another --port or --unix-socket directory", path)
		}
		if err := os.Remove(path); err != nil {
			return nil, fmt.Errorf("removing the stale socket %s: %w", path, err)
		}
	}
	tmpDir, err := os.MkdirTemp(filepath.Dir(path), ".airlock-")
	if err != nil {
		return nil, fmt.Errorf("cannot create the socket in %s: %w", filepath.Dir(path), err)
	}
	defer os.RemoveAll(tmpDir)
	tmp := filepath.Join(tmpDir, "s")
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: tmp, Net: "unix"})
	if err != nil {
		return nil, fmt.Errorf("cannot listen on a socket in %s: %w", filepath.Dir(path), err)
	}
	ln.SetUnlinkOnClose(false)
	if err := os.Chmod(tmp, 0o600); err != nil {
		ln.Close()
		return nil, fmt.Errorf("setting the mode of the socket: %w", err)
	}
	if err := os.Rename(tmp, path); err != nil {
		ln.Close()
		return nil, fmt.Errorf("cannot create the socket %s: %w", path, err)
	}
	return ln, nil
}

func (o *options) printAccess(cs session.Created, a tcpAccess, ownerOnly bool) {
	s := cs.Session
	port := a.port
	fmt.Fprintf(o.stdout, "Session %s started: account %s on %s, until %s (%s).\n",
		s.ID, s.AccountName, s.ResourceName, fmtTime(s.ExpiresAt), time.Until(s.ExpiresAt).Round(time.Second))
	fmt.Fprintf(o.stdout, "Listening on %s.\n\n", a.portReason)
	switch s.ResourceKind {
	case "mongodb":
		u := fmt.Sprintf("mongodb://127.0.0.1:%d/?directConnection=true", port)
		fmt.Fprintf(o.stdout, "%s\n\n", u)
		fmt.Fprintf(o.stdout, "mongosh:  mongosh \"%s\"\n", u)
		fmt.Fprintf(o.stdout, "Compass:  paste the URL above; no authentication.\n")
		if a.caFile != "" {
			fmt.Fprintf(o.stdout, "TLS:      %s&tls=true&tlsCAFile=%s\n", u, uriPathEscape(a.caFile))
			fmt.Fprintf(o.stdout, "          (Compass: TLS on, CA file %s)\n", a.caFile)
		}
	default:
		base := fmt.Sprintf("postgres://%s@127.0.0.1:%d/%s", url.PathEscape(cs.Username), port, url.PathEscape(cs.Database))
		u := base + "?sslmode=disable"
		fmt.Fprintf(o.stdout, "%s\n\n", u)
		fmt.Fprintf(o.stdout, "psql:         psql \"%s\"\n", u)
		fmt.Fprintf(o.stdout, "GUI clients:  host 127.0.0.1, port %d, user %s, database %s, empty password, SSL disabled\n",
			port, cs.Username, cs.Database)
		if a.caFile != "" {
			fmt.Fprintf(o.stdout, "TLS:          %s?sslmode=verify-full&sslrootcert=%s\n", base, uriPathEscape(a.caFile))
			fmt.Fprintf(o.stdout, "              (sslmode=require works too; to verify, the CA certificate is %s)\n", a.caFile)
		}
	}
	if a.caErr != nil {
		fmt.Fprintf(o.stdout, "TLS:          clients may use TLS without verifying it (sslmode=require, tls=true&tlsInsecure=true); the CA certificate could not be written: %v\n", a.caErr)
	}
	o.printAccessEnd(ownerOnly)
}

func (o *options) printAccessUnix(cs session.Created, dir string, port int, ownerOnly bool) {
	s := cs.Session
	abs, err := filepath.Abs(dir)
	if err == nil {
		dir = abs
	}
	fmt.Fprintf(o.stdout, "Session %s started: account %s on %s, until %s (%s).\n\n",
		s.ID, s.AccountName, s.ResourceName, fmtTime(s.ExpiresAt), time.Until(s.ExpiresAt).Round(time.Second))
	switch s.ResourceKind {
	case "mongodb":
		u := fmt.Sprintf("mongodb://%s/?directConnection=true", url.PathEscape(filepath.Join(dir, socketName(s.ResourceKind, port))))
		fmt.Fprintf(o.stdout, "%s\n\n", u)
		fmt.Fprintf(o.stdout, "mongosh:  mongosh \"%s\"\n", u)
	default:
		kv := fmt.Sprintf("host=%s port=%d user=%s dbname=%s", pgQuote(dir), port, pgQuote(cs.Username), pgQuote(cs.Database))
		fmt.Fprintf(o.stdout, "%s\n\n", kv)
		fmt.Fprintf(o.stdout, "psql:    psql \"%s\"\n", kv)
		fmt.Fprintf(o.stdout, "socket:  %s\n", filepath.Join(dir, socketName(s.ResourceKind, port)))
	}
	o.printAccessEnd(ownerOnly)
}

func (o *options) printAccessEnd(ownerOnly bool) {
	if ownerOnly {
		fmt.Fprintf(o.stdout, "\nOnly your OS user, %s, can connect.", userLabel(uint32(os.Getuid())))
	}
	fmt.Fprintf(o.stdout, "\nPress Ctrl+C to end the session.\n")
}

// pgQuote quotes a libpq keyword value when it needs it.
func pgQuote(v string) string {
	if v != "" && !strings.ContainsAny(v, " '\\\"") {
		return v
	}
	return "'" + strings.NewReplacer(`\`, `\\`, `'`, `\'`).Replace(v) + "'"
}

// proxy carries local connections through the relay to the gateway.
type proxy struct {
	o          *options
	c          *client
	id         string
	kind       string // "postgres" or "mongodb"
	ln         net.Listener
	tls        *tls.Config
	owner      uint32 // the OS user who may connect
	ownerLabel string
	checkOwner bool          // false with --allow-other-local-users
	checkEvery time.Duration // how often the session and login are checked
	localTLS   *tls.Config   // TLS for local clients that ask for it (TCP only), or nil
	caFile     string        // the file of localTLS's CA certificate, or ""

	mu       sync.Mutex
	mux      *tunnel.Mux
	conns    map[net.Conn]bool
	hintedAt time.Time // when a client's distrust of localTLS was last explained
}

// connect opens the session's relay connection. A relay that refuses the
// access token (revoked, or expired between the check and the dial) gets
// one more try after a forced refresh.
func (p *proxy) connect(ctx context.Context) error {
	var serverTLS *tls.Config
	if tr, ok := p.c.http.Transport.(*http.Transport); ok {
		serverTLS = tr.TLSClientConfig
	}
	var conn net.Conn
	for attempt := 0; ; attempt++ {
		if err := p.c.refreshIfNeeded(ctx, attempt > 0); err != nil {
			return err
		}
		hdr := http.Header{"Authorization": {"Bearer " + p.c.token()}}
		var err error
		conn, err = tunnel.Dial(ctx, p.c.base, "/api/v1/relay/sessions/"+url.PathEscape(p.id), hdr, serverTLS)
		var refused *tunnel.RefusedError
		if attempt == 0 && errors.As(err, &refused) && refused.Status == http.StatusUnauthorized {
			continue
		}
		if err != nil {
			return err
		}
		break
	}
	mux, err := tunnel.MuxClient(conn)
	if err != nil {
		conn.Close()
		return err
	}
	p.mu.Lock()
	p.mux = mux
	p.mu.Unlock()
	return nil
}

// errSessionGone says that the session is no longer active (or no longer
// visible to its owner): explainEnd says why.
var errSessionGone = errors.New("session gone")

// endGrace is how long db access waits, at its session's expiry, for the
// server to end the session (and the gateway to cancel what runs and tell
// the clients why) before it closes the local connections itself.
const endGrace = 5 * time.Second

// run serves local connections until the session ends, the login is
// revoked, or ctx ends (Ctrl+C), and says which.
func (p *proxy) run(ctx context.Context, expires time.Time) error {
	go p.accept()
	expiry := time.NewTimer(time.Until(expires))
	defer expiry.Stop()
	check := time.NewTicker(p.checkEvery)
	defer check.Stop()
	for {
		p.mu.Lock()
		closed := p.mux.CloseChan()
		p.mu.Unlock()
		var err error
		select {
		case <-ctx.Done():
			return p.stop(ctx)
		case <-expiry.C:
			// The gateway ends the session at its expiry: it cancels what
			// runs and tells each client why. Closing the local connections
			// first would cut them before that, so wait a moment for the
			// server to close the relay.
			select {
			case <-closed:
			case <-time.After(endGrace):
			}
			p.closeAll()
			fmt.Fprintf(p.o.stdout, "The session expired at %s; its connections are closed. Start a new one with `airlock db access`.\n", fmtTime(expires))
			return nil
		case <-check.C:
			// The server closes the relay when it ends the session; this
			// also notices a revoked login while nothing else calls the API.
			err = p.check(ctx)
		case <-closed:
			// The server closed the relay: find out why, or reconnect.
			err = p.reconnect(ctx, expires)
		}
		switch {
		case err == nil:
		case errors.Is(err, errLoginGone):
			p.closeAll()
			p.end(context.WithoutCancel(ctx)) // if the server still takes it
			return fmt.Errorf("%w; the session's connections are closed", err)
		case errors.Is(err, errSessionGone):
			p.closeAll()
			return p.explainEnd(ctx, expires)
		case ctx.Err() != nil:
			return p.stop(ctx) // Ctrl+C during a reconnect
		default:
			p.closeAll()
			return err
		}
	}
}

// stop ends the session at the user's request (Ctrl+C).
func (p *proxy) stop(ctx context.Context) error {
	// End the session on the server first: its gateway cancels what runs
	// in the database and tells each client why before the relay closes.
	// Closing the local connections first would leave a running statement
	// to finish, and commit, after the session ended.
	p.end(context.WithoutCancel(ctx))
	p.closeAll()
	fmt.Fprintln(p.o.stdout, "Session ended.")
	return nil
}

// check asks the server whether the session is still active. A network
// error is not an answer: the relay connection handles an outage.
func (p *proxy) check(ctx context.Context) error {
	var s session.Session
	err := p.c.do(ctx, http.MethodGet, "/api/v1/sessions/"+url.PathEscape(p.id), nil, nil, &s)
	switch {
	case errors.Is(err, errLoginGone):
		return err
	case isStatus(err, http.StatusNotFound, http.StatusForbidden):
		return errSessionGone
	case err != nil:
		slog.Debug("checking the session failed", "err", err)
		return nil
	case s.Status != "active":
		return errSessionGone
	}
	return nil
}

// isStatus reports whether err is an API error with one of the statuses.
func isStatus(err error, statuses ...int) bool {
	var ae *apiError
	if !errors.As(err, &ae) {
		return false
	}
	for _, s := range statuses {
		if ae.Status == s {
			return true
		}
	}
	return false
}

// reconnect brings the relay connection back, with backoff, until the
// session expires. An unreachable server is retried (new local connections
// are refused meanwhile with an error that says so); an ended session or a
// revoked login stops it. Failing calls do not spend the refresh token: a
// refresh that does not reach the server changes nothing.
//
// An outage is told in two lines: one when the first attempt fails, one
// when the relay is back. Each failed attempt's error is logged at debug
// level (--log-level debug).
func (p *proxy) reconnect(ctx context.Context, expires time.Time) error {
	const maxBackoff = 5 * time.Second
	backoff := 250 * time.Millisecond
	lost := time.Now()
	warned := false
	for time.Now().Before(expires) {
		var s session.Session
		err := p.c.do(ctx, http.MethodGet, "/api/v1/sessions/"+url.PathEscape(p.id), nil, nil, &s)
		switch {
		case errors.Is(err, errLoginGone):
			return err
		case isStatus(err, http.StatusNotFound, http.StatusForbidden):
			return errSessionGone
		case err == nil && s.Status != "active":
			return errSessionGone
		case err == nil:
			if err = p.connect(ctx); err == nil {
				if warned {
					fmt.Fprintf(p.o.stderr, "airlock: connected again after %s; new connections are served again.\n",
						time.Since(lost).Round(time.Second))
				}
				return nil
			}
			var refused *tunnel.RefusedError
			if errors.As(err, &refused) && (refused.Status == http.StatusConflict || refused.Status == http.StatusNotFound || refused.Status == http.StatusForbidden) {
				return errSessionGone
			}
			if errors.Is(err, errLoginGone) {
				return err
			}
		}
		slog.Debug("reconnecting to the relay failed", "err", err)
		if !warned {
			fmt.Fprintf(p.o.stderr, "airlock: lost the connection to the Airlock server at %s; reconnecting until the session expires at %s (new connections are refused until then)...\n",
				p.c.base, fmtTime(expires))
			warned = true
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(backoff):
		}
		backoff = min(backoff*2, maxBackoff)
	}
	return errSessionGone
}

// explainEnd says why the server ended the session. The server may close the
// relay at expiry a moment before it records the reason, so a session past
// its end (with a second of clock skew) counts as expired. Only expiry is a
// normal end (exit 0).
func (p *proxy) explainEnd(ctx context.Context, expires time.Time) error {
	var s session.Session
	err := p.c.do(context.WithoutCancel(ctx), http.MethodGet, "/api/v1/sessions/"+url.PathEscape(p.id), nil, nil, &s)
	if err == nil && s.Status == "active" && time.Now().Before(expires) {
		// Seen as gone a moment ago (the relay refused it): say so plainly.
		return errors.New("the server no longer accepts this session; its connections are closed: start a new one with `airlock db access`")
	}
	if (err == nil && s.EndReason == "expired") || ((err != nil || s.EndReason == "") && time.Now().After(expires.Add(-time.Second))) {
		fmt.Fprintf(p.o.stdout, "The session expired at %s; its connections are closed. Start a new one with `airlock db access`.\n", fmtTime(expires))
		return nil
	}
	if errors.Is(err, errLoginGone) {
		return fmt.Errorf("%w; the session's connections are closed", err)
	}
	if err != nil {
		return errors.New("the session is no longer available to you (it ended, or your access to its project was removed); its connections are closed")
	}
	return errors.New(endExplanation(s))
}

// endExplanation says in words why a session ended, for its owner's
// `db access`: endedInWords, and what to do next.
func endExplanation(s session.Session) string {
	next := ""
	switch s.EndReason {
	case tunnel.EndByUser:
		next = " (Ctrl+C or `airlock sessions end` elsewhere)"
	case tunnel.EndExpired, tunnel.EndClientLost:
		next = ": start a new one with `airlock db access`"
	case tunnel.EndGatewayLost, tunnel.EndGatewayStop:
		next = ": check `airlock gateways list`, then start a new one"
	}
	return "the session " + endedInWords(s) + "; its connections are closed" + next
}

func (p *proxy) accept() {
	for {
		local, err := p.ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			slog.Warn("accepting a local connection failed", "err", err)
			time.Sleep(100 * time.Millisecond) // e.g. out of file descriptors
			continue
		}
		go p.handle(local)
	}
}

// handle serves one local connection, after checking that its owner is
// the user who started the proxy. The check comes first, on the TCP or
// unix connection itself, before anything is read from it; then the
// client's opening (TLS if it asks for it) is answered here, so that a
// refused client, too, reads why in its own protocol. A refused connection
// never reaches the server.
func (p *proxy) handle(local net.Conn) {
	p.mu.Lock()
	p.conns[local] = true
	p.mu.Unlock()
	defer func() {
		p.mu.Lock()
		delete(p.conns, local)
		p.mu.Unlock()
		local.Close()
	}()
	var refused *refusal
	if p.checkOwner {
		uid, err := peerUID(local)
		if err != nil || uid != p.owner {
			who := "an OS user airlock could not identify"
			if err == nil {
				who = userLabel(uid)
			}
			fmt.Fprintf(p.o.stderr, "Warning: refused a connection from %s: this proxy serves only %s.\n", who, p.ownerLabel)
			if err != nil {
				slog.Warn("the owner of a local connection is unknown", "err", err)
			}
			r := refuseOtherUser(p.ownerLabel, who)
			refused = &r
		}
	}
	_ = local.SetDeadline(time.Now().Add(localHandshakeTimeout))
	conn, head, err := negotiate(local, p.kind, p.localTLS)
	if err != nil {
		p.negotiationFailed(err)
		return
	}
	_ = local.SetDeadline(time.Time{})
	if refused != nil {
		p.refuseAndClose(withHead(conn, head), *refused)
		return
	}
	p.serve(conn, head)
}

// certHintEvery is how often db access explains, at most, that a client
// does not trust the proxy's certificate (a GUI client may retry often).
const certHintEvery = time.Minute

// negotiationFailed reports a local client's failed opening: that it does
// not trust the proxy's TLS certificate (with the fix), else at debug
// level only (a port scan, a client that gave up).
func (p *proxy) negotiationFailed(err error) {
	var he *handshakeError
	if !errors.As(err, &he) || !he.clientRejectedCert() || p.caFile == "" {
		slog.Debug("a local connection closed before its startup message", "err", err)
		return
	}
	p.mu.Lock()
	hint := time.Since(p.hintedAt) >= certHintEvery
	if hint {
		p.hintedAt = time.Now()
	}
	p.mu.Unlock()
	slog.Debug("a local client refused the proxy's TLS certificate", "err", err)
	if hint {
		fmt.Fprintf(p.o.stderr, "airlock: a client does not trust this proxy's TLS certificate: give it the CA certificate %s "+
			"(PostgreSQL: sslrootcert=%s with sslmode=verify-full; MongoDB: tlsCAFile=%s), or connect with sslmode=require or without TLS.\n",
			p.caFile, p.caFile, p.caFile)
	}
}

// refuseAndClose tells the client why it is refused, then closes it.
func (p *proxy) refuseAndClose(local net.Conn, r refusal) {
	if err := refuse(local, p.kind, r); err != nil {
		slog.Debug("telling a refused client why failed", "err", err)
	}
	local.Close()
}

// serve carries a local connection (plain or TLS, with head, the bytes
// of its first message read already) through the relay to the gateway.
func (p *proxy) serve(local net.Conn, head []byte) {
	p.mu.Lock()
	mux := p.mux
	p.mu.Unlock()
	if mux == nil || mux.IsClosed() {
		p.refuseAndClose(withHead(local, head), refuseUnavailable("airlock db access lost its connection to the Airlock server and is reconnecting: try again in a moment"))
		return
	}
	st, err := mux.OpenStream()
	if err != nil {
		slog.Debug("cannot open a connection through the relay", "err", err)
		p.refuseAndClose(withHead(local, head), refuseUnavailable("airlock db access lost its connection to the Airlock server and is reconnecting: try again in a moment"))
		return
	}
	tc := tls.Client(st, p.tls)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	err = tc.HandshakeContext(ctx)
	cancel()
	if err != nil {
		st.Close()
		slog.Warn("the gateway refused the connection", "err", err)
		why := "the session's gateway refused the connection: see the output of airlock db access"
		if errors.Is(err, context.DeadlineExceeded) {
			why = "neither the Airlock server nor the session's gateway answered within 20 seconds: try again in a moment"
		}
		p.refuseAndClose(withHead(local, head), refuseUnavailable(why))
		return
	}
	if len(head) > 0 {
		if _, err := tc.Write(head); err != nil {
			tc.Close()
			slog.Debug("passing a client's first bytes to the gateway failed", "err", err)
			return
		}
	}
	tunnel.Splice(local, tc)
}

func (p *proxy) closeAll() {
	p.ln.Close()
	p.mu.Lock()
	for c := range p.conns {
		c.Close()
	}
	if p.mux != nil {
		p.mux.Close()
	}
	p.mu.Unlock()
}

// end asks the server to end the session (best effort: the session may
// have ended already, or the login may be gone).
func (p *proxy) end(ctx context.Context) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := p.c.do(ctx, http.MethodPost, "/api/v1/sessions/"+url.PathEscape(p.id)+"/end", nil, nil, nil); err != nil {
		if errors.Is(err, errLoginGone) || isStatus(err, http.StatusConflict, http.StatusNotFound) {
			return
		}
		fmt.Fprintf(p.o.stderr, "Warning: ending the session on the server failed: %v\n", err)
	}
}
