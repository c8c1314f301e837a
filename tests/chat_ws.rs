//! The chat WebSocket (`/api/chat`) on the wire, on a real server on port
//! 0: RFC 6455's closing handshake and protocol violations checked with
//! hand-built frames, a ping flood that must be back-pressured, and a strict
//! client (Python's `websockets`) closing cleanly.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use serde_json::{json, Value};
use sockit::accounts::{Accounts, Settings as AccountSettings};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A safety net on every wait for the server: no test sleeps.
const PATIENCE: Duration = Duration::from_secs(10);
/// The longest WebSocket message the server reads with the default
/// `chat.max_message` (16 KiB, plus 4 KiB for the JSON around the text:
/// 20 480 bytes).
fn max_ws_message() -> usize {
    sockit::chat::Settings::default().max_message + sockit::chat::ws::JSON_OVERHEAD
}

/// A session token for a new user `name`.
async fn token(srv: &common::TestServer, name: &str) -> String {
    let accounts = Accounts::open(srv.data.path(), AccountSettings::default()).unwrap();
    let (name, pw) = (name.to_string(), "chat test password");
    let n = name.clone();
    accounts.run(move |a| a.add_user(&n, pw)).await.unwrap();
    accounts.login(name, pw.into(), None).await.unwrap().token
}

/// Sends the upgrade request for `path` on `s` and reads the `101`.
async fn upgrade(mut s: TcpStream, addr: SocketAddr, token: &str, path: &str) -> TcpStream {
    let req = format!(
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
         Authorization: Bearer {token}\r\n\r\n"
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let b = tokio::time::timeout(PATIENCE, s.read_u8())
            .await
            .expect("the upgrade answer")
            .expect("the upgrade answer ended early");
        head.push(b);
    }
    let head = String::from_utf8_lossy(&head);
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    assert!(
        head.contains("s3pPLMBiTxaQ9kYGzzhZRbK+xOo="),
        "the RFC's accept value: {head}"
    );
    s
}

/// Opens the chat socket on `s` and reads its first message, `subscribed`:
/// the server is then reading the socket.
async fn open_on(s: TcpStream, addr: SocketAddr, token: &str) -> TcpStream {
    let mut s = upgrade(s, addr, token, "/api/chat").await;
    let (op, hello) = read_frame(&mut s).await.expect("the first message");
    assert_eq!(op, 0x81, "a final text frame");
    let hello: Value = serde_json::from_slice(&hello).unwrap();
    assert_eq!(hello["type"], "subscribed", "{hello}");
    s
}

async fn open(addr: SocketAddr, token: &str) -> TcpStream {
    open_on(TcpStream::connect(addr).await.unwrap(), addr, token).await
}

