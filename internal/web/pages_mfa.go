package web

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"html/template"
	"io"
	"net/http"
	"strings"
	"sync"
	"time"

	"rsc.io/qr"

	"github.com/airlockpam/airlock/internal/api"
	"github.com/airlockpam/airlock/internal/auth"
	"github.com/airlockpam/airlock/internal/errs"
	"github.com/airlockpam/airlock/internal/mfa"
	"github.com/airlockpam/airlock/internal/session"
)

// MFA in the browser (issue 16). The pages call the same MFA service as
// the API (package mfa), under the signed-in user's principal:
//
//   - /mfa: the user's second factors: TOTP enrollment (the QR code drawn
//     as inline SVG, the first code, the recovery codes shown once),
//     passkeys (add with navigator.credentials.create in static/mfa.js,
//     remove with a current code), and turning methods off.
//   - The sign-in's MFA step: when the organization requires MFA at login,
//     the password is checked and the pending sign-in (email, password,
//     challenge) is held in this server's memory for the challenge's
//     lifetime, keyed by a random value in the form; the code or a passkey
//     then completes it. A user without a method is led to /mfa afterwards.
//   - Web Access to an account that requires MFA shows the MFA step (the
//     same challenge the CLI gets: bound to this browser's login and that
//     account) before the console opens.
//   - /mfa/approve/{id}: the page a CLI's passkey challenge links to.

// UseMFA turns on the MFA pages.
func (h *Handler) UseMFA(s *mfa.Service) { h.mfa = s }

func (h *Handler) mfaRoutes() {
	m := h.mux
	m.HandleFunc("GET /mfa", h.page(h.mfaPage))
	m.HandleFunc("POST /mfa/totp", h.page(h.mfaTOTPStart))
	m.HandleFunc("POST /mfa/totp/confirm", h.page(h.mfaTOTPConfirm))
	m.HandleFunc("POST /mfa/{method}/disable", h.page(h.mfaDisable))
	m.HandleFunc("POST /mfa/passkeys/begin", h.page(h.mfaPasskeyBegin))
	m.HandleFunc("POST /mfa/passkeys/finish", h.pageLimit(passkeyBodyLimit, h.mfaPasskeyFinish))
	m.HandleFunc("POST /mfa/passkeys/{kid}/remove", h.page(h.mfaPasskeyRemove))
	m.HandleFunc("POST /mfa/passkeys/assert", h.page(h.mfaPasskeyAssert))
	m.HandleFunc("POST /mfa/passkeys/{kid}/remove-with-passkey", h.pageLimit(passkeyBodyLimit, h.mfaPasskeyRemoveWithPasskey))
	m.HandleFunc("GET /mfa/approve/{chid}", h.page(h.mfaApprovePage))
	m.HandleFunc("POST /mfa/challenges/{chid}/passkey", h.page(h.mfaChallengePasskeyBegin))
	m.HandleFunc("POST /mfa/challenges/{chid}/passkey/verify", h.pageLimit(passkeyBodyLimit, h.mfaChallengePasskeyVerify))
	m.HandleFunc("POST /login/mfa", h.loginMFA)
	m.HandleFunc("POST /login/mfa/passkey", h.loginPasskeyBegin)
	m.HandleFunc("POST /login/mfa/passkey/verify", h.loginPasskeyVerify)
}

// passkeyBodyLimit bounds a posted WebAuthn answer.
const passkeyBodyLimit = 64 << 10

type mfaPageData struct {
	Status     *mfa.MFAStatus
	HasTOTP    bool
	Passkeys   []mfa.Passkey
	PasskeysOn bool
	// WrongOrigin is the public URL when this page was reached at another
	// origin (passkeys work only there).
	WrongOrigin string
	// Enrolling: a TOTP secret waits for its first code.
	Enrolling *mfa.TOTPEnrollment
	QR        template.HTML
	Recovery  []string
	MustEnrol bool
}

