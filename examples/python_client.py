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

The server's framed port speaks TLS by default; this client wraps its
socket with the ssl module (--tls) and trusts the server either by pinning
its certificate's fingerprint (--fingerprint, what `sockit tls fingerprint`
prints on the server) or through a CA file (--cafile). Without --tls it
speaks plain TCP, for a server run with `tls = false`.

Usage (the connection options --host, --port, --timeout, --tls,
--fingerprint and --cafile may come before or after the command):

    python3 examples/python_client.py ping --fingerprint SHA256:...
    python3 examples/python_client.py ping      # a plain (tls = false) server
    python3 examples/python_client.py ping --count 3 --body hello --port 7070
    python3 examples/python_client.py selftest
    printf '%s\n' "$PASSWORD" | python3 examples/python_client.py register --user alice --password-stdin
    printf '%s\n' "$PASSWORD" | python3 examples/python_client.py login --user alice --password-stdin
    export SOCKIT_TOKEN=sk_...            # the token printed by login
    python3 examples/python_client.py upload report.pdf docs/report.pdf [--force]
    python3 examples/python_client.py download docs/report.pdf ./report.pdf
    python3 examples/python_client.py ls [--recursive] [docs]

Transfers are verified end to end with BLAKE3. Python's hashlib has no
BLAKE3, so this file carries a small pure-Python implementation of it
(class Blake3). It is correct but slow (about half a megabyte a second):
fine for an example, not for large files. A client of its own that only
uploads can do without it: the server also accepts the SHA-256 of the file
(hashlib.sha256) in put_end; downloads are checked against BLAKE3 only.

As a library:

    from python_client import Client
    with Client("127.0.0.1", 7070) as c:
        info = c.hello()
        header, body, rtt = c.ping(b"abc")
        token = c.login("alice", password)       # or c.auth(token)
        c.upload("report.pdf", "docs/report.pdf")
        c.download("docs/report.pdf", "copy.pdf")
        print(c.ls("docs"))
"""

import argparse
import getpass
import hashlib
import json
import os
import secrets
import socket
import ssl
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


class ChecksumError(Exception):
    """A transfer's BLAKE3 hash did not match; nothing was kept."""

    code = "checksum_mismatch"

    def __init__(self, message):
        self.message = message
        super().__init__(message)


# -- BLAKE3 (pure Python) ----------------------------------------------------
#
# A straight transcription of the BLAKE3 reference implementation
# (https://github.com/BLAKE3-team/BLAKE3, reference_impl/reference_impl.rs),
# default hash mode only, 32-byte output. The input is split into 1024-byte
# chunks of 64-byte blocks; each chunk is compressed into a chaining value
# (CV), and CVs are merged pairwise into a binary tree whose root gives the
# hash. Blake3.update() keeps a stack of the CVs of completed subtrees, so it
# streams input of any size in constant memory.

_B3_IV = (0x6A09E667, 0xBB67AE85, 0x3C6EF372, 0xA54FF53A,
          0x510E527F, 0x9B05688C, 0x1F83D9AB, 0x5BE0CD19)
_B3_PERMUTATION = (2, 6, 3, 10, 7, 0, 4, 13, 1, 11, 12, 5, 9, 14, 15, 8)
_B3_CHUNK_START = 1 << 0
_B3_CHUNK_END = 1 << 1
_B3_PARENT = 1 << 2
_B3_ROOT = 1 << 3
_B3_BLOCK_LEN = 64
_B3_CHUNK_LEN = 1024
_B3_BLOCKS_PER_CHUNK = _B3_CHUNK_LEN // _B3_BLOCK_LEN
_B3_WORDS = struct.Struct("<16I")
_B3_CV = struct.Struct("<8I")


