// Package pam is privileged access management: the resources (PostgreSQL and
// MongoDB databases, each reached through a gateway) of a project, the
// accounts on them whose passwords Airlock keeps, and, later, the access
// sessions that use them.
//
// An account's password and a resource's rotation password are sealed with
// the project's data key (see keyring), with the row as additional data
// ("account:<id>:password", "resource:<id>:rotation-password"). They never
// appear in an API response, an audit event, a log line or an error; the only
// way out is TargetFor, which hands them to the gateway. Before an account's
// credentials are saved, a Validator asks the resource's gateway to log in
// with them, so a wrong password is refused instead of stored.
//
// Passwords go only where they were validated. Every validation login,
// successful or not, is audited (account.validate) with its endpoint. A
// change of a resource's gateway, host, port, database, connection string,
// TLS settings or allowed authentication methods while it has accounts (or
// rotation credentials) needs those credentials re-entered in the same
// request, validated against the new endpoint first, or an organization
// admin (whose change is audited with the accounts not revalidated). Only an
// organization admin allows md5 or cleartext upstream authentication
// (allowAuth); by default the gateway answers SCRAM-SHA-256 only. A resource
// names only a gateway its project may use (GatewayResolver.GatewayAllowed);
// an organization admin naming a gateway for a project allows it.
//
// Error messages name the request fields they are about in backticks
// (`sslCaPem`), so that a client with its own names for them shows those: the
// CLI prints its flag (--ssl-ca-file) in their place.
//
// Accounts rotate their passwords as the resource's rotation account on the
// jobs package (service_rotation.go has the steps and their crash safety). A
// rotation runs only on the server replica the resource's gateway is
// connected to (Presence): another replica hands the job over
// (jobs.Elsewhere), and with the gateway offline everywhere the account
// waits (status waiting, jobs.Wait every WaitRetry, and at once when the
// gateway connects: GatewayConnected). An account is not deleted while its
// rotation runs (Conflict). A resource may be renamed (Conflict when the name
// is taken).
//
// Roles: project viewers read resources and accounts, members also access
// them (TargetFor), admins create, change and delete them.
//
// The files divide the work as follows:
//   - resource.go, account.go: the domain types and the rules their fields
//     follow (slugs, ports, TLS, MongoDB connection strings, metadata).
//   - service.go: Service, its configuration, the Validator and
//     GatewayResolver it depends on, name-or-id lookups and TargetFor.
//   - service_resources.go, service_accounts.go: the operations on resources
//     and accounts, and their HTTP (huma) registrations.
//   - service_rotation.go: password rotation (the job, Rotate now, waiting
//     for a gateway, the hand-off between replicas).
//   - repository_resources.go, repository_accounts.go: the SQL.
package pam
