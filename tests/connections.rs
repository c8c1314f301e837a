//! One client cannot take every connection: a per-address cap on each
//! listener, a least rate for bodies, listeners' limits that fit the
//! open-files limit, and answers to clients that half-close after asking.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use sockit::files::client::Client;
use sockit::proto::{Frame, FrameCodec};
use sockit::tls::Transport;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

/// Safety net for events awaited below.
const PATIENCE: Duration = Duration::from_secs(10);

/// Connects to `to` from the loopback address `from` (all of 127/8 is
/// loopback, so each is another client to the server).
async fn connect_from(from: [u8; 4], to: SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind((from, 0).into()).unwrap();
    socket.connect(to).await.unwrap()
}

/// Everything the server sends until it closes, within [`PATIENCE`];
/// `None` if it keeps the connection open.
async fn until_closed(s: &mut TcpStream) -> Option<String> {
    let mut out = Vec::new();
    match tokio::time::timeout(PATIENCE, s.read_to_end(&mut out)).await {
        Ok(Ok(_)) => Some(String::from_utf8_lossy(&out).into_owned()),
        // A reset after the answer still ends the connection.
        Ok(Err(_)) => Some(String::from_utf8_lossy(&out).into_owned()),
        Err(_) => None,
    }
}

/// One round trip on an echo connection.
async fn echoes(s: &mut TcpStream) -> bool {
    if s.write_all(b"ping\n").await.is_err() {
        return false;
    }
    let mut back = [0u8; 5];
    matches!(
        tokio::time::timeout(PATIENCE, s.read_exact(&mut back)).await,
        Ok(Ok(_))
    ) && &back == b"ping\n"
}

#[tokio::test]
async fn the_21st_connection_from_one_address_is_refused_on_each_port_at_a_cap_of_20() {
    const CAP: usize = 20;
    let srv = common::start(|c| c.limits.max_connections_per_address = CAP).await;

    // Echo: the 21st is closed without a word.
    let mut held = Vec::new();
    for _ in 0..CAP {
        let mut c = connect_from([127, 0, 0, 1], srv.echo).await;
        assert!(echoes(&mut c).await, "one of the first {CAP} is served");
        held.push(c);
    }
    let mut over = connect_from([127, 0, 0, 1], srv.echo).await;
    assert_eq!(
        until_closed(&mut over).await.as_deref(),
        Some(""),
        "echo: connection {} from 127.0.0.1 is closed at once",
        CAP + 1
    );
    let mut other = connect_from([127, 0, 0, 2], srv.echo).await;
    assert!(echoes(&mut other).await, "127.0.0.2 is served meanwhile");

    // Framed: the 21st gets `too_many_connections`.
    for _ in 0..CAP {
        let s = connect_from([127, 0, 0, 1], srv.framed).await;
        held.push(s);
    }
    let mut over = connect_from([127, 0, 0, 1], srv.framed).await;
    let said = until_closed(&mut over).await;
    assert!(
        said.as_deref()
            .is_some_and(|s| s.contains("\"too_many_connections\"")),
        "framed: connection {} from 127.0.0.1 is told why and closed, got {said:?}",
        CAP + 1
    );
    let other = connect_from([127, 0, 0, 2], srv.framed).await;
    let mut conn = sockit::proto::Connection::new(
        sockit::tls::Stream::Plain(other),
        sockit::proto::Limits::default(),
    );
    conn.write_frame(&Frame::new("hello").with("version", 1))
        .await
        .unwrap();
    let reply = conn.read_frame().await.unwrap().unwrap();
    assert_eq!(reply.kind(), "hello", "127.0.0.2 is served meanwhile");

    // Web: the 21st gets a 503.
    for _ in 0..CAP {
        held.push(connect_from([127, 0, 0, 1], srv.web).await);
    }
    let mut over = connect_from([127, 0, 0, 1], srv.web).await;
    let said = until_closed(&mut over).await;
    assert!(
        said.as_deref()
            .is_some_and(|s| s.starts_with("HTTP/1.1 503 ") && s.contains("too many connections")),
        "web: connection {} from 127.0.0.1 gets a 503, got {said:?}",
        CAP + 1
    );
    let mut other = connect_from([127, 0, 0, 2], srv.web).await;
    other
        .write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let said = until_closed(&mut other).await.unwrap_or_default();
    assert!(
        said.starts_with("HTTP/1.1 200 "),
        "127.0.0.2 is served: {said}"
    );

    drop(held);
    srv.stop().await;
}

