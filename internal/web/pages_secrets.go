package web

import (
	"errors"
	"net/http"
	"net/url"
	"strconv"
	"strings"

	"github.com/airlockpam/airlock/internal/appconn"
	"github.com/airlockpam/airlock/internal/errs"
	"github.com/airlockpam/airlock/internal/secretrotation"
	"github.com/airlockpam/airlock/internal/secrets"
)

// secretsDeps are the services of the secrets pages (pages_secrets.go,
// pages_appconn.go, pages_secretrotations.go); nil until UseSecrets.
type secretsDeps struct {
	secrets   *secrets.Service
	conns     *appconn.Service
	rotations *secretrotation.Service
}

// UseSecrets gives the UI the secrets store, the app connections and the
// secret rotations: the project's Secrets, App Connections and Secret
// Rotations tabs call them as the signed-in user.
func (h *Handler) UseSecrets(s *secrets.Service, c *appconn.Service, r *secretrotation.Service) {
	h.sec = secretsDeps{secrets: s, conns: c, rotations: r}
}

// secretRoutes registers the pages of the secrets store, app connections
// and secret rotations.
func (h *Handler) secretRoutes() {
	m := h.mux
	m.HandleFunc("GET /projects/{pid}/secrets", h.page(h.needSecrets(h.secretList)))
	m.HandleFunc("POST /projects/{pid}/secrets", h.page(h.needSecrets(h.secretSet)))
	m.HandleFunc("GET /projects/{pid}/secrets/edit", h.page(h.needSecrets(h.secretEdit)))
	m.HandleFunc("POST /projects/{pid}/secrets/reveal", h.page(h.needSecrets(h.secretReveal)))
	m.HandleFunc("POST /projects/{pid}/secrets/delete", h.page(h.needSecrets(h.secretDelete)))
	m.HandleFunc("GET /projects/{pid}/secrets/history", h.page(h.needSecrets(h.secretHistory)))
	m.HandleFunc("POST /projects/{pid}/secrets/restore", h.page(h.needSecrets(h.secretRestore)))
	m.HandleFunc("POST /projects/{pid}/secrets/folders", h.page(h.needSecrets(h.folderCreate)))
	m.HandleFunc("POST /projects/{pid}/secrets/environments", h.page(h.needSecrets(h.environmentCreate)))
	m.HandleFunc("POST /projects/{pid}/secrets/environments/rename", h.page(h.needSecrets(h.environmentRename)))
	m.HandleFunc("POST /projects/{pid}/secrets/environments/delete", h.page(h.needSecrets(h.environmentDelete)))
	m.HandleFunc("POST /projects/{pid}/secrets/folders/delete", h.page(h.needSecrets(h.folderDelete)))

	m.HandleFunc("GET /projects/{pid}/app-connections", h.page(h.needSecrets(h.appConnList)))
	m.HandleFunc("GET /projects/{pid}/app-connections/new", h.page(h.needSecrets(h.appConnForm)))
	m.HandleFunc("POST /projects/{pid}/app-connections", h.page(h.needSecrets(h.appConnCreate)))
	m.HandleFunc("POST /projects/{pid}/app-connections/{cid}/delete", h.page(h.needSecrets(h.appConnDelete)))

	m.HandleFunc("GET /projects/{pid}/secret-rotations", h.page(h.needSecrets(h.rotationList)))
	m.HandleFunc("GET /projects/{pid}/secret-rotations/new", h.page(h.needSecrets(h.rotationWizardStart)))
	m.HandleFunc("POST /projects/{pid}/secret-rotations/new", h.page(h.needSecrets(h.rotationWizardStep)))
	m.HandleFunc("POST /projects/{pid}/secret-rotations", h.page(h.needSecrets(h.rotationCreate)))
	m.HandleFunc("POST /projects/{pid}/secret-rotations/{rid}/rotate", h.page(h.needSecrets(h.rotationRotate)))
	m.HandleFunc("POST /projects/{pid}/secret-rotations/{rid}/update", h.page(h.needSecrets(h.rotationUpdate)))
	m.HandleFunc("POST /projects/{pid}/secret-rotations/{rid}/delete", h.page(h.needSecrets(h.rotationDelete)))
}

// needSecrets answers 404 when the server did not give the UI the secrets
// services.
func (h *Handler) needSecrets(f http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if h.sec.secrets == nil || h.sec.conns == nil || h.sec.rotations == nil {
			h.errorPage(w, r, http.StatusNotFound, "This server has no secrets store.")
			return
		}
		f(w, r)
	}
}