func (h *Handler) mfaOff(w http.ResponseWriter, r *http.Request) bool {
	if h.mfa == nil {
		h.errorPage(w, r, http.StatusNotFound, "MFA is not available on this server.")
		return true
	}
	return false
}

// requestOrigin is the origin the browser used for r.
func (h *Handler) requestOrigin(r *http.Request) string {
	scheme := "http"
	if h.secure(r) {
		scheme = "https"
	}
	return scheme + "://" + r.Host
}

func (h *Handler) mfaData(r *http.Request) (*mfaPageData, error) {
	st, err := h.mfa.Status(r.Context())
	if err != nil {
		return nil, err
	}
	keys, err := h.mfa.ListPasskeys(r.Context())
	if err != nil {
		return nil, err
	}
	d := &mfaPageData{Status: st, Passkeys: keys, PasskeysOn: h.mfa.PublicURL() != ""}
	for _, m := range st.Methods {
		if m.Kind == mfa.MethodTOTP {
			d.HasTOTP = true
		}
	}
	if d.PasskeysOn && h.requestOrigin(r) != h.mfa.PublicURL() {
		d.WrongOrigin = h.mfa.PublicURL()
	}
	d.MustEnrol = st.RequireMFALogin && len(st.Methods) == 0
	return d, nil
}

func (h *Handler) renderMFA(w http.ResponseWriter, r *http.Request, status int, d *mfaPageData, notice, msg string) {
	h.render(w, r, status, "mfa", view{Title: "Multi-factor authentication", Nav: "mfa", Data: d, Notice: notice, Error: msg})
}

func (h *Handler) mfaPage(w http.ResponseWriter, r *http.Request) {
	if h.mfaOff(w, r) {
		return
	}
	d, err := h.mfaData(r)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	notice := ""
	if d.MustEnrol {
		notice = "Your organization requires a second factor at sign-in: set up TOTP or add a passkey now."
	}
	h.renderMFA(w, r, http.StatusOK, d, notice, "")
}

// mfaFail shows the MFA page again with an error.
func (h *Handler) mfaFail(w http.ResponseWriter, r *http.Request, err error) {
	status, msg := userError(r.Context(), err)
	d, derr := h.mfaData(r)
	if derr != nil {
		h.fail(w, r, derr)
		return
	}
	h.renderMFA(w, r, status, d, "", msg)
}

func (h *Handler) mfaTOTPStart(w http.ResponseWriter, r *http.Request) {
	if h.mfaOff(w, r) {
		return
	}
	e, err := h.mfa.EnrollTOTP(r.Context())
	if err != nil {
		h.mfaFail(w, r, err)
		return
	}
	h.showTOTPEnrollment(w, r, http.StatusOK, e, "")
}

func (h *Handler) showTOTPEnrollment(w http.ResponseWriter, r *http.Request, status int, e *mfa.TOTPEnrollment, msg string) {
	d, err := h.mfaData(r)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	d.Enrolling = e
	if d.QR, err = qrSVG(e.URI); err != nil {
		h.fail(w, r, errs.Wrap("web.mfa", errs.Internal, "drawing the QR code failed", err))
		return
	}
	h.renderMFA(w, r, status, d, "", msg)
}

// mfaTOTPConfirm turns TOTP on with a first code. The form carries the
// pending secret back only to draw the QR code again after a wrong code;
// the server checks the code against the secret it stored.
func (h *Handler) mfaTOTPConfirm(w http.ResponseWriter, r *http.Request) {
	if h.mfaOff(w, r) {
		return
	}
	c, err := h.mfa.ConfirmTOTP(r.Context(), r.PostFormValue("code"))
	if err != nil {
		uri, secret := r.PostFormValue("uri"), r.PostFormValue("secret")
		if errs.Is(err, errs.Invalid) && strings.HasPrefix(uri, "otpauth://") && len(uri) < 512 && len(secret) < 128 {
			_, msg := userError(r.Context(), err)
			h.showTOTPEnrollment(w, r, http.StatusUnprocessableEntity, &mfa.TOTPEnrollment{URI: uri, Secret: secret}, msg)
			return
		}
		h.mfaFail(w, r, err)
		return
	}
	d, err := h.mfaData(r)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	d.Recovery = c.RecoveryCodes
	h.renderMFA(w, r, http.StatusOK, d, "TOTP is on: accounts that require MFA now ask for a code from your app.", "")
}

