// Package testenv starts real servers for tests: PostgreSQL 15, FerretDB (the
// MongoDB wire protocol on SQLite) and mailpit (SMTP with an HTTP API). The
// project's integration tests talk to these, never to mocks.
//
// Each Start function gives a test a server of its own, listening on
// 127.0.0.1 at a free port, with files in a temporary directory. The server
// is stopped by its PID and its files removed when the test ends, whether it
// passed or failed; a watchdog process does the same if the test binary dies
// without running its cleanups (a -timeout panic, for example).
//
// When a server cannot be started, Require applies the project's policy: the
// test fails in CI (CI=true) or with AIRLOCK_TEST_REQUIRE_SERVERS=1, and is
// skipped otherwise, with a hint to run ./scripts/test.
//
// The files divide the work as follows:
//   - env.go: the skip-or-fail policy (Require), free ports, and starting,
//     watching and stopping server processes.
//   - tlsutil.go: an in-memory ECDSA CA (NewCA) that issues server
//     certificates for IP addresses and DNS names.
//   - postgres.go: StartPostgres, a cluster per test with SCRAM, MD5 and
//     TLS-only roles, which can be stopped and started again to simulate an
//     outage; SharedPostgres, a database of its own per test in one cluster
//     per test binary.
//   - ferretdb.go: StartFerretDB, plain or WithTLS, with SCRAM-SHA-256 and
//     SCRAM-SHA-1 users.
//   - mailpit.go: StartMailpit and reading received mail through its API.
//   - binaries.go: building FerretDB and installing mailpit from Go module
//     source into a cache directory (CacheDir), once, safely across parallel
//     test processes; EnsureBinaries does it ahead of the tests.
//
// PostgreSQL comes from Debian's postgresql-15 package. When testenv runs as
// root, it runs initdb and the server as the postgres OS user, which then
// owns the cluster's files. scripts/install-test-deps installs the package if
// needed and builds the other binaries (see cmd/testdeps).
package testenv