/// A client frame: `head` is the first byte as sent (FIN, RSV bits,
/// opcode), the payload is masked unless `masked` is false.
fn frame(head: u8, payload: &[u8], masked: bool) -> Vec<u8> {
    let mask = [0x37, 0xfa, 0x21, 0x3d];
    let bit = if masked { 0x80 } else { 0 };
    let mut f = vec![head];
    match payload.len() {
        n @ 0..=125 => f.push(bit | n as u8),
        n @ 126..=0xffff => {
            f.push(bit | 126);
            f.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            f.push(bit | 127);
            f.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    if masked {
        f.extend_from_slice(&mask);
        f.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    } else {
        f.extend_from_slice(payload);
    }
    f
}

/// A Close frame's payload.
fn close_payload(code: u16, reason: &[u8]) -> Vec<u8> {
    let mut p = code.to_be_bytes().to_vec();
    p.extend_from_slice(reason);
    p
}

/// Reads one server frame: its first byte and its payload; `None` at EOF
/// before a frame starts.
async fn read_frame<S: AsyncRead + Unpin>(s: &mut S) -> Option<(u8, Vec<u8>)> {
    let mut head = [0u8; 2];
    let wait = tokio::time::timeout(PATIENCE, s.read(&mut head[..1]))
        .await
        .expect("a frame or EOF from the server");
    if wait.expect("read a frame") == 0 {
        return None;
    }
    s.read_exact(&mut head[1..]).await.expect("a frame header");
    assert_eq!(head[1] & 0x80, 0, "a server frame is not masked");
    let len = match head[1] & 0x7f {
        126 => s.read_u16().await.unwrap() as usize,
        127 => s.read_u64().await.unwrap() as usize,
        n => n as usize,
    };
    let mut payload = vec![0; len];
    s.read_exact(&mut payload).await.expect("a frame's payload");
    Some((head[0], payload))
}

/// Reads until the server's Close (skipping other frames), then expects
/// the server to close the connection. Returns the Close's code.
async fn close_then_eof(s: &mut TcpStream, what: &str) -> u16 {
    let code = loop {
        match read_frame(s).await {
            Some((0x88, p)) => {
                assert!(p.len() >= 2, "{what}: a Close with a code, got {p:?}");
                break u16::from_be_bytes([p[0], p[1]]);
            }
            Some(_) => continue,
            None => panic!("{what}: the connection ended without a Close (the browser sees 1006)"),
        }
    };
    let mut rest = Vec::new();
    let eof = tokio::time::timeout(PATIENCE, s.read_to_end(&mut rest)).await;
    let eof = eof.unwrap_or_else(|_| panic!("{what}: the server did not close after its Close"));
    assert!(
        eof.is_ok() && rest.is_empty(),
        "{what}: EOF after the Close, got {eof:?} and {} bytes",
        rest.len()
    );
    code
}

#[tokio::test]
async fn a_client_close_is_answered_with_its_code_then_the_server_closes_tcp() {
    let srv = common::start(|_| {}).await;
    let t = token(&srv, "closer").await;
    for code in [1000u16, 1001, 3000, 4321] {
        let mut s = open(srv.web, &t).await;
        s.write_all(&frame(0x88, &close_payload(code, b"bye"), true))
            .await
            .unwrap();
        let got = close_then_eof(&mut s, &format!("Close {code}")).await;
        assert_eq!(got, code, "the server echoes the client's code");
    }
    srv.stop().await;
}

#[tokio::test]
async fn protocol_violations_get_1002_1007_or_1009_then_the_tcp_close() {
    let srv = common::start(|_| {}).await;
    let t = token(&srv, "breaker").await;
    let over = vec![b'x'; max_ws_message() + 1];
    let half = vec![b'x'; max_ws_message() / 2 + 1];
    let cases: Vec<(&str, Vec<u8>, u16)> = vec![
        ("an unmasked frame", frame(0x81, b"{}", false), 1002),
        (
            "invalid UTF-8 in a text frame",
            frame(0x81, b"\xff\xfe", true),
            1007,
        ),
        ("reserved data opcode 0x3", frame(0x83, b"{}", true), 1002),
        ("reserved control opcode 0xb", frame(0x8b, b"", true), 1002),
        (
            "RSV1 set without an extension",
            frame(0xc1, b"{}", true),
            1002,
        ),
        ("a ping of 126 bytes", frame(0x89, &[0; 126], true), 1002),
        ("a fragmented ping", frame(0x09, b"", true), 1002),
        (
            "a continuation with nothing to continue",
            frame(0x80, b"", true),
            1002,
        ),
        ("a close payload of 1 byte", frame(0x88, &[3], true), 1002),
        (
            "close code 1005",
            frame(0x88, &close_payload(1005, b""), true),
            1002,
        ),
        (
            "close code 999",
            frame(0x88, &close_payload(999, b""), true),
            1002,
        ),
        (
            "close code 5000",
            frame(0x88, &close_payload(5000, b""), true),
            1002,
        ),
        (
            "a close reason that is not UTF-8",
            frame(0x88, &close_payload(1000, b"\xc3\x28"), true),
            1007,
        ),
        (
            "a text frame of 20 481 bytes, one over the limit",
            frame(0x81, &over, true),
            1009,
        ),
        (
            "a message of 20 482 bytes in two fragments",
            {
                let mut f = frame(0x01, &half, true);
                f.extend(frame(0x80, &half, true));
                f
            },
            1009,
        ),
    ];
    for (what, bytes, want) in cases {
        let mut s = open(srv.web, &t).await;
        s.write_all(&bytes).await.unwrap();
        let got = close_then_eof(&mut s, what).await;
        assert_eq!(got, want, "{what}");
    }
    // The violations ended only their own sockets.
    let mut s = open(srv.web, &t).await;
    s.write_all(&frame(0x88, &close_payload(1000, b""), true))
        .await
        .unwrap();
    assert_eq!(close_then_eof(&mut s, "a clean close after").await, 1000);
    srv.stop().await;
}

/// Sends `request` on the socket and returns the first answer with an
/// `id`, or the first `error`.
async fn call(s: &mut TcpStream, request: &Value) -> Value {
    s.write_all(&frame(0x81, request.to_string().as_bytes(), true))
        .await
        .unwrap();
    loop {
        let (op, p) = read_frame(s).await.expect("an answer");
        if op != 0x81 {
            continue;
        }
        let v: Value = serde_json::from_slice(&p).unwrap();
        if v.get("id").is_some() || v["type"] == "error" {
            return v;
        }
    }
}

#[tokio::test]
async fn a_request_id_is_a_number_or_a_string_as_on_the_framed_port() {
    let srv = common::start(|_| {}).await;
    let t = token(&srv, "ider").await;
    let mut s = open(srv.web, &t).await;
    for id in [json!(7), json!("seven"), json!(7.5)] {
        let v = call(&mut s, &json!({"type": "who", "id": id})).await;
        assert_eq!(v["type"], "who", "{v}");
        assert_eq!(v["id"], id, "{v}");
    }
    for id in [json!({"a": 1}), json!([1]), json!(null), json!(true)] {
        let v = call(&mut s, &json!({"type": "who", "id": id})).await;
        assert_eq!(v["type"], "error", "id {id} is refused: {v}");
        assert_eq!(v["code"], "bad_request", "{v}");
        assert!(v.get("id").is_none(), "a refused id is not repeated: {v}");
    }
    // And the socket goes on.
    let v = call(&mut s, &json!({"type": "who", "id": 8})).await;
    assert_eq!(v["type"], "who", "{v}");
    srv.stop().await;
}

#[tokio::test]
async fn the_server_closes_with_1001_at_shutdown_and_waits_for_the_clients_close() {
    let srv = common::start(|_| {}).await;
    let t = token(&srv, "leaver").await;
    let mut s = open(srv.web, &t).await;
    let stop = tokio::spawn(srv.stop());
    let code = loop {
        match read_frame(&mut s).await {
            Some((0x88, p)) => break u16::from_be_bytes([p[0], p[1]]),
            Some(_) => continue,
            None => panic!("the connection ended without a Close"),
        }
    };
    assert_eq!(code, 1001);
    // The server waits for our Close, then closes the connection.
    s.write_all(&frame(0x88, &close_payload(1001, b""), true))
        .await
        .unwrap();
    let mut rest = Vec::new();
    tokio::time::timeout(PATIENCE, s.read_to_end(&mut rest))
        .await
        .expect("the server closes after the client's Close")
        .expect("a clean EOF, not a reset");
    assert!(rest.is_empty(), "nothing after the Close: {rest:?}");
    tokio::time::timeout(PATIENCE, stop)
        .await
        .expect("the server stops")
        .unwrap();
}

#[tokio::test]
async fn a_message_over_64_kib_goes_out_in_fragments_that_join_into_valid_json() {
    let srv = common::start(|_| {}).await;
    let t = token(&srv, "talker").await;
    let mut s = open(srv.web, &t).await;
    let v = call(&mut s, &json!({"type": "join", "id": 1, "room": "big"})).await;
    assert_eq!(v["type"], "joined", "{v}");
    // Two bytes a character: fragments of 64 KiB cut some in half.
    let text = "é".repeat(sockit::chat::Settings::default().max_message / 2);
    for id in 2..12 {
        let send = json!({"type": "send", "id": id, "room": "big", "text": text});
        let v = call(&mut s, &send).await;
        assert_eq!(v["type"], "sent", "{v}");
    }
    // The replay of those ten is one message of about 164 KiB.
    let tcp = TcpStream::connect(srv.web).await.unwrap();
    let mut r = upgrade(tcp, srv.web, &t, "/api/chat?since=0").await;
    let (mut frames, mut message) = (Vec::new(), Vec::new());
    loop {
        let (op, p) = read_frame(&mut r).await.expect("the subscribed message");
        frames.push((op, p.len()));
        message.extend(p);
        if op & 0x80 != 0 {
            break;
        }
    }
    let (first, rest) = frames.split_first().unwrap();
    assert!(
        first.0 == 0x01 && rest.iter().all(|f| f.0 & 0x0f == 0) && frames.len() >= 3,
        "a text frame then continuations: {frames:?}"
    );
    assert!(
        frames.iter().all(|f| f.1 <= 64 * 1024),
        "no frame over 64 KiB: {frames:?}"
    );
    let hello: Value = serde_json::from_slice(&message).expect("valid UTF-8 and JSON");
    assert_eq!(hello["type"], "subscribed");
    let replayed = hello["messages"].as_array().unwrap();
    assert_eq!(replayed.len(), 10);
    assert!(replayed.iter().all(|m| m["text"] == text.as_str()));
    srv.stop().await;
}

#[tokio::test]
async fn a_reader_that_stops_is_told_slow_consumer_then_closed_with_1008() {
    let srv = common::start(|c| {
        c.chat.queue_bytes = 64 * 1024;
        c.chat.slow_timeout = Duration::from_millis(500);
        c.chat.rate = 0.0;
    })
    .await;
    let slow_token = token(&srv, "slow").await;
    let fast_token = token(&srv, "fast").await;
    let sock = tokio::net::TcpSocket::new_v4().unwrap();
    sock.set_recv_buffer_size(64 * 1024).unwrap();
    let mut slow = open_on(sock.connect(srv.web).await.unwrap(), srv.web, &slow_token).await;
    let v = call(&mut slow, &json!({"type": "join", "id": 1, "room": "r"})).await;
    assert_eq!(v["type"], "joined", "{v}");
    let mut fast = open(srv.web, &fast_token).await;
    let v = call(&mut fast, &json!({"type": "join", "id": 1, "room": "r"})).await;
    assert_eq!(v["type"], "joined", "{v}");
    // `slow` reads nothing from now on; `fast` sends until the relay
    // drops `slow` and tells `fast` it went offline.
    let text = "x".repeat(16 * 1024);
    let mut id = 1;
    'flood: while id < 5000 {
        id += 1;
        let send = json!({"type": "send", "id": id, "room": "r", "text": text});
        fast.write_all(&frame(0x81, send.to_string().as_bytes(), true))
            .await
            .unwrap();
        loop {
            let (op, p) = read_frame(&mut fast).await.expect("fast's socket");
            if op != 0x81 {
                continue;
            }
            let v: Value = serde_json::from_slice(&p).unwrap();
            if v["type"] == "presence" && v["user"] == "slow" && v["online"] == false {
                break 'flood;
            }
            if v["id"] == id {
                assert_eq!(v["type"], "sent", "{v}");
                break;
            }
        }
    }
    assert!(id < 5000, "the relay never dropped the reader that stopped");
    // `slow` reads again: its messages, the error, then the Close, which
    // it answers; then the server closes the connection.
    let mut told = false;
    let code = loop {
        match read_frame(&mut slow).await {
            Some((0x81, p)) => {
                let v: Value = serde_json::from_slice(&p).unwrap();
                told |= v["type"] == "error" && v["code"] == "slow_consumer";
            }
            Some((0x88, p)) => break u16::from_be_bytes([p[0], p[1]]),
            Some(_) => {}
            None => panic!("the connection ended without a Close"),
        }
    };
    assert!(told, "slow_consumer before the Close");
    assert_eq!(code, 1008);
    slow.write_all(&frame(0x88, &close_payload(1008, b""), true))
        .await
        .unwrap();
    let mut rest = Vec::new();
    tokio::time::timeout(PATIENCE, slow.read_to_end(&mut rest))
        .await
        .expect("the server closes after the client's Close")
        .expect("a clean EOF, not a reset");
    srv.stop().await;
}

/// Pings sent by the flood test at most: 26 MB of frames.
const FLOOD_PINGS: usize = 200_000;
/// A write that makes no progress for this long means the server stopped
/// reading.
const STALL: Duration = Duration::from_secs(2);

/// A masked ping of 125 bytes (the most a control frame carries) whose
/// payload starts with its number.
fn ping(n: u64) -> Vec<u8> {
    let mut p = [0u8; 125];
    p[..8].copy_from_slice(&n.to_be_bytes());
    frame(0x89, &p, true)
}

#[tokio::test]
async fn a_ping_flood_that_reads_no_pong_is_back_pressured_not_buffered() {
    let srv = common::start(|_| {}).await;
    let flooder = token(&srv, "flooder").await;
    let other = token(&srv, "bystander").await;
    // Small client buffers, so what the kernel absorbs stays small beside
    // the flood.
    let sock = tokio::net::TcpSocket::new_v4().unwrap();
    sock.set_recv_buffer_size(64 * 1024).unwrap();
    sock.set_send_buffer_size(64 * 1024).unwrap();
    let s = open_on(sock.connect(srv.web).await.unwrap(), srv.web, &flooder).await;
    let (mut rd, mut wr) = s.into_split();

    let one = ping(0).len();
    let mut sent = 0usize; // bytes of pings written
    let mut next = 0u64; // pings built
    let mut out = Vec::new();
    let mut stalled = false;
    while sent < FLOOD_PINGS * one {
        if out.is_empty() {
            for _ in 0..256 {
                out.extend(ping(next));
                next += 1;
            }
        }
        match tokio::time::timeout(STALL, wr.write(&out)).await {
            Ok(Ok(n)) => {
                out.drain(..n);
                sent += n;
            }
            Ok(Err(e)) => panic!("the server dropped the flooding socket: {e}"),
            Err(_) => {
                stalled = true;
                break;
            }
        }
    }
    assert!(
        stalled,
        "the server read all {FLOOD_PINGS} pings ({sent} bytes) while the client read no pong: \
         its write side is unbounded (it should stop reading once {} bytes wait to be written)",
        sockit::chat::ws::MAX_WRITE_BUFFER
    );
    let pings = sent / one;
    eprintln!("the server stopped reading after {pings} pings ({sent} bytes)");
    assert!(
        pings < FLOOD_PINGS / 2,
        "stopped reading after {pings} pings"
    );

    // Another client is served meanwhile.
    let mut s2 = open(srv.web, &other).await;
    let v = call(&mut s2, &json!({"type": "who", "id": 1})).await;
    assert_eq!(v["type"], "who", "{v}");

    // The flooder reads again: every ping it sent is answered, in order, and
    // the socket goes on to a clean close.
    let whole = sent.div_ceil(one);
    let reader = tokio::spawn(async move {
        let mut pongs = 0u64;
        loop {
            match read_frame(&mut rd).await {
                Some((0x8a, p)) => {
                    assert_eq!(p[..8], pongs.to_be_bytes(), "pong {pongs} in order");
                    pongs += 1;
                }
                Some((0x88, p)) => return (pongs, u16::from_be_bytes([p[0], p[1]])),
                Some(_) => {}
                None => panic!("EOF after {pongs} pongs, before the Close"),
            }
        }
    });
    let rest = (whole * one).saturating_sub(sent);
    wr.write_all(&out[..rest]).await.unwrap();
    wr.write_all(&frame(0x88, &close_payload(1000, b""), true))
        .await
        .unwrap();
    let (pongs, code) = tokio::time::timeout(PATIENCE * 3, reader)
        .await
        .expect("the pongs, then the Close")
        .unwrap();
    assert_eq!(pongs as usize, whole, "one pong for each ping sent");
    assert_eq!(code, 1000);
    srv.stop().await;
}

/// The first `python3` that has the `websockets` module (a pyenv shim may
/// shadow Debian's `/usr/bin/python3`, which has `python3-websockets`).
fn python_with_websockets() -> Option<&'static str> {
    ["python3", "/usr/bin/python3"]
        .into_iter()
        .find(|p| common::runs(p, &["-c", "import websockets"]))
}

#[tokio::test]
async fn a_strict_client_closes_cleanly_and_gets_the_codes_of_its_faults() {
    let python = python_with_websockets();
    if common::missing(
        "python3 websockets",
        "apt-get install python3-websockets, or pip install websockets",
        || python.is_some(),
    ) {
        return;
    }
    let srv = common::start(|_| {}).await;
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/ws/close_handshake.py");
    let run = tokio::process::Command::new(python.unwrap_or("python3"))
        .arg(script)
        .arg(format!("http://{}", srv.web))
        .arg(max_ws_message().to_string())
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(60), run)
        .await
        .expect("the script finishes")
        .expect("run python3");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "tests/ws/close_handshake.py failed:\n{stdout}\n{stderr}"
    );
    eprint!("{stdout}");
    for code in [1000, 1001, 3000, 4321, 1007, 1009] {
        assert!(
            stdout.contains(&format!("ok {code}")),
            "case {code} ran:\n{stdout}"
        );
    }
    srv.stop().await;
}
