//! `sockit connect` and `sockit listen` keep netcat's one promise: every
//! byte delivered, or a non-zero exit with one line. Against peers that
//! half-close first, reset, close without reading, read slowly, and against
//! programs we did not write (ncat and socat, in both roles; `.ci/run`
//! installs them, elsewhere those tests say so and pass).

mod common;

use std::fs::File;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

/// Bulk size: many times a socket buffer, so that a relay that stops early
/// loses bytes every time.
const BULK: usize = 8 * 1024 * 1024;
/// How long any one program may take before the test calls it hung.
const HUNG: Duration = Duration::from_secs(60);

fn sockit() -> Command {
    Command::new(env!("CARGO_BIN_EXE_sockit"))
}

/// The address a `sockit listen` child prints on stderr ("listening on
/// ADDR"), reading past the lines before it.
fn printed_address(stderr: &mut BufReader<std::process::ChildStderr>) -> SocketAddr {
    let mut line = String::new();
    loop {
        line.clear();
        assert!(stderr.read_line(&mut line).unwrap() > 0, "it ended first");
        if let Some(addr) = line.split_whitespace().find_map(|w| w.parse().ok()) {
            return addr;
        }
    }
}

/// A file of `len` noise bytes, to be a program's stdin as a user's file is.
fn bulk_file(dir: &Path, len: usize, seed: u64) -> (PathBuf, Vec<u8>) {
    let data = common::noise(len, seed);
    let path = dir.join(format!("input-{seed}"));
    std::fs::write(&path, &data).unwrap();
    (path, data)
}

fn stdin_of(path: &Path) -> Stdio {
    Stdio::from(File::open(path).unwrap())
}

/// A child whose output is being collected (from the start, so that a
/// full stdout pipe never stalls it while the test does other things).
struct Running {
    pid: u32,
    output: mpsc::Receiver<std::io::Result<Output>>,
}

/// Starts collecting `child`'s output and exit.
fn collect(child: Child) -> Running {
    let (tx, rx) = mpsc::channel();
    let pid = child.id();
    thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    Running { pid, output: rx }
}

impl Running {
    /// Its output, failing the test if it runs longer than [`HUNG`].
    fn wait(self, what: &str) -> Output {
        match self.output.recv_timeout(HUNG) {
            Ok(out) => out.unwrap(),
            Err(_) => {
                let _ = Command::new("kill")
                    .args(["-9", &self.pid.to_string()])
                    .status();
                panic!("{what} did not finish within {HUNG:?}");
            }
        }
    }
}

/// Waits for `child`, failing the test if it runs longer than [`HUNG`].
fn finish(child: Child, what: &str) -> Output {
    collect(child).wait(what)
}

fn stderr_of(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Asserts the one-line error and non-zero exit of a failed relay.
fn assert_failed(out: &Output, what: &str) {
    let err = stderr_of(out);
    assert!(!out.status.success(), "{what}: exit 0 although {err:?}");
    let lines: Vec<_> = err.lines().filter(|l| l.starts_with("sockit: ")).collect();
    assert!(
        !lines.is_empty() && err.lines().count() <= 3,
        "{what}: not one clear line: {err:?}"
    );
}

/// `sockit connect ADDR` with `stdin`, its stdout captured.
fn connect(addr: SocketAddr, extra: &[&str], stdin: Stdio) -> Child {
    sockit()
        .arg("connect")
        .args(extra)
        .arg(addr.to_string())
        .stdin(stdin)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// `sockit listen` on a port of the kernel's choosing; returns the running
/// child (its output being collected) and the address it printed.
fn listen(extra: &[&str], stdin: Stdio) -> (Running, SocketAddr) {
    let mut child = sockit()
        .arg("listen")
        .args(extra)
        .arg("127.0.0.1:0")
        .stdin(stdin)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let addr = printed_address(&mut stderr);
    // The rest of stderr is handed back with the output, for messages.
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let mut rest = Vec::new();
        let _ = stderr.read_to_end(&mut rest);
        let _ = tx.send(rest);
    });
    LISTEN_STDERR.with(|s| s.borrow_mut().push((child.id(), rx)));
    (collect(child), addr)
}

