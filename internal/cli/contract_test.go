package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/danielgtaylor/huma/v2"
	"github.com/spf13/cobra"

	"github.com/airlockpam/airlock/internal/keyring"
	"github.com/airlockpam/airlock/internal/server"
)

// The contract test runs every leaf command of the CLI against a server
// that records what it is sent, and checks each request against the
// server's own OpenAPI document (the one served at /api/openapi.json): the
// method and path template exist, every query parameter is one the
// operation takes, and the JSON body validates against the operation's
// request schema, as the server validates it. So the CLI cannot call an
// operation that does not exist or send a field the server does not take.
//
// A new command must be added to contractCalls (or, when it does not call
// the API, to contractNoAPI); the test fails otherwise. A "/api/..." string
// in the CLI's source that no command of the table reaches fails the test
// too, unless contractLiteralExceptions says why.

const (
	ctProject = "7b0c9d3e-1f2a-4b5c-8d9e-0a1b2c3d4e5f" // an id: no lookup by name
	ctSession = "01a23d1c-bbe6-7cb5-9503-294a53878ddf"
)

// contractCall is one run of a command: its arguments after the command's
// path, what standard input holds, and how the recording server answers.
type contractCall struct {
	args  []string
	stdin string
	// expiredLogin stores a login whose access token has expired, so that
	// the command refreshes it first.
	expiredLogin bool
	// mfa is the operation id whose first call is answered with an
	// mfa-required problem, so that the command passes the challenge.
	mfa string
}

