// The presenced demo: one room at a time, with the SDK used as any page
// would use it. Test hooks (data-testid, data-user, data-status, data-state)
// are a contract with the browser tests: keep them.
import { Client, typingHelper, autoAway } from "./presenced.js";

const $ = (id) => document.getElementById(id);
const ui = {
  badge: document.querySelector('[data-testid="connection"]'),
  rtt: $("rtt"), form: $("join-form"), name: $("name"), token: $("token"),
  room: $("room"), join: $("join"), leave: $("leave"), error: $("error"),
  panel: $("room-panel"), roomName: $("room-name"), count: $("count"),
  status: $("status"), members: $("members"), typing: $("typing"),
  compose: $("message-form"), message: $("message"), sent: $("sent"),
};
const insecure = document.body.dataset.insecure === "true";
const wsPath = document.body.dataset.wsPath || "/ws";
const wsURL = `${location.protocol === "https:" ? "wss" : "ws"}://${location.host}${wsPath}`;

let client = null;   // the Client of the current identity
let identity = "";   // the name (insecure) or token it was made with
let room = "";       // the room joined, "" when none
let typing = null;   // the typingHelper of room
let away = null;     // the autoAway helper of client
let pinger = 0;      // setInterval of the RTT pings
let countdown = 0;   // setInterval of the reconnect countdown

// ---- connection badge and RTT ----

function badge(state, text) {
  ui.badge.dataset.state = state;
  ui.badge.textContent = text;
}

function reconnecting(retryIn) {
  clearInterval(countdown);
  if (retryIn == null) {
    badge("reconnecting", "reconnecting…");
    return;
  }
  const at = Date.now() + retryIn;
  const tick = () => {
    const s = Math.ceil((at - Date.now()) / 1000);
    badge("reconnecting", s > 0 ? `reconnecting in ${s} s` : "reconnecting…");
    if (s <= 0) clearInterval(countdown);
  };
  tick();
  countdown = setInterval(tick, 250);
}

function ping() {
  client?.ping().then(showRTT, () => {});
}

function showRTT(ms) {
  ui.rtt.textContent = `RTT ${ms < 10 ? ms.toFixed(1) : Math.round(ms)} ms`;
}

function watch(c) {
  c.on("state", ({ state, retryIn }) => {
    if (c !== client) return;
    if (state === "connected") {
      clearInterval(countdown);
      badge("connected", "connected");
      clearInterval(pinger);
      pinger = setInterval(ping, 5000);
      ping();
      return;
    }
    clearInterval(pinger);
    ui.rtt.textContent = "RTT –";
    if (state === "closed") {
      clearInterval(countdown);
      badge("offline", "offline");
    } else if (state === "connecting") {
      badge("reconnecting", "connecting…");
    } else {
      reconnecting(retryIn);
    }
  });
  c.on("disconnected", ({ retryIn, terminal, reason, error }) => {
    if (c !== client) return;
    if (terminal) {
      clearInterval(countdown);
      badge("offline", "offline");
      showError(`Disconnected: ${error?.message || reason || "the server refused the connection"}.`);
    } else {
      reconnecting(retryIn);
    }
  });
  c.on("rtt", ({ rtt }) => c === client && showRTT(rtt));
  c.on("room", ({ room: name, view }) => c === client && name === room && render(view));
}

// ---- the room ----

function render(view) {
  const me = client?.welcome?.user;
  const members = view?.members ?? [];
  ui.count.textContent = view ? `${view.count} online${view.partial ? " (partial list)" : ""}` : "";
  ui.members.replaceChildren(...members.map((m) => memberRow(m, m.user === me)));
  ui.typing.textContent = typingLine((view?.typing ?? []).filter((u) => u !== me));
}

function memberRow(m, self) {
  const li = document.createElement("li");
  li.className = "member";
  li.dataset.testid = "member";
  li.dataset.user = m.user;
  li.dataset.status = m.status;
  const avatar = document.createElement("span");
  avatar.className = "avatar";
  avatar.setAttribute("aria-hidden", "true");
  avatar.style.backgroundColor = `hsl(${hash(m.user) % 360} 55% 30%)`;
  avatar.textContent = initials(m.user);
  const name = document.createElement("span");
  name.className = "who";
  name.textContent = self ? `${m.user} (you)` : m.user;
  const status = document.createElement("span");
  status.className = `status status-${/^(online|away|busy)$/.test(m.status) ? m.status : "other"}`;
  status.textContent = m.status;
  li.append(avatar, name, status);
  return li;
}

