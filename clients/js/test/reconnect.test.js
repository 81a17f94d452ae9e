// The close-code table and the reconnect backoff, against a scripted peer
// that closes with any code on demand. The expectations are the contract's
// table as the Go SDK applies it (client/run.go decide).

import assert from "node:assert/strict";
import { test } from "node:test";
import { backoff, CloseCodes, CloseError, shouldReconnect } from "../src/presenced.js";
import { connectedToPeer as connected, newClient } from "./clients.js";
import { sleep, startPeer, waitUntil } from "./peer.js";

const reconnects = [1001, 1006, 1008, 1011, 4000, 4001, 4002, 4004, 4029, 4099];
const terminal = [1000, 1002, 1003, 1007, 1009, 4100, 4101, 4103, 4105, 4150, 4199];

test("shouldReconnect follows the contract's table", () => {
  for (const code of reconnects) assert.equal(shouldReconnect(code), true, `code ${code}`);
  for (const code of terminal) assert.equal(shouldReconnect(code), false, `code ${code}`);
  assert.equal(shouldReconnect(4003), true, "4003: yes, with a new token");
});

test("CloseCodes names the contract's codes", () => {
  assert.deepEqual(
    { ...CloseCodes },
    {
      normal: 1000, goingAway: 1001, protocolError: 1002, unsupported: 1003, invalidPayload: 1007,
      policyViolation: 1008, tooBig: 1009, internalError: 1011, heartbeat: 4001, slowConsumer: 4002,
      tokenExpired: 4003, helloTimeout: 4004, rateLimited: 4029, badRequest: 4100, unauthorized: 4101,
      forbidden: 4103, version: 4105,
    },
  );
});

test("backoff is full jitter in [0, min(max, min·2^n)]", () => {
  const ceilings = [500, 1000, 2000, 4000, 8000, 16000, 30000, 30000, 30000];
  ceilings.forEach((ceil, n) => {
    assert.equal(backoff(n, 500, 30000, () => 0), 0, `attempt ${n}, random 0`);
    const top = backoff(n, 500, 30000, () => 0.999999);
    assert.ok(top <= ceil && top >= ceil - 1, `attempt ${n}: ${top}, ceiling ${ceil}`);
    const mid = backoff(n, 500, 30000, () => 0.5);
    assert.ok(Math.abs(mid - ceil / 2) <= 1, `attempt ${n}, random 0.5: ${mid}`);
  });
  for (const n of [40, 63, 64, 1000]) assert.equal(Math.round(backoff(n, 500, 30000, () => 0.999999)), 30000, `attempt ${n}`);
  for (let i = 0; i < 200; i++) {
    const d = backoff(3, 500, 30000);
    assert.ok(d >= 0 && d <= 4000, `default random: ${d}`);
  }
});

for (const code of reconnects) {
  test(`close ${code} after welcome: reconnect with backoff`, async (t) => {
    const { peer, c, conn } = await connected(t);
    if (code === 1006) conn.kill();
    else conn.close(code, "test");
    const d = await c.next("disconnected");
    assert.equal(d.terminal, false);
    if (code === 1006) assert.ok(d.code === 1006 || d.code === 0, `code ${d.code}`);
    else assert.equal(d.code, code);
    assert.ok(d.retryIn >= 0 && d.retryIn <= 20, `retryIn ${d.retryIn} within the first ceiling`);
    await peer.conn(1, 3000);
    await waitUntil(() => c.client.state === "connected", 3000, "connected again");
    assert.equal(c.client.error, undefined);
    assert.equal(c.client.stats.reconnects, 1);
  });
}

for (const code of terminal) {
  test(`close ${code} after welcome: the client stops`, async (t) => {
    const { peer, c, conn } = await connected(t);
    conn.close(code, "test");
    const d = await c.next("disconnected");
    assert.equal(d.terminal, true);
    assert.equal(d.code, code);
    assert.equal(c.client.state, "closed");
    assert.ok(c.client.error instanceof CloseError, `error ${c.client.error}`);
    assert.equal(c.client.error.code, code);
    assert.equal(c.client.error.reason, "test");
    await sleep(300); // 15 times the first ceiling
    assert.equal(peer.conns.length, 1, "no reconnect");
    assert.equal(c.client.stats.dials, 1);
  });
}

test("4003 without getToken stops; with getToken it is retried once with a fresh token", async (t) => {
  await t.test("static token", async (t) => {
    const { peer, c, conn } = await connected(t, {}, { user: undefined, token: "tok-static" });
    conn.close(4003, "token expired");
    assert.equal((await c.next("disconnected")).terminal, true);
    assert.equal(c.client.error.code, 4003);
    await sleep(300);
    assert.equal(peer.conns.length, 1);
  });
  await t.test("getToken", async (t) => {
    let n = 0;
    // The second connection is refused 4003 before its welcome: terminal.
    const welcome = (conn) => {
      if (conn.n === 1) conn.close(4003, "token expired");
      return conn.n !== 1;
    };
    const { peer, c, conn } = await connected(t, { welcome }, { user: undefined, getToken: () => `tok-${++n}` });
    assert.equal(conn.hello.token, "tok-1");
    conn.close(4003, "token expired");
    const second = await peer.conn(1, 3000);
    assert.equal(second.hello.token, "tok-2", "the retry's hello has a fresh token");
    const term = await c.next("disconnected", (ev) => ev.terminal, { timeout: 3000 });
    assert.equal(term.code, 4003);
    assert.equal(c.client.state, "closed");
    await sleep(300);
    assert.equal(peer.conns.length, 2, "a second refusal before a welcome is terminal");
  });
  await t.test("getToken, welcomed in between", async (t) => {
    let n = 0;
    const { peer, c, conn } = await connected(t, {}, { user: undefined, getToken: () => `tok-${++n}` });
    conn.close(4003, "token expired");
    (await peer.conn(1, 3000)).close(4003, "token expired");
    // The welcome of connection 1 renews the right to one retry.
    assert.equal((await peer.conn(2, 3000)).hello.token, "tok-3");
    await waitUntil(() => c.client.state === "connected" && c.client.stats.connects === 3, 3000, "connected");
  });
});

