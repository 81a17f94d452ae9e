// One connection's protocol against a scripted peer: the hello, server
// pings, a silent server, the cursor chain and its gaps, command answers,
// errors and timeouts.

import assert from "node:assert/strict";
import { test } from "node:test";
import WebSocket from "ws";
import { Client, CommandError, DisconnectedError, PresenceError, TimeoutError } from "../src/presenced.js";
import { newClient, rejectsWith, users, viewWhere } from "./clients.js";
import { sleep, startPeer, waitUntil } from "./peer.js";

async function connected(t, peerOpts = {}, clientOpts = {}) {
  const peer = await startPeer(peerOpts);
  t.after(() => peer.close());
  const c = newClient(t, { url: peer.url, user: "alice", ...clientOpts });
  const welcome = await c.client.connect();
  return { peer, c, conn: await peer.conn(0), welcome };
}

const alice = { u: "alice", s: "online", m: {} };
const bob = { u: "bob", s: "online", m: { name: "Bob" } };

test("hello: v 1 with the user, or the token, or getToken's token for each connection", async (t) => {
  const a = await connected(t);
  assert.deepEqual(a.conn.hello, { t: "hello", v: 1, user: "alice", at: a.conn.hello.at });
  assert.deepEqual(a.welcome, { node: "peer", conn: "peer-0", user: "alice", resumed: false });
  assert.deepEqual(await a.c.client.connect(), a.welcome, "connect() again resolves with the welcome");
  assert.equal(a.c.client.state, "connected");

  const b = await connected(t, {}, { user: undefined, token: "static.jwt" });
  assert.equal(b.conn.hello.token, "static.jwt");
  assert.equal(b.conn.hello.user, undefined);

  let n = 0;
  const g = await connected(t, {}, { token: "ignored", getToken: async () => `fresh-${++n}` });
  assert.equal(g.conn.hello.token, "fresh-1", "getToken wins over token");
  g.conn.kill();
  assert.equal((await g.peer.conn(1)).hello.token, "fresh-2", "getToken is asked for each connection");
});

test("server pings are answered with the same ts", async (t) => {
  const { c, conn } = await connected(t);
  conn.send({ t: "ping", ts: 1234567 });
  const pong = await conn.next("pong");
  assert.equal(pong.ts, 1234567);
  await waitUntil(() => c.client.stats.pings === 1, 2000, "stats.pings");
});

test("a server silent for hb + heartbeatTimeout is dropped and the client reconnects", async (t) => {
  const { peer, c, conn } = await connected(t, { hb: 200 }, { heartbeatTimeout: 200 });
  const welcomedAt = conn.hello.at;
  const next = await peer.conn(1, 400 + 3000);
  const after = next.hello.at - welcomedAt;
  assert.ok(after >= 400 - 50, `dropped after ${after} ms, before hb + heartbeatTimeout`);
  const d = c.of("disconnected")[0];
  assert.equal(d.terminal, false);
  await waitUntil(() => c.client.state === "connected", 2000, "connected again");
});

test("a server that pings within hb is not dropped", async (t) => {
  const { peer, c, conn } = await connected(t, { hb: 200 }, { heartbeatTimeout: 1000 });
  const timer = setInterval(() => conn.send({ t: "ping", ts: Date.now() }), 100);
  t.after(() => clearInterval(timer));
  await sleep(1200);
  clearInterval(timer);
  assert.equal(peer.conns.length, 1);
  assert.equal(c.of("disconnected").length, 0);
  assert.ok(c.client.stats.pings >= 5);
});

