#!/usr/bin/env python3
"""The chat WebSocket as a strict client sees it (Python's `websockets`).

Logs in as the browser app does (the session cookie, from POST /api/login),
opens /api/chat, and checks RFC 6455's closing handshake: for each code the
client closes with, the server's Close repeats it and the server then
closes the TCP connection (well before the client's close_timeout); and a
client that breaks the protocol gets the Close code for its fault.

Usage: close_handshake.py http://HOST:PORT MAX_WS_MESSAGE
Driven by tests/chat_ws.rs; prints "ok CODE" per case, exits 1 on a failure.
"""

import asyncio
import json
import os
import sys
import time
import urllib.request

try:  # websockets 13 and later
    from websockets.asyncio.client import connect as _connect

    def connect(uri, headers):
        return _connect(uri, additional_headers=headers, close_timeout=CLOSE_TIMEOUT)

except ImportError:  # websockets 10 to 12 (Debian 12 has 10.4)
    from websockets.client import connect as _connect

    def connect(uri, headers):
        return _connect(uri, extra_headers=headers, close_timeout=CLOSE_TIMEOUT)


# How long the client waits for the server's Close, then for its TCP close.
CLOSE_TIMEOUT = 5
# The server closes the connection well before that.
PROMPT = 3.0

failures = []


def check(ok, what):
    if not ok:
        failures.append(what)
        print("FAIL", what, flush=True)


def post(base, path, body):
    req = urllib.request.Request(
        base + path,
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(req, timeout=10) as r:
        return r.status, r.headers.get("Set-Cookie", "")


def login(base, name, password):
    """The session cookie, as the browser app gets it."""
    post(base, "/api/register", {"name": name, "password": password})
    status, cookie = post(base, "/api/login", {"name": name, "password": password})
    assert status == 200 and cookie.startswith("sockit_session="), (status, cookie)
    return cookie.split(";", 1)[0]


def masked_text_frame(payload):
    mask = os.urandom(4)
    assert len(payload) <= 125
    body = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return bytes([0x81, 0x80 | len(payload)]) + mask + body


async def opened(uri, headers):
    ws = await connect(uri, headers)
    hello = json.loads(await asyncio.wait_for(ws.recv(), 10))
    assert hello["type"] == "subscribed", hello
    return ws


async def main(base, max_message):
    cookie = login(base, "pyclient", "python test password")
    uri = base.replace("http://", "ws://", 1) + "/api/chat"
    headers = {"Cookie": cookie, "Origin": base}

    for code in (1000, 1001, 3000, 4321):
        ws = await opened(uri, headers)
        started = time.monotonic()
        await ws.close(code, "bye")
        took = time.monotonic() - started
        check(ws.close_code == code, f"close {code}: the server's Close carried {ws.close_code}")
        rcvd = getattr(ws, "close_rcvd", None)
        if rcvd is None and hasattr(ws, "protocol"):
            rcvd = ws.protocol.close_rcvd
        check(rcvd is not None, f"close {code}: a Close frame was received")
        check(took < PROMPT, f"close {code}: the server closed TCP after {took:.2f} s")
        if not failures:
            print("ok", code, f"({took * 1000:.0f} ms)", flush=True)

    # Invalid UTF-8 in a text frame, written under the library.
    ws = await opened(uri, headers)
    ws.transport.write(masked_text_frame(b"\xff\xfe"))
    await asyncio.wait_for(ws.wait_closed(), 2 * CLOSE_TIMEOUT)
    check(ws.close_code == 1007, f"invalid UTF-8: closed with {ws.close_code}")
    if ws.close_code == 1007:
        print("ok 1007", flush=True)

    # A message over the server's limit, sent through the library.
    ws = await opened(uri, headers)
    await ws.send("x" * (max_message + 1))
    await asyncio.wait_for(ws.wait_closed(), 2 * CLOSE_TIMEOUT)
    check(ws.close_code == 1009, f"a message too big: closed with {ws.close_code}")
    if ws.close_code == 1009:
        print("ok 1009", flush=True)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], int(sys.argv[2])))
    sys.exit(1 if failures else 0)
