package web

import (
	"net/http"
	"strings"
	"time"

	"github.com/airlockpam/airlock/internal/audit"
	"github.com/airlockpam/airlock/internal/errs"
	"github.com/airlockpam/airlock/internal/project"
	"github.com/airlockpam/airlock/internal/relay"
)

type gatewaysData struct {
	Gateways []relay.Gateway
}

// gatewayList lists the organization's gateways (organization admins; the
// relay service refuses anyone else).
func (h *Handler) gatewayList(w http.ResponseWriter, r *http.Request) {
	gws, err := h.cfg.Relay.ListGateways(r.Context())
	if err != nil {
		h.fail(w, r, err)
		return
	}
	h.render(w, r, http.StatusOK, "gateways", view{Title: "Gateways", Nav: "gateways", Data: gatewaysData{Gateways: gws}})
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
