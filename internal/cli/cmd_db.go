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
	"sync"
	"time"

	"github.com/spf13/cobra"

	"github.com/airlockpam/airlock/internal/pki"
	"github.com/airlockpam/airlock/internal/tunnel"
)

type sessionInfo struct {
	ID              string     `json:"id"`
	ProjectID       string     `json:"projectId"`
	UserName        string     `json:"userName"`
	ResourceName    string     `json:"resourceName"`
	ResourceKind    string     `json:"resourceKind"`
	AccountName     string     `json:"accountName"`
	AccountUsername string     `json:"accountUsername"`
	CreatedAt       time.Time  `json:"createdAt"`
	StartedAt       *time.Time `json:"startedAt,omitempty"`
	ExpiresAt       time.Time  `json:"expiresAt"`
	EndedAt         *time.Time `json:"endedAt,omitempty"`
	Duration        string     `json:"duration"`
	Status          string     `json:"status"`
	EndReason       string     `json:"endReason,omitempty"`
}

type createdSession struct {
	Session           sessionInfo `json:"session"`
	ClientCertificate string      `json:"clientCertificate"`
	CACertificate     string      `json:"caCertificate"`
	GatewayServerName string      `json:"gatewayServerName"`
	Username          string      `json:"username"`
	Database          string      `json:"database"`
}

