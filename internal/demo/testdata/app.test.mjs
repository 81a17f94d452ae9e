// Unit tests of the demo page's script (static/app.js), run by
// TestAppScript (demo_test.go) with node --test: app.js runs against a
// minimal fake DOM and a fake SDK that record what the page does. The
// browser tests (clients/js/e2e) drive the real page.
import { test } from "node:test";
import assert from "node:assert/strict";
import { copyFileSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";

const dir = mkdtempSync(join(tmpdir(), "presenced-demo-"));
copyFileSync(fileURLToPath(new URL("../static/app.js", import.meta.url)), join(dir, "app.js"));
writeFileSync(join(dir, "presenced.js", ), `
const rec = () => globalThis.demoRec;
export class Client {
  constructor(opts) { this.opts = opts; this.handlers = {}; this.welcome = { user: opts.user ?? "tok" }; this.sets = []; rec().clients.push(this); }
  on(ev, fn) { (this.handlers[ev] ??= []).push(fn); return () => {}; }
  emit(ev, arg) { for (const fn of this.handlers[ev] ?? []) fn(arg); }
  async connect() {}
  async join(room) { this.joined = room; }
  async leave() {}
  set(room, state) { this.sets.push(state); return new Promise((resolve) => { this.answer = resolve; }); }
  room() { return null; }
  ping() { return new Promise(() => {}); }
  async close() {}
}
export function typingHelper(client, room) {
  const h = { room, stops: 0, stop() { h.stops++; }, keystroke() {}, sent() {} };
  rec().typing.push(h);
  return h;
}
export function autoAway() { return { stop() {} }; }
`);
process.on("exit", () => rmSync(dir, { recursive: true, force: true }));

function element(id) {
  const el = {
    id, dataset: {}, textContent: "", value: "", hidden: false, style: {}, className: "",
    validity: { valid: true }, listeners: {}, children: [],
    addEventListener(type, fn) { (el.listeners[type] ??= []).push(fn); },
    dispatch(type) { for (const fn of el.listeners[type] ?? []) fn({ preventDefault() {} }); },
    focus() {}, setAttribute() {}, closest() { return { hidden: false }; },
    replaceChildren(...c) { el.children = c; }, append(...c) { el.children.push(...c); },
    prepend(...c) { el.children.unshift(...c); },
  };
  return el;
}

let loads = 0;

// load runs app.js afresh on a page opened with search (?user=…), and
// returns the fake page and what the fake SDK recorded.
async function load(search, { insecure = true } = {}) {
  const els = {};
  const byId = (id) => (els[id] ??= element(id));
  const status = byId("status");
  status.value = "online";
  status.options = [{ value: "online" }, { value: "away" }, { value: "busy" }];
  byId("room").value = "lobby";
  const badge = element("badge");
  const body = element("body");
  body.dataset = { insecure: String(insecure), wsPath: "/ws" };
  globalThis.document = {
    body,
    getElementById: byId,
    querySelector: (sel) => (sel === '[data-testid="connection"]' ? badge : null),
    createElement: (tag) => element(tag),
  };
  globalThis.location = { protocol: "http:", host: "127.0.0.1:1", pathname: "/demo", search };
  globalThis.history = {
    replaceState(_, __, url) { globalThis.location.search = new URL(url, "http://x").search; },
  };
  globalThis.setInterval = () => 1; // no timer keeps the test alive; ticks run once
  globalThis.clearInterval = () => {};
  const rec = { clients: [], typing: [] };
  globalThis.demoRec = rec;
  await import(`${pathToFileURL(join(dir, "app.js"))}?load=${++loads}`);
  await settle();
  return { els: byId, badge, rec };
}

const settle = () => new Promise((resolve) => setImmediate(resolve));

test("a token given in the address is read, then removed from it", async () => {
  const { els } = await load("?token=secret&room=lobby", { insecure: false });
  assert.equal(els("token").value, "secret");
  assert.equal(new URLSearchParams(location.search).get("token"), null, location.search);
  assert.equal(new URLSearchParams(location.search).get("room"), "lobby");
});

test("?user=&room= join and stay in the address", async () => {
  const { rec } = await load("?user=ann&room=lobby");
  assert.equal(rec.clients.length, 1);
  assert.equal(rec.clients[0].joined, "lobby");
  assert.equal(location.search, "?user=ann&room=lobby");
});

test("the live region announces the state, not the countdown", async () => {
  const { els, badge, rec } = await load("?user=ann&room=lobby");
  const c = rec.clients[0];
  c.emit("state", { state: "connecting" });
  assert.equal(badge.dataset.state, "reconnecting");
  assert.equal(badge.textContent, "connecting…");
  c.emit("disconnected", { retryIn: 3000, terminal: false });
  assert.equal(badge.textContent, "reconnecting in 3 s");
  const said = els("conn-live").textContent;
  assert.equal(said, "reconnecting…");
  c.emit("state", { state: "reconnecting", retryIn: 2000 });
  assert.equal(badge.textContent, "reconnecting in 2 s");
  assert.equal(els("conn-live").textContent, said, "the announcement changed with the countdown");
});

test("the status selector follows the user's own status in the room", async () => {
  const { els, rec } = await load("?user=ann&room=lobby");
  const c = rec.clients[0];
  const view = (status) => ({ count: 2, members: [{ user: "ann", status }, { user: "bob", status: "busy" }], typing: [] });
  c.emit("room", { room: "lobby", view: view("away") }); // autoAway
  assert.equal(els("status").value, "away");
  c.emit("room", { room: "lobby", view: view("online") });
  assert.equal(els("status").value, "online");
  els("status").value = "busy"; // picked, not yet answered: an older view does not undo it
  els("status").dispatch("change");
  c.emit("room", { room: "lobby", view: view("online") });
  assert.equal(els("status").value, "busy");
  c.answer();
  await settle();
  c.emit("room", { room: "lobby", view: view("busy") });
  c.emit("room", { room: "lobby", view: view("custom") }); // not in the selector: left alone
  assert.equal(els("status").value, "busy");
});

test("joining the same room again stops the previous typing helper", async () => {
  const { els, rec } = await load("?user=ann&room=lobby");
  assert.equal(rec.typing.length, 1);
  els("join-form").dispatch("submit");
  await settle();
  assert.equal(rec.typing.length, 2);
  assert.equal(rec.typing[0].stops, 1);
  assert.equal(rec.typing[1].stops, 0);
});