// contractCalls are the runs of every leaf command that calls the API.
// {url} is the recording server, {file} a file holding a password or PEM,
// {dir} an empty directory.
var contractCalls = map[string][]contractCall{
	"accounts create": {{args: []string{"--project-id", ctProject, "--resource", "orders-db", "--name", "app", "--username", "app_user",
		"--password-stdin", "--description", "the app", "--metadata", "env=prod", "--require-mfa", "--rotation-interval", "7d"}, stdin: "pw-123456789"}},
	"accounts delete": {{args: []string{"app", "--project-id", ctProject, "--resource", "orders-db"}}},
	"accounts get":    {{args: []string{"app", "--project-id", ctProject, "--resource", "orders-db"}}},
	"accounts list":   {{args: []string{"--project-id", ctProject, "--resource", "orders-db", "--metadata", "env=prod"}}},
	"accounts rotate": {{args: []string{"app", "--project-id", ctProject, "--resource", "orders-db"}}},
	"accounts update": {
		{args: []string{"app", "--project-id", ctProject, "--username", "u2", "--password-stdin", "--description", "d", "--metadata", "env=dev",
			"--require-mfa=false", "--rotation-interval", "30d"}, stdin: "pw-123456789"},
		{args: []string{"app", "--project-id", ctProject, "--clear-metadata", "--rotation=false"}},
	},
	"app-connections create": {{args: []string{"postgres", "--project-id", ctProject, "--name", "orders-db", "--host", "db.internal", "--port", "5432",
		"--database", "orders", "--username", "app", "--password-stdin", "--ssl-ca-file", "{file}", "--gateway", "dc1", "--description", "d",
		"--platform-managed"}, stdin: "pw-123456789"}},
	"app-connections delete": {{args: []string{"orders-db", "--project-id", ctProject}}},
	"app-connections get":    {{args: []string{"orders-db", "--project-id", ctProject}}},
	"app-connections list":   {{args: []string{"--project-id", ctProject}}},
	"app-connections update": {{args: []string{"orders-db", "--project-id", ctProject, "--name", "orders-db2", "--description", "d",
		"--gateway", "dc2", "--host", "db2.internal", "--password-stdin"}, stdin: "pw-123456789"}},
	"audit list": {{args: []string{"--project-id", ctProject, "--actor", "alice@example.com", "--action", "auth.",
		"--from", "2026-11-01T00:00:00Z", "--to", "1h", "--limit", "50"}}},
	"audit verify": {{}},
	"db access": {{args: []string{"--project-id", ctProject, "--resource", "orders-db", "--account", "app", "--duration", "30m",
		"--mfa-code", "123456", "--port", "0"}, mfa: "create-session"}},
	"export":                    {{args: []string{"--project-id", ctProject, "--env", "prod", "--path", "/db", "--format", "json"}}},
	"gateway":                   {{args: []string{"--domain", "{url}", "--data-dir", "{dir}", "--token-stdin"}, stdin: "enrollment-token"}},
	"gateways allow-project":    {{args: []string{"dc1", "--project-id", ctProject}}},
	"gateways create":           {{args: []string{"dc1"}}},
	"gateways delete":           {{args: []string{"dc1"}}},
	"gateways disallow-project": {{args: []string{"dc1", "--project-id", ctProject}}},
	"gateways enrollment-token": {{args: []string{"dc1"}}},
	"gateways list":             {{}},
	"gateways projects":         {{args: []string{"dc1"}}},
	"login": {
		{args: []string{"--domain", "{url}", "--email", "alice@example.com", "--password-stdin", "--mfa-code", "123456"},
			stdin: "pw-123456789", mfa: "login"},
		{args: []string{"--domain", "{url}", "--client-id", "client", "--client-secret", "secret"}},
	},
	"logout":                    {{}},
	"machine-identities create": {{args: []string{"ci"}}},
	"machine-identities delete": {{args: []string{"mid-1"}}},
	"machine-identities list":   {{}},
	"mfa disable":               {{args: []string{"totp", "--code", "123456"}}},
	"mfa enroll":                {{args: []string{"totp"}}, {args: []string{"totp", "--code", "123456"}}},
	"mfa status":                {{}},
	"org get":                   {{}},
	"org update":                {{args: []string{"--mfa-method", "totp", "--require-mfa-login"}}},
	"projects create":           {{args: []string{"shop", "--description", "d", "--max-session-duration", "8h"}}},
	"projects delete":           {{args: []string{ctProject, "--force"}}},
	"projects get":              {{args: []string{"shop"}}}, // by name: looked up in the list
	"projects list":             {{}},
	"projects members list":     {{args: []string{"--project-id", ctProject}}},
	"projects members remove":   {{args: []string{"--project-id", ctProject, "--email", "alice@example.com"}}, {args: []string{"--project-id", ctProject, "--machine-identity-id", "mid-1"}}},
	"projects members set":      {{args: []string{"--project-id", ctProject, "--email", "alice@example.com", "--role", "viewer"}}},
	"projects update": {
		{args: []string{ctProject, "--description", "d", "--max-session-duration", "4h", "--log-mask-pattern", `card=\d+`, "--log-redact-values",
			"--max-statement-size", "2MiB", "--oversize-statements", "record_ends", "--console-statement-timeout", "1m"}},
		{args: []string{ctProject, "--clear-log-mask-patterns"}},
	},
	"resources create mongodb": {{args: []string{"--project-id", ctProject, "--name", "sales", "--gateway", "dc1",
		"--connection-string", "mongodb://db1:27017/?replicaSet=rs0", "--database", "admin", "--ssl-ca-file", "{file}",
		"--rotation-username", "rot", "--rotation-password-stdin"}, stdin: "pw-123456789"}},
	"resources create postgres": {{args: []string{"--project-id", ctProject, "--name", "orders-db", "--gateway", "dc1", "--host", "db.internal",
		"--port", "5432", "--database", "orders", "--allow-auth", "md5", "--ssl-reject-unauthorized=false"}}},
	"resources delete": {{args: []string{"orders-db", "--project-id", ctProject}}},
	"resources get":    {{args: []string{"orders-db", "--project-id", ctProject}}},
	"resources list":   {{args: []string{"--project-id", ctProject}}},
	"resources update": {
		{args: []string{"orders-db", "--project-id", ctProject, "--host", "db2.internal", "--port", "5433", "--database", "o2", "--gateway", "dc2",
			"--clear-ssl-ca", "--clear-rotation-credentials", "--account-password-file", "app={file}", "--allow-auth", "scram", "--ssl-enabled"}},
		{args: []string{"sales", "--project-id", ctProject, "--connection-string", "mongodb://db3:27017", "--ssl-ca-file", "{file}",
			"--rotation-username", "rot", "--rotation-password-stdin"}, stdin: "pw-123456789"},
	},
	"run": {{args: []string{"--project-id", ctProject, "--env", "prod", "--path", "/", "--", "true"}}},
	"secret-rotations create": {{args: []string{"postgres-credentials", "--project-id", ctProject, "--name", "orders-creds", "--connection", "orders-db",
		"--env", "prod", "--path", "/db", "--interval", "30", "--rotate-at", "02:00", "--timezone", "Europe/Berlin", "--username1", "a",
		"--username2", "b", "--username-secret", "PGUSER", "--password-secret", "PGPASSWORD", "--description", "d", "--auto-rotation=false"}}},
	"secret-rotations credentials": {{args: []string{"orders-creds", "--project-id", ctProject}}},
	"secret-rotations delete":      {{args: []string{"orders-creds", "--project-id", ctProject, "--delete-secrets", "--revoke-credentials"}}},
	"secret-rotations get":         {{args: []string{"orders-creds", "--project-id", ctProject}}},
	"secret-rotations list":        {{args: []string{"--project-id", ctProject}}},
	"secret-rotations rotate":      {{args: []string{"orders-creds", "--project-id", ctProject}}},
	"secret-rotations update": {{args: []string{"orders-creds", "--project-id", ctProject, "--name", "n2", "--description", "d",
		"--interval", "7", "--rotate-at", "03:00", "--timezone", "UTC", "--auto-rotation"}}},
	"secrets delete":              {{args: []string{"KEY", "--project-id", ctProject, "--env", "prod", "--path", "/db"}}},
	"secrets environments create": {{args: []string{"qa", "--project-id", ctProject, "--name", "QA"}}},
	"secrets environments delete": {{args: []string{"qa", "--project-id", ctProject}}},
	"secrets environments list":   {{args: []string{"--project-id", ctProject}}},
	"secrets environments rename": {{args: []string{"qa", "Quality", "--project-id", ctProject}}},
	"secrets folders create":      {{args: []string{"/db/orders", "--project-id", ctProject, "--env", "prod"}}},
	"secrets folders delete":      {{args: []string{"/db/orders", "--project-id", ctProject, "--env", "prod"}}},
	"secrets folders list":        {{args: []string{"--project-id", ctProject, "--env", "prod"}}},
	"secrets get":                 {{args: []string{"KEY", "--project-id", ctProject, "--env", "prod", "--version", "2"}}},
	"secrets history":             {{args: []string{"KEY", "--project-id", ctProject, "--env", "prod"}}},
	"secrets list":                {{args: []string{"--project-id", ctProject, "--env", "prod", "--path", "/db"}}},
	"secrets restore":             {{args: []string{"KEY", "--project-id", ctProject, "--env", "prod", "--version", "1"}}},
	"secrets set": {
		{args: []string{"A=1", "B=2", "--project-id", ctProject, "--env", "prod"}},
		{args: []string{"KEY", "--project-id", ctProject, "--env", "prod", "--file", "{file}"}},
	},
	"sessions end": {{args: []string{ctSession}}},
	"sessions list": {{args: []string{"--project-id", ctProject, "--resource", "orders-db", "--account", "app", "--user", "alice@example.com",
		"--status", "active", "--from", "24h", "--limit", "10"}}},
	"sessions logs": {{args: []string{ctSession, "--conn", "1", "--kind", "query", "--errors", "--search", "x", "--since", "10m", "--tail", "5"}},
		{args: []string{ctSession}, expiredLogin: true}},
	"sessions show":       {{args: []string{ctSession}}},
	"sessions terminate":  {{args: []string{ctSession}}},
	"sessions verify":     {{args: []string{ctSession}}},
	"users list":          {{}},
	"users create":        {{args: []string{"--email", "bob@example.com", "--name", "Bob", "--org-admin", "--password-stdin"}, stdin: "pw-123456789"}},
	"users delete":        {{args: []string{"u-1"}}},
	"users disable":       {{args: []string{"u-1"}}},
	"users enable":        {{args: []string{"u-1"}}},
	"users reset-mfa":     {{args: []string{"u-1"}}},
	"users revoke-tokens": {{args: []string{"u-1"}}},
	"users unlock":        {{args: []string{"u-1"}}},
}