def _b3_compress(cv, m, counter, block_len, flags):
    """The BLAKE3 compression function; returns the 16-word output state.

    cv is 8 words, m the 16 message words of one block. Each of the 7 rounds
    applies the quarter-round G to the four columns, then to the four
    diagonals of the 4x4 state (written out below, with the rotations 16, 12,
    8, 7); between rounds the message words are permuted.
    """
    M = 0xFFFFFFFF
    s0, s1, s2, s3, s4, s5, s6, s7 = cv
    s8, s9, s10, s11 = _B3_IV[0], _B3_IV[1], _B3_IV[2], _B3_IV[3]
    s12, s13, s14, s15 = counter & M, (counter >> 32) & M, block_len, flags
    perm = _B3_PERMUTATION
    for r in range(7):
        if r:
            m = [m[i] for i in perm]
        # Columns: G(0,4,8,12) G(1,5,9,13) G(2,6,10,14) G(3,7,11,15)
        s0 = (s0 + s4 + m[0]) & M; s12 ^= s0; s12 = (s12 >> 16) | ((s12 << 16) & M)
        s8 = (s8 + s12) & M; s4 ^= s8; s4 = (s4 >> 12) | ((s4 << 20) & M)
        s0 = (s0 + s4 + m[1]) & M; s12 ^= s0; s12 = (s12 >> 8) | ((s12 << 24) & M)
        s8 = (s8 + s12) & M; s4 ^= s8; s4 = (s4 >> 7) | ((s4 << 25) & M)
        s1 = (s1 + s5 + m[2]) & M; s13 ^= s1; s13 = (s13 >> 16) | ((s13 << 16) & M)
        s9 = (s9 + s13) & M; s5 ^= s9; s5 = (s5 >> 12) | ((s5 << 20) & M)
        s1 = (s1 + s5 + m[3]) & M; s13 ^= s1; s13 = (s13 >> 8) | ((s13 << 24) & M)
        s9 = (s9 + s13) & M; s5 ^= s9; s5 = (s5 >> 7) | ((s5 << 25) & M)
        s2 = (s2 + s6 + m[4]) & M; s14 ^= s2; s14 = (s14 >> 16) | ((s14 << 16) & M)
        s10 = (s10 + s14) & M; s6 ^= s10; s6 = (s6 >> 12) | ((s6 << 20) & M)
        s2 = (s2 + s6 + m[5]) & M; s14 ^= s2; s14 = (s14 >> 8) | ((s14 << 24) & M)
        s10 = (s10 + s14) & M; s6 ^= s10; s6 = (s6 >> 7) | ((s6 << 25) & M)
        s3 = (s3 + s7 + m[6]) & M; s15 ^= s3; s15 = (s15 >> 16) | ((s15 << 16) & M)
        s11 = (s11 + s15) & M; s7 ^= s11; s7 = (s7 >> 12) | ((s7 << 20) & M)
        s3 = (s3 + s7 + m[7]) & M; s15 ^= s3; s15 = (s15 >> 8) | ((s15 << 24) & M)
        s11 = (s11 + s15) & M; s7 ^= s11; s7 = (s7 >> 7) | ((s7 << 25) & M)
        # Diagonals: G(0,5,10,15) G(1,6,11,12) G(2,7,8,13) G(3,4,9,14)
        s0 = (s0 + s5 + m[8]) & M; s15 ^= s0; s15 = (s15 >> 16) | ((s15 << 16) & M)
        s10 = (s10 + s15) & M; s5 ^= s10; s5 = (s5 >> 12) | ((s5 << 20) & M)
        s0 = (s0 + s5 + m[9]) & M; s15 ^= s0; s15 = (s15 >> 8) | ((s15 << 24) & M)
        s10 = (s10 + s15) & M; s5 ^= s10; s5 = (s5 >> 7) | ((s5 << 25) & M)
        s1 = (s1 + s6 + m[10]) & M; s12 ^= s1; s12 = (s12 >> 16) | ((s12 << 16) & M)
        s11 = (s11 + s12) & M; s6 ^= s11; s6 = (s6 >> 12) | ((s6 << 20) & M)
        s1 = (s1 + s6 + m[11]) & M; s12 ^= s1; s12 = (s12 >> 8) | ((s12 << 24) & M)
        s11 = (s11 + s12) & M; s6 ^= s11; s6 = (s6 >> 7) | ((s6 << 25) & M)
        s2 = (s2 + s7 + m[12]) & M; s13 ^= s2; s13 = (s13 >> 16) | ((s13 << 16) & M)
        s8 = (s8 + s13) & M; s7 ^= s8; s7 = (s7 >> 12) | ((s7 << 20) & M)
        s2 = (s2 + s7 + m[13]) & M; s13 ^= s2; s13 = (s13 >> 8) | ((s13 << 24) & M)
        s8 = (s8 + s13) & M; s7 ^= s8; s7 = (s7 >> 7) | ((s7 << 25) & M)
        s3 = (s3 + s4 + m[14]) & M; s14 ^= s3; s14 = (s14 >> 16) | ((s14 << 16) & M)
        s9 = (s9 + s14) & M; s4 ^= s9; s4 = (s4 >> 12) | ((s4 << 20) & M)
        s3 = (s3 + s4 + m[15]) & M; s14 ^= s3; s14 = (s14 >> 8) | ((s14 << 24) & M)
        s9 = (s9 + s14) & M; s4 ^= s9; s4 = (s4 >> 7) | ((s4 << 25) & M)
    return (s0 ^ s8, s1 ^ s9, s2 ^ s10, s3 ^ s11,
            s4 ^ s12, s5 ^ s13, s6 ^ s14, s7 ^ s15,
            s8 ^ cv[0], s9 ^ cv[1], s10 ^ cv[2], s11 ^ cv[3],
            s12 ^ cv[4], s13 ^ cv[5], s14 ^ cv[6], s15 ^ cv[7])


def _b3_words(block):
    """The 16 little-endian message words of a block of at most 64 bytes."""
    if len(block) < _B3_BLOCK_LEN:
        block = bytes(block) + bytes(_B3_BLOCK_LEN - len(block))
    return _B3_WORDS.unpack(block)


