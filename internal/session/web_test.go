package session_test

import (
	"context"
	"testing"

	"github.com/airlockpam/airlock/internal/errs"
	"github.com/airlockpam/airlock/internal/pki"
	"github.com/airlockpam/airlock/internal/relay"
	"github.com/airlockpam/airlock/internal/session"
)

// TestCreateWebIsForPostgreSQLOnly: the web console serves PostgreSQL
// accounts; a MongoDB one is refused before anything is signed or stored.
func TestCreateWebIsForPostgreSQLOnly(t *testing.T) {
	w := newWorld(t)
	m := pki.NewManager(w.db, w.kr, w.clock.Now)
	r := relay.New(relay.Config{DB: w.db, PKI: m, Now: w.clock.Now})
	kind := "mongodb"
	s := session.New(w.db, w.projects, m, r, func(context.Context, string, string, string) (*session.Target, error) {
		return &session.Target{ResourceID: w.resourceID, ResourceName: "docs", Kind: kind, GatewayID: w.gatewayID, AccountID: w.accountID}, nil
	}, w.clock.Now)
	_, csr, err := pki.NewKeyAndCSR("test")
	if err != nil {
		t.Fatal(err)
	}
	_, err = s.CreateWeb(w.bob, w.projectID, "docs", "app", "1h", string(csr))
	if !errs.Is(err, errs.Invalid) {
		t.Fatalf("a web session on a MongoDB account: %v", err)
	}
	// A PostgreSQL account passes that check (and here stops at the
	// gateway, which is not connected).
	kind = "postgres"
	if _, err = s.CreateWeb(w.bob, w.projectID, "db", "app", "1h", string(csr)); !errs.Is(err, errs.Unavailable) {
		t.Fatalf("a web session on a PostgreSQL account with its gateway offline: %v", err)
	}
	var n int
	if err := w.db.QueryRow(`SELECT COUNT(*) FROM sessions`).Scan(&n); err != nil || n != 0 {
		t.Fatalf("%d sessions stored (%v)", n, err)
	}
}
