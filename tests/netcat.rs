//! `sockit connect`, `sockit listen` and `sockit bench` as a user runs them:
//! the real binary against real servers on loopback.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream, UdpSocket};
use std::process::{Command, Stdio};

use sockit::echo::Mode;

fn sockit() -> Command {
    Command::new(env!("CARGO_BIN_EXE_sockit"))
}

/// Runs `sockit ARGS` with `input` on stdin; returns (success, stdout, stderr).
fn run(args: &[&str], input: &[u8]) -> (bool, String, String) {
    let mut child = sockit()
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Feed stdin from a thread: the child's output must be read meanwhile.
    let mut stdin = child.stdin.take().unwrap();
    let input = input.to_vec();
    let feeder = std::thread::spawn(move || {
        let _ = stdin.write_all(&input);
    });
    let out = child.wait_with_output().unwrap();
    feeder.join().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn piped_connect_against_upper_prints_the_reply_and_exits_0() {
    let srv = common::start(|c| c.echo.mode = Mode::Upper).await;
    let addr = srv.echo.to_string();
    let (ok, out, err) = tokio::task::spawn_blocking(move || run(&["connect", &addr], b"hi"))
        .await
        .unwrap();
    assert!(ok, "{err}");
    assert_eq!(out, "HI");
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn piped_connect_streams_a_large_input_both_ways() {
    let srv = common::start(|_| {}).await;
    let addr = srv.echo.to_string();
    let input: Vec<u8> = (0..4_000_000u32).map(|i| b'a' + (i % 26) as u8).collect();
    let expected = input.clone();
    let (ok, out, err) = tokio::task::spawn_blocking(move || run(&["connect", &addr], &input))
        .await
        .unwrap();
    assert!(ok, "{err}");
    assert!(
        out.as_bytes() == expected,
        "echoed {} of {} bytes",
        out.len(),
        expected.len()
    );
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn piped_udp_connect_gets_one_reply_per_datagram() {
    let srv = common::start(|c| c.echo.mode = Mode::Hello).await;
    let addr = srv.echo.to_string();
    let (ok, out, err) =
        tokio::task::spawn_blocking(move || run(&["connect", "--udp", &addr], b"eve"))
            .await
            .unwrap();
    assert!(ok, "{err}");
    assert_eq!(out, "Hello, eve!");
    srv.stop().await;
}

#[test]
fn refused_connection_is_one_line_and_nonzero() {
    // A port that was just free: bind, note, close.
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let (ok, out, err) = run(&["connect", &format!("127.0.0.1:{port}")], b"");
    assert!(!ok);
    assert!(out.is_empty());
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(err.contains("connection refused"), "{err}");
}

#[test]
fn unknown_host_and_bad_address_are_one_line_and_nonzero() {
    let (ok, _, err) = run(&["connect", "no-such-host.invalid:7"], b"");
    assert!(!ok);
    assert!(err.contains("unknown host"), "{err}");
    let (ok, _, err) = run(&["connect", "localhost"], b"");
    assert!(!ok);
    assert!(err.contains("expected HOST:PORT"), "{err}");
}

#[test]
fn connect_timeout_is_reported() {
    // A listener that never accepts, with its accept queue full: Linux then
    // drops further SYNs, so a new connection can only time out.
    let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    sock.bind(
        &"127.0.0.1:0"
            .parse::<std::net::SocketAddr>()
            .unwrap()
            .into(),
    )
    .unwrap();
    sock.listen(0).unwrap();
    let addr = sock.local_addr().unwrap().as_socket().unwrap();
    let _queued: Vec<_> = (0..4)
        .filter_map(|_| {
            let s =
                socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).ok()?;
            s.connect_timeout(&addr.into(), std::time::Duration::from_millis(200))
                .ok()?;
            Some(s)
        })
        .collect();
    let (ok, _, err) = run(&["connect", "--timeout", "0.3", &addr.to_string()], b"");
    assert!(!ok);
    assert!(err.contains("timed out connecting"), "{err}");
}

#[test]
fn udp_reply_timeout_is_reported() {
    let silent = UdpSocket::bind("127.0.0.1:0").unwrap();
    let addr = silent.local_addr().unwrap().to_string();
    let (ok, _, err) = run(&["connect", "--udp", "--timeout", "0.2", &addr], b"anyone?");
    assert!(
        ok,
        "piped UDP waits for replies, then reports what is missing: {err}"
    );
    assert!(err.contains("no reply within"), "{err}");
    let mut buf = [0u8; 16];
    let (n, _) = silent.recv_from(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"anyone?");
}

/// Starts `sockit listen` and returns the child and the port it bound.
fn start_listen(args: &[&str]) -> (std::process::Child, u16) {
    let mut child = sockit()
        .arg("listen")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let mut line = String::new();
    stderr.read_line(&mut line).unwrap();
    let port = line
        .trim()
        .rsplit_once(':')
        .and_then(|(_, p)| p.split_whitespace().next())
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no port in {line:?}"));
    std::thread::spawn(move || std::io::copy(&mut stderr, &mut std::io::sink()));
    (child, port)
}

#[test]
fn listen_relays_both_ways_and_exits_when_the_client_leaves() {
    let (mut child, port) = start_listen(&["127.0.0.1:0"]);
    let mut client = TcpStream::connect(("127.0.0.1", port)).unwrap();
    client.write_all(b"from client\n").unwrap();
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(b"from listener\n").unwrap();
    drop(stdin);
    let mut got = Vec::new();
    client.read_to_end(&mut got).unwrap(); // listener half-closes on stdin EOF
    assert_eq!(got, b"from listener\n");
    drop(client);
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    assert_eq!(out.stdout, b"from client\n");
}

#[test]
fn listen_udp_prints_datagrams() {
    let (mut child, port) = start_listen(&["--udp", "127.0.0.1:0"]);
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.send_to(b"datagram one\n", ("127.0.0.1", port))
        .unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    stdout.read_line(&mut line).unwrap();
    assert_eq!(line, "datagram one\n");
    child.kill().unwrap();
    child.wait().unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn bench_reports_round_trips_as_json() {
    let srv = common::start(|_| {}).await;
    let addr = srv.echo.to_string();
    for extra in [
        &[][..],
        &["--udp"][..],
        &["--mode", "bulk"][..],
        &["--mode", "connect", "--hold", "20"][..],
        &["--rate", "400"][..],
    ] {
        let mut args = vec!["bench", "echo", &addr, "-c", "4", "-d", "300ms", "--json"];
        args.extend_from_slice(extra);
        let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        let (ok, out, err) = tokio::task::spawn_blocking(move || {
            let a: Vec<&str> = args.iter().map(String::as_str).collect();
            run(&a, b"")
        })
        .await
        .unwrap();
        assert!(ok, "{extra:?}: {err}");
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert!(v["round_trips"].as_u64().unwrap() > 0, "{extra:?}: {v}");
        assert_eq!(v["errors"], 0, "{extra:?}: {v}");
        if extra.contains(&"--rate") {
            // 400/s for 0.3 s is about 120 round trips; flat out it would be
            // thousands. (No lower bound: a loaded machine may do fewer.)
            let n = v["round_trips"].as_u64().unwrap();
            assert!((1..=200).contains(&n), "paced run did {n} round trips");
            assert_eq!(v["rate"], 400.0);
        }
        if extra.contains(&"--hold") {
            assert_eq!(v["held"], 20);
        }
    }
    srv.stop().await;
}

#[test]
fn bench_against_nothing_fails_clearly() {
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let (ok, _, err) = run(
        &["bench", "echo", &format!("127.0.0.1:{port}"), "-d", "100ms"],
        b"",
    );
    assert!(!ok);
    assert!(err.contains("cannot connect"), "{err}");
}

/// Everything a server wrote to stderr so far.
type Log = std::sync::Arc<std::sync::Mutex<String>>;

/// Starts `sockit ARGS` as a server and returns it with the address its echo
/// service logs as bound (services start concurrently, so the log order of
/// their "listening" lines varies), and its log.
fn start_server(shell_prefix: &str, args: &str) -> (std::process::Child, String, Log) {
    let cmd = format!(
        "{shell_prefix} exec {} {args}",
        env!("CARGO_BIN_EXE_sockit")
    );
    let mut child = Command::new("bash")
        .args(["-c", &cmd])
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let mut addr = None;
    let mut line = String::new();
    while addr.is_none() {
        line.clear();
        assert!(
            stderr.read_line(&mut line).unwrap() > 0,
            "server exited before listening"
        );
        if line.contains("listening (tcp)") && line.contains("service=\"echo\"") {
            addr = line.split("addr=").nth(1).map(|a| a.trim().to_string());
        }
    }
    let log = Log::default();
    let sink = log.clone();
    std::thread::spawn(move || {
        let mut line = String::new();
        while stderr.read_line(&mut line).is_ok_and(|n| n > 0) {
            sink.lock().unwrap().push_str(&line);
            line.clear();
        }
    });
    (child, addr.unwrap(), log)
}

#[test]
fn accept_loop_survives_running_out_of_descriptors() {
    // 48 descriptors in all: the server runs out long before 100 clients.
    let (mut server, addr, log) = start_server(
        "ulimit -Sn 48 -Hn 48;",
        "echo --tcp-only --bind 127.0.0.1:0",
    );
    let mut hogs = Vec::new();
    for _ in 0..100 {
        if let Ok(s) = TcpStream::connect(&addr) {
            hogs.push(s);
        }
    }
    // Once the hogs leave, a new client is served: the accept loop is alive.
    drop(hogs);
    let mut served = false;
    for _ in 0..50 {
        let Ok(mut s) = TcpStream::connect(&addr) else {
            continue;
        };
        s.set_read_timeout(Some(std::time::Duration::from_secs(5)))
            .unwrap();
        let mut buf = [0u8; 5];
        if s.write_all(b"alive").is_ok() && s.read_exact(&mut buf).is_ok() {
            assert_eq!(&buf, b"alive");
            served = true;
            break;
        }
    }
    assert!(served, "no client was served after descriptor exhaustion");
    server.kill().unwrap();
    server.wait().unwrap();
    let log = log.lock().unwrap().clone();
    assert!(
        log.contains("Too many open files"),
        "descriptors never ran out:\n{log}"
    );
}

#[test]
fn sigterm_stops_serve_with_exit_0() {
    let dir = tempfile::tempdir().unwrap();
    let args = format!(
        "serve --data-dir {} --echo-bind 127.0.0.1:0 --framed-bind 127.0.0.1:0 --web-bind 127.0.0.1:0",
        dir.path().display()
    );
    let (server, addr, _log) = start_server("", &args);
    let mut client = TcpStream::connect(&addr).unwrap();
    // One round trip: the connection is being served, not just queued.
    client.write_all(b"x").unwrap();
    let mut one = [0u8; 1];
    client.read_exact(&mut one).unwrap();
    let status = Command::new("kill")
        .args(["-TERM", &server.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let mut rest = Vec::new();
    assert_eq!(
        client.read_to_end(&mut rest).unwrap(),
        0,
        "connection closed at shutdown"
    );
    let out = server.wait_with_output().unwrap();
    assert!(out.status.success(), "{:?}", out.status);
}

#[test]
fn bad_config_is_one_line_and_nonzero() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sockit.toml");
    std::fs::write(&path, "[echo]\nbnid = \"127.0.0.1:1\"\n").unwrap();
    let (ok, _, err) = run(&["serve", "--config", path.to_str().unwrap()], b"");
    assert!(!ok);
    assert!(err.contains("bnid") && err.contains("sockit.toml"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
}

#[test]
fn a_taken_port_is_a_clear_error() {
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let (ok, _, err) = run(&["echo", "--tcp-only", "--bind", &addr], b"");
    assert!(!ok);
    assert!(err.contains("cannot bind") && err.contains(&addr), "{err}");
}