class Blake3:
    """Incremental BLAKE3 hash (default mode, 32-byte digest).

    Same shape as hashlib objects: Blake3(data).hexdigest(), or
    h = Blake3(); h.update(a); h.update(b); h.digest(). digest() does not
    change the state, so update() may go on afterwards.
    """

    name = "blake3"
    digest_size = 32
    block_size = _B3_BLOCK_LEN

    def __init__(self, data=b""):
        self._stack = []               # CVs of completed subtrees, left to right
        self._chunk_counter = 0        # index of the current chunk
        self._chunk_cv = _B3_IV        # CV of the current chunk so far
        self._blocks = 0               # blocks of the current chunk compressed
        self._buf = bytearray()        # pending block (<= 64 bytes, not yet compressed)
        if data:
            self.update(data)

    def _push_chunk_cv(self, cv):
        # A chunk is done and more input follows. total is the number of
        # chunks so far; every trailing 0 bit of it completes a subtree, whose
        # two halves are merged into a parent node.
        total = self._chunk_counter + 1
        while total & 1 == 0:
            left = self._stack.pop()
            cv = _b3_compress(_B3_IV, left + cv, 0, _B3_BLOCK_LEN, _B3_PARENT)[:8]
            total >>= 1
        self._stack.append(cv)

    def update(self, data):
        data = memoryview(data).cast("B")
        pos, end = 0, len(data)
        buf = self._buf
        while pos < end:
            if len(buf) == _B3_BLOCK_LEN:
                # The buffered block is full and more input follows, so it
                # is not the last block of the input: compress it now. (The
                # last block is kept until digest(), which may mark it ROOT.)
                flags = _B3_CHUNK_START if self._blocks == 0 else 0
                if self._blocks == _B3_BLOCKS_PER_CHUNK - 1:
                    cv = _b3_compress(self._chunk_cv, _B3_WORDS.unpack(buf), self._chunk_counter,
                                      _B3_BLOCK_LEN, flags | _B3_CHUNK_END)[:8]
                    self._push_chunk_cv(cv)
                    self._chunk_counter += 1
                    self._chunk_cv = _B3_IV
                    self._blocks = 0
                else:
                    self._chunk_cv = _b3_compress(self._chunk_cv, _B3_WORDS.unpack(buf),
                                                  self._chunk_counter, _B3_BLOCK_LEN, flags)[:8]
                    self._blocks += 1
                del buf[:]
            take = min(_B3_BLOCK_LEN - len(buf), end - pos)
            buf += data[pos:pos + take]
            pos += take
        return self

    def digest(self):
        # The node still open is the last chunk (possibly its only, partial
        # block). Fold it into the stacked subtrees from right to left; the
        # final node is compressed with the ROOT flag.
        flags = _B3_CHUNK_END | (_B3_CHUNK_START if self._blocks == 0 else 0)
        cv, words, counter, block_len = self._chunk_cv, _b3_words(self._buf), \
            self._chunk_counter, len(self._buf)
        for left in reversed(self._stack):
            right = _b3_compress(cv, words, counter, block_len, flags)[:8]
            cv, words, counter, block_len, flags = _B3_IV, left + right, 0, _B3_BLOCK_LEN, _B3_PARENT
        # Root output: the output block counter (0 for a 32-byte digest)
        # replaces the chunk counter.
        out = _b3_compress(cv, words, 0, block_len, flags | _B3_ROOT)
        return _B3_CV.pack(*out[:8])

    def hexdigest(self):
        return self.digest().hex()

    def copy(self):
        other = Blake3.__new__(Blake3)
        other._stack = list(self._stack)
        other._chunk_counter = self._chunk_counter
        other._chunk_cv = self._chunk_cv
        other._blocks = self._blocks
        other._buf = bytearray(self._buf)
        return other


def blake3_hex(data):
    """BLAKE3 of bytes, as 64 hex digits."""
    return Blake3(data).hexdigest()


