// presenced JavaScript SDK: protocol v1 (docs/protocol.md), zero
// dependencies, for browsers and Node >= 18. Types: presenced.d.ts; guide:
// docs/js.md. It behaves as the Go SDK (client/) does, with one difference:
// connect() retries the first connection too (a page may load while the
// server restarts); only the close codes that forbid a reconnect stop it.

/** The contract's close codes by name. */
export const CloseCodes = Object.freeze({
  normal: 1000, goingAway: 1001, protocolError: 1002, unsupported: 1003,
  invalidPayload: 1007, policyViolation: 1008, tooBig: 1009, internalError: 1011,
  heartbeat: 4001, slowConsumer: 4002, tokenExpired: 4003, helloTimeout: 4004,
  rateLimited: 4029, badRequest: 4100, unauthorized: 4101, forbidden: 4103, version: 4105,
});

/** Whether a close code allows an automatic reconnect (the contract's table). */
export function shouldReconnect(code) {
  return ![1000, 1002, 1003, 1007, 1009].includes(code) && !(code >= 4100 && code <= 4199);
}

/** Full jitter: a random delay in [0, min(max, min·2^attempt)] ms. */
export function backoff(attempt, min, max, random = Math.random) {
  if (!(min > 0 && max > 0)) return 0;
  const ceil = Math.min(max, min * 2 ** Math.min(Math.max(attempt, 0), 52));
  return Math.min(ceil, Math.floor(random() * (ceil + 1)));
}

export class PresenceError extends Error {}
PresenceError.prototype.name = "PresenceError";
export class CommandError extends PresenceError {
  constructor(code, msg) {
    super(`presenced: ${code}${msg ? `: ${msg}` : ""}`);
    this.code = code;
  }
}
CommandError.prototype.name = "CommandError";
export class CloseError extends PresenceError {
  constructor(code, reason = "") {
    super(`presenced: closed with ${code}${reason ? ` (${reason})` : ""}`);
    this.code = code;
    this.reason = reason;
  }
}
CloseError.prototype.name = "CloseError";
export class TimeoutError extends PresenceError {}
TimeoutError.prototype.name = "TimeoutError";
export class DisconnectedError extends PresenceError {}
DisconnectedError.prototype.name = "DisconnectedError";
export class ClosedError extends PresenceError {}
ClosedError.prototype.name = "ClosedError";

const ID = /^[A-Za-z0-9._:@/-]{1,128}$/;
const STABLE = 30000; // a connection that lived this long resets the backoff
const CLOSE_WAIT = 1000; // close() waits this long for the server's close frame
const ABANDON = 4000; // close code of a connection the client gives up on (members stay for leave_grace)
const noop = () => {};

const validRoom = (room) => typeof room === "string" && ID.test(room);
const freeze = (o) => {
  if (o && typeof o === "object" && !Object.isFrozen(o)) Object.values(Object.freeze(o)).forEach(freeze);
  return o;
};
// Members are frozen and shared by the views and events: never copied.
const member = (m) => freeze({ user: m.u, status: m.s, meta: m.m || {} });
const members = (a) => (a || []).map(member);
const stateKey = (st) => `${(st && st.status) || "online"}\0${st && st.meta ? JSON.stringify(st.meta) : ""}`;
// copyState keeps a copy of the application's state, never its objects.
const copyState = (st) => st && { status: st.status || undefined, meta: st.meta && JSON.parse(JSON.stringify(st.meta)) };
// fullState is the whole state a room is restored to after a resume: the
// server keeps what a set leaves out, which would be the hello's.
const fullState = (st) => ({ status: (st && st.status) || "online", meta: (st && st.meta) || {} });

function viewOf(r) {
  return {
    room: r.name, cursor: r.cursor, count: r.count, partial: r.partial, synced: r.synced,
    members: [...r.members.values()].sort((a, b) => (a.user < b.user ? -1 : a.user > b.user ? 1 : 0)),
    typing: [...r.typing],
  };
}

