"""Independent WebSocket client for presenced's interop test.

Runs one scenario against a server with the websockets library (Debian
bookworm's python3-websockets 10.4) and prints one line per step; the Go
test compares the lines. Usage: interop_client.py SCENARIO ws://HOST:PORT/ws
"""

import asyncio
import sys

import websockets

TIMEOUT = 5


async def echo(ws, text):
    """Sends text (a str, or a list of str sent as fragments) and returns the echo."""
    await asyncio.wait_for(ws.send(text), TIMEOUT)
    return await asyncio.wait_for(ws.recv(), TIMEOUT)


async def scenario_echo(uri):
    async with websockets.connect(uri, open_timeout=TIMEOUT, close_timeout=TIMEOUT) as ws:
        # The client offers permessage-deflate; the server must not accept it.
        print("extensions:", [e.name for e in ws.extensions] or "none")
        for text in ['{"t":"ping","ts":1}', "héllo wörld ✓"]:
            print("echo:", await echo(ws, text))
        fragments = ['{"t":"frag', "mented", '","v":"✓"}']
        got = await echo(ws, fragments)
        print("fragmented:", got, "ok" if got == "".join(fragments) else "MISMATCH")
        large = "".join(chr(ord("a") + i % 26) for i in range(4093)) + "✓"  # 4096 bytes
        got = await echo(ws, large)
        print("large:", len(large.encode()), "bytes", "ok" if got == large else "MISMATCH")
        large_fragments = [large[:1000], large[1000:3000], large[3000:]]
        got = await echo(ws, large_fragments)
        print("large fragmented:", "ok" if got == large else "MISMATCH")
        pong = await ws.ping(b"interop")
        await asyncio.wait_for(pong, TIMEOUT)
        print("pong: ok")
        await ws.close(code=1000, reason="bye")
        print("closed:", ws.close_code, ws.close_reason)


async def expect_close(uri, message):
    """Sends message and reports the close code the server answers with."""
    async with websockets.connect(uri, open_timeout=TIMEOUT, close_timeout=TIMEOUT) as ws:
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


SCENARIOS = {
    "echo": scenario_echo,
    "binary": scenario_binary,
    "too-big": scenario_too_big,
}

if __name__ == "__main__":
    if len(sys.argv) != 3 or sys.argv[1] not in SCENARIOS:
        sys.exit(f"usage: {sys.argv[0]} {{{'|'.join(SCENARIOS)}}} ws://host:port/ws")
    asyncio.run(SCENARIOS[sys.argv[1]](sys.argv[2]))
