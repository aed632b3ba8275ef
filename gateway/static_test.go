package gateway_test

import (
	"io"
	"net/http"
	"strings"
	"testing"
)

// The console and the files it loads refuse to be framed by another site (clickjacking: the console holds a token
// that grants channels), and no response lets a browser guess a type other than the one served.
func TestStaticFilesRefuseFraming(t *testing.T) {
	t.Parallel()
	_, base := startGateway(t, testConfig(t, t.TempDir()))
	for _, tc := range []struct{ path, contentType string }{
		{"/", "text/html"},
		{"/usher.js", "text/javascript"},
		{"/console.js", "text/javascript"},
		{"/console.css", "text/css"},
	} {
		resp, err := http.Get(base + tc.path)
		if err != nil {
			t.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		h := resp.Header
		if resp.StatusCode != 200 || !strings.HasPrefix(h.Get("Content-Type"), tc.contentType) {
			t.Errorf("GET %s: %d %q, want 200 %s", tc.path, resp.StatusCode, h.Get("Content-Type"), tc.contentType)
		}
		if h.Get("Content-Security-Policy") != "frame-ancestors 'none'" || h.Get("X-Frame-Options") != "DENY" {
			t.Errorf("GET %s: Content-Security-Policy %q, X-Frame-Options %q: want framing refused", tc.path,
				h.Get("Content-Security-Policy"), h.Get("X-Frame-Options"))
		}
		if h.Get("X-Content-Type-Options") != "nosniff" || h.Get("Referrer-Policy") != "no-referrer" {
			t.Errorf("GET %s: X-Content-Type-Options %q, Referrer-Policy %q", tc.path, h.Get("X-Content-Type-Options"), h.Get("Referrer-Policy"))
		}
	}
	for _, path := range []string{"/v1/channels", "/no/such/path"} {
		resp, err := http.Get(base + path)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode < 400 || resp.Header.Get("X-Content-Type-Options") != "nosniff" {
			t.Errorf("GET %s: %d, X-Content-Type-Options %q: want an error marked nosniff", path, resp.StatusCode, resp.Header.Get("X-Content-Type-Options"))
		}
	}
}