# Official test vectors (github.com/BLAKE3-team/BLAKE3,
# test_vectors/test_vectors.json, "hash", first 32 bytes): input byte i is
# i % 251.
BLAKE3_VECTORS = (
    (0, "af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f3262"),
    (1, "2d3adedff11b61f14c886e35afa036736dcd87a74d27b5c1510225d0f592e213"),
    (1023, "10108970eeda3eb932baac1428c7a2163b0e924c9a9e25b35bba72b28f70bd11"),
    (1024, "42214739f095a406f3fc83deb889744ac00df831c10daa55189b5d121c855af7"),
    (1025, "d00278ae47eb27b34faecf67b4fe263f82d5412916c1ffd97c8cb7fb814b8444"),
    (2048, "e776b6028c7cd22a4d0ba182a8bf62205d2ef576467e838ed6f2529b85fba24a"),
    (2049, "5f4d72f40d7a5f82b15ca2b2e44b1de3c2ef86c426c95c1af0b6879522563030"),
    (3072, "b98cb0ff3623be03326b373de6b9095218513e64f1ee2edd2525c7ad1e5cffd2"),
    (3073, "7124b49501012f81cc7f11ca069ec9226cecb8a2c850cfe644e327d22d3e1cd3"),
    (4096, "015094013f57a5277b59d8475c0501042c0b642e531b0a1c8f58d2163229e969"),
    (4097, "9b4052b38f1c5fc8b1f9ff7ac7b27cd242487b3d890d15c96a1c25b8aa0fb995"),
    (5120, "9cadc15fed8b5d854562b26a9536d9707cadeda9b143978f319ab34230535833"),
    (5121, "628bd2cb2004694adaab7bbd778a25df25c47b9d4155a55f8fbd79f2fe154cff"),
    (6144, "3e2e5b74e048f3add6d21faab3f83aa44d3b2278afb83b80b3c35164ebeca205"),
    (6145, "f1323a8631446cc50536a9f705ee5cb619424d46887f3c376c695b70e0f0507f"),
    (7168, "61da957ec2499a95d6b8023e2b0e604ec7f6b50e80a9678b89d2628e99ada77a"),
    (7169, "a003fc7a51754a9b3c7fae0367ab3d782dccf28855a03d435f8cfe74605e7817"),
    (8192, "aae792484c8efe4f19e2ca7d371d8c467ffb10748d8a5a1ae579948f718a2a63"),
    (8193, "bab6c09cb8ce8cf459261398d2e7aef35700bf488116ceb94a36d0f5f1b7bc3b"),
    (16384, "f875d6646de28985646f34ee13be9a576fd515f76b5b0a26bb324735041ddde4"),
    (31744, "62b6960e1a44bcc1eb1a611a8d6235b6b4b78f32e7abc4fb4c6cdcce94895c47"),
    (102400, "bc3e3d41a1146b069abffad3c0d44860cf664390afce4d9661f7902e7943e085"),
)


def blake3_selftest():
    """Check Blake3 against the official vectors, whole and fed in pieces.

    Returns the number of vectors checked; raises AssertionError on a
    mismatch.
    """
    for length, expected in BLAKE3_VECTORS:
        data = bytes(i % 251 for i in range(length))
        got = Blake3(data).hexdigest()
        if got != expected:
            raise AssertionError("BLAKE3 of %d bytes: expected %s, got %s" % (length, expected, got))
        # The same input in uneven pieces (exercises the buffering).
        h, pos, step = Blake3(), 0, 1
        while pos < length:
            h.update(data[pos:pos + step])
            pos += step
            step = step * 3 + 1
        if h.hexdigest() != expected:
            raise AssertionError("BLAKE3 of %d bytes fed in pieces: expected %s, got %s"
                                 % (length, expected, h.hexdigest()))
    return len(BLAKE3_VECTORS)


# -- transfer helpers --------------------------------------------------------

LOGIN_TIMEOUT = 60.0   # login may be throttled by up to 30 s, plus Argon2


class _HashingReader:
    """Wraps a binary file: everything read is also fed to a hasher."""

    def __init__(self, f, hasher):
        self.f, self.hasher = f, hasher

    def read(self, n):
        data = self.f.read(n)
        self.hasher.update(data)
        return data


class _HashingWriter:
    """Wraps a binary file: everything written is also fed to a hasher."""

    def __init__(self, f, hasher):
        self.f, self.hasher = f, hasher

    def write(self, data):
        self.hasher.update(data)
        self.f.write(data)


def verify_blake3(got_hex, expected_hex, what):
    """Raise ChecksumError unless expected_hex (from the peer) equals got_hex."""
    if not isinstance(expected_hex, str) or expected_hex.lower() != got_hex:
        raise ChecksumError("%s: BLAKE3 of the received data is %s, the server says %s"
                            % (what, got_hex, expected_hex))


def _create_temp_beside(path):
    """Create a new hidden temporary file in path's folder; return (name, file)."""
    folder, base = os.path.split(os.path.abspath(path))
    while True:
        tmp = os.path.join(folder, ".%s.%s.part" % (base[:200], secrets.token_hex(4)))
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
        except FileExistsError:
            continue
        return tmp, os.fdopen(fd, "wb")


def _fsync_dir(folder):
    """Make a rename in folder durable (POSIX; a no-op where unsupported)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


class CertificateMismatch(ConnectionError):
    """The server's certificate is not the pinned one."""


def normalize_fingerprint(text):
    """SHA256:<64 lowercase hex> from any usual spelling (colons, case,
    with or without the SHA256: prefix)."""
    t = text.strip()
    if t.lower().startswith("sha256:"):
        t = t[7:]
    t = t.replace(":", "").lower()
    if len(t) != 64 or any(c not in "0123456789abcdef" for c in t):
        raise ValueError("not a SHA-256 fingerprint: %r" % text)
    return "SHA256:" + t


