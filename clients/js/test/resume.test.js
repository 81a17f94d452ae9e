// Connection losses against a real presenced: a cut TCP connection is
// resumed within the leave grace without the others seeing a leave or a
// join, and a server restart is survived with every room re-joined.

import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import { newClient, users, viewWhere } from "./clients.js";
import { sleep, waitUntil } from "./peer.js";
import { startPresenced } from "./presenced.js";

const grace = 2000;
let srv;
before(async () => {
  srv = await startPresenced(["-insecure", "-tick", "20ms", "-leave-grace", `${grace}ms`, "-drain", "500ms"]);
});
after(() => srv?.stop());

async function joined(t, user, rooms, opts = {}) {
  const c = newClient(t, { url: srv.url, user, ...opts });
  await c.client.connect();
  for (const [room, state] of rooms) {
    await c.client.join(room, state);
    await viewWhere(c.client, room, (v) => v.synced);
  }
  return c;
}

const touches = (ev, user) =>
  (ev.diff?.join ?? []).some((m) => m.user === user) || (ev.diff?.leave ?? []).includes(user);

test("a cut connection resumes its room from its cursor; the others see no leave and no join", async (t) => {
  const room = "chat:cut";
  const a = await joined(t, "alice", [[room, { status: "online", meta: { name: "Alice" } }]]);
  const b = await joined(t, "bob", [[room]]);
  await viewWhere(a.client, room, (v) => v.count === 2);
  await viewWhere(b.client, room, (v) => v.count === 2);

  const cursor = a.client.room(room).cursor;
  const syncs = a.client.stats.syncs;
  const markA = a.events.length;
  const markB = b.events.length;
  const cutAt = Date.now();
  a.cut();
  // Something changes while alice is away: she must get it as the diff
  // that continues her cursor.
  await b.client.set(room, { status: "busy" });

  const w = await a.next("connected", () => true, { from: markA, timeout: grace });
  assert.equal(w.resumed, true, "the hello resumed the room");
  assert.equal(a.client.welcome.resumed, true);
  const first = await a.next("diff", (ev) => ev.room === room, { from: markA, timeout: 3000 }).catch(() => null);
  const roomEvents = a.events.slice(markA).filter((e) => (e.name === "sync" || e.name === "diff") && e.ev.room === room);
  assert.ok(first, `a diff after the resume; got ${JSON.stringify(roomEvents.map((e) => e.name))}`);
  assert.equal(roomEvents[0].name, "diff", "the resumed room answers with a diff, not a sync");
  assert.equal(roomEvents[0].ev.diff.from, cursor, "the diff continues the cursor from before the cut");
  assert.equal(a.client.stats.syncs, syncs, "no sync was needed");
  assert.equal(a.client.stats.gaps, 0);
  const va = await viewWhere(a.client, room, (v) => v.members.find((m) => m.user === "bob")?.status === "busy");
  assert.deepEqual(users(va), ["alice", "bob"]);
  assert.equal(va.count, 2);

  const states = a.of("state").map((e) => e.state);
  assert.ok(states.includes("reconnecting"), `states ${states}`);
  assert.equal(a.client.state, "connected");
  assert.equal(a.client.stats.reconnects, 1);
  assert.ok(a.client.stats.disconnects >= 1);
  const disc = a.events.slice(markA).find((e) => e.name === "disconnected").ev;
  assert.equal(disc.terminal, false);

  // Past the leave grace, bob has still seen neither a leave nor a join of alice.
  await sleep(Math.max(0, cutAt + grace + 500 - Date.now()));
  const seen = b.events.slice(markB).filter((e) => e.name === "diff" && touches(e.ev, "alice"));
  assert.deepEqual(seen.map((e) => e.ev.diff), [], "bob saw alice leave or join");
  assert.deepEqual(users(b.client.room(room)), ["alice", "bob"]);
  assert.deepEqual(b.client.room(room).members[0], { user: "alice", status: "online", meta: { name: "Alice" } });
});