test("diffs apply only when from equals the cursor; a gap asks for one sync", async (t) => {
  const { c, conn } = await connected(t);
  const join = c.client.join("chat:gap");
  const j = await conn.next("join");
  assert.equal(j.room, "chat:gap");
  assert.ok(Number.isInteger(j.id) && j.id > 0, `id ${j.id}`);
  conn.send({ t: "ack", id: j.id });
  await join;
  const v0 = c.client.room("chat:gap");
  assert.equal(v0.synced, false, "no sync yet");
  assert.equal(v0.cursor, "");

  conn.send({ t: "sync", room: "chat:gap", cur: "e.1", count: 1, members: [alice], typing: [], partial: false });
  const s = await c.next("sync");
  assert.deepEqual(s.sync, { cursor: "e.1", count: 1, partial: false, members: [{ user: "alice", status: "online", meta: {} }], typing: [] });
  conn.send({ t: "diff", room: "chat:gap", from: "e.1", cur: "e.2", count: 2, join: [bob], typing: ["bob"] });
  let v = await viewWhere(c.client, "chat:gap", (v) => v.cursor === "e.2");
  assert.deepEqual(users(v), ["alice", "bob"]);
  assert.deepEqual(v.typing, ["bob"]);
  // A diff without typing keeps the typing set.
  conn.send({ t: "diff", room: "chat:gap", from: "e.2", cur: "e.3", count: 2, update: [{ ...bob, s: "away" }] });
  v = await viewWhere(c.client, "chat:gap", (v) => v.cursor === "e.3");
  assert.deepEqual(v.typing, ["bob"]);
  assert.equal(v.members[1].status, "away");

  // Two diffs that do not continue e.3: ignored, one sync asked for.
  const mark = conn.frames.length;
  conn.send({ t: "diff", room: "chat:gap", from: "e.7", cur: "e.8", count: 3, join: [{ u: "carol", s: "online", m: {} }] });
  conn.send({ t: "diff", room: "chat:gap", from: "e.8", cur: "e.9", count: 2, leave: ["carol"] });
  const sy = await conn.next((f) => f.t === "sync", { from: mark });
  assert.equal(sy.room, "chat:gap");
  assert.ok(sy.id > j.id, "the sync has a new id");
  await sleep(100);
  assert.equal(conn.frames.slice(mark).filter((f) => f.t === "sync").length, 1, "one sync at a time per room");
  assert.equal(c.client.stats.gaps, 2);
  v = c.client.room("chat:gap");
  assert.equal(v.cursor, "e.3", "gap diffs are not applied");
  assert.equal(v.count, 2);

  conn.send({ t: "ack", id: sy.id });
  conn.send({ t: "sync", room: "chat:gap", cur: "e.9", count: 2, members: [bob, alice], typing: [], partial: false });
  v = await viewWhere(c.client, "chat:gap", (v) => v.cursor === "e.9");
  assert.deepEqual(users(v), ["alice", "bob"], "members sorted by user");
  assert.deepEqual(v.typing, []);
  // The chain continues from the sync.
  conn.send({ t: "diff", room: "chat:gap", from: "e.9", cur: "e.10", count: 1, leave: ["bob"] });
  v = await viewWhere(c.client, "chat:gap", (v) => v.cursor === "e.10");
  assert.deepEqual(users(v), ["alice"]);
  assert.equal(c.client.stats.gaps, 2);
  assert.equal(c.of("error").length, 0);
});

test("a partial sync keeps count apart from the members listed", async (t) => {
  const { c, conn } = await connected(t, { auto: false });
  const join = c.client.join("big");
  conn.send({ t: "ack", id: (await conn.next("join")).id });
  await join;
  conn.send({ t: "sync", room: "big", cur: "p.1", count: 5000, members: [alice, bob], typing: [], partial: true });
  let v = await viewWhere(c.client, "big", (v) => v.synced);
  assert.equal(v.partial, true);
  assert.equal(v.count, 5000);
  conn.send({ t: "diff", room: "big", from: "p.1", cur: "p.2", count: 5001, typing: ["zed"] });
  v = await viewWhere(c.client, "big", (v) => v.cursor === "p.2");
  assert.equal(v.count, 5001);
  assert.deepEqual(v.typing, ["zed"]);
});

test("err answers reject with CommandError; an err without id is an error event", async (t) => {
  const { c, conn } = await connected(t);
  const p = c.client.join("chat:err");
  const j = await conn.next("join");
  conn.send({ t: "err", id: j.id, code: "rate_limited", msg: "slow down" });
  const err = await rejectsWith(p, CommandError);
  assert.equal(err.code, "rate_limited");
  assert.ok(err instanceof PresenceError && err instanceof Error);
  assert.deepEqual(c.client.rooms(), [], "the refused join is forgotten");
  assert.equal(c.client.stats.commandErrors, 1);

  conn.send({ t: "err", code: "forbidden", msg: "the token does not allow these rooms: x" });
  const ev = await c.next("error");
  assert.ok(ev.error instanceof CommandError, `error ${ev.error}`);
  assert.equal(ev.error.code, "forbidden");
  assert.equal(c.client.state, "connected");
});