// contractNoAPI are the leaf commands that do not call the API, and why.
var contractNoAPI = map[string]string{
	"server":               "runs the server",
	"dev":                  "runs a server with a built-in gateway",
	"keygen":               "prints a new root key",
	"version":              "prints the version",
	"admin reset-password": "works on the store directly, with the server stopped",
}

// contractLiteralExceptions are "/api/..." strings of the CLI that no
// command of the table sends as such, and why.
var contractLiteralExceptions = map[string]string{
	"/api/v1/relay/sessions/": "the relay's stream of a session, which the server serves on its mux beside the API " +
		"(no OpenAPI operation); db access opens it only with a real session's certificate (the e2e tests do)",
}

// contractAnswers are the recording server's answers to operations whose
// commands need more than an empty object or list to go on to their next
// request; other operations get {} or [] (by their response schema).
var contractAnswers = map[string]string{
	"list-projects": `[{"id":"` + ctProject + `","name":"shop","role":"admin"}]`,
	"get-session": `{"id":"` + ctSession + `","projectId":"` + ctProject + `","status":"active","resourceKind":"postgres",` +
		`"expiresAt":"2099-01-01T00:00:00Z"}`,
	"list-project-members": `[{"kind":"user","id":"u-1","name":"alice@example.com","role":"member"}]`,
	"get-postgres-app-connection-by-name": `{"appConnection":{"id":"c-1","projectId":"` + ctProject + `","name":"orders-db",` +
		`"credentials":{"host":"db.internal","port":5432,"database":"orders","username":"app","sslEnabled":true,"sslRejectUnauthorized":true}}}`,
	"create-session": `{"session":{"id":"` + ctSession + `","projectId":"` + ctProject + `","status":"active","resourceKind":"postgres",` +
		`"expiresAt":"2099-01-01T00:00:00Z"},"clientCertificate":"not a certificate","caCertificate":"not a certificate"}`,
	"get-session-logs":    `{"events":[],"next":0,"more":false,"ended":true}`,
	"login":               contractTokens,
	"machine-login":       contractTokens,
	"refresh-token":       contractTokens,
	"mfa-enroll-totp":     `{"secret":"JBSWY3DPEHPK3PXP","uri":"otpauth://totp/Airlock:alice?secret=JBSWY3DPEHPK3PXP"}`,
	"verify-session-logs": `{"ok":true,"events":0}`,
	"verify-audit-logs":   `{"ok":true,"entries":0,"authenticated":0}`,
}

