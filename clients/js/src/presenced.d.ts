// Types of the presenced JavaScript SDK (protocol v1, docs/protocol.md).
// Hand-written; src/presenced.js is the implementation. docs/js.md has the
// guide.

/** A member's state as sent in join and set. A field left out keeps its value. */
export interface State {
  /** 1–32 bytes; the server's default is "online". */
  status?: string;
  /** A JSON object of at most 512 bytes as sent. */
  meta?: Record<string, unknown>;
}

/** A member of a room as the client last heard of it. Frozen: views and events share it. */
export interface Member {
  readonly user: string;
  readonly status: string;
  readonly meta: Readonly<Record<string, unknown>>;
}

/** A snapshot of one joined room; a new object on every call. */
export interface RoomView {
  room: string;
  /** The cursor of the last sync or diff applied ("" before the first sync). */
  cursor: string;
  /** Members in the room; more than members.length when partial. */
  count: number;
  /** members is a subset: the room is larger than the server's list_limit. */
  partial: boolean;
  /** A sync has been applied since the room was joined. */
  synced: boolean;
  /** The members, sorted by user id. */
  members: Member[];
  /** Users typing now, as the server lists them. */
  typing: string[];
}

/** A full sync of a room as the server sent it. */
export interface Sync {
  cursor: string;
  count: number;
  partial: boolean;
  members: Member[];
  typing: string[];
}

/** A room's change between the cursors from and cursor. */
export interface Diff {
  from: string;
  cursor: string;
  count: number;
  join: Member[];
  update: Member[];
  leave: string[];
  /** The whole new typing set, present only when it changed. */
  typing?: string[];
}

export type ConnectionState = "connecting" | "connected" | "reconnecting" | "closed";

/** The WebSocket constructor the client uses: the global one, or node's `ws`. */
export interface WebSocketConstructor {
  new (url: string, ...rest: any[]): WebSocketLike;
}

/**
 * The part of the WebSocket API the client uses. The client sets the on*
 * handlers; their events carry data (message) and code and reason (close).
 */
export interface WebSocketLike {
  readonly readyState: number;
  onopen: ((ev: any) => any) | null;
  onmessage: ((ev: any) => any) | null;
  onclose: ((ev: any) => any) | null;
  onerror: ((ev: any) => any) | null;
  send(data: string): void;
  close(code?: number, reason?: string): void;
  /** node's ws: drops the socket at once (used for connections the client gives up on). */
  terminate?(): void;
}

export interface Logger {
  debug?(msg: string, ...args: unknown[]): void;
  info?(msg: string, ...args: unknown[]): void;
  warn?(msg: string, ...args: unknown[]): void;
}

export interface ClientOptions {
  /** The server's WebSocket endpoint, e.g. "ws://127.0.0.1:8080/ws". Required. */
  url: string;
  /** A static JWT sent in every hello. */
  token?: string;
  /**
   * Returns the token for each connection and for each refresh the server asks
   * for. Wins over token. Lets the client recover from 4003 and 4101.
   */
  getToken?: () => string | Promise<string>;
  /** Sent instead of a token; only servers running with -insecure accept it. */
  user?: string;
  /** The WebSocket constructor. Default: globalThis.WebSocket. */
  WebSocket?: WebSocketConstructor;
  /** Reconnect backoff base in ms: attempt n waits random [0, min(max, min·2ⁿ)]. Default 500. */
  minBackoff?: number;
  /** Reconnect backoff cap in ms. Default 30000. */
  maxBackoff?: number;
  /** Added to the server's heartbeat interval: a server silent that long is gone. Default 10000 ms. */
  heartbeatTimeout?: number;
  /** Bounds one connection attempt (open, hello, welcome) and a token refresh. Default 10000 ms. */
  connectTimeout?: number;
  /** Bounds join, leave, set, sync and ping unless the call gives its own. Default 10000 ms. */
  commandTimeout?: number;
  /** Random numbers in [0, 1) for the backoff jitter. Default Math.random. */
  random?: () => number;
  /** Receives the client's logs. Default: none. */
  logger?: Logger;
}

export interface CommandOptions {
  /** Milliseconds before the promise rejects with a TimeoutError. Default: commandTimeout. */
  timeout?: number;
}

export interface Welcome {
  node: string;
  conn: string;
  user: string;
  /** The hello carried rooms to resume. */
  resumed: boolean;
}

export interface Stats {
  dials: number;
  connects: number;
  reconnects: number;
  disconnects: number;
  syncs: number;
  diffs: number;
  gaps: number;
  pings: number;
  refreshes: number;
  commands: number;
  commandErrors: number;
}

/** The events of a Client, by name. */
export interface ClientEvents {
  /** The connection state changed; retryIn is set while reconnecting. */
  state: { state: ConnectionState; retryIn?: number };
  /** A welcome arrived. */
  connected: Welcome;
  /** A connection was lost or an attempt failed; terminal when the client stopped. */
  disconnected: { code: number; reason: string; error?: Error; retryIn?: number; terminal: boolean };
  /** A sync was applied to a room. */
  sync: { room: string; sync: Sync; view: RoomView };
  /** A diff was applied to a room. */
  diff: { room: string; diff: Diff; view: RoomView };
  /** A room's view changed (after a sync or a diff, or a leave). */
  room: { room: string; view: RoomView | undefined };
  /** The server is draining; the client reconnects after retryIn ms. */
  bye: { retryIn: number };
  /** The token was renewed with auth. */
  refreshed: {};
  /** An error nobody awaits: an internal command refused, a failed refresh. */
  error: { error: Error; room?: string };
  /** A round-trip time was measured by ping(), in ms. */
  rtt: { rtt: number };
}

