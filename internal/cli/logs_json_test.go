package cli

import (
	"bytes"
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/danielgtaylor/huma/v2"

	"github.com/airlockpam/airlock/internal/session"
	"github.com/airlockpam/airlock/internal/sessionlog"
)

// TestSessionLogsJSONIsTheServersEncoding: `sessions logs -o json` prints
// each event as the API encodes it, one per line: the same fields and the
// same text (a statement's < and & are not escaped).
func TestSessionLogsJSONIsTheServersEncoding(t *testing.T) {
	at := time.Date(2026, 12, 3, 16, 0, 0, 123456789, time.UTC)
	page := session.Logs{Ended: true, Next: 2, Events: []sessionlog.Event{
		{ID: "e1", SessionID: "s", Seq: 1, Time: at, ConnID: "c", Kind: "query", Statement: "SELECT 1 WHERE 2 < 3 AND 'a' <> 'b' & 1", Outcome: "SELECT 1", Rows: 1},
		{ID: "e2", SessionID: "s", Seq: 2, Time: at, ConnID: "c", Kind: "execute", Statement: "SELECT $1", Params: []string{"<x>"}, DurationUS: 7},
	}}
	var want bytes.Buffer
	if err := huma.DefaultJSONFormat.Marshal(&want, page); err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(want.Bytes())
	}))
	defer srv.Close()
	t.Setenv(EnvConfigDir, t.TempDir())
	if err := saveCredentials(&Credentials{Domain: srv.URL, AccessToken: "a", AccessExpiresAt: time.Now().Add(time.Hour),
		RefreshToken: "r", RefreshExpiresAt: time.Now().Add(time.Hour)}); err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	o := &options{stdin: strings.NewReader(""), stdout: &out, stderr: &out}
	if err := run(context.Background(), newRootCommand(o), []string{"sessions", "logs", "s", "-o", "json"}); err != nil {
		t.Fatalf("%v\n%s", err, out.String())
	}
	var lines []string
	for _, e := range page.Events {
		var b bytes.Buffer
		if err := huma.DefaultJSONFormat.Marshal(&b, e); err != nil {
			t.Fatal(err)
		}
		lines = append(lines, b.String())
	}
	if got := out.String(); got != strings.Join(lines, "") {
		t.Fatalf("printed\n%s\nwant\n%s", got, strings.Join(lines, ""))
	}
	if !strings.Contains(out.String(), "2 < 3") || !strings.Contains(out.String(), `"<x>"`) {
		t.Fatalf("escaped: %s", out.String())
	}
}
