// Package appconn holds app connections: the server's own logins to a
// database (PostgreSQL today), which secret rotations use to change users'
// passwords. They are not accounts for people: nobody opens a session with
// them.
//
// Creating or updating a connection logs in with it first, directly or
// through the gateway given; nothing is saved when that fails. A direct
// connection goes only to public addresses unless the server runs with
// AIRLOCK_ALLOW_INTERNAL_IP_CONNECTIONS=true, and never to the server's own
// store (guard.go: every resolved address is checked, and the connection
// goes to a checked address while TLS verifies the host name).
//
// With platform-managed credentials the server gives the connection's user
// a new random password at creation (ALTER ROLE with a SCRAM verifier, as
// account rotation does), so nobody knows it any more. The new password is
// sealed as pending before the database is touched and promoted once it
// logs in, so a password that was changed but not stored cannot happen:
// a cut-short attempt is settled at the next use by logging in with the
// pending password, then the original one. Such credentials cannot be read
// back or changed.
//
// guard.go checks addresses, service.go creates, changes and reads
// connections, api.go registers the HTTP operations.
package appconn
