package web

import (
	"bytes"
	"embed"
	"fmt"
	"html/template"
	"io/fs"
	"log/slog"
	"net/http"
	"path"
	"strings"
	"time"

	"github.com/airlockpam/airlock/internal/api"
)

//go:embed templates/*.html
var templateFS embed.FS

//go:embed static
var staticFS embed.FS

// contentSecurityPolicy allows this site's own script, style and images
// and nothing else: no inline script or style, no framing, forms only to
// this site.
const contentSecurityPolicy = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; " +
	"connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"

// securityHeaders sets the headers every UI response carries.
func securityHeaders(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hd := w.Header()
		hd.Set("Content-Security-Policy", contentSecurityPolicy)
		hd.Set("X-Content-Type-Options", "nosniff")
		hd.Set("X-Frame-Options", "DENY")
		hd.Set("Referrer-Policy", "same-origin")
		hd.Set("Cross-Origin-Opener-Policy", "same-origin")
		if !strings.HasPrefix(r.URL.Path, "/static/") {
			hd.Set("Cache-Control", "no-store")
		}
		next.ServeHTTP(w, r)
	})
}

// pages holds one template set per page, each with the layout.
type pages struct {
	t map[string]*template.Template
}

var funcs = template.FuncMap{
	"when": func(t any) string {
		switch v := t.(type) {
		case time.Time:
			if v.IsZero() {
				return ""
			}
			return v.UTC().Format("2006-01-02 15:04:05 UTC")
		case *time.Time:
			if v == nil || v.IsZero() {
				return ""
			}
			return v.UTC().Format("2006-01-02 15:04:05 UTC")
		}
		return ""
	},
	"micros": func(us int64) string { return (time.Duration(us) * time.Microsecond).String() },
	"join":   strings.Join,
	"words":  func(s string) string { return strings.Join(strings.Fields(s), " ") },
	"reason": func(s string) string { return strings.ReplaceAll(s, "_", " ") },
}

func parsePages() (*pages, error) {
	names, err := fs.Glob(templateFS, "templates/*.html")
	if err != nil {
		return nil, err
	}
	p := &pages{t: map[string]*template.Template{}}
	for _, n := range names {
		base := path.Base(n)
		if base == "layout.html" {
			continue
		}
		t, err := template.New("layout.html").Funcs(funcs).ParseFS(templateFS, "templates/layout.html", n)
		if err != nil {
			return nil, fmt.Errorf("web: parsing %s: %w", n, err)
		}
		p.t[strings.TrimSuffix(base, ".html")] = t
	}
	return p, nil
}

// view is what the layout shows around a page.
type view struct {
	Title   string
	Nav     string // the active navigation item
	User    *api.Principal
	CSRF    string
	Version string
	Notice  string
	Error   string
	Data    any
}

// render writes page name with status.
func (h *Handler) render(w http.ResponseWriter, r *http.Request, status int, name string, v view) {
	if ri := infoFrom(r.Context()); ri != nil {
		v.User, v.CSRF = ri.p, ri.ws.csrf
	}
	v.Version = h.cfg.Version
	if v.Notice == "" {
		v.Notice = notices[r.URL.Query().Get("done")]
	}
	t := h.pages.t[name]
	var buf bytes.Buffer
	if t == nil {
		slog.ErrorContext(r.Context(), "web: no such page template", "page", name)
		http.Error(w, "internal error", http.StatusInternalServerError)
		return
	}
	if err := t.Execute(&buf, v); err != nil {
		slog.ErrorContext(r.Context(), "web: rendering a page failed", "page", name, "err", err)
		http.Error(w, "internal error", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.WriteHeader(status)
	_, _ = w.Write(buf.Bytes())
}

// notices are the fixed words shown after a form succeeded (?done=...);
// they never carry input.
var notices = map[string]string{
	"project-created":  "The project was created.",
	"resource-created": "The resource was added.",
	"resource-deleted": "The resource, its accounts and its live sessions are gone.",
	"account-created":  "The account was added: its password was checked through the gateway and sealed.",
	"account-deleted":  "The account was deleted.",
	"resource-saved":   "The resource was saved.",
	"rotation-saved":   "The rotation schedule was saved.",
	"rotated":          "The password was rotated: the new one was set through the gateway, logged in with, and sealed. Nobody has seen it.",
	"metadata-saved":   "The metadata was saved.",
	"member-saved":     "The member was saved.",
	"member-removed":   "The member was removed.",
	"terminated":       "The session was terminated.",
	"logged-out":       "You are signed out.",
	"gateway-deleted":  "The gateway was deleted; sessions through it ended.",
	"machine-deleted":  "The machine identity was deleted; its tokens are revoked.",
	"settings-saved":   "The project's settings were saved.",
	"mfa-disabled":     "The method is turned off.",
	"passkey-removed":  "The passkey was removed.",
	"passkey-added":    "The passkey was added.",
}

// errorPage writes an HTML error page.
func (h *Handler) errorPage(w http.ResponseWriter, r *http.Request, status int, msg string) {
	h.render(w, r, status, "error", view{Title: http.StatusText(status), Error: msg})
}

// fail shows a domain error as an error page.
func (h *Handler) fail(w http.ResponseWriter, r *http.Request, err error) {
	status, msg := userError(r.Context(), err)
	h.errorPage(w, r, status, msg)
}

// static serves the embedded script and style sheet.
func (h *Handler) static() http.Handler {
	sub, err := fs.Sub(staticFS, "static")
	if err != nil {
		panic(err)
	}
	fsrv := http.StripPrefix("/static/", http.FileServerFS(sub))
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "public, max-age=3600")
		fsrv.ServeHTTP(w, r)
	})
}
