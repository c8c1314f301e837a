#!/usr/bin/env python3
"""Writes the seed corpora under fuzz/corpus/ from the transcripts in
docs/protocol.md and examples from RFC 9110 / RFC 7233 (byte ranges).
Run from the repository root; the files it writes are committed."""
import hashlib, json, os, re, struct

root = os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpus")

def put(target, data):
    d = os.path.join(root, target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, hashlib.sha1(data).hexdigest()), "wb") as f:
        f.write(data)

# Framed requests from the protocol transcripts (both directions).
frames = []
for line in open("docs/protocol.md", encoding="utf-8"):
    m = re.match(r"^[<>] (\{.*\})( (.*))?$", line.rstrip("\n"))
    if not m:
        continue
    header = re.sub(r"\$\w+", '"tok"', m.group(1)).replace("...", "0")
    try:
        json.loads(header)
    except ValueError:
        continue
    frames.append((header.encode(), (m.group(3) or "").encode()))

def wire(header, body):
    return struct.pack(">I", len(header)) + header + body

for i, (h, b) in enumerate(frames[:40]):
    put("frame_codec", bytes([255, i]) + wire(h, b))
put("frame_codec", bytes([255, 7]) + b"".join(wire(h, b) for h, b in frames[:6]))
put("frame_codec", bytes([0, 1]) + struct.pack(">I", 0xFFFFFFFF))
put("frame_codec", bytes([255, 3]) + wire(b'{"type":"ping","size":4}', b"ab"))

# Chat requests: the same JSON for both transports, then NUL and a body.
chat = [h for h, _ in frames if re.search(rb'"type":"(subscribe|send|join|leave|rooms|members|who|history)"', h)]
chat += [
    b'{"type":"send","id":1,"room":"lobby","text":"hi"}',
    b'{"type":"send","id":"a","to":"bob","text":"\\u00e9t\\u00e9"}',
    b'{"type":"history","id":7,"room":"lobby","before":1042,"limit":50}',
    b'{"type":"history","with":"bob","limit":500}',
    b'{"type":"join","room":"Lobby.2-x_y"}',
    b'{"type":"subscribe","since":12}',
    b'{"id":[1]}',
    b'[1,2]',
]
for c in chat[:40]:
    put("chat_request", c + b"\0hello")

# Paths: good ones and the hostile list of src/store/path.rs.
paths = ["a", "a/b/c.txt", "报告 2026.pdf", ".profile", "a..b", "100% done", "10:30 notes",
         "../x", "a/../../x", "/etc/passwd", "a\\b", "a\0b", "C:x", "a//b", "a/",
         "%2e%2e/x", "%252e%252e/x", "%25252e%25252e", "%2525252e%2525252e", "..%2fx",
         "\uFF0E\uFF0E/x", "a\uFF0Fb", "a\u2215b", "evil\u202Etxt.exe", ".sockit-partial/x",
         "\uFF05\uFF12\uFF45", "docs/a/b/c/d/e/f", "é/ﬁle"]
for p in paths:
    put("remote_path", p.encode())

# Ranges (RFC 9110 14.1.2 / RFC 7233 2.1 examples), If-Range, If-None-Match.
ranges = ["bytes=0-499", "bytes=500-999", "bytes=-500", "bytes=9500-", "bytes=0-0,-1",
          "bytes=500-600,601-999", "bytes=500-700,601-999", "bytes=0-0,2-2,4-4",
          "bytes=5-1", "bytes=10000-", "items=0-1", "bytes=", "bytes=0-18446744073709551615"]
validators = ["", '"1-2-3"', "Tue, 14 Nov 2023 22:13:20 GMT", 'W/"1-2-3"', "Sun, 06 Nov 1994 08:49:37 GMT"]
for i, r in enumerate(ranges):
    for j, v in enumerate(validators[: 1 + i % len(validators)]):
        length = [10000, 0, 1, 600, 2**64 - 1][(i + j) % 5]
        tail = r.encode() + (b"\n" + v.encode() if v else b"")
        if j == 2:
            tail += b'\n"1-2-3", W/"x"'
        put("range", struct.pack(">Q", length) + tail)

# Upload Content-Range.
for c in ["bytes 0-9/10", "bytes 5-9/100", "bytes 9-5/100", "bytes 0-10/10", "bytes */10",
          "items 0-1/2", " bytes 0-0/1 ", "bytes 0-18446744073709551614/18446744073709551615",
          "bytes +0-9/10", "bytes 0-9/ 10", "bytes 00-09/010", "bytes 1 -2/3"]:
    put("content_range", c.encode())