func newDBCommand(o *options) *cobra.Command {
	cmd := &cobra.Command{Use: "db", Short: "Access databases"}
	var resource, account, projectID, duration, domain string
	var port int
	access := &cobra.Command{
		Use:   "access",
		Short: "Open a local proxy to a database account for a while, without its password",
		Long: `Start a time-boxed session on an account and open a local proxy to it.

The proxy listens on 127.0.0.1 and prints a connection URL without a password;
psql, pgAdmin, DBeaver or any driver connect to it, as many connections as they
like, until the session expires or you press Ctrl+C. The credentials are
injected by the gateway; they never reach this machine.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := loggedInClient()
			if err != nil {
				return err
			}
			if domain != "" {
				want, err := normalizeDomain(domain)
				if err != nil {
					return err
				}
				if want != c.base {
					return fmt.Errorf("you are logged in to %s, not %s: run `airlock login --domain %s` first", c.base, want, want)
				}
			}
			if port < 0 || port > 65535 {
				return fmt.Errorf("--port %d is not a port number (1-65535, or 0 for a free one)", port)
			}
			return o.access(cmd.Context(), c, projectID, resource, account, duration, port)
		},
	}
	fl := access.Flags()
	fl.StringVar(&resource, "resource", "", "resource name")
	fl.StringVar(&account, "account", "", "account name")
	fl.StringVar(&projectID, "project-id", "", "the project's id")
	fl.StringVar(&duration, "duration", "1h", "how long the session lasts, e.g. 30m, 1h, 2h30m")
	fl.StringVar(&domain, "domain", "", "the Airlock server (default: the one you logged in to)")
	fl.IntVar(&port, "port", 0, "local port to listen on (default: a free one)")
	for _, f := range []string{"resource", "account", "project-id"} {
		_ = access.MarkFlagRequired(f)
	}
	cmd.AddCommand(access)
	return cmd
}

// access runs a session until it ends.
func (o *options) access(ctx context.Context, c *client, projectID, resource, account, duration string, port int) error {
	key, csrPEM, err := pki.NewKeyAndCSR("airlock cli")
	if err != nil {
		return err
	}
	// Listen before creating the session, so a busy port costs nothing.
	ln, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", port))
	if err != nil {
		return fmt.Errorf("cannot listen on 127.0.0.1:%d (is it in use? pick another with --port, or omit it): %w", port, err)
	}
	defer ln.Close()

	var cs createdSession
	body := map[string]string{"resource": resource, "account": account, "duration": duration, "csr": string(csrPEM)}
	if err := c.do(ctx, http.MethodPost, "/api/v1/projects/"+url.PathEscape(projectID)+"/sessions", nil, body, &cs); err != nil {
		return err
	}
	block, _ := pem.Decode([]byte(cs.ClientCertificate))
	if block == nil {
		return errors.New("the server sent no client certificate")
	}
	leaf, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		return err
	}
	caPool, err := pki.PoolFromPEM([]byte(cs.CACertificate))
	if err != nil {
		return err
	}
	p := &proxy{
		o: o, c: c, id: cs.Session.ID, ln: ln,
		tls: &tls.Config{
			Certificates:       []tls.Certificate{{Certificate: [][]byte{block.Bytes}, PrivateKey: key, Leaf: leaf}},
			RootCAs:            caPool,
			ServerName:         cs.GatewayServerName,
			MinVersion:         tls.VersionTLS13,
			ClientSessionCache: tls.NewLRUClientSessionCache(64),
		},
		conns: map[net.Conn]bool{},
	}
	if err := p.connect(ctx); err != nil {
		p.end(context.WithoutCancel(ctx))
		return err
	}
	o.printAccess(cs, ln.Addr().(*net.TCPAddr).Port)
	return p.run(ctx, cs.Session.ExpiresAt)
}

func (o *options) printAccess(cs createdSession, port int) {
	s := cs.Session
	fmt.Fprintf(o.stdout, "Session %s started: account %s on %s, until %s (%s).\n\n",
		s.ID, s.AccountName, s.ResourceName, fmtTime(s.ExpiresAt), time.Until(s.ExpiresAt).Round(time.Second))
	switch s.ResourceKind {
	case "mongodb":
		fmt.Fprintf(o.stdout, "mongodb://127.0.0.1:%d/?directConnection=true\n\n", port)
		fmt.Fprintf(o.stdout, "mongosh:  mongosh \"mongodb://127.0.0.1:%d/?directConnection=true\"\n", port)
		fmt.Fprintf(o.stdout, "Compass:  paste the URL above; no authentication.\n")
	default:
		u := fmt.Sprintf("postgres://%s@127.0.0.1:%d/%s?sslmode=disable", url.PathEscape(cs.Username), port, url.PathEscape(cs.Database))
		fmt.Fprintf(o.stdout, "%s\n\n", u)
		fmt.Fprintf(o.stdout, "psql:         psql \"%s\"\n", u)
		fmt.Fprintf(o.stdout, "GUI clients:  host 127.0.0.1, port %d, user %s, database %s, empty password, SSL disabled\n",
			port, cs.Username, cs.Database)
	}
	fmt.Fprintf(o.stdout, "\nPress Ctrl+C to end the session.\n")
}

// proxy carries local connections through the relay to the gateway.
type proxy struct {
	o   *options
	c   *client
	id  string
	ln  net.Listener
	tls *tls.Config

	mu    sync.Mutex
	mux   *tunnel.Mux
	conns map[net.Conn]bool
}

// connect opens the session's relay connection.
func (p *proxy) connect(ctx context.Context) error {
	if err := p.c.refreshIfNeeded(ctx, false); err != nil {
		return err
	}
	var serverTLS *tls.Config
	if tr, ok := p.c.http.Transport.(*http.Transport); ok {
		serverTLS = tr.TLSClientConfig
	}
	hdr := http.Header{"Authorization": {"Bearer " + p.c.creds.AccessToken}}
	conn, err := tunnel.Dial(ctx, p.c.base, "/api/v1/relay/sessions/"+url.PathEscape(p.id), hdr, serverTLS)
	if err != nil {
		return err
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

var errSessionGone = errors.New("session gone")

// run serves local connections until the session ends.
func (p *proxy) run(ctx context.Context, expires time.Time) error {
	go p.accept()
	expiry := time.NewTimer(time.Until(expires))
	defer expiry.Stop()
	for {
		p.mu.Lock()
		closed := p.mux.CloseChan()
		p.mu.Unlock()
		select {
		case <-ctx.Done():
			p.closeAll()
			p.end(context.WithoutCancel(ctx))
			fmt.Fprintln(p.o.stdout, "Session ended.")
			return nil
		case <-expiry.C:
			p.closeAll()
			fmt.Fprintf(p.o.stdout, "The session expired at %s; its connections are closed. Start a new one with `airlock db access`.\n", fmtTime(expires))
			return nil
		case <-closed:
			// The server closed the relay: find out why, or reconnect.
			if err := p.reconnect(ctx, expires); err != nil {
				p.closeAll()
				if errors.Is(err, errSessionGone) {
					return p.explainEnd(ctx, expires)
				}
				return err
			}
		}
	}
}

func (p *proxy) reconnect(ctx context.Context, expires time.Time) error {
	backoff := 500 * time.Millisecond
	for time.Now().Before(expires) {
		var s sessionInfo
		err := p.c.do(ctx, http.MethodGet, "/api/v1/sessions/"+url.PathEscape(p.id), nil, nil, &s)
		if err == nil && s.Status != "active" {
			return errSessionGone
		}
		if err == nil {
			if err = p.connect(ctx); err == nil {
				slog.Info("reconnected to the relay")
				return nil
			}
			var refused *tunnel.RefusedError
			if errors.As(err, &refused) && refused.Status == http.StatusConflict {
				return errSessionGone
			}
		}
		slog.Warn("the relay connection was lost; reconnecting", "err", err)
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(backoff):
		}
		backoff = min(backoff*2, 10*time.Second)
	}
	return errSessionGone
}

// explainEnd says why the server ended the session. The server may close the
// relay at expiry a moment before it records the reason, so a session past
// its end (with a second of clock skew) counts as expired.
func (p *proxy) explainEnd(ctx context.Context, expires time.Time) error {
	var s sessionInfo
	err := p.c.do(context.WithoutCancel(ctx), http.MethodGet, "/api/v1/sessions/"+url.PathEscape(p.id), nil, nil, &s)
	switch {
	case err == nil && s.EndReason == "terminated":
		return fmt.Errorf("the session was terminated by an administrator at %s; its connections are closed", fmtTime(*s.EndedAt))
	case err == nil && s.EndReason == "ended_by_user":
		return errors.New("the session was ended from another place; its connections are closed")
	case (err == nil && s.EndReason == "expired") || time.Now().After(expires.Add(-time.Second)):
		fmt.Fprintf(p.o.stdout, "The session expired at %s; its connections are closed. Start a new one with `airlock db access`.\n", fmtTime(expires))
		return nil
	}
	return errors.New("the session has ended; its connections are closed")
}

func (p *proxy) accept() {
	for {
		local, err := p.ln.Accept()
		if err != nil {
			return
		}
		go p.serve(local)
	}
}

func (p *proxy) serve(local net.Conn) {
	p.mu.Lock()
	mux := p.mux
	p.conns[local] = true
	p.mu.Unlock()
	defer func() {
		p.mu.Lock()
		delete(p.conns, local)
		p.mu.Unlock()
		local.Close()
	}()
	st, err := mux.OpenStream()
	if err != nil {
		slog.Warn("cannot open a connection through the relay", "err", err)
		return
	}
	tc := tls.Client(st, p.tls)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	err = tc.HandshakeContext(ctx)
	cancel()
	if err != nil {
		st.Close()
		slog.Warn("the gateway refused the connection", "err", err)
		return
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

func (p *proxy) end(ctx context.Context) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := p.c.do(ctx, http.MethodPost, "/api/v1/sessions/"+url.PathEscape(p.id)+"/end", nil, nil, nil); err != nil {
		var ae *apiError
		if !errors.As(err, &ae) || ae.Status != http.StatusConflict {
			fmt.Fprintf(os.Stderr, "Warning: ending the session on the server failed: %v\n", err)
		}
	}
}
