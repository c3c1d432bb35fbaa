package edge

import (
	"embed"
	"io/fs"
	"net/http"
)

//go:embed demo
var demoFiles embed.FS

// demoHandler serves the demo page (chat + who's online) and the bundled
// copy of realtime-js it loads, so a node needs nothing else to show it.
func demoHandler() http.Handler {
	sub, err := fs.Sub(demoFiles, "demo")
	if err != nil {
		panic(err) // the embedded tree is fixed at build time
	}
	return http.FileServerFS(sub)
}
