// Browser end-to-end test of the demo page across a server restart: the
// server is killed (SIGKILL cuts every connection) and started again on the
// same port; both pages' badges go reconnecting, then connected, and both
// pages converge on both members, one row each.

import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import { freshShots, join, launchChromium, openUser, showsExactly, sleep, startDemoServer, withUsers } from "./browser.js";

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

    // Killed: every connection is cut, and stays down until the restart.
    const tKill = Date.now();
    await srv.stop("SIGKILL");
    for (const u of users) {
      await u.when((e) => e.conn === "reconnecting", { since: tKill, what: `${u.user}'s badge goes reconnecting` });
      await u.shot("02-server-down");
    }

    const tStart = Date.now();
    await srv.start();
    for (const u of users) {
      const back = await u.when((e) => e.conn === "connected", {
        since: tStart,
        timeout: RECONNECT,
        what: `${u.user}'s badge goes connected again`,
      });
      console.log(`${u.user}: server started again to the badge showing connected: ${back.t - tStart} ms`);
    }
    for (const u of users) {
      await u.when((e) => e.conn === "connected" && showsExactly(e, ["alice", "bob"]), {
        since: tStart,
        what: `${u.user} sees alice and bob again, once each`,
      });
    }

    // Converged, and it stays so: a few ticks later nothing has doubled or gone.
    await sleep(10 * TICK);
    for (const u of users) {
      const log = await u.log();
      const after = log.filter((e) => e.t >= tStart);
      for (const e of after) {
        const rows = e.members.map((m) => m.user);
        assert.equal(new Set(rows).size, rows.length, `${u.user}'s page showed a member twice: ${rows}`);
      }
      const now = log[log.length - 1];
      assert.equal(now.conn, "connected", `${u.user}'s badge`);
      assert.ok(showsExactly(now, ["alice", "bob"]), `${u.user}'s page shows ${JSON.stringify(now.members)}`);
      const states = log.filter((e) => e.t >= tKill).map((e) => e.conn);
      const down = states.indexOf("reconnecting");
      assert.ok(down >= 0 && states.indexOf("connected", down) > down, `${u.user}'s badge went ${states.join(" → ")}`);
      await u.shot("03-reconnected");
    }
  });
});
