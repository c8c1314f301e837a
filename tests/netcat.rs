//! `sockit connect`, `sockit listen` and `sockit bench` as a user runs them:
//! the real binary against real servers on loopback.

mod common;

use common::ca::Ca;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream, UdpSocket};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use sockit::echo::Mode;

fn sockit() -> Command {
    Command::new(env!("CARGO_BIN_EXE_sockit"))
}

/// Runs `sockit ARGS` with `input` on stdin; returns (success, stdout, stderr).
fn run(args: &[&str], input: &[u8]) -> (bool, String, String) {
    let (ok, out, err) = run_bytes(sockit(), args, input);
    (ok, String::from_utf8_lossy(&out).into_owned(), err)
}

/// Runs `sockit ARGS` with `config` as its configuration directory (where
/// `connect --tls` pins servers).
fn run_in(config: &Path, args: &[&str], input: &[u8]) -> (bool, Vec<u8>, String) {
    let mut cmd = sockit();
    cmd.env("SOCKIT_CONFIG_DIR", config);
    run_bytes(cmd, args, input)
}

fn run_bytes(mut cmd: Command, args: &[&str], input: &[u8]) -> (bool, Vec<u8>, String) {
    let mut child = cmd
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
        out.stdout,
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
        // Every round trip's latency is in the percentiles.
        let (p50, p99, max) = (
            v["p50_us"].as_u64(),
            v["p99_us"].as_u64(),
            v["max_us"].as_u64(),
        );
        assert!(
            matches!((p50, p99, max), (Some(a), Some(b), Some(c)) if 1 <= a && a <= b && b <= c),
            "{extra:?}: {v}"
        );
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
    // The words `connect` uses, not the system's "(os error 111)".
    assert!(
        err.contains(&format!("connection refused by 127.0.0.1:{port}"))
            && !err.contains("os error"),
        "{err}"
    );
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
    let log = Log::default();
    while addr.is_none() {
        line.clear();
        assert!(
            stderr.read_line(&mut line).unwrap() > 0,
            "server exited before listening"
        );
        log.lock().unwrap().push_str(&line);
        if line.contains("listening (tcp)") && line.contains("service=\"echo\"") {
            addr = line.split("addr=").nth(1).map(|a| a.trim().to_string());
        }
    }
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

/// Confined to one core, the server runs every connection on one thread
/// (the current-thread runtime): it still serves many clients at once, each
/// its own replies, over TCP and UDP, and stops gracefully on SIGTERM.
#[test]
fn echo_confined_to_one_core_serves_many_clients_on_one_thread() {
    let (server, addr, log) = start_server(
        "taskset -cp 0 $$ >/dev/null; unset TOKIO_WORKER_THREADS; export RUST_LOG=info,sockit::server=debug;",
        "echo --mode upper --bind 127.0.0.1:0",
    );
    let started = log.lock().unwrap().clone();
    assert!(
        started.contains("cores=1 flavor=CurrentThread"),
        "not the current-thread runtime:\n{started}"
    );
    let mut clients: Vec<TcpStream> = (0..100)
        .map(|_| {
            let s = TcpStream::connect(&addr).unwrap();
            s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            s
        })
        .collect();
    for round in 0..3 {
        // Every client sends before any reads: all are in flight at once.
        for (i, s) in clients.iter_mut().enumerate() {
            s.write_all(format!("client {i} round {round};").as_bytes())
                .unwrap();
        }
        for (i, s) in clients.iter_mut().enumerate() {
            let want = format!("CLIENT {i} ROUND {round};");
            let mut got = vec![0u8; want.len()];
            s.read_exact(&mut got).unwrap();
            assert_eq!(String::from_utf8_lossy(&got), want);
        }
    }
    let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
    udp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    udp.send_to(b"datagram", &addr).unwrap();
    let mut buf = [0u8; 64];
    let n = udp.recv(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"DATAGRAM");

    let status = Command::new("kill")
        .args(["-TERM", &server.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    for s in &mut clients {
        let mut rest = Vec::new();
        assert_eq!(s.read_to_end(&mut rest).unwrap(), 0, "closed at shutdown");
    }
    let out = server.wait_with_output().unwrap();
    assert!(out.status.success(), "{:?}", out.status);
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

// `--tls`, as `ncat --ssl`.

/// How long a test waits for a line or bytes it expects.
const EXPECT_WITHIN: Duration = Duration::from_secs(60);

/// A running `sockit listen --tls`: its port, the fingerprint it printed,
/// and its later stderr lines and stdout bytes as they come.
struct TlsListener {
    child: Child,
    addr: String,
    fingerprint: String,
    lines: mpsc::Receiver<String>,
    stdout: mpsc::Receiver<Vec<u8>>,
    /// Stdout received so far.
    out: Vec<u8>,
    /// Its configuration directory, where its certificate is kept.
    _config: tempfile::TempDir,
}

impl TlsListener {
    /// `sockit listen --tls ARGS 127.0.0.1:0`.
    fn start(args: &[&str]) -> TlsListener {
        let config = tempfile::tempdir().unwrap();
        let mut child = sockit()
            .env("SOCKIT_CONFIG_DIR", config.path())
            .args(["listen", "--tls"])
            .args(args)
            .arg("127.0.0.1:0")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut stderr = BufReader::new(child.stderr.take().unwrap());
        // Its address, then its fingerprint (the first start also logs
        // that it made the certificate).
        let (mut addr, mut fingerprint) = (None, None);
        while fingerprint.is_none() {
            let mut line = String::new();
            assert!(
                stderr.read_line(&mut line).unwrap() > 0,
                "listen ended: {addr:?}"
            );
            if let Some(a) = line.strip_prefix("sockit: listening on ") {
                addr = a.strip_suffix(" (tcp)\n").map(String::from);
            }
            if let Some(fp) = line.strip_prefix("sockit: listening with TLS, certificate ") {
                fingerprint = Some(fp.trim().to_string());
            }
        }
        let (addr, fingerprint) = (addr.expect("address line"), fingerprint.unwrap_or_default());
        let (line_tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in stderr.lines().map_while(Result::ok) {
                let _ = line_tx.send(line);
            }
        });
        let mut out = child.stdout.take().unwrap();
        let (out_tx, stdout) = mpsc::channel();
        std::thread::spawn(move || {
            let mut buf = vec![0u8; 64 * 1024];
            while let Ok(n) = out.read(&mut buf) {
                if n == 0 || out_tx.send(buf[..n].to_vec()).is_err() {
                    break;
                }
            }
        });
        TlsListener {
            child,
            addr,
            fingerprint,
            lines,
            stdout,
            out: Vec::new(),
            _config: config,
        }
    }

    /// Feeds `input` to its stdin from a thread, then closes it.
    fn feed(&mut self, input: Vec<u8>) {
        let mut stdin = self.child.stdin.take().unwrap();
        std::thread::spawn(move || {
            let _ = stdin.write_all(&input);
        });
    }

    /// Waits for a stderr line containing `needle`.
    fn expect_line(&self, needle: &str) -> String {
        loop {
            match self.lines.recv_timeout(EXPECT_WITHIN) {
                Ok(line) if line.contains(needle) => return line,
                Ok(_) => {}
                Err(e) => panic!("no line with {needle:?} from the listener: {e}"),
            }
        }
    }

    /// Waits until its stdout so far ends with `tail`.
    fn expect_stdout(&mut self, tail: &[u8]) {
        while !self.out.ends_with(tail) {
            match self.stdout.recv_timeout(EXPECT_WITHIN) {
                Ok(chunk) => self.out.extend_from_slice(&chunk),
                Err(e) => panic!(
                    "stdout {:?} never ended with {:?}: {e}",
                    String::from_utf8_lossy(&self.out),
                    String::from_utf8_lossy(tail)
                ),
            }
        }
    }

    /// Waits for it to exit; returns whether it succeeded and all its stdout.
    fn finish(mut self) -> (bool, Vec<u8>) {
        while let Ok(chunk) = self.stdout.recv_timeout(EXPECT_WITHIN) {
            self.out.extend_from_slice(&chunk);
        }
        let status = self.child.wait().unwrap();
        (status.success(), std::mem::take(&mut self.out))
    }
}

impl Drop for TlsListener {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn known_servers(config: &Path) -> String {
    std::fs::read_to_string(config.join("known_servers")).unwrap_or_default()
}

#[test]
fn tls_listen_and_connect_move_megabytes_both_ways_byte_exact() {
    let config = tempfile::tempdir().unwrap();
    let mut listener = TlsListener::start(&[]);
    let to_client = common::noise(3_000_000, 1);
    let to_listener = common::noise(2_000_000, 2);
    listener.feed(to_client.clone());
    let (ok, out, err) = run_in(
        config.path(),
        &["connect", "--tls", "--accept-new", &listener.addr],
        &to_listener,
    );
    assert!(ok, "{err}");
    assert!(
        out == to_client,
        "got {} of {} bytes",
        out.len(),
        to_client.len()
    );
    assert!(
        err.contains("trusting") && err.contains(&listener.fingerprint),
        "{err}"
    );
    assert!(known_servers(config.path())
        .contains(&format!("{} {}", listener.addr, listener.fingerprint)));
    listener.expect_line("connection from");
    let (ok, got) = listener.finish();
    assert!(ok, "the listener ends cleanly once both sides said goodbye");
    assert!(
        got == to_listener,
        "got {} of {} bytes",
        got.len(),
        to_listener.len()
    );
}

#[test]
fn tls_connect_refuses_an_unknown_server_without_accept_new_then_pins_it() {
    let config = tempfile::tempdir().unwrap();
    let mut listener = TlsListener::start(&["-k"]);
    let (ok, out, err) = run_in(
        config.path(),
        &["connect", "--tls", &listener.addr],
        b"too early\n",
    );
    assert!(!ok);
    assert!(out.is_empty());
    assert!(
        err.contains(&format!("{} is not a known server", listener.addr))
            && err.contains(&listener.fingerprint)
            && err.contains("--accept-new"),
        "{err}"
    );
    assert_eq!(known_servers(config.path()), "");
    // The listener says so in a line, and -k goes on.
    let line = listener.expect_line("TLS handshake with");
    assert!(line.contains("failed"), "{line}");
    let (ok, _, err) = run_in(
        config.path(),
        &["connect", "--tls", "--accept-new", &listener.addr],
        b"one\n",
    );
    assert!(ok, "{err}");
    listener.expect_stdout(b"one\n");
    // Pinned now: no --accept-new needed.
    let (ok, _, err) = run_in(
        config.path(),
        &["connect", "--tls", &listener.addr],
        b"two\n",
    );
    assert!(ok, "{err}");
    assert!(!err.contains("trusting"), "{err}");
    listener.expect_stdout(b"two\n");
    assert_eq!(listener.out, b"one\ntwo\n", "nothing of the refused client");
}

#[test]
fn tls_insecure_connects_without_pinning_and_warns() {
    let config = tempfile::tempdir().unwrap();
    let mut listener = TlsListener::start(&[]);
    listener.feed(b"from listener\n".to_vec());
    let (ok, out, err) = run_in(
        config.path(),
        &["connect", "--tls", "--insecure", &listener.addr],
        b"from client\n",
    );
    assert!(ok, "{err}");
    assert_eq!(out, b"from listener\n");
    assert!(err.contains("warning: --insecure"), "{err}");
    assert!(!config.path().join("known_servers").exists());
    let (ok, got) = listener.finish();
    assert!(ok);
    assert_eq!(got, b"from client\n");
}

#[tokio::test(flavor = "multi_thread")]
async fn tls_connect_to_a_plain_server_fails_clearly() {
    let config = tempfile::tempdir().unwrap();
    let home = config.path().to_path_buf();
    // A plain listener with nothing to say: it half-closes at once.
    let (mut plain, port) = start_listen(&["127.0.0.1:0"]);
    drop(plain.stdin.take());
    let addr = format!("127.0.0.1:{port}");
    let (ok, out, err) = run_in(&home, &["connect", "--tls", "--accept-new", &addr], b"");
    assert!(!ok);
    assert!(out.is_empty());
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(
        err.contains(&addr) && err.contains("is it listening with --tls?"),
        "{err}"
    );
    plain.wait().unwrap();
    // An echo server sends the client's own greeting back.
    let srv = common::start(|_| {}).await;
    let addr = srv.echo.to_string();
    let (ok, _, err) = tokio::task::spawn_blocking(move || {
        run_in(&home, &["connect", "--tls", "--accept-new", &addr], b"")
    })
    .await
    .unwrap();
    assert!(!ok);
    assert!(err.contains("as an echo server does"), "{err}");
    srv.stop().await;
}

#[test]
fn plain_connect_to_a_tls_listener_gets_no_bytes_and_the_listener_waits_for_tls() {
    let config = tempfile::tempdir().unwrap();
    let mut listener = TlsListener::start(&[]);
    listener.feed(b"for TLS clients only\n".to_vec());
    let (_, out, _) = run(&["connect", &listener.addr], b"hello\n");
    assert_eq!(out, "", "no TLS record or alert is taken for data");
    let line = listener.expect_line("TLS handshake with");
    assert!(line.contains("does not speak TLS"), "{line}");
    // Without -k the listener still waits for its one (TLS) client.
    let (ok, out, err) = run_in(
        config.path(),
        &["connect", "--tls", "--accept-new", &listener.addr],
        b"",
    );
    assert!(ok, "{err}");
    assert_eq!(out, b"for TLS clients only\n");
    let (ok, got) = listener.finish();
    assert!(ok);
    assert_eq!(got, b"", "the plain client's bytes were not printed");
}

#[test]
fn tls_listen_with_cert_and_key_is_verified_with_its_ca_and_a_wrong_ca_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let config = tempfile::tempdir().unwrap();
    let ca = Ca::new(dir.path(), "good");
    Ca::new(dir.path(), "other");
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    let der = ca.issue(&["127.0.0.1", "localhost"], &cert, &key);
    let (good, other) = (dir.path().join("good.pem"), dir.path().join("other.pem"));
    let (cert, key, good, other) = (
        cert.to_str().unwrap(),
        key.to_str().unwrap(),
        good.to_str().unwrap(),
        other.to_str().unwrap(),
    );
    let mut listener = TlsListener::start(&["-k", "--cert", cert, "--key", key]);
    assert_eq!(listener.fingerprint, sockit::tls::fingerprint(&der));

    let (ok, out, err) = run_in(
        config.path(),
        &["connect", "--tls", "--ca", other, &listener.addr],
        b"refused\n",
    );
    assert!(!ok);
    assert!(out.is_empty());
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(err.contains("not trusted"), "{err}");
    listener.expect_line("TLS handshake with");

    let (ok, _, err) = run_in(
        config.path(),
        &["connect", "--tls", "--ca", good, &listener.addr],
        b"by address\n",
    );
    assert!(ok, "{err}");
    listener.expect_stdout(b"by address\n");
    let by_name = listener.addr.replace("127.0.0.1", "localhost");
    let (ok, _, err) = run_in(
        config.path(),
        &["connect", "--tls", "--ca", good, &by_name],
        b"by name\n",
    );
    assert!(ok, "{err}");
    listener.expect_stdout(b"by name\n");
    assert_eq!(listener.out, b"by address\nby name\n");
    assert!(
        !config.path().join("known_servers").exists(),
        "--ca pins nothing"
    );
}

#[test]
fn tls_listen_with_a_missing_certificate_is_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.pem");
    let missing = missing.to_str().unwrap();
    let (ok, _, err) = run(
        &["listen", "--tls", "--cert", missing, "--key", missing, "0"],
        b"",
    );
    assert!(!ok);
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(err.contains("missing.pem"), "{err}");
}

#[test]
fn tls_keep_open_sends_stdin_to_every_client() {
    let config = tempfile::tempdir().unwrap();
    let mut listener = TlsListener::start(&["-k"]);
    std::fs::write(
        config.path().join("known_servers"),
        format!("{} {}\n", listener.addr, listener.fingerprint),
    )
    .unwrap();
    let clients: Vec<Child> = (0..2)
        .map(|_| {
            sockit()
                .args(["connect", "--tls", &listener.addr])
                .env("SOCKIT_CONFIG_DIR", config.path())
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    listener.expect_line("connection from");
    listener.expect_line("connection from");
    listener.feed(b"to all\n".to_vec());
    for mut client in clients {
        let mut line = String::new();
        BufReader::new(client.stdout.as_mut().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert_eq!(line, "to all\n");
        // Its stdin's end: close_notify, and the listener says goodbye too.
        drop(client.stdin.take());
        let out = client.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    listener.expect_line("disconnected");
    listener.expect_line("disconnected");
}

#[test]
fn tls_errors_before_any_handshake_are_one_line() {
    let config = tempfile::tempdir().unwrap();
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let addr = format!("127.0.0.1:{port}");
    let (ok, _, err) = run_in(config.path(), &["connect", "--tls", &addr], b"");
    assert!(!ok);
    assert_eq!(err.trim(), format!("sockit: connection refused by {addr}"));
    for args in [
        &["connect", "--udp", "--tls", "127.0.0.1:7"][..],
        &["listen", "--udp", "--tls", "0"][..],
    ] {
        let (ok, _, err) = run_in(config.path(), args, b"");
        assert!(!ok, "{args:?}");
        assert_eq!(err.trim().lines().count(), 1, "{err}");
        assert!(
            err.contains("DTLS") && err.contains("not supported"),
            "{err}"
        );
    }
}

#[test]
fn usage_mistakes_are_one_line_with_where_to_look_and_status_2() {
    for (args, want) in [
        (&["put"][..], "see `sockit put --help`"),
        (
            &["connect", "--bogus", "x:1"],
            "see `sockit connect --help`",
        ),
        (
            &["admin", "grant", "ann"],
            "see `sockit admin grant --help`",
        ),
        (&["nosuch"], "see `sockit --help`"),
    ] {
        let out = sockit().args(args).stdin(Stdio::null()).output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert_eq!(err.trim().lines().count(), 1, "{args:?}: {err}");
        assert!(
            err.starts_with("sockit: ") && err.contains(want),
            "{args:?}: {err}"
        );
    }
    // Help and version are still what clap prints, on stdout, status 0.
    let out = sockit().args(["put", "--help"]).output().unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("Usage: sockit put"));
}

#[test]
fn a_data_folder_that_cannot_be_made_is_said_once() {
    let (ok, _, err) = run(
        &[
            "serve",
            "--data-dir",
            "/proc/sockit-cannot-be-here",
            "--echo-bind",
            "127.0.0.1:0",
            "--framed-bind",
            "127.0.0.1:0",
            "--web-bind",
            "127.0.0.1:0",
        ],
        b"",
    );
    assert!(!ok);
    let line = err.lines().find(|l| l.starts_with("sockit: ")).unwrap();
    assert_eq!(
        line,
        "sockit: cannot create data directory /proc/sockit-cannot-be-here: no such file or folder",
        "{err}"
    );
}
