// The typing helper and auto-away, against a scripted peer that records
// the frames they make the client send, and a fake document.

import assert from "node:assert/strict";
import { test } from "node:test";
import { autoAway, typingHelper } from "../src/presenced.js";
import { newClient, viewWhere } from "./clients.js";
import { sleep, startPeer, waitUntil } from "./peer.js";

async function connected(t, rooms = []) {
  const peer = await startPeer({ auto: true });
  t.after(() => peer.close());
  const c = newClient(t, { url: peer.url, user: "alice" });
  await c.client.connect();
  for (const r of rooms) await c.client.join(r);
  return { c, conn: await peer.conn(0) };
}

// The typing frames as the client sent them, timed at the send.
const typingFrames = (c, from = 0) => c.sent.filter((f) => f.t === "typing" && f.at >= from);

test("typing helper: on:true at most once per interval while typing, on:false after idle", async (t) => {
  const { c, conn } = await connected(t);
  const interval = 200;
  const idle = 300;
  const h = typingHelper(c.client, "chat:t", { interval, idle });
  t.after(() => h.stop());
  const start = Date.now();
  let last = start;
  while (Date.now() - start < 1000) {
    h.keystroke();
    last = Date.now();
    await sleep(25);
  }
  await conn.next((f) => f.t === "typing" && f.on === false, { timeout: idle + 2000 });
  const off = typingFrames(c).find((f) => !f.on);
  assert.ok(off.at - last >= idle - 2, `on:false ${off.at - last} ms after the last keystroke, idle is ${idle}`);
  const on = typingFrames(c).filter((f) => f.on);
  assert.ok(on[0].at - start < 1000, "the first keystroke sends at once");
  for (let i = 1; i < on.length; i++) {
    assert.ok(on[i].at - on[i - 1].at >= interval - 2, `on:true ${on[i].at - on[i - 1].at} ms apart, interval ${interval}`);
  }
  assert.ok(on.length >= 2 && on.length <= 1000 / interval + 1, `${on.length} on:true in 1 s of typing`);
  assert.ok(on.every((f) => f.room === "chat:t" && f.id === undefined));
  assert.ok(on.every((f) => f.at <= last), "no on:true after the last keystroke");
  await sleep(idle + 100);
  assert.equal(typingFrames(c).filter((f) => !f.on).length, 1, "one on:false");
  assert.deepEqual(conn.sent("typing").map((f) => f.on), typingFrames(c).map((f) => f.on), "the peer got them all");
});

test("typing helper: sent() says on:false at once, and the next keystroke starts again", async (t) => {
  const { c, conn } = await connected(t);
  const idle = 400;
  const h = typingHelper(c.client, "chat:t", { interval: 300, idle });
  t.after(() => h.stop());
  h.keystroke();
  await conn.next((f) => f.t === "typing" && f.on);
  const sentAt = Date.now();
  h.sent();
  await conn.next((f) => f.t === "typing" && !f.on, { timeout: 2000 });
  const off = typingFrames(c).find((f) => !f.on);
  assert.ok(off.at - sentAt < idle, `on:false ${off.at - sentAt} ms after sent(), before idle`);
  await sleep(idle + 100);
  assert.equal(typingFrames(c).filter((f) => !f.on).length, 1, "no second on:false when idle would have ended");

  const again = Date.now();
  h.keystroke();
  const on2 = typingFrames(c, again).find((f) => f.on);
  assert.ok(on2 && on2.at - again < 300, "a new burst sends on:true without waiting for the interval");
  h.stop();
  assert.deepEqual(typingFrames(c, again).map((f) => f.on), [true, false], "stop() says on:false");
  const n = c.sent.length;
  await sleep(idle + 100);
  assert.equal(c.sent.length, n, "nothing after stop()");
  h.keystroke(); // a keystroke after stop must not throw
});

test("typing helper: keystrokes while disconnected do not throw", async (t) => {
  const peer = await startPeer({ welcome: (conn) => conn.n === 0 });
  t.after(() => peer.close());
  const c = newClient(t, { url: peer.url, user: "alice" });
  await c.client.connect();
  const h = typingHelper(c.client, "chat:t", { interval: 50, idle: 50 });
  t.after(() => h.stop());
  (await peer.conn(0)).kill();
  await c.next("disconnected");
  for (let i = 0; i < 5; i++) {
    h.keystroke();
    await sleep(20);
  }
  h.sent();
  await sleep(100);
});

/** A document with the parts auto-away uses, and the listeners it holds. */
class FakeDocument extends EventTarget {
  hidden = false;
  visibilityState = "visible";
  listeners = new Set();
  addEventListener(type, fn, opts) {
    this.listeners.add(type);
    super.addEventListener(type, fn, opts);
  }
  removeEventListener(type, fn, opts) {
    this.listeners.delete(type);
    super.removeEventListener(type, fn, opts);
  }
  setHidden(hidden) {
    this.hidden = hidden;
    this.visibilityState = hidden ? "hidden" : "visible";
    this.dispatchEvent(new Event("visibilitychange"));
  }
}

// The sets the client sent from index mark of its sent messages on (marks
// are indexes, not times: a send and Date.now() may share a millisecond).
const setsAfter = (c, mark) => c.sent.slice(mark).filter((f) => f.t === "set");
const statuses = (sets) => sets.map((f) => `${f.room}=${f.state.status}`).sort();

