// Prints the SDK's size as an application bundles it: minified with terser
// (module, compress, mangle) and gzipped at level 9. With --max=BYTES it
// exits 1 when the gzipped size is above BYTES.
import { readFile } from "node:fs/promises";
import { gzipSync } from "node:zlib";
import { minify } from "terser";

const src = await readFile(new URL("../src/presenced.js", import.meta.url), "utf8");
const { code } = await minify(src, { module: true, compress: { passes: 2 }, mangle: true });
const gz = gzipSync(code, { level: 9 }).length;
console.log(`presenced.js: ${src.length} B source, ${code.length} B minified, ${gz} B minified+gzip`);
const max = process.argv.find((a) => a.startsWith("--max="));
if (max && gz > +max.slice(6)) {
  console.error(`size: ${gz} B minified+gzip is above the budget of ${max.slice(6)} B`);
  process.exit(1);
}
