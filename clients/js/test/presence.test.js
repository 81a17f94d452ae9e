// Presence between clients of a real presenced: join, the views they
// build, set, leave, typing, ping and the errors the server answers.

import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import { CommandError, PresenceError, typingHelper } from "../src/presenced.js";
import { newClient, rejectsWith, users, viewWhere } from "./clients.js";
import { sleep } from "./peer.js";
import { startPresenced } from "./presenced.js";

// A short tick makes changes arrive fast; a long typing TTL proves that a
// typing line cleared because the client said on:false; a long leave grace
// proves that a leave came from close 1000; short heartbeats prove the
// client answers them.
let srv;
before(async () => {
  srv = await startPresenced([
    "-insecure", "-tick", "20ms", "-typing-ttl", "20s", "-max-rooms", "3",
    "-leave-grace", "20s", "-hb-interval", "300ms", "-hb-timeout", "300ms",
  ]);
});
after(() => srv?.stop());

async function joined(t, user, room, state) {
  const c = newClient(t, { url: srv.url, user });
  const w = await c.client.connect();
  assert.equal(w.user, user);
  if (room) {
    await c.client.join(room, state);
    await viewWhere(c.client, room, (v) => v.synced);
  }
  return c;
}

test("two clients see each other join, set and leave", async (t) => {
  const room = "chat:presence";
  const a = await joined(t, "alice", room, { status: "online", meta: { name: "Alice" } });
  assert.equal(a.client.state, "connected");
  assert.equal(a.client.welcome.resumed, false);
  const va = a.client.room(room);
  assert.equal(va.room, room);
  assert.equal(typeof va.cursor, "string");
  assert.notEqual(va.cursor, "");
  assert.deepEqual(va.members, [{ user: "alice", status: "online", meta: { name: "Alice" } }]);

  const b = await joined(t, "bob", room, { status: "busy", meta: { name: "Bob" } });
  const want = [
    { user: "alice", status: "online", meta: { name: "Alice" } },
    { user: "bob", status: "busy", meta: { name: "Bob" } },
  ];
  const vb = await viewWhere(b.client, room, (v) => v.count === 2);
  assert.deepEqual(vb.members, want, "bob's sync lists both, sorted by user");
  assert.equal(vb.partial, false);
  assert.deepEqual(vb.typing, []);

  // alice hears of bob's join as a diff that continues her cursor.
  const joinDiff = await a.next("diff", (ev) => ev.room === room && (ev.diff.join ?? []).some((m) => m.user === "bob"));
  assert.ok(Array.isArray(joinDiff.diff.join) && Array.isArray(joinDiff.diff.update) && Array.isArray(joinDiff.diff.leave), "join, update and leave are arrays even when the server omits them");
  assert.equal(joinDiff.diff.from, va.cursor);
  assert.equal(joinDiff.view.cursor, joinDiff.diff.cursor);
  assert.deepEqual((await viewWhere(a.client, room, (v) => v.count === 2)).members, want);

  // set keeps what it leaves out (the meta), and alice sees the update.
  const mark = a.events.length;
  await b.client.set(room, { status: "away" });
  const upd = await a.next("diff", (ev) => ev.room === room && (ev.diff.update ?? []).length > 0, { from: mark });
  assert.deepEqual(upd.diff.update, [{ user: "bob", status: "away", meta: { name: "Bob" } }]);
  const va2 = await viewWhere(a.client, room, (v) => v.members[1]?.status === "away");
  assert.deepEqual(va2.members[1], { user: "bob", status: "away", meta: { name: "Bob" } });
  assert.ok(a.of("room").some((ev) => ev.room === room && ev.view?.count === 2), "room events carry the view");

  // leave: bob forgets the room at once, alice sees him go.
  await b.client.leave(room);
  assert.equal(b.client.room(room), undefined);
  assert.deepEqual(b.client.rooms(), []);
  assert.ok(b.of("room").some((ev) => ev.room === room && ev.view === undefined), "a room event with no view after leave");
  const lv = await a.next("diff", (ev) => ev.room === room && (ev.diff.leave ?? []).includes("bob"));
  assert.equal(lv.diff.count, 1);
  const va3 = await viewWhere(a.client, room, (v) => v.count === 1);
  assert.deepEqual(users(va3), ["alice"]);

  const s = a.client.stats;
  assert.equal(s.connects, 1);
  assert.equal(s.dials, 1);
  assert.ok(s.syncs >= 1 && s.diffs >= 3, `syncs ${s.syncs} diffs ${s.diffs}`);
  assert.equal(s.commands, 1);
  assert.equal(s.gaps, 0);
});

test("room() returns a snapshot and rooms() is sorted", async (t) => {
  const a = await joined(t, "carol", "zz:snap");
  await a.client.join("aa:snap");
  assert.deepEqual(a.client.rooms(), ["aa:snap", "zz:snap"]);
  const v = await viewWhere(a.client, "zz:snap", (v) => v.synced);
  v.members.push({ user: "mallory", status: "x", meta: {} });
  v.count = 99;
  const again = a.client.room("zz:snap");
  assert.notEqual(again, v);
  assert.deepEqual(users(again), ["carol"]);
  assert.equal(again.count, 1);
  assert.equal(a.client.room("never:joined"), undefined);
});

