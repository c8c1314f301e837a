#!/usr/bin/env python3
"""Minimal client for the sockit framed protocol (see docs/protocol.md).

Standard library only. Every message on the wire is

    +----------------+----------------------+---------------------+
    | u32 big-endian |  N bytes UTF-8 JSON  | S raw body bytes    |
    | N = header len |  object (the header) | (only if "size": S) |
    +----------------+----------------------+---------------------+

TCP is a byte stream, so one recv() may return half a message or several
messages glued together ("sticky packets"). This client never assumes
anything about recv() boundaries: it reads exactly 4 bytes, then exactly N
bytes, then exactly S bytes, looping on recv() until each part is complete
(see Client.recv_exact).

Usage:

    python3 examples/python_client.py ping
    python3 examples/python_client.py --port 7070 ping --count 3 --body hello

As a library:

    from python_client import Client
    with Client("127.0.0.1", 7070) as c:
        info = c.hello()
        header, body, rtt = c.ping(b"abc")
"""

import argparse
import json
import socket
import struct
import sys
import time

PROTOCOL_VERSION = 1
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 7070
MAX_HEADER = 65536           # largest header length accepted (server default)
MAX_BODY = 1 << 40           # 1 TiB, the server's default body limit
CHUNK = 64 * 1024            # bodies are moved in chunks of at most this size
MAX_MEMORY_BODY = 64 << 20   # largest body recv_frame() returns as bytes (no sink)

_LEN = struct.Struct(">I")


class ProtocolError(Exception):
    """The peer sent something that violates the framing rules, or closed early."""


class ServerError(Exception):
    """The server answered with an error frame."""

    def __init__(self, header):
        self.header = header
        self.code = str(header.get("code", "unknown"))
        self.message = str(header.get("message", ""))
        super().__init__("%s: %s" % (self.code, self.message))


def _reject_constant(name):
    # json.loads accepts NaN/Infinity by default; JSON does not.
    raise ValueError("invalid JSON constant %s" % name)


def _is_int(value):
    # bool is a subclass of int in Python; JSON true/false is not a size.
    return isinstance(value, int) and not isinstance(value, bool)


