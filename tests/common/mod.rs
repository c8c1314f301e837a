//! Shared test helpers: start the real services in-process on port 0.
#![allow(dead_code)]

pub mod ca;
pub mod cli;
pub mod terminal;

use std::net::SocketAddr;

use sockit::config::Config;
use sockit::proto::{Connection, Frame, Limits};
use sockit::tls::Stream;
use tokio::net::TcpStream;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// A running `sockit serve` on loopback ports chosen by the kernel.
pub struct TestServer {
    pub echo: SocketAddr,
    pub framed: SocketAddr,
    pub web: SocketAddr,
    pub shutdown: CancellationToken,
    pub task: JoinHandle<()>,
    pub data: tempfile::TempDir,
}

/// Starts every service with `tweak` applied to a port-0 configuration.
pub async fn start(tweak: impl FnOnce(&mut Config)) -> TestServer {
    let data = tempfile::tempdir().expect("tempdir");
    let mut config = Config {
        data_dir: data.path().to_path_buf(),
        ..Config::default()
    };
    config.echo.bind = "127.0.0.1:0".into();
    config.framed.bind = "127.0.0.1:0".into();
    config.web.bind = "127.0.0.1:0".into();
    // Plain TCP, so tests can check the bytes on the wire; tests/tls.rs
    // covers the TLS port.
    config.framed.tls = false;
    tweak(&mut config);
    let bound = sockit::serve::bind(config).await.expect("bind");
    let echo = bound
        .echo_tcp_addr()
        .or(bound.echo_udp_addr())
        .unwrap_or(([0, 0, 0, 0], 0).into());
    let framed = bound.framed_addr().unwrap_or(([0, 0, 0, 0], 0).into());
    let web = bound.web_addr().unwrap_or(([0, 0, 0, 0], 0).into());
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(bound.run(shutdown.clone()));
    TestServer {
        echo,
        framed,
        web,
        shutdown,
        task,
        data,
    }
}

impl TestServer {
    /// Stops the server and waits until every service has returned.
    pub async fn stop(self) {
        self.shutdown.cancel();
        self.task.await.expect("server task");
    }
}

/// Connects to the framed port and completes the handshake.
pub async fn framed_client(addr: SocketAddr) -> Connection<Stream> {
    let stream = Stream::Plain(TcpStream::connect(addr).await.expect("connect"));
    let mut conn = Connection::new(stream, Limits::default());
    conn.write_frame(&Frame::new("hello").with("version", 1))
        .await
        .expect("hello");
    let reply = conn.read_frame().await.expect("read").expect("reply");
    assert_eq!(reply.kind(), "hello", "{reply:?}");
    conn
}

/// Sends `request` as raw bytes on a new plain TCP connection and returns,
/// as text, everything the server sends until it closes (within 10 s).
pub async fn raw(addr: SocketAddr, request: &[u8]) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = TcpStream::connect(addr).await.expect("connect");
    s.write_all(request).await.expect("send the request");
    let mut out = Vec::new();
    tokio::time::timeout(std::time::Duration::from_secs(10), s.read_to_end(&mut out))
        .await
        .expect("the server answers and closes")
        .expect("read the answer");
    String::from_utf8_lossy(&out).into_owned()
}

/// True when the tests run under CI (`CI` set to anything but empty or `false`).
pub fn under_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false")
}

/// For tests that drive a program we did not write (ncat, socat, Python's
/// `websockets`, litmus, ...): `Some(reason)` when `check` fails, after saying
/// so; under CI it panics instead, since `.ci/run` installs them all.
/// `what` names the program, `install` how to get it.
pub fn missing(what: &str, install: &str, check: impl FnOnce() -> bool) -> bool {
    if check() {
        return false;
    }
    assert!(
        !under_ci(),
        "{what} is missing ({install}); .ci/run installs it"
    );
    eprintln!("SKIPPED: {what} is missing ({install})");
    true
}

/// True when `program --version` (or `args`) runs and exits 0.
pub fn runs(program: &str, args: &[&str]) -> bool {
    std::process::Command::new(program)
        .args(args)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// `len` bytes of every value, in no simple pattern (xorshift from `seed`).
pub fn noise(len: usize, mut seed: u64) -> Vec<u8> {
    (0..len)
        .map(|_| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            (seed >> 24) as u8
        })
        .collect()
}
