//! The framed port over real sockets: handshake, ping, streamed bodies, and
//! every protocol error code as raw bytes on the wire.

mod common;

use std::time::Duration;

use serde_json::{json, Value};
use sockit::proto::{Connection, Frame, Limits};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Writes a raw length prefix and header bytes.
async fn send_raw(s: &mut TcpStream, header: &[u8]) {
    s.write_all(&(header.len() as u32).to_be_bytes())
        .await
        .unwrap();
    s.write_all(header).await.unwrap();
}

/// Reads one frame's header as JSON, straight off the socket.
async fn recv_raw(s: &mut TcpStream) -> Value {
    let mut len = [0u8; 4];
    s.read_exact(&mut len).await.unwrap();
    let mut buf = vec![0u8; u32::from_be_bytes(len) as usize];
    s.read_exact(&mut buf).await.unwrap();
    serde_json::from_slice(&buf).unwrap()
}

/// True once the server has closed the connection.
async fn closed(s: &mut TcpStream) -> bool {
    let mut rest = Vec::new();
    matches!(
        tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut rest)).await,
        Ok(Ok(0)) | Ok(Err(_))
    )
}

async fn hello(s: &mut TcpStream) {
    send_raw(s, br#"{"type":"hello","version":1}"#).await;
    assert_eq!(recv_raw(s).await["type"], "hello");
}

#[tokio::test]
async fn handshake_and_ping_with_id() {
    let srv = common::start(|_| {}).await;
    let mut s = TcpStream::connect(srv.framed).await.unwrap();
    send_raw(&mut s, br#"{"type":"hello","version":1,"id":"h"}"#).await;
    let reply = recv_raw(&mut s).await;
    assert_eq!(reply["type"], "hello");
    assert_eq!(reply["version"], 1);
    assert_eq!(reply["id"], "h");
    assert!(reply["server"].as_str().unwrap().starts_with("sockit/"));
    assert!(reply["services"]
        .as_array()
        .unwrap()
        .contains(&json!("ping")));
    send_raw(&mut s, br#"{"type":"ping","id":42}"#).await;
    assert_eq!(recv_raw(&mut s).await, json!({"type":"pong","id":42}));
    srv.stop().await;
}

#[tokio::test]
async fn sticky_packets_many_pings_in_one_write() {
    let srv = common::start(|_| {}).await;
    let mut s = TcpStream::connect(srv.framed).await.unwrap();
    let mut burst = Vec::new();
    for (i, header) in std::iter::once(r#"{"type":"hello","version":1}"#.to_string())
        .chain((0..100).map(|i| format!(r#"{{"type":"ping","id":{i}}}"#)))
        .enumerate()
    {
        let _ = i;
        burst.extend_from_slice(&(header.len() as u32).to_be_bytes());
        burst.extend_from_slice(header.as_bytes());
    }
    s.write_all(&burst).await.unwrap();
    assert_eq!(recv_raw(&mut s).await["type"], "hello");
    for i in 0..100 {
        assert_eq!(recv_raw(&mut s).await, json!({"type":"pong","id":i}));
    }
    srv.stop().await;
}

#[tokio::test]
async fn ping_body_larger_than_buffers_is_streamed_back() {
    let srv = common::start(|_| {}).await;
    let mut s = TcpStream::connect(srv.framed).await.unwrap();
    hello(&mut s).await;
    let body: Vec<u8> = (0..5_000_000u32).map(|i| (i * 7 % 256) as u8).collect();
    let (mut rd, mut wr) = s.into_split();
    let sent = body.clone();
    let writer = tokio::spawn(async move {
        let header = format!(r#"{{"type":"ping","id":5,"size":{}}}"#, sent.len());
        wr.write_all(&(header.len() as u32).to_be_bytes())
            .await
            .unwrap();
        wr.write_all(header.as_bytes()).await.unwrap();
        wr.write_all(&sent).await.unwrap();
        wr
    });
    let mut len = [0u8; 4];
    rd.read_exact(&mut len).await.unwrap();
    let mut header = vec![0u8; u32::from_be_bytes(len) as usize];
    rd.read_exact(&mut header).await.unwrap();
    let header: Value = serde_json::from_slice(&header).unwrap();
    assert_eq!(header, json!({"type":"pong","id":5,"size":5_000_000}));
    let mut got = vec![0u8; body.len()];
    rd.read_exact(&mut got).await.unwrap();
    assert!(got == body, "pong body differs");
    drop(writer.await.unwrap());
    srv.stop().await;
}

async fn expect_error(s: &mut TcpStream, code: &str) -> Value {
    let v = recv_raw(s).await;
    assert_eq!(v["type"], "error", "{v}");
    assert_eq!(v["code"], code, "{v}");
    assert!(v["message"].as_str().is_some_and(|m| !m.is_empty()), "{v}");
    v
}

#[tokio::test]
async fn header_too_large_closes() {
    let srv = common::start(|_| {}).await;
    let mut s = TcpStream::connect(srv.framed).await.unwrap();
    s.write_all(&(65_537u32).to_be_bytes()).await.unwrap();
    expect_error(&mut s, "header_too_large").await;
    assert!(closed(&mut s).await);
    // A length of 4 GiB is refused the same way, without allocating it.
    let mut s = TcpStream::connect(srv.framed).await.unwrap();
    s.write_all(&u32::MAX.to_be_bytes()).await.unwrap();
    expect_error(&mut s, "header_too_large").await;
    assert!(closed(&mut s).await);
    srv.stop().await;
}

#[tokio::test]
async fn bad_headers_close() {
    let srv = common::start(|_| {}).await;
    for bad in [
        &b"not json"[..],
        b"[1]",
        b"{\"no\":\"type\"}",
        b"{\"type\":7}",
        b"\xff\xfe\xfd",
        b"{\"type\":\"ping\",\"id\":{}}",
    ] {
        let mut s = TcpStream::connect(srv.framed).await.unwrap();
        hello(&mut s).await;
        send_raw(&mut s, bad).await;
        expect_error(&mut s, "bad_header").await;
        assert!(closed(&mut s).await, "{:?}", String::from_utf8_lossy(bad));
    }
    let mut s = TcpStream::connect(srv.framed).await.unwrap();
    s.write_all(&[0, 0, 0, 0]).await.unwrap();
    expect_error(&mut s, "bad_header").await;
    assert!(closed(&mut s).await);
    srv.stop().await;
}

#[tokio::test]
async fn bad_sizes_close() {
    let srv = common::start(|c| c.framed.max_body = 1000).await;
    for bad in [
        &br#"{"type":"ping","size":-1}"#[..],
        br#"{"type":"ping","size":2.5}"#,
        br#"{"type":"ping","size":"12"}"#,
        br#"{"type":"ping","size":1001}"#,
    ] {
        let mut s = TcpStream::connect(srv.framed).await.unwrap();
        hello(&mut s).await;
        send_raw(&mut s, bad).await;
        expect_error(&mut s, "bad_size").await;
        assert!(closed(&mut s).await);
    }
    srv.stop().await;
}

#[tokio::test]
async fn hello_required_then_hello_works() {
    let srv = common::start(|_| {}).await;
    let mut s = TcpStream::connect(srv.framed).await.unwrap();
    send_raw(&mut s, br#"{"type":"ping","id":1,"size":3}"#).await;
    s.write_all(b"abc").await.unwrap();
    let v = expect_error(&mut s, "hello_required").await;
    assert_eq!(v["id"], 1);
    hello(&mut s).await;
    send_raw(&mut s, br#"{"type":"ping"}"#).await;
    assert_eq!(recv_raw(&mut s).await["type"], "pong");
    srv.stop().await;
}

#[tokio::test]
async fn unsupported_version_leaves_the_connection_open() {
    let srv = common::start(|_| {}).await;
    let mut s = TcpStream::connect(srv.framed).await.unwrap();
    send_raw(&mut s, br#"{"type":"hello","version":2}"#).await;
    expect_error(&mut s, "unsupported_version").await;
    send_raw(&mut s, br#"{"type":"hello"}"#).await;
    expect_error(&mut s, "unsupported_version").await;
    hello(&mut s).await;
    srv.stop().await;
}

#[tokio::test]
async fn unknown_type_skips_its_body_and_stays_open() {
    let srv = common::start(|_| {}).await;
    let mut s = TcpStream::connect(srv.framed).await.unwrap();
    hello(&mut s).await;
    send_raw(&mut s, br#"{"type":"frobnicate","id":"x","size":100000}"#).await;
    s.write_all(&vec![b'{'; 100_000]).await.unwrap();
    let v = expect_error(&mut s, "unknown_type").await;
    assert_eq!(v["id"], "x");
    send_raw(&mut s, br#"{"type":"ping","id":2}"#).await;
    assert_eq!(recv_raw(&mut s).await, json!({"type":"pong","id":2}));
    srv.stop().await;
}

#[tokio::test]
async fn busy_when_at_the_connection_limit() {
    let srv = common::start(|c| c.limits.max_connections = 1).await;
    let _first = common::framed_client(srv.framed).await;
    let mut s = TcpStream::connect(srv.framed).await.unwrap();
    expect_error(&mut s, "busy").await;
    assert!(closed(&mut s).await);
    drop(_first);
    srv.stop().await;
}

#[tokio::test]
async fn timeout_when_no_hello_arrives() {
    let srv = common::start(|c| c.framed.handshake_timeout = Duration::from_millis(100)).await;
    let mut s = TcpStream::connect(srv.framed).await.unwrap();
    // Half a header, then silence.
    s.write_all(&[0, 0, 0, 30, b'{']).await.unwrap();
    expect_error(&mut s, "timeout").await;
    assert!(closed(&mut s).await);
    srv.stop().await;
}

#[tokio::test]
async fn shutting_down_is_said_to_connected_clients() {
    let srv = common::start(|_| {}).await;
    let mut s = TcpStream::connect(srv.framed).await.unwrap();
    hello(&mut s).await;
    srv.shutdown.cancel();
    expect_error(&mut s, "shutting_down").await;
    assert!(closed(&mut s).await);
    tokio::time::timeout(Duration::from_secs(10), srv.task)
        .await
        .unwrap()
        .unwrap();
}

#[tokio::test]
async fn a_truncated_message_ends_only_that_connection() {
    let srv = common::start(|_| {}).await;
    let mut other = common::framed_client(srv.framed).await;
    let mut s = TcpStream::connect(srv.framed).await.unwrap();
    hello(&mut s).await;
    send_raw(&mut s, br#"{"type":"ping","size":1000}"#).await;
    s.write_all(b"only part").await.unwrap();
    drop(s);
    other
        .write_frame(&Frame::new("ping").with("id", 9))
        .await
        .unwrap();
    let pong = other.read_frame().await.unwrap().unwrap();
    assert_eq!(pong.id(), Some(&json!(9)));
    srv.stop().await;
}

#[tokio::test]
async fn python_example_client_does_hello_and_ping() {
    let python = std::process::Command::new("python3")
        .arg("--version")
        .output();
    if python.is_err() {
        eprintln!("SKIPPED: python3 is not installed; the Python example client was not tested");
        return;
    }
    let srv = common::start(|_| {}).await;
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/python_client.py");
    let port = srv.framed.port().to_string();
    let out = tokio::process::Command::new("python3")
        .args([
            script, "--port", &port, "ping", "--count", "3", "--body", "héllo",
        ])
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("sockit/"), "{stdout}");
    assert_eq!(stdout.matches("pong id=").count(), 3, "{stdout}");
    srv.stop().await;
}

#[tokio::test]
async fn limits_are_configurable() {
    let srv = common::start(|c| c.framed.max_header = 64).await;
    let stream = TcpStream::connect(srv.framed).await.unwrap();
    let mut conn = Connection::new(stream, Limits::default());
    conn.write_frame(
        &Frame::new("hello")
            .with("version", 1)
            .with("pad", "x".repeat(100)),
    )
    .await
    .unwrap();
    let reply = conn.read_frame().await.unwrap().unwrap();
    assert_eq!(reply.as_error().unwrap().0, "header_too_large");
    srv.stop().await;
}

#[tokio::test]
async fn the_hello_deadline_counts_from_connecting_whatever_comes_first() {
    let limit = Duration::from_millis(1000);
    let srv = common::start(|c| c.framed.handshake_timeout = limit).await;
    let start = tokio::time::Instant::now();
    let mut s = TcpStream::connect(srv.framed).await.unwrap();
    tokio::time::sleep(limit * 6 / 10).await;
    // Answered, but it does not buy more time.
    send_raw(&mut s, br#"{"type":"ping","id":1}"#).await;
    expect_error(&mut s, "hello_required").await;
    let v = expect_error(&mut s, "timeout").await;
    assert!(v["message"].as_str().unwrap().contains("hello"), "{v}");
    let waited = start.elapsed();
    assert!(waited < limit * 13 / 10, "timed out after {waited:?}");
    assert!(closed(&mut s).await);
    srv.stop().await;
}

#[tokio::test]
async fn the_tls_handshake_counts_against_the_hello_deadline() {
    let limit = Duration::from_millis(1000);
    let srv = common::start(|c| {
        c.framed.tls = true;
        c.framed.handshake_timeout = limit;
    })
    .await;
    let trust = sockit::tls::Trust {
        verify: sockit::tls::Verify::Insecure,
        ..sockit::tls::Trust::default()
    };
    let addr = srv.framed.to_string();
    let config = sockit::tls::client::fresh_config(&addr, &trust).unwrap();
    let name = sockit::tls::client::server_name(&addr).unwrap();
    let start = tokio::time::Instant::now();
    let tcp = TcpStream::connect(srv.framed).await.unwrap();
    // A slow start of the handshake, then no hello.
    tokio::time::sleep(limit * 6 / 10).await;
    let tls = tokio_rustls::TlsConnector::from(config)
        .connect(name, tcp)
        .await
        .unwrap();
    let mut conn = Connection::new(tls, Limits::default());
    let goodbye = conn.read_frame().await.unwrap().expect("an error frame");
    assert_eq!(goodbye.as_error().unwrap().0, "timeout", "{goodbye:?}");
    let waited = start.elapsed();
    assert!(waited < limit * 13 / 10, "timed out after {waited:?}");
    srv.stop().await;
}