const contractTokens = `{"accessToken":"access","accessExpiresAt":"2099-01-01T00:00:00Z","refreshToken":"refresh",` +
	`"refreshExpiresAt":"2099-01-01T00:00:00Z","tokenType":"Bearer"}`

// contractOp is an operation of the OpenAPI document.
type contractOp struct {
	method, path string
	pattern      *regexp.Regexp
	op           *huma.Operation
}

// recorded is one request a command sent.
type recorded struct {
	command, method, path, rawQuery string
	body                            []byte
	op                              *contractOp
}

func contractOperations(t *testing.T, doc *huma.OpenAPI) []*contractOp {
	var ops []*contractOp
	param := regexp.MustCompile(`\\\{[^}]+\\\}`)
	for path, item := range doc.Paths {
		re := regexp.MustCompile("^" + param.ReplaceAllString(regexp.QuoteMeta(path), `[^/]+`) + "$")
		for method, op := range map[string]*huma.Operation{http.MethodGet: item.Get, http.MethodPost: item.Post, http.MethodPut: item.Put,
			http.MethodPatch: item.Patch, http.MethodDelete: item.Delete} {
			if op != nil {
				ops = append(ops, &contractOp{method: method, path: path, pattern: re, op: op})
			}
		}
	}
	if len(ops) == 0 {
		t.Fatal("the OpenAPI document has no operations")
	}
	// A literal segment wins over a parameter ({id} vs connection-name/...).
	sort.Slice(ops, func(i, j int) bool {
		return strings.Count(ops[i].path, "{") < strings.Count(ops[j].path, "{")
	})
	return ops
}

