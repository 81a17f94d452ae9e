// Tokens against a real presenced with -jwt-secret: 4101 stops the client,
// refresh renews the token, and 4003 (token expired) is retried once with a
// fresh token from getToken, as the Go SDK does.

import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import { CloseError } from "../src/presenced.js";
import { newClient, rejectsWith, viewWhere } from "./clients.js";
import { sleep, waitUntil } from "./peer.js";
import { mintToken, startPresenced } from "./presenced.js";

const secret = "sdk-test-secret";
// No leeway, so that a token is expired when its exp says so; a short
// auth grace, so that 4003 comes soon after exp.
let srv;
before(async () => {
  srv = await startPresenced(["-jwt-secret", secret, "-jwt-leeway", "1ms", "-auth-grace", "300ms", "-tick", "20ms"]);
});
after(() => srv?.stop());

/** Asserts the client stopped for good on code: closed, and no more dials for a while. */
async function assertStopped(c, code) {
  assert.equal(c.client.state, "closed");
  assert.ok(c.client.error instanceof CloseError, `error ${c.client.error}`);
  assert.equal(c.client.error.code, code);
  const term = c.of("disconnected").filter((ev) => ev.terminal);
  assert.equal(term.length, 1, "one terminal disconnected event");
  assert.equal(term[0].code, code);
  const dials = c.client.stats.dials;
  await sleep(600); // many times the backoff the tests use
  assert.equal(c.client.stats.dials, dials, "no dial after the client stopped");
  assert.equal(c.client.state, "closed");
}

test("4101 with a bad static token: connect rejects, the client stops, no more dials", async (t) => {
  const c = newClient(t, { url: srv.url, token: mintToken("another-secret", "alice") });
  const err = await rejectsWith(c.client.connect(), CloseError);
  assert.equal(err.code, 4101);
  assert.equal(c.client.stats.dials, 1);
  await assertStopped(c, 4101);
});

test("4101 when getToken gives the same refused token again: no retry loop", async (t) => {
  let calls = 0;
  const bad = mintToken("another-secret", "alice");
  const c = newClient(t, {
    url: srv.url,
    getToken: () => {
      calls++;
      return bad;
    },
  });
  const err = await rejectsWith(c.client.connect(), CloseError);
  assert.equal(err.code, 4101);
  assert.ok(c.client.stats.dials <= 2, `dials ${c.client.stats.dials}`);
  assert.ok(calls >= 1 && calls <= 2, `getToken calls ${calls}`);
  await assertStopped(c, 4101);
});

test("refresh: a token expiring within 60 s is renewed with getToken, the connection stays", async (t) => {
  const tokens = [];
  const c = newClient(t, {
    url: srv.url,
    getToken: async () => {
      const tok = mintToken(secret, "alice", tokens.length === 0 ? 62 : 3600);
      tokens.push(tok);
      return tok;
    },
  });
  await c.client.connect();
  await c.client.join("chat:refresh");
  // The server asks at once for a token with less than 60 s left, else 60 s
  // before exp: here within about 2 s.
  await c.next("refreshed", () => true, { timeout: 2000 + 3000 });
  assert.equal(c.client.stats.refreshes, 1);
  assert.equal(tokens.length, 2, "getToken for the hello, then for the refresh");
  assert.equal(c.client.stats.connects, 1);
  assert.equal(c.client.stats.disconnects, 0);
  assert.equal(c.client.state, "connected");
  await c.client.set("chat:refresh", { status: "away" }); // still usable
});

test("4003 without getToken stops the client", async (t) => {
  const c = newClient(t, { url: srv.url, token: mintToken(secret, "bob", 2) });
  await c.client.connect();
  await c.next("disconnected", (ev) => ev.terminal, { timeout: 2000 + 300 + 3000 });
  await assertStopped(c, 4003);
  assert.equal(c.client.stats.dials, 1);
});

test("4003 when getToken returns the same token: at most one retry, then stop on 4101", async (t) => {
  const tok = mintToken(secret, "carol", 2);
  let calls = 0;
  const c = newClient(t, {
    url: srv.url,
    getToken: () => {
      calls++;
      return tok;
    },
  });
  await c.client.connect();
  await c.client.join("chat:expire");
  // The token expires within 2 s. The server asks for refreshes, which the
  // same token answers until one auth comes after exp: err unauthorized and
  // close 4101, where getToken's token is the refused one, so the Go SDK
  // stops. If instead 4003 comes first (300 ms after exp), the one retry's
  // hello carries the same, now expired, token and is refused with 4101.
  const term = await c.next("disconnected", (ev) => ev.terminal, { timeout: 2000 + 300 + 3000 });
  const codes = c.of("disconnected").map((ev) => ev.code);
  assert.equal(term.code, 4101, `codes ${codes}`);
  if (codes[0] === 4003) assert.equal(c.client.stats.dials, 2, `one retry after 4003; codes ${codes}`);
  else assert.deepEqual([codes, c.client.stats.dials], [[4101], 1], "no retry when getToken gives the refused token");
  await assertStopped(c, 4101);
  assert.ok(calls >= 2, `getToken calls ${calls}`);
});

test("4003 when getToken fails: the client keeps retrying, and recovers once getToken works", async (t) => {
  let mode = "short";
  let calls = 0;
  const c = newClient(t, {
    url: srv.url,
    getToken: async () => {
      calls++;
      if (mode === "short") {
        mode = "fail";
        return mintToken(secret, "dave", 2);
      }
      if (mode === "fail") throw new Error("token service down");
      return mintToken(secret, "dave", 3600);
    },
  });
  await c.client.connect();
  await c.client.join("chat:recover");
  // The refresh fails: an error event, the connection stays until 4003.
  await c.next("error", () => true, { timeout: 3000 });
  await c.next("disconnected", (ev) => ev.code === 4003, { timeout: 2000 + 300 + 3000 });
  // A failing getToken is not a refusal by the server: the client goes on.
  const callsAt4003 = calls;
  await waitUntil(() => calls >= callsAt4003 + 2, 3000, "getToken retried");
  assert.equal(c.client.state, "reconnecting");
  assert.equal(c.client.error, undefined);
  assert.ok(!c.of("disconnected").some((ev) => ev.terminal), "no terminal disconnect");

  mode = "ok";
  await waitUntil(() => c.client.state === "connected", 3000, "a reconnect");
  assert.equal(c.client.stats.reconnects, 1);
  await viewWhere(c.client, "chat:recover", (v) => v.synced && v.members.some((m) => m.user === "dave"));
});
