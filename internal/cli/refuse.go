//lint:file-ignore SA1019 OP_QUERY and OP_REPLY are deprecated, but old clients still open with an OP_QUERY hello: it must be answered.

package cli

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"time"

	"github.com/jackc/pgx/v5/pgproto3"
	"go.mongodb.org/mongo-driver/v2/x/bsonx/bsoncore"
	"go.mongodb.org/mongo-driver/v2/x/mongo/driver/wiremessage"
)

// refusal is what the local proxy tells a client it will not serve, in the
// client's own protocol, so that the reason shows in psql, mongosh or a GUI
// instead of "server closed the connection unexpectedly".
type refusal struct {
	// Message is shown to the client, prefixed "airlock: ".
	Message string
	// SQLSTATE is the PostgreSQL error code: 28000 (invalid authorization)
	// for a user the proxy does not serve, 08006 when the server is away.
	SQLSTATE string
	// MongoCode and MongoCodeName are the MongoDB error: 13 Unauthorized,
	// or 6 HostUnreachable.
	MongoCode     int32
	MongoCodeName string
}

// refuseOtherUser is the refusal of a connection from an OS user other than
// the one who started `airlock db access`.
func refuseOtherUser(owner, peer string) refusal {
	return refusal{
		Message:  fmt.Sprintf("this proxy serves only %s, who started `airlock db access`; you are %s", owner, peer),
		SQLSTATE: "28000", MongoCode: 13, MongoCodeName: "Unauthorized",
	}
}

// refuseUnavailable is the refusal of a connection that cannot reach the
// gateway now (the Airlock server is away, or the gateway refused).
func refuseUnavailable(why string) refusal {
	return refusal{Message: why, SQLSTATE: "08006", MongoCode: 6, MongoCodeName: "HostUnreachable"}
}

// refuseTimeout bounds how long a refused client may take to send its
// opening message.
const refuseTimeout = 10 * time.Second

// maxRefusedMessage is the largest MongoDB opening message read before
// answering; a hello is a few hundred bytes.
const maxRefusedMessage = 1 << 20

// refuse reads the client's opening message and answers it with r as an
// error in the protocol of kind ("postgres" or "mongodb"). It does not
// close conn.
func refuse(conn net.Conn, kind string, r refusal) error {
	_ = conn.SetDeadline(time.Now().Add(refuseTimeout))
	if kind == "mongodb" {
		return refuseMongo(conn, r)
	}
	return refusePostgres(conn, r)
}

func refusePostgres(conn net.Conn, r refusal) error {
	be := pgproto3.NewBackend(conn, conn)
	// A client may ask for TLS, then GSS encryption, before its startup
	// message: say no to each (the proxy is local and plain).
	for range 3 {
		msg, err := be.ReceiveStartupMessage()
		if err != nil {
			return fmt.Errorf("reading the client's startup message: %w", err)
		}
		switch msg.(type) {
		case *pgproto3.SSLRequest, *pgproto3.GSSEncRequest:
			if _, err := conn.Write([]byte{'N'}); err != nil {
				return err
			}
			continue
		case *pgproto3.CancelRequest:
			return nil // a cancel request gets no answer
		}
		be.Send(&pgproto3.ErrorResponse{Severity: "FATAL", SeverityUnlocalized: "FATAL", Code: r.SQLSTATE, Message: "airlock: " + r.Message})
		return be.Flush()
	}
	return errors.New("the client sent no startup message")
}

func refuseMongo(conn net.Conn, r refusal) error {
	var hb [16]byte
	if _, err := io.ReadFull(conn, hb[:]); err != nil {
		return fmt.Errorf("reading the client's first message: %w", err)
	}
	length := int32(binary.LittleEndian.Uint32(hb[0:4]))
	requestID := int32(binary.LittleEndian.Uint32(hb[4:8]))
	op := wiremessage.OpCode(binary.LittleEndian.Uint32(hb[12:16]))
	if length < 16 || length > maxRefusedMessage {
		return fmt.Errorf("the client's first message declares %d bytes", length)
	}
	if _, err := io.CopyN(io.Discard, conn, int64(length-16)); err != nil {
		return fmt.Errorf("reading the client's first message: %w", err)
	}
	doc := bsoncore.NewDocumentBuilder().
		AppendDouble("ok", 0).
		AppendString("errmsg", "airlock: "+r.Message).
		AppendInt32("code", r.MongoCode).
		AppendString("codeName", r.MongoCodeName).
		Build()
	var b []byte
	switch op {
	case wiremessage.OpMsg:
		var idx int32
		idx, b = wiremessage.AppendHeaderStart(nil, 0, requestID, wiremessage.OpMsg)
		b = wiremessage.AppendMsgFlags(b, 0)
		b = wiremessage.AppendMsgSectionType(b, wiremessage.SingleDocument)
		b = append(b, doc...)
		b = bsoncore.UpdateLength(b, idx, int32(len(b[idx:])))
	case wiremessage.OpQuery:
		var idx int32
		idx, b = wiremessage.AppendHeaderStart(nil, 0, requestID, wiremessage.OpReply)
		b = wiremessage.AppendReplyFlags(b, 0)
		b = wiremessage.AppendReplyCursorID(b, 0)
		b = wiremessage.AppendReplyStartingFrom(b, 0)
		b = wiremessage.AppendReplyNumberReturned(b, 1)
		b = append(b, doc...)
		b = bsoncore.UpdateLength(b, idx, int32(len(b[idx:])))
	default:
		return fmt.Errorf("the client's first message has op code %d, not OP_MSG or OP_QUERY", op)
	}
	_, err := conn.Write(b)
	return err
}
