package cli

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"github.com/airlockpam/airlock/internal/e2e"
)

// TestRefreshesOfOneLoginNeverReuseAToken runs several clients of one
// stored login (as several airlock processes would be) that all force
// refreshes at once, against a real server whose refresh-token reuse
// detection revokes the whole login when a refresh token is used twice.
// Under the credentials lock each client either refreshes or adopts what
// another stored, so the login stays valid throughout.
func TestRefreshesOfOneLoginNeverReuseAToken(t *testing.T) {
	srv := e2e.StartServer(t)
	u := e2e.NewUser(t)
	u.Login(srv, srv.AdminEmail, srv.AdminPassword)
	t.Setenv(EnvConfigDir, u.Config)
	ctx := context.Background()

	const workers, rounds = 4, 12
	var wg sync.WaitGroup
	errc := make(chan error, workers)
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c, err := loggedInClient()
			if err != nil {
				errc <- err
				return
			}
			for i := range rounds {
				if err := c.refreshIfNeeded(ctx, true); err != nil {
					errc <- fmt.Errorf("worker %d round %d: refresh: %w", w, i, err)
					return
				}
				if err := c.do(ctx, http.MethodGet, "/api/v1/auth/me", nil, nil, nil); err != nil {
					errc <- fmt.Errorf("worker %d round %d: %w", w, i, err)
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errc)
	for err := range errc {
		t.Error(err)
	}
	// The stored login still works for a new process.
	if out, errOut, code := u.Run("", "projects", "list"); code != 0 {
		t.Fatalf("after the refreshes: exit %d\n%s%s", code, out, errOut)
	}

	// A client that holds tokens older than the stored ones adopts them.
	stale, err := loggedInClient()
	if err != nil {
		t.Fatal(err)
	}
	fresh, err := loggedInClient()
	if err != nil {
		t.Fatal(err)
	}
	if err := fresh.refreshIfNeeded(ctx, true); err != nil {
		t.Fatal(err)
	}
	if err := stale.refreshIfNeeded(ctx, true); err != nil {
		t.Fatal(err)
	}
	if stale.token() != fresh.token() {
		t.Fatal("the stale client refreshed again instead of adopting the stored tokens")
	}

	// Logging out in another terminal removes the file and revokes the
	// login: a refresh says so, as an errLoginGone.
	u.Must("", "logout")
	err = stale.refreshIfNeeded(ctx, true)
	if !errors.Is(err, errLoginGone) {
		t.Fatalf("refresh after logout: %v", err)
	}
	if _, err := os.Stat(filepath.Join(u.Config, "credentials.json")); !os.IsNotExist(err) {
		t.Fatalf("a refresh after logout recreated the credentials file: %v", err)
	}
	// Revoked on the server but still on disk (an admin revoked it): the
	// refresh is refused, which is an errLoginGone too.
	u.Login(srv, srv.AdminEmail, srv.AdminPassword)
	c, err := loggedInClient()
	if err != nil {
		t.Fatal(err)
	}
	if err := c.do(ctx, http.MethodPost, "/api/v1/auth/logout", nil, nil, nil); err != nil {
		t.Fatal(err)
	}
	err = c.refreshIfNeeded(ctx, true)
	if !errors.Is(err, errLoginGone) || err.Error() != "your login was revoked (logged out elsewhere, or by an administrator): run `airlock login`" {
		t.Fatalf("refresh of a revoked login: %v", err)
	}
}
