package pam

import (
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"net"
	"strings"
	"time"
	"unicode"

	"github.com/google/uuid"

	"github.com/airlockpam/airlock/internal/auth"
	"github.com/airlockpam/airlock/internal/errs"
	"github.com/airlockpam/airlock/internal/tunnel"
)

// Resource kinds.
const (
	KindPostgres = tunnel.KindPostgres
	KindMongoDB  = tunnel.KindMongoDB
)

// Defaults of a resource's settings.
const (
	// DefaultPostgresPort is the port of a PostgreSQL resource given none.
	DefaultPostgresPort = 5432
	// DefaultMongoAuthDatabase is the auth database of a MongoDB resource given none.
	DefaultMongoAuthDatabase = "admin"
	// MaxCAPEMBytes bounds a resource's CA certificate bundle.
	MaxCAPEMBytes = 64 << 10
)

// Resource is a database that a project's members reach through a gateway.
// It never carries a password: HasRotationCredentials says whether one is
// stored for rotations.
type Resource struct {
	ID        string `json:"id"`
	ProjectID string `json:"projectId"`
	Name      string `json:"name" doc:"a slug, unique in the project"`
	Kind      string `json:"kind" enum:"postgres,mongodb"`
	GatewayID string `json:"gatewayId" doc:"the gateway that reaches the database"`
	// GatewayName is filled when the gateway still exists.
	GatewayName string `json:"gatewayName,omitempty"`
	Host        string `json:"host,omitempty" doc:"PostgreSQL: the database server's host name or IP address"`
	Port        int    `json:"port,omitempty" doc:"PostgreSQL: the database server's port"`
	Database    string `json:"database" doc:"PostgreSQL: the database to connect to; MongoDB: the auth database"`
	// ConnectionString is a mongodb:// or mongodb+srv:// URI without
	// credentials or database.
	ConnectionString      string `json:"connectionString,omitempty" doc:"MongoDB: the mongodb:// or mongodb+srv:// URI, without credentials or database"`
	SSLEnabled            bool   `json:"sslEnabled" doc:"TLS is required to the database"`
	SSLRejectUnauthorized bool   `json:"sslRejectUnauthorized" doc:"the database's certificate chain and host name are verified"`
	SSLCAPEM              string `json:"sslCaPem,omitempty" doc:"the only CA trusted for the database (PEM); the system roots when empty"`
	// AllowAuth are the upstream authentication methods besides
	// SCRAM-SHA-256 that the gateway may answer with a password: md5 and
	// password (cleartext). Only an organization admin sets them.
	AllowAuth              []string  `json:"allowAuth" doc:"PostgreSQL: authentication methods besides SCRAM-SHA-256 the gateway may use (md5, password); set by organization admins"`
	RotationUsername       string    `json:"rotationUsername,omitempty" doc:"the account that changes passwords in rotations"`
	HasRotationCredentials bool      `json:"hasRotationCredentials" doc:"a rotation username and password are stored"`
	CreatedAt              time.Time `json:"createdAt"`
	UpdatedAt              time.Time `json:"updatedAt"`
}

// resourceRow is a stored resource with its sealed rotation password.
type resourceRow struct {
	Resource
	rotationSealed []byte // nil when there is none
}

// ResourceInput creates a resource. SSLEnabled and SSLRejectUnauthorized
// default to true; Port to 5432 for PostgreSQL; Database to "admin" for
// MongoDB.
type ResourceInput struct {
	Kind             string `json:"kind" enum:"postgres,mongodb"`
	Name             string `json:"name" maxLength:"63" doc:"a slug, unique in the project"`
	Gateway          string `json:"gateway" maxLength:"64" doc:"the gateway's name or id"`
	Host             string `json:"host,omitempty" maxLength:"255" doc:"PostgreSQL: required"`
	Port             int    `json:"port,omitempty" doc:"PostgreSQL: default 5432"`
	Database         string `json:"database,omitempty" maxLength:"64" doc:"PostgreSQL: required; MongoDB: the auth database, default admin"`
	ConnectionString string `json:"connectionString,omitempty" maxLength:"2048" doc:"MongoDB: required; a mongodb:// or mongodb+srv:// URI without credentials or database"`
	SSLEnabled       *bool  `json:"sslEnabled,omitempty" doc:"require TLS to the database; default true"`
	// SSLRejectUnauthorized verifies the chain and host name; default true.
	SSLRejectUnauthorized *bool  `json:"sslRejectUnauthorized,omitempty" doc:"verify the database's certificate chain and host name; default true"`
	SSLCAPEM              string `json:"sslCaPem,omitempty" maxLength:"65536" doc:"PEM certificates of the CA to trust instead of the system roots"`
	RotationUsername      string `json:"rotationUsername,omitempty" maxLength:"128" doc:"an account allowed to change other accounts' passwords"`
	RotationPassword      string `json:"rotationPassword,omitempty" maxLength:"1024" doc:"its password; write-only"`
	// AllowAuth lets the gateway answer md5 or cleartext password requests
	// of the database (organization admins only); default SCRAM-SHA-256 only.
	AllowAuth []string `json:"allowAuth,omitempty" maxItems:"2" doc:"PostgreSQL: allow md5 and/or password (cleartext) authentication upstream besides SCRAM-SHA-256; organization admins only"`
}