test("4101 is retried once only when getToken gives a different token", async (t) => {
  await t.test("different token", async (t) => {
    let n = 0;
    const { peer, c, conn } = await connected(t, {}, { user: undefined, getToken: () => `tok-${++n}` });
    conn.close(4101, "invalid token");
    assert.equal((await c.next("disconnected")).terminal, false);
    const second = await peer.conn(1, 3000);
    assert.notEqual(second.hello.token, "tok-1");
    await waitUntil(() => c.client.state === "connected" && c.client.stats.reconnects === 1, 3000, "reconnected");
  });
  await t.test("same token", async (t) => {
    const { peer, c, conn } = await connected(t, {}, { user: undefined, getToken: () => "tok-same" });
    conn.close(4101, "invalid token");
    const d = await c.next("disconnected");
    assert.equal(d.terminal, true);
    assert.equal(c.client.state, "closed");
    assert.equal(c.client.error.code, 4101);
    await sleep(300);
    assert.equal(peer.conns.length, 1);
  });
});

test("1001 after bye waits retry_ms plus jitter in [0, minBackoff]", async (t) => {
  const { peer, c, conn } = await connected(t, {}, { random: () => 0.999999, minBackoff: 20 });
  conn.send({ t: "bye", reason: "draining", retry_ms: 400 });
  const bye = await c.next("bye");
  assert.equal(bye.retryIn, 400);
  conn.close(1001, "draining");
  const closedAt = Date.now();
  const d = await c.next("disconnected");
  assert.equal(d.terminal, false);
  assert.ok(d.retryIn >= 400 && d.retryIn <= 421, `retryIn ${d.retryIn}`);
  const next = await peer.conn(1, 3000);
  assert.ok(next.hello.at - closedAt >= 400 - 30, `reconnected after ${next.hello.at - closedAt} ms, before retry_ms`);
});

test("the backoff ceilings double per failure up to maxBackoff; a bye does not count", async (t) => {
  // Every connection is welcomed and closed at once with 4001, except the
  // fourth, which gets a bye: its reconnect waits retry_ms and the next
  // failure continues the sequence where it was.
  const welcome = (conn) => {
    conn.welcome({ hb: 30000 });
    if (conn.n === 3) {
      conn.send({ t: "bye", reason: "draining", retry_ms: 30 });
      conn.close(1001, "draining");
    } else conn.close(4001, "heartbeat timeout");
    return false;
  };
  const peer = await startPeer({ welcome });
  t.after(() => peer.close());
  const c = newClient(t, { url: peer.url, user: "alice", random: () => 0.999999, minBackoff: 10, maxBackoff: 80 });
  await c.client.connect();
  await waitUntil(() => c.of("disconnected").length >= 8, 5000, "8 disconnects");
  await c.client.close();
  const delays = c.of("disconnected").slice(0, 8).map((ev) => ev.retryIn);
  const want = [10, 20, 40, null, 80, 80, 80, 80];
  want.forEach((ceil, i) => {
    if (ceil === null) assert.ok(delays[i] >= 30 && delays[i] <= 41, `after the bye: ${delays[i]} (all ${delays})`);
    else assert.ok(delays[i] <= ceil && delays[i] >= ceil - 1, `failure ${i}: ${delays[i]}, ceiling ${ceil} (all ${delays})`);
  });
  const retrying = c.of("state").filter((ev) => ev.state === "reconnecting" && ev.retryIn !== undefined);
  assert.ok(retrying.length >= 1, "state events carry retryIn while reconnecting");
});

test("a connection that lived 30 s resets the backoff", async (t) => {
  // Like the Go SDK, the client resets its attempt counter when a welcomed
  // connection is lost after living at least 30 s. Rather than wait 30 s,
  // the test moves Date.now (the clock the SDK measures it with) forward.
  const realNow = Date.now;
  t.after(() => (Date.now = realNow));
  const welcome = (conn) => {
    conn.welcome({ hb: 30000 });
    if (conn.n < 3) conn.close(4001, "heartbeat timeout");
    return false;
  };
  const peer = await startPeer({ welcome });
  t.after(() => peer.close());
  const c = newClient(t, { url: peer.url, user: "alice", random: () => 0.999999, minBackoff: 10, maxBackoff: 80 });
  await c.client.connect();
  const conn = await peer.conn(3, 3000);
  await waitUntil(() => c.client.stats.connects === 4, 3000, "welcomed");
  const skew = 31000;
  Date.now = () => realNow() + skew;
  conn.close(4001, "heartbeat timeout");
  await c.next("disconnected", () => true, { from: c.events.findLastIndex((e) => e.name === "connected") });
  Date.now = realNow;
  const delays = c.of("disconnected").map((ev) => ev.retryIn);
  assert.equal(delays.length, 4, `delays ${delays}`);
  [10, 20, 40, 10].forEach((ceil, i) => assert.ok(delays[i] <= ceil && delays[i] >= ceil - 1, `failure ${i}: ${delays[i]}, ceiling ${ceil} (all ${delays})`));
});
