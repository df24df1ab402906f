package postgres

import (
	"bytes"
	"errors"
	"io"
	"maps"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5/pgproto3"
)

// fakeConn is the client side of readStartup in memory: it reads what the
// client sent and records what readStartup writes.
type fakeConn struct {
	r       *bytes.Reader
	written bytes.Buffer
}

func (c *fakeConn) Read(p []byte) (int, error)  { return c.r.Read(p) }
func (c *fakeConn) Write(p []byte) (int, error) { return c.written.Write(p) }

func encode(t testing.TB, msgs ...pgproto3.FrontendMessage) []byte {
	t.Helper()
	var b []byte
	for _, m := range msgs {
		var err error
		if b, err = m.Encode(b); err != nil {
			t.Fatal(err)
		}
	}
	return b
}

func TestReadStartup(t *testing.T) {
	params := map[string]string{"user": "u", "database": "d", "application_name": "psql", "client_encoding": "UTF8"}
	startup := &pgproto3.StartupMessage{ProtocolVersion: pgproto3.ProtocolVersion30, Parameters: params}
	query := encode(t, &pgproto3.Query{String: "SELECT 1"})
	tests := []struct {
		name        string
		in          []byte
		wantKind    openingKind
		wantWritten string
		wantMinor   uint16
		wantLeft    int // bytes left unread
	}{
		{"startup", encode(t, startup), openingStartup, "", 0, 0},
		{"SSLRequest, then startup", encode(t, &pgproto3.SSLRequest{}, startup), openingStartup, "N", 0, 0},
		{"GSSENCRequest, SSLRequest, then startup", encode(t, &pgproto3.GSSEncRequest{}, &pgproto3.SSLRequest{}, startup), openingStartup, "NN", 0, 0},
		{"protocol 3.2", encode(t, &pgproto3.StartupMessage{ProtocolVersion: pgproto3.ProtocolVersion32, Parameters: params}), openingStartup, "", 2, 0},
		{"protocol 3.7", encode(t, &pgproto3.StartupMessage{ProtocolVersion: 3<<16 | 7, Parameters: params}), openingStartup, "", 7, 0},
		{"startup followed by a query", append(encode(t, startup), query...), openingStartup, "", 0, len(query)},
		{"cancel", encode(t, &pgproto3.CancelRequest{ProcessID: 42, SecretKey: []byte{1, 2, 3, 4}}), openingCancel, "", 0, 0},
		{"SSLRequest, then cancel", encode(t, &pgproto3.SSLRequest{}, &pgproto3.CancelRequest{ProcessID: 42, SecretKey: make([]byte, 32)}), openingCancel, "N", 0, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := &fakeConn{r: bytes.NewReader(tt.in)}
			op, err := readStartup(c)
			if err != nil {
				t.Fatal(err)
			}
			if op.kind != tt.wantKind || c.written.String() != tt.wantWritten || c.r.Len() != tt.wantLeft {
				t.Errorf("kind %d, wrote %q, left %d; want %d, %q, %d", op.kind, c.written.String(), c.r.Len(),
					tt.wantKind, tt.wantWritten, tt.wantLeft)
			}
			switch op.kind {
			case openingStartup:
				if !maps.Equal(op.params, params) || op.minorVersion != tt.wantMinor {
					t.Errorf("params %v, minor %d", op.params, op.minorVersion)
				}
			case openingCancel:
				if op.processID != 42 {
					t.Errorf("process ID %d", op.processID)
				}
			}
		})
	}
}

func TestReadStartupErrors(t *testing.T) {
	tests := []struct {
		name    string
		in      []byte
		wantErr error  // errors.Is
		wantMsg string // in the error
	}{
		{"nothing", nil, io.EOF, ""},
		{"part of a length", []byte{0, 0}, io.ErrUnexpectedEOF, ""},
		{"part of a packet", []byte{0, 0, 0, 20, 0, 3, 0, 0}, io.ErrUnexpectedEOF, ""},
		{"huge length", []byte{0x7f, 0xff, 0xff, 0xff}, ErrInvalidStartup, "invalid length 2147483647"},
		{"one byte over the limit", []byte{0, 0, 0x27, 0x11}, ErrInvalidStartup, "invalid length 10001"},
		{"negative length", []byte{0x80, 0, 0, 0}, ErrInvalidStartup, "invalid length -2147483648"},
		{"protocol 1.0", []byte{0, 0, 0, 8, 0, 1, 0, 0}, ErrInvalidStartup, "unsupported frontend protocol 1.0"},
		{"GSSENCRequest twice", []byte{0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x30, 0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x30}, ErrInvalidStartup, "GSSENCRequest sent twice"},
		{"long CancelRequest", append([]byte{0, 0, 1, 20, 0x04, 0xd2, 0x16, 0x2e}, make([]byte, 272)...), ErrInvalidStartup, "too long"},
		{"bad last byte", []byte{0, 0, 0, 14, 0, 3, 0, 0, 'a', 0, 'b', 0, 'c', 'd'}, ErrInvalidStartup, "StartupMessage"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			op, err := readStartup(&fakeConn{r: bytes.NewReader(tt.in)})
			if op != nil || !errors.Is(err, tt.wantErr) || !strings.Contains(errString(err), tt.wantMsg) {
				t.Errorf("readStartup = %v, %v; want %v with %q", op, err, tt.wantErr, tt.wantMsg)
			}
		})
	}
}

