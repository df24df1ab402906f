package cli

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"regexp"
	"strings"
	"sync"
	"time"

	"github.com/airlockpam/airlock/internal/auth"
)

// client calls the Airlock API. Its methods may be called from several
// goroutines (a running `db access` reconnects, checks and ends its session
// concurrently).
type client struct {
	base string
	http *http.Client

	mu    sync.Mutex   // guards creds, and serializes refreshes in this process
	creds *Credentials // nil for anonymous calls
}

func newHTTPClient(caFile string) (*http.Client, error) {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	if caFile != "" {
		pem, err := os.ReadFile(caFile)
		if err != nil {
			return nil, fmt.Errorf("reading the CA file: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("%s holds no PEM certificate", caFile)
		}
		tr.TLSClientConfig = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	}
	return &http.Client{Transport: tr, Timeout: 60 * time.Second}, nil
}

// normalizeDomain checks a --domain value and returns it without a trailing slash.
func normalizeDomain(d string) (string, error) {
	if d == "" {
		return "", errors.New("no domain: pass --domain https://airlock.example.com (the address of your Airlock server)")
	}
	if !strings.Contains(d, "://") {
		// Without a scheme, https:// is meant: it is the only one allowed
		// for a server elsewhere. A server on this machine may speak
		// either (`airlock dev` speaks http://), so ask.
		if u, err := url.Parse("https://" + d); err == nil && u.Host != "" && isLoopback(u.Hostname()) {
			addr := strings.TrimRight(u.Host+u.Path, "/")
			return "", fmt.Errorf("--domain needs a scheme: did you mean http://%s (a server on this machine without TLS, "+
				"such as `airlock dev`) or https://%s?", addr, addr)
		}
		d = "https://" + d
	}
	u, err := url.Parse(d)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return "", errors.New("the domain is not a server address: use a URL such as https://airlock.example.com")
	}
	if u.Scheme == "http" && !isLoopback(u.Hostname()) {
		return "", errors.New("the domain uses http://, which would send passwords and tokens unencrypted: use https:// " +
			"(with --ca-file CA.pem when the server's certificate is not publicly trusted); http:// is accepted only for " +
			"loopback addresses (127.0.0.1, ::1, localhost)")
	}
	return strings.TrimRight(u.Scheme+"://"+u.Host+u.Path, "/"), nil
}