// ResourceUpdate changes a resource; nil fields stay as they are. An empty
// SSLCAPEM goes back to the system roots; an empty RotationUsername removes
// the rotation credentials.
type ResourceUpdate struct {
	// Name renames the resource; `airlock db access --resource` and the
	// accounts' resourceName then use the new name.
	Name                  *string `json:"name,omitempty" maxLength:"63" doc:"a new name: a slug, unique in the project"`
	Gateway               *string `json:"gateway,omitempty" maxLength:"64" doc:"the gateway's name or id"`
	Host                  *string `json:"host,omitempty" maxLength:"255"`
	Port                  *int    `json:"port,omitempty"`
	Database              *string `json:"database,omitempty" maxLength:"64"`
	ConnectionString      *string `json:"connectionString,omitempty" maxLength:"2048"`
	SSLEnabled            *bool   `json:"sslEnabled,omitempty"`
	SSLRejectUnauthorized *bool   `json:"sslRejectUnauthorized,omitempty"`
	SSLCAPEM              *string `json:"sslCaPem,omitempty" maxLength:"65536" doc:"empty to trust the system roots"`
	// AllowAuth replaces the allowed upstream authentication methods; an
	// empty list goes back to SCRAM-SHA-256 only (organization admins only).
	AllowAuth        *[]string `json:"allowAuth,omitempty" maxItems:"2" doc:"PostgreSQL: md5 and/or password; [] for SCRAM-SHA-256 only; organization admins only"`
	RotationUsername *string   `json:"rotationUsername,omitempty" maxLength:"128" doc:"empty to remove the rotation credentials"`
	RotationPassword *string   `json:"rotationPassword,omitempty" maxLength:"1024" doc:"write-only"`
	// Accounts re-enter the credentials of the resource's accounts. They are
	// required (every account, and the rotation password when one is
	// stored) when the update changes where the resource's passwords go:
	// the gateway, host, port, database, connection string or any TLS
	// setting; an organization admin may instead keep the stored
	// credentials. Each is validated against the new endpoint through the
	// gateway, and nothing is saved unless all validate.
	Accounts []AccountCredentials `json:"accounts,omitempty" maxItems:"1000" doc:"the credentials of the resource's accounts, re-entered for a new endpoint; write-only"`
}

// AccountCredentials re-enters one account's credentials in a resource update.
type AccountCredentials struct {
	Account  string `json:"account" maxLength:"64" doc:"the account's name or id"`
	Username string `json:"username,omitempty" maxLength:"128" doc:"a new username; default the account's current one"`
	Password string `json:"password" maxLength:"1024" doc:"the account's password; write-only"`
}

// target returns what a gateway needs to log in to r as username.
func (r *Resource) target(accountID, username, password string) tunnel.Target {
	t := tunnel.Target{
		Kind: r.Kind, ResourceID: r.ID, ResourceName: r.Name, AccountID: accountID,
		Database: r.Database,
		TLS:      tunnel.TLS{Enabled: r.SSLEnabled, RejectUnauthorized: r.SSLRejectUnauthorized, CAPEM: r.SSLCAPEM},
		Username: username, Password: password,
	}
	if len(r.AllowAuth) > 0 {
		t.AuthMethods = append([]string(nil), r.AllowAuth...)
	}
	if r.Kind == KindMongoDB {
		t.URI = r.ConnectionString
	} else {
		t.Host, t.Port = r.Host, r.Port
	}
	return t
}