// secretNotices are the fixed words shown after a secrets form succeeded.
var secretNotices = map[string]string{
	"secret-saved":        "The secret was saved as a new version.",
	"secret-deleted":      "The secret was deleted; its history stays and an earlier version can be restored.",
	"secret-restored":     "The version was restored as the newest version.",
	"folder-created":      "The folder was created.",
	"environment-created": "The environment was added.",
	"environment-renamed": "The environment was renamed; its slug stays.",
	"environment-deleted": "The environment was deleted.",
	"folder-deleted":      "The folder was deleted.",
	"appconn-created":     "The app connection was added: Airlock logged in with it first. Its password is sealed and never shown again.",
	"appconn-deleted":     "The app connection was deleted.",
	"rotation-created":    "The secret rotation was created and its first rotation published the credentials of database username 1.",
	"rotation-rotated":    "The credentials were rotated: the mapped secrets hold the other user's new password.",
	"rotation-deleted":    "The secret rotation was deleted.",
	"rotation-updated":    "The secret rotation's schedule was saved.",
}

func notice(r *http.Request) string { return secretNotices[r.URL.Query().Get("done")] }

// secretRow is a secret of the dashboard.
type secretRow struct {
	secrets.Secret
	// Owner names the secret rotation that writes it ("" for none).
	Owner string
}

// crumb is one step of a folder path.
type crumb struct{ Name, Path string }

// secretForm is the Add/Edit Secret form as typed (never its value).
type secretForm struct {
	Name string
	Edit bool
}

type secretsData struct {
	ProjectTab
	CanWrite bool
	Envs     []secrets.Environment
	Env      string
	Path     string
	Crumbs   []crumb
	Folders  []crumb
	Secrets  []secretRow
	// Revealed is the name of the secret whose value is shown.
	Revealed string
	Form     secretForm
	Folder   string
	EnvForm  struct{ Slug, Name string }
	// Rename is the environment's new name as typed.
	Rename string
	// EnvName is the current environment's display name.
	EnvName string
	// FormError is shown next to the form it concerns: "secret",
	// "folder", "environment" or "rename".
	FormError string
}

// place reads env and path from the query or form.
func place(r *http.Request) secrets.Place {
	return secrets.Place{Environment: strings.TrimSpace(r.FormValue("env")), Path: strings.TrimSpace(r.FormValue("path"))}
}

// secretsURL is the dashboard of a place.
func secretsURL(pid string, pl secrets.Place, done string) string {
	q := url.Values{}
	q.Set("env", pl.Environment)
	q.Set("path", pl.Path)
	if done != "" {
		q.Set("done", done)
	}
	return "/projects/" + pid + "/secrets?" + q.Encode()
}

func (h *Handler) secretList(w http.ResponseWriter, r *http.Request) {
	h.renderSecrets(w, r, http.StatusOK, place(r), secretsData{}, "", nil)
}

// owners maps the secrets of a place that a rotation writes to its name.
func (h *Handler) owners(r *http.Request, projectID string, pl secrets.Place) map[string]string {
	out := map[string]string{}
	list, err := h.sec.rotations.List(r.Context(), projectID)
	if err != nil {
		return out
	}
	for _, rot := range list {
		if rot.Environment == pl.Environment && rot.SecretPath == pl.Path {
			out[rot.SecretsMapping.Username] = rot.Name
			out[rot.SecretsMapping.Password] = rot.Name
		}
	}
	return out
}

