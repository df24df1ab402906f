package web

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"time"

	"github.com/airlockpam/airlock/internal/errs"
	"github.com/airlockpam/airlock/internal/webconsole"
)

// The browser SQL console (issue 15, item 4). Web Access on a PostgreSQL
// account posts to .../console, which opens a console (package
// webconsole: a session with access method web whose client is this
// server) and shows its page at /console/{cid}. The page's script talks to
// the console with fetch: POST run, cancel and end (with the X-CSRF-Token
// header, as every state-changing request), GET schema and columns, and an
// event stream (GET events) that stays open while the page is: when it
// drops (the tab was closed), the console and its session end.

// consoleData is what the console page shows.
type consoleData struct {
	C                *webconsole.Console
	StatementTimeout string
	IdleTimeout      string
	MaxRows          int
}

// consoleOpen opens a console on an account and shows its page.
func (h *Handler) consoleOpen(w http.ResponseWriter, r *http.Request) {
	if h.consoles == nil {
		h.errorPage(w, r, http.StatusNotFound, "The web console is not available on this server.")
		return
	}
	tab, ok := h.project(w, r, "resources")
	if !ok {
		return
	}
	ri := infoFrom(r.Context())
	// An account that requires MFA: the form answers the challenge it
	// was shown (pages_mfa.go), as the CLI does through the API.
	opts, err := h.consoleMFAOptions(r)
	if err != nil {
		status, msg := userError(r.Context(), err)
		if retryable(err, msg) {
			d := mfaStepData{ChallengeID: r.PostFormValue("mfaChallengeId"), Method: r.PostFormValue("mfaMethod"), Action: r.URL.Path, For: "Web Access"}
			h.render(w, r, status, "mfa_step", view{Title: "MFA required", Nav: "projects", Data: d, Error: msg})
			return
		}
		h.fail(w, r, err)
		return
	}
	c, err := h.consoles.Open(r.Context(), tab.Project.ID, r.PathValue("rid"), r.PathValue("aid"), ri.ws.key, tab.Project.MaxSession, tab.Project.ConsoleTimeout, opts...)
	if err != nil {
		if h.consoleMFA(w, r, err) {
			return
		}
		h.fail(w, r, err)
		return
	}
	http.Redirect(w, r, "/console/"+c.ID, http.StatusSeeOther)
}

// consolePage shows a live console.
func (h *Handler) consolePage(w http.ResponseWriter, r *http.Request) {
	c, ok := h.console(w, r, false)
	if !ok {
		return
	}
	d := consoleData{C: c, StatementTimeout: c.StatementTimeout.String(), IdleTimeout: h.consoles.IdleTimeout().String(),
		MaxRows: webconsole.MaxRows}
	h.render(w, r, http.StatusOK, "console", view{Title: "SQL console · " + c.ResourceName + " / " + c.AccountName, Nav: "projects", Data: d})
}

// console finds the request's console among those of its browser login;
// asJSON answers a miss in JSON (the page's script) rather than a page.
func (h *Handler) console(w http.ResponseWriter, r *http.Request, asJSON bool) (*webconsole.Console, bool) {
	ri := infoFrom(r.Context())
	if h.consoles == nil {
		h.consoleFail(w, r, asJSON, errs.E("web.console", errs.NotFound, "the web console is not available on this server"))
		return nil, false
	}
	c, err := h.consoles.Get(r.PathValue("cid"), ri.p, ri.ws.key)
	if err != nil {
		h.consoleFail(w, r, asJSON, err)
		return nil, false
	}
	return c, true
}

func (h *Handler) consoleFail(w http.ResponseWriter, r *http.Request, asJSON bool, err error) {
	if !asJSON {
		h.fail(w, r, err)
		return
	}
	status, msg := userError(r.Context(), err)
	writeJSON(w, status, map[string]any{"error": msg, "ended": errs.Is(err, errs.NotFound)})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

// runRequest is the only body the console's page sends to run SQL.
type runRequest struct {
	SQL string `json:"sql"`
}

// consoleRun runs a batch of SQL. A body over the SQL limit is refused
// (the console stays); a body that is not what the page sends ends the
// console: something else is talking to it.
func (h *Handler) consoleRun(w http.ResponseWriter, r *http.Request) {
	c, ok := h.console(w, r, true)
	if !ok {
		return
	}
	if r.Header.Get("Content-Type") != "application/json" {
		h.consoleBadRequest(w, r, c)
		return
	}
	// JSON escaping may double the size of the SQL, or more: read what
	// could still decode to MaxSQLBytes, then check the SQL itself.
	body, err := io.ReadAll(io.LimitReader(r.Body, 6*webconsole.MaxSQLBytes+1))
	if err != nil {
		writeJSON(w, http.StatusBadRequest, map[string]any{"error": "reading the request failed"})
		return
	}
	if len(body) > 6*webconsole.MaxSQLBytes {
		writeJSON(w, http.StatusRequestEntityTooLarge, map[string]any{"error": "the SQL is over 1 MiB: the console sends at most 1 MiB"})
		return
	}
	var in runRequest
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&in); err != nil || dec.More() {
		h.consoleBadRequest(w, r, c)
		return
	}
	if len(in.SQL) > webconsole.MaxSQLBytes {
		writeJSON(w, http.StatusRequestEntityTooLarge, map[string]any{"error": fmt.Sprintf("the SQL is %d bytes, over 1 MiB: the console sends at most 1 MiB", len(in.SQL))})
		return
	}
	res, err := c.Run(r.Context(), in.SQL, c.StatementTimeout+30*time.Second)
	if err != nil {
		h.consoleFail(w, r, true, err)
		return
	}
	writeJSON(w, http.StatusOK, res)
}