test("the server's refusals reject with CommandError and its code", async (t) => {
  const a = await joined(t, "dave", "r:1");
  const err = await rejectsWith(a.client.set("not:joined", { status: "away" }), CommandError);
  assert.equal(err.code, "not_joined");
  assert.ok(err instanceof PresenceError);
  await a.client.leave("not:joined"); // not_joined counts as left
  await rejectsWith(a.client.join("bad room!"), CommandError).then((e) => assert.equal(e.code, "bad_request"));
  await a.client.join("r:2");
  await a.client.join("r:3");
  const tooMany = await rejectsWith(a.client.join("r:4"), CommandError);
  assert.equal(tooMany.code, "too_many_rooms");
  assert.deepEqual(a.client.rooms(), ["r:1", "r:2", "r:3"], "a refused join forgets the room");
  assert.ok(a.client.stats.commandErrors >= 2);
  assert.equal(a.client.state, "connected", "a refused command does not end the connection");
});

test("ping measures the round trip", async (t) => {
  const a = await joined(t, "erin");
  assert.equal(a.client.rtt, undefined);
  const rtt = await a.client.ping();
  assert.equal(typeof rtt, "number");
  assert.ok(rtt >= 0 && rtt < 5000, `rtt ${rtt}`);
  assert.equal(a.client.rtt, rtt);
  assert.deepEqual(a.of("rtt").at(-1), { rtt });
});

test("the typing helper shows and clears the typing line of the other client", async (t) => {
  const room = "chat:typing";
  const a = await joined(t, "frank", room);
  const b = await joined(t, "grace", room);
  await viewWhere(a.client, room, (v) => v.count === 2);
  assert.equal(a.client.typing(room, false), true, "typing is true while connected");

  const h = typingHelper(a.client, room, { interval: 200, idle: 400 });
  t.after(() => h.stop());
  let typedAt = Date.now();
  h.keystroke();
  await viewWhere(b.client, room, (v) => v.typing.includes("frank"), 3000);
  // Keystrokes keep it up, then idle clears it (long before -typing-ttl 20s).
  for (let i = 0; i < 5; i++) {
    await sleep(60);
    h.keystroke();
    typedAt = Date.now();
  }
  await viewWhere(b.client, room, (v) => v.typing.length === 0, 400 + 3000);
  assert.ok(Date.now() - typedAt >= 400 - 50, "cleared no sooner than idle after the last keystroke");

  // sent() clears at once: well before a long idle.
  const h2 = typingHelper(a.client, room, { interval: 200, idle: 10000 });
  t.after(() => h2.stop());
  h2.keystroke();
  await viewWhere(b.client, room, (v) => v.typing.includes("frank"), 3000);
  h2.sent();
  await viewWhere(b.client, room, (v) => v.typing.length === 0, 3000); // the idle is 10 s
  // A keystroke after sent() starts a new burst.
  h2.keystroke();
  await viewWhere(b.client, room, (v) => v.typing.includes("frank"), 200 + 3000);
  h2.stop();
  await viewWhere(b.client, room, (v) => v.typing.length === 0, 3000);
});

test("the client answers the server's heartbeats: the connection outlives many of them", async (t) => {
  const a = await joined(t, "hank", "chat:hb");
  await sleep(6 * 300);
  assert.equal(a.client.state, "connected");
  assert.equal(a.client.stats.disconnects, 0);
  assert.ok(a.client.stats.pings >= 3, `pings ${a.client.stats.pings}`);
});

test("close() leaves at once: the other client sees the leave long before leave_grace", async (t) => {
  const room = "chat:close";
  const a = await joined(t, "ivan", room);
  const b = await joined(t, "judy", room);
  await viewWhere(a.client, room, (v) => v.count === 2);
  await b.client.close();
  await viewWhere(a.client, room, (v) => v.count === 1, 5000); // the leave grace is 20 s
  assert.deepEqual(users(a.client.room(room)), ["ivan"]);
});

test("on() returns its unsubscribe function; stats is a snapshot", async (t) => {
  const a = await joined(t, "kate");
  const seen = [];
  const off = a.client.on("sync", (ev) => seen.push(ev.room));
  await a.client.join("r:on");
  await viewWhere(a.client, "r:on", (v) => v.synced);
  off();
  const fn = (ev) => seen.push(`off:${ev.room}`);
  a.client.on("sync", fn);
  a.client.off("sync", fn);
  await a.client.join("r:off");
  await viewWhere(a.client, "r:off", (v) => v.synced);
  assert.deepEqual(seen, ["r:on"]);
  const st = a.client.stats;
  st.syncs = 1000;
  assert.notEqual(a.client.stats.syncs, 1000);
});
