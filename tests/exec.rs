//! Remote commands over real sockets and real processes: refusals, exit
//! codes and signals, stdin with its end, binary output, the output and time
//! limits, the audit log, and no process left behind when the client is
//! killed or the server stops; a server process's memory while a slow client
//! takes 100 MiB.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::os::fd::{FromRawFd, OwnedFd};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use bytes::Bytes;
use sockit::exec::client::{run, Finished, Sinks};
use sockit::exec::AuditRecord;
use sockit::files::client::{Client, ClientError};
use sockit::proto::{Connection, Frame};
use sockit::tls::{Stream, Transport};
use tokio::io::unix::AsyncFd;
use tokio::sync::mpsc;

const BIN: &str = env!("CARGO_BIN_EXE_sockit");
const PASSWORD: &str = "correct horse";

/// Programs the test servers allow.
fn allow() -> Vec<String> {
    ["sh", "cat", "head", "printf", "sleep", "true"]
        .map(String::from)
        .to_vec()
}

async fn exec_server() -> common::TestServer {
    common::start(|c| {
        c.exec.enabled = true;
        c.exec.allow = allow();
    })
    .await
}

/// Registers `user` (with the exec permission if `exec`) and returns an
/// authenticated connection.
async fn login(addr: &str, data: &Path, user: &str, exec: bool) -> Connection<Stream> {
    login_via(addr, &Transport::Plain, data, user, exec).await
}

async fn login_via(
    addr: &str,
    transport: &Transport,
    data: &Path,
    user: &str,
    exec: bool,
) -> Connection<Stream> {
    let mut c = Client::connect(addr, transport).await.unwrap();
    c.register(user, PASSWORD).await.unwrap();
    if exec {
        grant(data, user, true);
    }
    c.login(user, PASSWORD).await.unwrap();
    c.into_connection()
}

fn grant(data: &Path, user: &str, on: bool) {
    sockit::accounts::Accounts::open(data, Default::default())
        .unwrap()
        .set_permission(user, "exec", on)
        .unwrap();
}

/// What one run gave.
struct Ran {
    result: Result<Finished, ClientError>,
    stdout: Vec<u8>,
    stderr: Vec<u8>,
}

impl Ran {
    fn finished(&self) -> Finished {
        match &self.result {
            Ok(f) => *f,
            Err(e) => panic!("run failed: {e} ({:?})", e.code()),
        }
    }

    fn code(&self) -> String {
        match &self.result {
            Ok(f) => format!("(finished: {f:?})"),
            Err(e) => e.code().unwrap_or("(no code)").to_string(),
        }
    }
}

async fn exec(conn: &mut Connection<Stream>, argv: &[&str], stdin: Option<&[u8]>) -> Ran {
    exec_with(conn, argv, stdin, None).await
}

async fn exec_with(
    conn: &mut Connection<Stream>,
    argv: &[&str],
    stdin: Option<&[u8]>,
    timeout: Option<f64>,
) -> Ran {
    let argv: Vec<String> = argv.iter().map(|s| s.to_string()).collect();
    let input = stdin.map(|data| {
        let (tx, rx) = mpsc::channel(4);
        let data = data.to_vec();
        tokio::spawn(async move {
            for piece in data.chunks(1000) {
                tx.send(Ok(Bytes::copy_from_slice(piece))).await.unwrap();
            }
            // Dropping the sender is the end of stdin.
        });
        rx
    });
    let (mut stdout, mut stderr) = (Vec::new(), Vec::new());
    let sinks = Sinks {
        stdout: &mut stdout,
        stderr: &mut stderr,
    };
    let result = run(conn, &argv, timeout, input, sinks, None).await;
    Ran {
        result,
        stdout,
        stderr,
    }
}

fn audit_lines(data: &Path) -> Vec<AuditRecord> {
    std::fs::read_to_string(data.join(sockit::exec::AUDIT_FILE))
        .unwrap_or_default()
        .split_inclusive('\n')
        // Only whole lines: one may be in the middle of being written.
        .filter(|l| l.ends_with('\n'))
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// Resolves when process `pid` has exited (a pidfd turns readable).
async fn exited(pid: i32) {
    // SAFETY: pidfd_open returns a new descriptor or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if fd < 0 {
        // Already gone (and reaped).
        return;
    }
    // SAFETY: a fresh descriptor we own.
    let fd = unsafe { OwnedFd::from_raw_fd(fd as i32) };
    // SAFETY: an OwnedFd keeps its descriptor open and reports it unchanged.
    let fd = unsafe { AsyncFd::register(fd) }.unwrap();
    let _ = fd.readable().await.unwrap();
}

