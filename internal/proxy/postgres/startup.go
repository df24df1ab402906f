package postgres

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"sort"
	"strconv"
	"strings"

	"github.com/jackc/pgx/v5/pgproto3"
)

// Limits of the client's opening packets.
const (
	// maxStartupPacketLen is the largest opening packet accepted, its 4-byte
	// length included: PostgreSQL's MAX_STARTUP_PACKET_LENGTH, which
	// pgproto3's Backend also applies.
	maxStartupPacketLen = 10000
	// minStartupPacketLen is the smallest: a length and a request code.
	minStartupPacketLen = 8
	// maxParamNameLen and maxParamValueLen bound a startup parameter's
	// name and value, in bytes: PostgreSQL's names are at most 63 bytes
	// (NAMEDATALEN), and no setting a client passes at startup is near
	// 4 KiB.
	maxParamNameLen  = 128
	maxParamValueLen = 4096
	// maxEncryptionRequests is how many SSLRequest and GSSENCRequest packets
	// a client may send before its StartupMessage: one of each.
	maxEncryptionRequests = 2
)

// Request codes of the opening packets (the protocol version's place).
const (
	sslRequestCode    = 80877103 // 1234.5679
	gssEncRequestCode = 80877104 // 1234.5680
	cancelRequestCode = 80877102 // 1234.5678
)

// sqlStateFeatureNotSupported refuses a replication connection.
const sqlStateFeatureNotSupported = "0A000" // feature_not_supported

// ErrInvalidStartup marks a client that broke the protocol in its opening
// packets: Serve's error wraps it.
var ErrInvalidStartup = errors.New("invalid startup packet")

// startupError is a protocol violation in the client's opening. Its message
// is sent to the client (after "airlock: "), so it holds no secret.
type startupError struct{ reason string }

func (e *startupError) Error() string { return ErrInvalidStartup.Error() + ": " + e.reason }
func (e *startupError) Unwrap() error { return ErrInvalidStartup }

func invalidStartup(format string, args ...any) error {
	return &startupError{reason: fmt.Sprintf(format, args...)}
}

type openingKind int

const (
	openingStartup openingKind = iota + 1
	openingCancel
)

// opening is what a client asked for in its opening packets.
type opening struct {
	kind openingKind
	// encryptionRequests counts the SSLRequest and GSSENCRequest packets
	// answered with 'N' before this one.
	encryptionRequests int

	// For a StartupMessage: the protocol's minor version the client asked
	// for and its parameters, as sent.
	minorVersion uint16
	params       map[string]string

	// For a CancelRequest: the key the client holds.
	processID uint32
	secretKey []byte
}

// runtimeParams returns the client's parameters to pass on to the server:
// all but user and database (the account's are used), replication (a
// replication connection is not what access was granted for) and the
// protocol options _pq_.*, which the engine does not support.
func (o *opening) runtimeParams() map[string]string {
	out := make(map[string]string, len(o.params))
	for k, v := range o.params {
		switch {
		case k == "user", k == "database", k == "replication", k == "":
			continue
		case strings.HasPrefix(k, "_pq_."):
			continue
		}
		out[k] = v
	}
	return out
}

// check refuses, before any login, what the client asks for and the
// access does not give, rather than silently give something else: a
// replication connection, or another database than the resource's. The
// user name the client sends is ignored: the access is to one account.
//
// database is the resource's database (Config.Database; empty means the
// account's user name, as PostgreSQL defaults it) and resource its name,
// if known. A client that sends no database, or the resource's, is
// served. libpq sends the user name when it is given no database, so a
// bare psql is refused too, and told which dbname to use. The refusal's
// message is sent to the client (FATAL) and recorded in the session log.
func (o *opening) check(database, user, resource string) *refusal {
	if v, ok := o.params["replication"]; ok && !isFalse(v) {
		return &refusal{code: sqlStateFeatureNotSupported, message: "airlock: replication connections are not supported through Airlock" +
			" (the client asked for replication=" + v + "); connect without replication"}
	}
	if database == "" {
		database = user
	}
	asked, ok := o.params["database"]
	if !ok || asked == "" || asked == database {
		return nil
	}
	of := ""
	if resource != "" {
		of = " of resource " + strconv.Quote(resource)
	}
	return &refusal{code: sqlStateInvalidAuthSpec, message: fmt.Sprintf(
		"airlock: this access is to database %q%s, not %q; connect with dbname=%s",
		database, of, asked, conninfoValue(database))}
}

