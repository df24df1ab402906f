// Package mfa holds multi-factor authentication: the second factors a user
// enrolls, the organization's enforced method, and the challenges that must
// be passed before a session opens an account that requires MFA.
//
// Methods. TOTP (RFC 6238, 30-second steps, 6 digits) is enrolled in two
// steps: EnrollTOTP makes a secret (sealed with the root key, the row's
// identity as additional data) and ConfirmTOTP turns it on once a first code
// from the authenticator is accepted. The first confirmed method also makes
// ten recovery codes, shown once and stored as HMAC-SHA-256 under a key
// derived from the root key, so that a copy of the store alone cannot test
// guesses (each holds 50 random bits); each is usable once in place of any
// code. A code is accepted
// for the current step and one step either side (so a code from 30 seconds
// ago works, one from 90 seconds ago does not), and never for a step at or
// before the last one accepted (no replay). Email codes are 6 digits, sent
// through a Mailer when a challenge is made, stored as an HMAC under a key
// derived from the root key.
//
// Challenges. Gate is called by the session service before a session on an
// account that requires MFA starts. Without an approval it makes a
// challenge for the caller's login (token family) and that account, with the
// method chosen as: the organization's enforced method, else the user's own
// (TOTP), else an email code; and answers with a RequiredError (a problem
// with the challenge id and the method). VerifyChallenge checks a code: a
// challenge lives 5 minutes and allows 3 wrong codes; 5 wrong codes in a row
// across challenges lock the user's MFA for 15 minutes. The approved
// challenge is then passed back to Gate with the retried request, which uses
// it up (single use, same user, login and account, within its 5 minutes).
// Machine identities cannot pass a challenge and are refused.
//
// Login. When the organization requires MFA at login, LoginGate (called by
// package auth once a password is right) makes a challenge bound to the
// user alone (no login exists yet: token family and account are empty), and
// checks and uses it up in one step when the login is repeated with its id
// and code. Access and login challenges never stand in for each other.
//
// Every enrollment, reset, policy change, challenge, success, failure and
// lockout is audited with its method.
//
// Files: service.go (configuration, wiring, the API), totp.go (TOTP and
// recovery codes), challenge.go (Gate and VerifyChallenge), mail.go
// (Mailer: SMTP and the development log), policy.go (the organization's
// enforced method), webauthn.go (passkeys).
//
// Passkeys (webauthn.go, go-webauthn). The relying party is the server's
// public URL (--public-url; its host is the RP ID, its origin the only one
// accepted). Registration and assertions are ceremonies begun and finished
// through the store, single-use, living as long as a challenge. The first
// passkey adds a "webauthn" row to mfa_methods (and recovery codes when the
// user has none), so status, the method choice (organization, else TOTP,
// else passkeys, else email) and the last-method checks see it. A challenge
// whose method is webauthn carries an approvalUrl (public URL +
// ApprovalPath + id): the user approves it in the browser with a passkey,
// from any of their logins, while the CLI polls GET
// /api/v1/mfa/challenges/{id}; the approval still opens only the login and
// account the challenge was made for. A recovery code also answers it. The
// web sign-in approves a login's own challenge with BeginLoginPasskey /
// VerifyLoginPasskey and repeats the login with the challenge id and no code.
package mfa
