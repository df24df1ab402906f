package testenv

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// Mailpit is a mailpit server started for a test: an SMTP server that
// accepts any mail (and any AUTH, without TLS) and keeps it, and an HTTP API
// to read what arrived.
type Mailpit struct {
	SMTPHost string // always 127.0.0.1
	SMTPPort int
	APIURL   string // http://127.0.0.1:PORT, without a trailing slash
	DataDir  string
	LogPath  string

	managed
	client *http.Client
}

// Address is a mail address as mailpit reports it.
type Address struct {
	Name    string
	Address string
}

// Message is the summary of a received mail, as listed by mailpit.
type Message struct {
	ID      string // mailpit's ID, for Text
	From    Address
	To      []Address
	Subject string
	Created time.Time
	Snippet string // the start of the text body
}

// StartMailpit starts a mailpit for t and stops it by PID when t ends. The
// binary is installed into CacheDir on first use (scripts/install-test-deps
// does it ahead of the tests). If it cannot be started, Require decides
// whether t fails or is skipped.
func StartMailpit(t testing.TB) *Mailpit {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), buildTimeout+startTimeout)
	defer cancel()
	bin, err := ensureMailpit(ctx)
	Require(t, "mailpit", err)
	if bin.Built {
		t.Logf("testenv: installed mailpit %s in %v into %s", bin.Version, bin.Took.Round(time.Second), bin.Path)
	}
	sctx, scancel := context.WithTimeout(ctx, startTimeout)
	defer scancel()
	m, err := startMailpit(sctx, bin.Path)
	Require(t, "mailpit", err)
	t.Cleanup(func() {
		if err := m.close(); err != nil {
			t.Errorf("testenv: %v", err)
		}
	})
	logOnFailure(t, "mailpit", m.LogPath)
	return m
}

func startMailpit(ctx context.Context, bin string) (_ *Mailpit, err error) {
	m := &Mailpit{managed: managed{name: "mailpit"}, SMTPHost: "127.0.0.1", client: &http.Client{Timeout: 10 * time.Second}}
	if m.baseDir, err = os.MkdirTemp("", "airlock-mailpit-"); err != nil {
		return nil, fmt.Errorf("create mailpit directory: %w", err)
	}
	defer func() {
		if err != nil {
			_ = m.close()
		}
	}()
	m.DataDir = m.baseDir
	m.LogPath = filepath.Join(m.baseDir, "mailpit.log")

	for attempt := 1; ; attempt++ {
		smtpPort, err := FreePort()
		if err != nil {
			return nil, err
		}
		httpPort, err := FreePort()
		if err != nil {
			return nil, err
		}
		if smtpPort == httpPort {
			continue
		}
		m.SMTPPort = smtpPort
		httpAddr := net.JoinHostPort("127.0.0.1", strconv.Itoa(httpPort))
		m.APIURL = "http://" + httpAddr
		args := []string{
			"--smtp", m.SMTPAddr(),
			"--listen", httpAddr,
			"--database", m.dbPath(),
			"--disable-version-check",
			"--smtp-auth-accept-any",
			"--smtp-auth-allow-insecure",
		}
		logStart := fileSize(m.LogPath)
		if m.proc, err = startProcess(bin, args, m.baseDir, m.LogPath); err != nil {
			return nil, err
		}
		err = m.waitReady(ctx)
		if err == nil {
			break
		}
		_ = m.proc.stop(time.Second)
		inUse := strings.Contains(readFrom(m.LogPath, logStart), "address already in use")
		if !inUse || attempt >= portAttempts {
			return nil, withLog(fmt.Errorf("start mailpit: %w", err), m.LogPath)
		}
	}
	if m.wd, err = startWatchdog(watchdogKillScript, strconv.Itoa(m.proc.pid()), m.baseDir); err != nil {
		return nil, err
	}
	return m, nil
}