/// Processes still alive (not zombies) in process group `pgid`.
fn alive_in_group(pgid: i32) -> Vec<String> {
    let mut alive = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        // pid (comm) state ppid pgrp ...; comm may hold spaces.
        let Some(close) = stat.rfind(')') else {
            continue;
        };
        let fields: Vec<&str> = stat[close + 2..].split(' ').collect();
        if fields.len() > 2 && fields[2] == pgid.to_string() && fields[0] != "Z" {
            alive.push(stat[..close + 1].to_string());
        }
    }
    alive
}

/// Waits (at most 5 s) until no live process is left in group `pgid`: a
/// SIGKILL sent to the group is delivered to each member in its own time,
/// so right after the leader exits the others may still be running.
async fn group_gone(pgid: i32) -> Vec<String> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let alive = alive_in_group(pgid);
        if alive.is_empty() || tokio::time::Instant::now() >= deadline {
            return alive;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn exec_is_off_by_default() {
    let srv = common::start(|_| {}).await;
    let mut conn = login(&srv.framed.to_string(), srv.data.path(), "ann", true).await;
    let ran = exec(&mut conn, &["true"], None).await;
    assert_eq!(ran.code(), "exec_disabled");
    srv.stop().await;
}

#[tokio::test]
async fn the_exec_permission_is_required_and_read_at_each_run() {
    let srv = exec_server().await;
    let addr = srv.framed.to_string();
    // Not logged in.
    let mut anon = common::framed_client(srv.framed).await;
    assert_eq!(
        exec(&mut anon, &["true"], None).await.code(),
        "unauthorized"
    );
    let mut conn = login(&addr, srv.data.path(), "bob", false).await;
    assert_eq!(exec(&mut conn, &["true"], None).await.code(), "forbidden");
    // Granted while connected: the next run sees it.
    grant(srv.data.path(), "bob", true);
    assert_eq!(
        exec(&mut conn, &["true"], None).await.finished().status(),
        0
    );
    grant(srv.data.path(), "bob", false);
    assert_eq!(exec(&mut conn, &["true"], None).await.code(), "forbidden");
    let audit = audit_lines(srv.data.path());
    let results: Vec<_> = audit
        .iter()
        .map(|r| (r.result.as_str(), r.error.as_deref()))
        .collect();
    assert_eq!(
        results,
        [
            ("refused", Some("forbidden")),
            ("exit", None),
            ("refused", Some("forbidden"))
        ]
    );
    srv.stop().await;
}

#[tokio::test]
async fn only_allowlisted_programs_run_exactly_as_named() {
    let srv = exec_server().await;
    let mut conn = login(&srv.framed.to_string(), srv.data.path(), "cy", true).await;
    let sh = sockit::exec::resolve_program("sh", sockit::exec::DEFAULT_PATH)
        .unwrap()
        .path;
    let dir = sh.parent().unwrap().display().to_string();
    for argv in [
        vec!["ls"],
        vec!["bash", "-c", "true"],
        vec!["./sh"],
        vec!["SH"],
        vec![""],
    ] {
        let ran = exec(&mut conn, &argv, None).await;
        assert_eq!(ran.code(), "not_allowed", "{argv:?}");
    }
    let sneaky = format!("{dir}/../{}/sh", dir.trim_start_matches('/'));
    assert_eq!(
        exec(&mut conn, &[&sneaky], None).await.code(),
        "not_allowed"
    );
    assert_eq!(exec(&mut conn, &[], None).await.code(), "bad_request");
    // The name and the resolved path both work; argv is never re-parsed.
    let ran = exec(
        &mut conn,
        &["printf", "%s|", "a b", "$HOME", "*", ";ls"],
        None,
    )
    .await;
    assert_eq!(ran.stdout, b"a b|$HOME|*|;ls|");
    let ran = exec(&mut conn, &[sh.to_str().unwrap(), "-c", "echo $0"], None).await;
    assert_eq!(ran.finished().status(), 0);
    let refused = audit_lines(srv.data.path())
        .iter()
        .filter(|r| r.error.as_deref() == Some("not_allowed"))
        .count();
    assert_eq!(refused, 6);
    srv.stop().await;
}

#[tokio::test]
async fn exit_codes_and_signals_come_back() {
    let srv = exec_server().await;
    let mut conn = login(&srv.framed.to_string(), srv.data.path(), "dee", true).await;
    let f = exec(&mut conn, &["sh", "-c", "exit 3"], None)
        .await
        .finished();
    assert_eq!((f.code, f.signal, f.status()), (Some(3), None, 3));
    let f = exec(&mut conn, &["sh", "-c", "kill -TERM $$"], None)
        .await
        .finished();
    assert_eq!((f.code, f.signal, f.status()), (None, Some(15), 143));
    let f = exec(&mut conn, &["sh", "-c", "kill -KILL $$"], None)
        .await
        .finished();
    assert_eq!(f.status(), 137);
    // stdout and stderr arrive separately; the environment is the configured one.
    let ran = exec(
        &mut conn,
        &[
            "sh",
            "-c",
            "echo out; echo err >&2; echo \"$PATH|$LANG|${HOME-unset}\"",
        ],
        None,
    )
    .await;
    assert_eq!(ran.finished().status(), 0);
    assert_eq!(
        String::from_utf8(ran.stdout).unwrap(),
        format!("out\n{}|C.UTF-8|unset\n", sockit::exec::DEFAULT_PATH)
    );
    assert_eq!(ran.stderr, b"err\n");
    // The connection is still in step after all of that.
    conn.write_frame(&Frame::new("ping")).await.unwrap();
    assert_eq!(conn.read_frame().await.unwrap().unwrap().kind(), "pong");
    srv.stop().await;
}

#[tokio::test]
async fn stdin_is_forwarded_with_its_end_and_output_is_binary_safe() {
    let srv = exec_server().await;
    let mut conn = login(&srv.framed.to_string(), srv.data.path(), "eve", true).await;
    // Every byte value, several times, through cat: cat ends only at EOF.
    let input: Vec<u8> = (0..20_000u32).map(|i| (i % 256) as u8).collect();
    let ran = exec(&mut conn, &["cat"], Some(&input)).await;
    assert_eq!(ran.finished().status(), 0);
    assert_eq!(ran.stdout, input);
    // An empty stdin is an immediate EOF.
    let ran = exec(&mut conn, &["cat"], Some(b"")).await;
    assert_eq!((ran.finished().status(), ran.stdout.len()), (0, 0));
    let ran = exec(&mut conn, &["cat"], None).await;
    assert_eq!(ran.finished().status(), 0);
    // Not UTF-8 on both streams.
    let ran = exec(
        &mut conn,
        &[
            "sh",
            "-c",
            "printf '\\377\\376\\000\\200'; printf '\\300\\001' >&2",
        ],
        None,
    )
    .await;
    assert_eq!(ran.finished().status(), 0);
    assert_eq!(ran.stdout, [0xff, 0xfe, 0x00, 0x80]);
    assert_eq!(ran.stderr, [0xc0, 0x01]);
    // A program that stops reading its stdin early: the rest is dropped.
    let big = vec![b'x'; 1 << 20];
    let ran = exec(&mut conn, &["head", "-c", "5"], Some(&big)).await;
    assert_eq!(
        (ran.finished().status(), ran.stdout.as_slice()),
        (0, &b"xxxxx"[..])
    );
    srv.stop().await;
}

#[tokio::test]
async fn the_time_limit_kills_the_whole_group() {
    let srv = common::start(|c| {
        c.exec.enabled = true;
        c.exec.allow = allow();
        c.exec.timeout = Duration::from_secs(30);
    })
    .await;
    let mut conn = login(&srv.framed.to_string(), srv.data.path(), "fay", true).await;
    // The client asks for less than the server's limit.
    let ran = exec_with(
        &mut conn,
        &["sh", "-c", "sleep 1000 & echo $!; exec sleep 1000"],
        None,
        Some(0.5),
    )
    .await;
    assert_eq!(ran.code(), "timeout");
    let sleeper: i32 = String::from_utf8(ran.stdout)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    exited(sleeper).await;
    let record = audit_lines(srv.data.path()).pop().unwrap();
    exited(record.pid.unwrap() as i32).await;
    assert_eq!(record.result, "timeout");
    assert_eq!(record.signal, Some(9));
    assert!(record.duration_ms >= 500, "{record:?}");
    assert!(alive_in_group(record.pid.unwrap() as i32).is_empty());
    // The connection goes on.
    assert_eq!(
        exec(&mut conn, &["true"], None).await.finished().status(),
        0
    );
    srv.stop().await;
}

/// The user programs run as in these tests: root ignores `RLIMIT_NPROC` and
/// may read any process's environment, so a root test server runs them as
/// `nobody`; `None` when the tests run as root and there is no `nobody`.
fn run_as() -> Option<String> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Some(String::new());
    }
    let nobody = || common::runs("getent", &["passwd", "nobody"]);
    if common::missing(
        "a user named nobody (tests run as root)",
        "useradd nobody",
        nobody,
    ) {
        return None;
    }
    Some("nobody".into())
}