/** One logical presence connection that survives reconnects. */
export class Client {
  constructor(options) {
    const o = { minBackoff: 500, maxBackoff: 30000, heartbeatTimeout: 10000, connectTimeout: 10000,
      commandTimeout: 10000, random: Math.random, logger: {}, ...options };
    if (!o.url) throw new TypeError("presenced: options.url is required");
    if (!o.token && !o.getToken && !o.user) throw new TypeError("presenced: one of options.token, getToken or user is required");
    if (o.maxBackoff < o.minBackoff) throw new RangeError("presenced: maxBackoff is below minBackoff");
    o.WebSocket = o.WebSocket || globalThis.WebSocket;
    if (!o.WebSocket) throw new TypeError("presenced: no global WebSocket: pass options.WebSocket (e.g. the ws package)");
    this._o = o;
    this._on = new Map(); // event name -> Set of listeners
    this._rooms = new Map(); // the joined rooms (the resume set)
    this._pending = new Map(); // id -> command waiting for ack or err
    this._pings = new Map(); // ts -> ping waiting for pong
    this._tokens = new Set(); // the timers of getToken calls in flight
    this._id = 0;
    this._s = null; // the current connection: an attempt, or welcomed
    this._ws = null; // the welcomed connection, null while (re)connecting
    this._state = "connecting";
    this._attempt = 0; // failures since the backoff was last reset
    this._authRetried = false;
    this._fresh = ""; // a fresh token already fetched for the next hello
    this._stats = { dials: 0, connects: 0, reconnects: 0, disconnects: 0, syncs: 0, diffs: 0, gaps: 0,
      pings: 0, refreshes: 0, commands: 0, commandErrors: 0 };
  }

  get state() { return this._state; }
  get welcome() { return this._welcome; }
  get rtt() { return this._rtt; }
  get error() { return this._err; }
  get stats() { return { ...this._stats }; }

  on(event, fn) {
    if (!this._on.has(event)) this._on.set(event, new Set());
    this._on.get(event).add(fn);
    return () => this.off(event, fn);
  }

  off(event, fn) { this._on.get(event)?.delete(fn); }

  _emit(event, ev) {
    for (const fn of [...(this._on.get(event) || [])]) {
      try { fn(ev); } catch (e) { this._log("warn", `listener of ${event} threw`, e); }
    }
  }

  _log(level, msg, ...args) { this._o.logger[level]?.(`presenced: ${msg}`, ...args); }

  _setState(state, retryIn) {
    this._state = state;
    this._emit("state", retryIn === undefined ? { state } : { state, retryIn });
  }

  connect() {
    if (this._err) return Promise.reject(this._err);
    if (!this._ready) {
      this._ready = {};
      this._ready.promise = new Promise((resolve, reject) => Object.assign(this._ready, { resolve, reject }));
      if (this._err) this._ready.reject(this._err);
      else if (this._welcome) this._ready.resolve(this._welcome);
      else this._dial();
    }
    return this._ready.promise;
  }

  room(name) {
    const r = this._rooms.get(name);
    return r && viewOf(r);
  }

  rooms() { return [...this._rooms.keys()].sort(); }

  // Connections.

  async _dial() {
    if (this._err) return;
    this._stats.dials++;
    const s = { token: this._fresh, dead: false, welcomed: 0, hb: 0, bye: -1, seen: 0, sets: [], t: 0 };
    this._fresh = "";
    this._s = s;
    s.t = setTimeout(() => this._lost(s, 0, `no welcome within ${this._o.connectTimeout} ms`), this._o.connectTimeout);
    try {
      if (!s.token && this._o.getToken) s.token = await this._token();
      else if (!s.token) s.token = this._o.token || "";
    } catch (e) {
      return this._lost(s, 0, "token", e);
    }
    if (s.dead) return;
    let ws;
    try {
      ws = new this._o.WebSocket(this._o.url);
    } catch (e) { // a URL the constructor refuses will not get better
      clearTimeout(s.t);
      return this._stop(e, 0);
    }
    s.ws = ws;
    // Some WebSockets (Node 20's) fire error and never close when the
    // connection is refused: before open, an error is a failed attempt.
    ws.onerror = () => !s.dead && !s.opened && this._lost(s, 0, "connection failed");
    ws.onopen = () => {
      s.opened = true;
      if (!s.dead) this._send(s, this._hello(s));
    };
    ws.onmessage = (e) => !s.dead && this._message(s, e.data);
    ws.onclose = (e) => {
      s.closed?.();
      if (!s.dead) this._lost(s, e.code === 1005 || e.code === 1006 ? 0 : e.code, e.reason);
    };
  }

