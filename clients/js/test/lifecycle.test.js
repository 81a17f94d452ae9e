// The client across connections, against a scripted peer: what a
// reconnect's hello resumes, the commands re-sent after it, and close(),
// which must stop every timer.

import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { once } from "node:events";
import { fileURLToPath } from "node:url";
import { test } from "node:test";
import { ClosedError, CommandError } from "../src/presenced.js";
import { connectedToPeer as connected, newClient, rejectsWith, viewWhere } from "./clients.js";
import { sleep, startPeer, waitUntil } from "./peer.js";

test("a reconnect resumes every room from its cursor with the most shared state, and sets the others", async (t) => {
  const { peer, c, conn } = await connected(t, { auto: true });
  const s1 = { status: "online", meta: { x: 1 } };
  await c.client.join("b:room", s1);
  await c.client.join("a:room", { status: "busy" });
  await c.client.join("c:room", s1);
  for (const r of ["a:room", "b:room", "c:room"]) await viewWhere(c.client, r, (v) => v.synced);
  const cursors = Object.fromEntries(c.client.rooms().map((r) => [r, c.client.room(r).cursor]));
  const markEvents = c.events.length;
  conn.kill();

  const next = await peer.conn(1, 3000);
  assert.deepEqual(next.hello.resume, cursors);
  assert.deepEqual(next.hello.state, s1, "the state two of three rooms share");
  const set = await next.next("set");
  assert.equal(set.room, "a:room");
  assert.equal(set.state.status, "busy");
  await sleep(100);
  assert.deepEqual(next.sent("set").map((f) => f.room), ["a:room"], "a set only for the room whose state differs");
  assert.deepEqual(next.sent("join"), [], "no join: the hello resumed the rooms");
  const w = c.of("connected").at(-1);
  assert.equal(w.resumed, true);

  // The server continues b:room's chain: applied as a diff, no gap.
  next.send({ t: "diff", room: "b:room", from: cursors["b:room"], cur: "n.1", count: 2, join: [{ u: "bob", s: "online", m: {} }], typing: [] });
  await viewWhere(c.client, "b:room", (v) => v.cursor === "n.1" && v.count === 2);
  assert.equal(c.client.stats.gaps, 0);
  assert.ok(c.events.slice(markEvents).some((e) => e.name === "diff" && e.ev.room === "b:room"));
});

test("a tie of states goes to the alphabetically first room's", async (t) => {
  const { peer, c, conn } = await connected(t, { auto: true });
  await c.client.join("z:room", { status: "busy" });
  await c.client.join("m:room", { status: "away" });
  conn.kill();
  const next = await peer.conn(1, 3000);
  assert.equal(next.hello.state.status, "away");
  assert.deepEqual(Object.keys(next.hello.resume).sort(), ["m:room", "z:room"]);
  assert.equal((await next.next("set")).room, "z:room");
});

test("the state a reconnect resumes: set keeps what it leaves out; a refused command is undone", async (t) => {
  const { peer, c, conn } = await connected(t, { auto: true });
  await c.client.join("a:room", { status: "online", meta: { x: 1 } });
  await c.client.set("a:room", { status: "away" });
  await c.client.join("b:room", { status: "busy", meta: { y: 2 } });
  // Refused: a join that changes b:room's state, a set, and a leave.
  conn.refuse = (msg) => msg.room === "b:room" && "rate_limited";
  await rejectsWith(c.client.join("b:room", { status: "online" }), CommandError);
  await rejectsWith(c.client.set("b:room", { meta: { y: 3 } }), CommandError);
  await rejectsWith(c.client.leave("b:room"), CommandError);
  assert.deepEqual(c.client.rooms(), ["a:room", "b:room"], "a refused leave restores the room");

  conn.kill();
  const next = await peer.conn(1, 3000);
  // Two rooms, two states: the tie goes to a:room's, and b:room gets a set.
  assert.deepEqual(next.hello.state, { status: "away", meta: { x: 1 } }, "set kept the meta it left out");
  const set = await next.next("set");
  assert.equal(set.room, "b:room");
  assert.deepEqual(set.state, { status: "busy", meta: { y: 2 } }, "the refused join and set were undone");
});

