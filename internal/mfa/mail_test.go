package mfa

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/airlockpam/airlock/internal/testenv"
)

// TestSMTPMailer sends through a real SMTP server (mailpit) with AUTH, and
// to one that is not there.
func TestSMTPMailer(t *testing.T) {
	mp := testenv.StartMailpit(t)
	m, err := ParseSMTPURL(fmt.Sprintf("smtp://airlock:s3cret-pw@%s:%d?from=noreply@example.com", mp.SMTPHost, mp.SMTPPort))
	if err != nil {
		t.Fatal(err)
	}
	if r := m.Redacted(); strings.Contains(r, "s3cret") {
		t.Fatalf("Redacted() = %q holds the password", r)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := m.Send(ctx, "carol@example.com", "Your Airlock code", "Your Airlock code is 123456.\n"); err != nil {
		t.Fatal(err)
	}
	msg := mp.WaitForMessage(t, 10*time.Second, func(x testenv.Message) bool { return x.Subject == "Your Airlock code" })
	if len(msg.To) != 1 || msg.To[0].Address != "carol@example.com" || msg.From.Address != "noreply@example.com" {
		t.Fatalf("message %+v", msg)
	}
	if !strings.Contains(mp.Text(t, msg.ID), "123456") {
		t.Fatal("the code is not in the mail")
	}

	// Required STARTTLS (the default for a host that is not this machine)
	// that the server does not offer: nothing is sent, and the error says
	// what to do.
	strict, err := ParseSMTPURL(fmt.Sprintf("smtp://airlock:s3cret-pw@%s:%d?starttls=require", mp.SMTPHost, mp.SMTPPort))
	if err != nil {
		t.Fatal(err)
	}
	err = strict.Send(ctx, "carol@example.com", "Must not be sent", "in clear")
	if err == nil || !strings.Contains(err.Error(), "does not offer STARTTLS") || !strings.Contains(err.Error(), "starttls=off") || strings.Contains(err.Error(), "s3cret") {
		t.Fatalf("a server without STARTTLS under starttls=require: %v", err)
	}
	for _, m := range mp.Messages(t) {
		if m.Subject == "Must not be sent" {
			t.Fatal("the mail was sent in clear")
		}
	}
	if _, err := ParseSMTPURL("smtp://mail.example.com?starttls=maybe"); err == nil || !strings.Contains(err.Error(), "starttls=require") {
		t.Fatalf("a bad starttls value: %v", err)
	}
	for raw, plainOK := range map[string]bool{"smtp://mail.example.com": false, "smtp://127.0.0.1:25": true, "smtp://localhost": true,
		"smtp://mail.example.com?starttls=off": true, "smtp://[::1]:25?starttls=require": false} {
		if m, err := ParseSMTPURL(raw); err != nil || m.plainOK != plainOK {
			t.Errorf("%s: without STARTTLS allowed %v (%v), want %v", raw, m != nil && m.plainOK, err, plainOK)
		}
	}

	port, err := testenv.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	gone, _ := ParseSMTPURL(fmt.Sprintf("smtp://airlock:s3cret-pw@127.0.0.1:%d", port))
	err = gone.Send(ctx, "carol@example.com", "x", "y")
	if err == nil || strings.Contains(err.Error(), "s3cret") || !strings.Contains(err.Error(), "connecting to the SMTP server") {
		t.Fatalf("unreachable SMTP: %v", err)
	}
}

func TestParseSMTPURL(t *testing.T) {
	for raw, want := range map[string]string{
		"smtp://u:p@mail.example.com":  "smtp://u:***@mail.example.com:587",
		"smtps://u:p@mail.example.com": "smtps://u:***@mail.example.com:465",
		"smtp://mail.example.com:2525": "smtp://mail.example.com:2525",
		"http://u:secretpw@x":          "error",
		"smtp://u:secretpw@":           "error",
	} {
		m, err := ParseSMTPURL(raw)
		switch {
		case want == "error" && (err == nil || strings.Contains(err.Error(), "secretpw")):
			t.Errorf("%s: %v", raw, err)
		case want != "error" && (err != nil || m.Redacted() != want):
			t.Errorf("%s: %v %v; want %s", raw, m, err, want)
		}
	}
}

// TestLogMailer: `airlock dev`'s fallback logs the message, labelled.
func TestLogMailer(t *testing.T) {
	var b strings.Builder
	m := LogMailer{Log: slog.New(slog.NewTextHandler(&b, nil))}
	if err := m.Send(context.Background(), "bob@example.com", "Your Airlock code", "Your Airlock code is 123456."); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(b.String(), "DEVELOPMENT FALLBACK") || !strings.Contains(b.String(), "123456") {
		t.Fatalf("log: %s", b.String())
	}
}
