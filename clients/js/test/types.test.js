// The hand-written types (src/presenced.d.ts) against the implementation:
// the same exports, and tsc --strict accepts test/types-check.ts.
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { readFile } from "node:fs/promises";
import { createRequire } from "node:module";
import { test } from "node:test";
import { promisify } from "node:util";

const dir = new URL("..", import.meta.url);

test("the .d.ts declares exactly the module's exports", async () => {
  const dts = await readFile(new URL("src/presenced.d.ts", dir), "utf8");
  const declared = [...dts.matchAll(/^export (?:declare )?(?:class|function|const) (\w+)/gm)].map((m) => m[1]).sort();
  const actual = Object.keys(await import("../src/presenced.js")).sort();
  assert.deepEqual(declared, actual);
});

// Each tsconfig compiles one file: types-check.ts without the DOM library
// and without node's types (the SDK must need neither), types-env-check.ts
// with the DOM library and @types/ws (both WebSocket constructors fit).
for (const config of ["tsconfig.nodom.json", "tsconfig.env.json"]) {
  test(`tsc --strict -p test/${config}`, async () => {
    const tsc = createRequire(import.meta.url).resolve("typescript/bin/tsc");
    try {
      await promisify(execFile)(process.execPath, [tsc, "-p", `test/${config}`], { cwd: dir });
    } catch (e) {
      assert.fail(`tsc failed:\n${e.stdout}${e.stderr}`);
    }
  });
}
