// Client fixtures of the SDK tests: a Client on node's `ws` whose sockets
// the test can reach (to cut them), every event it emits recorded, and
// closed when the test ends.

import WebSocket from "ws";
import { Client } from "../src/presenced.js";
import { startPeer, waitUntil } from "./peer.js";

export const eventNames = ["state", "connected", "disconnected", "sync", "diff", "room", "bye", "refreshed", "error", "rtt"];

/**
 * A WebSocket constructor that remembers every socket it makes (with
 * createdAt) and every message the client sends (sent: parsed, with at, the
 * time of the send call: timings measured where the client makes them).
 */
export function capturingWebSocket() {
  const sockets = [];
  const sent = [];
  class CapturedWebSocket extends WebSocket {
    constructor(...args) {
      super(...args);
      this.createdAt = Date.now();
      sockets.push(this);
    }
    send(data, ...rest) {
      try {
        sent.push({ ...JSON.parse(data), at: Date.now() });
      } catch {
        // not JSON: not ours to record
      }
      return super.send(data, ...rest);
    }
  }
  return { WebSocket: CapturedWebSocket, sockets, sent };
}

/**
 * A client with small backoffs (override in opts), its sockets and its
 * recorded events ({name, ev, at}). It is closed when test t ends.
 */
export function newClient(t, opts) {
  const { WebSocket: WS, sockets, sent } = capturingWebSocket();
  const client = new Client({ WebSocket: WS, minBackoff: 20, maxBackoff: 200, ...opts });
  const events = [];
  for (const name of eventNames) client.on(name, (ev) => events.push({ name, ev, at: Date.now() }));
  t.after(() => client.close());
  return {
    client,
    sockets,
    sent,
    events,
    /** The recorded events named name. */
    of(name) {
      return events.filter((e) => e.name === name).map((e) => e.ev);
    },
    /** Resolves with the first event named name after index from that satisfies pred. */
    async next(name, pred = () => true, { timeout = 5000, from = 0 } = {}) {
      const e = await waitUntil(
        () => events.slice(from).find((e) => e.name === name && pred(e.ev)),
        timeout,
        `event ${name}`,
      );
      return e.ev;
    },
    /** Cuts the TCP connection under the client's current socket (no close frame). */
    cut() {
      const ws = sockets.at(-1);
      ws._socket.destroy();
    },
  };
}

/** Resolves when client's view of room satisfies pred; returns the view. */
export async function viewWhere(client, room, pred, timeout = 5000) {
  return waitUntil(
    () => {
      const v = client.room(room);
      return v && pred(v) && v;
    },
    timeout,
    `a view of ${room} that matches`,
  );
}

/** The user ids of a view's members. */
export const users = (view) => view.members.map((m) => m.user);

/** Asserts that promise p rejects with an error of class C; returns the error. */
export async function rejectsWith(p, C) {
  try {
    await p;
  } catch (err) {
    if (!(err instanceof C)) throw new Error(`rejected with ${err?.name}: ${err?.message}, want ${C.name}`);
    return err;
  }
  throw new Error(`resolved, want a rejection with ${C.name}`);
}

/** A client of a fresh peer, connected; the peer and client close when t ends. */
export async function connectedToPeer(t, peerOpts = {}, clientOpts = {}) {
  const peer = await startPeer(peerOpts);
  t.after(() => peer.close());
  const c = newClient(t, { url: peer.url, user: "alice", ...clientOpts });
  await c.client.connect();
  return { peer, c, conn: await peer.conn(0) };
}