thread_local! {
    /// stderr of each `listen` child after its first line, by pid.
    static LISTEN_STDERR: std::cell::RefCell<Vec<(u32, mpsc::Receiver<Vec<u8>>)>> =
        const { std::cell::RefCell::new(Vec::new()) };
}

/// As [`Running::wait`], for a child started by [`listen`], with its stderr.
fn finish_listen(child: Running, what: &str) -> Output {
    let pid = child.pid;
    let mut out = child.wait(what);
    let rx = LISTEN_STDERR.with(|s| {
        let mut s = s.borrow_mut();
        let i = s.iter().position(|(p, _)| *p == pid).unwrap();
        s.remove(i).1
    });
    out.stderr = rx.recv_timeout(HUNG).unwrap_or_default();
    out
}

/// A server we wrote for one connection: `serve` runs on the accepted
/// stream on a thread; its result comes back through the handle.
fn one_shot<T: Send + 'static>(
    serve: impl FnOnce(TcpStream) -> T + Send + 'static,
) -> (SocketAddr, thread::JoinHandle<T>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let handle = thread::spawn(move || {
        let (stream, _) = listener.accept().unwrap();
        serve(stream)
    });
    (addr, handle)
}

/// Closes `stream` with a reset (SO_LINGER 0) instead of a FIN.
fn reset(stream: TcpStream) {
    socket2::SockRef::from(&stream)
        .set_linger(Some(Duration::ZERO))
        .unwrap();
    drop(stream);
}

fn have_ncat() -> bool {
    !common::missing("ncat", "apt-get install ncat", || {
        common::runs("ncat", &["--version"])
    })
}

fn have_socat() -> bool {
    !common::missing("socat", "apt-get install socat", || {
        common::runs("socat", &["-V"])
    })
}

/// A free loopback port for a program that must be told one (ncat, socat).
/// The kernel chose it; the window until the program binds it is short.
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

// ---- peers we wrote, each doing one thing a netcat must survive ----

#[test]
fn connect_delivers_8_mib_to_a_peer_that_half_closes_first_every_time() {
    let dir = tempfile::tempdir().unwrap();
    let (input, data) = bulk_file(dir.path(), BULK, 1);
    for round in 0..5 {
        let (addr, server) = one_shot(|mut s| {
            s.shutdown(Shutdown::Write).unwrap();
            let mut got = Vec::new();
            s.read_to_end(&mut got).unwrap();
            got
        });
        let out = finish(connect(addr, &[], stdin_of(&input)), "connect");
        assert!(out.status.success(), "round {round}: {}", stderr_of(&out));
        let got = server.join().unwrap();
        assert_eq!(got.len(), data.len(), "round {round}: bytes delivered");
        assert!(got == data, "round {round}: the bytes differ");
    }
}

#[test]
fn connect_delivers_everything_after_a_greeting_and_half_close() {
    let dir = tempfile::tempdir().unwrap();
    let (input, data) = bulk_file(dir.path(), BULK, 2);
    let (addr, server) = one_shot(|mut s| {
        s.write_all(b"220 hello, send me everything\n").unwrap();
        s.shutdown(Shutdown::Write).unwrap();
        let mut got = Vec::new();
        s.read_to_end(&mut got).unwrap();
        got
    });
    let out = finish(connect(addr, &[], stdin_of(&input)), "connect");
    assert!(out.status.success(), "{}", stderr_of(&out));
    assert_eq!(out.stdout, b"220 hello, send me everything\n");
    assert!(server.join().unwrap() == data);
}

#[test]
fn connect_to_a_slow_reader_delivers_every_byte() {
    let dir = tempfile::tempdir().unwrap();
    let (input, data) = bulk_file(dir.path(), 2 * 1024 * 1024, 3);
    let (addr, server) = one_shot(|mut s| {
        // 4 KiB every millisecond: the sender's writes block again and again.
        let mut got = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            match s.read(&mut buf).unwrap() {
                0 => return got,
                n => got.extend_from_slice(&buf[..n]),
            }
            thread::sleep(Duration::from_millis(1));
        }
    });
    let out = finish(connect(addr, &[], stdin_of(&input)), "connect");
    assert!(out.status.success(), "{}", stderr_of(&out));
    assert!(server.join().unwrap() == data);
}

