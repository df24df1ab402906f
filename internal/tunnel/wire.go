// Package tunnel defines what travels between the server and a gateway, and
// between the CLI and the server: the upgrade handshake, the multiplexed
// session (Mux, yamux's protocol) and the header that opens every stream.
//
// Every stream the server opens to a gateway starts with one Header (a
// 4-byte big-endian length and that many bytes of JSON). For a data stream the
// rest of the stream is the CLI's end-to-end mTLS connection, which the server
// cannot read; for a request (validate, terminate) the gateway answers with one
// Result frame in the same format.
package tunnel

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
)

// Stream types.
const (
	TypeData      = "data"      // a client connection of a session
	TypeValidate  = "validate"  // try to log in with Target's credentials
	TypeTerminate = "terminate" // end SessionID: cancel its work, tell its clients Reason, close
	TypeUpdate    = "update"    // apply new settings (MaskPatterns, RedactValues, statement limits) to live SessionID
	TypeRenew     = "renew"     // gateway -> server: CSR for a new certificate; Result.Certificate answers
	TypeRotate    = "rotate"    // set Rotation.Username's password as Target's user, then log in with it
	// TypeCheckRoles checks, changing nothing, that each of Roles exists and
	// that Target's user may change its password (secret rotations).
	TypeCheckRoles = "check-roles"
	TypeHeartbeat  = "heartbeat"
	TypeEvents     = "events" // gateway -> server: a batch of session events follows
)

// Resource kinds.
const (
	KindPostgres = "postgres"
	KindMongoDB  = "mongodb"
)

// MaxFrame bounds a frame (a header, a result, a batch of session events).
const MaxFrame = 16 << 20

// TLS is a resource's upstream TLS setting.
type TLS struct {
	// Enabled requires TLS to the database.
	Enabled bool `json:"enabled"`
	// RejectUnauthorized verifies the certificate chain and host name.
	RejectUnauthorized bool `json:"rejectUnauthorized"`
	// CAPEM, when set, is the only CA trusted for the database; otherwise the
	// system roots are.
	CAPEM string `json:"caPem,omitempty"`
}

// Target is everything a gateway needs to reach one account of a resource.
// It holds the account's password: it travels only inside the gateway's
// mutually authenticated connection and is never logged.
type Target struct {
	Kind       string `json:"kind"`
	ResourceID string `json:"resourceId"`
	AccountID  string `json:"accountId"`
	Host       string `json:"host,omitempty"`
	Port       int    `json:"port,omitempty"`
	Database   string `json:"database,omitempty"`
	URI        string `json:"uri,omitempty"` // MongoDB connection string, without credentials
	TLS        TLS    `json:"tls"`
	Username   string `json:"username"`
	Password   string `json:"password"`
	// AuthMethods are the upstream PostgreSQL authentication methods the
	// gateway may answer with the password, beyond SCRAM-SHA-256 (always
	// allowed): AuthMD5 and AuthCleartext, only when an organization admin
	// allowed them for the resource. A server that asks for another method
	// gets nothing and the connection ends.
	AuthMethods []string `json:"authMethods,omitempty"`

	// ResourceName is the resource's name, for the messages that tell a
	// client what its access is to.
	ResourceName string `json:"resourceName,omitempty"`
}

// Upstream authentication methods an organization admin may allow for a
// PostgreSQL resource (Target.AuthMethods).
const (
	AuthMD5       = "md5"
	AuthCleartext = "password"
)

// String describes the target without its password.
func (t Target) String() string {
	if t.Kind == KindMongoDB {
		return fmt.Sprintf("mongodb %s as %s", t.URI, t.Username)
	}
	return fmt.Sprintf("postgres %s:%d/%s as %s", t.Host, t.Port, t.Database, t.Username)
}

// Header opens a stream from the server to a gateway.
type Header struct {
	Type      string  `json:"type"`
	SessionID string  `json:"sessionId,omitempty"`
	Target    *Target `json:"target,omitempty"`
	// ExpiresAt is the session's end, in Unix seconds (data streams).
	ExpiresAt int64 `json:"expiresAt,omitempty"`
	// ClientAddr is the address of the session's client (its `db access`)
	// as the server sees it (data streams), for the gateway's logs: the
	// stream itself comes from the server.
	ClientAddr string `json:"clientAddr,omitempty"`
	// MaskPatterns are the project's extra session-log mask patterns.
	MaskPatterns []string `json:"maskPatterns,omitempty"`
	// RedactValues asks for the values of written documents to be redacted.
	RedactValues bool `json:"redactValues,omitempty"`
	// Reason is why a session ends (terminate streams): one of the End*
	// constants.
	Reason string `json:"reason,omitempty"`
	// MaxStatementBytes is the project's limit on a recorded statement (data
	// and update streams); 0 means the default, 1 MiB.
	MaxStatementBytes int64 `json:"maxStatementBytes,omitempty"`
	// OversizeStatements says what happens to a statement over the limit:
	// OversizeRefuse (the default, when empty) refuses it with a clear error;
	// OversizeRecordEnds forwards it and records its first and last parts
	// and its SHA-256.
	OversizeStatements string `json:"oversizeStatements,omitempty"`
	// CSR is a PEM certificate request (renew streams).
	CSR string `json:"csr,omitempty"`
	// Message says why in words for the session's clients (terminate
	// streams), such as "session terminated by an administrator"; the
	// gateway sends it to every client connection, prefixed "airlock: ".
	Message string `json:"message,omitempty"`
	// Rotation is the password change of a rotate stream, made as Target's
	// user (the resource's rotation account).
	Rotation *Rotation `json:"rotation,omitempty"`
	// Roles are the database users of a check-roles stream.
	Roles []string `json:"roles,omitempty"`
}

