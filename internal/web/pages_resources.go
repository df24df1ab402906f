package web

import (
	"fmt"
	"io"
	"net/http"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/airlockpam/airlock/internal/errs"
	"github.com/airlockpam/airlock/internal/pam"
	"github.com/airlockpam/airlock/internal/project"
	"github.com/airlockpam/airlock/internal/session"
)

// resourceRow is a resource with its gateway's state as this server sees it.
type resourceRow struct {
	pam.Resource
	Online bool
	Where  string // host:port or the connection string's hosts
}

func (h *Handler) resourceRows(rs []pam.Resource) []resourceRow {
	out := make([]resourceRow, len(rs))
	for i, r := range rs {
		out[i] = resourceRow{Resource: r, Online: h.cfg.Relay != nil && h.cfg.Relay.Connected(r.GatewayID), Where: r.Endpoint()}
	}
	return out
}

type resourcesData struct {
	ProjectTab
	Resources []resourceRow
}

func (h *Handler) resourceList(w http.ResponseWriter, r *http.Request) {
	tab, ok := h.project(w, r, "resources")
	if !ok {
		return
	}
	rs, err := h.cfg.PAM.ListResources(r.Context(), tab.Project.ID)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	h.render(w, r, http.StatusOK, "resources", view{Title: tab.Project.Name + ": resources", Nav: "projects",
		Data: resourcesData{ProjectTab: tab, Resources: h.resourceRows(rs)}})
}

// resourceForm is the Add Resource form as typed.
type resourceForm struct {
	Kind, Name, Gateway, Host, Port, Database, ConnectionString, SSLCAPEM string
	SSLEnabled, SSLRejectUnauthorized                                     bool
	// RotationUsername is the optional rotation account; its password is
	// never put back into a form.
	RotationUsername string
}

type gatewayChoice struct {
	Name    string
	Online  bool
	Allowed bool // the project may use it already
}

type resourceFormData struct {
	ProjectTab
	Form     resourceForm
	Gateways []gatewayChoice
	// FreeGateway asks for the gateway by name: the caller may not list
	// the organization's gateways (not an organization admin).
	FreeGateway bool
}

func (h *Handler) resourceForm(w http.ResponseWriter, r *http.Request) {
	kind := r.URL.Query().Get("kind")
	if kind != pam.KindMongoDB {
		kind = pam.KindPostgres
	}
	f := resourceForm{Kind: kind, SSLEnabled: true, SSLRejectUnauthorized: true}
	if kind == pam.KindPostgres {
		f.Port = strconv.Itoa(pam.DefaultPostgresPort)
	} else {
		f.Database = pam.DefaultMongoAuthDatabase
	}
	h.renderResourceForm(w, r, http.StatusOK, f, "")
}

func (h *Handler) renderResourceForm(w http.ResponseWriter, r *http.Request, status int, f resourceForm, msg string) {
	tab, ok := h.project(w, r, "resources")
	if !ok {
		return
	}
	if !tab.Admin {
		h.errorPage(w, r, http.StatusForbidden, "Only the project's admins add resources.")
		return
	}
	d := resourceFormData{ProjectTab: tab, Form: f}
	d.Gateways, d.FreeGateway = h.gatewayChoices(r, tab.Project.ID)
	title := "Add a PostgreSQL resource"
	if f.Kind == pam.KindMongoDB {
		title = "Add a MongoDB resource"
	}
	h.render(w, r, status, "resource_new", view{Title: title, Nav: "projects", Error: msg, Data: d})
}