#[test]
fn connect_exits_nonzero_when_the_peer_reads_1000_bytes_and_resets() {
    let dir = tempfile::tempdir().unwrap();
    let (input, _) = bulk_file(dir.path(), BULK, 4);
    for round in 0..3 {
        let (addr, server) = one_shot(|mut s| {
            let mut buf = [0u8; 1000];
            s.read_exact(&mut buf).unwrap();
            reset(s);
        });
        let out = finish(connect(addr, &[], stdin_of(&input)), "connect");
        server.join().unwrap();
        assert_failed(&out, &format!("round {round}"));
        assert!(stderr_of(&out).contains("reset"), "{}", stderr_of(&out));
    }
}

#[test]
fn connect_exits_nonzero_when_a_small_input_fits_in_buffers_but_the_peer_resets() {
    // 100 bytes are written at once, before the reset arrives: only the
    // reset seen afterwards can tell that they were not read.
    let (addr, server) = one_shot(|mut s| {
        let mut buf = [0u8; 10];
        s.read_exact(&mut buf).unwrap();
        reset(s);
    });
    let mut child = connect(addr, &[], Stdio::piped());
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(&[b'x'; 100]).unwrap();
    server.join().unwrap();
    drop(stdin);
    let out = finish(child, "connect");
    assert_failed(&out, "reset after a small input");
}

#[test]
fn connect_exits_nonzero_when_the_peer_closes_without_reading() {
    let dir = tempfile::tempdir().unwrap();
    let (input, _) = bulk_file(dir.path(), BULK, 5);
    let (addr, server) = one_shot(|mut s| {
        s.write_all(b"busy, go away\n").unwrap();
        drop(s); // unread bytes: the kernel answers them with a reset
    });
    let out = finish(connect(addr, &[], stdin_of(&input)), "connect");
    server.join().unwrap();
    assert_failed(&out, "peer closed without reading");
}

#[test]
fn listen_sends_all_of_stdin_to_a_client_that_sends_a_line_and_half_closes() {
    let dir = tempfile::tempdir().unwrap();
    let (input, data) = bulk_file(dir.path(), BULK, 6);
    let (child, addr) = listen(&[], stdin_of(&input));
    let mut client = TcpStream::connect(addr).unwrap();
    client.write_all(b"GET everything\n").unwrap();
    client.shutdown(Shutdown::Write).unwrap();
    let mut got = Vec::new();
    client.read_to_end(&mut got).unwrap();
    drop(client);
    let out = finish_listen(child, "listen");
    assert!(out.status.success(), "{}", stderr_of(&out));
    assert_eq!(out.stdout, b"GET everything\n");
    assert_eq!(got.len(), data.len());
    assert!(got == data);
}

#[test]
fn listen_receives_8_mib_from_a_client_while_its_own_stdin_is_empty() {
    let (child, addr) = listen(&[], Stdio::null());
    let data = common::noise(BULK, 7);
    let mut client = TcpStream::connect(addr).unwrap();
    let mut reader = client.try_clone().unwrap();
    // The listener half-closes at once (empty stdin); we read that EOF
    // meanwhile, as a well-behaved client does.
    let eof = thread::spawn(move || {
        let mut rest = Vec::new();
        reader.read_to_end(&mut rest).unwrap();
        rest
    });
    client.write_all(&data).unwrap();
    client.shutdown(Shutdown::Write).unwrap();
    assert!(eof.join().unwrap().is_empty());
    let out = finish_listen(child, "listen");
    assert!(out.status.success(), "{}", stderr_of(&out));
    assert!(
        out.stdout == data,
        "got {} of {} bytes",
        out.stdout.len(),
        BULK
    );
}

// ---- the options for the other wishes ----

