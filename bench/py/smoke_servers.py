#!/usr/bin/env python3
"""Smoke tests for the benchmark reference servers (not for sockit).

Starts bench/out/epoll_echo, bench/out/udp_echo and bench/py/threaded_upper.py
on 127.0.0.1 and checks that they echo correctly:

  epoll_echo:      32 MiB with a late reader (forces EAGAIN / partial writes
                   and the pending-output path), half-close, 1000
                   concurrent connections, and HOLD (default 10000) idle
                   connections held while new clients still get echoes
  udp_echo:        a 65 507-byte datagram and small ones
  threaded_upper:  upper-casing, 100 KB streams, 50 concurrent connections

Run from the repo root after building the C servers:
    cc -O2 -o bench/out/epoll_echo bench/c/epoll_echo.c
    cc -O2 -o bench/out/udp_echo bench/c/udp_echo.c
    python3 bench/py/smoke_servers.py            # env HOLD=N to change 10000
Everything is bounded by socket timeouts; servers are killed at the end.
"""
import asyncio
import os
import random
import resource
import socket
import subprocess
import sys
import threading
import time

BENCH = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(BENCH, "out")
HOLD = int(os.environ.get("HOLD", "10000"))
PORTS = {"tcp": 29901, "udp": 29902, "py": 29903}
TIMEOUT = 20.0

failures = []


def check(cond, what):
    print(("ok   " if cond else "FAIL ") + what, flush=True)
    if not cond:
        failures.append(what)


def wait_tcp(port, proc):
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"server on {port} exited: {proc.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"port {port} not listening after 10 s")


def recv_exact(s, n):
    buf = bytearray()
    while len(buf) < n:
        chunk = s.recv(min(1 << 20, n - len(buf)))
        if not chunk:
            break
        buf += chunk
    return bytes(buf)


def tcp_roundtrip(port, payload, expect=None):
    with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) as s:
        s.sendall(payload)
        got = recv_exact(s, len(payload))
    return got == (payload if expect is None else expect)


def test_big_unread(port):
    """Send 32 MiB while the reader starts late: more than the socket buffers
    hold (tcp_wmem + tcp_rmem maxima are a few MiB), so the server must hit
    EAGAIN, keep pending output, and stop reading until it is flushed."""
    data = os.urandom(32 << 20)
    got = bytearray()
    with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) as s:
        done = threading.Event()

        def reader():
            time.sleep(1.0)  # let the server's send buffer fill first
            while len(got) < len(data):
                chunk = s.recv(1 << 16)
                if not chunk:
                    break
                got.extend(chunk)
            done.set()

        t = threading.Thread(target=reader, daemon=True)
        t.start()
        s.sendall(data)
        done.wait(TIMEOUT)
    return bytes(got) == data


def test_half_close(port):
    data = os.urandom(300_000)
    with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) as s:
        s.sendall(data)
        s.shutdown(socket.SHUT_WR)
        got = bytearray()
        while True:
            chunk = s.recv(1 << 16)
            if not chunk:
                break
            got += chunk
    return bytes(got) == data


async def many_concurrent(port, n, size=64, rounds=3):
    async def one(i):
        r, w = await asyncio.open_connection("127.0.0.1", port)
        ok = True
        for k in range(rounds):
            msg = (f"{i}:{k}:".encode() + bytes(random.getrandbits(8) for _ in range(size)))[:size]
            w.write(msg)
            await w.drain()
            ok &= (await r.readexactly(len(msg))) == msg
        w.close()
        await w.wait_closed()
        return ok

    res = await asyncio.wait_for(asyncio.gather(*(one(i) for i in range(n))), TIMEOUT * 3)
    return all(res)


