// Compiled (never run) by types.test.js with tsc --strict: the SDK's
// hand-written types must accept what docs/js.md shows and refuse misuse.
import {
  Client, CloseCodes, CloseError, CommandError, autoAway, backoff, shouldReconnect, typingHelper,
  type Diff, type Member, type RoomView, type Welcome,
} from "../src/presenced.js";

// Compiled without the DOM library: the SDK's types must not need it.
declare const console: { log(...args: unknown[]): void; debug(...args: unknown[]): void; info(...args: unknown[]): void; warn(...args: unknown[]): void };

async function usage(): Promise<void> {
  const c = new Client({ url: "ws://127.0.0.1:8080/ws", getToken: async () => "jwt", minBackoff: 100, logger: console });
  const off = c.on("room", ({ room, view }) => {
    const v: RoomView | undefined = view;
    const names: string[] = v ? v.members.map((m: Member) => m.user) : [];
    console.log(room, names, v?.typing.length, v?.count, v?.partial);
  });
  off();
  c.on("diff", ({ diff }: { diff: Diff }) => diff.typing?.length);
  c.on("disconnected", (e) => e.terminal && e.error instanceof CloseError && e.error.code === CloseCodes.unauthorized);
  c.on("state", ({ state, retryIn }) => state === "reconnecting" && retryIn !== undefined);
  const w: Welcome = await c.connect();
  console.log(w.node, w.resumed, c.state, c.rtt, c.stats.gaps);
  await c.join("chat:42", { status: "online", meta: { name: "Alice" } }, { timeout: 5000 });
  await c.set("chat:42", { status: "away" });
  try {
    await c.leave("chat:42");
  } catch (e) {
    if (e instanceof CommandError && e.code === "not_joined") console.log("left");
  }
  const ok: boolean = c.typing("chat:42", true);
  const rtt: number = await c.ping();
  const t = typingHelper(c, "chat:42", { interval: 2000 });
  t.keystroke();
  t.sent();
  const a = autoAway(c, { after: 60000, rooms: ["chat:42"] });
  console.log(ok, rtt, a.away, shouldReconnect(4001), backoff(3, 500, 30000));
  a.stop();
  await c.close();
  // @ts-expect-error: an unknown event
  c.on("nope", () => {});
  // @ts-expect-error: the url is required
  new Client({ user: "alice" });
  // @ts-expect-error: typing takes a boolean
  c.typing("chat:42", "yes");
}
void usage;
