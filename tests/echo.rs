//! The echo service over real sockets: concurrency, modes, half-close, UDP
//! limits, resets, limits and graceful shutdown.

mod common;

use std::time::Duration;

use sockit::echo::{Mode, MAX_DATAGRAM};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_clients_each_get_exactly_their_own_replies() {
    let srv = common::start(|_| {}).await;
    let mut tasks = tokio::task::JoinSet::new();
    for client in 0..200u32 {
        let addr = srv.echo;
        tasks.spawn(async move {
            let mut s = TcpStream::connect(addr).await.unwrap();
            let mut expected = Vec::new();
            for round in 0..20u32 {
                let msg = format!("client {client} round {round};");
                expected.extend_from_slice(msg.as_bytes());
                s.write_all(msg.as_bytes()).await.unwrap();
            }
            s.shutdown().await.unwrap();
            let mut got = Vec::new();
            s.read_to_end(&mut got).await.unwrap();
            assert_eq!(got, expected, "client {client}");
        });
    }
    while let Some(r) = tasks.join_next().await {
        r.unwrap();
    }
    srv.stop().await;
}

async fn converse(addr: std::net::SocketAddr, input: &[u8]) -> Vec<u8> {
    let mut s = TcpStream::connect(addr).await.unwrap();
    // Byte by byte, so multi-byte characters are split across reads.
    for b in input {
        s.write_all(std::slice::from_ref(b)).await.unwrap();
    }
    s.shutdown().await.unwrap();
    let mut got = Vec::new();
    s.read_to_end(&mut got).await.unwrap();
    got
}

#[tokio::test]
async fn upper_mode_over_tcp_keeps_split_characters_and_invalid_bytes() {
    let srv = common::start(|c| c.echo.mode = Mode::Upper).await;
    let got = converse(srv.echo, "straße 报告 é\u{ff}".as_bytes()).await;
    assert_eq!(got, "STRASSE 报告 É\u{178}".as_bytes());
    let got = converse(srv.echo, b"ok\xff\xfe!").await;
    assert_eq!(got, b"OK\xff\xfe!");
    srv.stop().await;
}

#[tokio::test]
async fn hello_mode_greets_each_line() {
    let srv = common::start(|c| c.echo.mode = Mode::Hello).await;
    assert_eq!(
        converse(srv.echo, b"ann\nbob\r\ncid").await,
        b"Hello, ann!\nHello, bob!\r\nHello, cid!"
    );
    srv.stop().await;
}

#[tokio::test]
async fn half_close_gets_the_whole_reply_before_close() {
    let srv = common::start(|_| {}).await;
    let mut s = TcpStream::connect(srv.echo).await.unwrap();
    let big: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
    // Write everything while the server replies; read it all back after EOF.
    let (mut rd, mut wr) = s.split();
    let write = async {
        wr.write_all(&big).await.unwrap();
        wr.shutdown().await.unwrap();
    };
    let read = async {
        let mut got = Vec::new();
        rd.read_to_end(&mut got).await.unwrap();
        got
    };
    let ((), got) = tokio::join!(write, read);
    assert_eq!(got.len(), big.len());
    assert!(got == big);
    srv.stop().await;
}

#[tokio::test]
async fn udp_empty_and_largest_datagrams_are_echoed() {
    let srv = common::start(|_| {}).await;
    let sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    sock.connect(srv.echo).await.unwrap();
    let mut buf = vec![0u8; 70_000];
    sock.send(b"").await.unwrap();
    let n = tokio::time::timeout(Duration::from_secs(5), sock.recv(&mut buf))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(n, 0);
    let big: Vec<u8> = (0..MAX_DATAGRAM).map(|i| (i % 256) as u8).collect();
    sock.send(&big).await.unwrap();
    let n = tokio::time::timeout(Duration::from_secs(5), sock.recv(&mut buf))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&buf[..n], &big[..]);
    srv.stop().await;
}

#[tokio::test]
async fn udp_upper_and_hello() {
    for (mode, input, want) in [
        (Mode::Upper, &b"abc\xffd"[..], &b"ABC\xffD"[..]),
        (Mode::Hello, b"dora\n", b"Hello, dora!\n"),
        (Mode::Hello, b"", b"Hello, !"),
    ] {
        let srv = common::start(|c| c.echo.mode = mode).await;
        let sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        sock.connect(srv.echo).await.unwrap();
        sock.send(input).await.unwrap();
        let mut buf = vec![0u8; 70_000];
        let n = tokio::time::timeout(Duration::from_secs(5), sock.recv(&mut buf))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(&buf[..n], want);
        srv.stop().await;
    }
}

#[tokio::test]
async fn a_client_reset_mid_write_disturbs_no_one_else() {
    let srv = common::start(|_| {}).await;
    let mut other = TcpStream::connect(srv.echo).await.unwrap();
    for _ in 0..20 {
        let s = TcpStream::connect(srv.echo).await.unwrap();
        // Send a lot without reading, then reset (RST via linger 0).
        let s = s.into_std().unwrap();
        let sock = socket2::Socket::from(s);
        sock.set_nonblocking(false).unwrap();
        let chunk = vec![7u8; 256 * 1024];
        sock.set_write_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        let _ = std::io::Write::write(&mut &sock, &chunk);
        sock.set_linger(Some(Duration::ZERO)).unwrap();
        drop(sock);
    }
    other.write_all(b"still here").await.unwrap();
    let mut buf = [0u8; 10];
    other.read_exact(&mut buf).await.unwrap();
    assert_eq!(&buf, b"still here");
    srv.stop().await;
}

#[tokio::test]
async fn over_the_limit_a_raw_client_is_closed() {
    let srv = common::start(|c| c.limits.max_connections = 2).await;
    let mut a = TcpStream::connect(srv.echo).await.unwrap();
    let mut b = TcpStream::connect(srv.echo).await.unwrap();
    // Make sure both are being served before the third arrives.
    for s in [&mut a, &mut b] {
        s.write_all(b"x").await.unwrap();
        let mut one = [0u8; 1];
        s.read_exact(&mut one).await.unwrap();
    }
    let mut c = TcpStream::connect(srv.echo).await.unwrap();
    let mut buf = Vec::new();
    let n = c.read_to_end(&mut buf).await.unwrap_or(0);
    assert_eq!(n, 0, "refused client gets no bytes, just a close");
    drop(a);
    drop(b);
    srv.stop().await;
}

#[tokio::test]
async fn idle_connections_are_closed() {
    let srv = common::start(|c| c.limits.idle_timeout = Duration::from_millis(200)).await;
    let mut s = TcpStream::connect(srv.echo).await.unwrap();
    let mut buf = Vec::new();
    // Awaits the server's close; the timeout only guards against a hang.
    let n = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut buf))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(n, 0);
    srv.stop().await;
}

#[tokio::test]
async fn graceful_shutdown_closes_a_connected_client_and_returns() {
    let srv = common::start(|_| {}).await;
    let mut s = TcpStream::connect(srv.echo).await.unwrap();
    s.write_all(b"ping").await.unwrap();
    let mut buf = [0u8; 4];
    s.read_exact(&mut buf).await.unwrap();
    srv.shutdown.cancel();
    // The server closes the idle connection and its run future returns.
    let mut rest = Vec::new();
    let n = s.read_to_end(&mut rest).await.unwrap();
    assert_eq!(n, 0);
    tokio::time::timeout(Duration::from_secs(10), srv.task)
        .await
        .unwrap()
        .unwrap();
    // And nothing listens any more.
    assert!(TcpStream::connect(srv.echo).await.is_err());
}
