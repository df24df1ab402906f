// Package auth holds identities and how they prove who they are.
//
// Users sign in with email and password (argon2id); machine identities with a
// client id and secret. A login returns a short-lived access token and a
// refresh token. Tokens are random, stored only as SHA-256 hashes, and belong
// to a family (one login): refreshing rotates the pair, presenting a refresh
// token twice revokes the family (it was stolen), and logout revokes it too.
// Failed logins are rate limited per address and per account, and repeated
// failures lock a user account for a while; both are audited. When the
// organization requires MFA at login, a right password is not enough: the
// LoginMFA hook (package mfa) asks for a second factor first.
//
// Files: password.go (hashing), tokens.go (token repository), users.go and
// machines.go (repositories), ratelimit.go, bootstrap.go (the first admin),
// reset.go (an operator's password reset, on the store itself, for `airlock
// admin reset-password`), service_*.go (HTTP operations), service.go
// (configuration and wiring).
package auth