test("commands pending when the connection drops are re-sent with their id after the welcome", async (t) => {
  const { peer, c, conn } = await connected(t);
  const joined = c.client.join("chat:pending", { status: "online" });
  const j = await conn.next("join");
  conn.kill(); // before the ack
  await c.next("disconnected");
  // A command made while no connection is up waits for the next one.
  const set = c.client.set("chat:pending", { status: "away" });
  const next = await peer.conn(1, 3000);
  assert.deepEqual(Object.keys(next.hello.resume ?? {}), ["chat:pending"], "a room is resumed even while its join is pending");
  const j2 = await next.next("join");
  assert.equal(j2.id, j.id, "the same id: commands are idempotent");
  const s = await next.next("set");
  assert.ok(s.id > j.id);
  next.send({ t: "ack", id: j2.id });
  next.send({ t: "ack", id: s.id });
  await joined;
  await set;
  assert.equal(c.client.stats.commands, 2);
});

test("a room left while disconnected is not resumed; the leave is still sent and not_joined counts as left", async (t) => {
  // A long backoff: the leave comes before the next hello is made.
  const { peer, c, conn } = await connected(t, { auto: true }, { minBackoff: 300, maxBackoff: 300, random: () => 0.99 });
  await c.client.join("r:keep");
  await c.client.join("r:drop");
  await viewWhere(c.client, "r:drop", (v) => v.synced);
  conn.kill();
  await c.next("disconnected");
  const left = c.client.leave("r:drop");
  assert.deepEqual(c.client.rooms(), ["r:keep"], "left at once");
  assert.equal(c.client.room("r:drop"), undefined);
  const next = await peer.conn(1, 3000);
  assert.deepEqual(Object.keys(next.hello.resume), ["r:keep"]);
  await left;
  assert.equal((await next.next("leave")).room, "r:drop");
});

test("close(): pending commands reject with ClosedError, close 1000 is sent, no more dials", async (t) => {
  const { peer, c, conn } = await connected(t);
  const p = rejectsWith(c.client.join("chat:closing"), ClosedError);
  await conn.next("join");
  await c.client.close();
  await p;
  assert.equal(c.client.state, "closed");
  assert.equal(await conn.closed, 1000, "the peer got close 1000");
  const term = c.of("disconnected").filter((ev) => ev.terminal);
  assert.equal(term.length, 1);
  assert.equal(c.of("state").at(-1).state, "closed");
  await rejectsWith(c.client.join("chat:after"), ClosedError);
  await c.client.close(); // twice is fine
  await sleep(200);
  assert.equal(peer.conns.length, 1);
});

test("close() while reconnecting cancels the backoff: no dial after it", async (t) => {
  const { peer, c, conn } = await connected(t, {}, { minBackoff: 400, maxBackoff: 400, random: () => 0.99 });
  conn.kill();
  const d = await c.next("disconnected");
  assert.ok(d.retryIn > 300, `retryIn ${d.retryIn}`);
  assert.equal(c.client.state, "reconnecting");
  await c.client.close();
  assert.equal(c.client.state, "closed");
  await sleep(600);
  assert.equal(peer.conns.length, 1, "no dial after close");
  assert.equal(c.client.stats.dials, 1);
});

test("the state events of a life: connecting, connected, reconnecting, connected, closed", async (t) => {
  const peer = await startPeer();
  t.after(() => peer.close());
  const c = newClient(t, { url: peer.url, user: "alice" });
  assert.equal(c.client.state, "connecting");
  await c.client.connect();
  (await peer.conn(0)).kill();
  await peer.conn(1, 3000);
  await waitUntil(() => c.client.state === "connected", 3000, "connected again");
  await c.client.close();
  const states = c.of("state").map((ev) => ev.state);
  const dedup = states.filter((s, i) => s !== states[i - 1] && !(i === 0 && s === "connecting"));
  assert.deepEqual(dedup, ["connected", "reconnecting", "connected", "closed"]);
});

// The strongest check that close() stops every timer: a process that used
// the client must exit on its own once it closed it.
const sdk = new URL("../src/presenced.js", import.meta.url).href;
const cwd = fileURLToPath(new URL("..", import.meta.url));