#[tokio::test]
async fn a_put_body_dripped_below_1024_bytes_per_1_s_is_cut_with_body_too_slow() {
    let srv = common::start(|c| {
        c.limits.body_progress_bytes = 1024;
        c.limits.body_progress_timeout = Duration::from_secs(1);
        // Far longer than the test: only the progress deadline can end it.
        c.limits.idle_timeout = Duration::from_secs(60);
    })
    .await;
    let mut client = Client::connect(&srv.framed.to_string(), &Transport::Plain)
        .await
        .unwrap();
    client.register("ann", "correct horse").await.unwrap();
    let (_, token, _) = client.login("ann", "correct horse").await.unwrap();
    let mut conn = common::framed_client(srv.framed).await;
    conn.write_frame(&Frame::new("auth").with("token", token))
        .await
        .unwrap();
    let authed = conn.read_frame().await.unwrap().unwrap();
    assert_eq!(authed.kind(), "authed", "{authed:?}");
    let (stream, _) = conn.into_parts();
    let sockit::tls::Stream::Plain(mut stream) = stream else {
        panic!("a plain connection");
    };

    let size = 1_000_000u64;
    let put = Frame::new("put")
        .with("path", "slow.bin")
        .with("length", size)
        .with_body_len(size);
    let mut head = bytes::BytesMut::new();
    tokio_util::codec::Encoder::encode(&mut FrameCodec::default(), &put, &mut head).unwrap();
    stream.write_all(&head).await.unwrap();
    let (mut rd, mut wr) = stream.into_split();
    // 1 byte every 200 ms: 5 bytes a second, each one "activity".
    let dripper = tokio::spawn(async move {
        let mut ticks = tokio::time::interval(Duration::from_millis(200));
        loop {
            ticks.tick().await;
            if wr.write_all(b"x").await.is_err() {
                return;
            }
        }
    });
    let started = tokio::time::Instant::now();
    let mut said = Vec::new();
    let ended = tokio::time::timeout(PATIENCE, rd.read_to_end(&mut said)).await;
    dripper.abort();
    let said = String::from_utf8_lossy(&said);
    assert!(
        ended.is_ok(),
        "a body at 5 bytes/s is still open after {PATIENCE:?}, with a least progress of 1024 bytes per 1 s"
    );
    assert!(said.contains("\"body_too_slow\""), "told why: {said:?}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "cut near the 1 s deadline"
    );
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_http_upload_dripped_below_1024_bytes_per_1_s_is_answered_and_cut() {
    let srv = common::start(|c| {
        c.limits.body_progress_bytes = 1024;
        c.limits.body_progress_timeout = Duration::from_secs(1);
        c.limits.idle_timeout = Duration::from_secs(60);
    })
    .await;
    let mut client = Client::connect(&srv.framed.to_string(), &Transport::Plain)
        .await
        .unwrap();
    client.register("ann", "correct horse").await.unwrap();
    let (_, token, _) = client.login("ann", "correct horse").await.unwrap();
    let stream = TcpStream::connect(srv.web).await.unwrap();
    let (mut rd, mut wr) = stream.into_split();
    wr.write_all(
        format!(
            "PUT /api/files/slow.bin HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\nContent-Length: 1000000\r\n\r\n"
        )
        .as_bytes(),
    )
    .await
    .unwrap();
    // 1 byte every 200 ms: 5 bytes a second.
    let dripper = tokio::spawn(async move {
        let mut ticks = tokio::time::interval(Duration::from_millis(200));
        loop {
            ticks.tick().await;
            if wr.write_all(b"x").await.is_err() {
                return;
            }
        }
    });
    let mut head = [0u8; 512];
    let answered = tokio::time::timeout(PATIENCE, rd.read(&mut head)).await;
    dripper.abort();
    let n = answered
        .expect("an HTTP body at 5 bytes/s is still being read, with a least progress of 1024 bytes per 1 s")
        .unwrap();
    let head = String::from_utf8_lossy(&head[..n]);
    assert!(head.starts_with("HTTP/1.1 4"), "{head}");
    srv.stop().await;
}

/// Sends `request`, shuts down the writing side, and returns what comes
/// back until the server closes.
async fn ask_then_half_close(addr: SocketAddr, request: &[u8]) -> Option<String> {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(request).await.unwrap();
    s.shutdown().await.unwrap();
    until_closed(&mut s).await
}

/// 20 requests of each HTTP version, each followed by a half-close, each
/// answered in full.
async fn half_closed_requests_are_answered(addr: SocketAddr, path: &str, body: &str) {
    for version in ["1.0", "1.1"] {
        let request = format!("GET {path} HTTP/{version}\r\nHost: localhost\r\n\r\n");
        let mut answered = 0;
        for _ in 0..20 {
            let said = ask_then_half_close(addr, request.as_bytes()).await;
            if said.as_deref().is_some_and(|s| {
                s.starts_with("HTTP/1.") && s.contains(" 200 ") && s.ends_with(body)
            }) {
                answered += 1;
            }
        }
        assert_eq!(
            answered, 20,
            "HTTP/{version} requests followed by shutdown(SHUT_WR) answered in full, of 20"
        );
    }
}

#[tokio::test]
async fn requests_followed_by_a_half_close_are_answered_by_the_app_server() {
    let srv = common::start(|_| {}).await;
    std::fs::write(srv.data.path().join("public/hello.txt"), "hello, world\n").unwrap();
    half_closed_requests_are_answered(srv.web, "/hello.txt", "hello, world\n").await;
    srv.stop().await;
}

#[tokio::test]
async fn requests_followed_by_a_half_close_are_answered_by_sockit_web() {
    use sockit::web::site::{Site, SiteOptions};
    use sockit::web::{HttpHandler, Settings, Web};
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("hello.txt"), "hello, world\n").unwrap();
    let site = Site::open(SiteOptions::new(dir.path())).unwrap();
    let listener = sockit::server::bind_tcp("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let shutdown = tokio_util::sync::CancellationToken::new();
    let run = tokio::spawn(sockit::server::serve(
        "web",
        listener,
        HttpHandler {
            web: Web::new(Settings::default(), Some(site), None),
            tls: None,
        },
        sockit::server::Limits::default(),
        shutdown.clone(),
    ));
    half_closed_requests_are_answered(addr, "/hello.txt", "hello, world\n").await;
    shutdown.cancel();
    run.await.unwrap();
}

#[test]
fn under_1000_open_files_each_of_3_listeners_holds_248_connections() {
    use std::io::BufRead;
    use std::os::unix::process::CommandExt;
    let data = tempfile::tempdir().unwrap();
    let mut cmd = std::process::Command::new(common::cli::BIN);
    cmd.args([
        "serve",
        "--echo-bind",
        "127.0.0.1:0",
        "--framed-bind",
        "127.0.0.1:0",
        "--web-bind",
        "127.0.0.1:0",
        "--data-dir",
    ])
    .arg(data.path())
    .env("RUST_LOG", "sockit=info")
    .env("NO_COLOR", "1")
    .stdin(std::process::Stdio::null())
    .stdout(std::process::Stdio::null())
    .stderr(std::process::Stdio::piped());
    // SAFETY: setrlimit is async-signal-safe; nothing else runs between
    // fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            let limit = libc::rlimit {
                rlim_cur: 1000,
                rlim_max: 1000,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = cmd.spawn().unwrap();
    let stderr = std::io::BufReader::new(child.stderr.take().unwrap());
    let mut lowered = None;
    let mut echo = None;
    for line in stderr.lines() {
        let line = line.unwrap();
        if line.contains("connection limit lowered") {
            lowered = Some(line.clone());
        }
        if line.contains("service=\"echo\"") && line.contains("listening (tcp)") {
            echo = line.split("addr=").nth(1).map(|a| a.trim().to_string());
        }
        if lowered.is_some() && echo.is_some() {
            break;
        }
        if line.contains("listening") && line.contains("service=\"web\"") && lowered.is_none() {
            break;
        }
    }
    let lowered = lowered.unwrap_or_default();
    // 1000 open files, 256 kept, 744 for three listeners.
    for want in [
        "max_connections=248",
        "configured=10000",
        "open_files=1000",
        "reserved=256",
        "listeners=3",
    ] {
        assert!(
            lowered.contains(want),
            "start-up warning names {want}: {lowered:?}"
        );
    }
    let echo: SocketAddr = echo.expect("echo address").parse().unwrap();
    let served = std::thread::spawn(move || {
        use std::io::{Read, Write};
        let mut open = Vec::new();
        for _ in 0..248 {
            let mut c = std::net::TcpStream::connect(echo).unwrap();
            c.set_read_timeout(Some(PATIENCE)).unwrap();
            c.write_all(b"x").unwrap();
            let mut b = [0u8; 1];
            c.read_exact(&mut b).unwrap();
            open.push(c);
        }
        let mut over = std::net::TcpStream::connect(echo).unwrap();
        over.set_read_timeout(Some(PATIENCE)).unwrap();
        // Served, it would echo; refused, it is closed (or reset, as the
        // byte reaches a closed socket).
        let _ = over.write_all(b"x");
        let mut b = [0u8; 1];
        match over.read(&mut b) {
            Ok(0) => true,
            Err(e) => matches!(
                e.kind(),
                std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::BrokenPipe
            ),
            Ok(_) => false,
        }
    })
    .join();
    let _ = child.kill();
    let _ = child.wait();
    assert!(
        served.unwrap(),
        "the 249th echo connection is refused, under 1000 open files"
    );
}