test("a command without an answer rejects with TimeoutError; a late ack is ignored", async (t) => {
  const { c, conn } = await connected(t, {}, { commandTimeout: 150 });
  let at = Date.now();
  await rejectsWith(c.client.join("chat:slow", undefined, { timeout: 100 }), TimeoutError);
  let took = Date.now() - at;
  assert.ok(took >= 100 - 15 && took < 100 + 2000, `timed out after ${took} ms`);
  at = Date.now();
  await rejectsWith(c.client.sync("chat:slow"), TimeoutError);
  took = Date.now() - at;
  assert.ok(took >= 150 - 15 && took < 150 + 2000, `commandTimeout: timed out after ${took} ms`);
  at = Date.now();
  await rejectsWith(c.client.ping({ timeout: 100 }), TimeoutError);
  const j = await conn.next("join");
  conn.send({ t: "ack", id: j.id });
  await sleep(50);
  assert.equal(c.client.state, "connected");
  assert.equal(c.of("error").length, 0);
});

test("typing sends fire-and-forget frames and is false while no connection is up", async (t) => {
  // Only the first connection is welcomed: the client stays reconnecting.
  const { peer, c, conn } = await connected(t, { welcome: (conn) => conn.n === 0 });
  assert.equal(c.client.typing("chat:t", true), true);
  const f = await conn.next("typing");
  assert.deepEqual({ ...f, at: 0 }, { t: "typing", room: "chat:t", on: true, at: 0 });
  assert.equal(f.id, undefined);
  conn.kill();
  await c.next("disconnected");
  assert.equal(c.client.typing("chat:t", true), false);
  await peer.conn(1, 3000);
  assert.notEqual(c.client.state, "connected");
  assert.equal(c.client.typing("chat:t", false), false, "false while the attempt waits for its welcome");
  await c.client.close();
  assert.equal(c.client.typing("chat:t", false), false, "false once closed");
});

test("refresh: getToken's token is sent in auth; refreshed on ack, an error event otherwise", async (t) => {
  let n = 0;
  const { c, conn } = await connected(t, {}, { user: undefined, getToken: async () => `tok-${++n}` });
  conn.send({ t: "refresh", exp: Math.floor(Date.now() / 1000) + 60 });
  const auth = await conn.next("auth");
  assert.equal(auth.token, "tok-2");
  assert.ok(auth.id > 0);
  conn.send({ t: "ack", id: auth.id });
  await c.next("refreshed");
  assert.equal(c.client.stats.refreshes, 1);

  const mark = conn.frames.length;
  conn.send({ t: "refresh", exp: Math.floor(Date.now() / 1000) + 60 });
  const auth2 = await conn.next("auth", { from: mark });
  assert.equal(auth2.token, "tok-3");
  conn.send({ t: "err", id: auth2.id, code: "internal", msg: "verifier down" });
  const ev = await c.next("error");
  assert.ok(ev.error instanceof PresenceError, `error ${ev.error}`);
  assert.equal(c.client.stats.refreshes, 1);
  assert.equal(c.client.state, "connected");
});

test("refresh without getToken, or with a failing one, is an error event; the connection stays", async (t) => {
  const a = await connected(t, {}, { user: undefined, token: "static" });
  a.conn.send({ t: "refresh", exp: Math.floor(Date.now() / 1000) + 60 });
  await a.c.next("error");
  let calls = 0;
  const b = await connected(t, {}, {
    user: undefined,
    getToken: async () => {
      if (++calls > 1) throw new Error("token service down");
      return "tok-1";
    },
  });
  b.conn.send({ t: "refresh", exp: Math.floor(Date.now() / 1000) + 60 });
  await b.c.next("error");
  await sleep(50);
  for (const x of [a, b]) {
    assert.deepEqual(x.conn.sent("auth"), []);
    assert.equal(x.c.client.state, "connected");
    assert.equal(x.c.client.stats.refreshes, 0);
  }
});

