package gateway

import (
	"io/fs"
	"net/http"

	"github.com/gin-gonic/gin"

	"github.com/usher-presence/usher/web/static"
)

// mountStatic serves the embedded web files at /. No other site may frame them: the console holds a token that
// grants channels, and a page that overlaid it could steer a user's clicks (frame-ancestors cannot be set by the
// page's own meta tag; X-Frame-Options is for browsers that predate it).
func mountStatic(r *gin.Engine) {
	files := http.FileServer(http.FS(static.FS))
	serve := func(c *gin.Context) {
		h := c.Writer.Header()
		h.Set("Content-Security-Policy", "frame-ancestors 'none'")
		h.Set("X-Frame-Options", "DENY")
		h.Set("Referrer-Policy", "no-referrer")
		files.ServeHTTP(c.Writer, c.Request)
	}
	r.GET("/", serve)
	_ = fs.WalkDir(static.FS, ".", func(path string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() && path != "index.html" {
			r.GET("/"+path, serve)
		}
		return nil
	})
}