// isLoopback says whether host (a name or an IP address) stays on this
// machine.
func isLoopback(host string) bool {
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

func anonymousClient(domain, caFile string) (*client, error) {
	base, err := normalizeDomain(domain)
	if err != nil {
		return nil, err
	}
	hc, err := newHTTPClient(caFile)
	if err != nil {
		return nil, err
	}
	return &client{base: base, http: hc}, nil
}

// loggedInClient uses the stored credentials.
func loggedInClient() (*client, error) {
	creds, err := loadCredentials()
	if err != nil {
		return nil, err
	}
	c, err := anonymousClient(creds.Domain, creds.CAFile)
	if err != nil {
		return nil, err
	}
	c.creds = creds
	return c, nil
}

// apiError is a problem response from the server.
type apiError struct {
	Status int
	Type   string `json:"type"`
	Title  string `json:"title"`
	Detail string `json:"detail"`
	// ChallengeID and Method are set on an MFA-required problem.
	ChallengeID string `json:"challengeId"`
	Method      string `json:"method"`
	// ApprovalURL is set when the method is a passkey: the web page that
	// approves the challenge.
	ApprovalURL string `json:"approvalUrl"`
	Errors      []struct {
		Message  string `json:"message"`
		Location string `json:"location"`
	} `json:"errors"`
}

// Error says what the server said, in the CLI's words: a request field
// the server names in backticks (`sslCaPem`, see package pam) becomes the
// flag that sets it (--ssl-ca-file), and a field error starts with that flag.
func (e *apiError) Error() string {
	msg := e.Detail
	if msg == "" {
		msg = e.Title
	}
	var parts []string
	prefix := ""
	for _, d := range e.Errors {
		flag := flagOf(d.Location)
		switch {
		case d.Message != msg && flag != "":
			parts = append(parts, flag+": "+d.Message)
		case d.Message != msg && d.Location != "":
			parts = append(parts, d.Location+": "+d.Message)
		case d.Message != msg:
			parts = append(parts, d.Message)
		case flag != "" && prefix == "" && !strings.Contains(msg, "`"+strings.TrimPrefix(d.Location, "body.")+"`"):
			prefix = flag + ": "
		}
	}
	if len(parts) > 0 {
		msg += " (" + strings.Join(parts, "; ") + ")"
	}
	return fieldsAsFlags(prefix + msg)
}

// apiFlags maps the API's request fields to the CLI flags that set them.
var apiFlags = map[string]string{
	"host":                    "--host",
	"port":                    "--port",
	"database":                "--database",
	"connectionString":        "--connection-string",
	"gateway":                 "--gateway",
	"sslEnabled":              "--ssl-enabled",
	"sslRejectUnauthorized":   "--ssl-reject-unauthorized",
	"sslCaPem":                "--ssl-ca-file",
	"allowAuth":               "--allow-auth",
	"rotationUsername":        "--rotation-username",
	"rotationPassword":        "--rotation-password-stdin",
	"username":                "--username",
	"metadata":                "--metadata",
	"requireMfa":              "--require-mfa",
	"duration":                "--duration",
	"mfaMethod":               "--mfa-method",
	"requireMfaLogin":         "--require-mfa-login",
	"maxSessionDuration":      "--max-session-duration",
	"maxStatementBytes":       "--max-statement-size",
	"oversizeStatements":      "--oversize-statements",
	"consoleStatementTimeout": "--console-statement-timeout",
	"search":                  "--search",
	"logMaskPatterns":         "--log-mask-pattern",
	"logRedactValues":         "--log-redact-values",
}

// flagOf returns the CLI flag of a problem's location such as
// "body.sslCaPem", or "".
func flagOf(location string) string {
	field, ok := strings.CutPrefix(location, "body.")
	if !ok {
		return ""
	}
	return apiFlags[field]
}

// quotedField is a field name in backticks in a server's message.
var quotedField = regexp.MustCompile("`([A-Za-z]+)`")

// fieldsAsFlags replaces each request field the server names in backticks
// with its CLI flag; other backticked text (a command) stays.
func fieldsAsFlags(msg string) string {
	return quotedField.ReplaceAllStringFunc(msg, func(m string) string {
		if f, ok := apiFlags[strings.Trim(m, "`")]; ok {
			return f
		}
		return m
	})
}

// errLoginGone marks the errors that say the stored login can no longer be
// used (revoked, logged out, expired): only `airlock login` helps, so a
// long-running command stops instead of retrying.
var errLoginGone = errors.New("the login is gone")

// loginGoneError is an errLoginGone with a message for the user.
type loginGoneError struct{ msg string }

func (e *loginGoneError) Error() string        { return e.msg }
func (e *loginGoneError) Is(target error) bool { return target == errLoginGone }

// Refresh margins.
const (
	// refreshBefore is how long before its expiry an access token is
	// refreshed, so that a request never starts with a token about to lapse.
	refreshBefore = 30 * time.Second
	// adoptAtLeast is how much life a token that another process stored
	// must have left to be used instead of refreshing again.
	adoptAtLeast = 2 * time.Second
)

// token returns the current access token ("" for an anonymous client).
func (c *client) token() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.creds == nil {
		return ""
	}
	return c.creds.AccessToken
}

// do sends a request with a JSON body (nil for none) and decodes a JSON
// answer into out (nil to discard it). A logged-in client refreshes its
// token first when it has aged, and once more when the server answers 401.
func (c *client) do(ctx context.Context, method, path string, query url.Values, body, out any) error {
	loggedIn := c.creds != nil
	if loggedIn {
		if err := c.refreshIfNeeded(ctx, false); err != nil {
			return err
		}
	}
	status, respBody, err := c.send(ctx, method, path, query, body, c.token())
	if err != nil {
		return err
	}
	if status == http.StatusUnauthorized && loggedIn {
		if err := c.refreshIfNeeded(ctx, true); err != nil {
			return err
		}
		if status, respBody, err = c.send(ctx, method, path, query, body, c.token()); err != nil {
			return err
		}
	}
	if status >= 400 {
		e := &apiError{Status: status}
		if json.Unmarshal(respBody, e) != nil || (e.Detail == "" && e.Title == "") {
			e.Detail = fmt.Sprintf("the server answered %d %s", status, http.StatusText(status))
		}
		return e
	}
	if out != nil && len(respBody) > 0 {
		if err := json.Unmarshal(respBody, out); err != nil {
			return fmt.Errorf("the server's answer could not be read: %w", err)
		}
	}
	return nil
}