func findOp(ops []*contractOp, method, path string) *contractOp {
	for _, o := range ops {
		if o.method == method && o.pattern.MatchString(path) {
			return o
		}
	}
	return nil
}

// successBody is the empty answer of op: {} or [] by its response schema,
// or no body.
func successBody(reg huma.Registry, op *huma.Operation) (int, string) {
	codes := make([]string, 0, len(op.Responses))
	for c := range op.Responses {
		if strings.HasPrefix(c, "2") {
			codes = append(codes, c)
		}
	}
	sort.Strings(codes)
	if len(codes) == 0 {
		return http.StatusOK, "{}"
	}
	status, _ := strconv.Atoi(codes[0])
	resp := op.Responses[codes[0]]
	if resp.Content == nil || resp.Content["application/json"] == nil || resp.Content["application/json"].Schema == nil {
		return status, ""
	}
	s := resp.Content["application/json"].Schema
	for s.Ref != "" {
		s = reg.SchemaFromRef(s.Ref)
	}
	if s.Type == "array" {
		return status, "[]"
	}
	return status, "{}"
}

func TestCLIRequestsAreInTheOpenAPIDocument(t *testing.T) {
	key, err := keyring.ParseRootKey(keyring.GenerateRootKey())
	if err != nil {
		t.Fatal(err)
	}
	srv, err := server.New(context.Background(), server.Config{DataDir: t.TempDir(), RootKey: key, Listen: "127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	doc := srv.API.OpenAPI()
	reg := doc.Components.Schemas
	ops := contractOperations(t, doc)

	var mu sync.Mutex
	var reqs []recorded
	var current, mfaOp string
	var unmatched []string
	rec := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		mu.Lock()
		defer mu.Unlock()
		op := findOp(ops, r.Method, r.URL.EscapedPath())
		if op == nil {
			unmatched = append(unmatched, fmt.Sprintf("%s: %s %s", current, r.Method, r.URL.EscapedPath()))
			w.Header().Set("Content-Type", "application/problem+json")
			w.WriteHeader(http.StatusNotFound)
			fmt.Fprint(w, `{"title":"Not Found","status":404,"detail":"no such operation"}`)
			return
		}
		reqs = append(reqs, recorded{command: current, method: r.Method, path: r.URL.EscapedPath(), rawQuery: r.URL.RawQuery, body: body, op: op})
		if mfaOp != "" && op.op.OperationID == mfaOp {
			mfaOp = ""
			w.Header().Set("Content-Type", "application/problem+json")
			w.WriteHeader(http.StatusForbidden)
			fmt.Fprint(w, `{"type":"urn:airlock:problem:mfa-required","title":"Forbidden","status":403,`+
				`"detail":"this needs a second factor","challengeId":"ch-1","method":"totp"}`)
			return
		}
		status, answer := successBody(reg, op.op)
		if a, ok := contractAnswers[op.op.OperationID]; ok {
			answer = a
		}
		if answer != "" {
			w.Header().Set("Content-Type", "application/json")
		}
		w.WriteHeader(status)
		fmt.Fprint(w, answer)
	}))
	defer rec.Close()

	configDir := t.TempDir()
	t.Setenv(EnvConfigDir, configDir)
	file := filepath.Join(t.TempDir(), "value.pem")
	if err := os.WriteFile(file, []byte("-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	login := func(expired bool) {
		c := &Credentials{Domain: rec.URL, AccessToken: "access", AccessExpiresAt: time.Now().Add(time.Hour),
			RefreshToken: "refresh", RefreshExpiresAt: time.Now().Add(24 * time.Hour)}
		if expired {
			c.AccessExpiresAt = time.Now().Add(-time.Minute)
		}
		if err := saveCredentials(c); err != nil {
			t.Fatal(err)
		}
	}

	// Every leaf command is in the table, or said not to call the API.
	leaves := map[string]bool{}
	var walk func(c *cobra.Command)
	walk = func(c *cobra.Command) {
		if len(c.Commands()) == 0 {
			leaves[strings.TrimPrefix(c.CommandPath(), "airlock ")] = true
		}
		for _, s := range c.Commands() {
			walk(s)
		}
	}
	walk(NewRootCommand())
	for name := range leaves {
		if _, ok := contractCalls[name]; !ok && contractNoAPI[name] == "" {
			t.Errorf("`airlock %s` is not in contractCalls: add a run of it (or to contractNoAPI when it does not call the API)", name)
		}
	}
	for name := range contractCalls {
		if !leaves[name] {
			t.Errorf("contractCalls names `airlock %s`, which is not a command (any more)", name)
		}
	}
	for name := range contractNoAPI {
		if !leaves[name] {
			t.Errorf("contractNoAPI names `airlock %s`, which is not a command (any more)", name)
		}
	}

	names := make([]string, 0, len(contractCalls))
	for name := range contractCalls {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		for i, call := range contractCalls[name] {
			login(call.expiredLogin)
			args := strings.Fields(name)
			for _, a := range call.args {
				a = strings.ReplaceAll(a, "{url}", rec.URL)
				a = strings.ReplaceAll(a, "{file}", file)
				a = strings.ReplaceAll(a, "{dir}", t.TempDir())
				args = append(args, a)
			}
			mu.Lock()
			current, mfaOp = fmt.Sprintf("%s #%d", name, i+1), call.mfa
			before := len(reqs)
			mu.Unlock()
			var out bytes.Buffer
			o := &options{stdin: strings.NewReader(call.stdin), stdout: &out, stderr: &out}
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			root := newRootCommand(o)
			root.SetIn(o.stdin)
			err := run(ctx, root, args)
			cancel()
			mu.Lock()
			sent := len(reqs) - before
			pending := mfaOp
			mu.Unlock()
			if sent == 0 {
				t.Errorf("`airlock %s` (run %d) sent no request: %v\n%s", strings.Join(args, " "), i+1, err, out.String())
			}
			if pending != "" {
				t.Errorf("`airlock %s` (run %d) never called %s, whose MFA challenge the run is about", strings.Join(args, " "), i+1, pending)
			}
			if err != nil {
				t.Logf("`airlock %s` (run %d): %v (the recording server's answers are not real ones)", name, i+1, err)
			}
		}
	}

	for _, u := range unmatched {
		t.Errorf("%s: no such operation in the OpenAPI document", u)
	}
	for _, r := range reqs {
		for _, p := range append(checkQuery(r), checkBody(reg, r)...) {
			t.Errorf("%s: %s %s: %s", r.command, r.method, r.path, p)
		}
	}
	checkLiterals(t, reqs)
}