// renderSecrets shows the dashboard of a place: environments, the folder's
// subfolders and secrets (values hidden; revealed holds one revealed
// value), and the forms.
func (h *Handler) renderSecrets(w http.ResponseWriter, r *http.Request, status int, pl secrets.Place, d secretsData, msg string, revealed *secrets.Secret) {
	tab, ok := h.project(w, r, "secrets")
	if !ok {
		return
	}
	ctx := r.Context()
	d.ProjectTab, d.CanWrite = tab, tab.CanAccess
	envs, err := h.sec.secrets.Environments(ctx, tab.Project.ID)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	d.Envs = envs
	if pl.Environment == "" && len(envs) > 0 {
		pl.Environment = envs[0].Slug
	}
	if pl.Path == "" {
		pl.Path = "/"
	}
	list, err := h.sec.secrets.List(ctx, tab.Project.ID, pl)
	if err != nil {
		// An unknown environment or folder: show the environment's root
		// with the reason.
		_, m := userError(ctx, err)
		if msg == "" {
			msg = m
		}
		if d.FormError == "" {
			d.FormError = "place"
		}
		pl = secrets.Place{Environment: envs[0].Slug, Path: "/"}
		if list, err = h.sec.secrets.List(ctx, tab.Project.ID, pl); err != nil {
			h.fail(w, r, err)
			return
		}
	}
	d.Env, d.Path = pl.Environment, pl.Path
	for _, e := range envs {
		if e.Slug == pl.Environment && d.Rename == "" {
			d.EnvName = e.Name
		}
	}
	if d.Rename != "" {
		d.EnvName = d.Rename
	}
	if pl.Path != "/" {
		segs := strings.Split(pl.Path[1:], "/")
		for i, s := range segs {
			d.Crumbs = append(d.Crumbs, crumb{Name: s, Path: "/" + strings.Join(segs[:i+1], "/")})
		}
	}
	if folders, err := h.sec.secrets.Folders(ctx, tab.Project.ID, pl.Environment); err == nil {
		prefix := pl.Path + "/"
		if pl.Path == "/" {
			prefix = "/"
		}
		for _, f := range folders {
			if f.Path != "/" && strings.HasPrefix(f.Path, prefix) && !strings.Contains(f.Path[len(prefix):], "/") {
				d.Folders = append(d.Folders, crumb{Name: f.Path[len(prefix):], Path: f.Path})
			}
		}
	}
	owners := h.owners(r, tab.Project.ID, pl)
	for _, s := range list {
		row := secretRow{Secret: s, Owner: owners[s.Name]}
		if revealed != nil && revealed.Name == s.Name && revealed.Version == s.Version {
			row.Value = revealed.Value
			d.Revealed = s.Name
		}
		d.Secrets = append(d.Secrets, row)
	}
	title := tab.Project.Name + ": secrets"
	h.render(w, r, status, "secrets", view{Title: title, Nav: "projects", Error: msg, Notice: notice(r), Data: d})
}

// secretSet writes a new version of a secret (Add or Edit).
func (h *Handler) secretSet(w http.ResponseWriter, r *http.Request) {
	pl := place(r)
	f := secretForm{Name: strings.TrimSpace(r.PostFormValue("name")), Edit: r.PostFormValue("edit") == "1"}
	value := r.PostFormValue("value")
	_, err := h.sec.secrets.Set(r.Context(), r.PathValue("pid"), pl, f.Name, value)
	if err != nil {
		status, msg := userError(r.Context(), err)
		if e := fieldOf(err); e == "path.name" {
			msg = "Key: " + msg
		} else if e == "body.value" {
			msg = "Value: " + msg
		}
		if f.Edit {
			h.renderSecretEdit(w, r, status, pl, f.Name, msg)
			return
		}
		h.renderSecrets(w, r, status, pl, secretsData{Form: f, FormError: "secret"}, msg, nil)
		return
	}
	pl.Path, _ = secrets.CleanPath("", "", pl.Path)
	http.Redirect(w, r, secretsURL(r.PathValue("pid"), pl, "secret-saved"), http.StatusSeeOther)
}

type secretEditData struct {
	ProjectTab
	Env, Path, Name string
	Owner           string
}

// secretEdit is the Edit form of a secret: a new value makes a new
// version; the current value is not shown (Reveal shows it).
func (h *Handler) secretEdit(w http.ResponseWriter, r *http.Request) {
	h.renderSecretEdit(w, r, http.StatusOK, place(r), strings.TrimSpace(r.FormValue("name")), "")
}

func (h *Handler) renderSecretEdit(w http.ResponseWriter, r *http.Request, status int, pl secrets.Place, name, msg string) {
	tab, ok := h.project(w, r, "secrets")
	if !ok {
		return
	}
	if p, err := secrets.CleanPath("web.secretEdit", "path", pl.Path); err == nil {
		pl.Path = p
	}
	d := secretEditData{ProjectTab: tab, Env: pl.Environment, Path: pl.Path, Name: name}
	d.Owner = h.owners(r, tab.Project.ID, pl)[name]
	if d.Owner != "" && msg == "" && status == http.StatusOK {
		msg = "Secret " + name + " is written by secret rotation " + d.Owner + " and cannot be changed by hand; change or delete that rotation first."
	}
	h.render(w, r, status, "secret_edit", view{Title: "Edit " + name, Nav: "projects", Error: msg, Data: d})
}

