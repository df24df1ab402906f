package web

import (
	"fmt"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/airlockpam/airlock/internal/appconn"
	"github.com/airlockpam/airlock/internal/secretrotation"
	"github.com/airlockpam/airlock/internal/secrets"
)

type rotationsData struct {
	ProjectTab
	Rotations []secretrotation.Rotation
	Zones     []string
}

func (h *Handler) rotationList(w http.ResponseWriter, r *http.Request) {
	h.renderRotations(w, r, http.StatusOK, "")
}

func (h *Handler) renderRotations(w http.ResponseWriter, r *http.Request, status int, msg string) {
	tab, ok := h.project(w, r, "rotations")
	if !ok {
		return
	}
	list, err := h.sec.rotations.List(r.Context(), tab.Project.ID)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	h.render(w, r, status, "secretrotations", view{Title: tab.Project.Name + ": secret rotations", Nav: "projects", Error: msg, Notice: notice(r),
		Data: rotationsData{ProjectTab: tab, Rotations: list, Zones: zonesWith(list)}})
}

func (h *Handler) rotationRotate(w http.ResponseWriter, r *http.Request) {
	if _, err := h.sec.rotations.RotateNow(r.Context(), r.PathValue("pid"), r.PathValue("rid")); err != nil {
		status, msg := userError(r.Context(), err)
		h.renderRotations(w, r, status, msg)
		return
	}
	http.Redirect(w, r, "/projects/"+r.PathValue("pid")+"/secret-rotations?done=rotation-rotated", http.StatusSeeOther)
}

// zonesWith returns the wizard's time zones and those of list.
func zonesWith(list []secretrotation.Rotation) []string {
	out := append([]string{}, timeZones...)
	for _, r := range list {
		known := false
		for _, z := range out {
			known = known || z == r.TimeZone
		}
		if !known {
			out = append(out, r.TimeZone)
		}
	}
	return out
}

// rotationLabels name the schedule form's fields of the service's errors.
var rotationLabels = map[string]string{
	"body.rotationInterval": "Rotation Interval", "body.rotateAt": "Rotate At", "body.timeZone": "Time zone", "body.name": "Name",
}

// rotationUpdate saves a rotation's schedule: interval, rotate-at, time
// zone, auto-rotation and description (project admins).
func (h *Handler) rotationUpdate(w http.ResponseWriter, r *http.Request) {
	v := func(k string) string { return strings.TrimSpace(r.PostFormValue(k)) }
	interval, err := strconv.Atoi(v("interval"))
	if err != nil {
		h.renderRotations(w, r, http.StatusUnprocessableEntity, "Rotation Interval: give a number of days from 1 to 365.")
		return
	}
	rotateAt, tz, desc := v("rotateAt"), v("timeZone"), v("description")
	auto := r.PostFormValue("autoRotation") == "on"
	_, err = h.sec.rotations.Update(r.Context(), r.PathValue("pid"), r.PathValue("rid"), secretrotation.UpdateInput{
		RotationInterval: &interval, RotateAt: &rotateAt, TimeZone: &tz, AutoRotation: &auto, Description: &desc})
	if err != nil {
		status, msg := userError(r.Context(), err)
		if label := rotationLabels[fieldOf(err)]; label != "" {
			msg = label + ": " + msg
		}
		h.renderRotations(w, r, status, msg)
		return
	}
	http.Redirect(w, r, "/projects/"+r.PathValue("pid")+"/secret-rotations?done=rotation-updated", http.StatusSeeOther)
}

func (h *Handler) rotationDelete(w http.ResponseWriter, r *http.Request) {
	err := h.sec.rotations.Delete(r.Context(), r.PathValue("pid"), r.PathValue("rid"),
		r.PostFormValue("deleteSecrets") == "on", r.PostFormValue("revoke") == "on")
	if err != nil {
		status, msg := userError(r.Context(), err)
		h.renderRotations(w, r, status, msg)
		return
	}
	http.Redirect(w, r, "/projects/"+r.PathValue("pid")+"/secret-rotations?done=rotation-deleted", http.StatusSeeOther)
}

