// Package postgres is the gateway's PostgreSQL engine: it takes a client
// connection that carries no password, logs in to the real database with the
// account's stored credentials, and from then on relays the client's bytes.
//
// # How a connection is served
//
// The client (psql, a driver, pgAdmin...) reaches the gateway through the
// CLI's local proxy and an end-to-end mTLS tunnel, so by the time Engine.Serve
// sees the connection it is a plain, already authenticated net.Conn. Serve
//
//  1. reads the client's opening packet, bounded in size (10,000 bytes, as
//     PostgreSQL does) and in time (EngineConfig.StartupTimeout), and answers
//     SSLRequest and GSSENCRequest with 'N': the tunnel is already encrypted;
//     a startup parameter whose name or value holds a control character
//     (CR, LF, NUL, any byte below 0x20, DEL), a name over 128 bytes or a
//     value over 4 KiB is refused with a FATAL 08P01 that names it, and
//     nothing is sent upstream;
//  2. on a CancelRequest, looks the key up among the synthetic keys of the
//     same session and, if it is one, sends a cancel for the real backend
//     (over TLS when the upstream connection uses TLS); unknown keys are
//     ignored, as PostgreSQL ignores them;
//  3. on a StartupMessage, refuses what the access does not give rather
//     than silently give something else (startup.go, check): a
//     replication connection (replication=database, true, on, yes, 1...)
//     with a FATAL 0A000 "airlock: replication connections are not
//     supported through Airlock ..."; a database other than the
//     resource's with a FATAL 28000 "airlock: this access is to database
//     "app" of resource "payments-db", not "postgres"; connect with
//     dbname=app". A client that sends no database, or the resource's, is
//     served (libpq sends the user name when given no dbname: a bare psql
//     is told which dbname to use). The user name the client sends is
//     ignored. Otherwise it connects upstream with pgx's pgconn (TLS and
//     SCRAM-SHA-256 are its job), through the engine's dialer (WithDialer:
//     the gateway's target policy), as the account's user and the
//     resource's database, passing the client's other parameters
//     (application_name, client_encoding, options...) on; a failure reaches the client as an ErrorResponse that never holds
//     the password. The password goes only where it can be checked: pgconn's
//     require_auth lets the server have it through SCRAM-SHA-256 (with
//     channel binding when the server offers it over TLS) and, only when an
//     organization admin allowed them for the resource (Config.AuthMethods,
//     tunnel.Target.AuthMethods), MD5 or cleartext; a server that asks for
//     anything else, or lets the user in without any exchange (trust), gets
//     no byte derived from the password and the login fails saying which
//     method it asked for and who can allow it. A guard on the connection
//     (guard.go) checks that the server's answers to the login are
//     PostgreSQL messages of the login's kinds and of bounded length (64
//     KiB): a service that answers otherwise (mail, web, noise) has its
//     connection closed at its first bytes; it received the StartupMessage
//     and nothing else (not even pgconn's CancelRequest), and the error
//     says "is not a PostgreSQL server" without repeating what it sent.
//     Validate and the terminations of backends log in the same way;
//  4. hijacks the authenticated connection, sends the client a synthetic
//     AuthenticationOk, the upstream's ParameterStatus values, a synthetic
//     BackendKeyData (registered in the session for cancels) and
//     ReadyForQuery, and relays bytes both ways with pooled 32 KiB buffers
//     until either side closes, the context ends or the session ends;
//     when the Session has a recorder, it relays while watching the
//     protocol, to record the session log (below).
//
// Nothing the client receives comes from the upstream authentication
// exchange: no SASL or MD5 message, nor anything derived from the password,
// ever reaches it.
//
// # Sessions
//
// A session is a common.Session (proxy/common), shared with the other
// protocols: every client connection of it is served with the same
// *common.Session. This package keeps in it (common.Session.Value) the map
// from synthetic cancel keys to real ones, so that a CancelRequest only
// ever cancels a query of the same session, and implements the
// common.Conn contract by which common.Session.End ends each connection:
//
//  1. Interrupt: the relay stops reading the client (no new request
//     reaches the database) and stops forwarding the server's messages to
//     the client after the one in flight, while it still reads and records
//     them. If a request waits for its answer, the engine sends the
//     database a CancelRequest with the upstream backend key (as a client's
//     Ctrl+C does) and waits up to 500 ms for the answer: the 57014 error
//     and ReadyForQuery, seen by the protocol observer. If none comes, or
//     nothing is recorded (so that nothing can tell), it terminates the
//     backend with pg_terminate_backend over a new connection logged in as
//     the same account (a role may terminate its own backends), waiting up
//     to a second for the backend to exit. It then closes the upstream
//     connection: PostgreSQL rolls back an open transaction when its
//     connection closes, so no lock outlives the session and no statement
//     of an ended session commits afterwards.
//  2. Goodbye: if what the client has received ends at a message boundary
//     (which only the observer can tell, so only when the session is
//     recorded), the client is sent an ErrorResponse with severity FATAL,
//     SQLSTATE 57P01 (admin_shutdown) and the message "airlock: " and the
//     reason in words ("session terminated by an administrator", "session
//     expired at 2026-12-03T16:00:00Z"...). A running statement's client
//     gets it as that statement's error; an idle client at its next
//     request. Late bytes from a client that ignores it are discarded for
//     250 ms, then
//  3. Close: both connections are closed.
//
// Writes to a client that does not read are bounded (300 ms), so that a
// connection ends within about a second of the decision.
//
// # The session log
//
// A session made with common.WithRecorder records, for each connection, events of
// sessionlog's kinds: connect when the login upstream succeeded or failed,
// or the client's request was refused (its statement is what the client
// asked for, as libpq's conninfo: "user=alice database=app
// application_name=psql", with replication if it asked for it; its
// database is the resource's), disconnect when the connection ended (outcome ok; terminated when the
// session's end ended it, with the end's reason as the error code, such as
// "expired", and the words the client was told as the error message; or
// error when the relay stopped because it could not follow the protocol),
// and one event per request:
//
//   - one per simple Query message (kind query): a string of several
//     statements is ONE event, whose outcome lists the statements' command
//     tags separated by "; " ("INSERT 0 2; SELECT 5") and whose rows are
//     their sum; if one fails, the outcome is "error" followed by the tags
//     of the statements completed before it ("error after SELECT 1;
//     SELECT 1"; just "error" when the first one failed), with its
//     SQLSTATE and message, and rows count the statements completed
//     before it (so, too, "cancelled after ..." and "outcome unknown
//     after ..."). PostgreSQL runs such a string as one transaction
//     unless it holds its own BEGIN or COMMIT: the statements before a
//     failure are then rolled back, though their tags show;
//   - one per Execute (kind execute), with the text of the statement the
//     server ran and the values bound to it: text values as they are,
//     binary ones decoded (below), NULL as NULL, each cut at 1 KiB.
//     Statements are followed as the server confirms them, in protocol
//     order: named prepared statements per connection, the unnamed
//     statement replaced by each Parse (and dropped by a simple Query),
//     portals, SQL PREPARE, DEALLOCATE and DECLARE CURSOR; an Execute of a
//     statement not known is recorded as [unknown prepared statement "name"]
//     or [unknown portal "name"], never with another statement's text;
//   - one per FunctionCall (kind function_call, "function call oid N" and
//     its arguments, binary ones as \x and hexadecimal digits);
//   - a COPY, in a Query or an Execute, makes its event copy_in or copy_out,
//     with the bytes of CopyData payload counted (never the data).
//
// Binary values (pgx sends most typed values so) are decoded with pgx's
// pgtype, by the types of the statement's parameters: those its Parse
// message gave, or, where it left them unspecified (0), those of the
// server's ParameterDescription when the statement was described (pgx
// describes each statement it prepares, named or not, before it binds
// it). A value is written as PostgreSQL prints it (21, 0.1, t, a uuid,
// 123.4500, {{1,2},{3,4}}, json as sent, bytea as \x and hexadecimal
// digits...), but for dates and times, in RFC 3339: 2024-02-29,
// 2024-02-29T13:04:05 for a timestamp, 2024-02-29T12:04:05.123456Z for a
// timestamptz, in UTC. A value whose type is not known (a type pgtype
// lacks, such as money or an enum, or a statement neither typed nor
// described, as pgconn's ExecParams sends without types), that does not
// decode, or larger than 16 KiB, is recorded as \x and hexadecimal digits
// (of its first 512 bytes). The values are decoded on the server side of
// the relay, when the Bind is answered (or skipped), as the statement's
// types are only then known for sure.
//
// Each event has the time the request was forwarded, the connection's id (a
// UUIDv7 made per connection), the session's id, its own UUIDv7, the
// outcome (the command tag, "error", "ok" for a FunctionCall, "empty" for
// an empty statement, "suspended" for an Execute stopped by its row limit,
// "skipped", "cancelled" or "outcome unknown", see below), rows (DataRow
// messages counted, or the
// count of the command tag for INSERT, UPDATE, DELETE, MERGE, COPY...), and
// the duration until the outcome.
//
// Requests are paired with answers by protocol order, never by looking
// anything up: the client side queues each request (Query, Parse, Bind,
// Describe, Execute, Close, Sync, FunctionCall) before forwarding it, and
// the server side completes the oldest one with each answer: ParseComplete,
// BindComplete, CloseComplete, RowDescription or NoData end a Parse, Bind,
// Close or Describe; CommandComplete, EmptyQueryResponse, PortalSuspended
// or an error end an Execute; ReadyForQuery ends a Query, a FunctionCall
// or a Sync. Pipelining (a pgx Batch sends all its Bind/Describe/Execute
// messages, then one Sync) is what the queue is for. After an error in the
// extended protocol PostgreSQL skips every message up to the next Sync;
// when its ReadyForQuery comes, each Execute skipped is recorded with
// outcome "skipped" (with its own statement and values), so a batch of 100
// whose 30th statement fails reads: 29 command tags, one error, 70 skipped.
// The error of a Parse, Bind or Describe is recorded on the Execute it kept
// from running, the first one after it, with that statement's text (or, if
// there is none, such as pgx's Prepare, on an event for the failed message
// itself). An error at a Sync (a deferred constraint at the implicit
// COMMIT) is recorded as "[implicit commit at Sync]". Outcomes are what the
// server answered for each statement: a pipeline is one implicit
// transaction, so the statements before a failure are rolled back even
// though their events show their tags.
//
// # Write-ahead
//
// When the recorder takes start records (sessionlog.WriteAheadRecorder:
// the gateway's spool), the client side hands it the start of each Query,
// Execute and FunctionCall before forwarding the message: an event of the
// same kind with its own ID, the time, the statement (masked as the final
// event's is) and, for an Execute or a FunctionCall, its values; no
// outcome. Begin returns once the start is in the spool's file, so a crash
// of the gateway after the statement was forwarded cannot lose it (the
// spool delivers a start with no final event as "outcome unknown"). The
// final event, recorded when the answer comes as above, names its start
// in StartID. The client side knows an Execute's statement and values
// before the server confirms them: it follows the Parse, Bind and Close
// messages (and a simple Query's SQL PREPARE, DECLARE, DEALLOCATE,
// DISCARD and CLOSE) as the client sends them, assuming they succeed, in
// memory bounded like the server side's (the statements' text by 16 MiB,
// 1,024 named portals); it decodes a Bind's binary values by the types of
// the Parse, or of the server's ParameterDescription once the server side
// has seen it (pgx describes a statement, and waits, before it binds it),
// else records them in hexadecimal. Where its guess is wrong, the
// statement failed or was skipped, and the final event says what ran. A
// start the recorder cannot take refuses its statement (below); what pgx
// pipelines is started message by message, so the statements before the
// refused one are forwarded.
//
// When the connection closes, the requests still waiting for an answer are
// recorded with outcome "outcome unknown": the database may have run them,
// even committed them, and did not say (or "error" if an error had come,
// such as the FATAL of a backend terminated by someone else; "skipped" for
// those the server was skipping). A request stopped by the cancel the
// engine sent when its session ended is recorded with outcome "cancelled",
// with the server's 57014 error; a client's own cancel (Ctrl+C) gives an
// "error" with 57014.
//
// Passwords are masked before anything is recorded: MaskStatement replaces
// the literal after PASSWORD (CREATE or ALTER ROLE or USER, user mappings,
// verifiers such as psql's \password sends, conninfo strings) with '***',
// also where that SQL is itself in a literal: the body of a DO block or a
// function ($$...$$ or '...'), an EXECUTE string (the password's quotes
// doubled inside it), a string concatenated after one that ends with PASSWORD
// ('... PASSWORD ' || quote_literal('secret')) and the arguments of a
// format() string with a placeholder after PASSWORD (format('ALTER ROLE %I
// PASSWORD %L', 'bob', 'secret') masks 'bob' and 'secret'), nested up to
// four levels; and the values bound to a statement that mentions a password are all
// recorded as ***. An error message about such a statement has the masked
// values replaced too. The project's patterns (common.WithMaskPatterns,
// changed on a live session with common.Session.SetMaskPatterns) are then
// applied to statements, values and error messages, as they are when each
// is seen: a change applies from the next statement on. The server itself
// receives the statement unchanged.
//
// What masking cannot catch, as it reads the statement's text and not what
// the server will run:
//   - a password built at run time: from a variable, a table, a function's
//     result, chr() or decode(), pieces concatenated, or a format() string
//     kept in a variable rather than written in the call;
//   - SQL nested deeper than four levels of literals;
//   - a password handed to something other than PASSWORD, a user mapping,
//     a connection string or a verifier (an extension's function that takes
//     one as an argument, a COPY FROM STDIN of a table of passwords: COPY
//     data is never recorded);
//   - a password in an UPDATE or INSERT of a column not named password,
//     written as a literal or bound as a value of a statement that does not
//     mention PASSWORD.
//
// SQL inside an E'...' string is not read: such a string that mentions a
// password is masked whole. The last part of a statement over the recording
// limit is withheld whole when the statement mentions a password anywhere.
// The project's own patterns (common.WithMaskPatterns) are the remedy for
// values of a known shape.
//
// The relay is built for speed: each direction reads whatever the
// connection has into a pooled buffer, lets its observer find the message
// boundaries there (a 5-byte header: type and length), and forwards the
// whole chunk in one write; no message is re-encoded. Only Query, Parse,
// Bind, Describe, Execute, Close and FunctionCall from the client, and
// CommandComplete, ErrorResponse, ReadyForQuery and ParameterDescription
// from the server are decoded (pgproto3's decoders, but for Execute, parsed
// by hand to avoid allocating, and ParameterDescription, only when it gives
// types the Parse did not); DataRow and CopyData are only counted, with no
// allocation, and everything else is only skipped. A message body is copied only when
// it must be decoded and spans two reads. A client
// that pipelines more than 262,144 requests without reading the answers
// has its connection closed, and so does a stream with an invalid message
// length: the engine does not relay what it cannot record.
//
// # Statement limits and failing closed
//
// A statement is recorded whole up to the project's recording limit
// (Config.MaxStatementBytes, else the session's
// tunnel.Header.MaxStatementBytes, else 1 MiB; for a Parse, the limit
// counts the statement's name and parameter types too). A Query or Parse
// whose statement is over it is decided on at its header, before any of
// its bytes is forwarded:
//
//   - by default (tunnel.OversizeRefuse) it is not forwarded: it is read as
//     it passes, keeping only its first and last 4 KiB and its running
//     SHA-256, and recorded with outcome "refused", SQLSTATE 54000 and the
//     statement as its first 4 KiB, "… [N bytes, sha256 H] …" and its last
//     4 KiB; the client is told "airlock: statement of N bytes is over this
//     project's recording limit of M bytes; ask a project admin to raise
//     it";
//   - with tunnel.OversizeRecordEnds it is forwarded and recorded in that
//     same form, with its outcome, so that a DROP TABLE behind a megabyte
//     of padding shows in the log.
//
// While the session's recorder reports that it cannot persist events
// (sessionlog.HealthReporter), the next Query, Parse, Bind, Execute or
// FunctionCall is not forwarded, whatever it is: the client is told
// "airlock: the session log cannot be written, so statements are refused
// until it can (why)" with SQLSTATE 58030, and an event with outcome
// "refused" is offered to the recorder. New connections are served; each
// is refused at its first statement until the recorder recovers. A
// Query, Execute or FunctionCall whose start record the recorder cannot
// take (Begin fails: the spool is full, closed, or its disk fails) is
// refused the same way, with Begin's words, and recorded as refused with
// its statement: its bytes are held back from its header on (those of a
// message that began in an earlier read were forwarded, but without its
// end the server does not run it).
//
// A refusal ends the connection: the engine waits (up to 5 s) for the
// answers to the client's earlier requests to reach it, then sends the
// ErrorResponse, with severity FATAL, at a message boundary, and closes
// both connections. The server never sees the refused message; closing
// its connection rolls back an open transaction, so nothing of the
// refused statement's transaction commits. (A non-fatal error would need
// the engine to answer, in protocol order, every message the client
// pipelined after it.)
//
// # Memory
//
// What the engine holds per connection is bounded whatever the client
// declares: the opening packet (10,000 bytes); the relay's buffers (32 KiB
// each way, 2 KiB while idle); a decoded message's body, gathered only when
// it spans reads: a Query or Parse up to the recording limit (1 MiB by
// default: the project's limit is the bound), other decoded messages up to
// 1 MiB; a Bind larger than that is parsed as it passes (bigbind.go), its
// values recorded as a small Bind's are, keeping at most 1 MiB of them (a
// value past that is recorded by its size); a larger FunctionCall has its
// arguments not recorded (its first 8 KiB is kept); a statement over
// the limit, 8 KiB and a hash; the requests awaiting answers (262,144 at
// most) and the text of the prepared statements (16 MiB). Nothing is
// allocated by a declared length. A client that stops in the middle of a
// message (its header read) for EngineConfig.MessageTimeout (30 s) has its
// connection closed, recorded or not; between messages a client may idle.
// Across connections, the bytes held for large messages (64 KiB and more,
// gathered to be recorded; a large Bind counts 1 MiB) are bounded by
// EngineConfig.MaxBufferedBytes (128 MiB): while it is spent, a new large
// message is refused like a statement over the limit, with SQLSTATE 53200
// and "airlock: the gateway is holding too many large statements right now
// ...; try again shortly", and recorded as refused. A connection gives its
// share back when its message ends or it closes. 50 connections declaring
// 48 MB each hold about 3 MB in all.
//
// # Files
//
//   - config.go: Config, a resource account as the engine needs it, and its
//     translation into a *pgconn.Config that takes nothing from the
//     environment (PGPASSWORD, PGSSLMODE, ~/.pgpass...) and never falls back
//     to a connection without TLS.
//   - validate.go: Validate, a trial login, and the classification of
//     connection failures into tunnel.Result codes and messages.
//   - engine.go: Engine (a common.Engine), its options, Serve and the
//     relay: bytes only, or observed, for the session log, with the
//     server->client pump that can be drained to a message boundary when
//     the session ends.
//   - observe.go: the protocol observer: the scanner that finds messages in
//     the relayed chunks, and the client and server sides that queue
//     requests and complete them with the server's answers.
//   - record.go: the session log of one connection: the queue of pending
//     requests, the prepared statements (with their parameters' types)
//     and portals, and the events.
//   - param.go: the binary values of a Bind, kept until the server answers
//     it, and their decoding with pgtype by the parameters' types.
//   - mask.go: MaskStatement, the masking of passwords and project patterns.
//   - guard.go: the login guard, which ends a login whose server does not
//     answer as PostgreSQL.
//   - bigbind.go: the parser of a Bind larger than 1 MiB, as its bytes pass.
//   - writeahead.go: the start records of write-ahead recording, and the
//     client side's view of the prepared statements and portals they
//     need.
//   - oversize.go: the statement limits, a statement over the limit read in
//     bounded memory, and the refusals (limit, session log unwritable).
//   - startup.go: readStartup, the parser of the client's opening packets,
//     the check of the startup parameters, and check, which refuses what
//     the access does not give (replication, another database).
//     It reads exactly the bytes of each packet and decodes them with
//     pgproto3's message types, rather than through a pgproto3.Backend, whose
//     buffered reader could swallow bytes that the client sent after its
//     StartupMessage and that belong to the relay.
//   - session.go: a session's cancel keys, and the connection being served
//     (served) with its part of the session's end: Interrupt, Goodbye,
//     Close.
//   - cancel.go: sending a CancelRequest to the upstream server, and
//     terminating a backend with pg_terminate_backend.
package postgres