// secretReveal shows one value (the newest, or a version of the history):
// a POST, audited by the secrets service as a read.
func (h *Handler) secretReveal(w http.ResponseWriter, r *http.Request) {
	pl := place(r)
	name := strings.TrimSpace(r.PostFormValue("name"))
	version := 0
	if v := r.PostFormValue("version"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			h.errorPage(w, r, http.StatusUnprocessableEntity, "The version must be a number from 1.")
			return
		}
		version = n
	}
	sec, err := h.sec.secrets.Get(r.Context(), r.PathValue("pid"), pl, name, version)
	if err != nil {
		status, msg := userError(r.Context(), err)
		if version > 0 {
			h.renderHistory(w, r, status, pl, name, msg, nil)
			return
		}
		h.renderSecrets(w, r, status, pl, secretsData{}, msg, nil)
		return
	}
	pl.Path = sec.Path
	if version > 0 {
		h.renderHistory(w, r, http.StatusOK, pl, name, "", sec)
		return
	}
	h.renderSecrets(w, r, http.StatusOK, pl, secretsData{}, "", sec)
}

func (h *Handler) secretDelete(w http.ResponseWriter, r *http.Request) {
	pl := place(r)
	if err := h.sec.secrets.Delete(r.Context(), r.PathValue("pid"), pl, strings.TrimSpace(r.PostFormValue("name"))); err != nil {
		status, msg := userError(r.Context(), err)
		h.renderSecrets(w, r, status, pl, secretsData{}, msg, nil)
		return
	}
	pl.Path, _ = secrets.CleanPath("", "", pl.Path)
	http.Redirect(w, r, secretsURL(r.PathValue("pid"), pl, "secret-deleted"), http.StatusSeeOther)
}

type historyData struct {
	ProjectTab
	CanWrite        bool
	Env, Path, Name string
	Owner           string
	Versions        []secrets.Version
	// Revealed is the version whose value is shown (0 for none).
	Revealed int
	Value    string
}

func (h *Handler) secretHistory(w http.ResponseWriter, r *http.Request) {
	h.renderHistory(w, r, http.StatusOK, place(r), strings.TrimSpace(r.FormValue("name")), "", nil)
}

func (h *Handler) renderHistory(w http.ResponseWriter, r *http.Request, status int, pl secrets.Place, name, msg string, revealed *secrets.Secret) {
	tab, ok := h.project(w, r, "secrets")
	if !ok {
		return
	}
	versions, err := h.sec.secrets.History(r.Context(), tab.Project.ID, pl, name)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	if p, err := secrets.CleanPath("web.history", "path", pl.Path); err == nil {
		pl.Path = p
	}
	if pl.Environment == "" {
		if envs, err := h.sec.secrets.Environments(r.Context(), tab.Project.ID); err == nil && len(envs) > 0 {
			pl.Environment = envs[0].Slug
		}
	}
	d := historyData{ProjectTab: tab, CanWrite: tab.CanAccess, Env: pl.Environment, Path: pl.Path, Name: name, Versions: versions}
	d.Owner = h.owners(r, tab.Project.ID, pl)[name]
	if revealed != nil && revealed.Value != nil {
		d.Revealed, d.Value = revealed.Version, *revealed.Value
	}
	h.render(w, r, status, "secret_history", view{Title: "History of " + name, Nav: "projects", Error: msg, Notice: notice(r), Data: d})
}

func (h *Handler) secretRestore(w http.ResponseWriter, r *http.Request) {
	pl := place(r)
	name := strings.TrimSpace(r.PostFormValue("name"))
	version, err := strconv.Atoi(r.PostFormValue("version"))
	if err != nil || version < 1 {
		h.renderHistory(w, r, http.StatusUnprocessableEntity, pl, name, "The version to restore must be a number from 1.", nil)
		return
	}
	sec, err := h.sec.secrets.Restore(r.Context(), r.PathValue("pid"), pl, name, version)
	if err != nil {
		status, msg := userError(r.Context(), err)
		h.renderHistory(w, r, status, pl, name, msg, nil)
		return
	}
	q := url.Values{"env": {sec.Environment}, "path": {sec.Path}, "name": {sec.Name}, "done": {"secret-restored"}}
	http.Redirect(w, r, "/projects/"+r.PathValue("pid")+"/secrets/history?"+q.Encode(), http.StatusSeeOther)
}