// The Add Secret Rotation wizard: its steps, as the seed walks through
// them. Each step's form carries the earlier steps' answers in hidden
// fields; Next checks the step's own answers before going on; the review
// step creates the rotation.
const (
	stepBehaviour = 1 // connection, interval, rotate-at, time zone, auto-rotation
	stepUsers     = 2 // database usernames 1 and 2
	stepMapping   = 3 // environment, path, username and password secret names
	stepDetails   = 4 // name, description
	stepReview    = 5
)

var stepTitles = map[int]string{
	stepBehaviour: "Connection and rotation behaviour",
	stepUsers:     "Database usernames",
	stepMapping:   "Secrets mapping",
	stepDetails:   "Name and description",
	stepReview:    "Review",
}

// wizard is the wizard's answers so far.
type wizard struct {
	Connection, Interval, RotateAt, TimeZone  string
	Auto                                      bool
	Username1, Username2                      string
	Env, Path, UsernameSecret, PasswordSecret string
	Name, Description                         string
}

// Schedule says in words when the rotation runs.
func (z wizard) Schedule() string {
	unit := "days"
	if z.Interval == "1" {
		unit = "day"
	}
	return fmt.Sprintf("every %s %s at %s (%s)", z.Interval, unit, z.RotateAt, z.TimeZone)
}

// timeZones are the zones the wizard offers; an IANA name outside the
// list that came in the form is offered too.
var timeZones = []string{"UTC", "Africa/Johannesburg", "Africa/Lagos", "America/Chicago", "America/Denver", "America/Los_Angeles",
	"America/Mexico_City", "America/New_York", "America/Sao_Paulo", "America/Toronto", "Asia/Dubai", "Asia/Hong_Kong", "Asia/Jakarta",
	"Asia/Kolkata", "Asia/Seoul", "Asia/Shanghai", "Asia/Singapore", "Asia/Tokyo", "Australia/Melbourne", "Australia/Sydney",
	"Europe/Amsterdam", "Europe/Berlin", "Europe/Dublin", "Europe/Helsinki", "Europe/Istanbul", "Europe/London", "Europe/Madrid",
	"Europe/Moscow", "Europe/Paris", "Europe/Stockholm", "Europe/Warsaw", "Europe/Zurich", "Pacific/Auckland"}

type wizardData struct {
	ProjectTab
	Step   int
	Steps  []int
	Titles map[int]string
	Z      wizard
	Conns  []appconn.Connection
	Envs   []secrets.Environment
	Zones  []string
	// Field is the form field the error is about.
	Field string
}

func (h *Handler) rotationWizardStart(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	z := wizard{Interval: "30", RotateAt: "00:00", TimeZone: "UTC", Auto: true, Env: q.Get("env"), Path: q.Get("path"),
		UsernameSecret: "PGUSER", PasswordSecret: "PGPASSWORD"}
	if z.Path == "" {
		z.Path = "/"
	}
	h.renderWizard(w, r, http.StatusOK, stepBehaviour, z, "", "")
}

// readWizard reads the answers of a wizard form; the step's own checkbox
// counts on the step that shows it.
func readWizard(r *http.Request) wizard {
	v := func(k string) string { return strings.TrimSpace(r.PostFormValue(k)) }
	z := wizard{Connection: v("connection"), Interval: v("interval"), RotateAt: v("rotateAt"), TimeZone: v("timeZone"),
		Username1: v("username1"), Username2: v("username2"), Env: v("env"), Path: v("path"),
		UsernameSecret: v("usernameSecret"), PasswordSecret: v("passwordSecret"), Name: v("name"), Description: v("description")}
	if v("step") == strconv.Itoa(stepBehaviour) {
		z.Auto = r.PostFormValue("autoRotation") == "on"
	} else {
		z.Auto = r.PostFormValue("auto") == "true"
	}
	return z
}

