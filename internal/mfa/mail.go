package mfa

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/smtp"
	"net/url"
	"strings"
	"time"
)

// Mailer sends one plain-text email.
type Mailer interface {
	Send(ctx context.Context, to, subject, body string) error
}

// SMTPMailer sends mail through an SMTP server: STARTTLS when the server
// offers it (smtp://), TLS from the first byte (smtps://), and PLAIN
// authentication when the URL has a user.
type SMTPMailer struct {
	addr, host string
	implicit   bool
	user, pass string
	from       string
	// plainOK lets smtp:// go on without STARTTLS: a server on this
	// machine, or ?starttls=off given by the operator.
	plainOK bool
	// TLS, when set, replaces the default TLS configuration (tests).
	TLS *tls.Config
}

// ParseSMTPURL reads smtp://user:pass@host:port or smtps://... with an
// optional ?from=address. smtp:// requires STARTTLS (codes must not cross
// a network in clear, and a server that stops offering it may be an
// attacker in the middle) unless the host is this machine or
// ?starttls=off is given. The error never holds the password.
func ParseSMTPURL(raw string) (*SMTPMailer, error) {
	u, err := url.Parse(raw)
	if err != nil {
		return nil, errors.New("--smtp-url is not a URL: use smtp://user:password@host:587 or smtps://user:password@host:465")
	}
	m := &SMTPMailer{}
	switch u.Scheme {
	case "smtp":
	case "smtps":
		m.implicit = true
	default:
		return nil, errors.New("--smtp-url must start with smtp:// (STARTTLS) or smtps:// (TLS)")
	}
	if u.Hostname() == "" {
		return nil, errors.New("--smtp-url has no host")
	}
	port := u.Port()
	if port == "" {
		port = "587"
		if m.implicit {
			port = "465"
		}
	}
	m.host, m.addr = u.Hostname(), net.JoinHostPort(u.Hostname(), port)
	if u.User != nil {
		m.user = u.User.Username()
		m.pass, _ = u.User.Password()
	}
	switch st := u.Query().Get("starttls"); st {
	case "", "require":
		if ip := net.ParseIP(m.host); m.host == "localhost" || ip != nil && ip.IsLoopback() {
			m.plainOK = st == ""
		}
	case "off":
		m.plainOK = true
	default:
		return nil, fmt.Errorf("--smtp-url: starttls=%q: use starttls=require (the default) or starttls=off", st)
	}
	m.from = u.Query().Get("from")
	if m.from == "" {
		m.from = "airlock@" + m.host
	}
	return m, nil
}

// Redacted is the URL without its password, for logs.
func (m *SMTPMailer) Redacted() string {
	scheme := "smtp"
	if m.implicit {
		scheme = "smtps"
	}
	user := ""
	if m.user != "" {
		user = m.user + ":***@"
	}
	return scheme + "://" + user + m.addr
}

// Send delivers one message.
func (m *SMTPMailer) Send(ctx context.Context, to, subject, body string) error {
	if strings.ContainsAny(to, "\r\n") || strings.ContainsAny(subject, "\r\n") {
		return errors.New("a header holds a line break")
	}
	d := net.Dialer{Timeout: 10 * time.Second}
	tcfg := m.TLS
	if tcfg == nil {
		tcfg = &tls.Config{ServerName: m.host, MinVersion: tls.VersionTLS12}
	}
	var conn net.Conn
	var err error
	if m.implicit {
		conn, err = (&tls.Dialer{NetDialer: &d, Config: tcfg}).DialContext(ctx, "tcp", m.addr)
	} else {
		conn, err = d.DialContext(ctx, "tcp", m.addr)
	}
	if err != nil {
		return fmt.Errorf("connecting to the SMTP server %s: %w", m.addr, err)
	}
	if dl, ok := ctx.Deadline(); ok {
		_ = conn.SetDeadline(dl)
	} else {
		_ = conn.SetDeadline(time.Now().Add(30 * time.Second))
	}
	c, err := smtp.NewClient(conn, m.host)
	if err != nil {
		conn.Close()
		return fmt.Errorf("SMTP greeting from %s: %w", m.addr, err)
	}
	defer c.Close()
	if !m.implicit {
		if ok, _ := c.Extension("STARTTLS"); ok {
			if err := c.StartTLS(tcfg); err != nil {
				return fmt.Errorf("STARTTLS with %s: %w", m.addr, err)
			}
		} else if !m.plainOK {
			return fmt.Errorf("the SMTP server %s does not offer STARTTLS, so the mail would cross the network in clear: "+
				"use smtps://, enable STARTTLS on the server, or add ?starttls=off to --smtp-url for a relay on a trusted network", m.addr)
		}
	}
	if m.user != "" {
		// net/smtp's PlainAuth refuses to send the password without TLS
		// unless the server is on localhost.
		if err := c.Auth(smtp.PlainAuth("", m.user, m.pass, m.host)); err != nil {
			return fmt.Errorf("SMTP authentication as %s: %w", m.user, err)
		}
	}
	if err := c.Mail(m.from); err != nil {
		return fmt.Errorf("SMTP MAIL FROM: %w", err)
	}
	if err := c.Rcpt(to); err != nil {
		return fmt.Errorf("SMTP RCPT TO: %w", err)
	}
	w, err := c.Data()
	if err != nil {
		return fmt.Errorf("SMTP DATA: %w", err)
	}
	msg := "From: " + m.from + "\r\nTo: " + to + "\r\nSubject: " + subject + "\r\nDate: " + time.Now().UTC().Format(time.RFC1123Z) +
		"\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n" + strings.ReplaceAll(body, "\n", "\r\n")
	if _, err := w.Write([]byte(msg)); err != nil {
		return fmt.Errorf("SMTP DATA: %w", err)
	}
	if err := w.Close(); err != nil {
		return fmt.Errorf("SMTP DATA: %w", err)
	}
	return c.Quit()
}

// LogMailer is `airlock dev`'s fallback without SMTP: it writes each
// message, code included, to the log, labelled as a development fallback.
// A production server never uses it.
type LogMailer struct{ Log *slog.Logger }

// Send logs the message.
func (m LogMailer) Send(ctx context.Context, to, subject, body string) error {
	l := m.Log
	if l == nil {
		l = slog.Default()
	}
	l.WarnContext(ctx, "DEVELOPMENT FALLBACK, no SMTP configured: this email was not sent; its text is logged instead",
		"to", to, "subject", subject, "body", body)
	return nil
}