// send makes one request, with token as the bearer token unless it is "".
func (c *client) send(ctx context.Context, method, path string, query url.Values, body any, token string) (int, []byte, error) {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return 0, nil, err
		}
		rd = bytes.NewReader(b)
	}
	u := c.base + path
	if len(query) > 0 {
		u += "?" + query.Encode()
	}
	req, err := http.NewRequestWithContext(ctx, method, u, rd)
	if err != nil {
		return 0, nil, err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	req.Header.Set("Accept", "application/json")
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return 0, nil, fmt.Errorf("cannot reach the Airlock server at %s: %w", c.base, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return 0, nil, fmt.Errorf("reading the server's answer: %w", err)
	}
	return resp.StatusCode, b, nil
}

// refreshIfNeeded exchanges the refresh token for a new pair when the
// access token has aged (or force is set: the server refused it), and saves
// the new pair. Every airlock process of the user shares the credentials
// file, and a refresh token used twice revokes the whole login, so it works
// under the file's lock: it re-reads the file, and when another process has
// already refreshed (or the user logged in again) it adopts those tokens
// instead of refreshing. A login that cannot be refreshed any more is an
// errLoginGone; a server that cannot be reached is an ordinary error, and the
// refresh token is then still unused.
func (c *client) refreshIfNeeded(ctx context.Context, force bool) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !force && time.Until(c.creds.AccessExpiresAt) > refreshBefore {
		return nil
	}
	unlock, err := lockCredentials(ctx)
	if err != nil {
		return err
	}
	defer unlock()
	stored, err := loadCredentials()
	switch {
	case errors.Is(err, errNotLoggedIn):
		return &loginGoneError{"your login was revoked (`airlock logout` removed it from this machine): run `airlock login`"}
	case err != nil:
		return err
	case stored.Domain != c.creds.Domain:
		return &loginGoneError{fmt.Sprintf("you are now logged in to %s, not %s: run `airlock login --domain %s` to use %s again",
			stored.Domain, c.creds.Domain, c.creds.Domain, c.creds.Domain)}
	}
	if stored.RefreshToken != c.creds.RefreshToken {
		// Another process refreshed, or the user logged in again: use
		// those tokens rather than spend a refresh token twice.
		refused := c.creds.AccessToken
		*c.creds = *stored
		if time.Until(c.creds.AccessExpiresAt) > adoptAtLeast && (!force || c.creds.AccessToken != refused) {
			return nil
		}
	}
	if time.Now().After(c.creds.RefreshExpiresAt) {
		return &loginGoneError{"your login has expired: run `airlock login` again"}
	}
	status, body, err := c.send(ctx, http.MethodPost, "/api/v1/auth/refresh", nil, auth.RefreshRequest{RefreshToken: c.creds.RefreshToken}, "")
	if err != nil {
		return fmt.Errorf("refreshing your login: %w", err)
	}
	switch {
	case status == http.StatusBadRequest || status == http.StatusUnauthorized || status == http.StatusForbidden:
		return &loginGoneError{"your login was revoked (logged out elsewhere, or by an administrator): run `airlock login`"}
	case status != http.StatusOK:
		return fmt.Errorf("refreshing your login failed: the server answered %d %s; try again shortly", status, http.StatusText(status))
	}
	var pair auth.TokenPair
	if err := json.Unmarshal(body, &pair); err != nil {
		return fmt.Errorf("the server's answer to the refresh could not be read: %w", err)
	}
	applyTokens(pair, c.creds)
	if err := saveCredentials(c.creds); err != nil {
		return fmt.Errorf("saving the refreshed login: %w", err)
	}
	return nil
}

// applyTokens stores a token pair in c.
func applyTokens(p auth.TokenPair, c *Credentials) {
	c.AccessToken, c.AccessExpiresAt = p.AccessToken, p.AccessExpiresAt
	c.RefreshToken, c.RefreshExpiresAt = p.RefreshToken, p.RefreshExpiresAt
}
