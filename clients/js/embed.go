// Package js holds the JavaScript SDK of presenced (src/presenced.js, an
// ES module with its types in src/presenced.d.ts; docs/js.md) and embeds
// its source, so that the server's demo page serves the SDK it was built
// with. The Go side is only the embedding; the SDK is tested with node
// (make test runs npm test in this directory).
package js

import _ "embed"

// Source is src/presenced.js, the SDK as an ES module.
//
//go:embed src/presenced.js
var Source []byte