test("after a server restart both clients reconnect, re-join every room and converge", async (t) => {
  const opts = { minBackoff: 50, maxBackoff: 300 };
  const a = await joined(
    t,
    "carol",
    [
      ["r:one", { status: "online", meta: { n: 1 } }],
      ["r:two", { status: "busy", meta: { n: 2 } }],
    ],
    opts,
  );
  const b = await joined(t, "dan", [["r:one"], ["r:two"]], opts);
  for (const c of [a, b]) for (const r of ["r:one", "r:two"]) await viewWhere(c.client, r, (v) => v.count === 2);
  // The views before the restart already list both members: what proves
  // the convergence is a view from the new process (a new cursor).
  const before = new Map([a, b].map((c) => [c, Object.fromEntries(["r:one", "r:two"].map((r) => [r, c.client.room(r).cursor]))]));
  const markA = a.events.length;

  await srv.restart();

  for (const c of [a, b]) await waitUntil(() => c.client.stats.reconnects === 1 && c.client.state === "connected", 15000, "a reconnect");
  // A restarted node has new epochs: the rooms come back as syncs, with
  // both members once both clients are back, and each member once.
  const want = {
    "r:one": [
      { user: "carol", status: "online", meta: { n: 1 } },
      { user: "dan", status: "online", meta: {} },
    ],
    "r:two": [
      { user: "carol", status: "busy", meta: { n: 2 } },
      { user: "dan", status: "online", meta: {} },
    ],
  };
  for (const c of [a, b]) {
    assert.deepEqual(c.client.rooms(), ["r:one", "r:two"]);
    for (const r of ["r:one", "r:two"]) {
      const fresh = (v) => v.cursor !== before.get(c)[r];
      const v = await viewWhere(c.client, r, (v) => fresh(v) && JSON.stringify(v.members) === JSON.stringify(want[r]), 5000).catch(
        () => c.client.room(r),
      );
      assert.ok(fresh(v), `${c.client.welcome.user} in ${r}: a view from the restarted server`);
      assert.deepEqual(v.members, want[r], `${c.client.welcome.user} in ${r}`);
      assert.equal(v.count, 2);
    }
  }
  assert.ok(a.events.slice(markA).some((e) => e.name === "sync" && e.ev.room === "r:one"), "a sync after the restart");
  assert.equal(a.client.welcome.resumed, true);
  assert.equal(a.client.stats.reconnects, 1);
  assert.ok(a.client.stats.dials >= 2);
});

test("a drain (SIGTERM): bye, then 1001, a reconnect after retry_ms, and the room back", async (t) => {
  const opts = { minBackoff: 50, maxBackoff: 300 };
  const a = await joined(t, "erin", [["r:drain", { status: "online", meta: { e: 1 } }]], opts);
  const b = await joined(t, "fred", [["r:drain"]], opts);
  await viewWhere(a.client, "r:drain", (v) => v.count === 2);
  const before = a.client.room("r:drain").cursor;

  await srv.restart("SIGTERM");

  const bye = await a.next("bye");
  assert.ok(bye.retryIn >= 0 && bye.retryIn < 500, `retry_ms ${bye.retryIn} within -drain 500ms`);
  const d = a.of("disconnected")[0];
  assert.equal(d.code, 1001);
  assert.equal(d.terminal, false);
  assert.ok(d.retryIn >= bye.retryIn && d.retryIn <= bye.retryIn + 50, `retryIn ${d.retryIn} after bye ${bye.retryIn}`);
  for (const c of [a, b]) await waitUntil(() => c.client.state === "connected" && c.client.stats.reconnects >= 1, 15000, "a reconnect");
  const v = await viewWhere(a.client, "r:drain", (v) => v.cursor !== before && v.count === 2, 5000);
  assert.deepEqual(v.members, [
    { user: "erin", status: "online", meta: { e: 1 } },
    { user: "fred", status: "online", meta: {} },
  ]);
  assert.equal(a.client.error, undefined);
});