// wizardAdmin refuses the wizard's posts to anyone but the project's
// admins before any step is checked (a check logs in to the database).
func (h *Handler) wizardAdmin(w http.ResponseWriter, r *http.Request) bool {
	tab, ok := h.project(w, r, "rotations")
	if !ok {
		return false
	}
	if !tab.Admin {
		h.errorPage(w, r, http.StatusForbidden, "Only the project's admins add secret rotations.")
		return false
	}
	return true
}

func (h *Handler) rotationWizardStep(w http.ResponseWriter, r *http.Request) {
	if !h.wizardAdmin(w, r) {
		return
	}
	z := readWizard(r)
	step, err := strconv.Atoi(r.PostFormValue("step"))
	if err != nil || step < stepBehaviour || step > stepReview {
		step = stepBehaviour
	}
	if r.PostFormValue("go") == "back" {
		if step > stepBehaviour {
			step--
		}
		h.renderWizard(w, r, http.StatusOK, step, z, "", "")
		return
	}
	if field, msg := h.checkStep(r, step, &z); msg != "" {
		h.renderWizard(w, r, http.StatusUnprocessableEntity, step, z, field, msg)
		return
	}
	if step < stepReview {
		step++
	}
	h.renderWizard(w, r, http.StatusOK, step, z, "", "")
}

