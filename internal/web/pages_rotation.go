package web

import (
	"net/http"
	"strconv"
	"strings"

	"github.com/airlockpam/airlock/internal/pam"
)

// Rotation of account passwords and the Edit Resource page. Every form
// goes through the same pam.Service methods as the API, which check the
// caller's role: the pages only hide the controls from viewers.

// accountRotation turns an account's scheduled rotation on or off, or
// changes its interval (project admins).
func (h *Handler) accountRotation(w http.ResponseWriter, r *http.Request) {
	interval := r.PostFormValue("rotationInterval")
	if interval == "" {
		interval = "off"
	}
	a, err := h.cfg.PAM.UpdateAccount(r.Context(), r.PathValue("pid"), r.PathValue("rid"), r.PathValue("aid"),
		pam.AccountUpdate{RotationInterval: &interval})
	if err != nil {
		status, msg := userError(r.Context(), err)
		h.renderAccountWith(w, r, status, nil, msg, &interval)
		return
	}
	http.Redirect(w, r, h.accountURL(r.PathValue("pid"), a)+"?done=rotation-saved", http.StatusSeeOther)
}

// accountRotate rotates an account's password now (project admins) and
// shows the outcome on the account's page.
func (h *Handler) accountRotate(w http.ResponseWriter, r *http.Request) {
	a, err := h.cfg.PAM.RotateNow(r.Context(), r.PathValue("pid"), r.PathValue("rid"), r.PathValue("aid"))
	if err != nil {
		status, msg := userError(r.Context(), err)
		h.renderAccount(w, r, status, nil, msg)
		return
	}
	http.Redirect(w, r, h.accountURL(r.PathValue("pid"), a)+"?done=rotated", http.StatusSeeOther)
}

func (h *Handler) accountURL(pid string, a *pam.Account) string {
	return "/projects/" + pid + "/resources/" + a.ResourceID + "/accounts/" + a.ID
}

// editAccount is an account of the resource on the Edit Resource page,
// whose password may be re-entered for a new endpoint.
type editAccount struct {
	ID, Name, Username string
}

type resourceEditData struct {
	resourceFormData
	Resource *pam.Resource
	Accounts []editAccount
	// OrgAdmin may keep the stored passwords for a new endpoint.
	OrgAdmin bool
}

func (h *Handler) resourceEditForm(w http.ResponseWriter, r *http.Request) {
	h.renderResourceEdit(w, r, http.StatusOK, nil, "")
}

// renderResourceEdit shows the Edit Resource page with f as typed (nil:
// the resource's settings).
func (h *Handler) renderResourceEdit(w http.ResponseWriter, r *http.Request, status int, f *resourceForm, msg string) {
	tab, ok := h.project(w, r, "resources")
	if !ok {
		return
	}
	if !tab.Admin {
		h.errorPage(w, r, http.StatusForbidden, "Only the project's admins change resources.")
		return
	}
	ctx := r.Context()
	res, err := h.cfg.PAM.GetResource(ctx, tab.Project.ID, r.PathValue("rid"))
	if err != nil {
		h.fail(w, r, err)
		return
	}
	if f == nil {
		f = &resourceForm{Kind: res.Kind, Name: res.Name, Gateway: res.GatewayName, Host: res.Host, Database: res.Database,
			ConnectionString: res.ConnectionString, SSLCAPEM: res.SSLCAPEM, SSLEnabled: res.SSLEnabled,
			SSLRejectUnauthorized: res.SSLRejectUnauthorized, RotationUsername: res.RotationUsername}
		if res.Kind == pam.KindPostgres {
			f.Port = strconv.Itoa(res.Port)
		}
	}
	d := resourceEditData{resourceFormData: resourceFormData{ProjectTab: tab, Form: *f}, Resource: res}
	d.Gateways, d.FreeGateway = h.gatewayChoices(r, tab.Project.ID)
	if ri := infoFrom(ctx); ri != nil {
		d.OrgAdmin = ri.p.OrgAdmin
	}
	if accounts, err := h.cfg.PAM.ListAccounts(ctx, tab.Project.ID, pam.AccountFilter{Resource: res.ID}); err == nil {
		for _, a := range accounts {
			d.Accounts = append(d.Accounts, editAccount{ID: a.ID, Name: a.Name, Username: a.Username})
		}
	}
	h.render(w, r, status, "resource_edit", view{Title: "Edit " + res.Name, Nav: "projects", Error: msg, Data: d})
}

