package postgres

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/airlockpam/airlock/internal/proxy/common"
	"github.com/airlockpam/airlock/internal/tunnel"
)

// DefaultPort is the port used when Config.Port is zero.
const DefaultPort = 5432

// DefaultConnectTimeout bounds one upstream connection attempt (TCP, TLS and
// authentication together) when Config.ConnectTimeout is zero.
const DefaultConnectTimeout = 10 * time.Second

// keepAlive is the TCP keep-alive period of upstream connections, so that a
// database host that vanishes is noticed on an idle connection.
const keepAlive = 30 * time.Second

// Config is one account of a PostgreSQL resource: where the database is, whom
// to log in as, and how to secure the connection. It holds the account's
// password; String, GoString and LogValue leave it out, so a Config can be
// printed or logged safely.
type Config struct {
	// Host is the database's host name or IP address (not a Unix socket
	// directory, and a single host).
	Host string
	// Port is the database's TCP port; zero means DefaultPort.
	Port int
	// Database is the database every connection uses. A client that asks
	// for another is refused. Empty means PostgreSQL's default: the user's
	// name.
	Database string
	// Resource is the resource's name, for the messages that tell a
	// client what its access is to; empty if not known.
	Resource string
	// User is the account's role name.
	User string
	// Password is the account's password. It is sent only to the database,
	// through pgconn's authentication, and never to the client or a log.
	Password string
	// TLS says whether TLS to the database is required and how the server's
	// certificate is checked.
	TLS tunnel.TLS
	// ConnectTimeout bounds one connection attempt; zero means
	// DefaultConnectTimeout.
	ConnectTimeout time.Duration
	// AuthMethods are the authentication methods, beyond SCRAM-SHA-256,
	// that the database may ask for and get the password through:
	// tunnel.AuthMD5 and tunnel.AuthCleartext, when an organization admin
	// allowed them for the resource. Empty means SCRAM-SHA-256 only: a
	// server that asks for anything else gets no byte of the password, and
	// the login fails with an error that says which method it asked for.
	AuthMethods []string
	// MaxStatementBytes is the project's recording limit of a statement,
	// in bytes: a Query or Parse whose statement is larger is refused, or
	// forwarded and recorded by its ends (OversizeStatements). Zero means
	// the session's limit (tunnel.Header.MaxStatementBytes, when the
	// common.Session carries it), else DefaultMaxStatementBytes (1 MiB).
	MaxStatementBytes int64
	// OversizeStatements is tunnel.OversizeRefuse or
	// tunnel.OversizeRecordEnds; empty means the session's setting, else
	// refuse.
	OversizeStatements string
	// Dial opens the TCP connections to the database (logins, cancels,
	// terminations). Nil means a net.Dialer; the gateway passes one that
	// enforces its target policy (Engine's WithDialer).
	Dial common.DialFunc
}

// ConfigFromTarget returns the Config for a PostgreSQL target sent by the
// server.
func ConfigFromTarget(t tunnel.Target) Config {
	return Config{
		Host:        t.Host,
		Port:        t.Port,
		Database:    t.Database,
		Resource:    t.ResourceName,
		User:        t.Username,
		Password:    t.Password,
		TLS:         t.TLS,
		AuthMethods: t.AuthMethods,
	}
}

// Addr returns host:port, with the default port filled in.
func (c Config) Addr() string {
	return net.JoinHostPort(c.Host, strconv.Itoa(c.port()))
}

// String describes the account without its password, for example
// "postgres db.internal:5432/app as app_rw (tls verify-full)".
func (c Config) String() string {
	return fmt.Sprintf("postgres %s/%s as %s (tls %s)", c.Addr(), c.Database, c.User, c.tlsMode())
}

// GoString is String, so that %#v does not print the password either.
func (c Config) GoString() string { return c.String() }

// LogValue implements slog.LogValuer: the account without its password.
func (c Config) LogValue() slog.Value {
	return slog.GroupValue(
		slog.String("addr", c.Addr()),
		slog.String("database", c.Database),
		slog.String("user", c.User),
		slog.String("tls", c.tlsMode()),
	)
}