function typingLine(users) {
  switch (users.length) {
    case 0: return "";
    case 1: return `${users[0]} is typing…`;
    case 2: return `${users[0]} and ${users[1]} are typing…`;
    default: return `${users.length} people are typing…`;
  }
}

function initials(user) {
  const parts = user.split(/[._:@/-]+/).filter(Boolean);
  const s = parts.length > 1 ? parts[0][0] + parts[1][0] : (parts[0] ?? "?").slice(0, 2);
  return s.toUpperCase();
}

// hash is 32-bit FNV-1a of s: a stable colour per user id.
function hash(s) {
  let h = 0x811c9dc5;
  for (let i = 0; i < s.length; i++) h = Math.imul(h ^ s.charCodeAt(i), 0x01000193);
  return h >>> 0;
}

// ---- joining and leaving ----

function showError(text) {
  ui.error.textContent = text;
}

function newClient(id) {
  const c = new Client(insecure ? { url: wsURL, user: id } : { url: wsURL, token: id });
  watch(c);
  return c;
}

async function dropClient() {
  const c = client;
  client = null;
  clearInterval(pinger);
  away?.stop();
  away = null;
  if (c) await c.close().catch(() => {});
}

function startAway() {
  away?.stop();
  away = autoAway(client, { onlineStatus: ui.status.value });
}

async function join(name) {
  showError("");
  const id = (insecure ? ui.name.value : ui.token.value).trim();
  if (!id) {
    showError(insecure ? "Enter a name first." : "Paste a token first.");
    (insecure ? ui.name : ui.token).focus();
    return;
  }
  if (insecure && !ui.name.validity.valid) {
    showError("A name is letters, digits and . _ : @ / - only.");
    ui.name.focus();
    return;
  }
  if (!name || !ui.room.validity.valid) {
    showError("Enter a room name: letters, digits and . _ : @ / - only.");
    ui.room.focus();
    return;
  }
  if (client && (id !== identity || client.error)) { // a new identity, or a client that gave up
    await leaveRoom();
    await dropClient();
  }
  if (room && room !== name) await leaveRoom();
  if (!client) {
    identity = id;
    client = newClient(id);
    startAway();
  }
  room = name;
  typing = typingHelper(client, room);
  ui.roomName.textContent = room;
  ui.panel.hidden = false;
  ui.leave.hidden = false;
  ui.sent.replaceChildren();
  render(client.room(room));
  remember();
  const c = client;
  try {
    await c.connect();
    await c.join(name, { status: ui.status.value });
  } catch (err) {
    if (c !== client || room !== name) return; // superseded meanwhile
    showError(`Could not join ${name}: ${err.message}`);
    if (c.error) await leaveRoom(); // the client stopped: nothing to show
  }
}

async function leaveRoom() {
  if (!room) return;
  const name = room;
  room = "";
  typing?.stop();
  typing = null;
  ui.panel.hidden = true;
  ui.leave.hidden = true;
  remember();
  await client?.leave(name).catch(() => {});
}

// remember puts the name and room in the address, so a reload or a copied
// link joins again (never the token).
function remember() {
  const q = new URLSearchParams(location.search);
  if (insecure && identity) q.set("user", identity);
  if (room) q.set("room", room);
  else q.delete("room");
  const qs = q.toString();
  history.replaceState(null, "", qs ? `${location.pathname}?${qs}` : location.pathname);
}

// ---- wiring ----

ui.form.addEventListener("submit", (ev) => {
  ev.preventDefault();
  join(ui.room.value.trim());
});
ui.leave.addEventListener("click", () => {
  leaveRoom();
  ui.room.focus();
});
ui.status.addEventListener("change", () => {
  if (!client) return;
  startAway();
  if (room) client.set(room, { status: ui.status.value }).catch((err) => showError(`Status not set: ${err.message}`));
});
ui.message.addEventListener("input", () => typing?.keystroke());
ui.compose.addEventListener("submit", (ev) => {
  ev.preventDefault();
  const text = ui.message.value.trim();
  typing?.sent();
  ui.message.value = "";
  if (!text) return;
  const li = document.createElement("li");
  li.textContent = text;
  ui.sent.prepend(li);
});

const params = new URLSearchParams(location.search);
ui.name.closest(".field").hidden = !insecure;
ui.token.closest(".field").hidden = insecure;
if (params.get("room")) ui.room.value = params.get("room");
if (insecure && params.get("user")) ui.name.value = params.get("user");
if (!insecure && params.get("token")) ui.token.value = params.get("token");
if (params.get("room") && (insecure ? ui.name.value : ui.token.value)) join(ui.room.value.trim());
else (insecure ? ui.name : ui.token).focus();