export class Client {
  constructor(options: ClientOptions);
  /** Starts connecting (if not yet) and resolves on the first welcome; rejects when the client stops first. */
  connect(): Promise<Welcome>;
  /** Joins room with state and resolves on the ack; the room's view fills on the server's sync. */
  join(room: string, state?: State, options?: CommandOptions): Promise<void>;
  /** Leaves room and resolves on the ack (not_joined counts as left). */
  leave(room: string, options?: CommandOptions): Promise<void>;
  /** Sets the state in a joined room; a field left out keeps its value. */
  set(room: string, state: State, options?: CommandOptions): Promise<void>;
  /** Asks for a full sync of room. */
  sync(room: string, options?: CommandOptions): Promise<void>;
  /** Tells the room the user types (on) or stopped; false when no connection is up. */
  typing(room: string, on: boolean): boolean;
  /** Measures the round-trip time to the server with a protocol ping, in ms. */
  ping(options?: CommandOptions): Promise<number>;
  /** A snapshot of a joined room, undefined when not joined. */
  room(name: string): RoomView | undefined;
  /** The joined rooms, sorted. */
  rooms(): string[];
  /** Subscribes to an event; returns the unsubscribe function. */
  on<K extends keyof ClientEvents>(event: K, listener: (ev: ClientEvents[K]) => void): () => void;
  off<K extends keyof ClientEvents>(event: K, listener: (ev: ClientEvents[K]) => void): void;
  /** Sends close 1000, stops every timer; pending commands reject with ClosedError. */
  close(): Promise<void>;
  readonly state: ConnectionState;
  /** The last welcome, or undefined before the first. */
  readonly welcome: Welcome | undefined;
  /** The last round-trip time measured by ping(), in ms; undefined before one. */
  readonly rtt: number | undefined;
  /** Why the client stopped: undefined while it runs. */
  readonly error: Error | undefined;
  readonly stats: Stats;
}

/** Base class of the SDK's errors. */
export class PresenceError extends Error {}
/** The server answered a command with err. */
export class CommandError extends PresenceError {
  constructor(code: ErrorCode, msg?: string);
  /** The contract's error code: bad_request, not_joined, too_many_rooms, ... */
  readonly code: ErrorCode;
}
/** The server closed the connection with a code that stops the client. */
export class CloseError extends PresenceError {
  constructor(code: number, reason?: string);
  readonly code: number;
  readonly reason: string;
}
/** A command got no answer in time. */
export class TimeoutError extends PresenceError {}
/** No connection was up, or it was lost before the answer (typing, auth). */
export class DisconnectedError extends PresenceError {}
/** The client was closed or stopped. */
export class ClosedError extends PresenceError {}

export type ErrorCode =
  | "bad_request" | "unauthorized" | "forbidden" | "not_joined"
  | "too_many_rooms" | "rate_limited" | "too_large" | "internal";

/** The contract's close codes by name. */
export const CloseCodes: {
  readonly normal: 1000; readonly goingAway: 1001; readonly protocolError: 1002;
  readonly unsupported: 1003; readonly invalidPayload: 1007; readonly policyViolation: 1008;
  readonly tooBig: 1009; readonly internalError: 1011; readonly heartbeat: 4001;
  readonly slowConsumer: 4002; readonly tokenExpired: 4003; readonly helloTimeout: 4004;
  readonly rateLimited: 4029; readonly badRequest: 4100; readonly unauthorized: 4101;
  readonly forbidden: 4103; readonly version: 4105;
};

/** Whether a close code allows an automatic reconnect (the contract's table). */
export function shouldReconnect(code: number): boolean;

/** The full-jitter backoff: random [0, min(max, min·2^attempt)] ms. */
export function backoff(attempt: number, min: number, max: number, random?: () => number): number;

export interface TypingOptions {
  /** At most one on:true per interval ms while typing. Default 3000. */
  interval?: number;
  /** on:false after this many ms without a keystroke. Default 3000. */
  idle?: number;
}

export interface TypingHelper {
  /** Call on each keystroke. */
  keystroke(): void;
  /** Call when the message is sent: on:false at once. */
  sent(): void;
  /** Sends on:false if typing and stops for good: later keystrokes send nothing. */
  stop(): void;
}

/** Drives typing for one room from keystrokes. */
export function typingHelper(client: Client, room: string, options?: TypingOptions): TypingHelper;

export interface AutoAwayOptions {
  /** Status away after this many ms without activity. Default 300000 (5 min). */
  after?: number;
  /** Go away as soon as the page is hidden. Default true. */
  whenHidden?: boolean;
  /** Default "away". */
  awayStatus?: string;
  /** Default "online". */
  onlineStatus?: string;
  /** Rooms to set; default every joined room. */
  rooms?: string[];
  /** The document watched for visibility and activity; default globalThis.document if any; null: none. */
  document?: DocumentLike | null;
}

/** The part of the DOM's Document that autoAway uses. */
export interface DocumentLike {
  readonly hidden: boolean;
  addEventListener(type: string, listener: () => void, options?: boolean | object): void;
  removeEventListener(type: string, listener: () => void, options?: boolean | object): void;
}

export interface AutoAway {
  /** Reports user activity (the helper listens to the document itself when it has one). */
  activity(): void;
  /** Whether the helper has set the away status (and not restored it yet). */
  readonly away: boolean;
  stop(): void;
}

/**
 * Sets status away after inactivity or while the page is hidden, and on
 * return restores the status each room it set away had. Stops with the client.
 */
export function autoAway(client: Client, options?: AutoAwayOptions): AutoAway;