// folderCreate creates a folder: a name inside the current folder, or a
// path from the root (starting with /).
func (h *Handler) folderCreate(w http.ResponseWriter, r *http.Request) {
	pl := place(r)
	folder := strings.TrimSpace(r.PostFormValue("folder"))
	if folder == "" {
		h.renderSecrets(w, r, http.StatusUnprocessableEntity, pl, secretsData{FormError: "folder"},
			"Folder: give the new folder's name, such as orders, or a path such as /db/orders.", nil)
		return
	}
	target := folder
	if !strings.HasPrefix(folder, "/") {
		parent, _ := secrets.CleanPath("", "", pl.Path)
		target = strings.TrimSuffix(parent, "/") + "/" + folder
	}
	f, err := h.sec.secrets.CreateFolder(r.Context(), r.PathValue("pid"), secrets.Place{Environment: pl.Environment, Path: target})
	if err != nil {
		status, msg := userError(r.Context(), err)
		if errs.Is(err, errs.Invalid) {
			msg = "Folder: " + msg
		}
		h.renderSecrets(w, r, status, pl, secretsData{Folder: folder, FormError: "folder"}, msg, nil)
		return
	}
	http.Redirect(w, r, secretsURL(r.PathValue("pid"), secrets.Place{Environment: f.Environment, Path: f.Path}, "folder-created"), http.StatusSeeOther)
}

// environmentCreate adds an environment (project admins).
func (h *Handler) environmentCreate(w http.ResponseWriter, r *http.Request) {
	pl := place(r)
	var d secretsData
	d.EnvForm.Slug, d.EnvForm.Name = strings.TrimSpace(r.PostFormValue("slug")), strings.TrimSpace(r.PostFormValue("envName"))
	d.FormError = "environment"
	e, err := h.sec.secrets.CreateEnvironment(r.Context(), r.PathValue("pid"), d.EnvForm.Slug, d.EnvForm.Name)
	if err != nil {
		status, msg := userError(r.Context(), err)
		h.renderSecrets(w, r, status, pl, d, msg, nil)
		return
	}
	http.Redirect(w, r, secretsURL(r.PathValue("pid"), secrets.Place{Environment: e.Slug, Path: "/"}, "environment-created"), http.StatusSeeOther)
}

// fieldOf returns the field a domain error is about, or "".
func fieldOf(err error) string {
	var e *errs.Error
	if errors.As(err, &e) {
		return e.Field
	}
	return ""
}

// environmentRename changes the display name of the current environment
// (project admins).
func (h *Handler) environmentRename(w http.ResponseWriter, r *http.Request) {
	pl := place(r)
	name := strings.TrimSpace(r.PostFormValue("envName"))
	if _, err := h.sec.secrets.RenameEnvironment(r.Context(), r.PathValue("pid"), pl.Environment, name); err != nil {
		status, msg := userError(r.Context(), err)
		if fieldOf(err) == "body.name" {
			msg = "Name: " + msg
		}
		h.renderSecrets(w, r, status, pl, secretsData{FormError: "rename", Rename: name}, msg, nil)
		return
	}
	pl.Path, _ = secrets.CleanPath("", "", pl.Path)
	http.Redirect(w, r, secretsURL(r.PathValue("pid"), pl, "environment-renamed"), http.StatusSeeOther)
}

// environmentDelete deletes the current environment when it is empty
// (project admins).
func (h *Handler) environmentDelete(w http.ResponseWriter, r *http.Request) {
	pl := place(r)
	if err := h.sec.secrets.DeleteEnvironment(r.Context(), r.PathValue("pid"), pl.Environment); err != nil {
		status, msg := userError(r.Context(), err)
		h.renderSecrets(w, r, status, pl, secretsData{FormError: "rename"}, msg, nil)
		return
	}
	http.Redirect(w, r, secretsURL(r.PathValue("pid"), secrets.Place{Path: "/"}, "environment-deleted"), http.StatusSeeOther)
}

// folderDelete deletes the current folder when it is empty and shows its
// parent.
func (h *Handler) folderDelete(w http.ResponseWriter, r *http.Request) {
	pl := place(r)
	if err := h.sec.secrets.DeleteFolder(r.Context(), r.PathValue("pid"), pl); err != nil {
		status, msg := userError(r.Context(), err)
		h.renderSecrets(w, r, status, pl, secretsData{FormError: "folder"}, msg, nil)
		return
	}
	parent := "/"
	if p, err := secrets.CleanPath("", "", pl.Path); err == nil {
		if i := strings.LastIndex(p, "/"); i > 0 {
			parent = p[:i]
		}
	}
	http.Redirect(w, r, secretsURL(r.PathValue("pid"), secrets.Place{Environment: pl.Environment, Path: parent}, "folder-deleted"), http.StatusSeeOther)
}