#[tokio::test]
async fn a_fork_bomb_stops_at_max_processes_16() {
    let Some(user) = run_as() else { return };
    let srv = common::start(|c| {
        c.exec.enabled = true;
        c.exec.allow = allow();
        c.exec.max_processes = 16;
        c.exec.user = user;
        c.exec.timeout = Duration::from_secs(60);
    })
    .await;
    let mut conn = login(&srv.framed.to_string(), srv.data.path(), "bob", true).await;
    // 200 sleepers, counted as each one starts; fork fails past the limit
    // and the shell gives up, long before the time limit.
    let bomb = "n=0; while [ $n -lt 200 ]; do sleep 60 </dev/null >/dev/null 2>&1 & n=$((n+1)); echo $n; done";
    let ran = exec(&mut conn, &["sh", "-c", bomb], None).await;
    let finished = ran.finished();
    let started = String::from_utf8_lossy(&ran.stdout)
        .lines()
        .last()
        .and_then(|l| l.trim().parse::<u32>().ok())
        .unwrap_or(0);
    let stderr = String::from_utf8_lossy(&ran.stderr);
    assert!(
        started < 16,
        "{started} sleepers started under RLIMIT_NPROC = 16 (stderr: {stderr})"
    );
    assert_ne!(finished.status(), 0, "the shell cannot have succeeded");
    assert!(stderr.to_lowercase().contains("fork"), "{stderr}");
    let record = audit_lines(srv.data.path()).pop().unwrap();
    assert_eq!(record.result, "exit");
    // The whole group, sleepers included, is killed at the end of the run.
    exited(record.pid.unwrap() as i32).await;
    let left = group_gone(record.pid.unwrap() as i32).await;
    assert!(left.is_empty(), "still alive 5 s after the run: {left:?}");
    srv.stop().await;
}

