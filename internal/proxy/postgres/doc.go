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
//  2. on a CancelRequest, looks the key up among the synthetic keys of the
//     same Session and, if it is one, sends a cancel for the real backend
//     (over TLS when the upstream connection uses TLS); unknown keys are
//     ignored, as PostgreSQL ignores them;
//  3. on a StartupMessage, connects upstream with pgx's pgconn (TLS,
//     SCRAM-SHA-256, MD5 and cleartext are its job), as the account's user and
//     the resource's database whatever the client asked for, passing the
//     client's other parameters (application_name, client_encoding, options...)
//     on; a failure reaches the client as an ErrorResponse that never holds
//     the password;
//  4. hijacks the authenticated connection, sends the client a synthetic
//     AuthenticationOk, the upstream's ParameterStatus values, a synthetic
//     BackendKeyData (registered in the Session for cancels) and
//     ReadyForQuery, and relays bytes both ways with pooled 32 KiB buffers
//     until either side closes, the context ends or the Session is closed.
//
// Nothing the client receives comes from the upstream authentication
// exchange: no SASL or MD5 message, nor anything derived from the password,
// ever reaches it.
//
// # Sessions
//
// A Session is one access session: every client connection of it is served
// with the same *Session. It owns the map from synthetic cancel keys to real
// ones, so that a CancelRequest only ever cancels a query of the same
// session, and Session.Close ends every connection it serves (at expiry or
// when an administrator terminates the session).
//
// # Files
//
//   - config.go: Config, a resource account as the engine needs it, and its
//     translation into a *pgconn.Config that takes nothing from the
//     environment (PGPASSWORD, PGSSLMODE, ~/.pgpass...) and never falls back
//     to a connection without TLS.
//   - validate.go: Validate, a trial login, and the classification of
//     connection failures into tunnel.Result codes and messages.
//   - engine.go: Engine, its options, Serve and the byte relay.
//   - startup.go: readStartup, the parser of the client's opening packets.
//     It reads exactly the bytes of each packet and decodes them with
//     pgproto3's message types, rather than through a pgproto3.Backend, whose
//     buffered reader could swallow bytes that the client sent after its
//     StartupMessage and that belong to the relay.
//   - session.go: Session, its connections and its cancel keys.
//   - cancel.go: sending a CancelRequest to the upstream server.
package postgres