test("auto-away: away after `after` ms without activity, online on activity", async (t) => {
  const { c } = await connected(t, ["a:room", "b:room"]);
  const doc = new FakeDocument();
  const start = c.sent.length;
  const startAt = Date.now();
  const after = 500;
  const aa = autoAway(c.client, { after, document: doc });
  t.after(() => aa.stop());
  assert.equal(aa.away, false);
  await c.client.join("c:room"); // joined after the helper started: included
  await waitUntil(() => setsAfter(c, start).length === 3, after + 2000, "three sets");
  const sets = setsAfter(c, start);
  assert.ok(sets[0].at - startAt >= after - 2, `away after ${sets[0].at - startAt} ms`);
  assert.deepEqual(statuses(sets), ["a:room=away", "b:room=away", "c:room=away"]);
  assert.equal(aa.away, true);

  let mark = c.sent.length;
  aa.activity();
  await waitUntil(() => setsAfter(c, mark).length === 3, 2000, "online sets");
  assert.deepEqual(statuses(setsAfter(c, mark)), ["a:room=online", "b:room=online", "c:room=online"]);
  assert.equal(aa.away, false);

  // Activity from the document counts too.
  mark = c.sent.length;
  await waitUntil(() => setsAfter(c, mark).length === 3, after + 2000, "away again");
  assert.equal(aa.away, true);
  mark = c.sent.length;
  doc.dispatchEvent(new Event("keydown"));
  await waitUntil(() => setsAfter(c, mark).length === 3, 2000, "online after a keydown");
  assert.deepEqual(statuses(setsAfter(c, mark)), ["a:room=online", "b:room=online", "c:room=online"]);
  assert.equal(aa.away, false);
  // Activity while online sends nothing.
  mark = c.sent.length;
  aa.activity();
  aa.activity();
  await sleep(100);
  assert.deepEqual(setsAfter(c, mark), []);
});

test("auto-away: away at once when the page is hidden, online when it shows", async (t) => {
  const { c } = await connected(t, ["a:room"]);
  const doc = new FakeDocument();
  const aa = autoAway(c.client, { after: 60000, document: doc, awayStatus: "brb", onlineStatus: "here" });
  t.after(() => aa.stop());
  let mark = c.sent.length;
  doc.setHidden(true);
  await waitUntil(() => setsAfter(c, mark).length === 1, 2000, "a set");
  assert.deepEqual(statuses(setsAfter(c, mark)), ["a:room=brb"]);
  assert.equal(aa.away, true);
  mark = c.sent.length;
  doc.setHidden(false);
  await waitUntil(() => setsAfter(c, mark).length === 1, 2000, "a set");
  assert.deepEqual(statuses(setsAfter(c, mark)), ["a:room=here"]);
  assert.equal(aa.away, false);
});

test("auto-away: whenHidden false ignores visibility; rooms limits the rooms set", async (t) => {
  const { c } = await connected(t, ["a:room", "b:room"]);
  const doc = new FakeDocument();
  const start = c.sent.length;
  const aa = autoAway(c.client, { after: 1500, document: doc, whenHidden: false, rooms: ["b:room"] });
  t.after(() => aa.stop());
  doc.setHidden(true);
  await sleep(150);
  assert.deepEqual(setsAfter(c, start), [], "hidden is not away with whenHidden false");
  assert.equal(aa.away, false);
  await waitUntil(() => setsAfter(c, start).length >= 1, 1500 + 2000, "away after `after`");
  await sleep(50);
  assert.deepEqual(statuses(setsAfter(c, start)), ["b:room=away"]);
});

test("auto-away: stop() removes its listeners and timers", async (t) => {
  const { c } = await connected(t, ["a:room"]);
  const doc = new FakeDocument();
  const start = c.sent.length;
  const aa = autoAway(c.client, { after: 150, document: doc });
  assert.ok(doc.listeners.has("visibilitychange"), `listeners ${[...doc.listeners]}`);
  assert.ok(doc.listeners.size >= 2, `listens to activity too: ${[...doc.listeners]}`);
  aa.stop();
  assert.deepEqual([...doc.listeners], []);
  doc.setHidden(true);
  await sleep(400);
  assert.deepEqual(setsAfter(c, start), []);
});

test("auto-away: the return restores the status this client set in each room, and leaves a room changed meanwhile alone", async (t) => {
  const { c, conn } = await connected(t, ["a:room"]);
  await c.client.set("a:room", { status: "busy" });
  conn.sync("a:room", [{ u: "alice", s: "busy", m: {} }]);
  await c.client.join("b:room");
  conn.sync("b:room", [{ u: "alice", s: "online", m: {} }]);
  await c.client.join("c:room", { status: "away" });
  await c.client.join("d:room");
  await viewWhere(c.client, "a:room", (v) => v.members[0]?.status === "busy");
  const doc = new FakeDocument();
  const aa = autoAway(c.client, { after: 60000, document: doc });
  t.after(() => aa.stop());
  let mark = c.sent.length;
  doc.setHidden(true);
  await waitUntil(() => setsAfter(c, mark).length === 4, 2000, "away sets");
  assert.ok(aa.away);
  await c.client.set("d:room", { status: "busy" }); // changed while away: left alone on return
  await c.client.join("e:room", { status: "busy" }); // joined while away: not touched
  mark = c.sent.length;
  doc.setHidden(false);
  await waitUntil(() => setsAfter(c, mark).length === 3, 2000, "sets on return");
  await new Promise((r) => setTimeout(r, 100));
  // c:room was away before: it comes back online (onlineStatus).
  assert.deepEqual(statuses(setsAfter(c, mark)), ["a:room=busy", "b:room=online", "c:room=online"]);
  assert.equal(aa.away, false);
});