// gatewayChoices lists the gateways the caller may pick for a resource of
// the project: every gateway of the organization for an organization
// admin (picking one the project may not use yet allows it, as in the
// API); for a project admin, the gateways its resources use already, with
// the name typed in for others.
func (h *Handler) gatewayChoices(r *http.Request, projectID string) ([]gatewayChoice, bool) {
	ctx := r.Context()
	var out []gatewayChoice
	if ri := infoFrom(ctx); ri != nil && ri.p.OrgAdmin {
		gws, err := h.cfg.Relay.ListGateways(ctx)
		if err == nil {
			for _, g := range gws {
				allowed, _ := h.cfg.Relay.GatewayAllowed(ctx, g.ID, projectID)
				out = append(out, gatewayChoice{Name: g.Name, Online: g.Online, Allowed: allowed})
			}
			return out, false
		}
	}
	rs, err := h.cfg.PAM.ListResources(ctx, projectID)
	if err != nil {
		return nil, true
	}
	seen := map[string]bool{}
	for _, res := range rs {
		if res.GatewayName != "" && !seen[res.GatewayName] {
			seen[res.GatewayName] = true
			out = append(out, gatewayChoice{Name: res.GatewayName, Online: h.cfg.Relay.Connected(res.GatewayID), Allowed: true})
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, true
}

// maxFormBytes bounds a form (a CA bundle is at most 64 KiB).
const maxFormBytes = 1 << 20

func (h *Handler) resourceCreate(w http.ResponseWriter, r *http.Request) {
	f := resourceForm{
		Kind: r.PostFormValue("kind"), Name: strings.TrimSpace(r.PostFormValue("name")),
		Gateway: strings.TrimSpace(r.PostFormValue("gateway")), Host: strings.TrimSpace(r.PostFormValue("host")),
		Port: strings.TrimSpace(r.PostFormValue("port")), Database: strings.TrimSpace(r.PostFormValue("database")),
		ConnectionString:      strings.TrimSpace(r.PostFormValue("connectionString")),
		SSLCAPEM:              strings.TrimSpace(r.PostFormValue("sslCaPem")),
		SSLEnabled:            r.PostFormValue("sslEnabled") == "on",
		SSLRejectUnauthorized: r.PostFormValue("sslRejectUnauthorized") == "on",
		RotationUsername:      strings.TrimSpace(r.PostFormValue("rotationUsername")),
	}
	if f.Kind != pam.KindMongoDB {
		f.Kind = pam.KindPostgres
	}
	f.SSLCAPEM = caFromForm(r, f.SSLCAPEM)
	in := pam.ResourceInput{Kind: f.Kind, Name: f.Name, Gateway: f.Gateway,
		SSLEnabled: &f.SSLEnabled, SSLRejectUnauthorized: &f.SSLRejectUnauthorized, SSLCAPEM: f.SSLCAPEM,
		RotationUsername: f.RotationUsername, RotationPassword: r.PostFormValue("rotationPassword")}
	if f.Kind == pam.KindPostgres {
		in.Host, in.Database = f.Host, f.Database
		if f.Port != "" {
			port, err := strconv.Atoi(f.Port)
			if err != nil {
				h.renderResourceForm(w, r, http.StatusUnprocessableEntity, f, "The port must be a number between 1 and 65535.")
				return
			}
			in.Port = port
		}
	} else {
		in.ConnectionString, in.Database = f.ConnectionString, f.Database
	}
	res, err := h.cfg.PAM.CreateResource(r.Context(), r.PathValue("pid"), in)
	if err != nil {
		status, msg := userError(r.Context(), err)
		h.renderResourceForm(w, r, status, f, msg)
		return
	}
	http.Redirect(w, r, "/projects/"+res.ProjectID+"/resources/"+res.ID+"?done=resource-created", http.StatusSeeOther)
}

// caFromForm returns the CA bundle typed in, or else the one uploaded.
func caFromForm(r *http.Request, typed string) string {
	if typed == "" && r.MultipartForm != nil {
		if fh := r.MultipartForm.File["sslCaFile"]; len(fh) > 0 {
			file, err := fh[0].Open()
			if err == nil {
				b, _ := io.ReadAll(io.LimitReader(file, pam.MaxCAPEMBytes+1))
				file.Close()
				return strings.TrimSpace(string(b))
			}
		}
	}
	return typed
}

type deleteResourceData struct {
	ProjectTab
	Resource     *pam.Resource
	Accounts     int
	LiveSessions int
}

func (h *Handler) resourceDeleteConfirm(w http.ResponseWriter, r *http.Request) {
	tab, ok := h.project(w, r, "resources")
	if !ok {
		return
	}
	ctx := r.Context()
	res, err := h.cfg.PAM.GetResource(ctx, tab.Project.ID, r.PathValue("rid"))
	if err != nil {
		h.fail(w, r, err)
		return
	}
	accounts, err := h.cfg.PAM.ListAccounts(ctx, tab.Project.ID, pam.AccountFilter{Resource: res.ID})
	if err != nil {
		h.fail(w, r, err)
		return
	}
	d := deleteResourceData{ProjectTab: tab, Resource: res, Accounts: len(accounts), LiveSessions: -1}
	if live, err := h.cfg.Sessions.List(ctx, tab.Project.ID, session.Filter{Resource: res.ID, Status: session.StatusActive, Limit: 1000}); err == nil {
		d.LiveSessions = len(live)
	}
	h.render(w, r, http.StatusOK, "resource_delete", view{Title: "Delete " + res.Name, Nav: "projects", Data: d})
}

func (h *Handler) resourceDelete(w http.ResponseWriter, r *http.Request) {
	pid := r.PathValue("pid")
	if err := h.cfg.PAM.DeleteResource(r.Context(), pid, r.PathValue("rid")); err != nil {
		h.fail(w, r, err)
		return
	}
	http.Redirect(w, r, "/projects/"+pid+"/resources?done=resource-deleted", http.StatusSeeOther)
}

// metaPair is one metadata row of a form.
type metaPair struct{ Key, Value string }

// metaRows reads the metadata rows of a form (fields metaKey and
// metaValue, in pairs); rows left empty are skipped.
func metaRows(r *http.Request) []metaPair {
	keys, values := r.Form["metaKey"], r.Form["metaValue"]
	var out []metaPair
	for i := range keys {
		v := ""
		if i < len(values) {
			v = values[i]
		}
		k := strings.TrimSpace(keys[i])
		if k == "" && strings.TrimSpace(v) == "" {
			continue
		}
		out = append(out, metaPair{Key: k, Value: v})
	}
	return out
}

// metaMap turns rows into an account's metadata.
func metaMap(rows []metaPair) (map[string]string, string) {
	m := map[string]string{}
	for i, p := range rows {
		if p.Key == "" {
			return nil, fmt.Sprintf("Metadata row %d has a value but no key.", i+1)
		}
		if _, dup := m[p.Key]; dup {
			return nil, fmt.Sprintf("Metadata row %d repeats a key of an earlier row.", i+1)
		}
		m[p.Key] = p.Value
	}
	return m, ""
}

// accountForm is the Add Account form as typed (never its password).
type accountForm struct {
	Name, Description, Username string
	RequireMFA                  bool
	Meta                        []metaPair
	// Rotation is the rotation interval chosen: "" (off), 1d, 3d, 7d or 30d.
	Rotation string
}

// rotationChoices are the rotation intervals the forms offer.
var rotationChoices = []string{"1d", "3d", "7d", "30d"}

// accessDurations are the durations the Access command offers.
var accessDurations = []string{"15m", "30m", "1h", "2h", "4h", "8h", "12h", "24h"}

// accessCmd is an account's Access command.
type accessCmd struct {
	Account   string
	Durations []string
	Default   string
	// Template is the command with {duration} where the duration goes.
	Template string
	Command  string
}

type accountsData struct {
	ProjectTab
	Resource  *pam.Resource // nil on the project's Accounts tab
	Resources []pam.Resource
	Online    bool
	Accounts  []pam.Account
	Access    map[string]accessCmd // by account id
	Filter    []metaPair
	FilterRes string
	Form      accountForm
	Intervals []string
}

func (h *Handler) resourcePage(w http.ResponseWriter, r *http.Request) {
	h.renderAccounts(w, r, http.StatusOK, accountForm{}, "")
}

func (h *Handler) accountList(w http.ResponseWriter, r *http.Request) {
	h.renderAccounts(w, r, http.StatusOK, accountForm{}, "")
}

// renderAccounts shows a resource's page (its settings, its accounts and
// the Add Account form) or, without a resource in the path, the project's
// Accounts tab; both filter by metadata pairs (all must match).
func (h *Handler) renderAccounts(w http.ResponseWriter, r *http.Request, status int, form accountForm, msg string) {
	tab, ok := h.project(w, r, "accounts")
	if !ok {
		return
	}
	ctx := r.Context()
	d := accountsData{ProjectTab: tab, Form: form, Intervals: rotationChoices}
	q := r.URL.Query()
	for i, k := range q["metaKey"] {
		v := ""
		if vs := q["metaValue"]; i < len(vs) {
			v = vs[i]
		}
		if strings.TrimSpace(k) != "" {
			d.Filter = append(d.Filter, metaPair{Key: strings.TrimSpace(k), Value: v})
		}
	}
	filter := pam.AccountFilter{}
	if rid := r.PathValue("rid"); rid != "" {
		res, err := h.cfg.PAM.GetResource(ctx, tab.Project.ID, rid)
		if err != nil {
			h.fail(w, r, err)
			return
		}
		d.Resource, d.Tab = res, "resources"
		d.Online = h.cfg.Relay.Connected(res.GatewayID)
		filter.Resource = res.ID
	} else {
		d.FilterRes = q.Get("resource")
		filter.Resource = d.FilterRes
		rs, err := h.cfg.PAM.ListResources(ctx, tab.Project.ID)
		if err != nil {
			h.fail(w, r, err)
			return
		}
		d.Resources = rs
	}
	raw := make([]string, len(d.Filter))
	for i, p := range d.Filter {
		raw[i] = p.Key + "=" + p.Value
	}
	var err error
	if filter.Metadata, err = pam.ParseMetadataFilters("web.accounts", raw); err != nil {
		_, m := userError(ctx, err)
		if msg == "" {
			msg = m
		}
	} else if d.Accounts, err = h.cfg.PAM.ListAccounts(ctx, tab.Project.ID, filter); err != nil {
		if errs.Is(err, errs.NotFound) && d.Resource == nil {
			msg = "There is no resource of that name in this project."
		} else {
			h.fail(w, r, err)
			return
		}
	}
	d.Access = map[string]accessCmd{}
	for _, a := range d.Accounts {
		d.Access[a.ID] = h.access(r, tab.Project, a.ResourceName, a.Name)
	}
	if len(d.Form.Meta) == 0 {
		d.Form.Meta = []metaPair{{}}
	}
	title := tab.Project.Name + ": accounts"
	if d.Resource != nil {
		title = d.Resource.Name
	}
	h.render(w, r, status, "accounts", view{Title: title, Nav: "projects", Error: msg, Data: d})
}

// access builds the CLI command that opens a session on an account.
func (h *Handler) access(r *http.Request, p *project.Project, resource, account string) accessCmd {
	c := accessCmd{Account: account, Default: "1h"}
	for _, d := range accessDurations {
		if dur, _ := time.ParseDuration(d); p.MaxSession == 0 || dur <= p.MaxSession {
			c.Durations = append(c.Durations, d)
		}
	}
	c.Template = "airlock db access --resource " + shellQuote(resource) + " --account " + shellQuote(account) +
		" --project-id " + shellQuote(p.ID) + " --duration {duration} --domain " + shellQuote(h.origin(r))
	c.Command = strings.Replace(c.Template, "{duration}", c.Default, 1)
	return c
}

// origin is this server's URL as the browser reached it: the --domain of
// the commands the pages show.
func (h *Handler) origin(r *http.Request) string {
	if h.secure(r) {
		return "https://" + r.Host
	}
	return "http://" + r.Host
}

var shellSafe = regexp.MustCompile(`^[A-Za-z0-9_./:@%+=,-]+$`)

// shellQuote quotes s for a POSIX shell when it needs it.
func shellQuote(s string) string {
	if shellSafe.MatchString(s) {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

func (h *Handler) accountCreate(w http.ResponseWriter, r *http.Request) {
	f := accountForm{
		Name: strings.TrimSpace(r.PostFormValue("name")), Description: r.PostFormValue("description"),
		Username: strings.TrimSpace(r.PostFormValue("username")), RequireMFA: r.PostFormValue("requireMfa") == "on",
		Meta: metaRows(r), Rotation: r.PostFormValue("rotationInterval"),
	}
	if f.Rotation == "off" {
		f.Rotation = ""
	}
	meta, msg := metaMap(f.Meta)
	if msg != "" {
		h.renderAccounts(w, r, http.StatusUnprocessableEntity, f, msg)
		return
	}
	a, err := h.cfg.PAM.CreateAccount(r.Context(), r.PathValue("pid"), pam.AccountInput{
		Resource: r.PathValue("rid"), Name: f.Name, Username: f.Username, Password: r.PostFormValue("password"),
		Description: f.Description, Metadata: meta, RequireMFA: f.RequireMFA, RotationInterval: f.Rotation,
	})
	if err != nil {
		status, msg := userError(r.Context(), err)
		h.renderAccounts(w, r, status, f, msg)
		return
	}
	http.Redirect(w, r, "/projects/"+r.PathValue("pid")+"/resources/"+a.ResourceID+"?done=account-created", http.StatusSeeOther)
}

type accountData struct {
	ProjectTab
	Account *pam.Account
	Meta    []metaPair
	Access  accessCmd
	// Kind is the resource's kind: postgres accounts have Web Access.
	Kind string
	// CanRotate: the resource has a rotation account.
	CanRotate bool
	Intervals []string
	// Rotation is the interval chosen in the rotation form (after a refusal).
	Rotation string
}

func (h *Handler) accountPage(w http.ResponseWriter, r *http.Request) {
	h.renderAccount(w, r, http.StatusOK, nil, "")
}

func (h *Handler) renderAccount(w http.ResponseWriter, r *http.Request, status int, meta []metaPair, msg string) {
	h.renderAccountWith(w, r, status, meta, msg, nil)
}

func (h *Handler) renderAccountWith(w http.ResponseWriter, r *http.Request, status int, meta []metaPair, msg string, rotation *string) {
	tab, ok := h.project(w, r, "resources")
	if !ok {
		return
	}
	a, err := h.cfg.PAM.GetAccount(r.Context(), tab.Project.ID, r.PathValue("rid"), r.PathValue("aid"))
	if err != nil {
		h.fail(w, r, err)
		return
	}
	if meta == nil {
		keys := make([]string, 0, len(a.Metadata))
		for k := range a.Metadata {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			meta = append(meta, metaPair{Key: k, Value: a.Metadata[k]})
		}
	}
	meta = append(meta, metaPair{})
	d := accountData{ProjectTab: tab, Account: a, Meta: meta, Access: h.access(r, tab.Project, a.ResourceName, a.Name),
		Intervals: rotationChoices, Rotation: a.Rotation.Interval}
	if rotation != nil {
		d.Rotation = *rotation
	}
	if res, err := h.cfg.PAM.GetResource(r.Context(), tab.Project.ID, a.ResourceID); err == nil {
		d.Kind, d.CanRotate = res.Kind, res.HasRotationCredentials
	}
	h.render(w, r, status, "account", view{Title: a.ResourceName + " / " + a.Name, Nav: "projects", Error: msg, Data: d})
}

// accountMetadata replaces an account's metadata with the form's rows.
func (h *Handler) accountMetadata(w http.ResponseWriter, r *http.Request) {
	rows := metaRows(r)
	meta, msg := metaMap(rows)
	if msg != "" {
		h.renderAccount(w, r, http.StatusUnprocessableEntity, rows, msg)
		return
	}
	a, err := h.cfg.PAM.UpdateAccount(r.Context(), r.PathValue("pid"), r.PathValue("rid"), r.PathValue("aid"), pam.AccountUpdate{Metadata: meta})
	if err != nil {
		status, msg := userError(r.Context(), err)
		h.renderAccount(w, r, status, rows, msg)
		return
	}
	http.Redirect(w, r, "/projects/"+r.PathValue("pid")+"/resources/"+a.ResourceID+"/accounts/"+a.ID+"?done=metadata-saved", http.StatusSeeOther)
}

func (h *Handler) accountDelete(w http.ResponseWriter, r *http.Request) {
	pid, rid := r.PathValue("pid"), r.PathValue("rid")
	if err := h.cfg.PAM.DeleteAccount(r.Context(), pid, rid, r.PathValue("aid")); err != nil {
		h.fail(w, r, err)
		return
	}
	res, err := h.cfg.PAM.GetResource(r.Context(), pid, rid)
	if err != nil {
		http.Redirect(w, r, "/projects/"+pid+"/resources?done=account-deleted", http.StatusSeeOther)
		return
	}
	http.Redirect(w, r, "/projects/"+pid+"/resources/"+res.ID+"?done=account-deleted", http.StatusSeeOther)
}
