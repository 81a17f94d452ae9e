// A scripted presenced peer for the SDK's unit tests: a real `ws`
// WebSocketServer on 127.0.0.1 that records every frame a client sends and
// answers only what the test tells it to. It produces on demand what the
// real server cannot easily: any close code, a bye, a silent server, a
// diff that breaks the cursor chain, a command left unanswered.

import { once } from "node:events";
import { WebSocketServer } from "ws";

/**
 * Starts a peer. Options:
 *   hb      the welcome's hb in ms (default 30000)
 *   welcome false: never answer hello; a function (conn, hello) returning
 *           false: no welcome for this connection
 *   auto    answer join, leave, set, sync and auth with ack, and join and
 *           sync with a sync of the room (cursor "e<connection>.<n>"),
 *           except commands for rooms named "mute:...", left unanswered,
 *           and those conn.refuse(msg) returns an error code for
 */
export async function startPeer({ hb = 30000, welcome = true, auto = false } = {}) {
  const wss = new WebSocketServer({ host: "127.0.0.1", port: 0 });
  await once(wss, "listening");
  const peer = {
    url: `ws://127.0.0.1:${wss.address().port}/ws`,
    conns: [],
    waiters: [],
    /** Resolves with connection number n (0-based) once it has sent its hello. */
    async conn(n, timeout = 5000) {
      return waitUntil(() => this.conns[n]?.hello && this.conns[n], timeout, `connection ${n}`);
    },
    /** Every frame of every connection, in order. */
    frames() {
      return this.conns.flatMap((c) => c.frames);
    },
    async close() {
      for (const c of this.conns) c.ws.terminate();
      await new Promise((r) => wss.close(r));
    },
  };
  wss.on("connection", (ws) => {
    const conn = newConn(ws, peer.conns.length);
    peer.conns.push(conn);
    ws.on("message", (data, isBinary) => {
      if (isBinary) return;
      let msg;
      try {
        msg = JSON.parse(data.toString());
      } catch {
        return;
      }
      msg.at = Date.now();
      conn.frames.push(msg);
      if (msg.t === "hello" && !conn.hello) {
        conn.hello = msg;
        const ok = typeof welcome === "function" ? welcome(conn, msg) !== false : welcome;
        if (ok) conn.welcome({ hb });
        return;
      }
      if (auto) answer(conn, msg);
    });
  });
  return peer;
}

// answer plays a well-behaved server for msg.
function answer(conn, msg) {
  if (msg.room?.startsWith("mute:")) return;
  const code = msg.id && conn.refuse?.(msg);
  if (code) return conn.send({ t: "err", id: msg.id, code, msg: "refused by the test" });
  switch (msg.t) {
    case "join":
    case "sync":
      conn.send({ t: "ack", id: msg.id });
      conn.sync(msg.room);
      break;
    case "leave":
    case "set":
    case "auth":
      conn.send({ t: "ack", id: msg.id });
      break;
    case "ping":
      conn.send({ t: "pong", ts: msg.ts });
      break;
  }
}

function newConn(ws, n) {
  const conn = {
    n,
    ws,
    hello: null,
    frames: [],
    refuse: null,
    seq: {},
    send(obj) {
      if (ws.readyState === ws.OPEN) ws.send(JSON.stringify(obj));
    },
    welcome({ hb = 30000, user } = {}) {
      this.send({ t: "welcome", v: 1, node: "peer", conn: `peer-${n}`, user: user || this.hello?.user || "alice", hb, max: 4096 });
    },
    /** Sends a sync of room with the members given, and returns its cursor. */
    sync(room, members = [], extra = {}) {
      const cur = this.cursor(room);
      this.send({ t: "sync", room, cur, count: members.length, members, typing: [], partial: false, ...extra });
      return cur;
    },
    /** A new cursor of room on this peer. */
    cursor(room) {
      this.seq[room] = (this.seq[room] || 0) + 1;
      return `e${n}.${this.seq[room]}`;
    },
    close(code, reason = "") {
      ws.close(code, reason);
    },
    /** Cuts the TCP connection without a close frame. */
    kill() {
      ws.terminate();
    },
    /** Frames of type t (all frames without t). */
    sent(t) {
      return t ? this.frames.filter((f) => f.t === t) : this.frames;
    },
    /** Resolves with the first frame after index `from` matching pred (a type or a function). */
    async next(pred, { timeout = 5000, from = 0 } = {}) {
      const match = typeof pred === "string" ? (f) => f.t === pred : pred;
      return waitUntil(() => this.frames.slice(from).find(match), timeout, `a frame matching ${pred}`);
    },
    closed: null,
  };
  conn.closed = once(ws, "close").then(([code]) => code);
  return conn;
}

/** Polls fn every 10 ms until it returns a truthy value, which it resolves with. */
export async function waitUntil(fn, timeout = 5000, what = "condition") {
  const deadline = Date.now() + timeout;
  for (;;) {
    const v = fn();
    if (v) return v;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeout} ms waiting for ${what}`);
    await sleep(10);
  }
}

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