// resourceUpdate saves the Edit Resource form: only what differs from the
// stored settings changes (the service compares). The rotation account's
// password, when typed, is checked by a real login before it is saved; a
// new rotation username needs its password. Account passwords typed in
// are sent for a new endpoint (the service says when they are needed).
func (h *Handler) resourceUpdate(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	pid, rid := r.PathValue("pid"), r.PathValue("rid")
	res, err := h.cfg.PAM.GetResource(ctx, pid, rid)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	f := resourceForm{
		Kind: res.Kind, Name: strings.TrimSpace(r.PostFormValue("name")),
		Gateway: strings.TrimSpace(r.PostFormValue("gateway")), Host: strings.TrimSpace(r.PostFormValue("host")),
		Port: strings.TrimSpace(r.PostFormValue("port")), Database: strings.TrimSpace(r.PostFormValue("database")),
		ConnectionString:      strings.TrimSpace(r.PostFormValue("connectionString")),
		SSLCAPEM:              strings.TrimSpace(r.PostFormValue("sslCaPem")),
		SSLEnabled:            r.PostFormValue("sslEnabled") == "on",
		SSLRejectUnauthorized: r.PostFormValue("sslRejectUnauthorized") == "on",
		RotationUsername:      strings.TrimSpace(r.PostFormValue("rotationUsername")),
	}
	f.SSLCAPEM = caFromForm(r, f.SSLCAPEM)
	in := pam.ResourceUpdate{Name: &f.Name, SSLEnabled: &f.SSLEnabled, SSLRejectUnauthorized: &f.SSLRejectUnauthorized}
	if f.SSLCAPEM != strings.TrimSpace(res.SSLCAPEM) {
		// A bundle stored with a trailing newline (from a file) and shown
		// in the form is the same bundle: only a real change is sent, as
		// it is an endpoint change that needs the passwords again.
		in.SSLCAPEM = &f.SSLCAPEM
	}
	if f.Gateway != "" {
		in.Gateway = &f.Gateway
	}
	if res.Kind == pam.KindPostgres {
		in.Host, in.Database = &f.Host, &f.Database
		port, err := strconv.Atoi(f.Port)
		if err != nil {
			h.renderResourceEdit(w, r, http.StatusUnprocessableEntity, &f, "The port must be a number between 1 and 65535.")
			return
		}
		in.Port = &port
	} else {
		in.ConnectionString, in.Database = &f.ConnectionString, &f.Database
	}
	rotPw := r.PostFormValue("rotationPassword")
	switch {
	case r.PostFormValue("clearRotation") == "on":
		if rotPw != "" {
			h.renderResourceEdit(w, r, http.StatusUnprocessableEntity, &f,
				"Remove the rotation account or give it a new password, not both.")
			return
		}
		empty := ""
		in.RotationUsername = &empty
		f.RotationUsername = ""
	case rotPw != "":
		if f.RotationUsername == "" {
			h.renderResourceEdit(w, r, http.StatusUnprocessableEntity, &f, "Give the rotation account's username with its password.")
			return
		}
		in.RotationUsername, in.RotationPassword = &f.RotationUsername, &rotPw
	case f.RotationUsername != res.RotationUsername:
		h.renderResourceEdit(w, r, http.StatusUnprocessableEntity, &f,
			"Give the rotation account's password too: it is checked by logging in before it is saved.")
		return
	}
	if accounts, err := h.cfg.PAM.ListAccounts(ctx, pid, pam.AccountFilter{Resource: res.ID}); err == nil {
		for _, a := range accounts {
			if pw := r.PostFormValue("accountPassword-" + a.ID); pw != "" {
				in.Accounts = append(in.Accounts, pam.AccountCredentials{Account: a.ID, Password: pw})
			}
		}
	}
	updated, err := h.cfg.PAM.UpdateResource(ctx, pid, res.ID, in)
	if err != nil {
		status, msg := userError(ctx, err)
		h.renderResourceEdit(w, r, status, &f, msg)
		return
	}
	http.Redirect(w, r, "/projects/"+pid+"/resources/"+updated.ID+"?done=resource-saved", http.StatusSeeOther)
}