  // _token calls getToken, bounded by connectTimeout and by the client's
  // stop (its timer must not outlive close()).
  _token() {
    let t;
    const ms = this._o.connectTimeout;
    return Promise.race([
      Promise.resolve().then(() => this._o.getToken()),
      new Promise((_, reject) => {
        t = setTimeout(() => reject(new TimeoutError(`presenced: getToken: no token within ${ms} ms`)), ms);
        this._tokens.add(t);
      }),
    ]).finally(() => {
      clearTimeout(t);
      this._tokens.delete(t);
    });
  }

  _send(s, msg) {
    try {
      s.ws.send(typeof msg === "string" ? msg : JSON.stringify(msg));
      return true;
    } catch (e) {
      this._log("debug", "send failed", e);
      return false;
    }
  }

  // _hello encodes the hello: the credentials, every joined room with its
  // cursor, and the state most of them share; the rooms whose state
  // differs get a set right after the welcome.
  _hello(s) {
    const h = { t: "hello", v: 1 };
    if (s.token) h.token = s.token;
    else h.user = this._o.user;
    if (this._rooms.size) {
      const names = this.rooms();
      const count = new Map();
      h.resume = {};
      for (const n of names) {
        const k = stateKey(this._rooms.get(n).state);
        h.resume[n] = this._rooms.get(n).cursor;
        count.set(k, (count.get(k) || 0) + 1);
      }
      let best;
      for (const n of names) {
        const st = this._rooms.get(n).state;
        const k = stateKey(st);
        if (best === undefined || count.get(k) > count.get(best)) {
          best = k;
          h.state = copyState(st) || undefined;
        }
      }
      s.sets = names.filter((n) => stateKey(this._rooms.get(n).state) !== best);
    }
    s.resumed = !!h.resume;
    return h;
  }

  _message(s, data) {
    let m;
    try {
      m = JSON.parse(data);
    } catch {
      return this._log("warn", "bad server message");
    }
    s.seen = Date.now();
    if (!s.welcomed) {
      return m.t === "welcome" ? this._adopt(s, m) : this._lost(s, 0, `expected welcome, got ${m.t}`);
    }
    switch (m.t) {
      case "ping":
        this._stats.pings++;
        this._send(s, { t: "pong", ts: m.ts });
        break;
      case "pong": {
        const p = this._pings.get(m.ts);
        if (p) p.done();
        break;
      }
      case "ack":
        this._answer(m.id);
        break;
      case "err": {
        this._stats.commandErrors++;
        const err = new CommandError(m.code, m.msg);
        if (!m.id || !this._answer(m.id, err)) this._emit("error", { error: err });
        break;
      }
      case "sync":
        this._sync(m);
        break;
      case "diff":
        this._diff(s, m);
        break;
      case "refresh":
        this._refresh(s);
        break;
      case "bye":
        s.bye = Math.max(0, +m.retry_ms || 0);
        this._emit("bye", { retryIn: s.bye });
    }
  }

  // _adopt makes s, just welcomed, the client's connection: it sends the
  // resume sets, then the commands pending from the last connection.
  _adopt(s, m) {
    clearTimeout(s.t);
    s.welcomed = Date.now();
    s.hb = +m.hb || 0;
    const first = !this._welcome;
    this._welcome = { node: m.node, conn: m.conn, user: m.user, resumed: s.resumed };
    this._ws = s;
    this._authRetried = false;
    this._stats.connects++;
    if (!first) this._stats.reconnects++;
    this._watch(s);
    // The resume sets and the re-sent commands go out before any listener
    // runs, so that a command a listener sends comes after them, once.
    const resend = [...this._pending.values()].filter((p) => p.resend).sort((a, b) => a.id - b.id);
    for (const name of s.sets) {
      const r = this._rooms.get(name);
      if (r) this._internal("set", name, { room: name, state: fullState(r.state) });
    }
    for (const p of resend) this._send(s, p.msg);
    this._setState("connected");
    this._emit("connected", { ...this._welcome });
    this._ready?.resolve(this._welcome);
  }