async function exitsAfterClose(url, script, opts = "minBackoff: 5000, maxBackoff: 5000") {
  const code = `
    import WebSocket from "ws";
    import { Client, typingHelper } from ${JSON.stringify(sdk)};
    const c = new Client({ url: ${JSON.stringify(url)}, user: "alice", WebSocket, commandTimeout: 60000, ${opts} });
    ${script}
    await c.close();
    console.log("closed");
  `;
  const p = spawn(process.execPath, ["--input-type=module", "-e", code], { cwd, stdio: ["ignore", "pipe", "pipe"] });
  let out = "";
  let closedAt = 0;
  let killer = setTimeout(() => p.kill("SIGKILL"), 30000); // start-up on a loaded machine
  p.stdout.on("data", (d) => {
    out += d;
    if (!closedAt && /closed/.test(out)) {
      closedAt = Date.now();
      clearTimeout(killer);
      killer = setTimeout(() => p.kill("SIGKILL"), 3000);
    }
  });
  p.stderr.on("data", (d) => (out += d));
  const [exit, signal] = await once(p, "exit");
  clearTimeout(killer);
  assert.ok(closedAt, `close() did not resolve; output: ${out}`);
  assert.equal(signal, null, `the process did not exit within 3 s after close() resolved; output: ${out}`);
  assert.equal(exit, 0, out);
}

test("a process exits after close(): connected, with rooms, a pending command and a ping", async (t) => {
  const peer = await startPeer({ auto: true, hb: 1000 });
  t.after(() => peer.close());
  await exitsAfterClose(
    peer.url,
    `await c.connect();
     await c.join("chat:exit");
     c.sync("mute:never").catch(() => {});
     await c.ping();
     const h = typingHelper(c, "chat:exit", { interval: 100000, idle: 100000 });
     h.keystroke(); h.stop();`,
  );
});

test("a process exits after close(): while waiting to reconnect", async (t) => {
  const peer = await startPeer({ welcome: (conn) => (conn.n === 0 ? undefined : false) });
  t.after(() => peer.close());
  const kill = setInterval(() => peer.conns[0]?.hello && peer.conns[0].kill(), 20);
  t.after(() => clearInterval(kill));
  await exitsAfterClose(
    peer.url,
    `await c.connect();
     await new Promise((r) => c.on("disconnected", r));`,
  );
});

test("a process exits after close(): after giving up on a silent server", async (t) => {
  // The first connection's server stops reading its socket after the
  // welcome: it never answers the close frame of the client that gives up
  // on it. That socket must not keep the process alive after close().
  const peer = await startPeer({
    hb: 200,
    welcome: (conn) => {
      conn.welcome({ hb: 200 });
      if (conn.n === 0) conn.ws._socket.pause();
      return false;
    },
  });
  t.after(() => peer.close());
  await exitsAfterClose(
    peer.url,
    `await c.connect();
     await new Promise((r) => c.on("connected", r));`,
    "minBackoff: 10, maxBackoff: 10, heartbeatTimeout: 200",
  );
  assert.equal(peer.conns.length, 2);
});

test("close() during the first attempt rejects connect() with ClosedError", async (t) => {
  const peer = await startPeer({ welcome: false });
  t.after(() => peer.close());
  const c = newClient(t, { url: peer.url, user: "alice" });
  const p = rejectsWith(c.client.connect(), ClosedError);
  await peer.conn(0);
  await c.client.close();
  await p;
  assert.equal(c.client.state, "closed");
});

test("a process exits after close(): during an attempt that waits for its welcome, or for getToken", async (t) => {
  const peer = await startPeer({ welcome: false });
  t.after(() => peer.close());
  await exitsAfterClose(peer.url, `c.connect().catch(() => {}); await new Promise((r) => setTimeout(r, 300));`);
  await exitsAfterClose(
    peer.url,
    `c.connect().catch(() => {}); await new Promise((r) => setTimeout(r, 100));`,
    "getToken: () => new Promise(() => {}), connectTimeout: 60000",
  );
});
