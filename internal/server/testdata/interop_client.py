"""Independent protocol v1 client for presenced's interop test.

Runs one scenario against an insecure server with the websockets library
(Debian bookworm's python3-websockets 10.4) and prints one line per step;
the Go test compares the lines. Usage: interop_client.py SCENARIO ws://HOST:PORT/ws
"""

import asyncio
import json
import sys

import websockets

TIMEOUT = 5
ROOM = "chat:42"


class Peer:
    """One connection speaking protocol v1: it answers server pings and
    checks that the diffs of each room form a chain."""

    def __init__(self, ws, name):
        self.ws = ws
        self.name = name
        self.pings = 0
        self.cursors = {}  # room -> last cursor
        self.chain_ok = True

    async def send(self, msg):
        await asyncio.wait_for(self.ws.send(json.dumps(msg, separators=(",", ":"))), TIMEOUT)

    async def _next(self):
        """The next message that is not a server ping (pings are answered)."""
        while True:
            msg = json.loads(await asyncio.wait_for(self.ws.recv(), TIMEOUT))
            if msg["t"] == "ping":
                await self.send({"t": "pong", "ts": msg["ts"]})
                self.pings += 1
                continue
            if msg["t"] == "sync":
                self.cursors[msg["room"]] = msg["cur"]
            elif msg["t"] == "diff":
                if msg["from"] != self.cursors.get(msg["room"]):
                    self.chain_ok = False
                self.cursors[msg["room"]] = msg["cur"]
            return msg

    async def recv(self, want, skip=()):
        """The next message of type want; types in skip are passed over, any
        other type is an error."""
        while True:
            msg = await self._next()
            if msg["t"] == want:
                return msg
            if msg["t"] not in skip:
                raise RuntimeError(f"{self.name}: got {msg}, want {want}")

    async def answer_pings(self, n):
        """Reads until n server pings were answered; nothing else may come."""
        while self.pings < n:
            msg = json.loads(await asyncio.wait_for(self.ws.recv(), TIMEOUT))
            if msg["t"] != "ping":
                raise RuntimeError(f"{self.name}: got {msg}, want a ping")
            await self.send({"t": "pong", "ts": msg["ts"]})
            self.pings += 1


def members(sync):
    return sorted(f"{m['u']}/{m['s']}/{json.dumps(m['m'], separators=(',', ':'))}" for m in sync["members"])


def connect(uri):
    return websockets.connect(uri, open_timeout=TIMEOUT, close_timeout=TIMEOUT)


async def scenario_presence(uri):
    async with connect(uri) as a, connect(uri) as b:
        # The client offers permessage-deflate; the server must not accept it.
        print("extensions:", [e.name for e in a.extensions] or "none")
        alice, bob = Peer(a, "alice"), Peer(b, "bob")

        await alice.send({"t": "hello", "v": 1, "user": "alice"})
        w = await alice.recv("welcome")
        print(f"welcome: user={w['user']} v={w['v']} hb={w['hb']} max={w['max']}")
        await bob.send({"t": "hello", "v": 1, "user": "bob"})
        await bob.recv("welcome")

        await alice.send({"t": "join", "id": 1, "room": ROOM, "state": {"status": "online", "meta": {"name": "Alice"}}})
        print("alice join: ack", (await alice.recv("ack"))["id"])
        s = await alice.recv("sync")
        print("alice sync:", s["count"], members(s), "partial" if s["partial"] else "complete")

        # A command in three fragments.
        await asyncio.wait_for(a.send(
            ['{"t":"set","id":2,"room":"chat:42",', '"state":{"meta":{"name":"Alice ', '\u2713"}}}']), TIMEOUT)
        print("alice fragmented set: ack", (await alice.recv("ack"))["id"])
        d = await alice.recv("diff")
        print("alice diff: update", d["update"])

        await bob.send({"t": "join", "id": 1, "room": ROOM, "state": {"meta": {"name": "Bob"}}})
        await bob.recv("ack")
        s = await bob.recv("sync")
        print("bob sync:", s["count"], members(s))
        d = await alice.recv("diff")
        print("alice diff: join", [m["u"] for m in d["join"]], "count", d["count"])

        await bob.send({"t": "set", "id": 2, "room": ROOM, "state": {"status": "away"}})
        await bob.recv("ack", skip=("diff",))
        d = await alice.recv("diff")
        print("alice diff: update", d["update"])

        await bob.send({"t": "typing", "room": ROOM, "on": True})
        d = await alice.recv("diff")
        print("alice diff: typing", d["typing"], "keys", sorted(d))

        await alice.send({"t": "ping", "ts": 42})
        print("alice ping: pong", (await alice.recv("pong"))["ts"])
        largest = {"t": "ping", "ts": 7, "pad": ""}
        largest["pad"] = "x" * (4096 - len(json.dumps(largest, separators=(",", ":"))))
        await alice.send(largest)
        print("largest message: pong", (await alice.recv("pong"))["ts"])

        # Server pings every 300 ms: answering them keeps the connection
        # beyond hb + hb_timeout.
        await alice.answer_pings(alice.pings + 3)
        print("server pings: answered")
        await alice.send({"t": "ping", "ts": 43})
        print("alice ping: pong", (await alice.recv("pong"))["ts"])

        await bob.send({"t": "leave", "id": 3, "room": ROOM})
        await bob.recv("ack", skip=("diff",))
        d = await alice.recv("diff")
        print("alice diff: leave", d["leave"], "count", d["count"])
        print("chain:", "ok" if alice.chain_ok else "BROKEN")

        pong = await a.ping(b"interop")
        await asyncio.wait_for(pong, TIMEOUT)
        print("pong frame: ok")

        await b.close(code=1000, reason="bye")
        print("bob closed:", b.close_code)
        await a.close(code=1000, reason="bye")
        print("alice closed:", a.close_code, a.close_reason)


async def expect_close(uri, message):
    """Sends message and reports the close code the server answers with."""
    async with connect(uri) as ws:
        await ws.send(message)
        try:
            got = await asyncio.wait_for(ws.recv(), TIMEOUT)
            print("unexpected message:", got[:40])
        except websockets.ConnectionClosed as e:
            print("closed:", e.rcvd.code if e.rcvd else "no close frame")


async def scenario_binary(uri):
    await expect_close(uri, b"\x00\x01binary")


async def scenario_too_big(uri):
    await expect_close(uri, ["a" * 4000, "b" * 97])  # 4097 bytes in two fragments


async def scenario_invalid_json(uri):
    await expect_close(uri, '{"t":"hello",')


async def scenario_version(uri):
    await expect_close(uri, '{"t":"hello","v":2,"user":"alice"}')


SCENARIOS = {
    "presence": scenario_presence,
    "binary": scenario_binary,
    "too-big": scenario_too_big,
    "invalid-json": scenario_invalid_json,
    "version": scenario_version,
}

if __name__ == "__main__":
    if len(sys.argv) != 3 or sys.argv[1] not in SCENARIOS:
        sys.exit(f"usage: {sys.argv[0]} {{{'|'.join(SCENARIOS)}}} ws://host:port/ws")
    asyncio.run(SCENARIOS[sys.argv[1]](sys.argv[2]))