class Client:
    """One connection to a sockit framed-protocol server.

    send_frame/recv_frame are the building blocks; hello() and ping() are
    request helpers built on top of them, and so are the account calls
    (register, login, auth, logout, whoami) and the file calls (ls, stat,
    upload, download). Requests carry ids 1, 2, 3, ...
    """

    def __init__(self, host=DEFAULT_HOST, port=DEFAULT_PORT, timeout=10.0,
                 max_header=MAX_HEADER, max_body=MAX_BODY,
                 max_memory_body=MAX_MEMORY_BODY,
                 tls=False, fingerprint=None, cafile=None):
        self.host = host
        self.port = port
        self.timeout = timeout
        # TLS: pin the certificate's SHA-256 fingerprint, or verify it
        # against a CA file (name and dates checked), or the system's CAs.
        self.tls = tls or fingerprint is not None or cafile is not None
        self.fingerprint = normalize_fingerprint(fingerprint) if fingerprint else None
        self.cafile = cafile
        self.max_header = max_header
        self.max_body = max_body
        self.max_memory_body = max_memory_body
        self.sock = None
        self._next_id = 1

    # -- connection -------------------------------------------------------

    def connect(self):
        """Open the connection (TCP, then TLS if asked). Raises OSError
        (e.g. ConnectionRefusedError); ssl.SSLError is an OSError too."""
        sock = socket.create_connection((self.host, self.port), timeout=self.timeout)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if self.tls:
            try:
                sock = self._wrap(sock)
            except BaseException:
                sock.close()
                raise
        self.sock = sock
        return self

    def _wrap(self, sock):
        """TLS over `sock`, trusting the server as configured."""
        if self.fingerprint:
            # Pinning: the certificate is self-signed, so no CA can vouch
            # for it; its exact fingerprint is checked instead, right after
            # the handshake and before anything is sent.
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        else:
            ctx = ssl.create_default_context(cafile=self.cafile)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        tls = ctx.wrap_socket(sock, server_hostname=self.host)
        if self.fingerprint:
            der = tls.getpeercert(binary_form=True)
            got = "SHA256:" + hashlib.sha256(der).hexdigest()
            if got != self.fingerprint:
                tls.close()
                raise CertificateMismatch(
                    "the server's certificate is %s, not the pinned %s: "
                    "refusing to talk to it" % (got, self.fingerprint))
        return tls

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
        # The server may answer with an error frame (e.g. busy, bad_size) and
        # close while we are still sending: _send_or_report reports that.
        self._send_or_report(header, body)
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

    # -- accounts ---------------------------------------------------------

    def _expect(self, resp, kind):
        if resp["type"] != kind:
            raise ProtocolError("expected %s, got %r" % (kind, resp["type"]))
        return resp

    def register(self, user, password):
        """Create an account; return the user name as the server stored it."""
        resp, _ = self.request({"type": "register", "id": self.next_id(),
                                "user": user, "password": password})
        return self._expect(resp, "registered").get("user", user)

    def login(self, user, password):
        """Log in; return the session token. The connection is authenticated too.

        The server may delay a login by up to 30 s after failed attempts
        (throttling), so the socket timeout is raised for this request.
        """
        old = self.sock.gettimeout()
        if old is not None:
            self.sock.settimeout(max(old, LOGIN_TIMEOUT))
        try:
            resp, _ = self.request({"type": "login", "id": self.next_id(),
                                    "user": user, "password": password})
        finally:
            self.sock.settimeout(old)
        token = self._expect(resp, "logged_in").get("token")
        if not isinstance(token, str) or not token:
            raise ProtocolError("logged_in reply has no token")
        return token

    def auth(self, token):
        """Authenticate this connection with a token; return the user name."""
        resp, _ = self.request({"type": "auth", "id": self.next_id(), "token": token})
        return self._expect(resp, "authed").get("user")

    def logout(self):
        """Revoke the token this connection authenticated with."""
        resp, _ = self.request({"type": "logout", "id": self.next_id()})
        self._expect(resp, "logged_out")

    def whoami(self):
        """Return the user this connection is authenticated as."""
        resp, _ = self.request({"type": "whoami", "id": self.next_id()})
        return self._expect(resp, "whoami").get("user")

    # -- files ------------------------------------------------------------

    def ls(self, path="", recursive=False):
        """List a remote folder (or one file); return a list of entry dicts.

        Each entry has name, kind (file, dir, symlink, other), size and
        mtime_ns. With recursive, names are paths relative to path.
        """
        resp, body = self.request({"type": "ls", "id": self.next_id(),
                                   "path": path, "recursive": bool(recursive)})
        self._expect(resp, "listing")
        try:
            entries = json.loads(body.decode("utf-8"), parse_constant=_reject_constant) if body else []
        except (UnicodeDecodeError, ValueError) as e:
            raise ProtocolError("listing body is not UTF-8 JSON: %s" % e)
        if not isinstance(entries, list):
            raise ProtocolError("listing body is not a JSON array")
        return entries

    def stat(self, path):
        """Return the entry dict of one remote path."""
        resp, _ = self.request({"type": "stat", "id": self.next_id(), "path": path})
        return self._expect(resp, "stat").get("entry")

    def _send_or_report(self, header, body=b""):
        """send_frame; if the server closed while we were sending, raise its error frame."""
        try:
            self.send_frame(header, body)
        except OSError:
            try:
                resp, _ = self.recv_frame()
            except (OSError, ProtocolError):
                resp = None
            if resp is not None and resp["type"] == "error":
                raise ServerError(resp)
            raise

    def _resync(self):
        """Skip stray answers still on their way: send a ping with a fresh id
        and discard frames until its pong. Closes the connection on failure."""
        sync_id = "sync-%d" % self.next_id()
        try:
            self.send_frame({"type": "ping", "id": sync_id})
            for _ in range(16):
                resp, _ = self.recv_frame()
                if resp.get("id") == sync_id:
                    return
        except (OSError, ProtocolError):
            pass
        self.close()

    def upload(self, local_path, remote_path, force=False, resume=True):
        """Upload a local file with the negotiated put; return the put_ok header.

        put -> put_ready{offset} -> put_data (length - offset bytes, in
        CHUNK-sized pieces) -> put_end{blake3 of the whole file} -> put_ok.
        An interrupted upload of the same file (path, length, mtime) resumes
        at the server's offset; if that earlier part no longer matches
        (checksum_mismatch), the upload is retried once from the start.
        The server's put_ok hash is checked against ours.
        """
        try:
            return self._upload(local_path, remote_path, force, resume)
        except ServerError as e:
            if not (resume and e.code == "checksum_mismatch" and getattr(e, "resumed", False)):
                raise
        return self._upload(local_path, remote_path, force, False)

    def _upload(self, local_path, remote_path, force, resume):
        with open(local_path, "rb") as f:
            st = os.fstat(f.fileno())
            length = st.st_size
            rid = self.next_id()
            ready, _ = self.request({"type": "put", "id": rid, "path": remote_path,
                                     "length": length, "mtime_ns": st.st_mtime_ns,
                                     "force": bool(force), "resume": bool(resume)})
            self._expect(ready, "put_ready")
            offset = ready.get("offset")
            if not _is_int(offset) or not 0 <= offset <= length:
                raise ProtocolError("put_ready has invalid offset %r for a %d-byte file"
                                    % (offset, length))
            hasher = Blake3()
            reader = _HashingReader(f, hasher)
            # The hash covers the whole file: hash the part the server
            # already has (without sending it), then hash and send the rest.
            left = offset
            while left:
                data = reader.read(min(left, CHUNK))
                if not data:
                    raise OSError("%s got shorter during the upload" % local_path)
                left -= len(data)
            try:
                self._send_or_report({"type": "put_data", "id": rid, "size": length - offset}, reader)
            except ValueError:
                # The file shrank: the promised body cannot be completed, so
                # the connection is unusable.
                self.close()
                raise OSError("%s got shorter during the upload" % local_path)
            # (If the file grew meanwhile, the server has its first `length`
            # bytes and the hash covers exactly those.)
            digest = hasher.hexdigest()
            self._send_or_report({"type": "put_end", "id": rid, "blake3": digest})
            resp, _ = self.recv_frame()
            if resp["type"] == "error":
                # If the server refused before put_end (e.g. a disk error
                # while writing the data), our put_end gets an error of its
                # own: skip it so the connection stays usable.
                self._resync()
                err = ServerError(resp)
                err.resumed = offset > 0
                raise err
            if resp.get("id") != rid:
                raise ProtocolError("response id %r does not match request id %r" % (resp.get("id"), rid))
            self._expect(resp, "put_ok")
            if resp.get("length") != length or str(resp.get("blake3", "")).lower() != digest:
                raise ChecksumError("server stored %r bytes with BLAKE3 %s; sent %d bytes with BLAKE3 %s"
                                    % (resp.get("length"), resp.get("blake3"), length, digest))
            return resp

    def download(self, remote_path, local_path):
        """Download a remote file to local_path; return the file_end header.

        get -> file{length, offset, size} + body -> file_end{blake3}. The body
        goes to a temporary file beside local_path, hashed as it arrives; only
        if the hash matches is it fsynced and renamed over local_path (which
        is never seen half-written). On a mismatch the temporary file is
        deleted and ChecksumError is raised. If local_path is a folder the
        file keeps its remote name inside it.
        """
        if os.path.isdir(local_path):
            local_path = os.path.join(local_path, remote_path.rsplit("/", 1)[-1] or "download")
        rid = self.next_id()
        self.send_frame({"type": "get", "id": rid, "path": remote_path})
        head = self.recv_header()
        if head["type"] == "error":
            self.recv_body(head.get("size", 0))
            raise ServerError(head)
        if head.get("id") != rid:
            raise ProtocolError("response id %r does not match request id %r" % (head.get("id"), rid))
        if head["type"] != "file":
            raise ProtocolError("expected file, got %r" % head["type"])
        length, offset, size = head.get("length"), head.get("offset", 0), head.get("size", 0)
        if not _is_int(length) or offset != 0 or size != length:
            # We never ask to resume, so the whole file must follow.
            raise ProtocolError("file header has length %r, offset %r, size %r"
                                % (length, offset, size))
        tmp_path, f = _create_temp_beside(local_path)
        try:
            hasher = Blake3()
            with f:
                self.recv_body(size, _HashingWriter(f, hasher))
                end, _ = self.recv_frame()
                if end["type"] == "error":
                    raise ServerError(end)
                if end["type"] != "file_end" or end.get("id") != rid:
                    raise ProtocolError("expected file_end for id %r, got %r (id %r)"
                                        % (rid, end["type"], end.get("id")))
                verify_blake3(hasher.hexdigest(), end.get("blake3"), remote_path)
                f.flush()
                os.fsync(f.fileno())
            mtime_ns = head.get("mtime_ns")
            if _is_int(mtime_ns):
                try:
                    os.utime(tmp_path, ns=(mtime_ns, mtime_ns))
                except (OSError, OverflowError, ValueError):
                    pass  # the mtime is a nicety; the bytes are what matter
            os.replace(tmp_path, local_path)
        except BaseException:
            try:
                os.unlink(tmp_path)
            except OSError:
                pass
            raise
        _fsync_dir(os.path.dirname(os.path.abspath(local_path)))
        return end


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