#[test]
fn send_only_ends_once_stdin_is_acknowledged_and_prints_nothing() {
    let (addr, server) = one_shot(|mut s| {
        // Talks all the time and never closes: only --send-only ends this.
        let mut got = vec![0u8; 5];
        s.read_exact(&mut got).unwrap();
        let mut rest = [0u8; 1];
        s.set_nonblocking(true).unwrap();
        loop {
            match s.write(b"noise\n") {
                Ok(_) | Err(_) => {}
            }
            match s.read(&mut rest) {
                Ok(0) => return got,
                Ok(_) => panic!("more than stdin arrived"),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(_) => return got,
            }
            thread::sleep(Duration::from_millis(1));
        }
    });
    let mut child = connect(addr, &["--send-only"], Stdio::piped());
    child.stdin.take().unwrap().write_all(b"hello").unwrap();
    let out = finish(child, "connect --send-only");
    assert!(out.status.success(), "{}", stderr_of(&out));
    assert!(out.stdout.is_empty(), "printed {:?}", out.stdout);
    assert_eq!(server.join().unwrap(), b"hello");
}

#[test]
fn recv_only_sends_nothing_not_even_a_half_close() {
    let (addr, server) = one_shot(|mut s| {
        s.write_all(b"news\n").unwrap();
        s.shutdown(Shutdown::Write).unwrap();
        // Nothing may arrive until the client has gone: then EOF.
        let mut got = Vec::new();
        s.read_to_end(&mut got).unwrap();
        got
    });
    let mut child = connect(addr, &["--recv-only"], Stdio::piped());
    let mut stdin = child.stdin.take().unwrap();
    let _ = stdin.write_all(b"must not be sent\n");
    let out = finish(child, "connect --recv-only");
    drop(stdin);
    assert!(out.status.success(), "{}", stderr_of(&out));
    assert_eq!(out.stdout, b"news\n");
    assert!(server.join().unwrap().is_empty());
}

#[test]
fn no_shutdown_keeps_the_write_side_open_after_stdin_ends() {
    let (addr, server) = one_shot(|mut s| {
        let mut got = [0u8; 4];
        s.read_exact(&mut got).unwrap();
        // With a half-close the next read is 0 at once; without one, it
        // times out. 300 ms is the evidence, not a wait for an event.
        s.set_read_timeout(Some(Duration::from_millis(300)))
            .unwrap();
        let mut more = [0u8; 1];
        let half_closed = matches!(s.read(&mut more), Ok(0));
        s.write_all(b"bye\n").unwrap();
        (got, half_closed)
    });
    let mut child = connect(addr, &["--no-shutdown"], Stdio::piped());
    child.stdin.take().unwrap().write_all(b"ping").unwrap();
    let out = finish(child, "connect --no-shutdown");
    assert!(out.status.success(), "{}", stderr_of(&out));
    let (got, half_closed) = server.join().unwrap();
    assert_eq!(&got, b"ping");
    assert!(!half_closed, "stdin's end was passed on as a half-close");
    assert_eq!(out.stdout, b"bye\n");
}

#[test]
fn close_after_stops_waiting_for_a_peer_that_never_closes() {
    let (done_tx, done_rx) = mpsc::channel::<()>();
    let (addr, server) = one_shot(move |mut s| {
        let mut got = Vec::new();
        s.read_to_end(&mut got).unwrap();
        s.write_all(b"ok\n").unwrap();
        // Holds the connection open until the test is over.
        let _ = done_rx.recv();
        got
    });
    let mut child = connect(addr, &["-q", "0.2"], Stdio::piped());
    child.stdin.take().unwrap().write_all(b"all of it").unwrap();
    let out = finish(child, "connect -q 0.2");
    done_tx.send(()).unwrap();
    assert!(out.status.success(), "{}", stderr_of(&out));
    assert_eq!(server.join().unwrap(), b"all of it");
}