var (
	hhmmRE = regexp.MustCompile(`^([01][0-9]|2[0-3]):[0-5][0-9]$`)
	slugRE = regexp.MustCompile(`^[a-z0-9]+(-[a-z0-9]+)*$`)
	keyRE  = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_.-]{0,127}$`)
)

// checkStep checks a step's answers and returns the field at fault and
// what to do; the service checks everything again when the rotation is
// created.
func (h *Handler) checkStep(r *http.Request, step int, z *wizard) (string, string) {
	ctx := r.Context()
	pid := r.PathValue("pid")
	switch step {
	case stepBehaviour:
		if z.Connection == "" {
			return "connection", "PostgreSQL Connection: pick the app connection that changes the users' passwords (add one on the App Connections tab)."
		}
		if _, err := h.sec.conns.Resolve(ctx, pid, z.Connection); err != nil {
			return "connection", "PostgreSQL Connection: the project has no app connection of that name."
		}
		if n, err := strconv.Atoi(z.Interval); err != nil || n < 1 || n > 365 {
			return "interval", "Rotation Interval: give a number of days from 1 to 365."
		}
		if !hhmmRE.MatchString(z.RotateAt) {
			return "rotateAt", "Rotate At: give a time of day as HH:MM (24-hour), such as 02:00."
		}
		if z.TimeZone == "" || strings.HasPrefix(z.TimeZone, "Local") {
			return "timeZone", "Time zone: pick a time zone such as UTC or Europe/Berlin."
		}
		if _, err := time.LoadLocation(z.TimeZone); err != nil {
			return "timeZone", "Time zone: unknown time zone; pick one from the list."
		}
	case stepUsers:
		if z.Username1 == "" || z.Username2 == "" {
			return "username1", "Database Username 1 and 2: give both database users."
		}
		if z.Username1 == z.Username2 {
			return "username2", "Database Username 2: give a different user than username 1; the two users take turns."
		}
		conn, err := h.sec.conns.Resolve(ctx, pid, z.Connection)
		if err != nil {
			return "username1", "PostgreSQL Connection: the project has no app connection of that name; go back to step 1."
		}
		if err := h.sec.conns.CheckRoles(ctx, conn, z.Username1, z.Username2); err != nil {
			_, msg := userError(ctx, err)
			return "username1", "Database usernames: " + msg
		}
	case stepMapping:
		path, err := secrets.CleanPath("web.wizard", "path", z.Path)
		if err != nil {
			_, msg := userError(ctx, err)
			return "path", "Path: " + msg
		}
		z.Path = path
		list, err := h.sec.secrets.List(ctx, pid, secrets.Place{Environment: z.Env, Path: path})
		if err != nil {
			_, msg := userError(ctx, err)
			return "path", "Environment and path: " + msg
		}
		for _, f := range []struct{ field, label, name string }{{"usernameSecret", "Username", z.UsernameSecret}, {"passwordSecret", "Password", z.PasswordSecret}} {
			if !keyRE.MatchString(f.name) {
				return f.field, f.label + " secret: a secret name starts with a letter or _ and holds up to 128 letters, digits, _ . or -."
			}
			for _, s := range list {
				if s.Name == f.name {
					return f.field, f.label + " secret: " + f.name + " is already in use in " + z.Env + ":" + path + "; map to a name that is free."
				}
			}
		}
		if z.UsernameSecret == z.PasswordSecret {
			return "passwordSecret", "Password secret: give a different name than the username secret."
		}
		owned := h.owners(r, pid, secrets.Place{Environment: z.Env, Path: path})
		for _, n := range []string{z.UsernameSecret, z.PasswordSecret} {
			if owned[n] != "" {
				return "usernameSecret", "Secrets: " + n + " is already mapped by secret rotation " + owned[n] + "; map to names that are free."
			}
		}
	case stepDetails:
		if !slugRE.MatchString(z.Name) || len(z.Name) > 64 {
			return "name", "Name: a slug of lower-case letters and digits separated by single hyphens, up to 64, such as orders-db-credentials."
		}
		if len(z.Description) > 256 {
			return "description", "Description: at most 256 characters."
		}
	}
	return "", ""
}

func (h *Handler) renderWizard(w http.ResponseWriter, r *http.Request, status, step int, z wizard, field, msg string) {
	tab, ok := h.project(w, r, "rotations")
	if !ok {
		return
	}
	if !tab.Admin {
		h.errorPage(w, r, http.StatusForbidden, "Only the project's admins add secret rotations.")
		return
	}
	ctx := r.Context()
	d := wizardData{ProjectTab: tab, Step: step, Steps: []int{1, 2, 3, 4, 5}, Titles: stepTitles, Z: z, Field: field, Zones: timeZones}
	known := false
	for _, tz := range timeZones {
		known = known || tz == z.TimeZone
	}
	if !known && z.TimeZone != "" {
		d.Zones = append([]string{z.TimeZone}, timeZones...)
	}
	var err error
	if d.Conns, err = h.sec.conns.List(ctx, tab.Project.ID); err != nil {
		h.fail(w, r, err)
		return
	}
	if d.Envs, err = h.sec.secrets.Environments(ctx, tab.Project.ID); err != nil {
		h.fail(w, r, err)
		return
	}
	if d.Z.Env == "" && len(d.Envs) > 0 {
		d.Z.Env = d.Envs[0].Slug
	}
	h.render(w, r, status, "secretrotation_new", view{Title: "Add Secret Rotation: PostgreSQL Credentials", Nav: "projects", Error: msg, Data: d})
}

// rotationCreate creates the reviewed rotation; a refusal is shown on the
// review page and nothing is saved.
func (h *Handler) rotationCreate(w http.ResponseWriter, r *http.Request) {
	if !h.wizardAdmin(w, r) {
		return
	}
	z := readWizard(r)
	for step := stepBehaviour; step < stepReview; step++ {
		if field, msg := h.checkStep(r, step, &z); msg != "" {
			h.renderWizard(w, r, http.StatusUnprocessableEntity, step, z, field, msg)
			return
		}
	}
	interval, _ := strconv.Atoi(z.Interval)
	rot, err := h.sec.rotations.Create(r.Context(), secretrotation.CreateInput{
		Name: z.Name, Description: z.Description, ProjectID: r.PathValue("pid"), Connection: z.Connection, Environment: z.Env, SecretPath: z.Path,
		RotationInterval: interval, RotateAt: z.RotateAt, TimeZone: z.TimeZone, AutoRotation: z.Auto,
		Parameters:     secretrotation.Parameters{Username1: z.Username1, Username2: z.Username2},
		SecretsMapping: secretrotation.SecretsMapping{Username: z.UsernameSecret, Password: z.PasswordSecret},
	})
	if err != nil {
		status, msg := userError(r.Context(), err)
		h.renderWizard(w, r, status, stepReview, z, "", msg)
		return
	}
	http.Redirect(w, r, "/projects/"+rot.ProjectID+"/secret-rotations?done=rotation-created", http.StatusSeeOther)
}