test("an attempt without a welcome within connectTimeout is dropped and retried", async (t) => {
  const peer = await startPeer({ welcome: (conn) => conn.n > 0 });
  t.after(() => peer.close());
  const c = newClient(t, { url: peer.url, user: "alice", connectTimeout: 200 });
  const welcome = c.client.connect();
  const first = await peer.conn(0);
  const w = await welcome;
  assert.equal(w.conn, "peer-1");
  const [s0, s1] = c.sockets;
  assert.ok(first.hello && s1.createdAt - s0.createdAt >= 200 - 2, `retried after ${s1.createdAt - s0.createdAt} ms`);
  assert.equal(c.client.stats.dials, 2);
  assert.equal(c.client.stats.reconnects, 0, "the first welcome is no reconnect");
});

test("a refresh whose getToken hangs fails within connectTimeout, and the next refresh is served", async (t) => {
  let calls = 0;
  const getToken = () => {
    calls++;
    if (calls === 2) return new Promise(() => {}); // the first refresh: never answers
    return `tok-${calls}`;
  };
  const { c, conn } = await connected(t, {}, { user: undefined, getToken, connectTimeout: 200 });
  conn.send({ t: "refresh", exp: Math.floor(Date.now() / 1000) + 60 });
  await waitUntil(() => calls === 2, 2000, "getToken for the refresh");
  const ev = await c.next("error", () => true, { timeout: 200 + 2000 }).catch(() => null);
  assert.ok(ev, "an error event once connectTimeout bounds the refresh (docs: connectTimeout bounds a token refresh)");
  conn.send({ t: "refresh", exp: Math.floor(Date.now() / 1000) + 30 });
  const auth = await conn.next("auth", { timeout: 2000 }).catch(() => null);
  assert.ok(auth, "the next refresh sends auth");
  assert.equal(auth.token, "tok-3");
});

test("a listener that throws does not break the client", async (t) => {
  const { c, conn } = await connected(t, { auto: true });
  c.client.on("sync", () => {
    throw new Error("listener bug");
  });
  const seen = [];
  c.client.on("sync", (ev) => seen.push(ev.room));
  await c.client.join("r:1");
  await c.client.join("r:2");
  await waitUntil(() => seen.length === 2, 2000, "both syncs");
  assert.deepEqual(seen, ["r:1", "r:2"]);
  assert.equal(c.client.room("r:2").synced, true);
  conn.send({ t: "ping", ts: 7 });
  assert.equal((await conn.next("pong")).ts, 7);
});

test("ping with no connection up rejects with DisconnectedError; a lost connection's error is one too", async (t) => {
  const { c, conn } = await connected(t, { welcome: (conn) => conn.n === 0 });
  conn.kill();
  const d = await c.next("disconnected");
  assert.ok(d.error instanceof DisconnectedError, `error ${d.error}`);
  await rejectsWith(c.client.ping(), DisconnectedError);
});

test("the constructor refuses an unusable configuration", () => {
  assert.throws(() => new Client({ user: "alice", WebSocket }), TypeError, "no url");
  assert.throws(() => new Client({ url: "ws://127.0.0.1:1/ws", WebSocket }), TypeError, "no token, getToken or user");
  assert.throws(() => new Client({ url: "ws://127.0.0.1:1/ws", user: "alice", WebSocket, minBackoff: 100, maxBackoff: 50 }), "maxBackoff below minBackoff");
  if (!globalThis.WebSocket) assert.throws(() => new Client({ url: "ws://127.0.0.1:1/ws", user: "alice" }), TypeError, "no WebSocket");
  const c = new Client({ url: "ws://127.0.0.1:1/ws", user: "alice", WebSocket });
  assert.equal(c.state, "connecting");
  assert.equal(c.welcome, undefined);
  assert.equal(c.error, undefined);
  assert.deepEqual(c.stats, { dials: 0, connects: 0, reconnects: 0, disconnects: 0, syncs: 0, diffs: 0, gaps: 0, pings: 0, refreshes: 0, commands: 0, commandErrors: 0 });
  assert.deepEqual(c.rooms(), []);
  assert.equal(c.typing("r", true), false);
});