// normalizeAuthMethods checks and sorts allowed upstream authentication
// methods, as given in field.
func normalizeAuthMethods(op, field, kind string, methods []string) ([]string, error) {
	if len(methods) == 0 {
		return []string{}, nil
	}
	if kind != KindPostgres {
		return nil, errs.InvalidField(op, field, "only PostgreSQL resources take other authentication methods; MongoDB uses SCRAM")
	}
	seen := map[string]bool{}
	for _, m := range methods {
		if m != tunnel.AuthMD5 && m != tunnel.AuthCleartext {
			return nil, errs.InvalidField(op, field, "the authentication methods that can be allowed are md5 and password (cleartext)")
		}
		seen[m] = true
	}
	out := []string{}
	for _, m := range []string{tunnel.AuthMD5, tunnel.AuthCleartext} {
		if seen[m] {
			out = append(out, m)
		}
	}
	return out, nil
}

// Endpoint names where r's passwords go, without credentials: host:port/db
// for PostgreSQL, the hosts of the connection string for MongoDB.
func (r *Resource) Endpoint() string {
	if r.Kind == KindMongoDB {
		_, rest, _ := strings.Cut(r.ConnectionString, "://")
		if i := strings.IndexAny(rest, "/?"); i >= 0 {
			rest = rest[:i]
		}
		if i := strings.LastIndex(rest, "@"); i >= 0 {
			rest = rest[i+1:]
		}
		return rest + "/" + r.Database
	}
	return net.JoinHostPort(r.Host, fmt.Sprint(r.Port)) + "/" + r.Database
}

// checkName validates the name of a resource or an account.
func checkName(op, field, what, name string) error {
	if !auth.ValidSlug(name) {
		return errs.InvalidField(op, field, fmt.Sprintf("not a valid %s name: %s", what, auth.SlugRule))
	}
	if _, err := uuid.Parse(name); err == nil {
		return errs.InvalidField(op, field, fmt.Sprintf("a %s name must not look like an id (a UUID)", what))
	}
	return nil
}

// normalize fills r's defaults and checks every setting. Fields at fault are
// named as in the request body.
func (r *Resource) normalize(op string) error {
	switch r.Kind {
	case KindPostgres:
		return r.normalizePostgres(op)
	case KindMongoDB:
		return r.normalizeMongo(op)
	default:
		return errs.InvalidField(op, "body.kind", "the kind must be postgres or mongodb")
	}
}

func (r *Resource) normalizePostgres(op string) error {
	if r.ConnectionString != "" {
		return errs.InvalidField(op, "body.connectionString",
			"a PostgreSQL resource takes `host`, `port` and `database`; `connectionString` is for MongoDB resources")
	}
	if err := checkHost(op, r.Host); err != nil {
		return err
	}
	if r.Port == 0 {
		r.Port = DefaultPostgresPort
	}
	if r.Port < 1 || r.Port > 65535 {
		return errs.InvalidField(op, "body.port", fmt.Sprintf("the port must be between 1 and 65535, not %d", r.Port))
	}
	if r.Database == "" {
		return errs.InvalidField(op, "body.database", "a PostgreSQL resource needs the database to connect to, such as postgres")
	}
	if len(r.Database) > 63 || hasControl(r.Database) {
		return errs.InvalidField(op, "body.database", "the database name must be at most 63 bytes without control characters")
	}
	return r.checkTLS(op)
}

func checkHost(op, host string) error {
	const field = "body.host"
	switch {
	case host == "":
		return errs.InvalidField(op, field, "a PostgreSQL resource needs the host name or IP address of the database server")
	case len(host) > 255 || strings.ContainsAny(host, " /\\@?#") || hasControl(host):
		return errs.InvalidField(op, field, "the host must be a host name or an IP address, without a scheme, path or user")
	case strings.Contains(host, ":") && net.ParseIP(host) == nil:
		return errs.InvalidField(op, field, "give the host without a port: the port goes in `port`")
	}
	return nil
}

func (r *Resource) normalizeMongo(op string) error {
	if r.Host != "" || r.Port != 0 {
		field := "body.host"
		if r.Host == "" {
			field = "body.port"
		}
		return errs.InvalidField(op, field, "a MongoDB resource takes its hosts from `connectionString`; leave `host` and `port` empty")
	}
	if err := checkMongoURI(op, r.ConnectionString); err != nil {
		return err
	}
	if r.Database == "" {
		r.Database = DefaultMongoAuthDatabase
	}
	if len(r.Database) > 63 || strings.ContainsAny(r.Database, "/\\. \"$") || hasControl(r.Database) {
		return errs.InvalidField(op, "body.database", "the auth database must be a MongoDB database name such as admin")
	}
	return r.checkTLS(op)
}

