// Package common holds what the protocol engines (proxy/postgres,
// proxy/mongodb) share, so that each protocol package holds only what is
// specific to its protocol. The pattern is Teleport's lib/srv/db/common: one
// small Engine interface that every protocol implements, and one session
// type that the gateway keeps in a single registry whatever the protocol.
//
// # Engines and sessions
//
// An Engine serves the client connections of one resource kind
// (Engine.Kind): it validates a target's credentials and serves a client
// connection of a Session with a target (HandleConnection). The gateway
// keeps one Engine per kind and one map of live Sessions, and hands each
// data stream to the Engine of its target's kind, with the target the
// server sent for that very connection (the server authorizes every
// connection and sends the account's current credentials).
//
// A Session is one access session on the gateway. It holds what every
// protocol needs: its id, the recorder of its session log, the project's
// mask patterns and the redaction of written values (both can be changed
// while the session is live, atomically, and apply from each connection's
// next statement on), its live connections, and state a protocol keeps per
// session (Session.Value: PostgreSQL's synthetic cancel keys, MongoDB's
// driver topologies), which is closed when the session ends.
//
// # Ending a session
//
// A session ends in one way, Session.End(ctx, reason, message), whatever
// the reason (a tunnel.End* constant: terminated by an administrator, ended
// by its user, expired, revoked, client or gateway lost, gateway
// shutdown). End runs once: it refuses new connections, then, for every
// connection at once, calls the three methods of the Conn contract that
// each protocol implements, in this order:
//
//  1. Interrupt stops the work: no more requests are forwarded, what runs
//     upstream is cancelled (PostgreSQL: a CancelRequest, then
//     pg_terminate_backend if the backend does not stop within 500 ms;
//     MongoDB: the upstream connection is closed under the pending
//     command), and the upstream connection is closed, which rolls back an
//     open transaction. Nothing of an ended session commits afterwards.
//  2. Goodbye tells the client why, with an error of its protocol where
//     the protocol allows one ("airlock: " and the message).
//  3. Close closes both sides.
//
// End returns when every connection's Serve has returned (or ctx ends), so
// that the gateway answers the server's terminate stream only once the
// session's connections are gone. The engines record the end's reason and
// message on each connection's disconnect event.
//
// # Statement limits, fail closed, bounded memory
//
// A Session also holds the project's limit on a recorded statement
// (WithStatementLimit, SetStatementLimit while live; MaxStatementBytes,
// default 1 MiB, and OversizeStatements: refuse, the default, or record the
// ends). Statement collects a statement's text in bounded memory: whole up
// to the limit, beyond it the first and last StatementEndsBytes around a
// marker "[N bytes, sha256 HEX]". RecorderErr says why the session's
// recorder cannot persist events (sessionlog.HealthReporter); while it
// returns an error the engines refuse the session's new statements and
// forward nothing. Budget is a semaphore of bytes that bounds what the
// engines buffer of client messages across connections; a gateway shares
// one among its engines.
//
// # Also here
//
// DescribeTLSError turns TLS failures into messages a user can act on;
// Redact removes a password from a message as a last line of defence;
// DialFunc is the dialer, enforcing the gateway's target policy, that every
// engine uses for upstream connections;
// Linger and LingerClose let an error written to a client reach it before
// the connection closes (conn.go).
package common