async def hold_idle(port, n):
    """Open n idle connections, then check 20 new clients get echoes."""
    conns = []
    sem = asyncio.Semaphore(500)

    async def opener():
        async with sem:
            conns.append(await asyncio.open_connection("127.0.0.1", port))

    await asyncio.wait_for(asyncio.gather(*(opener() for _ in range(n))), 120)
    # every held connection still works: probe a sample of them
    sample = random.sample(conns, min(100, len(conns)))
    ok = True
    for r, w in sample:
        w.write(b"ping")
        await w.drain()
        ok &= (await asyncio.wait_for(r.readexactly(4), TIMEOUT)) == b"ping"
    ok &= await many_concurrent(port, 20)
    for _, w in conns:
        w.close()
    return ok, len(conns)


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def main():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    procs = []
    try:
        # --- epoll_echo
        p = subprocess.Popen([os.path.join(OUT, "epoll_echo"), str(PORTS["tcp"])], stderr=subprocess.PIPE)
        procs.append(p)
        line = p.stderr.readline().decode().strip()
        check(line == f"listening on 127.0.0.1:{PORTS['tcp']}", f"epoll_echo prints '{line}'")
        wait_tcp(PORTS["tcp"], p)
        check(tcp_roundtrip(PORTS["tcp"], b"hello\n"), "epoll_echo: echo 6 bytes")
        check(test_big_unread(PORTS["tcp"]), "epoll_echo: 32 MiB with a late reader (EAGAIN/partial writes), echoed intact")
        check(test_half_close(PORTS["tcp"]), "epoll_echo: 300 kB then half-close, all echoed before EOF")
        check(asyncio.run(many_concurrent(PORTS["tcp"], 1000)), "epoll_echo: 1000 concurrent connections x 3 round trips")
        want = min(HOLD, hard - 1100)
        ok, held = asyncio.run(hold_idle(PORTS["tcp"], want))
        check(ok and held == want, f"epoll_echo: held {held} idle connections, new clients still echoed "
              f"(server RSS {rss_kib(p.pid)} KiB)")
        check(p.poll() is None, "epoll_echo still running")

        # --- udp_echo
        p = subprocess.Popen([os.path.join(OUT, "udp_echo"), str(PORTS["udp"])], stderr=subprocess.DEVNULL)
        procs.append(p)
        time.sleep(0.3)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
            u.settimeout(5)
            u.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
            for size in (1, 64, 1472, 65507):
                d = os.urandom(size)
                u.sendto(d, ("127.0.0.1", PORTS["udp"]))
                got, addr = u.recvfrom(65536)
                check(got == d and addr[1] == PORTS["udp"], f"udp_echo: {size}-byte datagram echoed")
        check(p.poll() is None, "udp_echo still running")

        # --- threaded_upper
        p = subprocess.Popen([sys.executable, os.path.join(BENCH, "py", "threaded_upper.py"), str(PORTS["py"])],
                             stderr=subprocess.DEVNULL)
        procs.append(p)
        wait_tcp(PORTS["py"], p)
        check(tcp_roundtrip(PORTS["py"], b"hello, World 123\n", b"HELLO, WORLD 123\n"), "threaded_upper: upper-cases")
        data = bytes(random.choice(b"abcdefghijklmnopqrstuvwxyz0123456789 ") for _ in range(100_000))
        check(tcp_roundtrip(PORTS["py"], data, data.upper()), "threaded_upper: 100 kB stream upper-cased")
        check(asyncio.run(many_concurrent_upper(PORTS["py"], 50)), "threaded_upper: 50 concurrent connections")
        check(p.poll() is None, "threaded_upper still running")
    finally:
        for p in procs:
            p.kill()
            p.wait(5)
    print(f"{len(failures)} failed" if failures else "all smoke checks passed")
    sys.exit(1 if failures else 0)


async def many_concurrent_upper(port, n):
    async def one(i):
        r, w = await asyncio.open_connection("127.0.0.1", port)
        msg = f"message {i} abc".encode()
        w.write(msg)
        await w.drain()
        ok = (await r.readexactly(len(msg))) == msg.upper()
        w.close()
        await w.wait_closed()
        return ok

    return all(await asyncio.wait_for(asyncio.gather(*(one(i) for i in range(n))), TIMEOUT * 3))


if __name__ == "__main__":
    main()
