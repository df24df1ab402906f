package common

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"net"
	"strings"
)

// DescribeTLSError says why a TLS handshake with a database failed, if err
// is such a failure.
func DescribeTLSError(err error) (string, bool) {
	var unknownCA x509.UnknownAuthorityError
	if errors.As(err, &unknownCA) {
		return "the server's certificate is not trusted: " + unknownCA.Error() + " (check the resource's CA certificate)", true
	}
	var hostErr x509.HostnameError
	if errors.As(err, &hostErr) {
		return "the server's certificate does not match the host: " + hostErr.Error(), true
	}
	var invalid x509.CertificateInvalidError
	if errors.As(err, &invalid) {
		return "the server's certificate is invalid: " + invalid.Error(), true
	}
	var verify *tls.CertificateVerificationError
	if errors.As(err, &verify) {
		return "the server's certificate could not be verified: " + verify.Err.Error(), true
	}
	var alert tls.AlertError
	if errors.As(err, &alert) {
		return "the server ended the handshake: " + alert.Error(), true
	}
	var record tls.RecordHeaderError
	if errors.As(err, &record) {
		return "the server did not answer in TLS: " + record.Msg + " (disable TLS for the resource, or enable it on the server)", true
	}
	return "", false
}

// IsNetTimeout reports whether err is a network timeout.
func IsNetTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// Innermost returns the text of the error a net.OpError wraps (for a refused
// dial: "connect: connection refused"), without the addresses it repeats.
func Innermost(opErr *net.OpError) string {
	if opErr.Err != nil {
		return opErr.Err.Error()
	}
	return opErr.Error()
}

// Withheld is what Redact returns in place of a message that contained
// the password.
const Withheld = "[message withheld: it contained the account's password]"

// Redact returns msg, or Withheld if the password occurs anywhere in it.
// Messages are built from values that hold no password, so a password found
// in one was echoed by a server or driver, or is a short or common password
// that matches ordinary text by chance (a word, the user name). The whole
// message goes, not just the match: "[redacted]" in place of a word would
// tell the reader which word the password is.
func Redact(msg, password string) string {
	if password == "" || !strings.Contains(msg, password) {
		return msg
	}
	return Withheld
}

// DialFunc opens a network connection to a database, as net.Dialer's
// DialContext does. The gateway passes one that enforces its target policy
// (which addresses it may reach) to every engine, for validation logins and
// for served connections alike.
type DialFunc func(ctx context.Context, network, addr string) (net.Conn, error)
