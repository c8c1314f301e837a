#!/usr/bin/env python3
"""Hold N idle HTTP/1.1 keep-alive connections to a server (for bench/web.sh).

Each connection sends one `GET PATH HTTP/1.1` (Host: HOST:PORT, keep-alive),
reads the whole response (status line, headers, Content-Length bytes of
body), then stays open and idle: it sends nothing more, and only waits to see
whether the server closes it.

    usage: hold_http.py HOST PORT PATH N [--concurrency C]
                        [--establish-timeout S] [--max-seconds S]

Output on stdout, one line each, flushed:
    holding K            once every connection is established (or has failed,
                         or --establish-timeout passed); K = connections that
                         got a complete 200 response and are still open
    closed_by_server C   when it stops: how many of the K the server had
                         closed in the meantime (EOF or reset)
Failures and timings go to stderr. It stops on SIGTERM or SIGINT, or by itself
after --max-seconds (default 900), closing all its connections.
Raises its RLIMIT_NOFILE soft limit to the hard limit first.
"""
import argparse
import asyncio
import resource
import signal
import sys
import time


def raise_nofile():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        except (ValueError, OSError) as e:
            print(f"hold_http: cannot raise RLIMIT_NOFILE: {e}", file=sys.stderr)
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


async def read_response(reader):
    """Read one response; return its status code (body read and discarded)."""
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ", 2)
    status = int(parts[1])
    length = None
    chunked = False
    for line in lines[1:]:
        name, _, value = line.partition(":")
        name = name.strip().lower()
        if name == "content-length":
            length = int(value.strip())
        elif name == "transfer-encoding" and "chunked" in value.lower():
            chunked = True
    if chunked:
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
            await reader.readexactly(size + 2)
            if size == 0:
                break
    elif length is not None:
        await reader.readexactly(length)
    else:
        raise ValueError("response without Content-Length (connection would be closed)")
    return status


async def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("host")
    ap.add_argument("port", type=int)
    ap.add_argument("path")
    ap.add_argument("n", type=int)
    ap.add_argument("--concurrency", type=int, default=200,
                    help="connections being opened at once (default 200)")
    ap.add_argument("--establish-timeout", type=float, default=180.0,
                    help="seconds allowed to open all connections (default 180)")
    ap.add_argument("--max-seconds", type=float, default=900.0,
                    help="stop by itself after this many seconds (default 900)")
    args = ap.parse_args()

    nofile = raise_nofile()
    if nofile != resource.RLIM_INFINITY and nofile < args.n + 64:
        print(f"hold_http: RLIMIT_NOFILE {nofile} is too low for {args.n} connections",
              file=sys.stderr)

    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    loop.call_later(args.max_seconds, stop.set)

    request = (f"GET {args.path} HTTP/1.1\r\nHost: {args.host}:{args.port}\r\n"
               "User-Agent: hold_http\r\nAccept: */*\r\n\r\n").encode()
    sem = asyncio.Semaphore(args.concurrency)
    errors = {}

    async def establish():
        async with sem:
            writer = None
            try:
                reader, writer = await asyncio.wait_for(
                    asyncio.open_connection(args.host, args.port), 30)
                writer.write(request)
                await writer.drain()
                status = await asyncio.wait_for(read_response(reader), 30)
                if status != 200:
                    raise ValueError(f"status {status}")
                return reader, writer
            except Exception as e:  # noqa: BLE001 - counted and reported
                key = type(e).__name__ + (f": {e}" if isinstance(e, (ValueError, OSError)) else "")
                errors[key] = errors.get(key, 0) + 1
                if writer is not None:
                    writer.close()
                return None

    t0 = time.monotonic()
    tasks = [asyncio.create_task(establish()) for _ in range(args.n)]
    done, pending = await asyncio.wait(tasks, timeout=args.establish_timeout)
    for t in pending:
        t.cancel()
    if pending:
        errors["establish timeout"] = len(pending)
        await asyncio.gather(*pending, return_exceptions=True)
    conns = [t.result() for t in done if not t.cancelled() and t.result() is not None]
    elapsed = time.monotonic() - t0
    print(f"hold_http: {len(conns)} of {args.n} connections established in {elapsed:.1f} s"
          + (f"; failures: {errors}" if errors else ""), file=sys.stderr, flush=True)
    print(f"holding {len(conns)}", flush=True)

    closed = 0

    async def watch(reader):
        nonlocal closed
        try:
            data = await reader.read(1)
        except (ConnectionError, OSError):
            data = b""
        if data:
            print("hold_http: server sent unsolicited data on an idle connection",
                  file=sys.stderr, flush=True)
        else:
            closed += 1

    watchers = [asyncio.create_task(watch(r)) for r, _ in conns]
    await stop.wait()
    for w in watchers:
        w.cancel()
    await asyncio.gather(*watchers, return_exceptions=True)
    print(f"closed_by_server {closed}", flush=True)
    for _, writer in conns:
        writer.close()
    print(f"hold_http: stopped after {time.monotonic() - t0:.1f} s, {closed} closed by the server",
          file=sys.stderr, flush=True)


if __name__ == "__main__":
    asyncio.run(main())
