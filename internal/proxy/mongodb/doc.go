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
//     the header was readable, and the connection is closed.
//     Memory is bounded: the body is read incrementally, into a buffer of
//     16 KiB at most that doubles as bytes arrive (so a declared length
//     costs nothing until it is sent), and every growth is first taken
//     from a budget of bytes shared by all connections
//     (EngineConfig.MemoryBudget, a common.Budget, 256 MiB unless the
//     gateway gives one) and given back once the message is answered. A
//     message the budget cannot hold is answered with code 146
//     (ExceededMemoryLimit) and the connection closed. Once a header has
//     come, the rest of its message must arrive within
//     EngineConfig.MessageTimeout (30 s), or the client is answered with
//     code 89 (NetworkTimeout) and cut off; an idle client between
//     messages is not;
//  2. at the first message, checks out one connection from the session's
//     driver topology for the Config (the driver does SRV lookup,
//     replica-set discovery and selection of the primary, TLS as the
//     resource says, and SCRAM-SHA-256 or SCRAM-SHA-1 against the auth
//     database; every TCP connection, monitoring included, is opened with
//     the engine's dialer, WithDialer, by which the gateway enforces its
//     target policy). The connection belongs to this client until it leaves,
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
//     credentials; connect without a password", without forwarding them.
//     It refuses, without forwarding them and recording the refusal: a
//     command document with a top-level field twice (in its body, in its
//     body and a document sequence, or in two sequences; in an OP_QUERY,
//     also in the $query wrapper), with code 2 (BadValue), since the
//     server and the session log could read different values (two $db:
//     the log would name one database and the command run in the other);
//     every command but the handshake while the session's recorder
//     reports that it cannot persist events (common.Session.RecorderErr,
//     sessionlog.HealthReporter), or cannot take the command's start
//     record (write-ahead, below), with code 1 and "the session log
//     cannot be written (why): new commands are refused until it can"
//     (fail closed); and a command whose statement is over the project's limit
//     when the project refuses such commands (see the session log below),
//     with code 10334 (BSONObjectTooLarge);
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
// document sequences as the fields they stand for, every entry of every
// batch whole (each document of an insert, each statement of an update or
// delete, each operation of a bulkWrite); the
// outcome (ok, error or unacknowledged; outcome unknown for a command cut
// by the session's end), the error's code and message (from the reply, its
// first write error or its write concern error), rows (the documents of
// cursor.firstBatch or nextBatch, added up over an exhaust stream, else n)
// and the duration. The pwd of createUser and updateUser is always recorded
// as "***"; with common.WithRedactValues(true) (or
// common.Session.SetRedactValues, from the next command on), so are the
// values of the documents a command writes (insert's documents, update's u,
// findAndModify's update, bulkWrite's document, updateMods and
// replacement), whose field names (update operators such as $set
// included) stay; filters (q, filter) stay visible. A client's own
// authentication commands are recorded without their document.
//
// When the recorder takes start records (sessionlog.WriteAheadRecorder:
// the gateway's spool), each recorded command's start (the event as
// above, with its own ID and no outcome) is handed to it before the
// command is forwarded; Begin returns once the start is in the spool's
// file, so a crash of the gateway after the command was forwarded cannot
// lose it (the spool delivers a start with no final event as "outcome
// unknown"). The final event names its start in StartID. The handshake
// and the other commands that are not recorded have no start; nor has a
// refused command, which is not forwarded.
//
// A statement is recorded whole up to the project's limit
// (common.Session.MaxStatementBytes, 1 MiB by default; it can change while
// the session is live). It is rendered one element or batch entry at a
// time into a common.Statement, so that a command of tens of megabytes is
// never held as text. A command over the limit is, as the project says
// (common.Session.OversizeStatements): refused, by default, with code
// 10334 (BSONObjectTooLarge) and "airlock: command of N bytes is over this
// project's recording limit of M bytes", nothing forwarded, and the
// refusal recorded (outcome error, code 10334) with the statement's ends;
// or forwarded and recorded by its first and last 8 KiB around "[N bytes,
// sha256 HEX]", the length and hash of the whole statement.
//
// # Files
//
//   - config.go: Config, its checks, and the driver options built from it,
//     which take TLS only from the resource's setting.
//   - validate.go: Validate, a trial login and ping through the same path
//     as Serve, the selection of a writable server, and the classification
//     of connection failures into tunnel.Result codes.
//   - engine.go: Engine, its options, Serve and the per-connection loop.
//   - wire.go: reading client messages within their memory bounds,
//     parsing them (duplicate fields included) and server replies, and
//     building OP_MSG and OP_REPLY answers.
//   - handshake.go: the rewriting of hello and the commands answered by
//     the engine.
//   - record.go: session-log events, statements (every entry, within the
//     project's limit) and their redaction, outcomes.
//   - session.go: a session's topologies, and the connection being served
//     (served) with its part of the session's end.
package mongodb
