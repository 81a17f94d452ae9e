// Browser end-to-end test of the demo page across a server restart: the
// server is killed (SIGKILL cuts every connection) and started again on the
// same port; both pages' badges go reconnecting, then connected, and both
// pages converge on both members, one row each.

import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import { eventually, freshShots, join, launchChromium, openUser, showsExactly, sleep, startDemoServer, withUsers } from "./browser.js";

const TICK = 100; // -tick
// The SDK's reconnect backoff is full jitter from 500 ms doubling to 30 s:
// after an outage of a few seconds the next attempt comes within ~16 s.
const RECONNECT = 30000;

let browser;
let srv;

before(async () => {
  srv = await startDemoServer(["-tick", `${TICK}ms`, "-leave-grace", "1s"]);
  browser = await launchChromium();
});

after(async () => {
  await browser?.close();
  await srv?.stop();
});

/**
 * Waits until each page's badge, after tKill, went reconnecting, then
 * connected, and the page shows both members; then checks that it stays so
 * for a few ticks and that no page showed a member twice since it went
 * reconnecting. The reconnects are logged as measured from since, which
 * sinceWhat names.
 */
async function converged(users, tKill, since, sinceWhat, step) {
  for (const u of users) {
    const back = await eventually(
      async () => {
        const log = await u.log();
        const down = log.findIndex((e) => e.t >= tKill && e.conn === "reconnecting");
        return down >= 0 && log.slice(down).find((e) => e.conn === "connected");
      },
      { timeout: RECONNECT, what: `${u.user}'s badge goes reconnecting, then connected` },
    );
    console.log(`${step}: ${u.user}'s badge connected again ${back.t - since} ms after ${sinceWhat}`);
  }
  for (const u of users) {
    await u.when((e) => e.conn === "connected" && showsExactly(e, ["alice", "bob"]), {
      since: tKill,
      what: `${u.user} sees alice and bob again, once each`,
    });
  }
  await sleep(10 * TICK);
  for (const u of users) {
    const log = await u.log();
    const down = log.findIndex((e) => e.t >= tKill && e.conn === "reconnecting");
    for (const e of log.slice(down)) {
      const rows = e.members.map((m) => m.user);
      assert.equal(new Set(rows).size, rows.length, `${u.user}'s page showed a member twice: ${rows}`);
    }
    const now = log[log.length - 1];
    assert.equal(now.conn, "connected", `${u.user}'s badge`);
    assert.ok(showsExactly(now, ["alice", "bob"]), `${u.user}'s page shows ${JSON.stringify(now.members)}`);
    await u.shot(step);
  }
}

test("after a server restart both pages reconnect and converge with no duplicate members", { timeout: 120000 }, async () => {
  const name = "restart";
  freshShots(name);
  await withUsers(srv, async (users) => {
    const room = "e2e-restart";
    const alice = await openUser(browser, srv, "alice", room, name);
    users.push(alice);
    const bob = await openUser(browser, srv, "bob", undefined, name);
    users.push(bob);
    await join(bob, room);
    for (const u of users) {
      await u.when((e) => e.conn === "connected" && showsExactly(e, ["alice", "bob"]), { what: `${u.user} sees both, connected` });
      await u.shot("01-both-joined");
    }

    // Killed and started again at once: the badge's reconnecting may last
    // only until the first attempt; the pages' records keep it.
    let tKill = Date.now();
    await srv.restart("SIGKILL");
    await converged(users, tKill, tKill, "the kill", "02-restarted");

    // Killed, and down until every badge shows reconnecting.
    tKill = Date.now();
    await srv.stop("SIGKILL");
    for (const u of users) {
      await u.when((e) => e.conn === "reconnecting", { since: tKill, what: `${u.user}'s badge goes reconnecting` });
      await u.shot("03-server-down");
    }
    const tStart = Date.now();
    await srv.start();
    await converged(users, tKill, tStart, "the server started again", "04-reconnected");
  });
});
