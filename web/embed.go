// Package web holds Mote's browser console: an npm project (package.json,
// index.html, src/) whose build output, dist/, is committed and embedded
// in the binary, so building Mote needs no npm. Rebuild dist/ after
// changing the sources with `make web` (npm ci && npm run build).
package web

import "embed"

// Dist is the built console: dist/index.html and dist/assets/.
//
//go:embed all:dist
var Dist embed.FS
