// Package static holds the browser files Usher serves at /, embedded in the binary so it runs with no internet and
// no build step.
package static

import "embed"

// FS holds the files of this directory that are served.
//
//go:embed index.html console.css console.js favicon.svg usher.js
var FS embed.FS
