// Package web is Airlock's browser UI: server-rendered HTML (html/template)
// embedded in the binary with a little JavaScript of its own, served by the
// server on the API's port at /. Nothing is fetched from elsewhere at run
// time and nothing but Go is needed to build it.
//
// Every page and form calls the same domain services the API calls
// (project, pam, session, relay, audit) with the signed-in user as the
// request's principal, so roles hold exactly as they do in the API: a
// control a role may not use is not shown, and the service refuses the
// request anyway.
//
// Safety (see docs/web.md):
//   - websession.go: the browser holds only an opaque, random web-session id
//     in a cookie (HttpOnly, SameSite=Strict, Secure and __Host- prefixed
//     under TLS). The API tokens of the login stay in the server's memory;
//     every request re-authenticates the access token (so a revoked login
//     or a disabled user is out at once) and refreshes it when due. A
//     session idle for longer than the idle timeout, or older than its
//     maximum lifetime, ends; logging out revokes the login's tokens.
//   - csrf.go: every state-changing request passes Go's
//     http.CrossOriginProtection (Sec-Fetch-Site / Origin) and carries the
//     web session's synchronizer token.
//   - render.go: a Content-Security-Policy without unsafe-inline (no inline
//     script or style, no on* attributes; static/app.js and, on the MFA
//     pages, static/mfa.js are the only scripts), frame-ancestors 'none', no-store caching of pages. Error
//     messages are the domain's own, which never echo input; forms are
//     shown again with what was typed, except passwords.
//   - apierrors.go: unknown paths and wrong methods under /api/ answer
//     application/problem+json, never text or HTML.
//
// Pages: pages_projects.go (projects, members, settings), pages_resources.go
// (resources, their accounts, the Access command), pages_rotation.go (an
// account's rotation schedule and Rotate now, the Edit Resource page),
// pages_sessions.go
// (sessions and their logs, terminate), pages_admin.go (gateways, audit
// log, machine identities), pages_secrets.go (secrets, their history
// and restore), pages_appconn.go (app connections), pages_secretrotations.go
// (secret rotations: the Add wizard, Rotate now, schedule), pages_console.go (the browser SQL console: Web Access on a
// PostgreSQL account opens a console of package webconsole, a session with
// access method web whose client is this server; its page's script posts
// SQL, Cancel and End with the X-CSRF-Token header, reads the schema, and
// keeps an event stream open whose end, when the tab closes, ends the
// session), pages_mfa.go (the MFA page: TOTP with an inline-SVG QR code,
// recovery codes once, passkeys; the sign-in's MFA step with the pending
// sign-in held in memory; Web Access's MFA step; the approval page of a
// CLI's passkey challenge; all through package mfa's service).
package web
