package web

import (
	"net/http"
	"strings"
	"time"

	"github.com/airlockpam/airlock/internal/audit"
	"github.com/airlockpam/airlock/internal/auth"
	"github.com/airlockpam/airlock/internal/errs"
	"github.com/airlockpam/airlock/internal/project"
	"github.com/airlockpam/airlock/internal/relay"
)

type gatewaysData struct {
	Gateways []relay.Gateway
	Form     struct{ Name string }
	// New is a gateway just created (or given a new token): its one-time
	// enrollment token is shown on this answer only.
	New *relay.NewGateway
	// Domain is this server's URL, for the gateway's command line.
	Domain string
}

// gatewayList lists the organization's gateways (organization admins; the
// relay service refuses anyone else).
func (h *Handler) gatewayList(w http.ResponseWriter, r *http.Request) {
	h.renderGateways(w, r, http.StatusOK, gatewaysData{}, "")
}

func (h *Handler) renderGateways(w http.ResponseWriter, r *http.Request, status int, d gatewaysData, msg string) {
	gws, err := h.cfg.Relay.ListGateways(r.Context())
	if err != nil {
		h.fail(w, r, err)
		return
	}
	d.Gateways, d.Domain = gws, h.origin(r)
	if d.New != nil {
		// The page that shows a token is never stored or replayed.
		w.Header().Set("Cache-Control", "no-store")
	}
	h.render(w, r, status, "gateways", view{Title: "Gateways", Nav: "gateways", Error: msg, Data: d})
}

// gatewayCreate registers a gateway and shows its enrollment token once.
func (h *Handler) gatewayCreate(w http.ResponseWriter, r *http.Request) {
	var d gatewaysData
	d.Form.Name = strings.TrimSpace(r.PostFormValue("name"))
	g, err := h.cfg.Relay.CreateGateway(r.Context(), d.Form.Name)
	if err != nil {
		status, msg := userError(r.Context(), err)
		h.renderGateways(w, r, status, d, msg)
		return
	}
	h.renderGateways(w, r, http.StatusCreated, gatewaysData{New: g}, "")
}

// gatewayToken issues a new enrollment token for a gateway (a lost token,
// or a gateway re-installed), shown once.
func (h *Handler) gatewayToken(w http.ResponseWriter, r *http.Request) {
	g, err := h.cfg.Relay.NewEnrollmentToken(r.Context(), r.PathValue("gid"))
	if err != nil {
		status, msg := userError(r.Context(), err)
		h.renderGateways(w, r, status, gatewaysData{}, msg)
		return
	}
	h.renderGateways(w, r, http.StatusOK, gatewaysData{New: g}, "")
}

// gatewayDelete deletes a gateway; the page's confirmation says that its
// resources stop working and sessions through it end.
func (h *Handler) gatewayDelete(w http.ResponseWriter, r *http.Request) {
	if err := h.cfg.Relay.DeleteGateway(r.Context(), r.PathValue("gid")); err != nil {
		status, msg := userError(r.Context(), err)
		h.renderGateways(w, r, status, gatewaysData{}, msg)
		return
	}
	http.Redirect(w, r, "/gateways?done=gateway-deleted", http.StatusSeeOther)
}

type machinesData struct {
	Machines []auth.MachineIdentity
	Form     struct{ Name string }
	// New is an identity just created; its secret is shown on this answer
	// only.
	New    *auth.NewMachineIdentity
	Domain string
}

// machineList lists the organization's machine identities (organization
// admins; the identity service refuses anyone else).
func (h *Handler) machineList(w http.ResponseWriter, r *http.Request) {
	h.renderMachines(w, r, http.StatusOK, machinesData{}, "")
}

func (h *Handler) renderMachines(w http.ResponseWriter, r *http.Request, status int, d machinesData, msg string) {
	if h.cfg.Machines == nil {
		h.errorPage(w, r, http.StatusNotFound, "This server does not manage machine identities.")
		return
	}
	list, err := h.cfg.Machines.ListMachineIdentities(r.Context())
	if err != nil {
		h.fail(w, r, err)
		return
	}
	d.Machines, d.Domain = list, h.origin(r)
	if d.New != nil {
		w.Header().Set("Cache-Control", "no-store")
	}
	h.render(w, r, status, "machines", view{Title: "Machine identities", Nav: "machines", Error: msg, Data: d})
}