  // _watch drops a connection on which nothing arrived for hb plus
  // heartbeatTimeout: one timer, re-armed only when it fires.
  _watch(s) {
    if (!s.hb) return;
    const limit = s.hb + this._o.heartbeatTimeout;
    const check = () => {
      const left = s.seen + limit - Date.now();
      if (left > 0) s.t = setTimeout(check, left);
      else this._lost(s, 0, `server silent for ${limit} ms`);
    };
    s.t = setTimeout(check, limit);
  }

  // _lost ends the connection s and decides whether and when to reconnect.
  async _lost(s, code, reason = "", error) {
    if (s.dead) return;
    s.dead = true;
    clearTimeout(s.t);
    if (s.ws && s.ws.readyState < 2) {
      // The server may never answer the close frame (it is silent, or
      // the TCP connection is gone): node's ws can drop the socket at
      // once; a browser's WebSocket gives up on its own.
      try {
        s.ws.close(ABANDON);
        s.ws.terminate?.();
      } catch { /* closed meanwhile */ }
    }
    if (this._ws === s) this._ws = null;
    this._dropped();
    if (this._err) return;
    if (s.welcomed && Date.now() - s.welcomed >= STABLE) this._attempt = 0;
    this._stats.disconnects++;
    const o = this._o;
    let delay;
    if (code === 4003 || code === 4101) { // one more attempt with a fresh token
      if (!o.getToken || this._authRetried) return this._stop(new CloseError(code, reason), code);
      this._authRetried = true;
      if (code === 4101) { // only with a token other than the refused one
        this._setState("reconnecting");
        let fresh;
        try {
          fresh = await this._token();
        } catch (e) {
          return this._stop(new CloseError(code, `${reason} (new token: ${e && e.message})`), code);
        }
        if (this._err) return;
        if (fresh === s.token) return this._stop(new CloseError(code, reason), code);
        this._fresh = fresh;
      }
      delay = backoff(this._attempt++, o.minBackoff, o.maxBackoff, o.random);
    } else if (code && !shouldReconnect(code)) {
      return this._stop(new CloseError(code, reason), code);
    } else if (s.bye >= 0) { // a drain: not a failure, the backoff does not grow
      delay = s.bye + Math.floor(o.random() * (o.minBackoff + 1));
    } else {
      delay = backoff(this._attempt++, o.minBackoff, o.maxBackoff, o.random);
    }
    error = error || (code ? new CloseError(code, reason) : new DisconnectedError(`presenced: ${reason || "connection lost"}`));
    this._log("info", `disconnected (${code || reason}), reconnecting in ${delay} ms`);
    this._emit("disconnected", { code, reason, error, retryIn: delay, terminal: false });
    this._setState("reconnecting", delay);
    this._retry = setTimeout(() => this._dial(), delay);
  }

  // _dropped fails what does not survive a lost connection: internal
  // commands, pings and outstanding gap syncs.
  _dropped() {
    for (const [id, p] of this._pending) {
      if (!p.resend) this._settle(id, p, new DisconnectedError("presenced: connection lost"));
    }
    for (const p of this._pings.values()) p.fail(new DisconnectedError("presenced: connection lost"));
    for (const r of this._rooms.values()) r.syncing = false;
  }