class CliError(Exception):
    """A usage or local problem, printed as `error: MESSAGE`."""


def _need_service(client, service):
    """hello, then check that the server offers service."""
    info = client.hello()
    services = info.get("services", [])
    if service not in services:
        raise CliError("server %s does not offer %r (services: %s)"
                       % (info.get("server", "?"), service, ",".join(map(str, services)) or "none"))
    return info


def _read_password(args):
    """The password: one line from stdin (--password-stdin) or a terminal prompt.

    Never from argv, where other users can see it (ps, shell history).
    """
    if args.password_stdin:
        line = sys.stdin.readline()
        password = line[:-1] if line.endswith("\n") else line
        if password.endswith("\r"):
            password = password[:-1]
    elif sys.stdin.isatty():
        password = getpass.getpass("password for %s: " % args.user)
    else:
        raise CliError("no password: use --password-stdin and write it to stdin")
    if not password:
        raise CliError("empty password")
    return password


def _authenticate(client, args):
    """hello (files service), then auth with --token or $SOCKIT_TOKEN."""
    if not args.token:
        raise CliError("no token: pass --token or set SOCKIT_TOKEN (the login command prints one)")
    _need_service(client, "files")
    client.auth(args.token)


def cmd_selftest(args):
    n = blake3_selftest()
    print("blake3 selftest: %d vectors ok" % n)
    return 0


