package web

import "net/http"

// routes registers the UI's pages. Every page but login and the static
// files needs a signed-in user (h.page); forms post back to the path of
// their page.
func (h *Handler) routes() {
	m := h.mux
	m.Handle("GET /static/", h.static())
	m.HandleFunc("GET /login", h.loginForm)
	m.HandleFunc("POST /login", h.login)
	m.HandleFunc("POST /logout", h.page(h.logout))
	m.HandleFunc("GET /{$}", h.page(func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, "/projects", http.StatusSeeOther)
	}))

	m.HandleFunc("GET /projects", h.page(h.projectList))
	m.HandleFunc("POST /projects", h.page(h.projectCreate))
	m.HandleFunc("GET /projects/{pid}", h.page(func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, "/projects/"+r.PathValue("pid")+"/resources", http.StatusSeeOther)
	}))
	m.HandleFunc("GET /projects/{pid}/members", h.page(h.memberList))
	m.HandleFunc("POST /projects/{pid}/members", h.page(h.memberSet))
	m.HandleFunc("POST /projects/{pid}/members/remove", h.page(h.memberRemove))

	m.HandleFunc("GET /projects/{pid}/resources", h.page(h.resourceList))
	m.HandleFunc("GET /projects/{pid}/resources/new", h.page(h.resourceForm))
	m.HandleFunc("POST /projects/{pid}/resources", h.page(h.resourceCreate))
	m.HandleFunc("GET /projects/{pid}/resources/{rid}", h.page(h.resourcePage))
	m.HandleFunc("GET /projects/{pid}/resources/{rid}/edit", h.page(h.resourceEditForm))
	m.HandleFunc("POST /projects/{pid}/resources/{rid}/edit", h.pageLimit(maxFormBytes, h.resourceUpdate))
	m.HandleFunc("GET /projects/{pid}/resources/{rid}/delete", h.page(h.resourceDeleteConfirm))
	m.HandleFunc("POST /projects/{pid}/resources/{rid}/delete", h.page(h.resourceDelete))
	m.HandleFunc("POST /projects/{pid}/resources/{rid}/accounts", h.page(h.accountCreate))
	m.HandleFunc("GET /projects/{pid}/accounts", h.page(h.accountList))
	m.HandleFunc("GET /projects/{pid}/resources/{rid}/accounts/{aid}", h.page(h.accountPage))
	m.HandleFunc("POST /projects/{pid}/resources/{rid}/accounts/{aid}/metadata", h.page(h.accountMetadata))
	m.HandleFunc("POST /projects/{pid}/resources/{rid}/accounts/{aid}/delete", h.page(h.accountDelete))
	// Rotation of the account's password (pages_rotation.go).
	m.HandleFunc("POST /projects/{pid}/resources/{rid}/accounts/{aid}/rotation", h.page(h.accountRotation))
	m.HandleFunc("POST /projects/{pid}/resources/{rid}/accounts/{aid}/rotate", h.page(h.accountRotate))
	// The browser SQL console (pages_console.go).
	m.HandleFunc("POST /projects/{pid}/resources/{rid}/accounts/{aid}/console", h.page(h.consoleOpen))
	m.HandleFunc("GET /console/{cid}", h.page(h.consolePage))
	m.HandleFunc("POST /console/{cid}/run", h.pageLimit(consoleBodyLimit, h.consoleRun))
	m.HandleFunc("POST /console/{cid}/cancel", h.page(h.consoleCancel))
	m.HandleFunc("POST /console/{cid}/end", h.page(h.consoleEnd))
	m.HandleFunc("GET /console/{cid}/schema", h.page(h.consoleSchema))
	m.HandleFunc("GET /console/{cid}/columns", h.page(h.consoleColumns))
	m.HandleFunc("GET /console/{cid}/events", h.page(h.consoleEvents))

	m.HandleFunc("GET /sessions", h.page(h.sessionList))
	m.HandleFunc("GET /sessions/{sid}", h.page(h.sessionPage))
	m.HandleFunc("POST /sessions/{sid}/terminate", h.page(h.sessionTerminate))

	h.mfaRoutes()    // pages_mfa.go: the user's second factors, the MFA steps
	h.secretRoutes() // pages_secrets.go: secrets, app connections, secret rotations

	m.HandleFunc("GET /gateways", h.page(h.gatewayList))
	m.HandleFunc("POST /gateways", h.page(h.gatewayCreate))
	m.HandleFunc("POST /gateways/{gid}/token", h.page(h.gatewayToken))
	m.HandleFunc("POST /gateways/{gid}/delete", h.page(h.gatewayDelete))
	m.HandleFunc("GET /machine-identities", h.page(h.machineList))
	m.HandleFunc("POST /machine-identities", h.page(h.machineCreate))
	m.HandleFunc("POST /machine-identities/{mid}/delete", h.page(h.machineDelete))
	m.HandleFunc("GET /projects/{pid}/settings", h.page(h.projectSettings))
	m.HandleFunc("POST /projects/{pid}/settings", h.page(h.projectSettingsSave))
	m.HandleFunc("GET /audit", h.page(h.auditList))
}
