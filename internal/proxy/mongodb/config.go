package mongodb

import (
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"strconv"
	"strings"
	"time"

	"go.mongodb.org/mongo-driver/v2/mongo/options"

	"github.com/airlockpam/airlock/internal/tunnel"
)

// DefaultAuthDatabase is the database that holds the account's user when
// Config.AuthDatabase is empty.
const DefaultAuthDatabase = "admin"

// DefaultConnectTimeout bounds one upstream connection attempt (server
// selection, TCP, TLS and authentication together) when Config.ConnectTimeout
// is zero.
const DefaultConnectTimeout = 10 * time.Second

// appName is the application name the gateway's upstream connections give
// the server, so that they can be told apart in its logs and currentOp.
const appName = "airlock-gateway"

// Config is one account of a MongoDB resource: where the deployment is, whom
// to log in as, and how to secure the connection. It holds the account's
// password; String, GoString and LogValue leave it out, so a Config can be
// printed or logged safely.
type Config struct {
	// URI is the deployment's connection string, mongodb:// or
	// mongodb+srv://, without credentials and without TLS options (the
	// resource's TLS setting is the only one that counts). SRV lookup and
	// replica-set discovery are the driver's job.
	URI string
	// AuthDatabase is the database that holds the user; empty means
	// DefaultAuthDatabase ("admin").
	AuthDatabase string
	// TLS says whether TLS to the deployment is required and how the
	// servers' certificates are checked.
	TLS tunnel.TLS
	// User is the account's user name.
	User string
	// Password is the account's password. It is sent only to the database,
	// through the driver's SCRAM authentication, and never to the client or
	// a log.
	Password string
	// ConnectTimeout bounds one connection attempt, server selection
	// included; zero means DefaultConnectTimeout.
	ConnectTimeout time.Duration
}

// ConfigFromTarget returns the Config for a MongoDB target sent by the
// server: the target's Database is the authentication database.
func ConfigFromTarget(t tunnel.Target) Config {
	return Config{
		URI:          t.URI,
		AuthDatabase: t.Database,
		TLS:          t.TLS,
		User:         t.Username,
		Password:     t.Password,
	}
}

// String describes the account without its password, for example
// "mongodb mongodb://db.internal:27017/ (auth admin) as app (tls verify)".
func (c Config) String() string {
	return fmt.Sprintf("mongodb %s (auth %s) as %s (tls %s)", c.URI, c.authDatabase(), c.User, c.tlsMode())
}

// GoString is String, so that %#v does not print the password either.
func (c Config) GoString() string { return c.String() }

// LogValue implements slog.LogValuer: the account without its password.
func (c Config) LogValue() slog.Value {
	return slog.GroupValue(
		slog.String("uri", c.URI),
		slog.String("auth_database", c.authDatabase()),
		slog.String("user", c.User),
		slog.String("tls", c.tlsMode()),
	)
}

func (c Config) tlsMode() string {
	switch {
	case !c.TLS.Enabled:
		return "off"
	case c.TLS.RejectUnauthorized:
		return "verify"
	default:
		return "no-verify"
	}
}

func (c Config) authDatabase() string {
	if c.AuthDatabase == "" {
		return DefaultAuthDatabase
	}
	return c.AuthDatabase
}

func (c Config) connectTimeout() time.Duration {
	if c.ConnectTimeout <= 0 {
		return DefaultConnectTimeout
	}
	return c.ConnectTimeout
}

// key identifies the Config among a Session's topologies. It is a hash, so
// that the password is not kept in one more place in the clear; a rotated
// password gives a new key, and new connections a new topology.
func (c Config) key() string {
	h := sha256.New()
	for _, s := range []string{c.URI, c.authDatabase(), c.User, c.Password,
		strconv.FormatBool(c.TLS.Enabled), strconv.FormatBool(c.TLS.RejectUnauthorized), c.TLS.CAPEM,
		c.connectTimeout().String()} {
		h.Write([]byte(strconv.Itoa(len(s))))
		h.Write([]byte{':'})
		h.Write([]byte(s))
	}
	return hex.EncodeToString(h.Sum(nil))
}

