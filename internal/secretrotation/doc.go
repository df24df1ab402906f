// Package secretrotation rotates database credentials that applications
// read from the secrets store: dual-user PostgreSQL credentials rotation.
//
// Two database users take turns. A rotation gives the inactive user a new
// random password (ALTER ROLE with a SCRAM verifier, through the app
// connection: appconn.SetUserPassword, which then logs in as the user with
// it), and then, in one store transaction, writes the user's name and
// password into the two mapped secrets and makes it the active user. So the
// credentials an application holds keep working until the rotation after
// next: the previous user's password does not change in the rotation that
// replaces it.
//
// The new password is sealed as pending before the database is touched. A
// rotation cut short (a crash, a lost answer) leaves the published secrets
// as they were, still working; the next run logs in with the pending
// password and publishes it when it works, else drops it and starts over.
// Failures are recorded on the rotation and in the audit log (the first
// after a success is also emailed to the project's admins when the server
// has SMTP: notify.go), and retried
// with backoff by the jobs package (kind secret.rotate, one job per
// rotation: once across replicas; a time missed while the server was down
// runs at its next start).
//
// A rotation is due interval days after the date of the last one, at
// rotate-at in its time zone (time.Date in that zone, so 02:00 stays 02:00
// local across daylight-saving changes). The mapped secrets belong to the
// rotation: they cannot be written, restored or deleted by hand.
//
// Preconditions (the users exist and differ, the connection may change
// their passwords) are checked before any password changes, by the server
// or, for a connection through a gateway, by the gateway
// (appconn.CheckRoles).
//
// service.go creates, changes and reads rotations, rotate.go runs them,
// notify.go mails failures, api.go registers the HTTP operations.
package secretrotation