// isFalse reports whether v is a boolean false as PostgreSQL reads one
// (false, off, no, 0, or a prefix of false or no, in any case).
func isFalse(v string) bool {
	v = strings.ToLower(strings.TrimSpace(v))
	switch {
	case v == "":
		return false
	case v == "0", v == "of", v == "off":
		return true
	}
	return strings.HasPrefix("false", v) || strings.HasPrefix("no", v)
}

// clientRequest describes what the client asked for in its StartupMessage,
// as libpq's conninfo (user=alice database=app application_name=psql): the
// statement of the connect event, so that the session log shows what was
// asked for beside what the access gave (the event's database).
func (o *opening) clientRequest() string {
	var b strings.Builder
	for _, k := range []string{"user", "database", "replication", "application_name"} {
		v, ok := o.params[k]
		if !ok {
			continue
		}
		if b.Len() > 0 {
			b.WriteByte(' ')
		}
		b.WriteString(k)
		b.WriteByte('=')
		b.WriteString(conninfoValue(v))
	}
	return b.String()
}

// conninfoValue writes v as a value of libpq's conninfo: as it is, or in
// single quotes (with \ and \' escaped) when it is empty or holds a space,
// a quote or a backslash.
func conninfoValue(v string) string {
	if v != "" && !strings.ContainsAny(v, " '\\\t") {
		return v
	}
	return "'" + strings.NewReplacer(`\`, `\\`, `'`, `\'`).Replace(v) + "'"
}

// protocolOptions returns the _pq_.* options the client asked for, sorted.
func (o *opening) protocolOptions() []string {
	var opts []string
	for k := range o.params {
		if strings.HasPrefix(k, "_pq_.") {
			opts = append(opts, k)
		}
	}
	sort.Strings(opts)
	return opts
}

// needsNegotiation reports whether the client asked for more than protocol
// 3.0 offers, and so must be told with NegotiateProtocolVersion what it gets.
func (o *opening) needsNegotiation() bool {
	return o.minorVersion > 0 || len(o.protocolOptions()) > 0
}

// readStartup reads the client's opening packets from rw: it answers each
// SSLRequest and GSSENCRequest with 'N' (the tunnel is encrypted already) and
// returns the StartupMessage or CancelRequest that follows.
//
// It reads exactly the bytes of those packets, so that whatever the client
// sends next is left for the relay, and never allocates more than one
// packet's bounded length. A protocol violation is a *startupError; an error
// of rw (io.EOF before any byte, io.ErrUnexpectedEOF within a packet, a
// deadline) is returned as is.
func readStartup(rw io.ReadWriter) (*opening, error) {
	var sawSSL, sawGSS bool
	for n := 0; ; n++ {
		body, err := readStartupPacket(rw, n == 0)
		if err != nil {
			return nil, err
		}
		code := binary.BigEndian.Uint32(body)
		switch code {
		case sslRequestCode, gssEncRequestCode:
			name := "SSLRequest"
			seen := &sawSSL
			if code == gssEncRequestCode {
				name, seen = "GSSENCRequest", &sawGSS
			}
			if len(body) != 4 {
				return nil, invalidStartup("%s of %d bytes instead of 8", name, len(body)+4)
			}
			if *seen || n >= maxEncryptionRequests {
				return nil, invalidStartup("%s sent twice", name)
			}
			*seen = true
			if _, err := rw.Write([]byte{'N'}); err != nil {
				return nil, err
			}
		case cancelRequestCode:
			var msg pgproto3.CancelRequest
			if err := msg.Decode(body); err != nil {
				return nil, invalidStartup("CancelRequest: %s", strings.TrimSpace(err.Error()))
			}
			return &opening{kind: openingCancel, encryptionRequests: n, processID: msg.ProcessID, secretKey: msg.SecretKey}, nil
		default:
			major, minor := uint16(code>>16), uint16(code)
			if major != 3 {
				return nil, invalidStartup("unsupported frontend protocol %d.%d: airlock supports protocol 3.0", major, minor)
			}
			// pgproto3 decodes versions 3.0 and 3.2 only; any 3.x is
			// answered like PostgreSQL does, by offering 3.0.
			patched := make([]byte, len(body))
			copy(patched, body)
			binary.BigEndian.PutUint32(patched, pgproto3.ProtocolVersion30)
			var msg pgproto3.StartupMessage
			if err := msg.Decode(patched); err != nil {
				return nil, invalidStartup("StartupMessage: %s", strings.TrimSpace(err.Error()))
			}
			if err := checkParams(msg.Parameters); err != nil {
				return nil, err
			}
			return &opening{kind: openingStartup, encryptionRequests: n, minorVersion: minor, params: msg.Parameters}, nil
		}
	}
}

// readStartupPacket reads one length-prefixed opening packet and returns its
// body (at least the 4-byte code). first says whether it is the client's
// first packet, whose first byte may show a client that speaks TLS at once.
func readStartupPacket(r io.Reader, first bool) ([]byte, error) {
	var header [4]byte
	if _, err := io.ReadFull(r, header[:]); err != nil {
		return nil, err
	}
	length := int64(int32(binary.BigEndian.Uint32(header[:])))
	if length < minStartupPacketLen || length > maxStartupPacketLen {
		if first && header[0] == 0x16 {
			// A TLS record of type handshake: the client skipped the
			// SSLRequest (sslnegotiation=direct).
			return nil, invalidStartup("the client started TLS directly; connect without TLS (sslmode=disable), the tunnel is encrypted already")
		}
		return nil, invalidStartup("invalid length %d (must be %d to %d bytes)", length, minStartupPacketLen, maxStartupPacketLen)
	}
	body := make([]byte, length-4)
	if _, err := io.ReadFull(r, body); err != nil {
		if errors.Is(err, io.EOF) {
			err = io.ErrUnexpectedEOF
		}
		return nil, err
	}
	return body, nil
}

// checkParams refuses startup parameters that no client needs and that
// could make the StartupMessage the engine sends upstream mean something to
// a service other than PostgreSQL: a name or value with a control
// character (CR and LF would end a line of a line-based protocol), or of an
// absurd length. The error names the parameter, quoted.
func checkParams(params map[string]string) error {
	names := make([]string, 0, len(params))
	for name := range params {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		value := params[name]
		switch {
		case len(name) > maxParamNameLen:
			return invalidStartup("a startup parameter name of %d bytes (at most %d)", len(name), maxParamNameLen)
		case controlChar(name) >= 0:
			return invalidStartup("the startup parameter name %q contains the control character 0x%02X", name, name[controlChar(name)])
		case len(value) > maxParamValueLen:
			return invalidStartup("the startup parameter %q is %d bytes long (at most %d)", name, len(value), maxParamValueLen)
		case controlChar(value) >= 0:
			return invalidStartup("the startup parameter %q contains the control character 0x%02X (CR, LF and other control characters are refused)", name, value[controlChar(value)])
		}
	}
	return nil
}

// controlChar returns the index of the first ASCII control character of s
// (0x00-0x1F, 0x7F), or -1.
func controlChar(s string) int {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c == 0x7f {
			return i
		}
	}
	return -1
}