func (h *Handler) mfaDisable(w http.ResponseWriter, r *http.Request) {
	if h.mfaOff(w, r) {
		return
	}
	method := r.PathValue("method")
	if err := h.mfa.Disable(r.Context(), method, r.PostFormValue("code")); err != nil {
		h.mfaFail(w, r, err)
		return
	}
	http.Redirect(w, r, "/mfa?done=mfa-disabled", http.StatusSeeOther)
}

func (h *Handler) mfaPasskeyRemove(w http.ResponseWriter, r *http.Request) {
	if h.mfaOff(w, r) {
		return
	}
	if err := h.mfa.RemovePasskey(r.Context(), r.PathValue("kid"), r.PostFormValue("code"), "", nil); err != nil {
		h.mfaFail(w, r, err)
		return
	}
	http.Redirect(w, r, "/mfa?done=passkey-removed", http.StatusSeeOther)
}

// mfaPasskeyAssert begins a passkey check that proves the user (to remove
// a passkey with a passkey).
func (h *Handler) mfaPasskeyAssert(w http.ResponseWriter, r *http.Request) {
	if h.mfa == nil {
		writeJSON(w, http.StatusNotFound, map[string]any{"error": "MFA is not available on this server"})
		return
	}
	c, err := h.mfa.BeginPasskeyAssertion(r.Context())
	if err != nil {
		jsonFail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, c)
}

func (h *Handler) mfaPasskeyRemoveWithPasskey(w http.ResponseWriter, r *http.Request) {
	if h.mfa == nil {
		writeJSON(w, http.StatusNotFound, map[string]any{"error": "MFA is not available on this server"})
		return
	}
	a, ok := readPasskeyAnswer(w, r)
	if !ok {
		return
	}
	if err := h.mfa.RemovePasskey(r.Context(), r.PathValue("kid"), "", a.ID, a.Credential); err != nil {
		jsonFail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"removed": true})
}

// jsonFail answers a script's request with {"error": message}.
func jsonFail(w http.ResponseWriter, r *http.Request, err error) {
	status, msg := userError(r.Context(), err)
	writeJSON(w, status, map[string]any{"error": msg})
}

func (h *Handler) mfaPasskeyBegin(w http.ResponseWriter, r *http.Request) {
	if h.mfa == nil {
		writeJSON(w, http.StatusNotFound, map[string]any{"error": "MFA is not available on this server"})
		return
	}
	c, err := h.mfa.BeginPasskeyRegistration(r.Context())
	if err != nil {
		jsonFail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, c)
}

// passkeyAnswer is what static/mfa.js posts after navigator.credentials.
type passkeyAnswer struct {
	ID         string          `json:"id"`
	Name       string          `json:"name"`
	Credential json.RawMessage `json:"credential"`
	Pending    string          `json:"pending"`
}

func readPasskeyAnswer(w http.ResponseWriter, r *http.Request) (*passkeyAnswer, bool) {
	var a passkeyAnswer
	body, err := io.ReadAll(io.LimitReader(r.Body, passkeyBodyLimit))
	if err == nil {
		err = json.Unmarshal(body, &a)
	}
	if err != nil {
		writeJSON(w, http.StatusBadRequest, map[string]any{"error": "the request is not the passkey answer this page sends: reload and try again"})
		return nil, false
	}
	return &a, true
}

