package web

import (
	"net/http"
	"strings"

	"github.com/airlockpam/airlock/internal/project"
)

// ProjectTab is what every tab of a project shows at the top.
type ProjectTab struct {
	Project *project.Project
	Admin   bool
	// CanAccess is true for members and admins: viewers read, but do not
	// open sessions.
	CanAccess bool
	Tab       string
}

// project returns the project of the path with the caller's role, or
// writes the error page (a non-member is told it does not exist).
func (h *Handler) project(w http.ResponseWriter, r *http.Request, tab string) (ProjectTab, bool) {
	p, err := h.cfg.Projects.Authorize(r.Context(), r.PathValue("pid"), project.RoleViewer)
	if err != nil {
		h.fail(w, r, err)
		return ProjectTab{}, false
	}
	return ProjectTab{Project: p, Admin: p.Role == project.RoleAdmin, CanAccess: p.Role == project.RoleAdmin || p.Role == project.RoleMember, Tab: tab}, true
}

type projectsData struct {
	Projects []project.Project
	Form     struct{ Name, Description, MaxSession string }
}

func (h *Handler) projectList(w http.ResponseWriter, r *http.Request) {
	h.renderProjects(w, r, http.StatusOK, projectsData{}, "")
}

func (h *Handler) renderProjects(w http.ResponseWriter, r *http.Request, status int, d projectsData, msg string) {
	list, err := h.cfg.Projects.List(r.Context())
	if err != nil {
		h.fail(w, r, err)
		return
	}
	d.Projects = list
	h.render(w, r, status, "projects", view{Title: "Projects", Nav: "projects", Error: msg, Data: d})
}

func (h *Handler) projectCreate(w http.ResponseWriter, r *http.Request) {
	var d projectsData
	d.Form.Name = strings.TrimSpace(r.PostFormValue("name"))
	d.Form.Description = r.PostFormValue("description")
	d.Form.MaxSession = strings.TrimSpace(r.PostFormValue("maxSession"))
	p, err := h.cfg.Projects.Create(r.Context(), d.Form.Name, d.Form.Description, d.Form.MaxSession)
	if err != nil {
		status, msg := userError(r.Context(), err)
		h.renderProjects(w, r, status, d, msg)
		return
	}
	http.Redirect(w, r, "/projects/"+p.ID+"/resources?done=project-created", http.StatusSeeOther)
}

type membersData struct {
	ProjectTab
	Members []project.Member
	Roles   []project.Role
	Form    struct{ Email, Role string }
}

func (h *Handler) memberList(w http.ResponseWriter, r *http.Request) {
	h.renderMembers(w, r, http.StatusOK, membersData{}, "")
}

func (h *Handler) renderMembers(w http.ResponseWriter, r *http.Request, status int, d membersData, msg string) {
	tab, ok := h.project(w, r, "members")
	if !ok {
		return
	}
	members, err := h.cfg.Projects.Members(r.Context(), tab.Project.ID)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	d.ProjectTab, d.Members = tab, members
	d.Roles = []project.Role{project.RoleViewer, project.RoleMember, project.RoleAdmin}
	if d.Form.Role == "" {
		d.Form.Role = string(project.RoleMember)
	}
	h.render(w, r, status, "members", view{Title: tab.Project.Name + ": members", Nav: "projects", Error: msg, Data: d})
}

// memberSet adds a user by email or changes a member's role (a machine
// identity is named by its id).
func (h *Handler) memberSet(w http.ResponseWriter, r *http.Request) {
	var d membersData
	d.Form.Email = strings.TrimSpace(r.PostFormValue("email"))
	d.Form.Role = r.PostFormValue("role")
	machine := strings.TrimSpace(r.PostFormValue("machineId"))
	_, err := h.cfg.Projects.SetMember(r.Context(), r.PathValue("pid"), d.Form.Email, machine, project.Role(d.Form.Role))
	if err != nil {
		status, msg := userError(r.Context(), err)
		h.renderMembers(w, r, status, d, msg)
		return
	}
	http.Redirect(w, r, "/projects/"+r.PathValue("pid")+"/members?done=member-saved", http.StatusSeeOther)
}

func (h *Handler) memberRemove(w http.ResponseWriter, r *http.Request) {
	err := h.cfg.Projects.RemoveMember(r.Context(), r.PathValue("pid"), r.PostFormValue("kind"), r.PostFormValue("id"))
	if err != nil {
		status, msg := userError(r.Context(), err)
		h.renderMembers(w, r, status, membersData{}, msg)
		return
	}
	http.Redirect(w, r, "/projects/"+r.PathValue("pid")+"/members?done=member-removed", http.StatusSeeOther)
}

type settingsData struct {
	ProjectTab
	Form struct{ Description, MaxSession, ConsoleTimeout string }
}

// projectSettings shows a project's settings; its admins change them.
func (h *Handler) projectSettings(w http.ResponseWriter, r *http.Request) {
	tab, ok := h.project(w, r, "settings")
	if !ok {
		return
	}
	d := settingsData{ProjectTab: tab}
	d.Form.Description, d.Form.MaxSession, d.Form.ConsoleTimeout = tab.Project.Description, tab.Project.MaxSessionDuration, tab.Project.ConsoleStatementTimeout
	h.render(w, r, http.StatusOK, "settings", view{Title: tab.Project.Name + " settings", Nav: "projects", Data: d})
}

// projectSettingsSave saves them through the project service (which
// refuses anyone but the project's admins); a bad value keeps what was
// typed and names the field.
func (h *Handler) projectSettingsSave(w http.ResponseWriter, r *http.Request) {
	tab, ok := h.project(w, r, "settings")
	if !ok {
		return
	}
	d := settingsData{ProjectTab: tab}
	d.Form.Description = r.PostFormValue("description")
	d.Form.MaxSession = strings.TrimSpace(r.PostFormValue("maxSession"))
	d.Form.ConsoleTimeout = strings.TrimSpace(r.PostFormValue("consoleTimeout"))
	_, err := h.cfg.Projects.Update(r.Context(), tab.Project.ID, project.ProjectUpdate{Description: &d.Form.Description,
		MaxSessionDuration: &d.Form.MaxSession, ConsoleStatementTimeout: &d.Form.ConsoleTimeout})
	if err != nil {
		status, msg := userError(r.Context(), err)
		h.render(w, r, status, "settings", view{Title: tab.Project.Name + " settings", Nav: "projects", Error: msg, Data: d})
		return
	}
	http.Redirect(w, r, "/projects/"+tab.Project.ID+"/settings?done=settings-saved", http.StatusSeeOther)
}