func errString(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

func TestRuntimeParams(t *testing.T) {
	op := &opening{params: map[string]string{
		"user": "mallory", "database": "postgres", "replication": "true", "_pq_.x": "1", "": "empty",
		"application_name": "psql", "client_encoding": "UTF8", "options": "-c statement_timeout=5s", "DateStyle": "ISO",
	}}
	want := map[string]string{"application_name": "psql", "client_encoding": "UTF8", "options": "-c statement_timeout=5s", "DateStyle": "ISO"}
	if got := op.runtimeParams(); !maps.Equal(got, want) {
		t.Errorf("runtimeParams() = %v, want %v", got, want)
	}
	if got := op.protocolOptions(); len(got) != 1 || got[0] != "_pq_.x" || !op.needsNegotiation() {
		t.Errorf("protocol options %v", got)
	}
}

// FuzzStartup feeds arbitrary bytes to readStartup as a client's opening. It
// checks that readStartup neither panics nor reads, writes or accepts more
// than the protocol's bounds allow, that what it accepts survives a round
// trip, and that its errors make a valid ErrorResponse.
func FuzzStartup(f *testing.F) {
	params := map[string]string{"user": "u", "database": "d", "application_name": "psql"}
	seeds := [][]byte{
		encode(f, &pgproto3.StartupMessage{ProtocolVersion: pgproto3.ProtocolVersion30, Parameters: params}),
		encode(f, &pgproto3.SSLRequest{}, &pgproto3.StartupMessage{ProtocolVersion: pgproto3.ProtocolVersion32, Parameters: params}),
		encode(f, &pgproto3.GSSEncRequest{}, &pgproto3.SSLRequest{}, &pgproto3.CancelRequest{ProcessID: 7, SecretKey: []byte{1, 2, 3, 4}}),
		{0x7f, 0xff, 0xff, 0xff, 0, 3, 0, 0},
		{0, 0, 0, 9, 0, 3, 0, 0, 0},
		{0x16, 0x03, 0x01, 0x00, 0x10},
	}
	for _, s := range seeds {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		c := &fakeConn{r: bytes.NewReader(data)}
		op, err := readStartup(c)
		read := len(data) - c.r.Len()
		if max := (maxEncryptionRequests + 1) * maxStartupPacketLen; read > max {
			t.Fatalf("read %d bytes, more than %d", read, max)
		}
		if c.written.Len() > maxEncryptionRequests || strings.Trim(c.written.String(), "N") != "" {
			t.Fatalf("wrote %q", c.written.String())
		}
		if err != nil {
			if op != nil {
				t.Fatal("an opening and an error")
			}
			var se *startupError
			if !errors.As(err, &se) && !errors.Is(err, io.EOF) && !errors.Is(err, io.ErrUnexpectedEOF) {
				t.Fatalf("unexpected error %T %v", err, err)
			}
			var out bytes.Buffer
			if err := writeErrorResponse(&out, sqlStateProtocolViolation, "airlock: "+err.Error()); err != nil {
				t.Fatal(err)
			}
			msg, rerr := pgproto3.NewFrontend(&out, io.Discard).Receive()
			if e, ok := msg.(*pgproto3.ErrorResponse); rerr != nil || !ok || e.Code != sqlStateProtocolViolation {
				t.Fatalf("ErrorResponse does not decode: %v %v", msg, rerr)
			}
			return
		}
		switch op.kind {
		case openingStartup:
			if len(op.params) == 0 {
				t.Fatal("a startup without parameters")
			}
			for k := range op.runtimeParams() {
				if k == "user" || k == "database" || k == "replication" || strings.HasPrefix(k, "_pq_.") {
					t.Fatalf("runtime parameter %q passed on", k)
				}
			}
			again, err := readStartup(&fakeConn{r: bytes.NewReader(encode(t, &pgproto3.StartupMessage{
				ProtocolVersion: pgproto3.ProtocolVersion30, Parameters: op.params}))})
			if err != nil || !maps.Equal(again.params, op.params) {
				t.Fatalf("round trip: %v, %v != %v", err, again, op.params)
			}
		case openingCancel:
			if n := len(op.secretKey); n < 4 || n > 256 {
				t.Fatalf("secret key of %d bytes", n)
			}
		default:
			t.Fatalf("kind %d", op.kind)
		}
	})
}