#[tokio::test]
async fn a_program_cannot_read_the_servers_environment() {
    let Some(user) = run_as() else { return };
    let srv = common::start(|c| {
        c.exec.enabled = true;
        c.exec.allow = allow();
        c.exec.user = user;
    })
    .await;
    // The server (this test process) is not dumpable: no process of its
    // user may read its memory or /proc/<pid>/environ.
    // SAFETY: prctl with integer arguments, reading a flag of this process.
    assert_eq!(unsafe { libc::prctl(libc::PR_GET_DUMPABLE, 0, 0, 0, 0) }, 0);
    let mut conn = login(&srv.framed.to_string(), srv.data.path(), "eve", true).await;
    let ran = exec(&mut conn, &["sh", "-c", "cat /proc/$PPID/environ"], None).await;
    let status = ran.finished().status();
    assert!(
        ran.stdout.is_empty() && status != 0,
        "the program read the server's environment (exit {status}): {:?}",
        String::from_utf8_lossy(&ran.stdout)
    );
    assert!(
        String::from_utf8_lossy(&ran.stderr).contains("Permission denied"),
        "{}",
        String::from_utf8_lossy(&ran.stderr)
    );
    // The program's own environment is the allowlist alone.
    let ran = exec(&mut conn, &["sh", "-c", "cat /proc/self/environ"], None).await;
    let mut names: Vec<String> = ran
        .stdout
        .split(|b| *b == 0)
        .filter(|v| !v.is_empty())
        .map(|v| {
            String::from_utf8_lossy(v)
                .split('=')
                .next()
                .unwrap_or("")
                .to_string()
        })
        .collect();
    names.sort();
    assert_eq!(names, ["LANG", "PATH", "PWD"]);
    srv.stop().await;
}

