package web

import (
	"encoding/json"
	"net/http"
	"strings"
)

// APIFallback answers the requests under /api/ that no operation takes,
// as application/problem+json: 405 with an Allow header when the path
// exists with other methods, else 404. Register it on mux for "/api/".
// The problem names neither the path nor the method (no input is echoed).
func APIFallback(mux *http.ServeMux) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if allow := allowed(mux, r); len(allow) > 0 {
			w.Header().Set("Allow", strings.Join(allow, ", "))
			writeProblem(w, http.StatusMethodNotAllowed, "this operation does not take that method; the Allow header lists those it takes (see /api/docs)")
			return
		}
		writeProblem(w, http.StatusNotFound, "no API operation at this path; /api/docs lists them")
	})
}

var probeMethods = []string{http.MethodGet, http.MethodHead, http.MethodPost, http.MethodPut, http.MethodPatch, http.MethodDelete}

// allowed returns the methods other than r's that a handler of mux takes
// at r's path, not counting the catch-alls "/" and "/api/".
func allowed(mux *http.ServeMux, r *http.Request) []string {
	var allow []string
	for _, m := range probeMethods {
		if m == r.Method {
			continue
		}
		probe := r.Clone(r.Context())
		probe.Method = m
		if _, pattern := mux.Handler(probe); pattern != "" && pattern != "/api/" && pattern != "/" {
			allow = append(allow, m)
		}
	}
	return allow
}

func writeProblem(w http.ResponseWriter, status int, detail string) {
	w.Header().Set("Content-Type", "application/problem+json")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(map[string]any{"title": http.StatusText(status), "status": status, "detail": detail})
}
