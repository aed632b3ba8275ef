package gateway

import (
	"io/fs"
	"net/http"

	"github.com/gin-gonic/gin"

	"github.com/usher-presence/usher/web/static"
)

// mountStatic serves the embedded web files at /.
func mountStatic(r *gin.Engine) {
	files := http.FileServer(http.FS(static.FS))
	serve := func(c *gin.Context) { files.ServeHTTP(c.Writer, c.Request) }
	r.GET("/", serve)
	_ = fs.WalkDir(static.FS, ".", func(path string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() && path != "index.html" {
			r.GET("/"+path, serve)
		}
		return nil
	})
}