// checkQuery names the query parameters the operation does not take (the
// server refuses unknown ones).
func checkQuery(r recorded) []string {
	q, err := parseQuery(r.rawQuery)
	if err != nil {
		return []string{fmt.Sprintf("bad query %q", r.rawQuery)}
	}
	var out []string
	for k := range q {
		ok := false
		for _, p := range r.op.op.Parameters {
			ok = ok || (p.In == "query" && p.Name == k)
		}
		if !ok {
			out = append(out, fmt.Sprintf("query parameter %q, which operation %s does not take", k, r.op.op.OperationID))
		}
	}
	return out
}

func parseQuery(raw string) (map[string]bool, error) {
	out := map[string]bool{}
	for _, kv := range strings.Split(raw, "&") {
		if kv == "" {
			continue
		}
		k, _, _ := strings.Cut(kv, "=")
		if strings.ContainsAny(k, " ") {
			return nil, fmt.Errorf("bad key %q", k)
		}
		out[k] = true
	}
	return out, nil
}

// checkBody validates a JSON body against the operation's request schema,
// as the server does, and names every field the schema does not have.
func checkBody(reg huma.Registry, r recorded) []string {
	if len(bytes.TrimSpace(r.body)) == 0 {
		return nil
	}
	rb := r.op.op.RequestBody
	if rb == nil || rb.Content["application/json"] == nil || rb.Content["application/json"].Schema == nil {
		return []string{fmt.Sprintf("a body, but operation %s takes none: %s", r.op.op.OperationID, r.body)}
	}
	schema := rb.Content["application/json"].Schema
	var v any
	if err := json.Unmarshal(r.body, &v); err != nil {
		return []string{fmt.Sprintf("a body that is not JSON: %v", err)}
	}
	var out []string
	for _, f := range unknownFields(reg, schema, v, "body") {
		out = append(out, fmt.Sprintf("%s, which the request schema of %s does not have", f, r.op.op.OperationID))
	}
	res := &huma.ValidateResult{}
	huma.Validate(reg, schema, huma.NewPathBuffer([]byte("body"), 0), huma.ModeWriteToServer, v, res)
	for _, e := range res.Errors {
		out = append(out, fmt.Sprintf("the body does not validate against %s's schema: %v: %s", r.op.op.OperationID, e, r.body))
	}
	return out
}