// waitReady waits until both the SMTP port and the API answer, and checks
// that the API is this server's (it reports the database path) and that the
// process still runs (it exits if it cannot bind the SMTP port).
func (m *Mailpit) waitReady(ctx context.Context) error {
	if err := waitTCP(ctx, m.SMTPAddr(), m.proc.exited); err != nil {
		return err
	}
	tick := time.NewTicker(pollInterval)
	defer tick.Stop()
	for {
		var info struct{ Database string }
		err := m.getJSON(ctx, "/api/v1/info", &info)
		if err == nil {
			if info.Database != m.dbPath() {
				return fmt.Errorf("another mailpit (database %s) answers on %s", info.Database, m.APIURL)
			}
			select {
			case <-m.proc.exited:
				return errors.New("mailpit exited after its API answered")
			default:
				return nil
			}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("wait for the mailpit API: %w (last error: %v)", ctx.Err(), err)
		case <-m.proc.exited:
			return errors.New("mailpit exited before its API answered")
		case <-tick.C:
		}
	}
}

func (m *Mailpit) dbPath() string { return filepath.Join(m.DataDir, "mail.db") }

// SMTPAddr returns the SMTP server's host:port.
func (m *Mailpit) SMTPAddr() string {
	return net.JoinHostPort(m.SMTPHost, strconv.Itoa(m.SMTPPort))
}

// Messages returns every message received so far, newest first. It fails the
// test on error.
func (m *Mailpit) Messages(t testing.TB) []Message {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	msgs, err := m.messages(ctx)
	if err != nil {
		t.Fatalf("testenv: %v", err)
	}
	return msgs
}

// pageSize is how many messages one API call lists.
const pageSize = 200

func (m *Mailpit) messages(ctx context.Context) ([]Message, error) {
	var all []Message
	for {
		var page struct {
			Total    int
			Messages []Message
		}
		path := "/api/v1/messages?start=" + strconv.Itoa(len(all)) + "&limit=" + strconv.Itoa(pageSize)
		if err := m.getJSON(ctx, path, &page); err != nil {
			return nil, err
		}
		all = append(all, page.Messages...)
		if len(page.Messages) == 0 || len(all) >= page.Total {
			return all, nil
		}
	}
}

// WaitForMessage waits up to timeout for a message for which match returns
// true and returns it, for code that sends mail in the background. It fails
// the test if none arrives.
func (m *Mailpit) WaitForMessage(t testing.TB, timeout time.Duration, match func(Message) bool) Message {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		msgs, err := m.messages(ctx)
		if err == nil {
			for _, msg := range msgs {
				if match(msg) {
					return msg
				}
			}
		}
		select {
		case <-ctx.Done():
			t.Fatalf("testenv: no matching mail arrived in mailpit within %v (%d messages; last error: %v)", timeout, len(msgs), err)
		case <-tick.C:
		}
	}
}

// Text returns the plain-text body of the message with the given ID. It
// fails the test on error.
func (m *Mailpit) Text(t testing.TB, id string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var msg struct{ Text string }
	if err := m.getJSON(ctx, "/api/v1/message/"+url.PathEscape(id), &msg); err != nil {
		t.Fatalf("testenv: %v", err)
	}
	return msg.Text
}

// DeleteAll deletes every message. It fails the test on error.
func (m *Mailpit) DeleteAll(t testing.TB) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodDelete, m.APIURL+"/api/v1/messages", nil)
	if err != nil {
		t.Fatalf("testenv: %v", err)
	}
	if err := m.do(req, nil); err != nil {
		t.Fatalf("testenv: %v", err)
	}
}

func (m *Mailpit) getJSON(ctx context.Context, path string, into any) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, m.APIURL+path, nil)
	if err != nil {
		return err
	}
	return m.do(req, into)
}

// do sends req and decodes a JSON answer into into, unless it is nil.
func (m *Mailpit) do(req *http.Request, into any) error {
	resp, err := m.client.Do(req)
	if err != nil {
		return fmt.Errorf("mailpit API: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 1024))
		return fmt.Errorf("mailpit API: %s %s: %s: %s", req.Method, req.URL.Path, resp.Status, strings.TrimSpace(string(body)))
	}
	if into == nil {
		_, _ = io.Copy(io.Discard, resp.Body)
		return nil
	}
	if err := json.NewDecoder(resp.Body).Decode(into); err != nil {
		return fmt.Errorf("mailpit API: %s %s: decode answer: %w", req.Method, req.URL.Path, err)
	}
	return nil
}
