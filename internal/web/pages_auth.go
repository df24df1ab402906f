package web

import (
	"net/http"
	"strings"

	"github.com/airlockpam/airlock/internal/auth"
)

type loginData struct {
	Email string
	Next  string
}

func (h *Handler) loginForm(w http.ResponseWriter, r *http.Request) {
	if ws, _ := h.sessions.get(h.sessionCookie(r), false); ws != nil {
		http.Redirect(w, r, "/projects", http.StatusSeeOther)
		return
	}
	v := view{Title: "Sign in", Data: loginData{Next: nextOf(r)}}
	if r.URL.Query().Get("expired") != "" {
		v.Notice = "Your session ended (unused for a while, signed out elsewhere, or revoked): sign in again."
	}
	h.render(w, r, http.StatusOK, "login", v)
}

func nextOf(r *http.Request) string {
	n := r.FormValue("next")
	if !localPath(n) {
		return ""
	}
	return n
}

// login checks the email and password with the identity service (the
// same rate limits, lockout and audit as the API's login) and starts a
// web session under a new cookie value.
func (h *Handler) login(w http.ResponseWriter, r *http.Request) {
	h.sweep(r.Context())
	email := strings.TrimSpace(r.PostFormValue("email"))
	var pair auth.TokenPair
	var err error
	if ml, ok := h.cfg.Auth.(mfaLoginer); ok && h.mfa != nil {
		// A second factor can be asked for (the MFA step, pages_mfa.go).
		pair, err = ml.LoginWithMFA(r.Context(), email, r.PostFormValue("password"), "", "")
	} else {
		pair, err = h.cfg.Auth.Login(r.Context(), email, r.PostFormValue("password"))
	}
	if err != nil {
		if h.loginStep(w, r, err, email, r.PostFormValue("password"), nextOf(r)) {
			return
		}
		status, msg := userError(r.Context(), err)
		h.render(w, r, status, "login", view{Title: "Sign in", Error: msg, Data: loginData{Email: email, Next: nextOf(r)}})
		return
	}
	h.startSession(w, r, pair, nextOf(r))
}

// startSession starts a web session for a login under a new cookie value
// and goes on to next; a user who must still enroll a second factor goes
// to the MFA page first.
func (h *Handler) startSession(w http.ResponseWriter, r *http.Request, pair auth.TokenPair, next string) {
	if old := h.sessionCookie(r); old != "" {
		if ws := h.sessions.remove(old); ws != nil {
			h.revoke(r.Context(), ws)
		}
	}
	id, _ := h.sessions.create(pair)
	h.setSessionCookie(w, r, id)
	if next == "" {
		next = "/projects"
	}
	if h.needsEnrollment(r.Context(), pair) {
		next = "/mfa"
	}
	http.Redirect(w, r, next, http.StatusSeeOther)
}

// logout ends the web session and revokes its login's tokens.
func (h *Handler) logout(w http.ResponseWriter, r *http.Request) {
	if ws := h.sessions.remove(h.sessionCookie(r)); ws != nil {
		h.consoles.EndAll(ws.key, "signed out of the web UI")
		h.revoke(r.Context(), ws)
	}
	h.clearSessionCookie(w, r)
	http.Redirect(w, r, "/login?done=logged-out", http.StatusSeeOther)
}