#[tokio::test]
async fn the_output_limit_cuts_the_run() {
    let srv = common::start(|c| {
        c.exec.enabled = true;
        c.exec.allow = allow();
        c.exec.max_output = 100_000;
    })
    .await;
    let mut conn = login(&srv.framed.to_string(), srv.data.path(), "gil", true).await;
    let ran = exec(&mut conn, &["head", "-c", "10000000", "/dev/zero"], None).await;
    assert_eq!(ran.code(), "too_large");
    assert_eq!(ran.stdout.len(), 100_000);
    assert_eq!(
        audit_lines(srv.data.path()).pop().unwrap().result,
        "too_large"
    );
    srv.stop().await;
}

#[tokio::test]
async fn the_audit_log_has_the_run_when_the_answer_arrives() {
    let srv = exec_server().await;
    let mut conn = login(&srv.framed.to_string(), srv.data.path(), "hal", true).await;
    let ran = exec(
        &mut conn,
        &["sh", "-c", "printf 12345; printf 67 >&2; exit 4"],
        Some(b"abc"),
    )
    .await;
    let f = ran.finished();
    let r = audit_lines(srv.data.path()).pop().unwrap();
    assert_eq!(r.user, "hal");
    assert_eq!(r.argv, ["sh", "-c", "printf 12345; printf 67 >&2; exit 4"]);
    assert!(r.program.as_deref().unwrap().ends_with("/sh"));
    assert!(r.peer.starts_with("127.0.0.1:"));
    assert_eq!(
        (r.result.as_str(), r.code, r.signal),
        ("exit", Some(4), None)
    );
    assert_eq!((r.stdout_bytes, r.stderr_bytes), (5, 2));
    assert_eq!(r.pid, Some(f.pid));
    assert_eq!(r.duration_ms, f.duration_ms);
    assert!(humantime::parse_rfc3339(&r.time).is_ok(), "{}", r.time);
    srv.stop().await;
}

/// Hands what it is given to a channel (a few small writes only).
struct ChannelSink(mpsc::Sender<Vec<u8>>);

impl Write for ChannelSink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .try_send(buf.to_vec())
            .map_err(|_| std::io::Error::other("test channel full"))?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn a_dropped_connection_or_a_server_shutdown_kills_the_group() {
    let srv = exec_server().await;
    let addr = srv.framed.to_string();
    for how in ["drop", "shutdown"] {
        let mut conn = login(&addr, srv.data.path(), &format!("ivy-{how}"), true).await;
        let (out_tx, mut out_rx) = mpsc::channel::<Vec<u8>>(16);
        // The program is the group's leader (exec) with one child.
        let argv: Vec<String> = ["sh", "-c", "sleep 1000 & echo $$ $!; exec sleep 1000"]
            .map(String::from)
            .to_vec();
        let task = tokio::spawn(async move {
            let mut out = ChannelSink(out_tx);
            let mut err = Vec::new();
            let sinks = Sinks {
                stdout: &mut out,
                stderr: &mut err,
            };
            run(&mut conn, &argv, None, None, sinks, None).await
        });
        let line = String::from_utf8(out_rx.recv().await.unwrap()).unwrap();
        let pids: Vec<i32> = line
            .split_whitespace()
            .map(|p| p.parse().unwrap())
            .collect();
        assert_eq!(pids.len(), 2, "{line:?}");
        assert_eq!(alive_in_group(pids[0]).len(), 2);
        if how == "drop" {
            task.abort();
            let _ = task.await;
        } else {
            srv.shutdown.cancel();
            let r = task.await.unwrap();
            let code = r.err().and_then(|e| e.code().map(String::from));
            assert_eq!(code.as_deref(), Some("shutting_down"));
        }
        exited(pids[0]).await;
        exited(pids[1]).await;
        assert!(alive_in_group(pids[0]).is_empty(), "{how}");
    }
    let results: Vec<String> = audit_lines(srv.data.path())
        .into_iter()
        .map(|r| r.result)
        .collect();
    assert_eq!(results, ["disconnected", "shutdown"]);
    srv.task.await.unwrap();
}

