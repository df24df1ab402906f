package testenv

import (
	"errors"
	"os"
	"os/exec"
	"testing"
)

// chromiumNames are the commands tried, in order, for a browser.
var chromiumNames = []string{"chromium", "chromium-browser", "google-chrome", "google-chrome-stable"}

// ChromiumFlags are the command-line switches a headless Chromium needs on
// a test machine (root, no GPU, no network of its own); chromedp's
// allocator takes them as flags.
var ChromiumFlags = map[string]any{
	"headless":                      true,
	"no-sandbox":                    true, // tests run as root
	"disable-gpu":                   true,
	"disable-background-networking": true,
	"disable-component-update":      true,
	"disable-sync":                  true,
	"no-first-run":                  true,
	"disable-quic":                  true,
	"disable-dev-shm-usage":         true,
}

// FindChromium returns the path of a Chromium to drive: $AIRLOCK_TEST_CHROMIUM
// when set, else the first of chromium, chromium-browser, google-chrome on
// PATH.
func FindChromium() (string, error) {
	if p := os.Getenv("AIRLOCK_TEST_CHROMIUM"); p != "" {
		if _, err := os.Stat(p); err != nil {
			return "", errors.New("AIRLOCK_TEST_CHROMIUM names " + p + ", which does not exist")
		}
		return p, nil
	}
	for _, n := range chromiumNames {
		if p, err := exec.LookPath(n); err == nil {
			return p, nil
		}
	}
	return "", errors.New("no Chromium found (looked for chromium, chromium-browser, google-chrome on PATH): " +
		"install Debian's chromium as root (apt-get install -y chromium, or ./scripts/install-test-deps)")
}

// Chromium returns the browser for a test that drives one. Without one the
// test is skipped, or fails in CI and with AIRLOCK_TEST_REQUIRE_SERVERS=1.
func Chromium(t testing.TB) string {
	t.Helper()
	p, err := FindChromium()
	Require(t, "Chromium", err)
	return p
}