#[test]
fn relay_options_are_refused_with_udp() {
    let out = sockit()
        .args(["connect", "--udp", "--send-only", "127.0.0.1:9"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", stderr_of(&out));
}

// ---- TLS ----

#[test]
fn tls_connect_exits_nonzero_when_the_listener_is_killed_mid_transfer() {
    let dir = tempfile::tempdir().unwrap();
    let (input, _) = bulk_file(dir.path(), 64 * 1024 * 1024, 8);
    // The receiver's stdout is a pipe nobody reads: it stalls mid-transfer.
    let mut listener = sockit()
        .env("SOCKIT_CONFIG_DIR", dir.path())
        .args(["listen", "--tls", "127.0.0.1:0"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = BufReader::new(listener.stderr.take().unwrap());
    let addr = printed_address(&mut stderr);
    let mut line = String::new();
    let client = sockit()
        .env("SOCKIT_CONFIG_DIR", dir.path())
        .args(["connect", "--tls", "--accept-new", &addr.to_string()])
        .stdin(stdin_of(&input))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // "connection from" means the handshake is done and bytes flow.
    loop {
        line.clear();
        assert!(stderr.read_line(&mut line).unwrap() > 0, "listener ended");
        if line.contains("connection from") {
            break;
        }
    }
    listener.kill().unwrap();
    listener.wait().unwrap();
    let out = finish(client, "connect --tls");
    assert_failed(&out, "listener killed");
}

// ---- UDP ----

#[test]
fn listen_udp_keeps_stdin_until_the_first_datagram_arrives() {
    let mut child = sockit()
        .args(["listen", "--udp", "127.0.0.1:0"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let addr = printed_address(&mut stderr);
    // Written before anyone has sent a datagram: it must not be dropped.
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(b"welcome\n").unwrap();
    stdin.flush().unwrap();
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    sock.send_to(b"hi\n", addr).unwrap();
    let mut buf = [0u8; 64];
    let (n, _) = sock.recv_from(&mut buf).expect("the greeting was dropped");
    assert_eq!(&buf[..n], b"welcome\n");
    child.kill().unwrap();
    child.wait().unwrap();
}

#[test]
fn udp_connect_to_a_closed_port_exits_nonzero() {
    // A bound socket that is then closed: nothing listens on its port.
    let port = {
        let s = UdpSocket::bind("127.0.0.1:0").unwrap();
        s.local_addr().unwrap().port()
    };
    let out = sockit()
        .args(["connect", "--udp", &format!("127.0.0.1:{port}")])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            c.stdin.take().unwrap().write_all(b"anyone?\n")?;
            c.wait_with_output()
        })
        .unwrap();
    assert_failed(&out, "udp to a closed port");
    assert!(stderr_of(&out).contains("refused"), "{}", stderr_of(&out));
}

// ---- programs we did not write: ncat and socat in both roles ----

/// Runs a receiver `program` (which writes what it receives to stdout) and
/// `sockit connect` with the bulk file; checks every byte and both exits.
fn sockit_sends_to(program: &str, args: &[String], port: u16, stdin_null: bool) {
    let dir = tempfile::tempdir().unwrap();
    let (input, data) = bulk_file(dir.path(), BULK, 9);
    let receiver = collect(
        Command::new(program)
            .args(args)
            .stdin(if stdin_null {
                Stdio::null()
            } else {
                Stdio::piped()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    await_listening_once(port);
    let out = finish(
        connect(
            SocketAddr::from(([127, 0, 0, 1], port)),
            &[],
            stdin_of(&input),
        ),
        "connect",
    );
    let got = receiver.wait(program);
    assert!(out.status.success(), "{program}: {}", stderr_of(&out));
    assert_eq!(got.stdout.len(), data.len(), "{program} {args:?}");
    assert!(got.stdout == data, "{program} {args:?}: bytes differ");
}

/// Waits until a program we did not write (it does not say when it is
/// ready) listens on `port`. A probe connection would be the one client
/// ncat and socat serve, so this watches /proc/net/tcp for the listening
/// socket (state 0A) instead, which makes no connection.
fn await_listening_once(port: u16) {
    let needle = format!(":{port:04X} 00000000:0000 0A");
    for _ in 0..500 {
        let table = std::fs::read_to_string("/proc/net/tcp").unwrap_or_default();
        if table.contains(&needle) {
            return;
        }
        thread::sleep(Duration::from_millis(10));
    }
    panic!("nothing listens on {port}");
}

#[test]
fn connect_delivers_every_byte_to_ncat_and_socat_receivers() {
    if have_ncat() {
        let p = free_port();
        let a: Vec<String> = ["-l", "127.0.0.1", &p.to_string(), "--recv-only"]
            .map(String::from)
            .into();
        sockit_sends_to("ncat", &a, p, false);
        let p = free_port();
        let a: Vec<String> = ["-l", "127.0.0.1", &p.to_string()].map(String::from).into();
        sockit_sends_to("ncat", &a, p, true);
    }
    if have_socat() {
        let p = free_port();
        let a = vec![
            "-u".to_string(),
            format!("TCP-LISTEN:{p},bind=127.0.0.1,reuseaddr"),
            "STDOUT".to_string(),
        ];
        sockit_sends_to("socat", &a, p, true);
    }
}

#[test]
fn listen_receives_every_byte_from_ncat_and_socat_senders() {
    let dir = tempfile::tempdir().unwrap();
    let (input, data) = bulk_file(dir.path(), BULK, 10);
    let mut senders: Vec<Command> = Vec::new();
    if have_ncat() {
        let mut c = Command::new("ncat");
        c.arg("127.0.0.1");
        senders.push(c);
    }
    if have_socat() {
        let mut c = Command::new("socat");
        c.arg("-u").arg(format!("FILE:{}", input.display()));
        senders.push(c);
    }
    for mut sender in senders {
        let (child, addr) = listen(&[], Stdio::null());
        let name = format!("{:?}", sender.get_program());
        if name.contains("ncat") {
            sender.arg(addr.port().to_string()).stdin(stdin_of(&input));
        } else {
            sender.arg(format!("TCP:{addr}")).stdin(Stdio::null());
        }
        let sent = sender
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let sent = finish(sent, &name);
        let out = finish_listen(child, "listen");
        assert!(sent.status.success(), "{name}: {}", stderr_of(&sent));
        assert!(out.status.success(), "{name}: {}", stderr_of(&out));
        assert_eq!(out.stdout.len(), data.len(), "{name}");
        assert!(out.stdout == data, "{name}: bytes differ");
    }
}

#[test]
fn connect_receives_every_byte_from_ncat_and_socat_senders() {
    let dir = tempfile::tempdir().unwrap();
    let (input, data) = bulk_file(dir.path(), BULK, 11);
    let mut cases: Vec<(Command, u16)> = Vec::new();
    if have_ncat() {
        let p = free_port();
        let mut c = Command::new("ncat");
        c.args(["-l", "127.0.0.1", &p.to_string(), "--send-only"])
            .stdin(stdin_of(&input));
        cases.push((c, p));
    }
    if have_socat() {
        let p = free_port();
        let mut c = Command::new("socat");
        c.arg("-u")
            .arg(format!("FILE:{}", input.display()))
            .arg(format!("TCP-LISTEN:{p},bind=127.0.0.1,reuseaddr"))
            .stdin(Stdio::null());
        cases.push((c, p));
    }
    for (mut sender, port) in cases {
        let name = format!("{:?}", sender.get_program());
        let sender = sender
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        await_listening_once(port);
        let out = finish(
            connect(SocketAddr::from(([127, 0, 0, 1], port)), &[], Stdio::null()),
            "connect",
        );
        let sent = finish(sender, &name);
        assert!(sent.status.success(), "{name}: {}", stderr_of(&sent));
        assert!(out.status.success(), "{name}: {}", stderr_of(&out));
        assert_eq!(out.stdout.len(), data.len(), "{name}");
        assert!(out.stdout == data, "{name}: bytes differ");
    }
}

#[test]
fn listen_sends_every_byte_to_ncat_and_socat_receivers() {
    let dir = tempfile::tempdir().unwrap();
    let (input, data) = bulk_file(dir.path(), BULK, 12);
    let mut receivers: Vec<Command> = Vec::new();
    if have_ncat() {
        let mut c = Command::new("ncat");
        c.arg("--recv-only").arg("127.0.0.1");
        receivers.push(c);
    }
    if have_socat() {
        let mut c = Command::new("socat");
        c.arg("-u");
        receivers.push(c);
    }
    for mut receiver in receivers {
        let (child, addr) = listen(&[], stdin_of(&input));
        let name = format!("{:?}", receiver.get_program());
        if name.contains("ncat") {
            receiver.arg(addr.port().to_string());
        } else {
            receiver.arg(format!("TCP:{addr}")).arg("STDOUT");
        }
        let got = receiver
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let got = finish(got, &name);
        let out = finish_listen(child, "listen");
        assert!(got.status.success(), "{name}: {}", stderr_of(&got));
        assert!(out.status.success(), "{name}: {}", stderr_of(&out));
        assert_eq!(got.stdout.len(), data.len(), "{name}");
        assert!(got.stdout == data, "{name}: bytes differ");
    }
}

#[test]
fn udp_round_trips_with_socat_and_ncat() {
    if have_socat() {
        // socat answers each datagram, upper-cased, from a forked `tr`.
        let port = {
            let s = UdpSocket::bind("127.0.0.1:0").unwrap();
            s.local_addr().unwrap().port()
        };
        let mut server = Command::new("socat")
            .arg(format!("UDP-RECVFROM:{port},bind=127.0.0.1,fork"))
            .arg("SYSTEM:tr a-z A-Z")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        await_udp_bound(port);
        let mut child = sockit()
            .args(["connect", "--udp", &format!("127.0.0.1:{port}")])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(b"hello over udp\n")
            .unwrap();
        let out = finish(child, "connect --udp");
        let _ = server.kill();
        let _ = server.wait();
        assert!(out.status.success(), "{}", stderr_of(&out));
        assert_eq!(out.stdout, b"HELLO OVER UDP\n");
    }
    if have_ncat() {
        // ncat as the UDP client of `sockit listen --udp`.
        let mut child = sockit()
            .args(["listen", "--udp", "127.0.0.1:0"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut stderr = BufReader::new(child.stderr.take().unwrap());
        let addr = printed_address(&mut stderr);
        let mut ncat = Command::new("ncat")
            .args(["-u", "--send-only", "127.0.0.1", &addr.port().to_string()])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        ncat.stdin
            .take()
            .unwrap()
            .write_all(b"datagram from ncat\n")
            .unwrap();
        let sent = finish(ncat, "ncat -u");
        assert!(sent.status.success(), "{}", stderr_of(&sent));
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let mut got = String::new();
        stdout.read_line(&mut got).unwrap();
        assert_eq!(got, "datagram from ncat\n");
        child.kill().unwrap();
        child.wait().unwrap();
    }
}

/// Waits until a UDP socket is bound on `port` (/proc/net/udp lists it).
fn await_udp_bound(port: u16) {
    let needle = format!(":{port:04X} 00000000:0000");
    for _ in 0..500 {
        let table = std::fs::read_to_string("/proc/net/udp").unwrap_or_default();
        if table.contains(&needle) {
            return;
        }
        thread::sleep(Duration::from_millis(10));
    }
    panic!("nothing bound udp port {port}");
}

// ---- on a terminal ----

#[test]
fn on_a_terminal_the_peers_end_and_the_exit_leave_the_screen_tidy() {
    use common::terminal::Terminal;
    if !Terminal::available() {
        return;
    }
    // A peer that talks while we type, answers our line, then ends.
    let (addr, server) = one_shot(|s| {
        let mut w = s.try_clone().unwrap();
        let mut lines = BufReader::new(s).lines();
        w.write_all(b"greeting\n").unwrap();
        // The first line wakes it: then it talks while we type the second.
        assert_eq!(lines.next().unwrap().unwrap(), "x");
        w.write_all(b"news while you type\n").unwrap();
        let line = lines.next().unwrap().unwrap();
        w.write_all(format!("got {line}\n").as_bytes()).unwrap();
        w.shutdown(Shutdown::Write).unwrap();
        for _ in lines {}
    });
    let term = Terminal::start(&format!(
        "{} connect {addr}; echo EXIT=$?; sleep 30",
        env!("CARGO_BIN_EXE_sockit")
    ));
    term.shows("greeting");
    term.shows(">");
    term.paste("x\r");
    term.shows("news while you type");
    term.paste("half typed\r");
    term.shows("got half typed");
    let screen = term.shows("EXIT=0");
    // The peer's end is said on a line of its own, and the shell's next
    // line starts on a line of its own.
    assert!(
        screen
            .lines()
            .any(|l| l.starts_with("sockit: connection closed by")),
        "{screen}"
    );
    assert!(
        screen.lines().any(|l| l.starts_with("EXIT=0")),
        "the last line before the shell's did not end:\n{screen}"
    );
    server.join().unwrap();
}