/// A `sockit serve` process for the tests that need one of their own.
struct ServerProcess {
    server: common::cli::Server,
    addr: String,
    data: tempfile::TempDir,
}

fn serve_process() -> ServerProcess {
    let data = tempfile::tempdir().unwrap();
    let config = data.path().join("sockit.toml");
    std::fs::write(
        &config,
        "[exec]\nenabled = true\nallow = [\"sh\", \"head\", \"cat\"]\nmax_output = 209715200\n",
    )
    .unwrap();
    let config = config.to_str().unwrap().to_string();
    let server = common::cli::serve_with(data.path(), "127.0.0.1:0", &["--config", &config]);
    let addr = server.addr.clone();
    ServerProcess { server, addr, data }
}

/// Peak and current resident memory of a process, in KiB.
fn rss_kib(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let field = |name: &str| -> u64 {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap()
    };
    (field("VmHWM:"), field("VmRSS:"))
}

/// Writes nothing anywhere, slowly: a client that takes about 25 MiB/s.
struct SlowSink {
    taken: u64,
    next_pause: u64,
}

impl Write for SlowSink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.taken += buf.len() as u64;
        if self.taken >= self.next_pause {
            self.next_pause += 1 << 20;
            std::thread::sleep(Duration::from_millis(40));
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_client_slows_the_program_not_the_servers_memory() {
    let srv = serve_process();
    // Over TLS (the process's default): the relay's two directions share
    // one TLS session.
    let pins = tempfile::tempdir().unwrap();
    let known = pins.path().join("known_servers");
    let fp = srv.server.fingerprint.clone().unwrap();
    std::fs::write(&known, format!("{} {fp}\n", srv.addr)).unwrap();
    let transport = Transport::Tls(sockit::tls::Trust {
        known_servers: Some(known),
        prompt: false,
        ..Default::default()
    });
    let mut conn = login_via(&srv.addr, &transport, srv.data.path(), "jay", true).await;
    let pid = srv.server.child.id();
    // Warm up: one small run, so the baseline includes what any run costs.
    assert_eq!(
        exec(&mut conn, &["head", "-c", "1000", "/dev/zero"], None)
            .await
            .stdout
            .len(),
        1000
    );
    let (peak_before, _) = rss_kib(pid);
    let argv: Vec<String> = ["head", "-c", "104857600", "/dev/zero"]
        .map(String::from)
        .to_vec();
    let mut out = SlowSink {
        taken: 0,
        next_pause: 0,
    };
    let mut err = Vec::new();
    let sinks = Sinks {
        stdout: &mut out,
        stderr: &mut err,
    };
    let started = std::time::Instant::now();
    let f = run(&mut conn, &argv, None, None, sinks, None)
        .await
        .unwrap();
    let took = started.elapsed();
    assert_eq!((f.status(), out.taken), (0, 100 * 1024 * 1024));
    // The program could write 100 MiB in far less than a second; it took as
    // long as the client did, so it was held back by the full pipe.
    assert!(took >= Duration::from_secs(3), "{took:?}");
    assert!(f.duration_ms >= 3000, "{f:?}");
    let (peak_after, now) = rss_kib(pid);
    eprintln!("server RSS: peak {peak_before} KiB before, {peak_after} KiB after, {now} KiB now");
    assert!(
        peak_after < peak_before + 16 * 1024,
        "the server's peak memory grew from {peak_before} KiB to {peak_after} KiB"
    );
}

#[test]
fn a_killed_cli_client_leaves_no_process_behind() {
    let srv = serve_process();
    let config = tempfile::tempdir().unwrap();
    let fp = srv.server.fingerprint.clone().unwrap();
    std::fs::write(
        config.path().join("known_servers"),
        format!("{} {fp}\n", srv.addr),
    )
    .unwrap();
    let cli = |args: &[&str]| {
        let mut c = Command::new(BIN);
        c.args(args)
            .env("SOCKIT_CONFIG_DIR", config.path())
            .env_remove("SOCKIT_SERVER")
            .env_remove("SOCKIT_PASSWORD");
        c
    };
    let mut reg = cli(&[
        "register",
        "--server",
        &srv.addr,
        "--user",
        "kim",
        "--password-stdin",
    ])
    .stdin(Stdio::piped())
    .stderr(Stdio::null())
    .spawn()
    .unwrap();
    reg.stdin.take().unwrap().write_all(b"pw pw\n").unwrap();
    assert!(reg.wait().unwrap().success());
    let mut login = cli(&[
        "login",
        "--server",
        &srv.addr,
        "--user",
        "kim",
        "--password-stdin",
    ])
    .stdin(Stdio::piped())
    .stderr(Stdio::null())
    .spawn()
    .unwrap();
    login.stdin.take().unwrap().write_all(b"pw pw\n").unwrap();
    assert!(login.wait().unwrap().success());
    // The CLI's exit status is the program's; refusals are 255.
    let out = cli(&[
        "exec", "--server", &srv.addr, "-n", "--", "sh", "-c", "exit 7",
    ])
    .output()
    .unwrap();
    assert_eq!(out.status.code(), Some(255), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("sockit admin grant kim exec"));
    let granted = Command::new(BIN)
        .args(["admin", "grant", "kim", "exec", "--data-dir"])
        .arg(srv.data.path())
        .output()
        .unwrap();
    assert!(granted.status.success(), "{granted:?}");
    let out = cli(&[
        "exec",
        "--server",
        &srv.addr,
        "-n",
        "--",
        "sh",
        "-c",
        "echo hi; exit 7",
    ])
    .output()
    .unwrap();
    assert_eq!(
        (out.status.code(), out.stdout.as_slice()),
        (Some(7), &b"hi\n"[..])
    );
    let out = cli(&["exec", "--server", &srv.addr, "--", "cat"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            c.stdin.take().unwrap().write_all(b"through stdin")?;
            c.wait_with_output()
        })
        .unwrap();
    assert_eq!(
        (out.status.code(), out.stdout.as_slice()),
        (Some(0), &b"through stdin"[..])
    );
    // A stdin that cannot be read (a folder: read() is EISDIR) is an error,
    // not an empty input the program runs on as if it had ended.
    let out = cli(&["exec", "--server", &srv.addr, "--", "cat"])
        .stdin(std::fs::File::open(config.path()).unwrap())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(255), "{err}");
    assert!(err.contains("reading stdin failed"), "{err}");
    let out = cli(&[
        "exec",
        "--server",
        &srv.addr,
        "-n",
        "-t",
        "0.3",
        "--",
        "sh",
        "-c",
        "sleep 100",
    ])
    .output()
    .unwrap();
    assert_eq!(out.status.code(), Some(124), "{out:?}");
    // Now the real thing: a program with a child of its own, and the client
    // SIGKILLed while both run.
    let mut client = cli(&[
        "exec",
        "--server",
        &srv.addr,
        "-n",
        "--",
        "sh",
        "-c",
        "sleep 1000 & echo $$ $!; wait",
    ])
    .stdout(Stdio::piped())
    .spawn()
    .unwrap();
    let mut line = String::new();
    BufReader::new(client.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let pids: Vec<i32> = line
        .split_whitespace()
        .map(|p| p.parse().unwrap())
        .collect();
    assert_eq!(pids.len(), 2, "{line:?}");
    assert!(!alive_in_group(pids[0]).is_empty());
    client.kill().unwrap();
    client.wait().unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        tokio::time::timeout(Duration::from_secs(10), async {
            exited(pids[0]).await;
            exited(pids[1]).await;
        })
        .await
        .expect("the program and its child were not killed");
    });
    assert!(alive_in_group(pids[0]).is_empty());
    // The server writes the run's audit line once it has reaped the group,
    // which can be a moment after the test sees the processes gone.
    let pid = Some(pids[0] as u32);
    common::cli::wait_until("the run's audit line", || {
        audit_lines(srv.data.path()).last().map(|l| l.pid) == Some(pid)
    });
    let last = audit_lines(srv.data.path()).pop().unwrap();
    assert_eq!((last.result.as_str(), last.pid), ("disconnected", pid));
}
