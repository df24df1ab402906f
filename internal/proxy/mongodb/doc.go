// Package mongodb is the gateway's MongoDB engine: it takes a client
// connection that carries no credentials, draws an upstream connection
// authenticated with the account's stored credentials from the official Go
// driver, and relays the client's commands on it.
//
// # How a connection is served
//
// The client (mongosh, Compass, a driver) reaches the gateway through the
// CLI's local proxy and an end-to-end mTLS tunnel, so by the time
// Engine.Serve sees the connection it is a plain net.Conn. The client is
// given a URI with directConnection=true and no credentials. Serve
//
//  1. reads the client's wire messages one at a time: a 16-byte header,
//     whose length must be at least 16 and at most the server's
//     maxMessageSizeBytes (DefaultMaxMessageSize, 48 MB, until the server
//     has said), then the body, parsed with the driver's wiremessage and
//     bsoncore helpers: OP_MSG (a body section, document sequences, the
//     checksum flag) and OP_QUERY commands on "db.$cmd" (legacy hello).
//     OP_COMPRESSED is refused: compression is stripped from the
//     handshake, so clients do not use it. A message that breaks the
//     protocol (a length out of bounds, an unknown op code, invalid BSON,
//     an unknown required flag) is answered with ok: 0 and an errmsg where
//     the header was readable, and the connection is closed;
//  2. at the first message, checks out one connection from the session's
//     driver topology for the Config (the driver does SRV lookup,
//     replica-set discovery and selection of the primary, TLS as the
//     resource says, and SCRAM-SHA-256 or SCRAM-SHA-1 against the auth
//     database). The connection belongs to this client until it leaves,
//     and is then closed, never returned to the pool. If it cannot be
//     made, the client's message is answered with the reason (code 18
//     AuthenticationFailed for a refused login, 6 HostUnreachable
//     otherwise) and the connection ends;
//  3. answers the handshake (hello, isMaster, ismaster, in OP_MSG or
//     OP_QUERY) by sending the server a hello without the client's
//     client metadata, compression, saslSupportedMechs,
//     speculativeAuthenticate, topologyVersion and maxAwaitTimeMS, and
//     giving the client the server's reply without compression,
//     saslSupportedMechs, speculativeAuthenticate, topologyVersion or any
//     replica-set membership (hosts, setName, primary, me...), as a
//     writable standalone: the client talks to one local port whatever
//     the deployment. The server's limits (maxMessageSizeBytes,
//     maxBsonObjectSize, maxWriteBatchSize) and wire versions are passed
//     on. An OP_QUERY is answered with an OP_REPLY;
//  4. answers the client's own saslStart, saslContinue, authenticate,
//     logout and getnonce with code 18 and "Airlock injects the
//     credentials; connect without a password", without forwarding them;
//  5. forwards every other OP_MSG as it came, and relays the server's
//     reply: requestIDs need no mapping, since the upstream connection
//     serves this client only. A reply is paired with its request by
//     responseTo; a reply to anything else is skipped (FerretDB answers
//     requests sent with moreToCome). A request with moreToCome (w: 0) has
//     no reply; an exhaust cursor (exhaustAllowed) has its replies relayed
//     until one comes without moreToCome. Other OP_QUERY commands are
//     sent as OP_MSG and answered with an OP_REPLY.
//
// The connection is sequential: a client sends a request and waits for its
// answer, which is what drivers do on one connection.
//
// Because clients see a standalone, drivers do not offer them multi-document
// transactions or retryable writes through the gateway.
//
// # Sessions
//
// A session is a common.Session (proxy/common), shared with the other
// protocols: every client connection of it is served with the same
// *common.Session. This package keeps in it (common.Session.Value) one
// driver topology per Config, so that discovery and monitoring happen once
// for all its connections (a rotated password makes a new one), and
// disconnects them when the session ends. It implements the common.Conn
// contract by which common.Session.End ends each connection: Interrupt
// stops reading the client and closes the upstream connection under the
// command in progress (the driver closes a connection whose operation's
// context ends), so the server stops serving it; the connection's own loop
// then answers that command, if the client waits for a reply, with ok: 0,
// code 11601 (Interrupted, which drivers do not retry) and "airlock: " and
// the reason in words ("session terminated by an administrator"...), and
// records it with outcome "outcome unknown" (the server may have done it).
// Goodbye adds nothing: the protocol has no message a server sends unasked,
// so an idle client's connection is only closed (Close). Writing to a
// client that does not read is bounded (300 ms).
//
// # The session log
//
// A session made with common.WithRecorder records, for each connection, a
// connect event when the upstream connection was made or could not be, a
// disconnect event at the end (outcome ok; terminated when the session's
// end ended it, with the end's reason as the error code and the words the
// client was told as the error message; or error), and one event of kind
// command per command but hello, isMaster, ping, buildInfo, getLastError
// and endSessions: the command's name, its $db, its collection (the
// command's value when it is a string, getMore's collection), the command
// document as relaxed extended JSON without the driver's bookkeeping (lsid,
// $clusterTime, $db, txnNumber, $readPreference, apiVersion...), with
// document sequences as the fields they stand for, cut at 16 KiB; the
// outcome (ok, error or unacknowledged; outcome unknown for a command cut
// by the session's end), the error's code and message (from the reply, its
// first write error or its write concern error), rows (the documents of
// cursor.firstBatch or nextBatch, added up over an exhaust stream, else n)
// and the duration. The pwd of createUser and updateUser is always recorded
// as "***"; with common.WithRedactValues(true) (or
// common.Session.SetRedactValues, from the next command on), so are the
// values of the documents a command writes (insert's documents, update's u,
// findAndModify's update), whose field names stay. A client's own
// authentication commands are recorded without their document.
//
// # Files
//
//   - config.go: Config, its checks, and the driver options built from it,
//     which take TLS only from the resource's setting.
//   - validate.go: Validate, a trial login and ping through the same path
//     as Serve, the selection of a writable server, and the classification
//     of connection failures into tunnel.Result codes.
//   - engine.go: Engine, its options, Serve and the per-connection loop.
//   - wire.go: reading and parsing client messages and server replies,
//     and building OP_MSG and OP_REPLY answers.
//   - handshake.go: the rewriting of hello and the commands answered by
//     the engine.
//   - record.go: session-log events, statements and their redaction,
//     outcomes.
//   - session.go: a session's topologies, and the connection being served
//     (served) with its part of the session's end.
package mongodb