func (h *Handler) mfaPasskeyFinish(w http.ResponseWriter, r *http.Request) {
	if h.mfa == nil {
		writeJSON(w, http.StatusNotFound, map[string]any{"error": "MFA is not available on this server"})
		return
	}
	a, ok := readPasskeyAnswer(w, r)
	if !ok {
		return
	}
	res, err := h.mfa.FinishPasskeyRegistration(r.Context(), a.ID, a.Name, a.Credential)
	if err != nil {
		jsonFail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, res)
}

// mfaApprovePage approves a challenge (a CLI's) with a passkey.
func (h *Handler) mfaApprovePage(w http.ResponseWriter, r *http.Request) {
	if h.mfaOff(w, r) {
		return
	}
	st, err := h.mfa.ChallengeStatusOf(r.Context(), r.PathValue("chid"))
	if err != nil {
		h.fail(w, r, err)
		return
	}
	d := mfaStepData{ChallengeID: st.ChallengeID, Method: st.Method, For: st.For, Status: st.Status, Approve: true}
	if h.requestOrigin(r) != h.mfa.PublicURL() {
		d.WrongOrigin = h.mfa.PublicURL()
	}
	h.render(w, r, http.StatusOK, "mfa_step", view{Title: "Approve with your passkey", Data: d})
}

func (h *Handler) mfaChallengePasskeyBegin(w http.ResponseWriter, r *http.Request) {
	if h.mfa == nil {
		writeJSON(w, http.StatusNotFound, map[string]any{"error": "MFA is not available on this server"})
		return
	}
	c, err := h.mfa.BeginChallengePasskey(r.Context(), r.PathValue("chid"))
	if err != nil {
		jsonFail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, c)
}

func (h *Handler) mfaChallengePasskeyVerify(w http.ResponseWriter, r *http.Request) {
	if h.mfa == nil {
		writeJSON(w, http.StatusNotFound, map[string]any{"error": "MFA is not available on this server"})
		return
	}
	a, ok := readPasskeyAnswer(w, r)
	if !ok {
		return
	}
	v, err := h.mfa.VerifyChallengePasskey(r.Context(), r.PathValue("chid"), a.ID, a.Credential)
	if err != nil {
		jsonFail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, v)
}

// mfaStepData is the MFA step of Web Access, of the sign-in, or the
// approval page of a CLI's challenge.
type mfaStepData struct {
	ChallengeID string
	Method      string
	For         string
	Status      string
	Detail      string
	// Action is where the code form posts (with mfaChallengeId and mfaCode).
	Action string
	// Approve: the page approves a challenge for another login (the CLI).
	Approve bool
	// Login: the sign-in's step (Pending names the held sign-in).
	Login       bool
	Pending     string
	WrongOrigin string
}

// consoleMFA shows Web Access's MFA step for the challenge in err (a
// *mfa.RequiredError), or reports false.
func (h *Handler) consoleMFA(w http.ResponseWriter, r *http.Request, err error) bool {
	var re *mfa.RequiredError
	if !errors.As(err, &re) {
		return false
	}
	d := mfaStepData{ChallengeID: re.ChallengeID, Method: re.Method, Detail: re.Detail, Action: r.URL.Path, For: "Web Access"}
	if h.mfa != nil && re.Method == mfa.MethodWebAuthn && h.requestOrigin(r) != h.mfa.PublicURL() {
		d.WrongOrigin = h.mfa.PublicURL()
	}
	h.render(w, r, http.StatusForbidden, "mfa_step", view{Title: "MFA required", Nav: "projects", Data: d})
	return true
}

// consoleMFAOptions passes the challenge the Web Access form answered:
// with a code, the challenge is verified first (the same service as POST
// /api/v1/mfa/challenges/{id}/verify); with none, a passkey approved it.
func (h *Handler) consoleMFAOptions(r *http.Request) ([]session.CreateOption, error) {
	id := r.PostFormValue("mfaChallengeId")
	if id == "" || h.mfa == nil {
		return nil, nil
	}
	if code := r.PostFormValue("mfaCode"); code != "" {
		if _, err := h.mfa.VerifyChallenge(r.Context(), id, code); err != nil {
			return nil, err
		}
	}
	return []session.CreateOption{session.WithMFAChallenge(id)}, nil
}