  // _stop ends the client for good with err.
  _stop(err, code) {
    if (this._err) return;
    this._err = err;
    clearTimeout(this._retry);
    for (const t of this._tokens) clearTimeout(t);
    const s = this._s;
    if (s && !s.dead) {
      s.dead = true;
      clearTimeout(s.t);
    }
    this._ws = null;
    const closed = err instanceof ClosedError ? err : new ClosedError(`presenced: client stopped: ${err.message}`, { cause: err });
    for (const [id, p] of this._pending) this._settle(id, p, closed);
    for (const p of this._pings.values()) p.fail(closed);
    this._setState("closed");
    this._emit("disconnected", { code, reason: err.reason || "", error: err, terminal: true });
    this._ready?.reject(err);
    this._ready?.promise.catch(noop);
  }

  /** Sends close 1000, stops every timer; pending commands reject with ClosedError. */
  close() {
    if (!this._closing) {
      const s = this._s;
      this._stop(new ClosedError("presenced: client closed"), 1000);
      this._closing = new Promise((resolve) => {
        const ws = s && s.ws;
        if (!ws || ws.readyState > 1) return resolve();
        const t = setTimeout(() => {
          ws.terminate?.(); // node's ws; a browser closes on its own
          resolve();
        }, CLOSE_WAIT);
        s.closed = () => {
          clearTimeout(t);
          resolve();
        };
        try { ws.close(1000); } catch { s.closed(); }
      });
    }
    return this._closing;
  }

  // Commands.

  _do(kind, room, prepare, opts) {
    if (this._err) return Promise.reject(new ClosedError(`presenced: client stopped: ${this._err.message}`, { cause: this._err }));
    if (!validRoom(room)) return Promise.reject(new CommandError("bad_request", `room ${JSON.stringify(room)} is not 1-128 bytes of [A-Za-z0-9._:@/-]`));
    return new Promise((resolve, reject) => {
      const id = ++this._id;
      const p = { id, kind, room, resend: true, resolve, reject, ...prepare() };
      p.msg = JSON.stringify({ t: kind, id, room, ...p.body });
      this._pending.set(id, p);
      this._stats.commands++;
      const ms = (opts && opts.timeout) || this._o.commandTimeout;
      p.timer = setTimeout(() => this._settle(id, p, new TimeoutError(`presenced: ${kind} ${room}: no answer within ${ms} ms`)), ms);
      if (this._ws) this._send(this._ws, p.msg);
    });
  }

  // _internal sends a command nobody awaits on the welcomed connection;
  // a refusal becomes an error event.
  _internal(kind, room, body, rollback) {
    const id = ++this._id;
    const p = { id, kind, room, rollback, msg: JSON.stringify({ t: kind, id, ...body }) };
    this._pending.set(id, p);
    this._send(this._ws, p.msg);
    return p;
  }

  _settle(id, p, err) {
    this._pending.delete(id);
    clearTimeout(p.timer);
    if (err) p.reject?.(err);
    else p.resolve?.();
  }

  _answer(id, err) {
    const p = this._pending.get(id);
    if (!p) return false;
    if (err && p.kind === "leave" && err.code === "not_joined") err = undefined;
    if (err) p.rollback?.();
    if (err && !p.reject) {
      this._log("warn", `${p.kind} ${p.room || ""} refused`, err);
      this._emit("error", { error: err, room: p.room });
    }
    this._settle(id, p, err);
    return true;
  }

  join(room, state, opts) {
    return this._do("join", room, () => {
      let r = this._rooms.get(room);
      const st = copyState(state);
      let rollback;
      if (!r) {
        r = { name: room, state: st, cursor: "", count: 0, partial: false, synced: false, members: new Map(), typing: [] };
        this._rooms.set(room, r);
        rollback = () => {
          if (this._rooms.get(room) === r) {
            this._rooms.delete(room);
            this._emit("room", { room, view: undefined });
          }
        };
      } else {
        const prev = r.state;
        r.state = st;
        rollback = () => { if (this._rooms.get(room) === r && r.state === st) r.state = prev; };
      }
      return { body: st ? { state: st } : {}, rollback };
    }, opts);
  }

  leave(room, opts) {
    return this._do("leave", room, () => {
      const r = this._rooms.get(room);
      this._rooms.delete(room);
      if (r) this._emit("room", { room, view: undefined });
      return {
        rollback: () => {
          if (r && !this._rooms.has(room)) {
            this._rooms.set(room, r);
            this._emit("room", { room, view: viewOf(r) });
          }
        },
      };
    }, opts);
  }

