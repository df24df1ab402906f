package e2e_test

import (
	"context"
	"fmt"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/jackc/pgx/v5"

	"github.com/airlockpam/airlock/internal/testenv"
)

// TestWebRotation drives rotation in Chromium: an admin adds a resource
// with a rotation account, adds an account that rotates every day, presses
// Rotate now, and sees status ok with the time it was rotated; psql
// through `db access` then connects with the new password, which nobody
// has seen, and the old one no longer logs in. Renaming the resource on
// the Edit Resource page shows the new name.
func TestWebRotation(t *testing.T) {
	w := newWorld(t)
	ctx := context.Background()
	super, err := pgx.Connect(ctx, w.pg.SuperURL(testenv.AppDatabase))
	if err != nil {
		t.Fatal(err)
	}
	for _, stmt := range []string{
		`CREATE ROLE wr_app LOGIN PASSWORD 'first-app-Pa55'`,
		`CREATE ROLE wr_rotator LOGIN CREATEROLE PASSWORD 'rotator-Pa55'`,
		`GRANT SELECT ON items TO wr_app`,
	} {
		if _, err := super.Exec(ctx, stmt); err != nil {
			t.Fatalf("%s: %v", stmt, err)
		}
	}
	super.Close(ctx)

	b := newWebBrowser(t, w.srv.URL)
	b.login(w.srv.AdminEmail, w.srv.AdminPassword)
	b.open("/projects/"+w.project+"/resources/new?kind=postgres", "#resource-form")
	b.do(chromedp.SendKeys(chromedp.ID("name"), "rot-db"), chromedp.SendKeys(chromedp.ID("host"), "127.0.0.1"),
		chromedp.SetValue(chromedp.ID("port"), fmt.Sprint(w.pg.Port)), chromedp.SendKeys(chromedp.ID("database"), testenv.AppDatabase),
		chromedp.SetValue(chromedp.ID("sslCaPem"), string(w.pg.CA.CertPEM)),
		chromedp.SendKeys(chromedp.ID("rotationUsername"), "wr_rotator"), chromedp.SendKeys(chromedp.ID("rotationPassword"), "rotator-Pa55"),
		submit(chromedp.ID("create-resource")), chromedp.WaitVisible(chromedp.ID("resource-facts")))
	if got := b.text("#rotation-account"); !strings.Contains(got, "wr_rotator") {
		t.Fatalf("the resource page's rotation account: %q", got)
	}
	if strings.Contains(b.html(), "rotator-Pa55") {
		t.Fatal("the resource page shows the rotation password")
	}

	// An account that rotates every day.
	b.do(chromedp.SendKeys(chromedp.ID("account-name"), "app"), chromedp.SendKeys(chromedp.ID("account-username"), "wr_app"),
		chromedp.SendKeys(chromedp.ID("account-password"), "first-app-Pa55"), chromedp.SetValue(chromedp.ID("account-rotation"), "1d"),
		submit(chromedp.ID("create-account")), chromedp.WaitVisible(chromedp.ID("notice")))
	if got := b.text(`tr[data-account="app"] td.rotation`); got != "every 1d, scheduled" {
		t.Fatalf("the accounts table's rotation: %q", got)
	}
	b.do(submit(chromedp.CSS(`tr[data-account="app"] a`)), chromedp.WaitVisible(chromedp.ID("rotate-now")))
	if got := b.text("#rotation-last"); got != "never" {
		t.Fatalf("last rotated before any rotation: %q", got)
	}
	if got := b.text("#rotation-next"); !strings.Contains(got, "UTC") {
		t.Fatalf("next due: %q", got)
	}

	// Rotate now.
	b.do(submit(chromedp.ID("rotate-now")), chromedp.WaitVisible(chromedp.ID("notice")))
	if got := b.text("#rotation-status"); got != "ok" {
		t.Fatalf("status after Rotate now: %q\npage: %s", got, b.pageText())
	}
	if got := b.text("#rotation-last"); !strings.Contains(got, "UTC") {
		t.Fatalf("last rotated after Rotate now: %q", got)
	}
	if c, err := pgx.Connect(ctx, w.pg.URL("wr_app", "first-app-Pa55", testenv.AppDatabase, "verify-full")); err == nil {
		c.Close(ctx)
		t.Fatal("the old password still logs in after Rotate now")
	}
	p := w.admin.Start("db", "access", "--project-id", w.project, "--resource", "rot-db", "--account", "app", "--domain", w.srv.URL)
	url := p.WaitLine(t, urlLine, 60*time.Second)
	if r := psql(t, false, url, "SELECT current_user"); r.Code != 0 || strings.TrimSpace(r.Out) != "wr_app" {
		t.Fatalf("psql through db access after the rotation: exit %d: %s", r.Code, r.Out)
	}
	p.Stop(syscall.SIGINT)

	// Edit Resource: a rename shows on the resource page.
	var res struct{ ID string }
	w.admin.JSON(&res, "", "resources", "get", "rot-db", "--project-id", w.project)
	b.open("/projects/"+w.project+"/resources/"+res.ID, "#edit-resource")
	b.do(submit(chromedp.ID("edit-resource")), chromedp.WaitVisible(chromedp.ID("resource-edit-form")))
	b.do(chromedp.SetValue(chromedp.ID("name"), "rot-db-main"), submit(chromedp.ID("save-resource")),
		chromedp.WaitVisible(chromedp.ID("resource-facts")))
	if got := b.text("h1"); !strings.Contains(got, "rot-db-main") {
		t.Fatalf("after the rename: %q", got)
	}
}
