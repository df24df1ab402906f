package web

import (
	"context"
	"fmt"
	"net/http"
	"sort"
	"strings"

	"github.com/airlockpam/airlock/internal/errs"
	"github.com/airlockpam/airlock/internal/project"
	"github.com/airlockpam/airlock/internal/session"
	"github.com/airlockpam/airlock/internal/sessionlog"
)

type sessionRow struct {
	session.Session
	ProjectName string
	// Matches are the session's events that hold the searched text (at
	// most searchMatches); MoreMatches says there are more.
	Matches     []sessionlog.Event
	MoreMatches bool
}

type sessionsData struct {
	Projects []project.Project
	Filter   struct{ Project, Status, Resource, Account, User, From, To, Search string }
	Sessions []sessionRow
	// Searched is how many sessions (the newest that match the other
	// filters) a search looked into; SearchCapped says there were more.
	Searched     int
	SearchCapped bool
}

// A search inside the logs looks into the newest searchSessions sessions
// that match the other filters, and shows up to searchMatches events of
// each.
const (
	searchSessions = 50
	searchMatches  = 10
)

// sessionList lists the sessions of one project or of every project the
// caller belongs to, newest first: project admins see every session,
// other members their own (the session service decides).
func (h *Handler) sessionList(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	q := r.URL.Query()
	var d sessionsData
	d.Filter.Project, d.Filter.Status = q.Get("project"), q.Get("status")
	d.Filter.Resource = strings.TrimSpace(q.Get("resource"))
	d.Filter.Account = strings.TrimSpace(q.Get("account"))
	d.Filter.User = strings.TrimSpace(q.Get("user"))
	d.Filter.From, d.Filter.To = strings.TrimSpace(q.Get("from")), strings.TrimSpace(q.Get("to"))
	d.Filter.Search = strings.TrimSpace(q.Get("q"))
	projects, err := h.cfg.Projects.List(ctx)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	d.Projects = projects
	f := session.Filter{Resource: d.Filter.Resource, Account: d.Filter.Account, User: d.Filter.User, Status: d.Filter.Status, Limit: 200}
	msg := ""
	if f.From, err = parseDay(d.Filter.From, false); err != nil {
		msg = "From must be a date (2026-12-31) or an RFC 3339 time."
	}
	if f.To, err = parseDay(d.Filter.To, true); err != nil {
		msg = "To must be a date (2026-12-31) or an RFC 3339 time."
	}
	if len(d.Filter.Search) > session.MaxSearchLen {
		msg = fmt.Sprintf("Search for at most %d characters.", session.MaxSearchLen)
	}
	if msg != "" {
		h.render(w, r, http.StatusBadRequest, "sessions", view{Title: "Sessions", Nav: "sessions", Error: msg, Data: d})
		return
	}
	for _, p := range projects {
		if d.Filter.Project != "" && d.Filter.Project != p.ID {
			continue
		}
		list, err := h.cfg.Sessions.List(ctx, p.ID, f)
		if err != nil {
			if errs.Is(err, errs.Invalid) {
				_, msg = userError(ctx, err)
				break
			}
			h.fail(w, r, err)
			return
		}
		for _, s := range list {
			d.Sessions = append(d.Sessions, sessionRow{Session: s, ProjectName: p.Name})
		}
	}
	sort.SliceStable(d.Sessions, func(i, j int) bool { return d.Sessions[i].CreatedAt.After(d.Sessions[j].CreatedAt) })
	if d.Filter.Search != "" && msg == "" {
		if err := h.searchLogs(ctx, &d); err != nil {
			h.fail(w, r, err)
			return
		}
	}
	h.render(w, r, http.StatusOK, "sessions", view{Title: "Sessions", Nav: "sessions", Error: msg, Data: d})
}

// searchLogs keeps the listed sessions whose logs hold the searched text,
// each with its matching events. The server opens the sealed events and
// searches them (session.LogQuery.Search), with the caller's rights.
func (h *Handler) searchLogs(ctx context.Context, d *sessionsData) error {
	list := d.Sessions
	if len(list) > searchSessions {
		list, d.SearchCapped = list[:searchSessions], true
	}
	d.Searched = len(list)
	var found []sessionRow
	for _, row := range list {
		l, err := h.cfg.Sessions.Logs(ctx, row.ID, session.LogQuery{Search: d.Filter.Search, Limit: searchMatches})
		if err != nil {
			return err
		}
		if len(l.Events) > 0 {
			row.Matches, row.MoreMatches = l.Events, l.More
			found = append(found, row)
		}
	}
	d.Sessions = found
	return nil
}

// maxShownEvents bounds the events a session's page shows.
const maxShownEvents = 5000

type sessionData struct {
	Session     *session.Session
	ProjectName string
	Events      []sessionlog.Event
	More        bool // the log has more events than shown
	Admin       bool
	Verify      *sessionlog.VerifyResult
	VerifyError string
}

func (h *Handler) sessionPage(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	x, err := h.cfg.Sessions.Get(ctx, r.PathValue("sid"))
	if err != nil {
		h.fail(w, r, err)
		return
	}
	d := sessionData{Session: x}
	if p, err := h.cfg.Projects.Authorize(ctx, x.ProjectID, project.RoleViewer); err == nil {
		d.ProjectName, d.Admin = p.Name, p.Role == project.RoleAdmin
	} else if ri := infoFrom(ctx); ri != nil && ri.p.OrgAdmin {
		d.ProjectName, d.Admin = "(deleted project)", true
	}
	var after int64
	for len(d.Events) < maxShownEvents {
		page, err := h.cfg.Sessions.Logs(ctx, x.ID, session.LogQuery{After: after, Limit: 1000})
		if err != nil {
			h.fail(w, r, err)
			return
		}
		d.Events = append(d.Events, page.Events...)
		if len(page.Events) < 1000 {
			break
		}
		after = page.Next
	}
	if len(d.Events) >= maxShownEvents {
		d.More = true
	}
	if d.Admin {
		if v, err := h.cfg.Sessions.Verify(ctx, x.ID); err != nil {
			_, d.VerifyError = userError(ctx, err)
		} else {
			d.Verify = v
		}
	}
	h.render(w, r, http.StatusOK, "session", view{Title: "Session " + x.ID, Nav: "sessions", Data: d})
}

// sessionTerminate ends a session as a project admin (the service
// refuses anyone else).
func (h *Handler) sessionTerminate(w http.ResponseWriter, r *http.Request) {
	x, err := h.cfg.Sessions.End(r.Context(), r.PathValue("sid"), session.Terminated)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	http.Redirect(w, r, "/sessions/"+x.ID+"?done=terminated", http.StatusSeeOther)
}