// unknownFields lists the fields of v that schema does not describe.
func unknownFields(reg huma.Registry, s *huma.Schema, v any, at string) []string {
	for s != nil && s.Ref != "" {
		s = reg.SchemaFromRef(s.Ref)
	}
	if s == nil {
		return nil
	}
	var out []string
	switch v := v.(type) {
	case map[string]any:
		if len(s.Properties) == 0 {
			return nil // a map such as metadata
		}
		for k, fv := range v {
			ps, ok := s.Properties[k]
			if !ok {
				out = append(out, at+"."+k)
				continue
			}
			out = append(out, unknownFields(reg, ps, fv, at+"."+k)...)
		}
	case []any:
		for i, e := range v {
			out = append(out, unknownFields(reg, s.Items, e, fmt.Sprintf("%s[%d]", at, i))...)
		}
	}
	return out
}

// checkLiterals fails for a "/api/..." string of the CLI's source that no
// request of the table reached: a string ending in / must begin a path
// sent, any other must be a whole path sent.
func checkLiterals(t *testing.T, reqs []recorded) {
	t.Helper()
	files, err := filepath.Glob("*.go")
	if err != nil {
		t.Fatal(err)
	}
	fset := token.NewFileSet()
	literals := map[string]string{}
	for _, f := range files {
		if strings.HasSuffix(f, "_test.go") {
			continue
		}
		file, err := parser.ParseFile(fset, f, nil, 0)
		if err != nil {
			t.Fatal(err)
		}
		ast.Inspect(file, func(n ast.Node) bool {
			if lit, ok := n.(*ast.BasicLit); ok && lit.Kind == token.STRING {
				if s, err := strconv.Unquote(lit.Value); err == nil && strings.HasPrefix(s, "/api/") {
					literals[s] = fset.Position(lit.Pos()).String()
				}
			}
			return true
		})
	}
	if len(literals) == 0 {
		t.Fatal("found no /api/ string in the CLI's source: is the test run in its directory?")
	}
	for lit, pos := range literals {
		if contractLiteralExceptions[lit] != "" {
			continue
		}
		found := false
		for _, r := range reqs {
			found = found || r.path == lit || (strings.HasSuffix(lit, "/") && strings.HasPrefix(r.path, lit))
		}
		if !found {
			t.Errorf("%s: no command of contractCalls sends %q: add a run that does (or an exception that says why)", pos, lit)
		}
	}
	for lit := range contractLiteralExceptions {
		if _, ok := literals[lit]; !ok {
			t.Errorf("contractLiteralExceptions names %q, which the CLI's source no longer holds", lit)
		}
	}
}