// Check reports what is wrong with the Config, in words an administrator can
// act on, or nil.
func (c Config) Check() error {
	var errs []error
	if err := checkURI(c.URI); err != nil {
		errs = append(errs, err)
	}
	if c.User == "" {
		errs = append(errs, errors.New("the user is empty"))
	}
	if strings.ContainsRune(c.User, 0) || strings.ContainsRune(c.AuthDatabase, 0) || strings.ContainsRune(c.Password, 0) {
		errs = append(errs, errors.New("the user, auth database or password contains a NUL byte"))
	}
	if strings.ContainsAny(c.AuthDatabase, "/\\. \"$") {
		errs = append(errs, fmt.Errorf("the auth database %q is not a valid database name", c.AuthDatabase))
	}
	if c.TLS.Enabled && c.TLS.RejectUnauthorized && strings.TrimSpace(c.TLS.CAPEM) != "" {
		if !x509.NewCertPool().AppendCertsFromPEM([]byte(c.TLS.CAPEM)) {
			errs = append(errs, errors.New("the CA certificate is not a PEM-encoded X.509 certificate"))
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("invalid MongoDB resource: %w", err)
	}
	return nil
}

// checkURI refuses a connection string that is not mongodb:// or
// mongodb+srv://, that holds credentials, or that carries options the
// resource's own settings decide (TLS, authentication source).
func checkURI(uri string) error {
	rest, ok := strings.CutPrefix(uri, "mongodb://")
	if !ok {
		rest, ok = strings.CutPrefix(uri, "mongodb+srv://")
	}
	if !ok {
		return errors.New("the URI does not start with mongodb:// or mongodb+srv://")
	}
	hosts, query, _ := strings.Cut(rest, "?")
	hosts, _, _ = strings.Cut(hosts, "/")
	if strings.Contains(hosts, "@") {
		return errors.New("the URI holds credentials: remove them (the account's user name and password are kept by Airlock)")
	}
	if strings.TrimSpace(hosts) == "" {
		return errors.New("the URI names no host")
	}
	values, err := url.ParseQuery(query)
	if err != nil {
		return fmt.Errorf("the URI's options cannot be read: %v", err)
	}
	for k := range values {
		lk := strings.ToLower(k)
		switch {
		case strings.HasPrefix(lk, "tls"), strings.HasPrefix(lk, "ssl"):
			return fmt.Errorf("the URI sets the option %s: set TLS in the resource's settings instead", k)
		case lk == "authsource":
			return fmt.Errorf("the URI sets the option %s: set the resource's auth database instead", k)
		case lk == "compressors":
			return fmt.Errorf("the URI sets the option %s, which the gateway does not support", k)
		}
	}
	return nil
}

// clientOptions returns the driver options for the account: the URI's hosts
// and options, then the account's credential, the resource's TLS setting,
// no compression and an unbounded pool (each client connection holds one
// upstream connection for its lifetime), which nothing in the URI can
// override.
func (c Config) clientOptions() (*options.ClientOptions, error) {
	if err := c.Check(); err != nil {
		return nil, err
	}
	tc, err := c.tlsConfig()
	if err != nil {
		return nil, err
	}
	o := options.Client().ApplyURI(c.URI)
	cred := options.Credential{
		AuthSource:  c.authDatabase(),
		Username:    c.User,
		Password:    c.Password,
		PasswordSet: true,
	}
	if o.Auth != nil {
		// An authMechanism in the URI (SCRAM-SHA-1 for an old server)
		// is kept; without one, the driver negotiates.
		cred.AuthMechanism = o.Auth.AuthMechanism
		cred.AuthMechanismProperties = o.Auth.AuthMechanismProperties
	}
	timeout := c.connectTimeout()
	o.SetAuth(cred).
		SetCompressors([]string{}).
		SetMaxPoolSize(0).
		SetMinPoolSize(0).
		SetConnectTimeout(timeout).
		SetServerSelectionTimeout(timeout).
		SetAppName(appName)
	o.TLSConfig = tc
	if err := o.Validate(); err != nil {
		return nil, fmt.Errorf("invalid MongoDB resource: %w", err)
	}
	return o, nil
}

// tlsConfig returns the TLS settings for upstream connections, or nil when
// TLS is off. The driver sets the server name of each host it dials.
func (c Config) tlsConfig() (*tls.Config, error) {
	tc, err := c.TLS.ClientConfig("")
	if err != nil {
		return nil, fmt.Errorf("invalid MongoDB resource: %w", err)
	}
	return tc, nil
}