// The sign-in's MFA step.

// mfaLoginer is the identity service's login that can ask for a second
// factor.
type mfaLoginer interface {
	LoginWithMFA(ctx context.Context, email, password, mfaChallengeID, mfaCode string) (auth.TokenPair, error)
}

// pendingLogin is a sign-in whose password was right, waiting for its
// second factor.
type pendingLogin struct {
	email, password, challengeID, method, next string
	expires                                    time.Time
}

type pendingLogins struct {
	mu sync.Mutex
	m  map[string]*pendingLogin
}

func (p *pendingLogins) put(now time.Time, pl *pendingLogin) string {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.m == nil {
		p.m = map[string]*pendingLogin{}
	}
	for k, v := range p.m {
		if !now.Before(v.expires) {
			delete(p.m, k)
		}
	}
	id := randomToken()
	p.m[storeKey(id)] = pl
	return id
}

func (p *pendingLogins) get(now time.Time, id string) *pendingLogin {
	if id == "" || len(id) > 100 {
		return nil
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	pl := p.m[storeKey(id)]
	if pl == nil || !now.Before(pl.expires) {
		delete(p.m, storeKey(id))
		return nil
	}
	return pl
}

func (p *pendingLogins) remove(id string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	delete(p.m, storeKey(id))
}

// loginStep shows the sign-in's MFA step for the challenge in err, or
// reports false.
func (h *Handler) loginStep(w http.ResponseWriter, r *http.Request, err error, email, password, next string) bool {
	var re *mfa.RequiredError
	if !errors.As(err, &re) {
		return false
	}
	id := h.pending.put(h.cfg.Now(), &pendingLogin{email: email, password: password, challengeID: re.ChallengeID,
		method: re.Method, next: next, expires: re.ExpiresAt})
	h.renderLoginStep(w, r, http.StatusOK, id, re.Method, re.Detail, "")
	return true
}

func (h *Handler) renderLoginStep(w http.ResponseWriter, r *http.Request, status int, pending, method, detail, msg string) {
	d := mfaStepData{Method: method, Detail: detail, Action: "/login/mfa", Login: true, Pending: pending, For: "sign-in"}
	if h.mfa != nil && method == mfa.MethodWebAuthn && h.requestOrigin(r) != h.mfa.PublicURL() {
		d.WrongOrigin = h.mfa.PublicURL()
	}
	h.render(w, r, status, "mfa_step", view{Title: "Sign in: second factor", Data: d, Error: msg})
}

// loginMFA completes a held sign-in with its code (or, with none, a
// passkey that approved its challenge).
func (h *Handler) loginMFA(w http.ResponseWriter, r *http.Request) {
	id := r.PostFormValue("pending")
	pl := h.pending.get(h.cfg.Now(), id)
	if pl == nil {
		h.render(w, r, http.StatusUnauthorized, "login", view{Title: "Sign in", Error: "This sign-in has expired (5 minutes): sign in again.",
			Data: loginData{Next: nextOf(r)}})
		return
	}
	ml, _ := h.cfg.Auth.(mfaLoginer)
	if ml == nil {
		h.errorPage(w, r, http.StatusNotFound, "This server cannot ask for a second factor at sign-in.")
		return
	}
	pair, err := ml.LoginWithMFA(r.Context(), pl.email, pl.password, pl.challengeID, r.PostFormValue("mfaCode"))
	if err != nil {
		var re *mfa.RequiredError
		if errors.As(err, &re) { // a new challenge: the last one is spent
			h.pending.remove(id)
			h.loginStep(w, r, err, pl.email, pl.password, pl.next)
			return
		}
		status, msg := userError(r.Context(), err)
		if retryable(err, msg) {
			h.renderLoginStep(w, r, status, id, pl.method, "", msg)
			return
		}
		h.pending.remove(id)
		h.render(w, r, status, "login", view{Title: "Sign in", Error: msg, Data: loginData{Email: pl.email, Next: pl.next}})
		return
	}
	h.pending.remove(id)
	h.startSession(w, r, pair, pl.next)
}

// retryable reports whether a refused code leaves the challenge open (a
// wrong code with tries left, a code of the wrong kind, none given).
func retryable(err error, msg string) bool {
	return errs.Is(err, errs.Invalid) && !strings.Contains(msg, "no tries are left")
}

func (h *Handler) loginPasskeyBegin(w http.ResponseWriter, r *http.Request) {
	a, ok := readPasskeyAnswer(w, r)
	if !ok {
		return
	}
	pl := h.pending.get(h.cfg.Now(), a.Pending)
	if pl == nil || h.mfa == nil {
		writeJSON(w, http.StatusUnauthorized, map[string]any{"error": "this sign-in has expired: sign in again"})
		return
	}
	c, err := h.mfa.BeginLoginPasskey(r.Context(), pl.challengeID)
	if err != nil {
		jsonFail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, c)
}

func (h *Handler) loginPasskeyVerify(w http.ResponseWriter, r *http.Request) {
	a, ok := readPasskeyAnswer(w, r)
	if !ok {
		return
	}
	pl := h.pending.get(h.cfg.Now(), a.Pending)
	if pl == nil || h.mfa == nil {
		writeJSON(w, http.StatusUnauthorized, map[string]any{"error": "this sign-in has expired: sign in again"})
		return
	}
	if err := h.mfa.VerifyLoginPasskey(r.Context(), pl.challengeID, a.ID, a.Credential); err != nil {
		jsonFail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"approved": true})
}