// consoleBadRequest ends a console that was sent what its page never
// sends.
func (h *Handler) consoleBadRequest(w http.ResponseWriter, r *http.Request, c *webconsole.Console) {
	slog.WarnContext(r.Context(), "a web console got a request its page does not send; it is closed", "session", c.SessionID)
	h.consoles.End(c, "the web console received a request its page does not send")
	writeJSON(w, http.StatusBadRequest, map[string]any{"error": "the console received a request it does not understand and was closed", "ended": true})
}

// consoleCancel sends a CancelRequest for what the console runs.
func (h *Handler) consoleCancel(w http.ResponseWriter, r *http.Request) {
	c, ok := h.console(w, r, true)
	if !ok {
		return
	}
	if err := c.Cancel(r.Context()); err != nil {
		h.consoleFail(w, r, true, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"ok": true})
}

// consoleEnd ends the console and its session.
func (h *Handler) consoleEnd(w http.ResponseWriter, r *http.Request) {
	c, ok := h.console(w, r, true)
	if !ok {
		return
	}
	h.consoles.End(c, "ended from the web console")
	writeJSON(w, http.StatusOK, map[string]any{"ok": true, "ended": true})
}

// consoleSchema lists schemas with their tables and views.
func (h *Handler) consoleSchema(w http.ResponseWriter, r *http.Request) {
	c, ok := h.console(w, r, true)
	if !ok {
		return
	}
	s, err := c.Schemas(r.Context())
	if err != nil {
		h.consoleFail(w, r, true, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"schemas": s, "txStatus": c.TxStatus()})
}

// consoleColumns lists a table's columns.
func (h *Handler) consoleColumns(w http.ResponseWriter, r *http.Request) {
	c, ok := h.console(w, r, true)
	if !ok {
		return
	}
	q := r.URL.Query()
	schema, table := q.Get("schema"), q.Get("table")
	if schema == "" || table == "" || len(schema) > 128 || len(table) > 128 {
		h.consoleBadRequest(w, r, c)
		return
	}
	cols, err := c.Columns(r.Context(), schema, table)
	if err != nil {
		h.consoleFail(w, r, true, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"columns": cols, "txStatus": c.TxStatus()})
}

// consoleEvents is the page's event stream. It says when the console
// ends, and why; when the page goes (the stream drops), the console ends.
func (h *Handler) consoleEvents(w http.ResponseWriter, r *http.Request) {
	c, ok := h.console(w, r, true)
	if !ok {
		return
	}
	if !c.Attach() {
		writeJSON(w, http.StatusConflict, map[string]any{"error": "this console is open in another tab"})
		return
	}
	rc := http.NewResponseController(w)
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusOK)
	send := func(event string, v any) error {
		b, _ := json.Marshal(v)
		if _, err := fmt.Fprintf(w, "event: %s\ndata: %s\n\n", event, b); err != nil {
			return err
		}
		return rc.Flush()
	}
	if err := send("open", map[string]any{"sessionId": c.SessionID, "expiresAt": c.ExpiresAt.UTC().Format(time.RFC3339)}); err != nil {
		return
	}
	ping := time.NewTicker(15 * time.Second)
	defer ping.Stop()
	for {
		select {
		case <-c.Done():
			_ = send("ended", map[string]any{"why": c.EndReason()})
			return
		case <-r.Context().Done():
			// The page is gone: closed, reloaded or navigated away.
			h.consoles.End(c, "the web console's page was closed")
			return
		case <-ping.C:
			if _, err := io.WriteString(w, ": ping\n\n"); err != nil || rc.Flush() != nil {
				if !errors.Is(err, http.ErrNotSupported) {
					h.consoles.End(c, "the web console's page was closed")
				}
				return
			}
		}
	}
}
