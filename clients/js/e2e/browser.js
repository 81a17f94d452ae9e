// Browser harness of the end-to-end tests: Debian's chromium driven by
// playwright-core, one browser context per user on the demo page of a real
// presenced (../test/presenced.js), a record of what each page shows with
// the page's own clock, screenshots in .cache/e2e/<test>/<step>-<user>.png.
// Not a test file itself (npm run test:e2e runs e2e/*.test.js, one file at
// a time). CHROMIUM_BIN overrides /usr/bin/chromium.

import { mkdirSync, rmSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { chromium } from "playwright-core";
import { startPresenced } from "../test/presenced.js";

const repo = fileURLToPath(new URL("../../..", import.meta.url));

/** Screenshots of every step, kept as artifacts (not committed). */
export const shotsDir = `${repo}.cache/e2e`;

/**
 * Debian's chromium, headless, with the flags that keep it off the network
 * (../shared/field-notes.md). launch() gives it a fresh --user-data-dir.
 */
export function launchChromium() {
  return chromium.launch({
    executablePath: process.env.CHROMIUM_BIN || "/usr/bin/chromium",
    headless: true,
    args: [
      "--no-sandbox",
      "--disable-gpu",
      "--disable-quic",
      "--no-first-run",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
    ],
  });
}

const servers = new Set();
process.on("exit", () => {
  for (const srv of servers) if (srv.proc && srv.proc.exitCode === null) srv.proc.kill("SIGKILL");
});

/**
 * Starts presenced with -insecure -demo and args on free ports; a server
 * not stopped by the test is killed when the test process exits.
 */
export async function startDemoServer(args = []) {
  const srv = await startPresenced(["-insecure", "-demo", ...args]);
  servers.add(srv);
  return srv;
}

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/**
 * Calls fn until it returns a truthy value without throwing, every interval
 * ms, for at most timeout ms; returns that value or throws the last error.
 */
export async function eventually(fn, { timeout = 10000, interval = 50, what = "condition" } = {}) {
  const deadline = Date.now() + timeout;
  let last;
  for (;;) {
    try {
      const v = await fn();
      if (v) return v;
      last = undefined;
    } catch (err) {
      last = err;
    }
    if (Date.now() > deadline) {
      const why = last ? `: ${last.message}` : "";
      throw new Error(`${what}: not true within ${timeout} ms${why}`, { cause: last });
    }
    await sleep(interval);
  }
}

// Runs in the page before its own scripts: after every DOM change, the
// state of the test hooks (members with their status, the typing line, the
// connection badge) is appended to window.__e2e.log when it differs from
// the last entry, stamped with Date.now(). The machine's clock is the
// test's, so times measured here compare with Date.now() in node without
// the delay of polling from outside. Keystrokes are stamped too.
function recorder() {
  const rec = { log: [], lastKey: 0 };
  window.__e2e = rec;
  let last = "";
  const snap = () => {
    const badge = document.querySelector('[data-testid="connection"]');
    const typing = document.querySelector('[data-testid="typing"]');
    const s = {
      members: [...document.querySelectorAll('[data-testid="member"]')].map((m) => ({
        user: m.getAttribute("data-user"),
        status: m.getAttribute("data-status"),
      })),
      typing: typing ? typing.textContent.replace(/\s+/g, " ").trim() : "",
      conn: badge ? badge.getAttribute("data-state") : "",
    };
    const key = JSON.stringify(s);
    if (key !== last) {
      last = key;
      rec.log.push({ t: Date.now(), ...s });
    }
  };
  new MutationObserver(snap).observe(document, { subtree: true, childList: true, attributes: true, characterData: true });
  document.addEventListener("keydown", () => (rec.lastKey = Date.now()), true);
}

/**
 * Opens the demo page of srv for user in a new browser context. With room,
 * the page joins at once through ?user=&room=; without, it is left at the
 * form (see join). Every page error and console error is kept for reports.
 */
export async function openUser(browser, srv, user, room, testName) {
  const context = await browser.newContext({ viewport: { width: 900, height: 700 } });
  await context.addInitScript(recorder);
  const page = await context.newPage();
  const u = {
    user,
    context,
    page,
    errors: [],
    console: [],
    closed: false,
    /** The page's record of what it showed, oldest first. */
    log: () => page.evaluate(() => window.__e2e.log),
    lastKey: () => page.evaluate(() => window.__e2e.lastKey),
    /** The latest state the page showed. */
    async now() {
      const log = await u.log();
      return log[log.length - 1] || { t: 0, members: [], typing: "", conn: "" };
    },
    /** The first entry at or after since (ms) for which pred holds, waited for up to timeout. */
    when(pred, { since = 0, timeout = 10000, what = `${user}'s page` } = {}) {
      return eventually(async () => (await u.log()).find((e) => e.t >= since && pred(e)), { timeout, what });
    },
    async shot(step) {
      const dir = `${shotsDir}/${testName}`;
      mkdirSync(dir, { recursive: true });
      await page.screenshot({ path: `${dir}/${step}-${user}.png`, fullPage: true });
    },
    async close() {
      if (u.closed) return;
      u.closed = true;
      await context.close();
    },
  };
  page.on("pageerror", (err) => u.errors.push(String(err && err.stack ? err.stack : err)));
  page.on("console", (m) => {
    if (m.type() === "error" || m.type() === "warning") u.console.push(`${m.type()}: ${m.text()}`);
  });
  const q = room ? `?user=${encodeURIComponent(user)}&room=${encodeURIComponent(room)}` : "";
  await page.goto(`${srv.origin}/demo${q}`);
  return u;
}

/** Fills the name and room fields and clicks join; returns Date.now() just before the click. */
export async function join(u, room) {
  await u.page.getByTestId("name").fill(u.user);
  await u.page.getByTestId("room").fill(room);
  const t = Date.now();
  await u.page.getByTestId("join").click();
  return t;
}

/** The users of a log entry's member rows, sorted, duplicates kept. */
export const usersOf = (e) => e.members.map((m) => m.user).sort();

/** Whether an entry shows exactly the users (each in one row). */
export const showsExactly = (e, users) => JSON.stringify(usersOf(e)) === JSON.stringify([...users].sort());

/** Removes the screenshots of an earlier run of testName. */
export function freshShots(testName) {
  rmSync(`${shotsDir}/${testName}`, { recursive: true, force: true });
}

/**
 * What a failed test should say: each page's last state, its errors, and
 * the tail of the server's log.
 */
export async function report(users, srv) {
  const parts = [];
  for (const u of users) {
    let state = "(closed)";
    if (!u.closed) state = JSON.stringify(await u.now().catch((e) => `(${e.message})`));
    parts.push(`${u.user}: ${state}`);
    if (u.errors.length) parts.push(`${u.user} page errors:\n  ${u.errors.join("\n  ")}`);
    if (u.console.length) parts.push(`${u.user} console:\n  ${u.console.slice(-10).join("\n  ")}`);
  }
  if (srv) parts.push(`presenced log (tail):\n${srv.log.slice(-3000)}`);
  return parts.join("\n");
}

/**
 * Runs body with the users it opens and closes them all after, whatever
 * happens. An uncaught error in a page fails it too. A failure is rethrown
 * with report() appended, after a screenshot of each open page (step
 * "failed").
 */
export async function withUsers(srv, body) {
  const users = [];
  try {
    await body(users);
    const errors = users.flatMap((u) => u.errors.map((e) => `${u.user}: ${e}`));
    if (errors.length) throw new Error(`uncaught errors in the pages:\n${errors.join("\n")}`);
  } catch (err) {
    for (const u of users) if (!u.closed) await u.shot("failed").catch(() => {});
    err.message += `\n${await report(users, srv)}`;
    throw err;
  } finally {
    for (const u of users) await u.close().catch(() => {});
  }
}