// needsEnrollment reports whether a just signed-in user must enroll a
// second factor (the organization requires MFA at login and they have
// none).
func (h *Handler) needsEnrollment(ctx context.Context, pair auth.TokenPair) bool {
	if h.mfa == nil {
		return false
	}
	p, err := h.cfg.Auth.Authenticate(ctx, pair.AccessToken)
	if err != nil {
		return false
	}
	st, err := h.mfa.Status(api.WithPrincipal(ctx, p))
	if err != nil || !st.RequireMFALogin {
		return false
	}
	if len(st.Methods) == 0 {
		return true
	}
	// The organization enforces a method the user lacks: they signed in
	// with an email code and enroll it now.
	if st.OrgMethod == mfa.MethodTOTP || st.OrgMethod == mfa.MethodWebAuthn {
		for _, m := range st.Methods {
			if m.Kind == st.OrgMethod {
				return false
			}
		}
		return true
	}
	return false
}

// qrSVG draws text as a QR code in inline SVG (one path of unit squares,
// with a quiet zone), so the page needs no image request and no script.
func qrSVG(text string) (template.HTML, error) {
	code, err := qr.Encode(text, qr.M)
	if err != nil {
		return "", err
	}
	const quiet = 4
	n := code.Size + 2*quiet
	var b strings.Builder
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 %d %d" width="%d" height="%d" shape-rendering="crispEdges" role="img" aria-label="QR code of the otpauth URI" id="totp-qr">`,
		n, n, n*5, n*5)
	fmt.Fprintf(&b, `<rect width="%d" height="%d" fill="#fff"/><path fill="#000" d="`, n, n)
	for y := 0; y < code.Size; y++ {
		for x := 0; x < code.Size; x++ {
			if code.Black(x, y) {
				fmt.Fprintf(&b, "M%d %dh1v1h-1z", x+quiet, y+quiet)
			}
		}
	}
	b.WriteString(`"/></svg>`)
	return template.HTML(b.String()), nil // #nosec: built here from the QR modules only
}
