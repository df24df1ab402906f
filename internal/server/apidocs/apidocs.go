// Package apidocs serves the API documentation page (/api/docs) from files
// embedded in the binary: a small HTML page and a pinned copy of the ReDoc
// viewer (see README.md for its version, license and hash). The page loads
// nothing from other hosts; its Content-Security-Policy says so to the
// browser too.
package apidocs

import (
	"crypto/sha256"
	_ "embed"
	"encoding/hex"
	"fmt"
	"html"
	"net/http"
)

// ViewerVersion is the vendored ReDoc version.
const ViewerVersion = "2.5.0"

// ViewerSHA256 is the SHA-256 of the vendored redoc.standalone.js.
const ViewerSHA256 = "0ec05be285ac885a330289b02f470e1bdbd2b6b3223a9fa213f24bf805a851d1"

//go:embed redoc.standalone.js
var viewer []byte

// ViewerHash returns the SHA-256 of the embedded viewer, in hex.
func ViewerHash() string { s := sha256.Sum256(viewer); return hex.EncodeToString(s[:]) }

const page = `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Airlock API</title>
</head>
<body>
<redoc spec-url="%s"></redoc>
<script src="%s"></script>
</body>
</html>
`

// csp allows the page only its own scripts and the API document; ReDoc
// styles itself inline and runs its search in a blob: worker.
const csp = "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; " +
	"font-src 'self' data:; connect-src 'self'; worker-src 'self' blob:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"

// Register serves the page at docsPath and the viewer at
// docsPath+"/redoc.standalone.js"; specPath is the OpenAPI JSON document.
func Register(mux *http.ServeMux, docsPath, specPath string) {
	script := docsPath + "/redoc.standalone.js"
	body := []byte(fmt.Sprintf(page, html.EscapeString(specPath), html.EscapeString(script)))
	mux.HandleFunc("GET "+docsPath, func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		w.Header().Set("Content-Security-Policy", csp)
		w.Header().Set("X-Content-Type-Options", "nosniff")
		_, _ = w.Write(body)
	})
	mux.HandleFunc("GET "+script, func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/javascript; charset=utf-8")
		w.Header().Set("Cache-Control", "public, max-age=86400")
		w.Header().Set("X-Content-Type-Options", "nosniff")
		_, _ = w.Write(viewer)
	})
}
