package web

import (
	"io"
	"net/http"
	"strconv"
	"strings"

	"github.com/airlockpam/airlock/internal/appconn"
	"github.com/airlockpam/airlock/internal/errs"
	"github.com/airlockpam/airlock/internal/pam"
)

type appConnsData struct {
	ProjectTab
	Conns []appconn.Connection
	// Gateways names gateways by id, for the list.
	Gateways map[string]string
	// UsedBy names the rotation that uses a connection, by its id.
	UsedBy map[string]string
}

func (h *Handler) appConnList(w http.ResponseWriter, r *http.Request) {
	h.renderAppConns(w, r, http.StatusOK, "")
}

func (h *Handler) renderAppConns(w http.ResponseWriter, r *http.Request, status int, msg string) {
	tab, ok := h.project(w, r, "appconns")
	if !ok {
		return
	}
	ctx := r.Context()
	list, err := h.sec.conns.List(ctx, tab.Project.ID)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	d := appConnsData{ProjectTab: tab, Conns: list, Gateways: map[string]string{}, UsedBy: map[string]string{}}
	if h.cfg.Relay != nil {
		if gws, err := h.cfg.Relay.ListGateways(ctx); err == nil {
			for _, g := range gws {
				d.Gateways[g.ID] = g.Name
			}
		}
	}
	if rots, err := h.sec.rotations.List(ctx, tab.Project.ID); err == nil {
		for _, rot := range rots {
			if d.UsedBy[rot.ConnectionID] == "" {
				d.UsedBy[rot.ConnectionID] = rot.Name
			}
		}
	}
	h.render(w, r, status, "appconns", view{Title: tab.Project.Name + ": app connections", Nav: "projects", Error: msg, Notice: notice(r), Data: d})
}

// appConnForm is the Add PostgreSQL Connection form as typed (never its
// password).
type appConnForm struct {
	Name, Description, Host, Port, Database, Username, SSLCertificate, Gateway string
	SSLEnabled, SSLRejectUnauthorized, PlatformManaged                         bool
}

type appConnFormData struct {
	ProjectTab
	Form        appConnForm
	Gateways    []gatewayChoice
	FreeGateway bool
}

func (h *Handler) appConnForm(w http.ResponseWriter, r *http.Request) {
	f := appConnForm{Port: strconv.Itoa(pam.DefaultPostgresPort), SSLEnabled: true, SSLRejectUnauthorized: true}
	h.renderAppConnForm(w, r, http.StatusOK, f, "")
}

func (h *Handler) renderAppConnForm(w http.ResponseWriter, r *http.Request, status int, f appConnForm, msg string) {
	tab, ok := h.project(w, r, "appconns")
	if !ok {
		return
	}
	if !tab.Admin {
		h.errorPage(w, r, http.StatusForbidden, "Only the project's admins add app connections.")
		return
	}
	d := appConnFormData{ProjectTab: tab, Form: f}
	if h.cfg.Relay != nil {
		d.Gateways, d.FreeGateway = h.gatewayChoices(r, tab.Project.ID)
	}
	h.render(w, r, status, "appconn_new", view{Title: "Add a PostgreSQL connection", Nav: "projects", Error: msg, Data: d})
}

// appConnCreate logs in with the connection and saves it; a failed login
// is shown next to the form and nothing is saved.
func (h *Handler) appConnCreate(w http.ResponseWriter, r *http.Request) {
	f := appConnForm{
		Name: strings.TrimSpace(r.PostFormValue("name")), Description: strings.TrimSpace(r.PostFormValue("description")),
		Host: strings.TrimSpace(r.PostFormValue("host")), Port: strings.TrimSpace(r.PostFormValue("port")),
		Database: strings.TrimSpace(r.PostFormValue("database")), Username: strings.TrimSpace(r.PostFormValue("username")),
		SSLCertificate: strings.TrimSpace(r.PostFormValue("sslCertificate")), Gateway: strings.TrimSpace(r.PostFormValue("gateway")),
		SSLEnabled: r.PostFormValue("sslEnabled") == "on", SSLRejectUnauthorized: r.PostFormValue("sslRejectUnauthorized") == "on",
		PlatformManaged: r.PostFormValue("platformManaged") == "on",
	}
	if f.SSLCertificate == "" && r.MultipartForm != nil {
		if fh := r.MultipartForm.File["sslCertificateFile"]; len(fh) > 0 {
			if file, err := fh[0].Open(); err == nil {
				b, _ := io.ReadAll(io.LimitReader(file, 64<<10+1))
				file.Close()
				f.SSLCertificate = strings.TrimSpace(string(b))
			}
		}
	}
	port := 0
	if f.Port != "" {
		p, err := strconv.Atoi(f.Port)
		if err != nil || p < 1 || p > 65535 {
			h.renderAppConnForm(w, r, http.StatusUnprocessableEntity, f, "Port: the port is a number from 1 to 65535, such as 5432.")
			return
		}
		port = p
	}
	if len(f.Description) > 256 {
		h.renderAppConnForm(w, r, http.StatusUnprocessableEntity, f, "Description: a description holds at most 256 characters.")
		return
	}
	c, err := h.sec.conns.Create(r.Context(), appconn.CreateInput{
		Name: f.Name, Description: f.Description, Method: appconn.MethodUsernamePassword, IsPlatformManagedCredentials: f.PlatformManaged,
		ProjectID: r.PathValue("pid"), GatewayID: f.Gateway,
		Credentials: appconn.Credentials{Host: f.Host, Port: port, Database: f.Database, Username: f.Username, Password: r.PostFormValue("password"),
			SSLEnabled: f.SSLEnabled, SSLRejectUnauthorized: f.SSLRejectUnauthorized, SSLCertificate: f.SSLCertificate},
	})
	if err != nil {
		status, msg := userError(r.Context(), err)
		if label := appConnLabels[fieldOf(err)]; label != "" {
			msg = label + ": " + msg
		}
		h.renderAppConnForm(w, r, status, f, msg)
		return
	}
	http.Redirect(w, r, "/projects/"+c.ProjectID+"/app-connections?done=appconn-created", http.StatusSeeOther)
}

// appConnDelete deletes a connection; one a rotation uses is refused with
// the rotation's name.
func (h *Handler) appConnDelete(w http.ResponseWriter, r *http.Request) {
	c, err := h.sec.conns.Get(r.Context(), r.PathValue("cid"))
	if err == nil && c.ProjectID != r.PathValue("pid") {
		err = errs.E("web.appConnDelete", errs.NotFound, "no such app connection in this project")
	}
	if err == nil {
		err = h.sec.conns.Delete(r.Context(), c.ID)
	}
	if err != nil {
		status, msg := userError(r.Context(), err)
		h.renderAppConns(w, r, status, msg)
		return
	}
	http.Redirect(w, r, "/projects/"+r.PathValue("pid")+"/app-connections?done=appconn-deleted", http.StatusSeeOther)
}

// appConnLabels name the form's fields of the service's errors.
var appConnLabels = map[string]string{
	"body.name": "Name", "body.method": "Method", "body.gatewayId": "Gateway", "body.credentials.host": "Host",
	"body.credentials.port": "Port", "body.credentials.database": "Database", "body.credentials.username": "Username",
	"body.credentials.password": "Password", "body.credentials.sslCertificate": "CA certificate",
}