// Rotation asks a gateway to set the password of the database user
// Username to NewPassword and to log in with it. PostgreSQL receives only a
// SCRAM-SHA-256 verifier of the password, made by the gateway, so the
// password never reaches the server's statement log.
type Rotation struct {
	Username    string `json:"username"`
	NewPassword string `json:"newPassword"`
}

// Why a session ends: the session's end_reason, and Header.Reason on a
// terminate stream.
const (
	EndByUser      = "ended_by_user"   // its owner ended it (Ctrl+C, `airlock sessions end`)
	EndExpired     = "expired"         // its duration is over
	EndTerminated  = "terminated"      // an administrator terminated it
	EndRevoked     = "revoked"         // its owner, login, role, account or resource went away
	EndClientLost  = "client_lost"     // the CLI was gone for too long
	EndGatewayLost = "gateway_lost"    // the gateway was gone for too long
	EndGatewayStop = "gateway_stopped" // the gateway shut down (gateway side only)
)

// What happens to a statement over Header.MaxStatementBytes.
const (
	OversizeRefuse     = "refuse"
	OversizeRecordEnds = "record_ends"
)

// Result answers a request stream.
type Result struct {
	OK bool `json:"ok"`
	// Certificate is the new PEM certificate (renew streams).
	Certificate string `json:"certificate,omitempty"`
	// Code classifies a failure: see the Code* constants.
	Code string `json:"code,omitempty"`
	// Message says what went wrong in words a user can act on; it never
	// holds a password.
	Message string `json:"message,omitempty"`
}

// PasswordUnchanged reports whether a failed rotate request surely left the
// password as it was: the rotation account could not log in or lacked the
// privilege, or the request was malformed. Any other failure (the password
// was set but the new one did not log in, the connection broke) leaves the
// outcome unknown.
func (r Result) PasswordUnchanged() bool {
	switch r.Code {
	case CodeDenied, CodeAuthFailed, CodeUnreachable, CodeTLS, CodeNoDatabase, CodeInvalid:
		return !r.OK
	}
	return false
}

// Failure codes of a validation.
const (
	CodeAuthFailed  = "auth_failed" // wrong username or password
	CodeUnreachable = "unreachable" // cannot connect to the host
	CodeTLS         = "tls"         // TLS required but refused, or verification failed
	CodeNoDatabase  = "no_database" // the database does not exist
	CodeInvalid     = "invalid"     // the target itself is malformed
	CodeDenied      = "denied"      // logged in, but the user may not do it (rotation: no privilege)
	CodeUnverified  = "unverified"  // rotation: the password was set, but logging in with it failed
	CodeInternal    = "internal"
)

// WriteFrame writes v as one length-prefixed JSON frame.
func WriteFrame(w io.Writer, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	return WriteRawFrame(w, b)
}

// WriteRawFrame writes b, which must be JSON already, as one frame.
func WriteRawFrame(w io.Writer, b []byte) error {
	if len(b) > MaxFrame {
		return errors.New("tunnel: frame too large")
	}
	buf := make([]byte, 4+len(b))
	binary.BigEndian.PutUint32(buf, uint32(len(b)))
	copy(buf[4:], b)
	_, err := w.Write(buf)
	return err
}

// ReadFrame reads one frame into v.
func ReadFrame(r io.Reader, v any) error {
	var n [4]byte
	if _, err := io.ReadFull(r, n[:]); err != nil {
		return err
	}
	size := binary.BigEndian.Uint32(n[:])
	if size > MaxFrame {
		return fmt.Errorf("tunnel: frame of %d bytes exceeds the limit of %d", size, MaxFrame)
	}
	b := make([]byte, size)
	if _, err := io.ReadFull(r, b); err != nil {
		return err
	}
	return json.Unmarshal(b, v)
}

// ClientConfig is the TLS configuration for connecting to a database with
// this setting: nil when TLS is off; otherwise TLS is required and, with
// RejectUnauthorized, the chain is verified against CAPEM (or the system
// roots when it is empty) and the certificate against serverName. An empty
// serverName leaves it to the caller (a driver that sets it per host).
func (t TLS) ClientConfig(serverName string) (*tls.Config, error) {
	if !t.Enabled {
		return nil, nil
	}
	tc := &tls.Config{MinVersion: tls.VersionTLS12, ServerName: serverName}
	if !t.RejectUnauthorized {
		// Encrypted but unauthenticated, as the resource asks; the name is
		// still sent for SNI.
		tc.InsecureSkipVerify = true
		return tc, nil
	}
	if strings.TrimSpace(t.CAPEM) != "" {
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM([]byte(t.CAPEM)) {
			return nil, errors.New("the CA certificate is not a PEM-encoded X.509 certificate")
		}
		tc.RootCAs = pool
	}
	return tc, nil
}