// TestContractChecksCatchMistakes: the checks of the contract test find an
// unknown field, a wrong type, a missing required field, a value over its
// limit and an unknown query parameter, so that a passing contract test
// means something.
func TestContractChecksCatchMistakes(t *testing.T) {
	key, err := keyring.ParseRootKey(keyring.GenerateRootKey())
	if err != nil {
		t.Fatal(err)
	}
	srv, err := server.New(context.Background(), server.Config{DataDir: t.TempDir(), RootKey: key, Listen: "127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	doc := srv.API.OpenAPI()
	ops := contractOperations(t, doc)
	op := findOp(ops, http.MethodPost, "/api/v1/projects")
	if op == nil || op.op.OperationID != "create-project" {
		t.Fatalf("POST /api/v1/projects is %+v", op)
	}
	for body, want := range map[string]string{
		`{"name":"shop"}`:                 "",
		`{"name":"shop","colour":"blue"}`: "body.colour",
		`{"name":7}`:                      "expected string",
		`{"description":"no name"}`:       "name",
		`{"name":"shop","maxSessionDuration":` + strconv.Quote(strings.Repeat("9", 30)) + `}`: "length",
	} {
		problems := checkBody(doc.Components.Schemas, recorded{method: http.MethodPost, path: "/api/v1/projects", body: []byte(body), op: op})
		switch {
		case want == "" && len(problems) > 0:
			t.Errorf("%s: %v", body, problems)
		case want != "" && !strings.Contains(strings.Join(problems, "; "), want):
			t.Errorf("%s: %v, want a problem naming %q", body, problems, want)
		}
	}
	list := findOp(ops, http.MethodGet, "/api/v1/projects/"+ctProject+"/sessions")
	if problems := checkQuery(recorded{rawQuery: "status=active&colour=blue", op: list}); len(problems) != 1 || !strings.Contains(problems[0], "colour") {
		t.Errorf("query: %v", problems)
	}
	if findOp(ops, http.MethodGet, "/api/v1/no-such-thing") != nil || findOp(ops, http.MethodPut, "/api/v1/projects") != nil {
		t.Error("an unknown path or method matched an operation")
	}
}

// contractLocalJSONTypes are the CLI's own JSON types, which are no API
// request or response: its files, and its reading of a problem answer.
var contractLocalJSONTypes = map[string]string{
	"Credentials": "the credentials file",
	"lastLogin":   "last-login.json",
	"portKey":     "ports.json",
	"portEntry":   "ports.json",
	"portsFile":   "ports.json",
	"apiError":    "an RFC 9457 problem (huma.ErrorModel) with the mfa-required extension (mfa.RequiredError), read into the CLI's error",
}

// TestCLIHasNoCopiesOfAPITypes: the CLI declares no struct with JSON
// fields of its own (named or anonymous) but the ones above: requests and
// responses are the domain packages' types (docs/api.md).
func TestCLIHasNoCopiesOfAPITypes(t *testing.T) {
	files, err := filepath.Glob("*.go")
	if err != nil {
		t.Fatal(err)
	}
	fset := token.NewFileSet()
	for _, f := range files {
		if strings.HasSuffix(f, "_test.go") {
			continue
		}
		file, err := parser.ParseFile(fset, f, nil, 0)
		if err != nil {
			t.Fatal(err)
		}
		ast.Inspect(file, func(n ast.Node) bool {
			switch n := n.(type) {
			case *ast.TypeSpec:
				if contractLocalJSONTypes[n.Name.Name] != "" {
					return false
				}
			case *ast.StructType:
				for _, field := range n.Fields.List {
					if field.Tag != nil && strings.Contains(field.Tag.Value, `json:"`) {
						t.Errorf("%s: a struct with JSON fields: use the domain package's type for an API request or response "+
							"(docs/api.md), or add a local type to contractLocalJSONTypes", fset.Position(n.Pos()))
						return false
					}
				}
			}
			return true
		})
	}
}