class Client:
    """One connection to a sockit framed-protocol server.

    send_frame/recv_frame are the building blocks; hello() and ping() are
    request helpers built on top of them. Later commands (register, login,
    upload, download, ...) should follow the same pattern as ping().
    """

    def __init__(self, host=DEFAULT_HOST, port=DEFAULT_PORT, timeout=10.0,
                 max_header=MAX_HEADER, max_body=MAX_BODY,
                 max_memory_body=MAX_MEMORY_BODY):
        self.host = host
        self.port = port
        self.timeout = timeout
        self.max_header = max_header
        self.max_body = max_body
        self.max_memory_body = max_memory_body
        self.sock = None
        self._next_id = 1

    # -- connection -------------------------------------------------------

    def connect(self):
        """Open the TCP connection. Raises OSError (e.g. ConnectionRefusedError)."""
        self.sock = socket.create_connection((self.host, self.port), timeout=self.timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return self

    def close(self):
        if self.sock is not None:
            try:
                self.sock.close()
            finally:
                self.sock = None

    def __enter__(self):
        if self.sock is None:
            self.connect()
        return self

    def __exit__(self, *exc):
        self.close()
        return False

    def next_id(self):
        """Return a fresh request id (1, 2, 3, ...)."""
        i = self._next_id
        self._next_id += 1
        return i

    # -- framing ----------------------------------------------------------

    def recv_exact(self, n):
        """Read exactly n bytes, looping on recv(); raise ProtocolError on EOF.

        This loop is the whole fix for "sticky packets": recv() returns
        whatever has arrived, which may be less (or, with a larger buffer,
        more) than one message.
        """
        buf = bytearray(n)
        view = memoryview(buf)
        got = 0
        while got < n:
            k = self.sock.recv_into(view[got:], min(n - got, CHUNK))
            if k == 0:
                raise ProtocolError(
                    "connection closed by server (got %d of %d bytes)" % (got, n))
            got += k
        return bytes(buf)

    def send_frame(self, header, body=b""):
        """Send one frame. header is a dict; body is bytes or a binary file object.

        For bytes, "size" is set to len(body) when the body is non-empty.
        For a file object, header["size"] must already be set; exactly that
        many bytes are read from it and sent in chunks.
        """
        header = dict(header)
        if isinstance(body, (bytes, bytearray, memoryview)):
            body = memoryview(body)
            if len(body):
                header["size"] = len(body)
            elif "size" in header and header["size"] != 0:
                raise ValueError("header size does not match empty body")
            stream = None
        else:
            stream = body
            if not _is_int(header.get("size")) or header["size"] < 0:
                raise ValueError("a file body needs a non-negative integer header['size']")
        raw = json.dumps(header, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
        if not 1 <= len(raw) <= self.max_header:
            raise ValueError("header is %d bytes, limit is %d" % (len(raw), self.max_header))
        frame_start = _LEN.pack(len(raw)) + raw
        if stream is None:
            # Small bodies go out in the same send as the header.
            first = body[:CHUNK]
            self.sock.sendall(frame_start + first)
            for off in range(len(first), len(body), CHUNK):
                self.sock.sendall(body[off:off + CHUNK])
        else:
            self.sock.sendall(frame_start)
            left = header["size"]
            while left:
                chunk = stream.read(min(left, CHUNK))
                if not chunk:
                    raise ValueError("body file ended %d bytes early" % left)
                self.sock.sendall(chunk)
                left -= len(chunk)

    def recv_header(self):
        """Read the length prefix and header of the next frame; validate it.

        Returns the header dict. The caller must then consume exactly
        header.get("size", 0) body bytes (recv_frame does this).
        """
        (n,) = _LEN.unpack(self.recv_exact(4))
        if n == 0:
            raise ProtocolError("received header length 0")
        if n > self.max_header:
            # Refuse before reading or allocating anything.
            raise ProtocolError("received header length %d exceeds limit %d"
                                % (n, self.max_header))
        raw = self.recv_exact(n)
        try:
            header = json.loads(raw.decode("utf-8"), parse_constant=_reject_constant)
        except (UnicodeDecodeError, ValueError) as e:
            raise ProtocolError("received header is not UTF-8 JSON: %s" % e)
        if not isinstance(header, dict):
            raise ProtocolError("received header is not a JSON object")
        if not isinstance(header.get("type"), str):
            raise ProtocolError("received header has no string 'type'")
        if "size" in header:
            size = header["size"]
            if not _is_int(size) or size < 0 or size > self.max_body:
                raise ProtocolError("received header has invalid size %r" % (size,))
        return header

    def recv_body(self, size, sink=None):
        """Read exactly size body bytes.

        With sink (an object with .write), the bytes are written there in
        chunks of at most CHUNK bytes and b"" is returned, so bodies of any
        size use bounded memory. Without sink, the body is returned as bytes,
        and a body larger than max_memory_body is refused (ProtocolError)
        instead of being buffered.
        """
        if sink is None:
            if size > self.max_memory_body:
                raise ProtocolError("body of %d bytes is larger than max_memory_body (%d); "
                                    "pass a sink to stream it" % (size, self.max_memory_body))
            return self.recv_exact(size)
        left = size
        while left:
            chunk = self.sock.recv(min(left, CHUNK))
            if not chunk:
                raise ProtocolError("connection closed by server (%d body bytes missing)" % left)
            sink.write(chunk)
            left -= len(chunk)
        return b""

    def recv_frame(self, sink=None):
        """Receive one frame; return (header, body). See recv_body for sink."""
        header = self.recv_header()
        return header, self.recv_body(header.get("size", 0), sink)

    # -- requests ---------------------------------------------------------

    def request(self, header, body=b"", sink=None):
        """Send a request and return the (header, body) of its response.

        Raises ServerError if the server answers with an error frame and
        ProtocolError if the response id does not match the request id.
        Note: the whole request body is written before the response is
        read. That is fine for bodies that fit in the socket buffers (a few
        hundred KiB); very large echoed bodies need concurrent read/write.
        """
        try:
            self.send_frame(header, body)
        except OSError:
            # The server may have answered with an error frame (e.g. busy,
            # bad_size) and closed while we were still sending: report that.
            try:
                resp, _ = self.recv_frame()
            except (OSError, ProtocolError):
                resp = None
            if resp is not None and resp["type"] == "error":
                raise ServerError(resp)
            raise
        resp, resp_body = self.recv_frame(sink)
        if resp["type"] == "error":
            raise ServerError(resp)
        if "id" in header and resp.get("id") != header["id"]:
            raise ProtocolError("response id %r does not match request id %r"
                                % (resp.get("id"), header["id"]))
        return resp, resp_body

    def hello(self, version=PROTOCOL_VERSION):
        """Perform the handshake; return the server's hello header."""
        resp, _ = self.request({"type": "hello", "version": version})
        if resp["type"] != "hello":
            raise ProtocolError("expected hello, got %r" % resp["type"])
        return resp

    def ping(self, body=b""):
        """Send one ping; return (pong header, pong body, rtt in seconds)."""
        start = time.perf_counter()
        resp, resp_body = self.request({"type": "ping", "id": self.next_id()}, body)
        rtt = time.perf_counter() - start
        if resp["type"] != "pong":
            raise ProtocolError("expected pong, got %r" % resp["type"])
        return resp, resp_body, rtt


# -- command line ----------------------------------------------------------

def cmd_ping(client, args):
    info = client.hello()
    services = info.get("services", [])
    print("hello: %s services=%s" % (info.get("server", "?"), ",".join(map(str, services))))
    body = args.body.encode("utf-8") if args.body is not None else b""
    for _ in range(args.count):
        resp, resp_body, rtt = client.ping(body)
        print("pong id=%s size=%d rtt=%.3f ms" % (resp.get("id"), len(resp_body), rtt * 1000.0))
        if resp_body != body:
            print("error: pong body differs from ping body (sent %d bytes, got %d)"
                  % (len(body), len(resp_body)), file=sys.stderr)
            return 1
    return 0


def positive_int(text):
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def main(argv=None):
    parser = argparse.ArgumentParser(description="Client for the sockit framed protocol.")
    parser.add_argument("--host", default=DEFAULT_HOST, help="server address (default %(default)s)")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help="server port (default %(default)s)")
    parser.add_argument("--timeout", type=float, default=10.0,
                        help="socket timeout in seconds (default %(default)s)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    p = sub.add_parser("ping", help="handshake, then send pings and print round-trip times")
    p.add_argument("--count", type=positive_int, default=1, help="number of pings (default 1)")
    p.add_argument("--body", help="text sent as the ping body; the pong must echo it")
    p.set_defaults(func=cmd_ping)
    args = parser.parse_args(argv)

    client = Client(args.host, args.port, timeout=args.timeout)
    try:
        client.connect()
    except OSError as e:
        print("error: cannot connect to %s:%d: %s" % (args.host, args.port, e.strerror or e),
              file=sys.stderr)
        return 1
    try:
        return args.func(client, args)
    except ServerError as e:
        print("error: %s: %s" % (e.code, e.message), file=sys.stderr)
        return 1
    except ProtocolError as e:
        print("error: protocol: %s" % e, file=sys.stderr)
        return 1
    except socket.timeout:
        print("error: no answer from server within %gs" % args.timeout, file=sys.stderr)
        return 1
    except OSError as e:
        print("error: %s" % (e.strerror or e), file=sys.stderr)
        return 1
    finally:
        client.close()


if __name__ == "__main__":
    sys.exit(main())
