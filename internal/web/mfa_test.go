package web

import (
	"strings"
	"testing"
	"time"
)

func TestQRSVG(t *testing.T) {
	svg, err := qrSVG("otpauth://totp/Airlock:alice@example.com?secret=JBSWY3DPEHPK3PXP&issuer=Airlock")
	if err != nil {
		t.Fatal(err)
	}
	s := string(svg)
	if !strings.HasPrefix(s, "<svg ") || !strings.HasSuffix(s, "</svg>") || !strings.Contains(s, `id="totp-qr"`) ||
		strings.Count(s, "h1v1h-1z") < 100 || strings.Contains(s, "secret=") {
		t.Fatalf("the QR code's SVG: %.200s", s)
	}
}

// TestPendingLogins: a held sign-in lives until its challenge expires, is
// found only by its id, and goes when removed.
func TestPendingLogins(t *testing.T) {
	now := time.Date(2026, 12, 4, 12, 0, 0, 0, time.UTC)
	var p pendingLogins
	id := p.put(now, &pendingLogin{email: "a@example.com", challengeID: "c1", expires: now.Add(5 * time.Minute)})
	if pl := p.get(now.Add(4*time.Minute), id); pl == nil || pl.challengeID != "c1" {
		t.Fatalf("get = %+v", pl)
	}
	if pl := p.get(now, id+"x"); pl != nil {
		t.Fatal("found under another id")
	}
	if pl := p.get(now.Add(5*time.Minute), id); pl != nil {
		t.Fatal("found after it expired")
	}
	id = p.put(now, &pendingLogin{expires: now.Add(time.Minute)})
	p.remove(id)
	if p.get(now, id) != nil {
		t.Fatal("found after remove")
	}
	// Expired entries go when the next sign-in is held.
	p.put(now, &pendingLogin{expires: now.Add(time.Minute)})
	p.put(now.Add(2*time.Minute), &pendingLogin{expires: now.Add(3 * time.Minute)})
	if len(p.m) != 1 {
		t.Fatalf("%d held sign-ins; want 1", len(p.m))
	}
}