// machineCreate creates a machine identity and shows its secret once.
func (h *Handler) machineCreate(w http.ResponseWriter, r *http.Request) {
	var d machinesData
	d.Form.Name = strings.TrimSpace(r.PostFormValue("name"))
	if h.cfg.Machines == nil {
		h.errorPage(w, r, http.StatusNotFound, "This server does not manage machine identities.")
		return
	}
	m, err := h.cfg.Machines.CreateMachineIdentity(r.Context(), d.Form.Name)
	if err != nil {
		status, msg := userError(r.Context(), err)
		h.renderMachines(w, r, status, d, msg)
		return
	}
	h.renderMachines(w, r, http.StatusCreated, machinesData{New: &m}, "")
}

// machineDelete deletes a machine identity: its tokens are revoked and its
// live sessions end.
func (h *Handler) machineDelete(w http.ResponseWriter, r *http.Request) {
	if h.cfg.Machines == nil {
		h.errorPage(w, r, http.StatusNotFound, "This server does not manage machine identities.")
		return
	}
	if err := h.cfg.Machines.DeleteMachineIdentity(r.Context(), r.PathValue("mid")); err != nil {
		status, msg := userError(r.Context(), err)
		h.renderMachines(w, r, status, machinesData{}, msg)
		return
	}
	http.Redirect(w, r, "/machine-identities?done=machine-deleted", http.StatusSeeOther)
}

type auditData struct {
	Filter  struct{ Actor, Action, Project, From, To string }
	Entries []audit.Entry
	Older   string // the cursor of the next page, when there may be one
}

// auditPage is how many entries a page of the audit log shows.
const auditPage = 100

// auditList shows the audit log with the API's rules: organization admins
// read it all, a project admin the entries of that project.
func (h *Handler) auditList(w http.ResponseWriter, r *http.Request) {
	const op = "web.auditList"
	ctx := r.Context()
	ri := infoFrom(ctx)
	q := r.URL.Query()
	var d auditData
	d.Filter.Actor, d.Filter.Action = strings.TrimSpace(q.Get("actor")), strings.TrimSpace(q.Get("action"))
	d.Filter.Project, d.Filter.From, d.Filter.To = q.Get("project"), q.Get("from"), q.Get("to")
	if !ri.p.OrgAdmin {
		if d.Filter.Project == "" {
			h.fail(w, r, errs.E(op, errs.Forbidden, "Only organization admins read the whole audit log; a project admin reads a project's entries from its page."))
			return
		}
		if _, err := h.cfg.Projects.Authorize(ctx, d.Filter.Project, project.RoleAdmin); err != nil {
			h.fail(w, r, err)
			return
		}
	}
	f := audit.Filter{OrgID: ri.p.OrgID, Actor: d.Filter.Actor, Action: d.Filter.Action, ProjectID: d.Filter.Project,
		Before: q.Get("before"), Limit: auditPage}
	msg := ""
	var err error
	if f.From, err = parseDay(d.Filter.From, false); err != nil {
		msg = "From must be a date (2026-12-31) or an RFC 3339 time."
	}
	if f.To, err = parseDay(d.Filter.To, true); err != nil {
		msg = "To must be a date (2026-12-31) or an RFC 3339 time."
	}
	if msg == "" {
		if d.Entries, err = h.cfg.Audit.List(ctx, f); err != nil {
			h.fail(w, r, err)
			return
		}
		if len(d.Entries) == auditPage {
			d.Older = d.Entries[len(d.Entries)-1].ID
		}
	}
	h.render(w, r, http.StatusOK, "audit", view{Title: "Audit log", Nav: "audit", Error: msg, Data: d})
}

// parseDay reads a date (the whole day: its end when end is set) or an RFC
// 3339 time; empty is the zero time.
func parseDay(s string, end bool) (time.Time, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return time.Time{}, nil
	}
	if t, err := time.Parse("2006-01-02", s); err == nil {
		if end {
			t = t.Add(24 * time.Hour)
		}
		return t, nil
	}
	return time.Parse(time.RFC3339, s)
}
