package edge

import (
	"embed"
	"io/fs"
	"net/http"
)

//go:embed demo
var demoFiles embed.FS

// clientJSPath is where every node serves the clientjs bundle.
const clientJSPath = "/clientjs/meshcast.js"

// demoTablePath is where Config.DemoTable is served.
const demoTablePath = "/demo/todos"

// demoHandler serves the demo page (chat, who's online, live cursors, a
// live table of Postgres changes), which runs on clientjs, so a node needs
// nothing else to show it.
func demoHandler() http.Handler {
	sub, err := fs.Sub(demoFiles, "demo")
	if err != nil {
		panic(err) // the embedded tree is fixed at build time
	}
	return http.FileServerFS(sub)
}

// serveClientJS serves the clientjs bundle (clientjs/, `npm run build`):
// pages on any origin may import it.
func serveClientJS(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Access-Control-Allow-Origin", "*")
	w.Header().Set("Content-Type", "text/javascript; charset=utf-8")
	http.ServeFileFS(w, r, demoFiles, "demo/meshcast.js")
}
