// Compiled (never run) by types.test.js with the DOM library and @types/ws:
// both WebSocket constructors, and a browser document, fit the SDK's types.
import WS from "ws";
import { Client, autoAway } from "../src/presenced.js";

const browser = new Client({ url: "ws://127.0.0.1:8080/ws", user: "alice", WebSocket });
const node = new Client({ url: "ws://127.0.0.1:8080/ws", user: "bob", WebSocket: WS });
autoAway(browser, { document });
autoAway(node, { document: null });