// checkMongoURI accepts a mongodb:// or mongodb+srv:// URI with hosts and
// options but without credentials, a database, or options that the
// resource's own fields hold.
func checkMongoURI(op, uri string) error {
	const field = "body.connectionString"
	scheme, rest, ok := strings.Cut(uri, "://")
	if uri == "" {
		return errs.InvalidField(op, field, "a MongoDB resource needs a connection string such as mongodb://db1.example.com:27017,db2.example.com:27017/?replicaSet=rs0")
	}
	if !ok || (scheme != "mongodb" && scheme != "mongodb+srv") {
		return errs.InvalidField(op, field, "the connection string must start with mongodb:// or mongodb+srv://")
	}
	if hasControl(uri) || strings.ContainsAny(uri, " ") {
		return errs.InvalidField(op, field, "the connection string must not contain spaces or control characters")
	}
	authority, pathQuery := rest, ""
	if i := strings.IndexAny(rest, "/?"); i >= 0 {
		authority, pathQuery = rest[:i], rest[i:]
	}
	if strings.Contains(authority, "@") {
		return errs.InvalidField(op, field, "the connection string must not hold credentials: remove the user and password "+
			"(user:password@) from it and put them in an account of this resource; Airlock injects them at the gateway")
	}
	if authority == "" {
		return errs.InvalidField(op, field, "the connection string names no host")
	}
	hosts := strings.Split(authority, ",")
	if scheme == "mongodb+srv" && (len(hosts) != 1 || strings.Contains(authority, ":")) {
		return errs.InvalidField(op, field, "a mongodb+srv:// connection string names exactly one host name, without a port")
	}
	for _, h := range hosts {
		if h == "" {
			return errs.InvalidField(op, field, "the connection string has an empty host")
		}
	}
	path, query, _ := strings.Cut(pathQuery, "?")
	if path != "" && path != "/" {
		return errs.InvalidField(op, field, "the connection string must not name a database: "+
			"remove it from the connection string and put the auth database in the `database` field (default admin)")
	}
	for _, kv := range strings.Split(query, "&") {
		if kv == "" {
			continue
		}
		k, _, _ := strings.Cut(kv, "=")
		switch lk := strings.ToLower(k); {
		case lk == "authsource":
			return errs.InvalidField(op, field, "remove authSource from the connection string and put the auth database in the `database` field")
		case lk == "tls" || lk == "ssl" || strings.HasPrefix(lk, "tls"):
			return errs.InvalidField(op, field, "remove the TLS options (tls, ssl, tls...) from the connection string: the resource's own TLS settings "+
				"decide it (`sslEnabled`, `sslRejectUnauthorized` and `sslCaPem`)")
		case lk == "authmechanism" || lk == "authmechanismproperties" || lk == "username" || lk == "password":
			return errs.InvalidField(op, field, "remove authMechanism, authMechanismProperties, username and password from the connection string: "+
				"Airlock logs in with the account's credentials")
		}
	}
	return nil
}

func (r *Resource) checkTLS(op string) error {
	if r.SSLCAPEM == "" {
		return nil
	}
	return checkCAPEM(op, "body.sslCaPem", r.SSLCAPEM)
}

// checkCAPEM accepts one or more PEM certificates and nothing else.
func checkCAPEM(op, field, text string) error {
	if len(text) > MaxCAPEMBytes {
		return errs.InvalidField(op, field, fmt.Sprintf("the CA certificates must be at most %d bytes of PEM", MaxCAPEMBytes))
	}
	rest := []byte(text)
	n := 0
	for {
		var b *pem.Block
		b, rest = pem.Decode(rest)
		if b == nil {
			break
		}
		if b.Type != "CERTIFICATE" {
			return errs.InvalidField(op, field, "the CA certificates hold a block that is not a certificate: give only certificates (-----BEGIN CERTIFICATE-----)")
		}
		if _, err := x509.ParseCertificate(b.Bytes); err != nil {
			return errs.InvalidField(op, field, fmt.Sprintf("certificate %d of the CA certificates cannot be parsed: %v", n+1, err))
		}
		n++
	}
	if n == 0 || strings.TrimSpace(string(rest)) != "" {
		return errs.InvalidField(op, field, "the CA certificates must be PEM text: one or more -----BEGIN CERTIFICATE----- blocks")
	}
	return nil
}

func hasControl(s string) bool {
	return strings.IndexFunc(s, unicode.IsControl) >= 0
}