def cmd_register(client, args):
    password = _read_password(args)
    _need_service(client, "accounts")
    print("registered %s" % client.register(args.user, password))
    return 0


def cmd_login(client, args):
    password = _read_password(args)
    _need_service(client, "accounts")
    print(client.login(args.user, password))
    return 0


def cmd_logout(client, args):
    if not args.token:
        raise CliError("no token: pass --token or set SOCKIT_TOKEN")
    _need_service(client, "accounts")
    client.auth(args.token)
    client.logout()
    print("logged out")
    return 0


def cmd_upload(client, args):
    if not os.path.isfile(args.local):
        raise CliError("%s: not a regular file" % args.local)
    _authenticate(client, args)
    ok = client.upload(args.local, args.remote, force=args.force)
    print("uploaded %s -> %s: %d bytes, blake3 %s"
          % (args.local, ok.get("path", args.remote), ok.get("length", 0), ok.get("blake3")))
    return 0


def cmd_download(client, args):
    _authenticate(client, args)
    end = client.download(args.remote, args.local)
    print("downloaded %s -> %s: blake3 %s" % (args.remote, args.local, end.get("blake3")))
    return 0


def _format_mtime(ns):
    if not _is_int(ns):
        return "-" * 19
    try:
        return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ns // 1000000000))
    except (OverflowError, OSError, ValueError):
        return "?" * 19


def cmd_ls(client, args):
    _authenticate(client, args)
    entries = client.ls(args.path, recursive=args.recursive)
    if args.json:
        print(json.dumps(entries, ensure_ascii=False, indent=1))
        return 0
    for e in entries:
        size = e.get("size", 0)
        print("%-7s %12s  %s  %s" % (e.get("kind", "?"), size if _is_int(size) else "?",
                                     _format_mtime(e.get("mtime_ns")), e.get("name", "?")))
    return 0


def positive_int(text):
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def add_connection_options(parser, defaults):
    """--host, --port, --timeout and the TLS options.

    They are given to the main parser (with their defaults) and to every
    subcommand (with defaults=False), so they may come before or after the
    subcommand: `--port 7071 ping` and `ping --port 7071` are the same. A
    subcommand's option that is not given leaves the main parser's value
    alone (argparse.SUPPRESS).
    """
    def default(value):
        return value if defaults else argparse.SUPPRESS

    parser.add_argument("--host", default=default(DEFAULT_HOST),
                        help="server address (default %s)" % DEFAULT_HOST)
    parser.add_argument("--port", type=int, default=default(DEFAULT_PORT),
                        help="server port (default %d)" % DEFAULT_PORT)
    parser.add_argument("--timeout", type=float, default=default(10.0),
                        help="socket timeout in seconds (default 10)")
    parser.add_argument("--tls", action="store_true", default=default(False),
                        help="speak TLS (the server's default); trust by --fingerprint, "
                             "--cafile, or the system's CAs")
    parser.add_argument("--fingerprint", metavar="SHA256:HEX", default=default(None),
                        help="pin the server certificate's SHA-256 fingerprint "
                             "(`sockit tls fingerprint` on the server); implies --tls")
    parser.add_argument("--cafile", metavar="FILE", default=default(None),
                        help="verify the server against the CA certificate(s) in FILE; implies --tls")


