// Package webconsole is the server side of the browser SQL console for
// PostgreSQL (issue 15, item 4): the server is the client of a session
// with access method web, exactly as `airlock db access` is the client of
// a CLI session.
//
// Opening a console (Manager.Open) makes a new ECDSA key in memory,
// starts a session with its certificate request (session.CreateWeb: the
// caller must be a member or admin of the project, the resource must be
// PostgreSQL, at most session.MaxWebSessions live web sessions per user
// per project), and connects with pgx's pgconn through the relay to the
// resource's gateway (relay.DialSession), with TLS and the session's client
// certificate as the CLI does. The gateway injects the credentials and
// records every statement in the session log, as for any client; nothing
// here records or sees the password.
//
// Limits (console.go): one statement batch at a time; a batch of SQL over
// MaxSQLBytes (1 MiB) is refused before it is sent; at most MaxRows rows
// of each result are shown: the batch's statements (split.go splits them)
// are sent with the extended protocol and Execute's row limit under one
// Sync, so the database sends no more and they run in one implicit
// transaction as a simple query would (a batch holding BEGIN ATOMIC goes
// as one simple query, whose extra rows are read and dropped); a statement
// timeout (the project's consoleStatementTimeout, 30 s by default) set as
// the connection's statement_timeout startup parameter, so the database
// enforces it; Cancel
// sends a real CancelRequest on a new connection of the same session; a
// console unused for IdleTimeout (10 minutes) ends.
//
// Ends (manager.go): a console ends, and ends its session with reason
// ended_by_user and a message saying why, when its page closes (the
// browser's event stream drops), when the user presses End session, when it
// is idle too long, or when the browser sends a request that is not one
// the console sends. A session ended elsewhere (expiry, an admin's
// terminate, logout, a revocation) is noticed within a second and closes
// the console; its page is told why. While a console lives, it records its
// session's client as seen (as the relay does for a CLI), so the session of
// a console whose server stopped ends as client_lost.
package webconsole
