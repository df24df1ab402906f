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
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"
)

// client calls the Airlock API.
type client struct {
	base  string
	http  *http.Client
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
		d = "https://" + d
	}
	u, err := url.Parse(d)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return "", fmt.Errorf("%q is not a server address: use a URL such as https://airlock.example.com", d)
	}
	return strings.TrimRight(u.Scheme+"://"+u.Host+u.Path, "/"), nil
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
	Title  string `json:"title"`
	Detail string `json:"detail"`
	Errors []struct {
		Message  string `json:"message"`
		Location string `json:"location"`
	} `json:"errors"`
}

func (e *apiError) Error() string {
	msg := e.Detail
	if msg == "" {
		msg = e.Title
	}
	var parts []string
	for _, d := range e.Errors {
		if d.Location != "" && d.Message != msg {
			parts = append(parts, d.Location+": "+d.Message)
		} else if d.Message != msg {
			parts = append(parts, d.Message)
		}
	}
	if len(parts) > 0 {
		msg += " (" + strings.Join(parts, "; ") + ")"
	}
	return msg
}

// do sends a request with a JSON body (nil for none) and decodes a JSON
// answer into out (nil to discard it).
func (c *client) do(ctx context.Context, method, path string, query url.Values, body, out any) error {
	if c.creds != nil {
		if err := c.refreshIfNeeded(ctx, false); err != nil {
			return err
		}
	}
	status, respBody, err := c.send(ctx, method, path, query, body)
	if err != nil {
		return err
	}
	if status == http.StatusUnauthorized && c.creds != nil && c.creds.RefreshToken != "" {
		if err := c.refreshIfNeeded(ctx, true); err != nil {
			return err
		}
		if status, respBody, err = c.send(ctx, method, path, query, body); err != nil {
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

func (c *client) send(ctx context.Context, method, path string, query url.Values, body any) (int, []byte, error) {
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
	if c.creds != nil && c.creds.AccessToken != "" {
		req.Header.Set("Authorization", "Bearer "+c.creds.AccessToken)
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

// refreshIfNeeded exchanges the refresh token when the access token has
// expired (or force is set) and saves the new pair.
func (c *client) refreshIfNeeded(ctx context.Context, force bool) error {
	if !force && time.Until(c.creds.AccessExpiresAt) > 30*time.Second {
		return nil
	}
	if time.Now().After(c.creds.RefreshExpiresAt) {
		return errors.New("your login has expired: run `airlock login` again")
	}
	var pair tokenPair
	creds := c.creds
	c.creds = nil // the refresh call itself is anonymous
	status, body, err := c.send(ctx, http.MethodPost, "/api/v1/auth/refresh", nil, map[string]string{"refreshToken": creds.RefreshToken})
	c.creds = creds
	if err != nil {
		return err
	}
	if status != http.StatusOK {
		return errors.New("your login is no longer valid: run `airlock login` again")
	}
	if err := json.Unmarshal(body, &pair); err != nil {
		return fmt.Errorf("the server's answer could not be read: %w", err)
	}
	pair.apply(c.creds)
	return saveCredentials(c.creds)
}

type tokenPair struct {
	AccessToken      string    `json:"accessToken"`
	AccessExpiresAt  time.Time `json:"accessExpiresAt"`
	RefreshToken     string    `json:"refreshToken"`
	RefreshExpiresAt time.Time `json:"refreshExpiresAt"`
}

func (p tokenPair) apply(c *Credentials) {
	c.AccessToken, c.AccessExpiresAt = p.AccessToken, p.AccessExpiresAt
	c.RefreshToken, c.RefreshExpiresAt = p.RefreshToken, p.RefreshExpiresAt
}