def main(argv=None):
    parser = argparse.ArgumentParser(description="Client for the sockit framed protocol.")
    add_connection_options(parser, defaults=True)
    connection = argparse.ArgumentParser(add_help=False)
    add_connection_options(connection, defaults=False)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    def command(name, summary, offline=False):
        # Every command that talks to a server takes the connection options too.
        return sub.add_parser(name, help=summary, parents=[] if offline else [connection])

    p = command("ping", "handshake, then send pings and print round-trip times")
    p.add_argument("--count", type=positive_int, default=1, help="number of pings (default 1)")
    p.add_argument("--body", help="text sent as the ping body; the pong must echo it")
    p.set_defaults(func=cmd_ping)

    p = command("selftest", "check the built-in BLAKE3 against the official test vectors",
                offline=True)
    p.set_defaults(func=cmd_selftest, offline=True)

    def add_password_args(p):
        p.add_argument("--user", required=True, help="user name")
        p.add_argument("--password-stdin", action="store_true",
                       help="read the password from the first line of stdin "
                            "(without it, prompt on a terminal)")

    def add_token_arg(p):
        p.add_argument("--token", default=os.environ.get("SOCKIT_TOKEN"),
                       help="session token from login (default: $SOCKIT_TOKEN)")

    p = command("register", "create an account")
    add_password_args(p)
    p.set_defaults(func=cmd_register)
    p = command("login", "log in and print a session token (only the token)")
    add_password_args(p)
    p.set_defaults(func=cmd_login)
    p = command("logout", "revoke a session token")
    add_token_arg(p)
    p.set_defaults(func=cmd_logout)
    p = command("upload", "upload a file (verified with BLAKE3)")
    add_token_arg(p)
    p.add_argument("local", metavar="LOCAL", help="local file")
    p.add_argument("remote", metavar="REMOTE", help="remote path, e.g. docs/a.txt")
    p.add_argument("--force", action="store_true", help="replace an existing remote file")
    p.set_defaults(func=cmd_upload)
    p = command("download", "download a file (verified with BLAKE3)")
    add_token_arg(p)
    p.add_argument("remote", metavar="REMOTE", help="remote path")
    p.add_argument("local", metavar="LOCAL", help="local file or folder")
    p.set_defaults(func=cmd_download)
    p = command("ls", "list a remote folder")
    add_token_arg(p)
    p.add_argument("path", metavar="PATH", nargs="?", default="", help="remote folder (default: the top)")
    p.add_argument("-r", "--recursive", action="store_true", help="list subfolders too")
    p.add_argument("--json", action="store_true", help="print the entries as JSON")
    p.set_defaults(func=cmd_ls)
    args = parser.parse_args(argv)

    if getattr(args, "offline", False):
        try:
            return args.func(args)
        except AssertionError as e:
            print("error: %s" % e, file=sys.stderr)
            return 1

    try:
        client = Client(args.host, args.port, timeout=args.timeout, tls=args.tls,
                        fingerprint=args.fingerprint, cafile=args.cafile)
    except ValueError as e:
        print("error: %s" % e, file=sys.stderr)
        return 1
    try:
        client.connect()
    except OSError as e:
        print("error: cannot connect to %s:%d: %s" % (args.host, args.port, e.strerror or e),
              file=sys.stderr)
        return 1
    try:
        return args.func(client, args)
    except ServerError as e:
        hint = ""
        if e.code == "tls_required" and not client.tls:
            hint = (" (with this client: --fingerprint SHA256:... as `sockit tls fingerprint` "
                    "prints it on the server, or --cafile FILE)")
        print("error: %s: %s%s" % (e.code, e.message, hint), file=sys.stderr)
        return 1
    except ChecksumError as e:
        print("error: %s: %s" % (e.code, e.message), file=sys.stderr)
        return 1
    except CliError as e:
        print("error: %s" % e, file=sys.stderr)
        return 1
    except ProtocolError as e:
        print("error: protocol: %s" % e, file=sys.stderr)
        return 1
    except socket.timeout:
        print("error: no answer from server within %gs" % args.timeout, file=sys.stderr)
        return 1
    except OSError as e:
        if e.filename is not None:
            print("error: %s: %s" % (e.filename, e.strerror or e), file=sys.stderr)
        else:
            print("error: %s" % (e.strerror or e), file=sys.stderr)
        return 1
    finally:
        client.close()


if __name__ == "__main__":
    sys.exit(main())