// tlsMode names the TLS setting as libpq's sslmode would.
func (c Config) tlsMode() string {
	switch {
	case !c.TLS.Enabled:
		return "disable"
	case c.TLS.RejectUnauthorized:
		return "verify-full"
	default:
		return "require"
	}
}

func (c Config) port() int {
	if c.Port == 0 {
		return DefaultPort
	}
	return c.Port
}

func (c Config) connectTimeout() time.Duration {
	if c.ConnectTimeout <= 0 {
		return DefaultConnectTimeout
	}
	return c.ConnectTimeout
}

// Check reports what is wrong with the Config, in words an administrator can
// act on, or nil.
func (c Config) Check() error {
	var errs []error
	switch {
	case strings.TrimSpace(c.Host) == "":
		errs = append(errs, errors.New("the host is empty"))
	case strings.HasPrefix(c.Host, "/") || strings.ContainsAny(c.Host, ",\x00 \t\r\n"):
		errs = append(errs, fmt.Errorf("the host %q is not a host name or IP address", c.Host))
	}
	if c.Port < 0 || c.Port > 65535 {
		errs = append(errs, fmt.Errorf("the port %d is not between 1 and 65535", c.Port))
	}
	if c.User == "" {
		errs = append(errs, errors.New("the user is empty"))
	}
	if strings.ContainsRune(c.User, 0) || strings.ContainsRune(c.Database, 0) || strings.ContainsRune(c.Password, 0) {
		errs = append(errs, errors.New("the user, database or password contains a NUL byte"))
	}
	for _, m := range c.AuthMethods {
		if m != tunnel.AuthMD5 && m != tunnel.AuthCleartext {
			errs = append(errs, fmt.Errorf("the authentication method %q is not one an admin can allow (%q or %q)", m, tunnel.AuthMD5, tunnel.AuthCleartext))
		}
	}
	if c.TLS.Enabled && c.TLS.RejectUnauthorized && strings.TrimSpace(c.TLS.CAPEM) != "" {
		if !x509.NewCertPool().AppendCertsFromPEM([]byte(c.TLS.CAPEM)) {
			errs = append(errs, errors.New("the CA certificate is not a PEM-encoded X.509 certificate"))
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("invalid PostgreSQL resource: %w", err)
	}
	return nil
}

// PgConnConfig returns the *pgconn.Config for the account.
//
// It is built by pgconn.ParseConfig from a connection string without the
// password, and then every field that matters is set explicitly, so that
// nothing leaks in from the gateway's environment (PGPASSWORD, PGSSLMODE,
// PGOPTIONS, PGTARGETSESSIONATTRS...) or home directory (~/.pgpass,
// ~/.postgresql/root.crt):
//   - Password is the Config's;
//   - TLS: none if TLS.Enabled is false; otherwise required, with the chain
//     and host name verified against CAPEM (or the system roots when CAPEM is
//     empty) if TLS.RejectUnauthorized, and not verified otherwise;
//   - Fallbacks are cleared, so pgconn never retries without TLS;
//   - RuntimeParams start empty; the caller adds the client's;
//   - ConnectTimeout bounds the whole attempt, and the dialer's too;
//   - RequireAuth is "scram-sha-256", plus "md5" and "password" when
//     AuthMethods allow them: pgconn refuses any other request of the
//     server before it sends a byte derived from the password (a server
//     that sends AuthenticationOk without any exchange is refused too);
//   - AfterNetConnect puts a guard on the connection that ends it as soon
//     as the server's answers to the login are not PostgreSQL messages
//     (guard.go), so that nothing more is sent to, nor much read from, a
//     service that is not a PostgreSQL server.
//
// One environment variable still has an effect: a PGSERVICE naming a service
// that cannot be read makes the parse fail (with an error that says so).
func (c Config) PgConnConfig() (*pgconn.Config, error) {
	if err := c.Check(); err != nil {
		return nil, err
	}
	tlsConfig, err := c.tlsConfig()
	if err != nil {
		return nil, err
	}
	timeout := c.connectTimeout()
	seconds := int64((timeout + time.Second - 1) / time.Second)

	// Besides the connection's own settings, each key names a setting that
	// pgconn would otherwise take from a PG* environment variable or a file
	// in the home directory: an explicit value here wins over both.
	settings := []string{
		"host=" + quoteDSN(c.Host),
		"port=" + strconv.Itoa(c.port()),
		"dbname=" + quoteDSN(c.Database),
		"user=" + quoteDSN(c.User),
		"sslmode=disable", // TLS is set below, by hand
		"sslrootcert=''",
		"sslcert=''",
		"sslkey=''",
		"sslcertmode=disable",
		"sslnegotiation=postgres",
		"passfile=''",
		"connect_timeout=" + strconv.FormatInt(seconds, 10),
		"target_session_attrs=any",
		"min_protocol_version=3.0",
		"max_protocol_version=3.0",
		"channel_binding=prefer",
		"require_auth=scram-sha-256",
	}
	// Allow exactly these keys, so that no value, however quoted, can add
	// another one.
	keys := make([]string, len(settings))
	for i, s := range settings {
		keys[i], _, _ = strings.Cut(s, "=")
	}
	dsn := strings.Join(settings, " ")
	pc, err := pgconn.ParseConfigWithOptions(dsn, pgconn.ParseConfigOptions{ConnStringAllowedKeys: keys})
	if err != nil {
		// The connection string holds no password, so the error cannot
		// either.
		return nil, fmt.Errorf("build the PostgreSQL connection settings: %w", err)
	}

	pc.Host = c.Host
	pc.Port = uint16(c.port())
	pc.Database = c.Database
	pc.User = c.User
	pc.Password = c.Password
	pc.TLSConfig = tlsConfig
	pc.Fallbacks = nil
	pc.SSLNegotiation = "postgres"
	pc.SSLCertMode = "disable" // the gateway has no client certificate to offer
	pc.ConnectTimeout = timeout
	dial := pgconn.DialFunc((&net.Dialer{Timeout: timeout, KeepAlive: keepAlive}).DialContext)
	if c.Dial != nil {
		dial = pgconn.DialFunc(c.Dial)
	}
	guard := new(loginState)
	pc.DialFunc = func(ctx context.Context, network, addr string) (net.Conn, error) {
		if guard.notPostgres.Load() {
			// pgconn sends a CancelRequest on a new connection when a
			// login fails while reading: not to a service that is not
			// PostgreSQL.
			return nil, ErrNotPostgres
		}
		return dial(ctx, network, addr)
	}
	pc.RuntimeParams = make(map[string]string)
	pc.KerberosSrvName = ""
	pc.KerberosSpn = ""
	pc.ValidateConnect = nil
	pc.AfterConnect = nil
	pc.AfterNetConnect = guard.wrap
	pc.OAuthTokenProvider = nil
	pc.MinProtocolVersion = "3.0"
	pc.MaxProtocolVersion = "3.0"
	pc.ChannelBinding = "prefer"
	pc.RequireAuth = c.requireAuth()
	return pc, nil
}

// requireAuth returns pgconn's RequireAuth for the account: SCRAM-SHA-256,
// and the methods an admin allowed.
func (c Config) requireAuth() string {
	methods := []string{"scram-sha-256"}
	for _, m := range []string{tunnel.AuthMD5, tunnel.AuthCleartext} {
		if slices.Contains(c.AuthMethods, m) {
			methods = append(methods, m)
		}
	}
	return strings.Join(methods, ",")
}

// tlsConfig returns the TLS settings for the upstream connection, or nil when
// TLS is off.
func (c Config) tlsConfig() (*tls.Config, error) {
	tc, err := c.TLS.ClientConfig(c.Host)
	if err != nil {
		return nil, fmt.Errorf("invalid PostgreSQL resource: %w", err)
	}
	return tc, nil
}

// quoteDSN quotes a value for a keyword/value connection string.
func quoteDSN(v string) string {
	return "'" + strings.NewReplacer(`\`, `\\`, `'`, `\'`).Replace(v) + "'"
}