  set(room, state, opts) {
    return this._do("set", room, () => {
      const r = this._rooms.get(room);
      const st = copyState(state) || {};
      let rollback;
      if (r) {
        const prev = r.state;
        if (prev) { // as on the server, a set keeps what it leaves out
          st.status = st.status || prev.status;
          st.meta = st.meta || prev.meta;
        }
        r.state = st;
        rollback = () => { if (this._rooms.get(room) === r && r.state === st) r.state = prev; };
      }
      return { body: { state: st }, rollback };
    }, opts);
  }

  sync(room, opts) {
    return this._do("sync", room, () => ({}), opts);
  }

  typing(room, on) {
    return !!this._ws && validRoom(room) && this._send(this._ws, { t: "typing", room, on: !!on });
  }

  ping(opts) {
    if (this._err) return Promise.reject(new ClosedError("presenced: client stopped", { cause: this._err }));
    const s = this._ws;
    if (!s) return Promise.reject(new DisconnectedError("presenced: not connected"));
    let ts = Date.now();
    while (this._pings.has(ts)) ts++;
    const t0 = globalThis.performance ? performance.now() : Date.now();
    return new Promise((resolve, reject) => {
      const ms = (opts && opts.timeout) || this._o.commandTimeout;
      const end = () => {
        clearTimeout(timer);
        this._pings.delete(ts);
      };
      const timer = setTimeout(() => {
        end();
        reject(new TimeoutError(`presenced: no pong within ${ms} ms`));
      }, ms);
      this._pings.set(ts, {
        done: () => {
          end();
          this._rtt = Math.round(((globalThis.performance ? performance.now() : Date.now()) - t0) * 10) / 10;
          this._emit("rtt", { rtt: this._rtt });
          resolve(this._rtt);
        },
        fail: (e) => {
          end();
          reject(e);
        },
      });
      this._send(s, { t: "ping", ts });
    });
  }

  // Presence events.

  _sync(m) {
    const r = this._rooms.get(m.room);
    if (!r) return;
    const sync = { cursor: m.cur, count: m.count, partial: !!m.partial, members: members(m.members), typing: m.typing || [] };
    Object.assign(r, { cursor: sync.cursor, count: sync.count, partial: sync.partial, synced: true, syncing: false, typing: [...sync.typing] });
    r.members = new Map(sync.members.map((mm) => [mm.user, mm]));
    this._stats.syncs++;
    this._changed("sync", r, { room: r.name, sync });
  }

  // _diff applies a diff that continues the room's cursor chain; any other
  // diff is ignored and the room is synced again.
  _diff(s, m) {
    const r = this._rooms.get(m.room);
    if (!r) return;
    if (!r.synced || m.from !== r.cursor) {
      this._stats.gaps++;
      if (!r.syncing) {
        r.syncing = true;
        this._internal("sync", r.name, { room: r.name }, () => { r.syncing = false; });
      }
      return;
    }
    const diff = { from: m.from, cursor: m.cur, count: m.count, join: members(m.join), update: members(m.update), leave: m.leave || [] };
    if (m.typing) diff.typing = m.typing;
    for (const mm of diff.join.concat(diff.update)) r.members.set(mm.user, mm);
    for (const u of diff.leave) r.members.delete(u);
    if (diff.typing) r.typing = [...diff.typing];
    r.count = diff.count;
    r.cursor = diff.cursor;
    this._stats.diffs++;
    this._changed("diff", r, { room: r.name, diff });
  }

  // _changed emits a room's sync or diff, and room, with a view built
  // only when a listener reads it.
  _changed(event, r, ev) {
    let v;
    Object.defineProperty(ev, "view", { enumerable: true, get: () => (v = v || viewOf(r)) });
    this._emit(event, ev);
    this._emit("room", { room: r.name, get view() { return ev.view; } });
  }

  // _refresh renews the token on s when the server asks: getToken, then
  // auth, then its answer. One at a time.
  async _refresh(s) {
    if (this._refreshing) return;
    this._refreshing = true;
    try {
      if (!this._o.getToken) throw new PresenceError("presenced: the server asked for a new token and options.getToken is not set");
      const tok = await this._token();
      if (this._ws !== s) throw new DisconnectedError("presenced: connection lost before the token refresh");
      await new Promise((resolve, reject) => {
        const p = this._internal("auth", "", { token: tok });
        Object.assign(p, { resolve, reject });
        p.timer = setTimeout(() => this._settle(p.id, p, new TimeoutError("presenced: auth: no answer")), this._o.connectTimeout);
      });
      s.token = tok;
      this._stats.refreshes++;
      this._emit("refreshed", {});
    } catch (e) {
      if (!this._err) {
        this._log("warn", "token refresh failed", e);
        this._emit("error", { error: e });
      }
    } finally {
      this._refreshing = false;
    }
  }
}

/** Drives typing for one room from keystrokes: on:true at most once per interval, on:false after idle and on sent(). */
export function typingHelper(client, room, { interval = 3000, idle = 3000 } = {}) {
  let typing = false;
  let last = 0;
  let timer;
  let stopped = false;
  const off = () => {
    clearTimeout(timer);
    if (typing) {
      typing = false;
      client.typing(room, false);
    }
  };
  return {
    keystroke() {
      if (stopped) return;
      const now = Date.now();
      if ((!typing || now - last >= interval) && client.typing(room, true)) {
        typing = true;
        last = now;
      }
      clearTimeout(timer);
      timer = setTimeout(off, idle);
    },
    sent: off,
    stop() {
      stopped = true;
      off();
    },
  };
}

const ACTIVITY = ["pointerdown", "pointermove", "keydown", "touchstart", "wheel", "focus"];

/**
 * Sets status away after inactivity or while the page is hidden, and on
 * return restores the status each room it set away had.
 */
export function autoAway(client, options = {}) {
  const { after = 300000, whenHidden = true, awayStatus = "away", onlineStatus = "online" } = options;
  const doc = "document" in options ? options.document : globalThis.document;
  let last = Date.now();
  let timer;
  let stopped = false;
  let away = null; // while away: room -> the status it had before
  const hidden = () => whenHidden && !!doc?.hidden;
  const goAway = () => {
    if (away || stopped) return;
    away = new Map();
    for (const room of options.rooms || client.rooms()) {
      const st = client._rooms.get(room)?.state; // what this client set, not what others see
      if (!st && !client._rooms.has(room)) continue;
      away.set(room, (st && st.status) || onlineStatus);
      client.set(room, { status: awayStatus }).catch(noop);
    }
  };
  const arm = (ms) => {
    clearTimeout(timer);
    timer = setTimeout(() => {
      const left = last + after - Date.now();
      if (left > 0) arm(left);
      else goAway();
    }, ms);
  };
  const activity = () => {
    if (stopped || hidden()) return;
    last = Date.now();
    if (!away) return;
    for (const [room, status] of away) {
      if (client._rooms.get(room)?.state?.status === awayStatus) { // unless changed meanwhile
        client.set(room, { status: status === awayStatus ? onlineStatus : status }).catch(noop);
      }
    }
    away = null;
    arm(after);
  };
  const visibility = () => (doc.hidden ? hidden() && goAway() : activity());
  const stop = () => {
    stopped = true;
    clearTimeout(timer);
    offState();
    if (doc) {
      doc.removeEventListener("visibilitychange", visibility);
      for (const e of ACTIVITY) doc.removeEventListener(e, activity, { capture: true });
    }
  };
  const offState = client.on("state", ({ state }) => state === "closed" && stop());
  if (doc) {
    doc.addEventListener("visibilitychange", visibility);
    for (const e of ACTIVITY) doc.addEventListener(e, activity, { passive: true, capture: true });
  }
  if (hidden()) goAway();
  arm(after);
  return { activity, get away() { return !!away; }, stop };
}
